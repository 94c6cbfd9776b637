//! The watching side of the federation API: one stream per peer gateway, over mesh mTLS with
//! the gateway's SVID, accepting exactly the peer gateway's SPIFFE ID. Every set received
//! (changes and keepalives alike) goes to the caller's handler; when the stream fails or ends,
//! the handler is not told anything (what was received last stays) and the watch starts again
//! after a backoff. A gateway certificate that chains to none of the roots held for its trust
//! domain is told to the caller's [`UnknownIssuerObserver`], if any.

use std::sync::Arc;
use std::time::Duration;

use strait_certs::service::{GRPC_ALPN, tls};
use strait_certs::{
    Authorizer, IdentityCell, SharedBundles, SpiffeId, UnknownIssuerObserver,
    mesh_client_config_observed,
};

use super::ExportSet;
use super::proto::WatchRequest;
use super::proto::export_service_client::ExportServiceClient;

/// The first wait after a failed watch; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and who a peer's federation API is.
#[derive(Debug, Clone)]
pub struct ExportSource {
    /// The peer's name (for logs).
    pub peer: String,
    /// `HOST:PORT` of its federation API.
    pub address: String,
    /// The SPIFFE ID its gateway presents.
    pub gateway_id: SpiffeId,
    /// Told the trust domain of a gateway whose chain ends at no root held for it.
    pub unknown_issuer: Option<UnknownIssuerObserver>,
}

/// Why one watch ended.
#[derive(Debug, thiserror::Error)]
enum WatchError {
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("connecting: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("{0}")]
    Status(#[from] tonic::Status),
    #[error("the peer ended the stream")]
    Ended,
}

/// Watches `source` for as long as the task runs, with the SVID of `cell` and the trust of
/// `bundles`, handing every set received to `received`.
pub async fn watch_exports(
    source: ExportSource,
    cell: Arc<IdentityCell>,
    bundles: SharedBundles,
    mut received: impl FnMut(ExportSet) + Send,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let mut got_any = false;
        let error = watch_once(&source, &cell, &bundles, &mut |set| {
            got_any = true;
            received(set);
        })
        .await;
        if got_any {
            backoff = FIRST_BACKOFF;
        }
        tracing::warn!(
            peer = %source.peer,
            address = %source.address,
            "the peer's export stream failed ({error}); its last exports stay, retrying in {backoff:?}"
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One watch, until it fails.
async fn watch_once(
    source: &ExportSource,
    cell: &Arc<IdentityCell>,
    bundles: &SharedBundles,
    received: &mut (dyn FnMut(ExportSet) + Send),
) -> WatchError {
    let result: Result<(), WatchError> = async {
        let config = mesh_client_config_observed(
            cell.clone(),
            bundles.clone(),
            Authorizer::ids([source.gateway_id.clone()]),
            GRPC_ALPN,
            source.unknown_issuer.clone(),
        )?;
        let channel = tls::channel(
            &source.address,
            Arc::new(config),
            CONNECT_TIMEOUT,
            false,
            None,
        )
        .await?;
        let mut client =
            ExportServiceClient::new(channel).max_decoding_message_size(super::MAX_SET_BYTES);
        let mut stream = client.watch(WatchRequest {}).await?.into_inner();
        while let Some(set) = stream.message().await? {
            received(ExportSet::from(set));
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => WatchError::Ended,
        Err(error) => error,
    }
}
