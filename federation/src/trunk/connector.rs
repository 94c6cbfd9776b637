//! The trunk as the proxy core's [`UpstreamConnector`]: a connection to an endpoint whose
//! network is a peer's is carried as a trunk stream to that peer, its header built from the
//! cluster name `outbound|PORT|SUBSET|HOST` and the connection's SNI. Endpoints of other
//! networks (and clusters not named that way) are declined, so the core dials them itself. A
//! trunk that is down or a refused stream is an error at once: a connect failure to the core.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use strait_proxy::{BoxedUpstreamIo, ConnectFuture, UpstreamConnector, UpstreamTarget};

use super::client::{OpenError, TrunkClient};
use super::header::StreamHeader;
use crate::sni::OutboundName;

/// Carries connections to peer networks' endpoints over the trunks.
#[derive(Debug)]
pub struct TrunkConnector {
    client: Arc<TrunkClient>,
    /// Peer name by the network its endpoints are in.
    peers_by_network: HashMap<String, String>,
    source_network: String,
}

impl TrunkConnector {
    /// Endpoints of network `n` go to peer `peers_by_network[n]`; headers say the connections
    /// come from `source_network`.
    pub fn new(
        client: Arc<TrunkClient>,
        peers_by_network: HashMap<String, String>,
        source_network: String,
    ) -> TrunkConnector {
        TrunkConnector {
            client,
            peers_by_network,
            source_network,
        }
    }
}

impl UpstreamConnector for TrunkConnector {
    fn connect(&self, target: UpstreamTarget) -> Option<ConnectFuture<'_>> {
        let peer = self.peers_by_network.get(target.network.as_deref()?)?;
        let destination = OutboundName::parse(&target.cluster)?;
        let header = StreamHeader {
            service: destination.host,
            port: destination.port,
            subset: destination.subset,
            original_sni: target.server_name.unwrap_or_default(),
            source_network: self.source_network.clone(),
        };
        Some(Box::pin(async move {
            match self.client.open(peer, &header, &[]).await {
                Ok(stream) => Ok(Box::new(stream) as BoxedUpstreamIo),
                Err(error) => Err(io::Error::new(open_error_kind(&error), error.to_string())),
            }
        }))
    }
}

fn open_error_kind(error: &OpenError) -> io::ErrorKind {
    match error {
        OpenError::Down(_) | OpenError::Refused { .. } | OpenError::UnknownPeer(_) => {
            io::ErrorKind::ConnectionRefused
        }
        OpenError::StatusTimeout { .. } => io::ErrorKind::TimedOut,
        _ => io::ErrorKind::ConnectionReset,
    }
}
