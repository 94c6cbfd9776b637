//! Istio's Bookinfo in the mesh: `productpage` calls `reviews` (v1, v2, v3), and reviews v2 and
//! v3 call `ratings`; each workload runs in its own network namespace on one bridge, with
//! Istio's capture rules and its Strait sidecar, identities from `strait ca issue`. A `sleep`
//! workload, in the mesh too, is the user's browser. The workloads are described as Istio does
//! outside Kubernetes (MESH_INTERNAL ServiceEntries selecting WorkloadEntries), routed by
//! Bookinfo's own VirtualServices and DestinationRules. The applications are small Python
//! servers. Needs root, `ip`, iptables and python3 (scripts/install-test-deps).
//!
//! Name resolution: there is no DNS proxy yet, so each service has a VIP in its ServiceEntry's
//! `addresses`, and the applications are given an /etc/hosts-style table (name to VIP). They
//! connect to the VIP with the service's name in `Host`, as an application in Kubernetes
//! connects to the ClusterIP its resolver returned. Calling an endpoint's IP instead would
//! route correctly too (HTTP ports are routed by `Host`), but it would name one version's
//! address while the mesh sends the request to another, and a workload would have to know its
//! peers' addresses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::bridge::{Bridge, Member};
use common::netns::{Netns, Process};
use common::{TempDir, run, strait};
use serde_json::Value;

/// The sidecars' socket mark, excluded by the capture rules.
const MARK: &str = "1337";

/// Bookinfo's port, on every service and every application.
const PORT: u16 = 9080;

/// The services' VIPs (Istio's auto-allocation range).
const VIPS: [(&str, Ipv4Addr); 3] = [
    ("productpage", Ipv4Addr::new(240, 240, 0, 10)),
    ("reviews", Ipv4Addr::new(240, 240, 0, 11)),
    ("ratings", Ipv4Addr::new(240, 240, 0, 12)),
];

/// One workload: its namespace on the bridge, its `app` and `version` labels, its service
/// account.
struct Workload {
    member: &'static str,
    app: &'static str,
    version: &'static str,
    service_account: &'static str,
}

const WORKLOADS: [Workload; 6] = [
    Workload {
        member: "sleep",
        app: "sleep",
        version: "v1",
        service_account: "sleep",
    },
    Workload {
        member: "productpage",
        app: "productpage",
        version: "v1",
        service_account: "bookinfo-productpage",
    },
    Workload {
        member: "reviews-v1",
        app: "reviews",
        version: "v1",
        service_account: "bookinfo-reviews",
    },
    Workload {
        member: "reviews-v2",
        app: "reviews",
        version: "v2",
        service_account: "bookinfo-reviews",
    },
    Workload {
        member: "reviews-v3",
        app: "reviews",
        version: "v3",
        service_account: "bookinfo-reviews",
    },
    Workload {
        member: "ratings",
        app: "ratings",
        version: "v1",
        service_account: "bookinfo-ratings",
    },
];

/// Bookinfo's applications: `python3 -c APP ROLE VERSION HOSTS`, HOSTS a JSON object from host
/// name to address. Each answers JSON naming itself and the client certificate header it saw.
/// productpage calls reviews, forwarding `end-user`, and returns reviews' answer and status;
/// reviews v2 (black stars) and v3 (red stars) call ratings with Bookinfo's client timeout
/// (2.5 s here), and report a failure or a timeout as "ratings unavailable".
const APP: &str = r#"
import http.client, http.server, json, os, sys, threading
role, version, hosts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
def call(host, path, user, timeout):
    connection = http.client.HTTPConnection(hosts[host], 9080, timeout=timeout)
    headers = {"Host": host, "Connection": "close"}
    if user is not None:
        headers["end-user"] = user
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()
class Bookinfo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes
    def do_GET(self):
        user = self.headers.get("end-user")
        seen = {"service": role, "version": version, "peer": self.client_address[0],
                "xfcc": self.headers.get("x-forwarded-client-cert")}
        status = 200
        if role == "productpage" and self.path == "/productpage":
            try:
                code, body = call("reviews.default.svc.cluster.local", "/reviews/0", user, 10)
                seen["reviews_status"] = code
                seen["reviews"] = json.loads(body) if code == 200 else "reviews unavailable"
            except Exception as error:
                seen["reviews_status"] = 0
                seen["reviews"] = "reviews unavailable (%s)" % type(error).__name__
        elif role == "reviews" and self.path == "/reviews/0":
            if version != "v1":
                seen["stars"] = "black" if version == "v2" else "red"
                try:
                    code, body = call("ratings.default.svc.cluster.local", "/ratings/0", user, 2.5)
                    seen["ratings_status"] = code
                    seen["ratings"] = json.loads(body) if code == 200 else "ratings unavailable"
                except Exception as error:
                    seen["ratings_status"] = 0
                    seen["ratings"] = "ratings unavailable"
                    seen["ratings_error"] = type(error).__name__
        elif role == "ratings" and self.path == "/ratings/0":
            seen["ratings"] = {"Reviewer1": 5, "Reviewer2": 4}
        else:
            status = 404
        body = json.dumps(seen).encode()
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the caller gave up (a route timeout): expected
    def log_message(self, *args):
        pass
