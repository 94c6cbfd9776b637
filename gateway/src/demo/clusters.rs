//! The demo's two clusters on loopback: where everything listens, the Istio configuration of
//! each (`deploy/examples/demo`), each cluster's CA and the identities it issues, the peering
//! of the two east-west gateways (the Peer documents `strait link` prints, applied as `strait
//! peer apply` does), and the command line of every proxy.
//!
//! Files are laid out under the demo's folder as a real installation would have them: `NAME/`
//! per cluster with its `config/` and `ca/`, and per proxy `PROXY-id/` (its identity folder)
//! and `PROXY-data/` (its `--data`). Sidecars trust the other cluster through their identity
//! folder's `federated/`, which points at their east-west gateway's copy of the peer's bundles
//! (`DATA/ca/federated`, kept current by the gateway's poller): the file-mode way federated
//! bundles reach proxies.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use strait_certs::{Authority, AuthorityOptions, SpiffeId, TrustDomain, published_trust_bundle};
use strait_federation::import::imports_dir;
use strait_federation::peer::{Peer, PeerFields};
use strait_federation::peer_store::PeerStore;

/// The Istio configuration of each cluster, as the repository has it.
const EAST_CONFIG: [(&str, &str); 5] = [
    (
        "mesh.yaml",
        include_str!("../../../deploy/examples/demo/east/mesh.yaml"),
    ),
    (
        "networks.yaml",
        include_str!("../../../deploy/examples/demo/east/networks.yaml"),
    ),
    (
        "gateways.yaml",
        include_str!("../../../deploy/examples/demo/east/gateways.yaml"),
    ),
    (
        "services.yaml",
        include_str!("../../../deploy/examples/demo/east/services.yaml"),
    ),
    (
        "egress.yaml",
        include_str!("../../../deploy/examples/demo/east/egress.yaml"),
    ),
];
const WEST_CONFIG: [(&str, &str); 3] = [
    (
        "mesh.yaml",
        include_str!("../../../deploy/examples/demo/west/mesh.yaml"),
    ),
    (
        "gateways.yaml",
        include_str!("../../../deploy/examples/demo/west/gateways.yaml"),
    ),
    (
        "services.yaml",
        include_str!("../../../deploy/examples/demo/west/services.yaml"),
    ),
];

/// The port every application listens on (the Sidecar resources' `defaultEndpoint`).
pub const APP_PORT: u16 = 8080;
/// The port of frontend's explicit HTTP proxy (its Sidecar's `HTTP_PROXY` egress listener).
pub const HTTP_PROXY_PORT: u16 = 15080;
/// The external API's address (api.partner.example's ServiceEntry endpoint).
pub const PARTNER_API: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(ip(9, 1)), APP_PORT);

/// `127.10.NET.HOST`: east is net 1, west net 2, outside the mesh net 9.
pub const fn ip(net: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 10, net, host)
}

/// A cluster: its name, trust domain and network.
#[derive(Clone, Copy, Debug)]
pub struct Cluster {
    pub name: &'static str,
    pub trust_domain: &'static str,
    pub network: &'static str,
    /// The third octet of its addresses.
    net: u8,
}

pub const EAST: Cluster = Cluster {
    name: "east",
    trust_domain: "east.mesh",
    network: "net-east",
    net: 1,
};
pub const WEST: Cluster = Cluster {
    name: "west",
    trust_domain: "west.mesh",
    network: "net-west",
    net: 2,
};

/// What a proxy is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Ingress,
    Eastwest,
    Egress,
    /// A workload's sidecar: the workload's name, and whether it calls out (then its
    /// application goes through the sidecar's explicit HTTP proxy).
    Sidecar {
        workload: &'static str,
        entry: &'static str,
        calls_out: bool,
    },
}

/// One proxy of the demo.
#[derive(Clone, Copy, Debug)]
pub struct ProxySpec {
    pub cluster: Cluster,
    pub kind: Kind,
    /// The last octet of its address.
    host: u8,
}

/// Every proxy, in the order they are listed.
pub const PROXIES: [ProxySpec; 7] = [
    ProxySpec {
        cluster: EAST,
        kind: Kind::Ingress,
        host: 1,
    },
    ProxySpec {
        cluster: EAST,
        kind: Kind::Sidecar {
            workload: "frontend",
            entry: "frontend-1",
            calls_out: true,
        },
        host: 10,
    },
    ProxySpec {
        cluster: EAST,
        kind: Kind::Sidecar {
            workload: "reviews",
            entry: "reviews-standby",
            calls_out: false,
        },
        host: 11,
    },
    ProxySpec {
        cluster: EAST,
        kind: Kind::Eastwest,
        host: 2,
    },
    ProxySpec {
        cluster: EAST,
        kind: Kind::Egress,
        host: 3,
    },
    ProxySpec {
        cluster: WEST,
        kind: Kind::Sidecar {
            workload: "reviews",
            entry: "reviews-1",
            calls_out: false,
        },
        host: 10,
    },
    ProxySpec {
        cluster: WEST,
        kind: Kind::Eastwest,
        host: 2,
    },
];

