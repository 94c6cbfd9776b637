//! A `strait run --role ingress` process for a test: its configuration directory, credential
//! store, free ports for every listener and endpoint, its logs, and helpers to read its admin
//! endpoint and send it signals.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{TempDir, strait};

/// A port nothing listens on now (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How to start a gateway.
pub struct GatewayBuilder {
    dir: TempDir,
    server_ports: Vec<u32>,
    args: Vec<String>,
}

/// A running gateway. Killed when dropped.
pub struct Gateway {
    child: Child,
    pub dir: TempDir,
    pub admin: SocketAddr,
    pub metrics: SocketAddr,
    pub health: SocketAddr,
    /// Gateway server port -> the port it is bound to.
    pub ports: BTreeMap<u32, u16>,
    /// The extra `strait run` arguments it was started with.
    args: Vec<String>,
}

impl GatewayBuilder {
    pub fn new() -> GatewayBuilder {
        GatewayBuilder {
            dir: TempDir::new("gateway"),
            server_ports: Vec::new(),
            args: Vec::new(),
        }
    }

    /// Writes a configuration file (YAML) into the config directory.
    pub fn config(self, name: &str, yaml: &str) -> Self {
        self.dir.write(&format!("config/{name}"), yaml);
        self
    }

    /// Writes a credential folder (`files` are `(file name, PEM)`).
    pub fn credential(self, name: &str, files: &[(&str, &str)]) -> Self {
        for (file, text) in files {
            self.dir.write(&format!("credentials/{name}/{file}"), text);
        }
        self
    }

    /// A Gateway server port the test will use: it is mapped to a free local port.
    pub fn server_port(mut self, port: u32) -> Self {
        self.server_ports.push(port);
        self
    }

    /// Extra `strait run` arguments.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Starts the gateway and waits until it is ready.
    pub fn start(self) -> Gateway {
        let dir = self.dir;
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        std::fs::create_dir_all(dir.path().join("credentials")).unwrap();
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        // Free ports are found by binding and releasing them, so another process may take one
        // before strait binds it: then strait is started again on other ports.
        let mut attempts = 0;
        let (child, admin, metrics, health, ports) = loop {
            attempts += 1;
            let (admin, metrics, health) =
                (addr(free_port()), addr(free_port()), addr(free_port()));
            let ports: BTreeMap<u32, u16> = self
                .server_ports
                .iter()
                .map(|p| (*p, free_port()))
                .collect();
            let mut command = run_command(&dir, admin, metrics, health, &ports, &self.args);
            let stderr = std::fs::File::create(dir.path().join("strait.log")).unwrap();
            let child = command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .expect("strait starts");
            match wait_bound(child, &dir.path().join("strait.log")) {
                Ok(child) => break (child, admin, metrics, health, ports),
                Err(status) => {
                    let log =
                        std::fs::read_to_string(dir.path().join("strait.log")).unwrap_or_default();
                    assert!(
                        attempts < 5 && log.contains("Address already in use"),
                        "strait exited ({status}) before it was ready:\n{log}"
                    );
                }
            }
        };
        let mut gateway = Gateway {
            child,
            dir,
            admin,
            metrics,
            health,
            ports,
            args: self.args,
        };
        gateway.wait_ready();
        gateway
    }
}

