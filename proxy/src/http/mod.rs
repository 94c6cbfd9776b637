//! HTTP: serving connections (HTTP/1.1 and HTTP/2), routing requests, and forwarding them.

pub(crate) mod body;
pub(crate) mod explicit_proxy;
pub mod flags;
pub(crate) mod forward;
pub(crate) mod handler;
pub(crate) mod hash_key;
pub(crate) mod headers;
pub(crate) mod local_reply;
pub(crate) mod routing;
pub(crate) mod server;
pub(crate) mod tracked;
pub(crate) mod upstream_body;
