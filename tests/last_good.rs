//! Crash safety and last-known-good, end to end: an ingress gateway whose backend is a
//! `resolution: DNS` ServiceEntry resolved through dnsmasq is killed with SIGKILL at random
//! moments while its configuration files and DNS records change, then restarted with DNS
//! unreachable: sometimes with the configuration directory gone, sometimes with the store's
//! files truncated or overwritten. Every time it must serve from the last good state, and its
//! log and health details must say what it serves and why.
//!
//! The rounds are driven by a seeded RNG; the seed is printed, and `STRAIT_TEST_SEED=N` replays
//! a run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::backend::Backend;
use common::client;
use common::dnsmasq::Dnsmasq;
use common::gateway::{Gateway, free_port, http_get};

const ROUNDS: usize = 20;

/// The backends `web.mesh.test` can point at: one per loopback address, on one port.
const ADDRESSES: [[u8; 4]; 3] = [[127, 0, 0, 1], [127, 0, 0, 2], [127, 0, 0, 3]];

fn config(port: u16, generation: u32) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: web, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: default}}
spec:
  hosts: [web.example.com]
  gateways: [istio-system/web]
  http:
  - headers:
      response: {{set: {{x-generation: "{generation}"}}}}
    route:
    - destination: {{host: web.mesh.test, port: {{number: {port}}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web, namespace: default}}
spec:
  hosts: [web.mesh.test]
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  resolution: DNS
"#
    )
}

fn write_hosts(path: &Path, backend: usize) {
    let [a, b, c, d] = ADDRESSES[backend];
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, format!("{a}.{b}.{c}.{d} web.mesh.test\n")).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

fn backend_name(backend: usize) -> String {
    format!("web-{}", backend + 1)
}

/// What the gateway serves now: (status, backend, generation header).
async fn served(address: SocketAddr) -> (u16, Option<String>, Option<String>) {
    let response = client::get(address, "web.example.com", "/").await;
    (
        response.status,
        response.backend().map(str::to_owned),
        response.header("x-generation").map(str::to_owned),
    )
}

