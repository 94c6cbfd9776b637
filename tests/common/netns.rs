//! Network namespaces for tests that need several hosts (they run as root): uniquely named
//! namespaces with loopback up, a veth pair between two of them on a per-test /24 of 10.x.y,
//! commands and long-running processes inside a namespace (`ip netns exec`), and this test
//! binary re-run as a helper inside a namespace, so that a test can place its own listeners and
//! clients there. Everything is deleted on drop, also when the test panics.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Lines};
use std::net::Ipv4Addr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use super::{Run, run};

/// The environment variable that tells a re-run test binary which helper role to play.
pub const HELPER_ROLE: &str = "STRAIT_NETNS_HELPER";

static NEXT: AtomicU32 = AtomicU32::new(0);

fn next() -> u32 {
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A network namespace, deleted when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// `strait-LABEL-PID-N`, with loopback up.
    pub fn new(label: &str) -> Netns {
        let name = format!("strait-{label}-{}-{}", std::process::id(), next());
        // A namespace left by a killed run of a process with the same pid.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let created = run(Command::new("ip").args(["netns", "add", &name]));
        assert_eq!(
            created.code,
            Some(0),
            "ip netns add {name} (tests with namespaces run as root): {}",
            created.stderr
        );
        let netns = Netns { name };
        netns.ok("ip", &["link", "set", "lo", "up"]);
        netns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NAME program`: add arguments, then run or spawn it.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name])
            .arg(program.as_ref());
        command
    }

    /// Runs `program args` inside the namespace and keeps its output.
    pub fn run(&self, program: &str, args: &[&str]) -> Run {
        run(self.command(program).args(args))
    }

    /// Runs `program args` inside the namespace and panics, with its stderr, unless it succeeds.
    pub fn ok(&self, program: &str, args: &[&str]) -> String {
        let result = self.run(program, args);
        assert_eq!(
            result.code,
            Some(0),
            "in netns {}: {program} {}: {}",
            self.name,
            args.join(" "),
            result.stderr
        );
        result.stdout
    }

    /// A veth pair from this namespace (`local` here) into `other` (`remote` there), made inside
    /// this namespace so that neither end ever has a name in the machine's.
    pub fn veth_into(&self, local: &str, other: &Netns, remote: &str) {
        self.ok(
            "ip",
            &[
                "link",
                "add",
                local,
                "type",
                "veth",
                "peer",
                "name",
                remote,
                "netns",
                other.name(),
            ],
        );
    }

    /// Gives `interface` the address `ip/24` and brings it up.
    pub fn address(&self, interface: &str, ip: Ipv4Addr) {
        self.ok(
            "ip",
            &["addr", "add", &format!("{ip}/24"), "dev", interface],
        );
        self.ok("ip", &["link", "set", interface, "up"]);
    }

    /// Starts a long-running command (built with [`Netns::command`]), killed when dropped. Its
    /// stdin is a pipe held open by the returned [`Process`]: a helper that exits when its
    /// stdin closes goes away with the test process even when that is killed.
    pub fn spawn(&self, mut command: Command) -> Process {
        let child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("in netns {}: spawn {command:?}: {e}", self.name));
        Process::new(child)
    }

    /// This test binary, run again inside the namespace with only `test` selected and
    /// [`HELPER_ROLE`] set to `role`. The test named `test` must play the role when the variable
    /// is set; its lines on stdout are the helper's report.
    pub fn helper(&self, test: &str, role: &str) -> Command {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut command = self.command(exe);
        command
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(HELPER_ROLE, role);
        command
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace deletes the interfaces in it (and so each veth pair).
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A process started in a namespace; killed and reaped when dropped.
#[derive(Debug)]
pub struct Process {
    child: Child,
    lines: Option<Lines<BufReader<ChildStdout>>>,
}

impl Process {
    fn new(mut child: Child) -> Process {
        let lines = child.stdout.take().map(|out| BufReader::new(out).lines());
        Process { child, lines }
    }

    /// Reads stdout until a line satisfies `predicate`, and returns it; panics if the process
    /// ends first.
    pub fn wait_for_line(&mut self, predicate: impl Fn(&str) -> bool) -> String {
        let mut lines = self.read_until(predicate);
        lines.pop().unwrap_or_default()
    }

    /// Reads stdout up to and including the first line that satisfies `predicate`, and
    /// returns every line read; panics if the process ends first.
    pub fn read_until(&mut self, predicate: impl Fn(&str) -> bool) -> Vec<String> {
        let lines = self.lines.as_mut().expect("stdout is piped");
        let mut read = Vec::new();
        for line in lines.by_ref() {
            let line = line.expect("the process's stdout reads");
            let done = predicate(&line);
            read.push(line);
            if done {
                return read;
            }
        }
        panic!(
            "the process ended before printing the expected line; it printed:\n{}",
            read.join("\n")
        );
    }

    /// Sends SIGINT (Ctrl-C) and waits for the process to exit: its exit code and the rest
    /// of its stdout.
    pub fn interrupt(&mut self) -> (Option<i32>, Vec<String>) {
        let pid = self.child.id().to_string();
        let sent = run(Command::new("kill").args(["-INT", &pid]));
        assert_eq!(sent.code, Some(0), "kill -INT {pid}: {}", sent.stderr);
        let status = self.child.wait().expect("the process is waited for");
        // Closing stdin lets a helper that holds stdout open until then go (`supervise`'s).
        drop(self.child.stdin.take());
        let rest = self
            .lines
            .take()
            .map(|lines| lines.map_while(Result::ok).collect())
            .unwrap_or_default();
        (status.code(), rest)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two namespaces, `a` and `b`, joined by a veth pair on their own /24:
/// `a` is 10.x.y.1 and `b` is 10.x.y.2.
#[derive(Debug)]
pub struct Pair {
    pub a: Netns,
    pub b: Netns,
    pub a_ip: Ipv4Addr,
    pub b_ip: Ipv4Addr,
}

impl Pair {
    pub fn new(label: &str) -> Pair {
        let a = Netns::new(&format!("{label}-a"));
        let b = Netns::new(&format!("{label}-b"));
        // 10.x.y.0/24 from the pid and a counter: parallel tests and processes stay apart.
        let slot = (std::process::id().wrapping_mul(7).wrapping_add(next())) % (200 * 256);
        let (x, y) = (20 + slot / 256, slot % 256);
        let a_ip = Ipv4Addr::new(10, x as u8, y as u8, 1);
        let b_ip = Ipv4Addr::new(10, x as u8, y as u8, 2);
        let id = format!(
            "{:x}",
            u64::from(std::process::id()) * 1000 + u64::from(next() % 1000)
        );
        let (a_if, b_if) = (format!("sa{id}"), format!("sb{id}"));
        let added = run(Command::new("ip").args([
            "link",
            "add",
            &a_if,
            "netns",
            a.name(),
            "type",
            "veth",
            "peer",
            "name",
            &b_if,
            "netns",
            b.name(),
        ]));
        assert_eq!(added.code, Some(0), "ip link add veth: {}", added.stderr);
        for (netns, interface, ip) in [(&a, &a_if, a_ip), (&b, &b_if, b_ip)] {
            netns.address(interface, ip);
        }
        Pair { a, b, a_ip, b_ip }
    }
}
