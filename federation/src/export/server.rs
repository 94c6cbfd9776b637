//! The serving side of the federation API: `ExportService.Watch` streams the gateway's current
//! [`ExportSet`] at once, again on every change, and unchanged every keepalive interval. Mesh
//! mTLS with the gateway's SVID; a caller must present a verified client certificate whose
//! SPIFFE ID is the gateway ID some Peer document names (`bundleEndpoint.spiffeId`), read
//! from the peer store at each call, so that adding or removing a peer needs no restart.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use strait_certs::service::tls::{self, PeerInfo};
use strait_certs::service::{GRPC_ALPN, MAX_MESSAGE_BYTES};
use strait_certs::{
    Authorizer, ClientAuth, IdentityCell, SharedBundles, UnknownIssuerObserver,
    mesh_server_config_observed,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::ExportSet;
use super::proto::export_service_server::{ExportService, ExportServiceServer};
use super::proto::{self, WatchRequest};
use crate::peer_store::{PeerStore, StoreError};

/// How long a caller has for its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the federation API could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ExportServerError {
    #[error("federation API TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("federation API: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The federation API of one gateway.
#[derive(Debug, Clone)]
pub struct ExportServer {
    /// The gateway's current export set.
    pub exports: watch::Receiver<Arc<ExportSet>>,
    /// Whose gateways may watch.
    pub peers: PeerStore,
    /// How often an unchanged set is sent again.
    pub keepalive: Duration,
}

impl ExportServer {
    /// Serves on `listener` with the SVID of `cell`, verifying callers against `bundles`
    /// (a caller whose chain ends at no root held for its trust domain is told to
    /// `unknown_issuer`), until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        cell: Arc<IdentityCell>,
        bundles: SharedBundles,
        unknown_issuer: Option<UnknownIssuerObserver>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ExportServerError> {
        let config = mesh_server_config_observed(
            cell,
            bundles,
            ClientAuth::Required(Authorizer::Any),
            GRPC_ALPN,
            unknown_issuer,
        )?;
        let (incoming, accept) = tls::accept(listener, Arc::new(config), HANDSHAKE_TIMEOUT);
        let service = ExportServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(super::MAX_SET_BYTES);
        let result = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await;
        accept.abort();
        result.map_err(ExportServerError::from)
    }

    /// The peer whose gateway `peer` is, or why the caller is refused.
    fn admit(&self, peer: Option<&PeerInfo>) -> Result<String, Status> {
        let remote = peer.map(|p| p.remote.to_string()).unwrap_or_default();
        let Some(id) = peer.and_then(|p| p.id.as_ref()) else {
            tracing::warn!(%remote, "export watch refused: no client certificate");
            return Err(Status::unauthenticated("a client certificate is required"));
        };
        let peers = self.peers.list().map_err(|error| {
            tracing::warn!(%remote, "export watch refused: the peers cannot be read ({error})");
            Status::unavailable("the peers cannot be read")
        })?;
        match peers
            .into_iter()
            .find(|stored| &stored.peer.bundle_endpoint.spiffe_id == id)
        {
            Some(stored) => Ok(stored.peer.name),
            None => {
                tracing::warn!(%remote, %id, "export watch refused: not the gateway of a known peer");
                Err(Status::permission_denied(format!(
                    "{id} is not the east-west gateway of a known peer"
                )))
            }
        }
    }
}

/// Who watches, checked again before every set sent.
struct Watcher {
    peers: PeerStore,
    peer: String,
    id: Option<strait_certs::SpiffeId>,
}

impl Watcher {
    fn still_a_peer(&self) -> Result<(), Status> {
        match self.peers.get(&self.peer) {
            Ok(stored) if Some(&stored.peer.bundle_endpoint.spiffe_id) == self.id.as_ref() => {
                Ok(())
            }
            Ok(_) | Err(StoreError::NoSuchPeer(_)) => {
                tracing::info!(peer = %self.peer, "the peer was removed or redefined; its export watch ends");
                Err(Status::permission_denied(format!(
                    "{} is no longer a peer here",
                    self.peer
                )))
            }
            // A store that cannot be read now does not end a watch admitted before.
            Err(error) => {
                tracing::warn!(peer = %self.peer, "the peers cannot be read ({error}); the export watch goes on");
                Ok(())
            }
        }
    }
}

/// The stream of sets a watcher gets.
type ExportStream = Pin<Box<dyn Stream<Item = Result<proto::ExportSet, Status>> + Send>>;

#[tonic::async_trait]
impl ExportService for ExportServer {
    type WatchStream = ExportStream;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<ExportStream>, Status> {
        let info = request.extensions().get::<PeerInfo>();
        let peer = self.admit(info)?;
        let id = info.and_then(|p| p.id.clone());
        let mut receiver = self.exports.clone();
        let version = receiver.borrow().version;
        tracing::info!(%peer, version, "a peer watches the exports");
        // The first item is the current set.
        receiver.mark_changed();
        let first = tokio::time::Instant::now() + self.keepalive;
        let mut tick = tokio::time::interval_at(first, self.keepalive);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let watcher = Watcher {
            peers: self.peers.clone(),
            peer,
            id,
        };
        let stream =
            futures_util::stream::unfold(Some((receiver, tick, watcher)), |state| async move {
                let (mut receiver, mut tick, watcher) = state?;
                tokio::select! {
                    changed = receiver.changed() => changed.ok()?,
                    _ = tick.tick() => {}
                }
                // A peer removed (or whose gateway is now another) gets nothing more.
                if let Err(status) = watcher.still_a_peer() {
                    return Some((Err(status), None));
                }
                let set = proto::ExportSet::from(&**receiver.borrow_and_update());
                Some((Ok(set), Some((receiver, tick, watcher))))
            });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{TestDir, ca, peer, td};

    fn server(data: &TestDir) -> ExportServer {
        let (_sender, exports) = watch::channel(Arc::new(ExportSet::default()));
        ExportServer {
            exports,
            peers: PeerStore::new(data.path()),
            keepalive: Duration::from_secs(30),
        }
    }

    fn caller(id: Option<&str>) -> PeerInfo {
        PeerInfo {
            remote: "192.0.2.1:40000".parse().unwrap(),
            id: id.map(|id| strait_certs::SpiffeId::parse(id).unwrap()),
        }
    }

    #[test]
    fn only_the_gateway_of_a_known_peer_may_watch() {
        let data = TestDir::new("export-admit");
        let west = ca(&data, "west-ca", "west.mesh");
        let gateway = "spiffe://west.mesh/ns/istio-system/sa/eastwest";
        let store = PeerStore::new(data.path());
        store
            .apply(
                &peer(
                    "west",
                    &west.trust_bundle(),
                    "https://192.0.2.10:15446",
                    gateway,
                ),
                &td("east.mesh"),
                false,
            )
            .unwrap();
        let server = server(&data);
        assert_eq!(server.admit(Some(&caller(Some(gateway)))).unwrap(), "west");
        let workload = "spiffe://west.mesh/ns/default/sa/reviews";
        let refused = server.admit(Some(&caller(Some(workload)))).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        let refused = server.admit(Some(&caller(None))).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn a_watch_ends_once_its_peer_is_removed_or_names_another_gateway() {
        let data = TestDir::new("export-still-a-peer");
        let west = ca(&data, "west-ca", "west.mesh");
        let gateway = "spiffe://west.mesh/ns/istio-system/sa/eastwest";
        let store = PeerStore::new(data.path());
        let apply = |id: &str| {
            store
                .apply(
                    &peer("west", &west.trust_bundle(), "https://192.0.2.10:15446", id),
                    &td("east.mesh"),
                    false,
                )
                .unwrap();
        };
        apply(gateway);
        let watcher = Watcher {
            peers: store.clone(),
            peer: "west".to_owned(),
            id: Some(strait_certs::SpiffeId::parse(gateway).unwrap()),
        };
        assert!(watcher.still_a_peer().is_ok());
        apply("spiffe://west.mesh/ns/istio-system/sa/other-gateway");
        let ended = watcher.still_a_peer().unwrap_err();
        assert_eq!(ended.code(), tonic::Code::PermissionDenied);
        apply(gateway);
        assert!(watcher.still_a_peer().is_ok());
        store.remove("west").unwrap();
        assert!(watcher.still_a_peer().is_err());
    }
}
