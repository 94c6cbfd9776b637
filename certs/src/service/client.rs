//! The proxies' side of the CA service: [`IdentityClient`].
//!
//! A proxy starts from a trust bundle file and the CA's address. It bootstraps once with a
//! one-time token ([`IdentityClient::bootstrap`]: the key is made here and never leaves), then
//! [`IdentityClient::keep_renewed`] renews its SVID over mTLS with the current one at half-life
//! (with jitter), retrying with backoff while the current SVID is still valid and never
//! installing nothing; and [`IdentityClient::follow_bundles`] applies each bundle snapshot the
//! CA streams, keeping the last good set when the stream drops and reconnecting with backoff.
//! When a snapshot names a signing chain other than the one the SVID was issued under (a root
//! rotation switched), `keep_renewed` renews at once, spread over a short random delay (a
//! tenth of the time left to the normal renewal, at most [`REISSUE_SPREAD_MAX`]) so that a
//! whole mesh does not ask in the same second.
//!
//! The CA is accepted only if it presents exactly the expected SPIFFE ID and its chain verifies
//! against the client's bundles ([`IdentityClient::bundles`], which follow the stream when they
//! are the set passed to `follow_bundles`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::bundle::{BundleError, SharedBundles, TrustBundle, TrustBundleSet};
use crate::rotation::{IdentityCell, mesh_client_config};
use crate::service::auth::AUTHORIZATION;
use crate::service::bundles::{bundle_set_from_snapshot, issuer_changed};
use crate::service::proto::certificate_service_client::CertificateServiceClient;
use crate::service::proto::{CsrRequest, CsrResponse, WatchRequest};
use crate::service::server::sleep_until;
use crate::service::{GRPC_ALPN, MAX_MESSAGE_BYTES, proto, tls};
use crate::spiffe::SpiffeId;
use crate::svid::{CertificateRequest, Svid, SvidError, random_jitter};
use crate::verify::Authorizer;

/// How long a unary call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest random delay before renewing onto a new signing chain.
pub const REISSUE_SPREAD_MAX: Duration = Duration::from_secs(30);

