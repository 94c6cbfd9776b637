//! The resolver task: looks up the names the [`DnsCache`] was asked for (A and AAAA, with
//! hickory), when each is due, and records every outcome in the cache. It never runs on the
//! data path or inside compilation.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::Resolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::RecordType;
use tokio::task::JoinSet;

use super::marked::MarkedRuntime;
use super::{DEFAULT_REFRESH_RATE, DnsCache, Outcome, Timing};

/// The resolver, its sockets marked when the proxy marks its traffic.
type MarkedResolver = Resolver<MarkedRuntime>;

/// How names are resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct DnsOptions {
    /// The servers asked (UDP, then TCP); none: those of /etc/resolv.conf.
    pub servers: Vec<SocketAddr>,
    /// Overrides MeshConfig `dnsRefreshRate` (lower values are for tests).
    pub refresh_rate: Option<Duration>,
    /// How long a name that resolved before may answer NXDOMAIN before it has no addresses.
    pub nxdomain_grace: Duration,
    /// `SO_MARK` on the resolver's sockets, so that capture leaves its lookups alone.
    pub socket_mark: Option<u32>,
}

impl Default for DnsOptions {
    fn default() -> Self {
        DnsOptions {
            servers: Vec::new(),
            refresh_rate: None,
            nxdomain_grace: Duration::from_secs(300),
            socket_mark: None,
        }
    }
}

/// Why the resolver could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("reading the system DNS configuration (/etc/resolv.conf): {0}")]
    SystemConfig(NetError),
    #[error("building the DNS resolver: {0}")]
    Build(NetError),
}

/// Builds the resolver: the given servers, or the system's.
fn build(options: &DnsOptions) -> Result<MarkedResolver, DnsError> {
    let provider = MarkedRuntime::new(options.socket_mark);
    let mut builder = if options.servers.is_empty() {
        MarkedResolver::builder(provider).map_err(DnsError::SystemConfig)?
    } else {
        let servers = options
            .servers
            .iter()
            .map(|server| {
                let connections = [ProtocolConfig::Udp, ProtocolConfig::Tcp]
                    .into_iter()
                    .map(|protocol| {
                        let mut connection = ConnectionConfig::new(protocol);
                        connection.port = server.port();
                        connection
                    })
                    .collect();
                NameServerConfig::new(server.ip(), true, connections)
            })
            .collect();
        let config = ResolverConfig::from_parts(None, Vec::new(), servers);
        MarkedResolver::builder_with_config(config, provider)
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    // Every refresh asks the server: the answers are cached here, with their own rules.
    opts.cache_size = 0;
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 1;
    builder.build().map_err(DnsError::Build)
}

/// Looks up the cache's names for as long as the process runs.
pub async fn run_resolver(cache: DnsCache, options: DnsOptions) -> Result<(), DnsError> {
    let resolver = build(&options)?;
    loop {
        let timing = Timing {
            floor: options
                .refresh_rate
                .or(cache.mesh_refresh_rate())
                .unwrap_or(DEFAULT_REFRESH_RATE)
                .max(Duration::from_millis(100)),
            nxdomain_grace: options.nxdomain_grace,
        };
        let (due, next) = cache.due(Instant::now());
        let mut lookups = JoinSet::new();
        for name in due {
            let resolver = resolver.clone();
            lookups.spawn(async move {
                let outcome = lookup(&resolver, &name).await;
                (name, outcome)
            });
        }
        while let Some(done) = lookups.join_next().await {
            if let Ok((name, outcome)) = done {
                // Recording may write the store (a flush): off the async workers.
                let cache = cache.clone();
                let recorded = tokio::task::spawn_blocking(move || {
                    cache.record(&name, outcome, Instant::now(), timing);
                });
                let _ = recorded.await;
            }
        }
        let (due, next_after) = cache.due(Instant::now());
        if !due.is_empty() {
            continue;
        }
        let wake = next_after.or(next).map(tokio::time::Instant::from_std);
        match wake {
            Some(at) => tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = cache.wanted_changed() => {}
            },
            None => cache.wanted_changed().await,
        }
    }
}

/// One lookup of `name`: its A and AAAA records.
async fn lookup(resolver: &MarkedResolver, name: &str) -> Outcome {
    // A trailing dot: the name is absolute, never completed with search domains.
    let fqdn = format!("{name}.");
    let mut addresses: Vec<IpAddr> = Vec::new();
    let mut ttl: Option<u32> = None;
    let mut nxdomain = false;
    for record_type in [RecordType::A, RecordType::AAAA] {
        match resolver.lookup(fqdn.as_str(), record_type).await {
            Ok(found) => {
                for record in found.answers() {
                    if let Some(ip) = record.data.ip_addr() {
                        addresses.push(ip);
                        ttl = Some(ttl.map_or(record.ttl, |t| t.min(record.ttl)));
                    }
                }
            }
            Err(error) if error.is_nx_domain() => nxdomain = true,
            Err(error) if error.is_no_records_found() => {}
            Err(error) => {
                // An IPv4 answer is enough when the AAAA lookup alone fails.
                if addresses.is_empty() {
                    return Outcome::Failed(error.to_string());
                }
            }
        }
    }
    if addresses.is_empty() {
        return Outcome::Missing(match nxdomain {
            true => "NXDOMAIN".to_owned(),
            false => "no A or AAAA record".to_owned(),
        });
    }
    Outcome::Resolved {
        addresses,
        ttl: Duration::from_secs(u64::from(ttl.unwrap_or(0))),
    }
}