def orphaned():
    sys.stdin.read()
    os._exit(0)
threading.Thread(target=orphaned, daemon=True).start()
http.server.ThreadingHTTPServer.allow_reuse_address = True
server = http.server.ThreadingHTTPServer(("0.0.0.0", 9080), Bookinfo)
print("ready", flush=True)
server.serve_forever()
"#;

/// A browser: `python3 -c CLIENT ADDRESS HOST PATH COUNT END_USER` makes COUNT requests on one
/// kept-alive connection (a new one after a failure), `end-user` set unless END_USER is empty,
/// and prints one JSON line per request: the status (0: no answer) and the parsed body.
const CLIENT: &str = r#"
import http.client, json, sys
address, host, path, count, user = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
connection = None
for _ in range(count):
    headers = {"Host": host}
    if user:
        headers["end-user"] = user
    try:
        if connection is None:
            connection = http.client.HTTPConnection(address, 9080, timeout=20)
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        raw = response.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode(errors="replace")
        print(json.dumps({"status": response.status, "body": body}), flush=True)
        if response.will_close:
            connection.close()
            connection = None
    except Exception as error:
        print(json.dumps({"status": 0, "body": "%s: %s" % (type(error).__name__, error)}), flush=True)
        if connection is not None:
            connection.close()
        connection = None
"#;

/// The mesh's description: services, workloads, subsets. Routing comes separately.
fn services(bridge: &Bridge) -> String {
    let mut yaml = String::new();
    for (app, vip) in VIPS {
        yaml.push_str(&format!(
            r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {app}, namespace: default}}
spec:
  hosts: [{app}.default.svc.cluster.local]
  addresses: [{vip}]
  location: MESH_INTERNAL
  ports: [{{number: {PORT}, name: http, targetPort: {PORT}}}]
  resolution: STATIC
  workloadSelector: {{labels: {{app: {app}}}}}
"#
        ));
    }
    for workload in WORKLOADS.iter().filter(|w| w.app != "sleep") {
        let Workload {
            member,
            app,
            version,
            service_account,
        } = workload;
        let ip = bridge.member(member).ip;
        yaml.push_str(&format!(
            r#"---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {member}, namespace: default}}
spec:
  address: {ip}
  labels: {{app: {app}, version: {version}, security.istio.io/tlsMode: istio}}
  serviceAccount: {service_account}
"#
        ));
    }
    // Bookinfo's destination-rule-all.yaml, for the versions that run here.
    yaml.push_str(
        r#"---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: productpage, namespace: default}
spec:
  host: productpage
  subsets:
  - {name: v1, labels: {version: v1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  subsets:
  - {name: v1, labels: {version: v1}}
"#,
    );
    yaml
}

/// Bookinfo's virtual-service-all-v1.yaml for productpage and ratings.
const PRODUCTPAGE_AND_RATINGS_V1: &str = r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: productpage, namespace: default}
spec:
  hosts: [productpage]
  http:
  - route:
    - destination: {host: productpage, subset: v1}
"#;

const RATINGS_V1: &str = r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings, subset: v1}
"#;

/// Bookinfo's virtual-service-reviews-test-v2.yaml: jason gets v2, everyone else v1.
const REVIEWS_TEST_V2: &str = r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        end-user: {exact: jason}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
"#;

/// Bookinfo's virtual-service-reviews-50-v3.yaml.
const REVIEWS_50_V3: &str = r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 50
    - destination: {host: reviews, subset: v3}
      weight: 50
"#;

/// Bookinfo's virtual-service-reviews-jason-v2-v3.yaml, with an optional route `timeout`.
fn reviews_jason_v2_v3(timeout: Option<&str>) -> String {
    let timeout = timeout.map_or_else(String::new, |t| format!("    timeout: {t}\n"));
    format!(
        r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        end-user: {{exact: jason}}
    route:
    - destination: {{host: reviews, subset: v2}}
{timeout}  - route:
    - destination: {{host: reviews, subset: v3}}
"#
    )
}