impl ProxySpec {
    /// `CLUSTER/NAME`: `east/ingress`, `west/reviews`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.cluster.name, self.what())
    }

    /// What it is within its cluster: `ingress`, `eastwest`, `egress` or the workload's name.
    fn what(&self) -> &'static str {
        match self.kind {
            Kind::Ingress => "ingress",
            Kind::Eastwest => "eastwest",
            Kind::Egress => "egress",
            Kind::Sidecar { workload, .. } => workload,
        }
    }

    /// Its own loopback address: its admin (15000), metrics (15020) and health (15021)
    /// endpoints are there, and so are a gateway's servers and a sidecar's listeners.
    pub fn ip(&self) -> Ipv4Addr {
        ip(self.cluster.net, self.host)
    }

    /// Its readiness endpoint.
    pub fn health(&self) -> SocketAddr {
        SocketAddr::new(self.ip().into(), 15021)
    }

    /// The application of a sidecar's workload, and the explicit HTTP proxy it calls through.
    pub fn application(&self) -> Option<(SocketAddr, Option<SocketAddr>)> {
        let Kind::Sidecar { calls_out, .. } = self.kind else {
            return None;
        };
        let proxy = calls_out.then(|| SocketAddr::new(self.ip().into(), HTTP_PROXY_PORT));
        Some((SocketAddr::new(self.ip().into(), APP_PORT), proxy))
    }

    /// Its SPIFFE ID: `spiffe://TD/ns/NAMESPACE/sa/SERVICE_ACCOUNT`.
    fn identity(&self) -> (&'static str, &'static str) {
        match self.kind {
            Kind::Ingress => ("istio-system", "istio-ingressgateway"),
            Kind::Eastwest => ("istio-system", "istio-eastwestgateway"),
            Kind::Egress => ("istio-system", "istio-egressgateway"),
            Kind::Sidecar { workload, .. } => ("default", workload),
        }
    }

    pub fn spiffe_id(&self) -> String {
        let (namespace, account) = self.identity();
        format!(
            "spiffe://{}/ns/{namespace}/sa/{account}",
            self.cluster.trust_domain
        )
    }

    /// `strait run ...` for it (without the program name), in the demo folder `dir`, with the
    /// ingress gateway's port 80 served at `ingress`.
    pub fn args(&self, dir: &Path, ingress: SocketAddr) -> Vec<String> {
        let layout = Layout { dir };
        let ip = self.ip();
        let (namespace, account) = self.identity();
        let eastwest = eastwest(self.cluster);
        let mut args: Vec<String> = vec!["run".into(), "--role".into()];
        args.push(
            match self.kind {
                Kind::Ingress => "ingress",
                Kind::Eastwest => "eastwest",
                Kind::Egress => "egress",
                Kind::Sidecar { .. } => "sidecar",
            }
            .into(),
        );
        let mut flag = |name: &str, value: String| {
            args.push(format!("--{name}"));
            args.push(value);
        };
        flag("config", path(&layout.config(self.cluster)));
        if self.cluster.name == EAST.name && self.kind != Kind::Ingress {
            // What east imports from west, beside east's own configuration.
            flag("config", path(&imports_dir(&layout.data(&eastwest))));
        }
        flag("data", path(&layout.data(self)));
        flag("identity-dir", path(&layout.identity(self)));
        flag("service-account", account.into());
        flag("network", self.cluster.network.into());
        flag("admin", format!("{ip}:15000"));
        flag("metrics", format!("{ip}:15020"));
        flag("health", format!("{ip}:15021"));
        flag("access-log", path(&layout.access_log(self)));
        flag("drain-period", "0s".into());
        flag("drain-timeout", "1s".into());
        match self.kind {
            Kind::Ingress => {
                flag("namespace", namespace.into());
                flag("bind", ingress.ip().to_string());
                flag("port", format!("80={}", ingress.port()));
            }
            Kind::Egress => {
                flag("namespace", namespace.into());
                flag("bind", ip.to_string());
                flag("port", "443=8443".into());
                flag("instance-ip", ip.to_string());
            }
            Kind::Eastwest => {
                flag("namespace", namespace.into());
                flag("bind", ip.to_string());
                flag(
                    "trust-bundle",
                    path(&layout.identity(self).join("bundle.json")),
                );
                flag("trunk-listen", format!("{ip}:15443"));
                flag("trunk-ingress", format!("{ip}:15444"));
                flag("federation-api", format!("{ip}:15445"));
                flag("bundle-endpoint", format!("{ip}:15446"));
                flag("export-keepalive", "5s".into());
            }
            Kind::Sidecar {
                workload, entry, ..
            } => {
                flag("workload", format!("{namespace}/{entry}"));
                flag("labels", format!("app={workload}"));
                flag("interception-mode", "NONE".into());
                flag("instance-ip", ip.to_string());
                flag("dns-proxy", "off".into());
            }
        }
        args
    }
}

/// A cluster's east-west gateway.
fn eastwest(cluster: Cluster) -> ProxySpec {
    ProxySpec {
        cluster,
        kind: Kind::Eastwest,
        host: 2,
    }
}

fn path(path: &Path) -> String {
    path.display().to_string()
}

