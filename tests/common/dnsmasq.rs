//! A dnsmasq on loopback answering for `mesh.test` from a hosts file the test rewrites, with a
//! TTL of one second: the DNS server of the DNS discovery tests.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A dnsmasq answering for `mesh.test` from a hosts file; stops when dropped.
pub struct Dnsmasq {
    child: Child,
}

impl Dnsmasq {
    pub fn start(port: u16, hosts: &Path) -> Dnsmasq {
        let child = Command::new("dnsmasq")
            .args(args(port, hosts))
            .arg("--local-ttl=1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq runs (scripts/install-test-deps installs it)");
        // Ready once it answers on its port.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            assert!(Instant::now() < deadline, "dnsmasq did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Dnsmasq { child }
    }

    pub fn reload(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// dnsmasq's arguments: on 127.0.0.1:`port` in the foreground, answering for `mesh.test` from
/// `hosts` alone (NXDOMAIN for other `mesh.test` names, no upstream).
pub fn args(port: u16, hosts: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--local=/mesh.test/",
        "--user=root",
        "--pid-file=",
    ]
    .map(str::to_owned)
    .into();
    args.push(format!("--port={port}"));
    args.push(format!("--addn-hosts={}", hosts.display()));
    args
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
