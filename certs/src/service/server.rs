//! The CA service: [`CaServer`] serves `CertificateService` over mesh TLS.
//!
//! At start it issues its own SVID (`spiffe://TD/ns/istio-system/sa/strait-control`) from its
//! CA and renews it at half-life; the TLS config asks every client for a certificate but does
//! not require one (a bootstrapping workload has none): one that is presented must verify
//! against the CA's own trust domain, or the handshake fails. Issuance and the token ledger do
//! file I/O and signing on the blocking pool. The federated bundle folder is polled at
//! [`CaServerOptions::poll_interval`]. On shutdown the bundle streams end, so that tonic's
//! graceful shutdown does not wait on them.
//!
//! The CA directory is read again on every poll: a changed `root-cert.pem` publishes the new
//! set of roots (`RootsFile`), and changed signing files (`ca-cert.pem`, `ca-key.pem`,
//! `cert-chain.pem`, as a root rotation's `switch` leaves them) are loaded and issue from then
//! on (`SigningFiles`), without a restart. A new signing chain is announced on the bundle
//! stream, and the service renews its own SVID onto it at once, as proxies do.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use futures_util::Stream;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::authority::{Authority, AuthorityError, published_trust_bundle};
use crate::bundle::{TrustBundle, TrustBundleSet};
use crate::rotation::{IdentityCell, mesh_server_config};
use crate::service::auth::{authority_status, authorization_status, bearer_token, token_status};
use crate::service::bundles::{BundlePublisher, issuer_changed};
use crate::service::proto::certificate_service_server::{
    CertificateService, CertificateServiceServer,
};
use crate::service::proto::{BundleSnapshot, CsrRequest, CsrResponse, WatchRequest};
use crate::service::tls::{self, PeerInfo};
use crate::service::{GRPC_ALPN, MAX_MESSAGE_BYTES, control_id};
use crate::spiffe::{SpiffeId, SpiffeIdError};
use crate::svid::{CertificateRequest, Svid, SvidError, random_jitter};
use crate::tokens::{TokenError, TokenLedger};
use crate::verify::{Authorizer, ClientAuth};

/// How the service runs.
#[derive(Debug, Clone)]
pub struct CaServerOptions {
    /// The lifetime of the certificates it issues when the caller asks for none, and the longest
    /// it grants; `None` leaves both to the CA's own settings.
    pub workload_ttl: Option<Duration>,
    /// The folder of federated bundles (`TRUST_DOMAIN.json`); usually `CA_DIR/federated`.
    pub federated_dir: PathBuf,
    /// How often that folder is read again.
    pub poll_interval: Duration,
    /// How long a client may take to finish its TLS handshake.
    pub handshake_timeout: Duration,
}

