//! Steady traffic for tests that change something under load (a root rotation): a Python loop
//! in a namespace that sends `GET /load` to one address, each request on a new connection (and
//! so, through a sidecar with `maxRequestsPerConnection: 1`, a new mTLS handshake each),
//! counting what was answered 200 and what was not. Needs python3
//! (scripts/install-test-deps).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::netns::{Netns, Process};

/// `python3 -c LOAD IP PORT HOST STATUS STOP`: requests to IP:PORT for HOST until the file STOP
/// exists; after every request the counts go to the file STATUS (JSON, replaced atomically);
/// at the end the counts and the first errors are printed.
const LOAD: &str = r#"
import json, os, socket, sys, time
ip, port, host, status, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
ok = failed = 0
errors = []
print("started", flush=True)
while not os.path.exists(stop):
    try:
        s = socket.create_connection((ip, port), timeout=10)
        s.sendall(("GET /load HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n").encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        if data.startswith(b"HTTP/1.1 200"):
            ok += 1
        else:
            failed += 1
            errors.append(data.split(b"\r\n")[0].decode(errors="replace"))
    except Exception as error:
        failed += 1
        errors.append(type(error).__name__ + " " + str(error))
    with open(status + ".tmp", "w") as out:
        json.dump({"ok": ok, "failed": failed}, out)
    os.replace(status + ".tmp", status)
    time.sleep(0.02)
print(json.dumps({"ok": ok, "failed": failed, "errors": errors[:10]}), flush=True)
"#;

/// The load loop, running.
pub struct SteadyLoad {
    process: Process,
    status: PathBuf,
    stop: PathBuf,
}

impl SteadyLoad {
    /// Starts the loop in `netns` against `ip:port` for `host`, keeping its files in `dir`;
    /// returns once it runs.
    pub fn start(netns: &Netns, ip: Ipv4Addr, port: u16, host: &str, dir: &Path) -> SteadyLoad {
        let (status, stop) = (dir.join("load.json"), dir.join("load.stop"));
        let mut process = netns.spawn({
            let mut command = netns.command("python3");
            command
                .args(["-u", "-c", LOAD, &ip.to_string(), &port.to_string(), host])
                .arg(&status)
                .arg(&stop);
            command
        });
        process.wait_for_line(|l| l == "started");
        SteadyLoad {
            process,
            status,
            stop,
        }
    }

    /// The requests answered 200 so far.
    pub fn ok(&self) -> u64 {
        std::fs::read_to_string(&self.status)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["ok"].as_u64())
            .unwrap_or(0)
    }

    /// Waits until `n` more requests were answered 200; `what` names the wait.
    pub fn more(&self, n: u64, what: &str) {
        let from = self.ok();
        wait_until(what, || self.ok() >= from + n);
    }

    /// Stops the loop and returns its summary: `ok`, `failed` and the first `errors`.
    pub fn stop(mut self) -> serde_json::Value {
        std::fs::write(&self.stop, "").unwrap();
        let summary = self.process.wait_for_line(|l| l.starts_with('{'));
        serde_json::from_str(&summary).unwrap()
    }
}

/// Polls `done` until it holds, for at most 40 s.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(40);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