fn details(gateway: &Gateway) -> serde_json::Value {
    let (status, body) = http_get(gateway.health, "/healthz/details");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// How the store's files are damaged before a restart.
#[derive(Clone, Copy, Debug)]
enum Damage {
    TruncateLog,
    OverwriteLog,
    TruncateConf,
    OverwriteConf,
}

fn damage(store: &Path, damage: Damage) {
    let (file, truncate) = match damage {
        Damage::TruncateLog => ("db", true),
        Damage::OverwriteLog => ("db", false),
        Damage::TruncateConf => ("conf", true),
        Damage::OverwriteConf => ("conf", false),
    };
    let path = store.join(file);
    let bytes = std::fs::read(&path).unwrap_or_default();
    let damaged: Vec<u8> = match truncate {
        // An empty `conf` sled rewrites itself, keeping the data (with a warning of its
        // own); a torn one it refuses.
        true if file == "conf" => bytes[..bytes.len() / 2].to_vec(),
        true => Vec::new(),
        false => bytes.iter().map(|b| b ^ 0xa5).chain([0x5a; 64]).collect(),
    };
    std::fs::write(&path, damaged).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_during_churn_it_restarts_without_dns_from_the_last_good_state() {
    let seed = std::env::var("STRAIT_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("last_good: seed {seed} (STRAIT_TEST_SEED={seed} replays this run)");
    let mut rng = fastrand::Rng::with_seed(seed);

    let first = Backend::start(&backend_name(0)).await;
    let port = first.addr.port();
    let mut backends = vec![first];
    for (i, address) in ADDRESSES.iter().enumerate().skip(1) {
        backends
            .push(Backend::start_on(&backend_name(i), SocketAddr::from((*address, port))).await);
    }

    let dns_port = free_port();
    let dead_dns = format!("127.0.0.1:{}", free_port());
    let hosts_dir = common::TempDir::new("last-good-dns");
    let hosts = hosts_dir.path().join("hosts");
    let mut record = 0;
    write_hosts(&hosts, record);
    let dns = Dnsmasq::start(dns_port, &hosts);
    let mut generation = 0;
    let dns_args = |server: &str| {
        vec![
            "--dns-server".to_owned(),
            server.to_owned(),
            "--dns-refresh-rate".to_owned(),
            "200ms".to_owned(),
        ]
    };
    let live = dns_args(&format!("127.0.0.1:{dns_port}"));
    let mut builder = Gateway::builder()
        .config("web.yaml", &config(port, generation))
        .server_port(80);
    for arg in &live {
        builder = builder.arg(arg.clone());
    }
    let mut gateway = builder.start();
    let address = gateway.addr(80);
    let config_dir = gateway.config_dir();
    let away = gateway.dir.path().join("config-away");
    let store = gateway.dir.path().join("data/store");
    let context = |round: usize| format!("seed {seed}, round {round}");

    let mut away_rounds = 0;
    let mut damaged_rounds = 0;
    for round in 0..ROUNDS {
        if round > 0 {
            // Back to normal: DNS reachable, the configuration in place.
            gateway.kill();
            if away.exists() {
                std::fs::rename(&away, &config_dir).unwrap();
            }
            gateway.restart(live.clone());
        }
        // The current record and configuration are served, and written as last good.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (status, backend, header) = served(address).await;
            let version = gateway.version();
            let written = details(&gateway)["last_good_written"]["version"]
                .as_u64()
                .unwrap_or(0);
            if status == 200
                && backend.as_deref() == Some(backend_name(record).as_str())
                && header.as_deref() == Some(generation.to_string().as_str())
                && written >= version
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: never served record {record} and generation {generation} (last {status} {backend:?} {header:?}, version {version}, written {written})\n{}",
                context(round),
                gateway.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Churn, until SIGKILL at a random moment.
        let mut records: BTreeSet<String> = BTreeSet::from([backend_name(record)]);
        let mut generations: BTreeSet<String> = BTreeSet::from([generation.to_string()]);
        let kill_at = Instant::now() + Duration::from_millis(rng.u64(0..700));
        while Instant::now() < kill_at {
            if rng.bool() {
                generation += 1;
                gateway.write_config("web.yaml", &config(port, generation));
                generations.insert(generation.to_string());
            } else {
                record = (record + 1 + rng.usize(0..ADDRESSES.len() - 1)) % ADDRESSES.len();
                write_hosts(&hosts, record);
                dns.reload();
                records.insert(backend_name(record));
            }
            let pause = Duration::from_millis(rng.u64(20..250));
            tokio::time::sleep(pause.min(kill_at.saturating_duration_since(Instant::now()))).await;
        }
        gateway.kill();

        // Restart with DNS unreachable; sometimes without configuration, sometimes with the
        // store damaged.
        // (Rounds 1 and 2 make sure each kind runs whatever the seed; the kinds of damage
        // take turns.)
        let config_away = round == 1 || rng.u8(0..3) == 0;
        let damaged = (round == 2 || rng.u8(0..3) == 0).then(|| {
            [
                Damage::TruncateLog,
                Damage::OverwriteLog,
                Damage::TruncateConf,
                Damage::OverwriteConf,
            ][damaged_rounds % 4]
        });
        if config_away {
            away_rounds += 1;
            std::fs::rename(&config_dir, &away).unwrap();
        }
        if let Some(how) = damaged {
            damaged_rounds += 1;
            damage(&store, how);
        }
        let log_before = gateway.log().len();
        gateway.restart(dns_args(&dead_dns));
        let what = format!(
            "{}: config away {config_away}, store damage {damaged:?}, records {records:?}, generations {generations:?}",
            context(round)
        );

        let (status, backend, header) = served(address).await;
        let log = gateway.log()[log_before..].to_owned();
        assert_eq!(status, 200, "{what}\n{log}");
        let backend = backend.unwrap_or_default();
        assert!(
            records.contains(&backend),
            "{what}: served by {backend}\n{log}"
        );
        let header = header.unwrap_or_default();
        if config_away {
            assert!(
                generations.contains(&header),
                "{what}: generation {header}\n{log}"
            );
        } else {
            // The files are read: the configuration written last is served.
            assert_eq!(header, generation.to_string(), "{what}\n{log}");
        }

        let details = details(&gateway);
        let degraded: Vec<String> = details["degraded"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap_or_default().to_owned())
            .collect();
        if config_away {
            assert_eq!(details["serving"], "last-known-good", "{what}: {details}");
            let reason = details["reason"].as_str().unwrap_or_default();
            assert!(
                reason.starts_with("serving last-known-good snapshot version")
                    && reason.contains("the configuration source is unavailable"),
                "{what}: {details}"
            );
            assert!(
                log.lines()
                    .any(|l| l.contains("ERROR") && l.contains(reason)),
                "{what}: the log does not say what is served\n{log}"
            );
        } else {
            assert_eq!(details["serving"], "configuration", "{what}: {details}");
            let from = match damaged {
                Some(_) => "from the last-known-good snapshot",
                None => "from the store",
            };
            assert!(
                degraded
                    .iter()
                    .any(|d| d.contains("DNS answer for web.mesh.test") && d.contains(from)),
                "{what}: {details}"
            );
            assert!(
                log.lines().any(|l| l.contains("WARN")
                    && l.contains("DNS answers restored for web.mesh.test")
                    && l.contains(from)),
                "{what}: the log does not say where the DNS answer came from\n{log}"
            );
        }
        if damaged.is_some() {
            let store_path = store.display().to_string();
            let loud = |line: &str| {
                line.contains(&store_path)
                    && line.contains("could not be used")
                    && line.contains("moved to")
            };
            assert!(degraded.iter().any(|d| loud(d)), "{what}: {details}");
            assert!(
                log.lines().any(|l| l.contains("ERROR") && loud(l)),
                "{what}: the damaged store is not reported\n{log}"
            );
        }
    }
    eprintln!(
        "last_good: {ROUNDS} rounds, {away_rounds} without configuration, {damaged_rounds} with the store damaged"
    );

    // The configuration comes back: it is served again, and the health details say so.
    if away.exists() {
        std::fs::rename(&away, &config_dir).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while details(&gateway)["serving"] != "configuration" {
        assert!(
            Instant::now() < deadline,
            "seed {seed}: the configuration was not served again\n{}",
            gateway.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, header) = served(address).await;
    assert_eq!(status, 200);
    assert_eq!(header, Some(generation.to_string()));
}
