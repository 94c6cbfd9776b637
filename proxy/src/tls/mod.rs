//! TLS: reading the ClientHello without terminating (to route by SNI), terminating with the
//! certificates a filter chain names, and originating towards endpoints.

pub mod client_hello;
pub mod mesh;
pub mod server;
pub mod upstream;