impl CaServerOptions {
    /// Defaults for a CA kept in `ca_dir`.
    pub fn new(ca_dir: &std::path::Path) -> Self {
        Self {
            workload_ttl: None,
            federated_dir: ca_dir.join("federated"),
            poll_interval: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("the service's own identity: {0}")]
    Id(#[from] SpiffeIdError),
    #[error("issuing the service's own certificate: {0}")]
    Issue(#[from] AuthorityError),
    #[error("the service's own certificate: {0}")]
    Svid(#[from] SvidError),
    #[error("the bootstrap token ledger: {0}")]
    Ledger(#[from] TokenError),
    #[error("the TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("the CA's trust bundle: {0}")]
    Bundle(#[from] crate::bundle::BundleError),
    #[error("serving gRPC: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// The CA service, ready to serve.
#[derive(Debug)]
pub struct CaServer {
    authority: Arc<ArcSwap<Authority>>,
    ledger: Arc<TokenLedger>,
    options: CaServerOptions,
    server_id: SpiffeId,
    identity: Arc<IdentityCell>,
}

impl CaServer {
    /// Takes the loaded CA, opens its token ledger and issues the service's own SVID.
    pub fn new(authority: Authority, options: CaServerOptions) -> Result<Self, ServiceError> {
        let server_id = control_id(authority.trust_domain())?;
        let ledger = TokenLedger::open_in(authority.dir())?;
        let svid = issue_own(&authority, &server_id, options.workload_ttl)?;
        Ok(Self {
            authority: Arc::new(ArcSwap::from_pointee(authority)),
            ledger: Arc::new(ledger),
            options,
            server_id,
            identity: Arc::new(IdentityCell::new(svid)),
        })
    }

    /// The identity the service presents.
    pub fn server_id(&self) -> &SpiffeId {
        &self.server_id
    }

    /// The service's current SVID (renewed in place while serving).
    pub fn identity(&self) -> Arc<IdentityCell> {
        self.identity.clone()
    }

    /// Serves on `listener` until `shutdown` completes, then stops gracefully.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServiceError> {
        let authority = self.authority.load_full();
        let trust_domain = authority.trust_domain().clone();
        let client_bundles =
            TrustBundleSet::from_bundles([authority.trust_bundle()])?.into_shared();
        let config = mesh_server_config(
            self.identity.clone(),
            client_bundles.clone(),
            ClientAuth::Optional(Authorizer::trust_domains([trust_domain])),
            GRPC_ALPN,
        )?;
        let mut publisher = BundlePublisher::new(
            authority.trust_bundle(),
            authority.issuer_sha256().to_owned(),
            &self.options.federated_dir,
        );
        let (issuer_sender, issuer) = watch::channel(authority.issuer_sha256().to_owned());
        let api = CertificateApi {
            authority: self.authority.clone(),
            ledger: self.ledger.clone(),
            workload_ttl: self.options.workload_ttl,
            bundles: publisher.subscribe(),
        };
        let poll_interval = self.options.poll_interval;
        let mut roots = RootsFile::new(&authority);
        let mut signing = SigningFiles::new(authority.dir());
        let reloaded = self.authority.clone();
        let poll = tokio::spawn(async move {
            let mut tick = tokio::time::interval(poll_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Some(own) = roots.changed(publisher.own()) {
                    match TrustBundleSet::from_bundles([own.clone()]) {
                        Ok(set) => {
                            client_bundles.store(Arc::new(set));
                            publisher.set_own(own);
                        }
                        Err(error) => tracing::warn!(
                            "the CA's roots changed but cannot be used ({error}); keeping the last good ones"
                        ),
                    }
                }
                if let Some(authority) = signing.changed() {
                    let digest = authority.issuer_sha256().to_owned();
                    reloaded.store(Arc::new(authority));
                    issuer_sender.send_replace(digest.clone());
                    publisher.set_issuer(digest);
                }
                publisher.refresh();
            }
        });
        let renew = tokio::spawn(keep_own_identity(
            self.authority.clone(),
            self.server_id.clone(),
            self.identity.clone(),
            self.options.workload_ttl,
            issuer,
        ));
        let (incoming, accept) =
            tls::accept(listener, Arc::new(config), self.options.handshake_timeout);
        let service = CertificateServiceServer::new(api)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let (poll_abort, renew_abort) = (poll.abort_handle(), renew.abort_handle());
        let signal = async move {
            shutdown.await;
            // Dropping the publisher ends every bundle stream.
            poll_abort.abort();
            renew_abort.abort();
        };
        let result = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, signal)
            .await;
        accept.abort();
        poll.abort();
        renew.abort();
        result.map_err(ServiceError::from)
    }
}

/// The CA's `root-cert.pem`, read again on each poll: an operator adding a root (the first step
/// of a rotation) or removing an old one publishes the new set, and renewals under any of them
/// are accepted. The signing chain is [`SigningFiles`]' business. The new set's sequence is the
/// one recorded in the CA directory ([`published_trust_bundle`]), so the stream and the SPIFFE
/// bundle endpoint agree, across restarts too.
#[derive(Debug)]
struct RootsFile {
    dir: PathBuf,
    last: Vec<u8>,
}

impl RootsFile {
    fn new(authority: &Authority) -> Self {
        let dir = authority.dir().to_path_buf();
        let last = std::fs::read(dir.join(crate::authority::files::ROOT_CERT)).unwrap_or_default();
        Self { dir, last }
    }

    /// The new own bundle, when the file changed and reads as roots.
    fn changed(&mut self, current: &TrustBundle) -> Option<TrustBundle> {
        let bytes = std::fs::read(self.dir.join(crate::authority::files::ROOT_CERT)).ok()?;
        if bytes == self.last {
            return None;
        }
        self.last = bytes;
        match published_trust_bundle(&self.dir) {
            Ok(bundle) if bundle.roots != current.roots => {
                tracing::info!(
                    roots = bundle.roots.len(),
                    sequence = bundle.sequence,
                    "the CA's roots changed"
                );
                Some(bundle)
            }
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(
                    "the CA's roots cannot be read ({error}); keeping the last good ones"
                );
                None
            }
        }
    }
}

/// The CA's signing files, read again on each poll. When they change (a rotation's `switch`)
/// the authority is loaded again from the directory; a set that does not load (a switch caught
/// half-written: the key no longer matches the certificate) is refused, the last good authority
/// keeps issuing, and the next change is tried again.
#[derive(Debug)]
struct SigningFiles {
    dir: PathBuf,
    last: Vec<Vec<u8>>,
}

impl SigningFiles {
    const NAMES: [&'static str; 3] = [
        crate::authority::files::CA_CERT,
        crate::authority::files::CA_KEY,
        crate::authority::files::CERT_CHAIN,
    ];

    fn new(dir: &std::path::Path) -> Self {
        let dir = dir.to_path_buf();
        let last = Self::read(&dir);
        Self { dir, last }
    }

    fn read(dir: &std::path::Path) -> Vec<Vec<u8>> {
        Self::NAMES
            .iter()
            .map(|name| std::fs::read(dir.join(name)).unwrap_or_default())
            .collect()
    }

    /// The authority loaded again, when the signing files changed and load.
    fn changed(&mut self) -> Option<Authority> {
        let now = Self::read(&self.dir);
        if now == self.last {
            return None;
        }
        self.last = now;
        match Authority::load(&self.dir) {
            Ok(authority) => {
                tracing::info!(
                    issuing_ca_sha256 = %authority.issuer_sha256(),
                    not_after = unix_secs(authority.chain_not_after()),
                    "the CA's signing chain changed; issuing under it now"
                );
                Some(authority)
            }
            Err(error) => {
                tracing::warn!(
                    "the CA's signing files changed but do not load ({error}); still issuing under the last good chain"
                );
                None
            }
        }
    }
}

/// Issues an SVID for the service itself from its own CA (the key stays in this process).
fn issue_own(
    authority: &Authority,
    id: &SpiffeId,
    ttl: Option<Duration>,
) -> Result<Svid, ServiceError> {
    let request = CertificateRequest::new(id)?;
    let issued = authority.sign_csr(request.csr_der(), id, ttl.unwrap_or(Duration::ZERO))?;
    Ok(request.into_svid(issued.chain_der, issued.issued_at)?)
}

/// Renews the service's SVID at half-life with jitter, and at once when the CA's signing chain
/// changes (`issuer`); on failure retries every few seconds while the current one is still
/// valid, then keeps trying (there is no one else to ask).
async fn keep_own_identity(
    authority: Arc<ArcSwap<Authority>>,
    id: SpiffeId,
    cell: Arc<IdentityCell>,
    ttl: Option<Duration>,
    mut issuer: watch::Receiver<String>,
) {
    let mut settled: Option<String> = None;
    loop {
        if let Some(current) = cell.current() {
            let at = current.renew_at(random_jitter());
            tokio::select! {
                () = sleep_until(at) => {}
                new = issuer_changed(&mut issuer, &current, settled.as_deref()) => {
                    tracing::info!(%id, issuing_ca_sha256 = %new, "the CA's signing chain changed; renewing the CA service certificate now");
                    settled = Some(new);
                }
            }
        }
        loop {
            match issue_own(&authority.load(), &id, ttl) {
                Ok(svid) => {
                    tracing::info!(%id, not_after = ?svid.not_after(), "CA service certificate renewed");
                    cell.install(svid);
                    break;
                }
                Err(error) => {
                    tracing::error!(%id, "renewing the CA service certificate: {error}");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    }
}

pub(crate) async fn sleep_until(at: SystemTime) {
    if let Ok(wait) = at.duration_since(SystemTime::now()) {
        tokio::time::sleep(wait).await;
    }
}

/// The gRPC handlers.
#[derive(Debug)]
struct CertificateApi {
    authority: Arc<ArcSwap<Authority>>,
    ledger: Arc<TokenLedger>,
    workload_ttl: Option<Duration>,
    bundles: watch::Receiver<Arc<BundleSnapshot>>,
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<BundleSnapshot, Status>> + Send>>;

impl CertificateApi {
    /// The TTL granted for a request of `requested_secs` (0: none asked for).
    fn grant_ttl(&self, requested_secs: u64) -> Duration {
        grant_ttl(requested_secs, self.workload_ttl)
    }
}

/// `workload_ttl`, when set, is the default and the cap; otherwise the CA decides (0 = its
/// default; it caps at its own maximum).
fn grant_ttl(requested_secs: u64, workload_ttl: Option<Duration>) -> Duration {
    let requested = Duration::from_secs(requested_secs);
    match workload_ttl {
        Some(max) if requested.is_zero() || requested > max => max,
        _ => requested,
    }
}

#[tonic::async_trait]
impl CertificateService for CertificateApi {
    async fn create_certificate(
        &self,
        request: Request<CsrRequest>,
    ) -> Result<Response<CsrResponse>, Status> {
        let peer = request.extensions().get::<PeerInfo>().cloned();
        let remote = peer
            .as_ref()
            .map(|p| p.remote.to_string())
            .unwrap_or_default();
        let token = bearer_token(request.metadata());
        let message = request.into_inner();
        let refuse = |status: Status| {
            tracing::warn!(%remote, code = ?status.code(), "certificate refused: {}", status.message());
            status
        };
        Authority::check_csr(&message.csr_der).map_err(|e| refuse(authority_status(&e)))?;
        let ttl = self.grant_ttl(message.requested_ttl_seconds);

        let (id, method) = match peer.and_then(|p| p.id) {
            Some(id) => (id, "client SVID"),
            None => {
                let token = token
                    .map_err(|e| refuse(authorization_status(&e)))?
                    .ok_or_else(|| {
                        refuse(Status::unauthenticated(
                            "no client SVID and no bootstrap token: present the current SVID, \
                             or send `authorization: Bearer TOKEN`",
                        ))
                    })?;
                let ledger = self.ledger.clone();
                let redeemed = tokio::task::spawn_blocking(move || ledger.redeem(&token))
                    .await
                    .map_err(|_| refuse(Status::internal("redeeming the token failed")))?;
                let id = redeemed.map_err(|e| refuse(token_status(&e)))?;
                (id, "bootstrap token")
            }
        };

        let authority = self.authority.load_full();
        let granted = id.clone();
        let issued = tokio::task::spawn_blocking(move || {
            authority.sign_csr(&message.csr_der, &granted, ttl)
        })
        .await
        .map_err(|_| refuse(Status::internal("signing failed")))?
        .map_err(|e| refuse(authority_status(&e)))?;
        tracing::info!(
            %id,
            %remote,
            authenticated_by = method,
            not_after = unix_secs(issued.not_after),
            "certificate issued"
        );
        Ok(Response::new(CsrResponse {
            cert_chain: issued.chain_der.iter().map(|c| c.to_vec()).collect(),
            issued_at: unix_secs(issued.issued_at),
            not_after: unix_secs(issued.not_after),
        }))
    }

    type WatchBundlesStream = SnapshotStream;

    async fn watch_bundles(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        let remote = request
            .extensions()
            .get::<PeerInfo>()
            .map(|p| p.remote.to_string())
            .unwrap_or_default();
        tracing::debug!(%remote, "trust bundle stream opened");
        let mut receiver = self.bundles.clone();
        // The first item is the current snapshot.
        receiver.mark_changed();
        let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
            receiver.changed().await.ok()?;
            let snapshot = BundleSnapshot::clone(&receiver.borrow_and_update());
            Some((Ok(snapshot), receiver))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_ttl_is_the_default_and_the_cap() {
        let ttl = Some(Duration::from_secs(60));
        assert_eq!(grant_ttl(0, ttl), Duration::from_secs(60));
        assert_eq!(grant_ttl(30, ttl), Duration::from_secs(30));
        assert_eq!(grant_ttl(3600, ttl), Duration::from_secs(60));
        // Without it the CA's default (0) and cap apply.
        assert_eq!(grant_ttl(0, None), Duration::ZERO);
        assert_eq!(grant_ttl(3600, None), Duration::from_secs(3600));
    }
}