/// Bookinfo's virtual-service-ratings-test-delay.yaml: 7 s for jason.
const RATINGS_TEST_DELAY: &str = r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  http:
  - match:
    - headers:
        end-user: {exact: jason}
    fault:
      delay:
        percentage: {value: 100.0}
        fixedDelay: 7s
    route:
    - destination: {host: ratings, subset: v1}
  - route:
    - destination: {host: ratings, subset: v1}
"#;

/// Bookinfo's virtual-service-ratings-test-abort.yaml: 500 for jason.
const RATINGS_TEST_ABORT: &str = r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  http:
  - match:
    - headers:
        end-user: {exact: jason}
    fault:
      abort:
        percentage: {value: 100.0}
        httpStatus: 500
    route:
    - destination: {host: ratings, subset: v1}
  - route:
    - destination: {host: ratings, subset: v1}
"#;

/// Only reviews may call ratings.
const RATINGS_FROM_REVIEWS_ONLY: &str = r#"---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings-callers, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  action: ALLOW
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/default/sa/bookinfo-reviews"]}
"#;

/// Bookinfo running: the bridge, the applications and every sidecar.
struct Bookinfo {
    // Fields drop in order: the processes go before their namespaces and files.
    _sidecars: Vec<Process>,
    _apps: Vec<Process>,
    bridge: Bridge,
    dir: TempDir,
}

/// One answer of productpage, as the browser got it.
#[derive(Debug)]
struct Page {
    status: u64,
    body: Value,
}

impl Page {
    /// What reviews answered productpage (a string when it did not answer).
    fn reviews(&self) -> &Value {
        &self.body["reviews"]
    }

    fn reviews_version(&self) -> Option<&str> {
        self.reviews()["version"].as_str()
    }

    fn stars(&self) -> Option<&str> {
        self.reviews()["stars"].as_str()
    }

    /// Whether reviews got ratings' answer, stars included.
    fn has_ratings(&self) -> bool {
        let ratings = &self.reviews()["ratings"];
        ratings["service"] == "ratings" && ratings["ratings"]["Reviewer1"] == 5
    }

    fn ratings_unavailable(&self) -> bool {
        self.reviews()["ratings"] == "ratings unavailable"
    }
}

impl Bookinfo {
    /// Starts Bookinfo with `routing` (VirtualServices and policies) beside its services.
    fn start(label: &str, routing: &str) -> Bookinfo {
        let names: Vec<&str> = WORKLOADS.iter().map(|w| w.member).collect();
        let bridge = Bridge::new(label, &names);
        let dir = TempDir::new(label);
        let data = dir.path().join("ca-data");
        let init = run(strait().args(["ca", "init", "--data"]).arg(&data));
        assert_eq!(init.code, Some(0), "{}", init.stderr);
        dir.write("config/services.yaml", &services(&bridge));
        dir.write("config/routing.yaml", routing);

        let hosts: serde_json::Map<String, Value> = VIPS
            .iter()
            .map(|(app, vip)| {
                (
                    format!("{app}.default.svc.cluster.local"),
                    vip.to_string().into(),
                )
            })
            .collect();
        let hosts = Value::Object(hosts).to_string();
        let mut apps = Vec::new();
        let mut sidecars = Vec::new();
        for workload in &WORKLOADS {
            let member = bridge.member(workload.member);
            if workload.app != "sleep" {
                let mut command = member.netns.command("python3");
                command.args(["-u", "-c", APP, workload.app, workload.version, &hosts]);
                let mut app = member.netns.spawn(command);
                app.wait_for_line(|l| l == "ready");
                apps.push(app);
            }
            let identity = dir.path().join(format!("{}-identity", workload.member));
            let issued = run(strait()
                .args(["ca", "issue", "--spiffe-id"])
                .arg(format!(
                    "spiffe://cluster.local/ns/default/sa/{}",
                    workload.service_account
                ))
                .arg("--out")
                .arg(&identity)
                .arg("--data")
                .arg(&data));
            assert_eq!(issued.code, Some(0), "{}", issued.stderr);
            let installed = run(strait()
                .args(["capture", "install", "--mark", MARK, "--netns"])
                .arg(member.netns.name()));
            assert_eq!(installed.code, Some(0), "{}", installed.stderr);
            sidecars.push(sidecar(member, &dir, workload, identity));
        }
        Bookinfo {
            _sidecars: sidecars,
            _apps: apps,
            bridge,
            dir,
        }
    }