/// Where things are in the demo folder.
struct Layout<'a> {
    dir: &'a Path,
}

impl Layout<'_> {
    fn cluster(&self, cluster: Cluster) -> PathBuf {
        self.dir.join(cluster.name)
    }

    fn config(&self, cluster: Cluster) -> PathBuf {
        self.cluster(cluster).join("config")
    }

    fn ca(&self, cluster: Cluster) -> PathBuf {
        self.cluster(cluster).join("ca")
    }

    fn identity(&self, proxy: &ProxySpec) -> PathBuf {
        self.cluster(proxy.cluster)
            .join(format!("{}-id", proxy.what()))
    }

    fn data(&self, proxy: &ProxySpec) -> PathBuf {
        self.cluster(proxy.cluster)
            .join(format!("{}-data", proxy.what()))
    }

    fn access_log(&self, proxy: &ProxySpec) -> PathBuf {
        logs_dir(self.dir).join(format!(
            "{}-{}-access.log",
            proxy.cluster.name,
            proxy.what()
        ))
    }
}

/// Where the demo's logs are: the program's own (`strait.log`) and each proxy's access log.
pub fn logs_dir(dir: &Path) -> PathBuf {
    dir.join("logs")
}

/// Writes everything the proxies start from into `dir` (empty or new): each cluster's
/// configuration and CA, every proxy's identity, and the peering of the east-west gateways
/// (west's Peer, with the QUIC trunk, applied in east; east's applied in west).
pub fn prepare(dir: &Path) -> anyhow::Result<()> {
    let layout = Layout { dir };
    std::fs::create_dir_all(logs_dir(dir))
        .with_context(|| format!("creating {}", logs_dir(dir).display()))?;
    for (cluster, files) in [(EAST, &EAST_CONFIG[..]), (WEST, &WEST_CONFIG[..])] {
        let config = layout.config(cluster);
        std::fs::create_dir_all(&config)
            .with_context(|| format!("creating {}", config.display()))?;
        for (name, text) in files {
            let file = config.join(name);
            std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
        }
        let trust_domain = TrustDomain::new(cluster.trust_domain)?;
        Authority::init(
            trust_domain,
            &layout.ca(cluster),
            &AuthorityOptions::default(),
        )
        .with_context(|| format!("creating {}'s CA", cluster.name))?;
    }
    for proxy in &PROXIES {
        issue_identity(&layout, proxy)?;
    }
    peer(&layout, WEST, EAST, true)?;
    peer(&layout, EAST, WEST, false)?;
    std::fs::create_dir_all(imports_dir(&layout.data(&eastwest(EAST))))?;
    // Sidecars trust the peer cluster through their gateway's copy of its bundle.
    for proxy in PROXIES
        .iter()
        .filter(|p| matches!(p.kind, Kind::Sidecar { .. }))
    {
        let federated = PeerStore::new(&layout.data(&eastwest(proxy.cluster))).federated_dir();
        let link = layout.identity(proxy).join("federated");
        std::os::unix::fs::symlink(&federated, &link)
            .with_context(|| format!("linking {} to {}", link.display(), federated.display()))?;
    }
    Ok(())
}

/// The proxy's identity folder, issued by its cluster's CA; an east-west gateway's also holds
/// the bundle it serves as SPIFFE JSON (with the CA's sequence).
fn issue_identity(layout: &Layout, proxy: &ProxySpec) -> anyhow::Result<()> {
    let ca = layout.ca(proxy.cluster);
    let authority = Authority::load(&ca).with_context(|| format!("loading {}", ca.display()))?;
    let id = SpiffeId::parse(&proxy.spiffe_id())?;
    let out = layout.identity(proxy);
    crate::ca::issue_into(&authority, &id, std::time::Duration::ZERO, &out)?;
    if proxy.kind == Kind::Eastwest {
        let bundle = published_trust_bundle(&ca)?.to_spiffe_json()?;
        std::fs::write(out.join("bundle.json"), bundle)?;
    }
    Ok(())
}

/// Applies `remote`'s Peer document (what `strait link` prints there, with its current
/// bundle) to `local`'s east-west gateway; `trunk` asks it to keep a QUIC trunk to `remote`.
fn peer(layout: &Layout, remote: Cluster, local: Cluster, trunk: bool) -> anyhow::Result<()> {
    let gateway = eastwest(remote);
    let bundle = published_trust_bundle(&layout.ca(remote))?;
    let peer = Peer::from_fields(PeerFields {
        name: remote.name.into(),
        trust_domain: remote.trust_domain.into(),
        network: remote.network.into(),
        eastwest_address: format!("{}:15443", gateway.ip()),
        bundle_endpoint_url: format!("https://{}:15446", gateway.ip()),
        bundle_endpoint_id: gateway.spiffe_id(),
        trust_bundle: bundle.to_spiffe_json()?,
        trunk,
    })?;
    let store = PeerStore::new(&layout.data(&eastwest(local)));
    store
        .apply(&peer, &TrustDomain::new(local.trust_domain)?, false)
        .with_context(|| format!("peering {} with {}", local.name, remote.name))?;
    Ok(())
}
