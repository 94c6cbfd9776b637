//! What the unit tests share: a scratch directory removed on drop, and CAs of their own trust
//! domains (made with the real [`Authority`]), and peers.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use strait_certs::{Authority, AuthorityOptions, SpiffeId, TrustDomain};

/// A directory under the system's temporary directory, removed when dropped.
#[derive(Debug)]
pub struct TestDir(PathBuf);

impl TestDir {
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "strait-federation-{label}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn td(name: &str) -> TrustDomain {
    TrustDomain::new(name).unwrap()
}

/// A CA for `trust_domain` in `dir/NAME`.
pub fn ca(dir: &TestDir, name: &str, trust_domain: &str) -> Authority {
    Authority::init(
        td(trust_domain),
        &dir.path().join(name),
        &AuthorityOptions::default(),
    )
    .unwrap()
}

/// A peer `name` of `trust_domain` whose endpoint is `url` and presents `endpoint_id`, with
/// `bundle` for first contact.
pub fn peer(
    name: &str,
    bundle: &strait_certs::TrustBundle,
    url: &str,
    endpoint_id: &str,
) -> crate::peer::Peer {
    crate::peer::Peer {
        name: name.to_owned(),
        trust_domain: bundle.trust_domain.clone(),
        network: format!("net-{name}"),
        eastwest_address: "127.0.0.1:15443".to_owned(),
        bundle_endpoint: crate::peer::BundleEndpointRef {
            url: url.parse().unwrap(),
            spiffe_id: SpiffeId::parse(endpoint_id).unwrap(),
        },
        trust_bundle: bundle.clone(),
        trunk: false,
    }
}
