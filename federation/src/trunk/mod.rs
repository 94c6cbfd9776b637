//! The QUIC trunk between east-west gateways (UDP 15443): one mTLS-authenticated QUIC
//! connection (or a few) per peer gateway, each cross-cluster TCP connection one stream on it.
//!
//! - [`header`]: what a stream starts with (the caller's header, the remote's status).
//! - [`transport`]: quinn's transport settings, sized to the path.
//! - [`tls`]: the mTLS configurations from the mesh identity, ALPN [`TRUNK_ALPN`].
//! - [`client`]: connections to peers kept up, streams opened on them.
//! - [`server`]: peers' connections accepted, streams resolved to local endpoints.
//! - [`ingress`]: the trunk-ingress port (TCP 15444) where local sidecars hand connections over.
//! - [`connector`]: the trunk as the proxy core's upstream connector.
//! - [`stream`]: a stream as bytes, spliced with TCP (half-close to FIN, errors to resets).
//!
//! A stream's life: the caller's gateway opens a stream on a live connection and sends the
//! header with the bytes it already has; the remote gateway resolves the header to an endpoint
//! (refusing what is not exported), connects, answers OK, and the bytes flow both ways
//! unchanged (they are the sidecars' own mTLS). Nothing waits for a trunk that is down.

pub mod client;
pub mod connector;
pub mod header;
pub mod ingress;
pub mod server;
pub mod stream;
pub mod tls;
pub mod transport;

pub use client::{Backoff, OpenError, PeersChanged, TrunkClient, TrunkPeer};
pub use connector::TrunkConnector;
pub use header::{FrameError, RefusalReason, StreamHeader, StreamStatus};
pub use ingress::{PeerSelector, TrunkIngress};
pub use server::{EndpointResolver, PeerAuthorizer, Refusal, TrunkServer};
pub use stream::TrunkStream;
pub use tls::{TRUNK_ALPN, TrunkIdentity, TrunkSetupError};
pub use transport::TrunkPath;

/// The east-west gateway's trunk port (UDP; TCP 15443 is its SNI passthrough).
pub const TRUNK_PORT: u16 = 15443;
/// The trunk-ingress port local sidecars connect to (TCP).
pub const TRUNK_INGRESS_PORT: u16 = 15444;