/// `strait run --role ingress` on these ports and this directory, with `args` after.
fn run_command(
    dir: &TempDir,
    admin: SocketAddr,
    metrics: SocketAddr,
    health: SocketAddr,
    ports: &BTreeMap<u32, u16>,
    args: &[String],
) -> std::process::Command {
    let mut command = strait();
    command
        .arg("run")
        .args(["--role", "ingress"])
        .arg("--config")
        .arg(dir.path().join("config"))
        .arg("--credentials")
        .arg(dir.path().join("credentials"))
        .arg("--data")
        .arg(dir.path().join("data"))
        .args(["--admin", &admin.to_string()])
        .args(["--metrics", &metrics.to_string()])
        .args(["--health", &health.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--watch-interval", "100ms", "--reload-debounce", "50ms"])
        .args(["--drain-period", "0s", "--drain-timeout", "5s"])
        .arg("--access-log")
        .arg(dir.path().join("access.log"))
        .args(["--log-level", "info,strait_proxy=debug"]);
    for (server, listen) in ports {
        command.args(["--port", &format!("{server}={listen}")]);
    }
    command.args(args);
    command
}

impl Default for GatewayBuilder {
    fn default() -> Self {
        GatewayBuilder::new()
    }
}

impl Gateway {
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::new()
    }

    /// The local address serving Gateway server port `server_port`.
    pub fn addr(&self, server_port: u32) -> SocketAddr {
        let port = self
            .ports
            .get(&server_port)
            .unwrap_or_else(|| panic!("server port {server_port} was not declared to the builder"));
        SocketAddr::from(([127, 0, 0, 1], *port))
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    pub fn credentials_dir(&self) -> PathBuf {
        self.dir.path().join("credentials")
    }

    /// Replaces a configuration file the way an editor or `kubectl cp` would: write beside it,
    /// then rename over it.
    pub fn write_config(&self, name: &str, yaml: &str) {
        write_atomically(&self.config_dir().join(name), yaml);
    }

    pub fn remove_config(&self, name: &str) {
        std::fs::remove_file(self.config_dir().join(name)).unwrap();
    }

    /// Replaces files of a credential folder.
    pub fn write_credential(&self, name: &str, files: &[(&str, &str)]) {
        let folder = self.credentials_dir().join(name);
        std::fs::create_dir_all(&folder).unwrap();
        for (file, text) in files {
            write_atomically(&folder.join(file), text);
        }
    }

    /// The snapshot version being served.
    pub fn version(&self) -> u64 {
        self.config_dump()["version"].as_u64().unwrap_or(0)
    }

    /// Waits until a snapshot newer than `after` is served; panics with the log if none comes.
    pub fn wait_version_after(&self, after: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let version = self.version();
            if version > after {
                return version;
            }
            assert!(
                Instant::now() < deadline,
                "no configuration newer than version {after} was installed\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes a configuration file and waits until the change is served.
    pub fn apply(&self, name: &str, yaml: &str) -> u64 {
        let before = self.version();
        self.write_config(name, yaml);
        self.wait_version_after(before)
    }

    pub fn config_dump(&self) -> serde_json::Value {
        let (status, body) = http_get(self.admin, "/config_dump");
        assert_eq!(status, 200, "config_dump: {body}");
        serde_json::from_str(&body).unwrap()
    }

    pub fn metrics_text(&self) -> String {
        http_get(self.metrics, "/stats/prometheus").1
    }

    /// The sum of a metric's series whose labels include every `label="value"` given.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_sum(&self.metrics_text(), name, labels)
    }

    pub fn ready(&self) -> bool {
        http_get(self.health, "/healthz/ready").0 == 200
    }

    /// The program's own log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("strait.log")).unwrap_or_default()
    }

    /// The access log so far.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// Waits until an access log line satisfies `predicate` (lines are written off the request
    /// path) and returns it.
    pub fn access_log_line(&self, predicate: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(line) = self.access_log().lines().find(|l| predicate(l)) {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no access log line matched; the log:\n{}",
                self.access_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process with SIGKILL (no drain, nothing flushed) and waits until it is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the process again on the same ports and directory (state, logs appended), with
    /// `args` in place of the extra arguments it was built with; waits until it is ready.
    pub fn restart(&mut self, args: Vec<String>) {
        assert!(
            self.child.try_wait().unwrap().is_some(),
            "restart after the process has exited"
        );
        self.args = args;
        let mut command = run_command(
            &self.dir,
            self.admin,
            self.metrics,
            self.health,
            &self.ports,
            &self.args,
        );
        let stderr = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.dir.path().join("strait.log"))
            .unwrap();
        self.child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("strait starts");
        self.wait_ready();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `HUP`, ...).
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "strait exited ({status}) before it was ready:\n{}",
                    self.log()
                );
            }
            if TcpStream::connect(self.health).is_ok() && self.ready() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "strait was not ready in time:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- strait log ---\n{}", self.log());
        }
    }
}

/// Waits until strait says its health endpoint, the last it binds, is ready; its exit status if
/// it exits first.
fn wait_bound(mut child: Child, log: &Path) -> Result<Child, ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Err(status);
        }
        // The health endpoint is bound last, after every listener and the other endpoints.
        // (Its port answering is not enough: another process may hold it.)
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("endpoints=Health") || text.contains(r#""endpoints":"Health""#) {
            return Ok(child);
        }
        if Instant::now() > deadline {
            return Ok(child);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn write_atomically(path: &Path, text: &str) {
    let temporary = path.with_extension("tmp~");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// A plain HTTP/1.0 GET, for admin endpoints: `(status, body)`.
pub fn http_get(address: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect(address) else {
        return (0, String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}

/// The sum of the Prometheus series `name{...}` whose labels include all of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            if metric != name {
                return None;
            }
            labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}