    fn netns(&self, member: &str) -> &Netns {
        &self.bridge.member(member).netns
    }

    /// `count` requests from `from` to `service`'s VIP for `path`, with `end-user` when given.
    fn get(
        &self,
        from: &str,
        service: &str,
        path: &str,
        count: usize,
        user: Option<&str>,
    ) -> Vec<Page> {
        let vip = VIPS.iter().find(|(app, _)| *app == service).unwrap().1;
        let out = self.netns(from).ok(
            "python3",
            &[
                "-c",
                CLIENT,
                &vip.to_string(),
                &format!("{service}.default.svc.cluster.local"),
                path,
                &count.to_string(),
                user.unwrap_or(""),
            ],
        );
        let pages: Vec<Page> = out
            .lines()
            .map(|line| {
                let line: Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                Page {
                    status: line["status"].as_u64().unwrap(),
                    body: line["body"].clone(),
                }
            })
            .collect();
        assert_eq!(pages.len(), count, "{out}");
        pages
    }

    /// `count` product pages as the browser (sleep) gets them.
    fn product_pages(&self, count: usize, user: Option<&str>) -> Vec<Page> {
        let pages = self.get("sleep", "productpage", "/productpage", count, user);
        for page in &pages {
            assert_eq!(page.status, 200, "{page:?}");
            assert_eq!(page.body["service"], "productpage", "{page:?}");
        }
        pages
    }

    fn access_log(&self, member: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{member}-access.log")))
            .unwrap_or_default()
    }