/// Why a call to the CA failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the CA address {address:?}: {source}")]
    Address {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("connecting to the CA at {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("the starting trust bundle: {0}")]
    Bundle(#[from] BundleError),
    #[error("the CA refused: {:?}: {}", .0.code(), .0.message())]
    Refused(tonic::Status),
    #[error("the bootstrap token is not valid metadata")]
    BadToken,
    #[error("the CA's answer: {0}")]
    Answer(#[from] SvidError),
    #[error("the SVID of {id} expired at {not_after:?} before it could be renewed ({last_error})")]
    Expired {
        id: SpiffeId,
        not_after: SystemTime,
        last_error: String,
    },
    #[error("no SVID to renew: the identity cell is empty")]
    NoIdentity,
}

/// Backoff between retries: doubling from `initial` up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryOptions {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for RetryOptions {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

/// A chain the CA issued, with its times as the CA reported them.
#[derive(Debug, Clone)]
pub struct IssuedChain {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    pub issued_at: SystemTime,
    pub not_after: SystemTime,
}

/// A client of one CA service.
#[derive(Debug, Clone)]
pub struct IdentityClient {
    address: String,
    bundles: SharedBundles,
    server: Authorizer,
    trust_domain: crate::spiffe::TrustDomain,
    connect_timeout: Duration,
    /// `SO_MARK` on the connections to the CA.
    socket_mark: Option<u32>,
    /// Calls without a client certificate (bootstrap, bundles); connects on first use.
    anonymous: Channel,
    /// The CA certificate that signs now (hex SHA-256), as the bundle stream last said; shared
    /// by the clones that follow the stream and renew.
    issuer: Arc<watch::Sender<String>>,
    /// How many bundle snapshots the stream has applied.
    applied: Arc<watch::Sender<u64>>,
}

impl IdentityClient {
    /// A client of the CA at `ca_address` (`HOST:PORT`) that trusts `trust_bundle` and accepts
    /// only `expected_server_id`. The connection is made on first use (and made again after a
    /// failure), so a CA that is down now is not an error here.
    pub async fn connect(
        ca_address: &str,
        trust_bundle: TrustBundle,
        expected_server_id: SpiffeId,
    ) -> Result<Self, ClientError> {
        Self::connect_marked(ca_address, trust_bundle, expected_server_id, None).await
    }

    /// [`Self::connect`], with `SO_MARK` `socket_mark` on every connection to the CA (a proxy
    /// running as root under capture rules that exclude its mark).
    pub async fn connect_marked(
        ca_address: &str,
        trust_bundle: TrustBundle,
        expected_server_id: SpiffeId,
        socket_mark: Option<u32>,
    ) -> Result<Self, ClientError> {
        let trust_domain = expected_server_id.trust_domain();
        let bundles = TrustBundleSet::from_bundles([trust_bundle])?.into_shared();
        let server = Authorizer::ids([expected_server_id]);
        let connect_timeout = Duration::from_secs(5);
        let config = mesh_client_config(
            Arc::new(IdentityCell::empty()),
            bundles.clone(),
            server.clone(),
            GRPC_ALPN,
        )?;
        let anonymous = tls::channel(
            ca_address,
            Arc::new(config),
            connect_timeout,
            true,
            socket_mark,
        )
        .await
        .map_err(|source| ClientError::Address {
            address: ca_address.to_owned(),
            source,
        })?;
        Ok(Self {
            address: ca_address.to_owned(),
            bundles,
            server,
            trust_domain,
            connect_timeout,
            socket_mark,
            anonymous,
            issuer: Arc::new(watch::channel(String::new()).0),
            applied: Arc::new(watch::channel(0).0),
        })
    }

    /// Waits (at most `within`) until [`Self::follow_bundles`] has applied the CA's first
    /// snapshot: until then the bundles are only the one the client started from, which may
    /// lack the CA's sequence and its federated bundles. Whether it came.
    pub async fn first_bundles(&self, within: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        tokio::time::timeout(within, applied.wait_for(|count| *count > 0))
            .await
            .is_ok_and(|waited| waited.is_ok())
    }

    /// The bundles the client verifies the CA with; pass them to [`Self::follow_bundles`] (and
    /// to the proxy's own configs) so that a new root reaches everything.
    pub fn bundles(&self) -> SharedBundles {
        self.bundles.clone()
    }

    /// The generated gRPC client over the verified connection without a client certificate,
    /// for calls this type does not wrap.
    pub fn grpc_client(&self) -> CertificateServiceClient<Channel> {
        grpc(self.anonymous.clone())
    }

    /// First issuance: a new key and CSR for `id`, authenticated by a one-time `token`.
    pub async fn bootstrap(&self, id: &SpiffeId, token: &str) -> Result<Svid, ClientError> {
        let request = CertificateRequest::new(id)?;
        let issued = self
            .create_certificate(&request, Some(token), Duration::ZERO)
            .await?;
        Ok(request.into_svid(issued.chain, issued.issued_at)?)
    }

    /// Renewal: a new key and CSR, authenticated by `current` over mTLS. The CA grants the
    /// identity of `current` whatever the CSR asks.
    pub async fn renew(&self, current: &Svid) -> Result<Svid, ClientError> {
        let request = CertificateRequest::new(current.id())?;
        let issued = self
            .create_certificate_as(&request, current, Duration::ZERO)
            .await?;
        Ok(request.into_svid(issued.chain, issued.issued_at)?)
    }

    /// Sends `request` without a client certificate, with a bootstrap token when given.
    pub async fn create_certificate(
        &self,
        request: &CertificateRequest,
        token: Option<&str>,
        ttl: Duration,
    ) -> Result<IssuedChain, ClientError> {
        let mut call = tonic::Request::new(csr_request(request, ttl));
        if let Some(token) = token {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| ClientError::BadToken)?;
            call.metadata_mut().insert(AUTHORIZATION, value);
        }
        call.set_timeout(CALL_TIMEOUT);
        let answer = grpc(self.anonymous.clone())
            .create_certificate(call)
            .await
            .map_err(ClientError::Refused)?;
        Ok(issued_chain(answer.into_inner()))
    }

    /// Sends `request` over mTLS presenting `current`.
    pub async fn create_certificate_as(
        &self,
        request: &CertificateRequest,
        current: &Svid,
        ttl: Duration,
    ) -> Result<IssuedChain, ClientError> {
        let config = mesh_client_config(
            Arc::new(IdentityCell::new(current.clone())),
            self.bundles.clone(),
            self.server.clone(),
            GRPC_ALPN,
        )?;
        let channel = tls::channel(
            &self.address,
            Arc::new(config),
            self.connect_timeout,
            false,
            self.socket_mark,
        )
        .await
        .map_err(|source| ClientError::Connect {
            address: self.address.clone(),
            source,
        })?;
        let mut call = tonic::Request::new(csr_request(request, ttl));
        call.set_timeout(CALL_TIMEOUT);
        let answer = grpc(channel)
            .create_certificate(call)
            .await
            .map_err(ClientError::Refused)?;
        Ok(issued_chain(answer.into_inner()))
    }

    /// Opens the stream of bundle snapshots.
    pub async fn watch_bundles(
        &self,
    ) -> Result<tonic::Streaming<proto::BundleSnapshot>, ClientError> {
        let stream = grpc(self.anonymous.clone())
            .watch_bundles(WatchRequest {})
            .await
            .map_err(ClientError::Refused)?;
        Ok(stream.into_inner())
    }

    /// Keeps `cell` renewed: at each SVID's renewal time (half-life, with jitter) asks for a new
    /// one and installs it. A failure is retried with backoff while the current SVID is valid;
    /// returns only when the cell is empty or the SVID expired without a renewal (the cell keeps
    /// the expired SVID; the workload must bootstrap again).
    pub async fn keep_renewed(
        &self,
        cell: Arc<IdentityCell>,
        retry: RetryOptions,
    ) -> Result<(), ClientError> {
        let mut issuer = self.issuer.subscribe();
        let mut settled: Option<String> = None;
        loop {
            let current = cell.current().ok_or(ClientError::NoIdentity)?;
            let at = current.renew_at(random_jitter());
            tokio::select! {
                () = sleep_until(at) => {}
                new = issuer_changed(&mut issuer, &current, settled.as_deref()) => {
                    let spread = reissue_delay(at);
                    tracing::info!(
                        id = %current.id(),
                        issuing_ca_sha256 = %new,
                        in_ms = spread.as_millis() as u64,
                        "the CA's signing chain changed; renewing onto it"
                    );
                    tokio::time::sleep(spread).await;
                    settled = Some(new);
                }
            }
            let mut delay = retry.initial;
            loop {
                match self.renew(&current).await {
                    Ok(svid) => {
                        tracing::info!(
                            id = %svid.id(),
                            not_after = unix_secs(svid.not_after()),
                            issuing_ca_sha256 = %svid.issuer_sha256().unwrap_or_default(),
                            "SVID renewed"
                        );
                        cell.install(svid);
                        break;
                    }
                    Err(error) => {
                        let left = current
                            .not_after()
                            .duration_since(SystemTime::now())
                            .unwrap_or(Duration::ZERO);
                        if left.is_zero() {
                            return Err(ClientError::Expired {
                                id: current.id().clone(),
                                not_after: current.not_after(),
                                last_error: error.to_string(),
                            });
                        }
                        tracing::warn!(
                            id = %current.id(),
                            retry_in = ?delay.min(left),
                            "renewing the SVID failed: {error}"
                        );
                        tokio::time::sleep(delay.min(left)).await;
                        delay = (delay * 2).min(retry.max);
                    }
                }
            }
        }
    }

    /// Applies every bundle snapshot the CA streams to `shared` (and to the client's own
    /// bundles), each replacing the whole set; a snapshot that is wrong in any way is logged and
    /// skipped. When the stream drops, the last good set stays and the client reconnects with
    /// backoff. Runs until the task is dropped.
    pub async fn follow_bundles(&self, shared: SharedBundles, retry: RetryOptions) {
        let mut delay = retry.initial;
        loop {
            match self.watch_bundles().await {
                Ok(mut stream) => loop {
                    match stream.message().await {
                        Ok(Some(snapshot)) => {
                            match bundle_set_from_snapshot(&snapshot, &self.trust_domain) {
                                Ok(set) => {
                                    let own_roots =
                                        set.get(&self.trust_domain).map_or(0, |b| b.roots.len());
                                    let set = Arc::new(set);
                                    shared.store(set.clone());
                                    if !Arc::ptr_eq(&shared, &self.bundles) {
                                        self.bundles.store(set);
                                    }
                                    self.applied.send_modify(|count| *count += 1);
                                    delay = retry.initial;
                                    tracing::info!(
                                        sequence = snapshot.sequence,
                                        trust_domains = snapshot.bundles.len(),
                                        roots = own_roots,
                                        "trust bundles applied"
                                    );
                                    self.issuer.send_if_modified(|issuer| {
                                        let new = &snapshot.issuing_ca_sha256;
                                        let changed = issuer != new;
                                        if changed {
                                            issuer.clone_from(new);
                                        }
                                        changed
                                    });
                                }
                                Err(error) => {
                                    tracing::warn!("trust bundle snapshot skipped: {error}");
                                }
                            }
                        }
                        Ok(None) => {
                            tracing::warn!("the trust bundle stream ended; reconnecting");
                            break;
                        }
                        Err(status) => {
                            tracing::warn!(
                                "the trust bundle stream failed ({}: {}); reconnecting",
                                status.code(),
                                status.message()
                            );
                            break;
                        }
                    }
                },
                Err(error) => tracing::warn!("opening the trust bundle stream: {error}"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(retry.max);
        }
    }
}

/// A random delay before renewing onto a new signing chain: up to a tenth of the time left
/// until `renew_at`, at most [`REISSUE_SPREAD_MAX`].
fn reissue_delay(renew_at: SystemTime) -> Duration {
    let left = renew_at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    let spread = (left / 10).min(REISSUE_SPREAD_MAX);
    spread.mul_f64((random_jitter() + 1.0) / 2.0)
}

fn grpc(channel: Channel) -> CertificateServiceClient<Channel> {
    CertificateServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

fn csr_request(request: &CertificateRequest, ttl: Duration) -> CsrRequest {
    CsrRequest {
        csr_der: request.csr_der().to_vec(),
        requested_ttl_seconds: ttl.as_secs(),
    }
}

/// The CA's answer; its issue time is taken no later than now (a CA clock ahead of ours would
/// otherwise push renewal late).
fn issued_chain(answer: CsrResponse) -> IssuedChain {
    let now = SystemTime::now();
    let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
    IssuedChain {
        chain: answer
            .cert_chain
            .into_iter()
            .map(CertificateDer::from)
            .collect(),
        issued_at: at(answer.issued_at).min(now),
        not_after: at(answer.not_after),
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
