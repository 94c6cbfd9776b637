//! A `strait run --role control` process for a test: a CA made with `strait ca init` in its own
//! data directory, the CA service and health endpoint on free ports, and helpers to mint tokens,
//! read the bundle and run `strait ca` against it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::gateway::{free_port, http_get};
use super::{Run, TempDir, run, strait};

/// A running control role. Killed when dropped.
pub struct ControlPlane {
    child: Child,
    pub dir: TempDir,
    /// The CA service (`--ca-listen`).
    pub ca: SocketAddr,
    pub health: SocketAddr,
}

/// `strait ca ARGS --data DATA`.
pub fn ca(data: &Path, args: &[&str]) -> Run {
    run(strait().arg("ca").args(args).arg("--data").arg(data))
}

/// The `issuing_ca_sha256` of the last line of `log` that has `message`.
pub fn issuer_in(log: &str, message: &str) -> String {
    let line = log
        .lines()
        .rfind(|l| l.contains(message))
        .unwrap_or_else(|| panic!("no {message:?} in:\n{log}"));
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("issuing_ca_sha256="))
        .unwrap_or_else(|| panic!("no issuing_ca_sha256 in {line}"))
        .trim_matches('"')
        .to_owned()
}

/// Creates a CA for `trust_domain` in `data`.
pub fn init_ca(data: &Path, trust_domain: &str) {
    let created = ca(data, &["init", "--trust-domain", trust_domain]);
    assert_eq!(created.code, Some(0), "{}", created.stderr);
}

impl ControlPlane {
    /// `strait ca init` (trust domain `cluster.local`), then the control role with `args`.
    pub fn start(args: &[&str]) -> ControlPlane {
        let mut dir = TempDir::new("control");
        init_ca(&dir.path().join("data"), "cluster.local");
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (ca, health) = (addr(free_port()), addr(free_port()));
            let log = std::fs::File::create(dir.path().join("strait.log")).unwrap();
            let child = strait()
                .args(["run", "--role", "control", "--data"])
                .arg(dir.path().join("data"))
                .args(["--ca-listen", &ca.to_string()])
                .args(["--health", &health.to_string()])
                .args(["--admin", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
                .args(["--drain-period", "0s", "--federated-poll-interval", "200ms"])
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("strait starts");
            let mut plane = ControlPlane {
                child,
                dir,
                ca,
                health,
            };
            if plane.wait_ready() {
                return plane;
            }
            let log = plane.log();
            assert!(
                attempts < 5 && log.contains("Address already in use"),
                "the control role exited before it was ready:\n{log}"
            );
            let _ = plane.child.wait();
            dir = std::mem::replace(&mut plane.dir, TempDir::new("control-spare"));
        }
    }

    /// Waits for readiness; false if the process exited first.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            // Its own health endpoint, not another process's on a port taken meanwhile.
            if self.log().contains("endpoints=Health")
                && http_get(self.health, "/healthz/ready").0 == 200
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("the control role was not ready in 20 s:\n{}", self.log());
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The CA's folder of federated bundles.
    pub fn federated_dir(&self) -> PathBuf {
        self.data().join("ca/federated")
    }

    /// A one-time bootstrap token for `identity`.
    pub fn token(&self, identity: &str, ttl: &str) -> String {
        let minted = ca(
            &self.data(),
            &["token", "--identity", identity, "--ttl", ttl],
        );
        assert_eq!(minted.code, Some(0), "{}", minted.stderr);
        minted.stdout.trim().to_owned()
    }

    /// The CA's trust bundle (PEM), written to a file.
    pub fn bundle_file(&self) -> PathBuf {
        let bundle = ca(&self.data(), &["bundle"]);
        assert_eq!(bundle.code, Some(0), "{}", bundle.stderr);
        self.dir.write("root-cert.pem", &bundle.stdout)
    }

    /// `strait ca request` for `identity` with `token`, into `out`.
    pub fn request(&self, identity: &str, token: &str, out: &Path) -> Run {
        let token_file = self.dir.write("token", token);
        run(strait()
            .args(["ca", "request", "--ca-address", &self.ca.to_string()])
            .arg("--trust-bundle")
            .arg(self.bundle_file())
            .args(["--spiffe-id", identity])
            .arg("--token-file")
            .arg(token_file)
            .arg("--out")
            .arg(out))
    }

    /// The process's log (standard error).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("strait.log")).unwrap_or_default()
    }

    /// Waits until the log contains `text`.
    pub fn wait_log(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "the log never said {text:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