    /// Waits until `member`'s access log has a line with all of `parts`, and returns it.
    fn wait_for_log(&self, member: &str, parts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.access_log(member);
            if let Some(line) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no access log line of {member} with {parts:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Replaces the routing and waits until every sidecar installed it.
    fn apply(&self, routing: &str) {
        let before = self.installs();
        self.dir.write("config/routing.yaml", routing);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self
            .installs()
            .iter()
            .zip(&before)
            .any(|(now, was)| now <= was)
        {
            assert!(
                Instant::now() < deadline,
                "the sidecars did not install the change"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How many configurations each sidecar installed, from its log.
    fn installs(&self) -> Vec<usize> {
        WORKLOADS
            .iter()
            .map(|w| {
                std::fs::read_to_string(self.dir.path().join(format!("{}.log", w.member)))
                    .unwrap_or_default()
                    .matches("configuration installed")
                    .count()
            })
            .collect()
    }
}

/// Starts `workload`'s sidecar in its namespace and waits until it serves. The sidecar is the
/// process itself (so dropping the [`Process`] kills it), and it is sent SIGTERM when its
/// stdin closes, so that it goes away with the test process even when that is killed.
fn sidecar(member: &Member, dir: &TempDir, workload: &Workload, identity: PathBuf) -> Process {
    let path = |name: &str| -> PathBuf { dir.path().join(name) };
    let log = path(&format!("{}.log", workload.member));
    let mut command = member.netns.command("sh");
    command.arg("-c").arg(format!(
        "exec 3<&0; (read _ <&3; kill $$ 2>/dev/null) & exec \"$0\" \"$@\" 3<&- >{} 2>&1",
        log.display()
    ));
    command
        .arg(env!("CARGO_BIN_EXE_strait"))
        .args(["run", "--role", "sidecar", "--workload"])
        .arg(format!("default/{}", workload.member))
        .args(["--service-account", workload.service_account, "--labels"])
        .arg(format!(
            "app={},version={},security.istio.io/tlsMode=istio",
            workload.app, workload.version
        ))
        .args(["--socket-mark", MARK])
        .args(["--drain-period", "0s", "--drain-timeout", "1s"])
        .arg("--config")
        .arg(path("config"))
        .arg("--identity-dir")
        .arg(identity)
        .arg("--data")
        .arg(path(&format!("{}-data", workload.member)))
        .arg("--access-log")
        .arg(path(&format!("{}-access.log", workload.member)));
    let process = member.netns.spawn(command);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("virtualInbound") {
            return process;
        }
        assert!(
            Instant::now() < deadline,
            "the {} sidecar did not start serving: {text}",
            workload.member
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A client certificate header's `URI=` (the caller) and `By=` (the receiver).
fn xfcc_identities(xfcc: &Value) -> (String, String) {
    let xfcc = xfcc
        .as_str()
        .unwrap_or_else(|| panic!("no client certificate header: {xfcc}"));
    let field = |name: &str| {
        xfcc.split(';')
            .find_map(|part| part.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {xfcc}"))
            .to_owned()
    };
    (field("URI="), field("By="))
}

fn spiffe(service_account: &str) -> String {
    format!("spiffe://cluster.local/ns/default/sa/{service_account}")
}

fn all_v1() -> String {
    format!("{PRODUCTPAGE_AND_RATINGS_V1}{RATINGS_V1}{REVIEWS_TEST_V2}")
}

#[test]
fn jason_always_reaches_reviews_v2_and_everyone_else_reviews_v1() {
    let bookinfo = Bookinfo::start("bi-user", &all_v1());
    for page in bookinfo.product_pages(50, Some("jason")) {
        assert_eq!(page.reviews_version(), Some("v2"), "{page:?}");
        assert_eq!(page.stars(), Some("black"), "{page:?}");
        assert!(page.has_ratings(), "{page:?}");
    }
    for page in bookinfo.product_pages(50, None) {
        assert_eq!(page.reviews_version(), Some("v1"), "{page:?}");
        assert_eq!(page.stars(), None, "{page:?}");
    }
    // Another user is not jason either.
    for page in bookinfo.product_pages(5, Some("alice")) {
        assert_eq!(page.reviews_version(), Some("v1"), "{page:?}");
    }
}

#[test]
fn reviews_traffic_splits_evenly_between_v1_and_v3() {
    let routing = format!("{PRODUCTPAGE_AND_RATINGS_V1}{RATINGS_V1}{REVIEWS_50_V3}");
    let bookinfo = Bookinfo::start("bi-split", &routing);
    let calls = 400;
    let pages = bookinfo.product_pages(calls, None);
    let mut v1 = 0;
    let mut v3 = 0;
    for page in &pages {
        match page.reviews_version() {
            Some("v1") => v1 += 1,
            Some("v3") => {
                assert_eq!(page.stars(), Some("red"), "{page:?}");
                assert!(page.has_ratings(), "{page:?}");
                v3 += 1;
            }
            _ => panic!("neither v1 nor v3: {page:?}"),
        }
    }
    assert_eq!(v1 + v3, calls);
    // Binomial(400, 0.5): mean 200, standard deviation 10. Five of them either way.
    assert!((150..=250).contains(&v1), "v1 {v1}, v3 {v3}");
}

/// How an access log line shows a request for ratings.
const RATINGS_AUTHORITY: &str = "\"ratings.default.svc.cluster.local\"";

#[test]
fn a_delay_or_an_abort_of_ratings_for_jason_leaves_only_jason_without_ratings() {
    let routing = format!(
        "{PRODUCTPAGE_AND_RATINGS_V1}{}{RATINGS_TEST_DELAY}",
        reviews_jason_v2_v3(None)
    );
    let bookinfo = Bookinfo::start("bi-fault", &routing);

    // 7 s of delay for jason against reviews' 2.5 s client timeout: reviews v2 answers without
    // ratings; everyone else (v3) still gets them.
    for page in bookinfo.product_pages(2, Some("jason")) {
        assert_eq!(page.reviews_version(), Some("v2"), "{page:?}");
        assert!(page.ratings_unavailable(), "{page:?}");
        assert_eq!(page.reviews()["ratings_error"], "TimeoutError", "{page:?}");
    }
    // reviews' sidecar logs the delayed call the application gave up on (DI), as Envoy does:
    // response code 0 and DC, on the jason route of ratings' VirtualService.
    bookinfo.wait_for_log(
        "reviews-v2",
        &[
            "GET /ratings/0",
            " 0 DC,DI ",
            RATINGS_AUTHORITY,
            "default/ratings[0]",
        ],
    );
    for page in bookinfo.product_pages(5, None) {
        assert_eq!(page.reviews_version(), Some("v3"), "{page:?}");
        assert!(page.has_ratings(), "{page:?}");
    }

    // A route timeout on reviews shorter than that: productpage's sidecar gives up on reviews
    // (504, UT) and productpage says so; others are not affected.
    bookinfo.apply(&format!(
        "{PRODUCTPAGE_AND_RATINGS_V1}{}{RATINGS_TEST_DELAY}",
        reviews_jason_v2_v3(Some("1s"))
    ));
    let page = &bookinfo.product_pages(1, Some("jason"))[0];
    assert_eq!(page.body["reviews_status"], 504, "{page:?}");
    assert_eq!(page.reviews(), "reviews unavailable", "{page:?}");
    bookinfo.wait_for_log(
        "productpage",
        &["GET /reviews/0", " 504 UT ", "outbound|9080|v2|reviews"],
    );
    let page = &bookinfo.product_pages(1, None)[0];
    assert!(page.has_ratings(), "{page:?}");

    // An abort of 500 for jason: ratings unavailable at once, for jason only.
    bookinfo.apply(&format!(
        "{PRODUCTPAGE_AND_RATINGS_V1}{}{RATINGS_TEST_ABORT}",
        reviews_jason_v2_v3(None)
    ));
    for page in bookinfo.product_pages(5, Some("jason")) {
        assert_eq!(page.reviews_version(), Some("v2"), "{page:?}");
        assert!(page.ratings_unavailable(), "{page:?}");
        assert_eq!(page.reviews()["ratings_status"], 500, "{page:?}");
    }
    bookinfo.wait_for_log(
        "reviews-v2",
        &[
            "GET /ratings/0",
            " 500 FI ",
            RATINGS_AUTHORITY,
            "default/ratings[0]",
        ],
    );
    for page in bookinfo.product_pages(5, None) {
        assert_eq!(page.reviews_version(), Some("v3"), "{page:?}");
        assert!(page.has_ratings(), "{page:?}");
    }
}

#[test]
fn every_hop_is_mesh_mtls_and_each_application_sees_its_caller_s_identity() {
    let bookinfo = Bookinfo::start("bi-mtls", &all_v1());
    let page = &bookinfo.product_pages(1, Some("jason"))[0];
    let reviews = page.reviews();
    let ratings = &reviews["ratings"];
    for (app, seen, caller, own) in [
        ("productpage", &page.body, "sleep", "bookinfo-productpage"),
        (
            "reviews",
            reviews,
            "bookinfo-productpage",
            "bookinfo-reviews",
        ),
        ("ratings", ratings, "bookinfo-reviews", "bookinfo-ratings"),
    ] {
        assert_eq!(seen["service"], app, "{page:?}");
        let (uri, by) = xfcc_identities(&seen["xfcc"]);
        assert_eq!(uri, spiffe(caller), "{app} sees its caller");
        assert_eq!(by, spiffe(own), "{app}'s sidecar names itself");
        assert_eq!(seen["peer"], "127.0.0.6", "{app} is reached by its sidecar");
    }
    // Each receiving sidecar logged the verified caller, on the SNI Istio gives the subset.
    for (member, path, caller, server_name) in [
        (
            "productpage",
            "/productpage",
            "sleep",
            "outbound_.9080_.v1_.productpage.default.svc.cluster.local",
        ),
        (
            "reviews-v2",
            "/reviews/0",
            "bookinfo-productpage",
            "outbound_.9080_.v2_.reviews.default.svc.cluster.local",
        ),
        (
            "ratings",
            "/ratings/0",
            "bookinfo-reviews",
            "outbound_.9080_.v1_.ratings.default.svc.cluster.local",
        ),
    ] {
        let line = bookinfo.wait_for_log(member, &[&format!("GET {path}"), "inbound|9080||"]);
        assert!(
            line.contains(&format!("peer=\"{}\"", spiffe(caller))),
            "{line}"
        );
        assert!(line.contains(server_name), "{line}");
    }
}

#[test]
fn ratings_admits_reviews_by_principal_and_refuses_productpage() {
    let routing = format!("{}{RATINGS_FROM_REVIEWS_ONLY}", all_v1());
    let bookinfo = Bookinfo::start("bi-authz", &routing);
    // The page is still served, ratings included: reviews is the allowed principal.
    for page in bookinfo.product_pages(3, Some("jason")) {
        assert_eq!(page.reviews_version(), Some("v2"), "{page:?}");
        assert!(page.has_ratings(), "{page:?}");
    }
    // productpage calling ratings itself, through its sidecar (so over mesh mTLS, as
    // bookinfo-productpage): denied by ratings' sidecar.
    let direct = &bookinfo.get("productpage", "ratings", "/ratings/0", 1, None)[0];
    assert_eq!(direct.status, 403, "{direct:?}");
    assert_eq!(direct.body, "RBAC: access denied", "{direct:?}");
    let line = bookinfo.wait_for_log("ratings", &["GET /ratings/0", " 403 "]);
    assert!(
        line.contains(&format!("peer=\"{}\"", spiffe("bookinfo-productpage"))),
        "{line}"
    );
}
