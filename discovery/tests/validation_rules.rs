//! Validation rules, kind by kind: a table of small fixtures written for Strait (not copied from
//! Istio), each loaded and validated as `strait validate` would, with the findings it must give.
//!
//! Covered: parsing (unknown fields with suggestions, wrong types, enums, int-or-string numbers,
//! durations, `kind: List`, several documents, unsupported kinds, metadata names); the field rules
//! of Gateway, VirtualService, DestinationRule, ServiceEntry, WorkloadEntry, Sidecar,
//! PeerAuthentication, AuthorizationPolicy, RequestAuthentication, MeshConfig and MeshNetworks,
//! including fields Strait does not implement; the cross-object analysis (subsets, gateways,
//! selectors, host conflicts, duplicates, policy conflicts, undeclared hosts); and the line and
//! column a finding points at.
//!
//! For every case the error findings must be exactly the expected ones (a valid case has none);
//! expected warnings and infos must be present, and codes listed as absent must not appear.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use strait_discovery::findings::{Finding, Level};
use strait_discovery::resources::{LoadOptions, Loaded, load_text};
use strait_discovery::validation::{ValidateOptions, validate};

use Level::{Error, Info, Warning};

/// What loading and validating one file gave.
struct Outcome {
    objects: usize,
    findings: Vec<Finding>,
}

/// Loads `yaml` as the file `file` and validates it: loader findings, then validation findings.
fn run(file: &str, yaml: &str, options: &ValidateOptions) -> Outcome {
    let mut loaded = Loaded::default();
    load_text(
        &Arc::<str>::from(file),
        yaml,
        &LoadOptions::default(),
        &mut loaded,
    );
    let mut findings = loaded.findings;
    findings.extend(validate(&loaded.objects, options));
    Outcome {
        objects: loaded.objects.len(),
        findings,
    }
}

/// Every finding for `yaml`, read from `test.yaml` with the default options.
fn findings(yaml: &str) -> Vec<Finding> {
    run("test.yaml", yaml, &ValidateOptions::default()).findings
}

fn show(findings: &[Finding]) -> String {
    let mut out = String::new();
    for finding in findings {
        let _ = writeln!(out, "  [{}] {finding}", finding.code);
    }
    out
}

/// One row of the table.
struct Case {
    name: &'static str,
    file: &'static str,
    yaml: String,
    /// Findings that must be present: `(level, code, field)`. The errors are the exact set.
    expect: Vec<(Level, &'static str, &'static str)>,
    /// Errors that may appear besides the expected ones: `(code, field)`. For a second report of
    /// the same mistake, which is noise rather than behaviour worth pinning down.
    tolerated: Vec<(&'static str, &'static str)>,
    /// Codes that must not appear at all.
    absent: Vec<&'static str>,
    /// `(code, field, text)`: the finding's message must contain the text.
    messages: Vec<(&'static str, &'static str, &'static str)>,
    /// How many objects of supported kinds must be read.
    objects: Option<usize>,
    gateway_labels: Vec<BTreeMap<String, String>>,
}

fn case(name: &'static str, yaml: impl Into<String>) -> Case {
    Case {
        name,
        file: "test.yaml",
        yaml: yaml.into(),
        expect: Vec::new(),
        tolerated: Vec::new(),
        absent: Vec::new(),
        messages: Vec::new(),
        objects: None,
        gateway_labels: Vec::new(),
    }
}

impl Case {
    fn error(mut self, code: &'static str, field: &'static str) -> Case {
        self.expect.push((Error, code, field));
        self
    }

    fn warning(mut self, code: &'static str, field: &'static str) -> Case {
        self.expect.push((Warning, code, field));
        self
    }

    fn info(mut self, code: &'static str, field: &'static str) -> Case {
        self.expect.push((Info, code, field));
        self
    }

    fn tolerate(mut self, code: &'static str, field: &'static str) -> Case {
        self.tolerated.push((code, field));
        self
    }

    fn absent(mut self, code: &'static str) -> Case {
        self.absent.push(code);
        self
    }

    fn message(mut self, code: &'static str, field: &'static str, text: &'static str) -> Case {
        self.messages.push((code, field, text));
        self
    }

    fn objects(mut self, count: usize) -> Case {
        self.objects = Some(count);
        self
    }

    fn file(mut self, file: &'static str) -> Case {
        self.file = file;
        self
    }

    fn gateway_labels(mut self, labels: &[(&str, &str)]) -> Case {
        self.gateway_labels.push(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        self
    }

    /// Every problem with the outcome, empty when the case holds.
    fn check(&self) -> Vec<String> {
        let options = ValidateOptions {
            gateway_labels: self.gateway_labels.clone(),
            ..ValidateOptions::default()
        };
        let outcome = run(self.file, &self.yaml, &options);
        let mut problems = Vec::new();
        let has = |level: Level, code: &str, field: &str| {
            outcome
                .findings
                .iter()
                .any(|f| f.level == level && f.code == code && f.field == field)
        };

        let mut expected_errors: Vec<(&str, &str)> = self
            .expect
            .iter()
            .filter(|(level, _, _)| *level == Error)
            .map(|(_, code, field)| (*code, *field))
            .collect();
        expected_errors.sort_unstable();
        let mut actual_errors: Vec<(&str, &str)> = outcome
            .findings
            .iter()
            .filter(|f| f.level == Error)
            .map(|f| (f.code, f.field.as_str()))
            .filter(|error| !self.tolerated.contains(error) || expected_errors.contains(error))
            .collect();
        actual_errors.sort_unstable();
        if expected_errors != actual_errors {
            problems.push(format!(
                "errors: expected {expected_errors:?}, got {actual_errors:?}"
            ));
        }
        for (level, code, field) in &self.expect {
            if *level != Error && !has(*level, code, field) {
                problems.push(format!("missing {level} {code} at {field:?}"));
            }
        }
        for code in &self.absent {
            if outcome.findings.iter().any(|f| f.code == *code) {
                problems.push(format!("unexpected {code}"));
            }
        }
        for (code, field, text) in &self.messages {
            let found = outcome
                .findings
                .iter()
                .any(|f| f.code == *code && f.field == *field && f.message.contains(text));
            if !found {
                problems.push(format!("no {code} at {field:?} whose message has {text:?}"));
            }
        }
        if let Some(count) = self.objects
            && outcome.objects != count
        {
            problems.push(format!(
                "expected {count} objects, read {}",
                outcome.objects
            ));
        }
        if !problems.is_empty() {
            problems.push(format!("findings:\n{}", show(&outcome.findings)));
        }
        problems
    }
}

fn run_table(cases: Vec<Case>) {
    assert!(!cases.is_empty());
    let mut names = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for case in &cases {
        assert!(names.insert(case.name), "duplicate case name {}", case.name);
        let problems = case.check();
        if !problems.is_empty() {
            failures.push(format!("{}:\n{}", case.name, problems.join("\n")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Fixture builders: a header plus a spec, so each case shows only what it is about.

fn object(api: &str, kind: &str, name: &str, spec: &str) -> String {
    format!("apiVersion: {api}\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

fn networking(kind: &str, name: &str, spec: &str) -> String {
    object("networking.istio.io/v1", kind, name, spec)
}

fn security(kind: &str, name: &str, spec: &str) -> String {
    object("security.istio.io/v1", kind, name, spec)
}

fn gateway(spec: &str) -> String {
    networking("Gateway", "web", spec)
}

fn virtual_service(spec: &str) -> String {
    networking("VirtualService", "reviews", spec)
}

fn destination_rule(spec: &str) -> String {
    networking("DestinationRule", "reviews", spec)
}

fn service_entry(spec: &str) -> String {
    networking("ServiceEntry", "external", spec)
}

fn workload_entry(spec: &str) -> String {
    networking("WorkloadEntry", "vm", spec)
}

fn sidecar(spec: &str) -> String {
    networking("Sidecar", "default", spec)
}

fn peer_authentication(spec: &str) -> String {
    security("PeerAuthentication", "mtls", spec)
}

fn authorization_policy(spec: &str) -> String {
    security("AuthorizationPolicy", "policy", spec)
}

fn request_authentication(spec: &str) -> String {
    security("RequestAuthentication", "jwt", spec)
}

/// Documents of one file.
fn documents(parts: &[String]) -> String {
    parts.join("---\n")
}

// ---------------------------------------------------------------------------------------------

fn parsing_cases() -> Vec<Case> {
    vec![
        case(
            "unknown field suggests the closest name",
            service_entry(
                "  hots: [api.example.com]
  ports:
  - {number: 443, name: tls, protocol: TLS}
  resolution: DNS
",
            ),
        )
        .error("unknown-field", "spec.hots")
        .error("required", "spec.hosts")
        .message("unknown-field", "spec.hots", "did you mean \"hosts\"?"),
        case(
            "a string where an integer is expected",
            virtual_service(
                "  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
      weight: heavy
",
            ),
        )
        .error("wrong-type", "spec.http[0].route[0].weight")
        .message(
            "wrong-type",
            "spec.http[0].route[0].weight",
            "from string \"heavy\" to integer",
        ),
        case(
            "an integer where a string is expected hints at quoting",
            workload_entry(
                "  address: 10.0.0.7
  labels:
    app: ratings
    version: 2
",
            ),
        )
        .error("wrong-type", "spec.labels.version")
        .message(
            "wrong-type",
            "spec.labels.version",
            "quote the value to make it a string",
        ),
        case(
            "an enum value outside the list",
            peer_authentication(
                "  mtls:
    mode: STRICTEST
",
            ),
        )
        .error("unsupported-value", "spec.mtls.mode")
        .message("unsupported-value", "spec.mtls.mode", "\"STRICT\""),
        case(
            "a quoted integer is accepted for an integer field",
            virtual_service(
                "  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1, port: {number: \"9080\"}}
      weight: \"80\"
    - destination: {host: reviews, subset: v2, port: {number: \"9080\"}}
      weight: \"20\"
",
            ),
        ),
        case(
            "durations in Go syntax are accepted",
            virtual_service(
                "  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /a}}]
    timeout: 1.5s
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /b}}]
    timeout: 100ms
    route: [{destination: {host: reviews}}]
  - timeout: 1h30m
    route: [{destination: {host: reviews}}]
",
            ),
        )
        .absent("invalid-duration"),
        case(
            "route timeouts that are not durations are rejected",
            virtual_service(
                "  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /a}}]
    timeout: \"10\"
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /b}}]
    timeout: apple
    route: [{destination: {host: reviews}}]
  - timeout: 0s
    route: [{destination: {host: reviews}}]
",
            ),
        )
        .error("invalid-duration", "spec.http[0].timeout")
        .error("invalid-duration", "spec.http[1].timeout")
        .error("invalid-duration", "spec.http[2].timeout"),
        case(
            "an unquoted number as a timeout is a type error",
            virtual_service(
                "  hosts: [reviews]
  http:
  - timeout: 10
    route: [{destination: {host: reviews}}]
",
            ),
        )
        .error("wrong-type", "spec.http[0].timeout")
        .tolerate("invalid-duration", "spec.http[0].timeout"),
        case(
            "a List holds objects",
            "apiVersion: v1
kind: List
items:
- apiVersion: networking.istio.io/v1
  kind: DestinationRule
  metadata: {name: reviews}
  spec: {host: reviews}
- apiVersion: networking.istio.io/v1beta1
  kind: DestinationRule
  metadata: {name: ratings}
  spec: {host: ratings}
",
        )
        .objects(2),
        case(
            "a file holds several documents, each checked on its own",
            documents(&[
                destination_rule("  host: reviews\n"),
                networking(
                    "DestinationRule",
                    "ratings",
                    "  host: ratings\n  subsets:\n  - name: v1\n  - name: v1\n",
                ),
                networking("DestinationRule", "details", "  host: details\n"),
            ]),
        )
        .objects(3)
        .error("duplicate", "spec.subsets[1].name"),
        case(
            "metadata.name is required",
            "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  namespace: default
spec:
  host: reviews
",
        )
        .error("required", "metadata.name"),
        case(
            "a name with uppercase letters is invalid",
            networking("DestinationRule", "Reviews", "  host: reviews\n"),
        )
        .error("invalid-value", "metadata.name"),
        case(
            "a document without apiVersion or kind outside mesh.yaml",
            "trustDomain: cluster.local\n",
        )
        .error("missing-kind", "")
        .objects(0),
        case("a file that is not YAML", "kind: [Gateway\n")
            .error("yaml-syntax", "")
            .objects(0),
    ]
}

fn gateway_cases() -> Vec<Case> {
    vec![
        case(
            "gateway: an HTTP server",
            gateway(
                "  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [\"*\"]
",
            ),
        ),
        case(
            "gateway: a server without hosts",
            gateway(
                "  servers:
  - port: {number: 80, name: http, protocol: HTTP}
",
            ),
        )
        .error("required", "spec.servers[0].hosts"),
        case(
            "gateway: an HTTPS server without tls",
            gateway(
                "  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [\"*.example.com\"]
",
            ),
        )
        .error("required", "spec.servers[0].port.protocol"),
        case(
            "gateway: SIMPLE tls without a certificate or credentialName",
            gateway(
                "  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [\"*.example.com\"]
    tls:
      mode: SIMPLE
",
            ),
        )
        .error("required", "spec.servers[0].tls.serverCertificate")
        .error("required", "spec.servers[0].tls.privateKey"),
        case(
            "gateway: MUTUAL tls with a credentialName",
            gateway(
                "  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [\"*.example.com\"]
    tls:
      mode: MUTUAL
      credentialName: web-cert
",
            ),
        ),
        case(
            "gateway: ISTIO_MUTUAL with a server certificate",
            gateway(
                "  servers:
  - port: {number: 15443, name: tls, protocol: TLS}
    hosts: [\"*.local\"]
    tls:
      mode: ISTIO_MUTUAL
      serverCertificate: /etc/certs/cert.pem
",
            ),
        )
        .error("conflict", "spec.servers[0].tls.serverCertificate"),
        case(
            "gateway: an unknown protocol",
            gateway(
                "  servers:
  - port: {number: 80, name: web, protocol: HTTP3}
    hosts: [\"*\"]
",
            ),
        )
        .error("unsupported-value", "spec.servers[0].port.protocol"),
        case(
            "gateway: two servers with the same port name",
            gateway(
                "  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [a.example.com]
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: [b.example.com]
",
            ),
        )
        .error("duplicate", "spec.servers[1].port.name"),
        case(
            "gateway: httpsRedirect on an HTTP server",
            gateway(
                "  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [\"*\"]
    tls:
      httpsRedirect: true
",
            ),
        )
        .absent("ignored"),
        case(
            "gateway: a namespace-qualified wildcard host",
            gateway(
                "  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [\"shop/*.example.com\", \"./api.example.com\"]
",
            ),
        ),
        case(
            "gateway: a short host name",
            gateway(
                "  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [example]
",
            ),
        )
        .error("invalid-host", "spec.servers[0].hosts[0]"),
    ]
}

fn virtual_service_cases() -> Vec<Case> {
    vec![
        case(
            "vs: a weighted split",
            virtual_service(
                "  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 90
    - destination: {host: reviews, subset: v2}
      weight: 10
",
            ),
        ),
        case(
            "vs: a negative weight",
            virtual_service(
                "  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: -10
    - destination: {host: reviews, subset: v2}
      weight: 110
",
            ),
        )
        .error("out-of-range", "spec.http[0].route[0].weight"),
        case(
            "vs: route and redirect together",
            virtual_service(
                "  hosts: [reviews]
  http:
  - redirect: {uri: /v2}
    route:
    - destination: {host: reviews}
",
            ),
        )
        .error("conflict", "spec.http[0].route"),
        case(
            "vs: a redirect code that is not 3xx",
            virtual_service(
                "  hosts: [reviews]
  http:
  - redirect: {uri: /v2, redirectCode: 200}
",
            ),
        )
        .error("out-of-range", "spec.http[0].redirect.redirectCode"),
        case(
            "vs: a permanent redirect",
            virtual_service(
                "  hosts: [reviews]
  http:
  - redirect: {uri: /v2, redirectCode: 308}
",
            ),
        ),
        case(
            "vs: retryOn with an unknown condition",
            virtual_service(
                "  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
    retries: {attempts: 3, retryOn: \"5xx,sometimes\"}
",
            ),
        )
        .error("unsupported-value", "spec.http[0].retries.retryOn")
        .message(
            "unsupported-value",
            "spec.http[0].retries.retryOn",
            "\"sometimes\"",
        ),
        case(
            "vs: retryOn with a number HTTP does not define",
            virtual_service(
                "  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
    retries: {attempts: 3, retryOn: \"599\"}
",
            ),
        )
        .error("unsupported-value", "spec.http[0].retries.retryOn"),
        case(
            "vs: retryOn with a status code and a condition",
            virtual_service(
                "  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: \"503,connect-failure\"}
",
            ),
        ),
        case(
            "vs: a regex with lookahead is not RE2",
            virtual_service(
                "  hosts: [reviews]
  http:
  - match:
    - uri: {regex: \"/api/(?=v1).*\"}
    route: [{destination: {host: reviews}}]
",
            ),
        )
        .error("invalid-regex", "spec.http[0].match[0].uri.regex"),
        case(
            "vs: a valid RE2 regex",
            virtual_service(
                "  hosts: [reviews]
  http:
  - match:
    - uri: {regex: \"/api/v[0-9]+/.*\"}
      headers:
        x-user: {regex: \"(alice|bob)\"}
    route: [{destination: {host: reviews}}]
",
            ),
        ),
        case(
            "vs: a regex longer than 1024 bytes",
            virtual_service(&format!(
                "  hosts: [reviews]
  http:
  - match:
    - uri: {{regex: \"/{}\"}}
    route: [{{destination: {{host: reviews}}}}]
",
                "a".repeat(1100)
            )),
        )
        .error("invalid-regex", "spec.http[0].match[0].uri.regex")
        .message(
            "invalid-regex",
            "spec.http[0].match[0].uri.regex",
            "max length allowed is 1024",
        ),
        case(
            "vs: exact and prefix in one string match",
            virtual_service(
                "  hosts: [reviews]
  http:
  - match:
    - uri: {exact: /a, prefix: /b}
    route: [{destination: {host: reviews}}]
",
            ),
        )
        .error("conflict", "spec.http[0].match[0].uri"),
        case(
            "vs: an abort without a percentage has no effect",
            virtual_service(
                "  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
    fault:
      abort: {httpStatus: 503}
",
            ),
        )
        .warning("no-effect", "spec.http[0].fault.abort"),
        case(
            "vs: an abort with a percentage",
            virtual_service(
                "  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
    fault:
      abort: {httpStatus: 503, percentage: {value: 12.5}}
",
            ),
        )
        .absent("no-effect"),
        case(
            "vs: mirrorPercentage above 100",
            virtual_service(
                "  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
    mirror: {host: reviews-shadow}
    mirrorPercentage: {value: 150}
",
            ),
        )
        .error("out-of-range", "spec.http[0].mirrorPercentage.value"),
        case(
            "vs: a delegate route is not implemented",
            virtual_service(
                "  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /api}}]
    delegate: {name: reviews-api, namespace: default}
  - route: [{destination: {host: reviews}}]
",
            ),
        )
        .warning("not-implemented", "spec.http[0].delegate"),
        case(
            "vs: a TLS route for an SNI host the VS does not own",
            virtual_service(
                "  hosts: [\"*.example.com\"]
  gateways: [mesh]
  tls:
  - match:
    - sniHosts: [api.example.com, api.example.org]
    route: [{destination: {host: api.example.com}}]
",
            ),
        )
        .error("invalid-host", "spec.tls[0].match[0].sniHosts[1]"),
        case(
            "vs: host * bound to the mesh",
            virtual_service(
                "  hosts: [\"*\"]
  http:
  - route: [{destination: {host: reviews}}]
",
            ),
        )
        .error("invalid-host", "spec.hosts[0]"),
        case(
            "vs: host * bound to a gateway only",
            documents(&[
                gateway(
                    "  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [\"*\"]
",
                ),
                virtual_service(
                    "  hosts: [\"*\"]
  gateways: [web]
  http:
  - route: [{destination: {host: reviews}}]
",
                ),
            ]),
        )
        .absent("gateway-not-found"),
        case(
            "vs: a route after a catch-all route is unreachable",
            virtual_service(
                "  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /v2}}]
    route: [{destination: {host: reviews, subset: v2}}]
",
            ),
        )
        .warning("unreachable-route", "spec.http[1]"),
        case(
            "vs: a catch-all route last is reachable",
            virtual_service(
                "  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /v2}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
",
            ),
        )
        .absent("unreachable-route"),
        case(
            "vs: JWT claim routing on the mesh",
            virtual_service(
                "  hosts: [reviews]
  http:
  - match:
    - headers:
        \"@request.auth.claims.group\": {exact: admin}
    route: [{destination: {host: reviews}}]
",
            ),
        )
        .error(
            "conflict",
            "spec.http[0].match[0].headers[\"@request.auth.claims.group\"]",
        ),
        case(
            "vs: JWT claim routing on a gateway",
            documents(&[
                gateway(
                    "  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [\"*\"]
",
                ),
                virtual_service(
                    "  hosts: [reviews.example.com]
  gateways: [web]
  http:
  - match:
    - headers:
        \"@request.auth.claims.group\": {exact: admin}
    route: [{destination: {host: reviews}}]
",
                ),
            ]),
        ),
    ]
}

fn destination_rule_cases() -> Vec<Case> {
    vec![
        case(
            "dr: subsets and a policy",
            destination_rule(
                "  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpHeaderName: x-user
        maglev: {tableSize: 65537}
    outlierDetection: {consecutive5xxErrors: 5, interval: 10s, maxEjectionPercent: 50}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
",
            ),
        ),
        case(
            "dr: two subsets with one name",
            destination_rule(
                "  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v1
    labels: {version: v2}
",
            ),
        )
        .error("duplicate", "spec.subsets[1].name"),
        case(
            "dr: a subset name that is not a DNS label",
            destination_rule(
                "  host: reviews
  subsets:
  - name: v1_beta
    labels: {version: v1}
",
            ),
        )
        .error("invalid-value", "spec.subsets[0].name"),
        case(
            "dr: a maglev table size that is not prime",
            destination_rule(
                "  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash:
        useSourceIp: true
        maglev: {tableSize: 65536}
",
            ),
        )
        .error(
            "invalid-value",
            "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
        ),
        case(
            "dr: consistentHash with two keys",
            destination_rule(
                "  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpHeaderName: x-user
        useSourceIp: true
",
            ),
        )
        .error("conflict", "spec.trafficPolicy.loadBalancer.consistentHash"),
        case(
            "dr: maxEjectionPercent above 100",
            destination_rule(
                "  host: reviews
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 5, maxEjectionPercent: 150}
",
            ),
        )
        .error(
            "out-of-range",
            "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
        ),
        case(
            "dr: locality weights that do not sum to 100",
            destination_rule(
                "  host: reviews
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        distribute:
        - from: us-west/*
          to: {\"us-west/*\": 70, \"us-east/*\": 20}
",
            ),
        )
        .error(
            "invalid-value",
            "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to",
        ),
        case(
            "dr: locality weights that sum to 100",
            destination_rule(
                "  host: reviews
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        distribute:
        - from: us-west/*
          to: {\"us-west/*\": 80, \"us-east/*\": 20}
",
            ),
        ),
        case(
            "dr: failover without outlier detection",
            destination_rule(
                "  host: reviews
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        failover:
        - {from: us-west, to: us-east}
",
            ),
        )
        .warning(
            "no-effect",
            "spec.trafficPolicy.loadBalancer.localityLbSetting",
        ),
        case(
            "dr: failover with outlier detection",
            destination_rule(
                "  host: reviews
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 3}
    loadBalancer:
      localityLbSetting:
        failover:
        - {from: us-west, to: us-east}
",
            ),
        )
        .absent("no-effect"),
        case(
            "dr: MUTUAL tls without a client certificate",
            destination_rule(
                "  host: api.example.com
  trafficPolicy:
    tls:
      mode: MUTUAL
      privateKey: /etc/certs/key.pem
      caCertificates: /etc/certs/ca.pem
",
            ),
        )
        .error("required", "spec.trafficPolicy.tls.clientCertificate"),
        case(
            "dr: MUTUAL tls with a credentialName",
            destination_rule(
                "  host: api.example.com
  trafficPolicy:
    tls:
      mode: MUTUAL
      credentialName: api-client
",
            ),
        ),
        case(
            "dr: warmup is not implemented",
            destination_rule(
                "  host: reviews
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      warmup: {duration: 60s}
",
            ),
        )
        .warning("not-implemented", "spec.trafficPolicy.loadBalancer.warmup"),
        case(
            "dr: an unimplemented field in a subset's port policy",
            destination_rule(
                "  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      portLevelSettings:
      - port: {number: 9080}
        connectionPool:
          tcp: {maxConnections: 10, idleTimeout: 1h}
",
            ),
        )
        .warning(
            "not-implemented",
            "spec.subsets[0].trafficPolicy.portLevelSettings[0].connectionPool.tcp.idleTimeout",
        ),
        case(
            "dr: a TCP idle timeout of 0s turns it off",
            destination_rule(
                "  host: reviews
  trafficPolicy:
    connectionPool:
      tcp: {idleTimeout: 0s}
",
            ),
        ),
        case(
            "dr: an HTTP idle timeout of 0s",
            destination_rule(
                "  host: reviews
  trafficPolicy:
    connectionPool:
      http: {idleTimeout: 0s}
",
            ),
        )
        .error(
            "invalid-duration",
            "spec.trafficPolicy.connectionPool.http.idleTimeout",
        ),
        case(
            "dr: a TCP idle timeout under a millisecond counts as 0s",
            destination_rule(
                "  host: reviews
  trafficPolicy:
    connectionPool:
      tcp: {idleTimeout: 500us}
",
            ),
        ),
    ]
}

fn service_entry_cases() -> Vec<Case> {
    vec![
        case(
            "se: a DNS endpoint cannot be a unix socket",
            service_entry(
                "  hosts: [api.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
  endpoints:
  - address: unix:///var/run/api.sock
",
            ),
        )
        .error("invalid-address", "spec.endpoints[0].address"),
        case(
            "se: a DNS endpoint needs an address, not only a network",
            service_entry(
                "  hosts: [api.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
  endpoints:
  - network: west
",
            ),
        )
        .error("invalid-address", "spec.endpoints[0].address"),
        case(
            "se: an external API resolved by DNS",
            service_entry(
                "  hosts: [api.example.com]
  ports:
  - {number: 443, name: tls, protocol: TLS}
  resolution: DNS
  location: MESH_EXTERNAL
",
            ),
        ),
        case(
            "se: NONE resolution with endpoints",
            service_entry(
                "  hosts: [api.example.com]
  ports:
  - {number: 443, name: tls, protocol: TLS}
  resolution: NONE
  endpoints:
  - address: 10.0.0.1
",
            ),
        )
        .error("conflict", "spec.endpoints"),
        case(
            "se: DNS_ROUND_ROBIN with two endpoints",
            service_entry(
                "  hosts: [api.example.com]
  ports:
  - {number: 443, name: tls, protocol: TLS}
  resolution: DNS_ROUND_ROBIN
  endpoints:
  - address: a.example.net
  - address: b.example.net
",
            ),
        )
        .error("conflict", "spec.endpoints"),
        case(
            "se: a STATIC endpoint with a DNS name",
            service_entry(
                "  hosts: [api.example.com]
  ports:
  - {number: 443, name: tls, protocol: TLS}
  resolution: STATIC
  endpoints:
  - address: backend.example.net
",
            ),
        )
        .error("invalid-address", "spec.endpoints[0].address"),
        case(
            "se: STATIC endpoints with IPs",
            service_entry(
                "  hosts: [api.example.com]
  ports:
  - {number: 443, name: tls, protocol: TLS}
  resolution: STATIC
  endpoints:
  - address: 10.0.0.1
  - address: 10.0.0.2
    ports: {tls: 8443}
",
            ),
        ),
        case(
            "se: DNS with a wildcard host and no endpoints",
            service_entry(
                "  hosts: [\"*.example.com\"]
  ports:
  - {number: 443, name: tls, protocol: TLS}
  resolution: DNS
",
            ),
        )
        .error("invalid-host", "spec.hosts[0]"),
        case(
            "se: a CIDR address with DNS resolution",
            service_entry(
                "  hosts: [api.example.com]
  addresses: [10.1.0.0/16]
  ports:
  - {number: 443, name: tls, protocol: TLS}
  resolution: DNS
",
            ),
        )
        .error("conflict", "spec.addresses"),
        case(
            "se: two ports with one number",
            service_entry(
                "  hosts: [api.example.com]
  ports:
  - {number: 443, name: tls, protocol: TLS}
  - {number: 443, name: https, protocol: HTTPS}
  resolution: DNS
",
            ),
        )
        .error("duplicate", "spec.ports[1].number"),
        case(
            "se: port 0",
            service_entry(
                "  hosts: [api.example.com]
  ports:
  - {number: 0, name: tls, protocol: TLS}
  resolution: DNS
",
            ),
        )
        .error("invalid-port", "spec.ports[0].number"),
        case(
            "se: an endpoint port the service does not declare",
            service_entry(
                "  hosts: [api.example.com]
  ports:
  - {number: 443, name: tls, protocol: TLS}
  resolution: STATIC
  endpoints:
  - address: 10.0.0.1
    ports: {grpc: 9443}
",
            ),
        )
        .error("invalid-value", "spec.endpoints[0].ports.grpc"),
        case(
            "se: several hosts with a TCP port",
            service_entry(
                "  hosts: [a.example.com, b.example.com]
  ports:
  - {number: 5432, name: tcp-db, protocol: TCP}
  resolution: DNS
",
            ),
        )
        .error("conflict", "spec.ports[0]"),
        case(
            "se: several hosts with an HTTP port",
            service_entry(
                "  hosts: [a.example.com, b.example.com]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  resolution: DNS
",
            ),
        ),
        case(
            "se: exportTo both . and *",
            service_entry(
                "  hosts: [api.example.com]
  ports:
  - {number: 443, name: tls, protocol: TLS}
  resolution: DNS
  exportTo: [\".\", \"*\"]
",
            ),
        )
        .error("conflict", "spec.exportTo"),
        case(
            "se: DYNAMIC_DNS is not implemented",
            service_entry(
                "  hosts: [\"*.example.com\"]
  ports:
  - {number: 443, name: tls, protocol: TLS}
  resolution: DYNAMIC_DNS
",
            ),
        )
        .warning("not-implemented", "spec.resolution"),
    ]
}

fn workload_entry_cases() -> Vec<Case> {
    vec![
        case(
            "we: an address and labels",
            workload_entry(
                "  address: 10.0.0.7
  labels: {app: ratings}
  ports: {http: 9080}
",
            ),
        ),
        case(
            "we: a network without an address",
            workload_entry(
                "  network: west
  labels: {app: ratings}
",
            ),
        )
        .info("network-only", "spec.address"),
        case(
            "we: a unix socket with ports",
            workload_entry(
                "  address: unix:///var/run/app.sock
  ports: {http: 9080}
",
            ),
        )
        .error("conflict", "spec.ports"),
        case(
            "we: neither address nor network",
            workload_entry("  labels: {app: ratings}\n"),
        )
        .error("required", "spec.address"),
    ]
}

fn sidecar_cases() -> Vec<Case> {
    vec![
        case(
            "sidecar: namespace-qualified egress hosts",
            sidecar(
                "  egress:
  - hosts: [\"./*\", \"istio-system/*\", \"~/*.example.com\"]
",
            ),
        ),
        case(
            "sidecar: an egress host without a namespace",
            sidecar(
                "  egress:
  - hosts: [\"*.example.com\"]
",
            ),
        )
        .error("invalid-host", "spec.egress[0].hosts[0]"),
        case(
            "sidecar: a catch-all egress listener before another",
            sidecar(
                "  egress:
  - hosts: [\"./*\"]
  - hosts: [\"istio-system/*\"]
",
            ),
        )
        .error("conflict", "spec.egress[0]"),
        case(
            "sidecar: a catch-all egress listener last",
            sidecar(
                "  egress:
  - port: {number: 5432, name: tcp-db, protocol: TCP}
    hosts: [\"db/*\"]
  - hosts: [\"./*\"]
",
            ),
        ),
        case(
            "sidecar: a defaultEndpoint on another address",
            sidecar(
                "  ingress:
  - port: {number: 9080, name: http, protocol: HTTP}
    defaultEndpoint: 10.0.0.1:8080
",
            ),
        )
        .error("invalid-address", "spec.ingress[0].defaultEndpoint"),
        case(
            "sidecar: a defaultEndpoint on loopback",
            sidecar(
                "  ingress:
  - port: {number: 9080, name: http, protocol: HTTP}
    defaultEndpoint: 127.0.0.1:8080
",
            ),
        ),
        case(
            "sidecar: an egress proxy with REGISTRY_ONLY",
            sidecar(
                "  outboundTrafficPolicy:
    mode: REGISTRY_ONLY
    egressProxy:
      host: egress.example.com
      port: {number: 3128}
",
            ),
        )
        .error("conflict", "spec.outboundTrafficPolicy.egressProxy")
        .warning("not-implemented", "spec.outboundTrafficPolicy.egressProxy"),
        case(
            "sidecar: an egress proxy without a mode",
            sidecar(
                "  outboundTrafficPolicy:
    egressProxy:
      host: egress.example.com
      port: {number: 3128}
",
            ),
        )
        .error("conflict", "spec.outboundTrafficPolicy.egressProxy"),
        case(
            "sidecar: an egress proxy with ALLOW_ANY",
            sidecar(
                "  outboundTrafficPolicy:
    mode: ALLOW_ANY
    egressProxy:
      host: egress.example.com
      port: {number: 3128}
",
            ),
        )
        .warning("not-implemented", "spec.outboundTrafficPolicy.egressProxy"),
    ]
}

fn peer_authentication_cases() -> Vec<Case> {
    vec![
        case(
            "pa: port-level mTLS for selected workloads",
            peer_authentication(
                "  selector:
    matchLabels: {app: ratings}
  mtls: {mode: STRICT}
  portLevelMtls:
    \"9080\": {mode: PERMISSIVE}
",
            ),
        ),
        case(
            "pa: port-level mTLS without a selector",
            peer_authentication(
                "  mtls: {mode: STRICT}
  portLevelMtls:
    \"9080\": {mode: PERMISSIVE}
",
            ),
        )
        .error("conflict", "spec"),
        case(
            "pa: port 0",
            peer_authentication(
                "  selector:
    matchLabels: {app: ratings}
  portLevelMtls:
    \"0\": {mode: DISABLE}
",
            ),
        )
        .error("invalid-port", "spec.portLevelMtls[\"0\"]"),
        case(
            "pa: a port key that is not a number",
            peer_authentication(
                "  selector:
    matchLabels: {app: ratings}
  portLevelMtls:
    abc: {mode: DISABLE}
",
            ),
        )
        .error("wrong-type", "spec.portLevelMtls.abc"),
        case(
            "pa: an empty selector",
            peer_authentication(
                "  selector: {}
  mtls: {mode: STRICT}
",
            ),
        )
        .warning("empty-selector", "spec.selector"),
    ]
}

fn authorization_policy_cases() -> Vec<Case> {
    vec![
        case(
            "authz: ALLOW by principal, method and path",
            authorization_policy(
                "  selector:
    matchLabels: {app: ratings}
  action: ALLOW
  rules:
  - from:
    - source: {principals: [cluster.local/ns/default/sa/productpage]}
    to:
    - operation: {methods: [GET], paths: [\"/ratings/*\"]}
",
            ),
        )
        .absent("namespaces-any-trust-domain"),
        case(
            "authz: DENY without rules",
            authorization_policy("  action: DENY\n"),
        )
        .error("required", "spec.rules"),
        case(
            "authz: serviceAccounts with principals",
            authorization_policy(
                "  rules:
  - from:
    - source:
        serviceAccounts: [default/productpage]
        principals: [cluster.local/ns/default/sa/productpage]
",
            ),
        )
        .error("conflict", "spec.rules[0].from[0].source"),
        case(
            "authz: a condition on an unknown attribute",
            authorization_policy(
                "  rules:
  - when:
    - key: request.colour
      values: [blue]
",
            ),
        )
        .error("unsupported-value", "spec.rules[0].when[0].key"),
        case(
            "authz: a condition on a header",
            authorization_policy(
                "  rules:
  - when:
    - key: request.headers[x-tenant]
      values: [acme]
",
            ),
        ),
        case(
            "authz: a port above 65535",
            authorization_policy(
                "  rules:
  - to:
    - operation: {ports: [\"99999\"]}
",
            ),
        )
        .error("invalid-port", "spec.rules[0].to[0].operation.ports[0]"),
        case(
            "authz: {**} before another template",
            authorization_policy(
                "  rules:
  - to:
    - operation: {paths: [\"/a/{**}/b/{*}\"]}
",
            ),
        )
        .error("invalid-value", "spec.rules[0].to[0].operation.paths[0]"),
        case(
            "authz: a {*} template in the middle",
            authorization_policy(
                "  rules:
  - to:
    - operation: {paths: [\"/a/{*}/b\", \"/files/{**}\"]}
",
            ),
        ),
        case(
            "authz: a DENY rule with only methods",
            authorization_policy(
                "  action: DENY
  rules:
  - to:
    - operation: {methods: [DELETE]}
",
            ),
        )
        .warning("deny-tcp", "spec.rules[0]"),
        case(
            "authz: a DENY rule with methods and ports",
            authorization_policy(
                "  action: DENY
  rules:
  - to:
    - operation: {methods: [DELETE], ports: [\"8080\"]}
",
            ),
        )
        .absent("deny-tcp"),
        case(
            "authz: ALLOW by namespace admits every trust domain",
            authorization_policy(
                "  rules:
  - from:
    - source: {namespaces: [payments]}
",
            ),
        )
        .warning(
            "namespaces-any-trust-domain",
            "spec.rules[0].from[0].source.namespaces",
        ),
        case(
            "authz: DENY by namespace refuses every trust domain",
            authorization_policy(
                "  action: DENY
  rules:
  - from:
    - source: {namespaces: [sandbox]}
",
            ),
        )
        .warning(
            "namespaces-any-trust-domain",
            "spec.rules[0].from[0].source.namespaces",
        )
        .message(
            "namespaces-any-trust-domain",
            "spec.rules[0].from[0].source.namespaces",
            "this DENY also refuses",
        ),
        case(
            "authz: DENY except a namespace exempts it in every trust domain",
            authorization_policy(
                "  action: DENY
  rules:
  - from:
    - source: {notNamespaces: [payments]}
",
            ),
        )
        .warning(
            "namespaces-any-trust-domain",
            "spec.rules[0].from[0].source.notNamespaces",
        ),
        case(
            "authz: ALLOW except a namespace narrows and is not reported",
            authorization_policy(
                "  rules:
  - from:
    - source: {notNamespaces: [payments]}
",
            ),
        )
        .absent("namespaces-any-trust-domain"),
        case(
            "authz: DENY by namespace pinned by trust domain",
            authorization_policy(
                "  action: DENY
  rules:
  - from:
    - source: {namespaces: [sandbox], trustDomains: [cluster.local]}
",
            ),
        )
        .absent("namespaces-any-trust-domain"),
        case(
            "authz: ALLOW by namespace and principal",
            authorization_policy(
                "  rules:
  - from:
    - source:
        namespaces: [payments]
        principals: [cluster.local/ns/payments/sa/*]
",
            ),
        )
        .absent("namespaces-any-trust-domain"),
        case(
            "authz: CUSTOM is not implemented",
            authorization_policy(
                "  action: CUSTOM
  provider: {name: ext-authz}
  rules:
  - to:
    - operation: {paths: [\"/admin/*\"]}
",
            ),
        )
        .warning("not-implemented", "spec.action")
        .warning("not-implemented", "spec.provider"),
        case(
            "authz: CUSTOM with a namespace source",
            authorization_policy(
                "  action: CUSTOM
  provider: {name: ext-authz}
  rules:
  - from:
    - source: {namespaces: [payments]}
",
            ),
        )
        .error(
            "unsupported-value",
            "spec.rules[0].from[0].source.namespaces",
        ),
        case(
            "authz: CUSTOM with a service account source",
            authorization_policy(
                "  action: CUSTOM
  provider: {name: ext-authz}
  rules:
  - from:
    - source: {serviceAccounts: [payments/checkout]}
",
            ),
        )
        .error(
            "unsupported-value",
            "spec.rules[0].from[0].source.serviceAccounts",
        ),
        case(
            "authz: a when service account with a wildcard",
            authorization_policy(
                "  rules:
  - when:
    - key: source.serviceAccount
      values: [\"payments/*\"]
",
            ),
        )
        .error("invalid-value", "spec.rules[0].when[0].values[0]"),
    ]
}

fn request_authentication_cases() -> Vec<Case> {
    vec![
        case(
            "ra: an issuer with a JWKS URI",
            request_authentication(
                "  selector:
    matchLabels: {app: ratings}
  jwtRules:
  - issuer: https://issuer.example.com
    jwksUri: https://issuer.example.com:8443/jwks.json
",
            ),
        ),
        case(
            "ra: a JWKS URI that is not http",
            request_authentication(
                "  jwtRules:
  - issuer: https://issuer.example.com
    jwksUri: ftp://x
",
            ),
        )
        .error("invalid-value", "spec.jwtRules[0].jwksUri"),
        case(
            "ra: both jwks and jwksUri",
            request_authentication(
                "  jwtRules:
  - issuer: https://issuer.example.com
    jwksUri: https://issuer.example.com/jwks.json
    jwks: '{\"keys\": [{\"kty\": \"oct\", \"k\": \"c2VjcmV0\"}]}'
",
            ),
        )
        .error("conflict", "spec.jwtRules[0]"),
        case(
            "ra: inline jwks that is not a key set",
            request_authentication(
                "  jwtRules:
  - issuer: https://issuer.example.com
    jwks: '{\"issuer\": \"me\"}'
",
            ),
        )
        .error("invalid-value", "spec.jwtRules[0].jwks"),
        case(
            "ra: a targetRef to a Deployment",
            request_authentication(
                "  targetRef: {group: apps, kind: Deployment, name: ratings}
  jwtRules:
  - issuer: https://issuer.example.com
",
            ),
        )
        .error("unsupported-value", "spec.targetRef")
        .warning("not-implemented", "spec.targetRef"),
    ]
}

fn mesh_cases() -> Vec<Case> {
    vec![
        case(
            "mesh: honoured fields",
            "trustDomain: cluster.local
rootNamespace: istio-system
outboundTrafficPolicy: {mode: REGISTRY_ONLY}
defaultConfig:
  terminationDrainDuration: 5s
",
        )
        .file("mesh.yaml")
        .objects(1)
        .absent("not-implemented"),
        case(
            "mesh: a trust domain with uppercase letters",
            "trustDomain: Cluster.Local\n",
        )
        .file("mesh.yaml")
        .error("invalid-value", "trustDomain"),
        case("mesh: a misspelt field", "trustDomian: cluster.local\n")
            .file("mesh.yaml")
            .error("unknown-field", "trustDomian")
            .message(
                "unknown-field",
                "trustDomian",
                "did you mean \"trustDomain\"?",
            ),
        case(
            "mesh: a field Strait ignores",
            "trustDomain: cluster.local\ningressClass: istio\n",
        )
        .file("mesh.yaml")
        .warning("not-implemented", "ingressClass"),
        case(
            "mesh networks: a gateway without a port",
            "networks:
  west:
    endpoints:
    - fromRegistry: west
    gateways:
    - address: 192.0.2.10
",
        )
        .objects(1)
        .error("required", "networks.west.gateways[0].port"),
        case(
            "mesh networks: a gateway with a port",
            "networks:
  west:
    endpoints:
    - fromCidr: 10.10.0.0/16
    gateways:
    - address: 192.0.2.10
      port: 15443
",
        ),
    ]
}

fn analysis_cases() -> Vec<Case> {
    let ingress = || {
        gateway(
            "  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [\"*\"]
",
        )
    };
    let namespace_pa = |name: &str, created: Option<&str>| {
        let created = created
            .map(|t| format!("  creationTimestamp: \"{t}\"\n"))
            .unwrap_or_default();
        format!(
            "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: {name}
  namespace: shop
{created}spec:
  mtls: {{mode: STRICT}}
"
        )
    };
    let workload_sidecar = |name: &str, created: Option<&str>| {
        let created = created
            .map(|t| format!("  creationTimestamp: \"{t}\"\n"))
            .unwrap_or_default();
        format!(
            "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: {name}
  namespace: shop
{created}spec:
  workloadSelector: {{labels: {{app: cart}}}}
  egress: [{{hosts: [\"./*\"]}}]
"
        )
    };
    vec![
        case(
            "analysis: two Sidecars for one workload without creation times",
            documents(&[workload_sidecar("b", None), workload_sidecar("a", None)]),
        )
        .warning("policy-conflict", "metadata.name")
        .message(
            "policy-conflict",
            "metadata.name",
            "Strait uses shop/a (the first by name)",
        ),
        case(
            "analysis: two Sidecars for one workload with creation times",
            documents(&[
                workload_sidecar("a", Some("2024-05-02T10:00:00Z")),
                workload_sidecar("b", Some("2024-05-01T10:00:00Z")),
            ]),
        )
        .info("policy-conflict", "metadata.name")
        .message("policy-conflict", "metadata.name", "the oldest, shop/b,"),
        case(
            "analysis: one Sidecar for two workloads with the same labels",
            documents(&[
                workload_sidecar("a", None),
                "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: cart-1, namespace: shop}
spec: {address: 10.0.0.1, labels: {app: cart}}
"
                .to_owned(),
                "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: cart-2, namespace: shop}
spec: {address: 10.0.0.2, labels: {app: cart}}
"
                .to_owned(),
            ]),
        )
        .absent("policy-conflict"),
        case(
            "analysis: a subset no DestinationRule defines",
            virtual_service(
                "  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: v3}}]
",
            ),
        )
        .warning(
            "subset-not-found",
            "spec.http[0].route[0].destination.subset",
        ),
        case(
            "analysis: a subset a DestinationRule defines",
            documents(&[
                virtual_service(
                    "  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: v3}}]
",
                ),
                destination_rule(
                    "  host: reviews.default.svc.cluster.local
  subsets:
  - name: v3
    labels: {version: v3}
",
                ),
            ]),
        )
        .absent("subset-not-found"),
        case(
            "analysis: a gateway that is not defined",
            virtual_service(
                "  hosts: [shop.example.com]
  gateways: [web]
  http:
  - route: [{destination: {host: reviews}}]
",
            ),
        )
        .warning("gateway-not-found", "spec.gateways[0]"),
        case(
            "analysis: a gateway in another namespace by ns/name",
            documents(&[
                ingress().replacen("  name: web\n", "  name: web\n  namespace: ingress\n", 1),
                virtual_service(
                    "  hosts: [shop.example.com]
  gateways: [ingress/web]
  http:
  - route: [{destination: {host: reviews}}]
",
                ),
            ]),
        )
        .objects(2)
        .absent("gateway-not-found"),
        case(
            "analysis: a gateway selector matching a WorkloadEntry",
            documents(&[
                ingress(),
                workload_entry(
                    "  address: 10.0.0.9
  labels: {istio: ingressgateway}
",
                ),
            ]),
        )
        .absent("selector-matches-nothing"),
        case(
            "analysis: a gateway selector matching nothing",
            documents(&[
                ingress(),
                workload_entry(
                    "  address: 10.0.0.9
  labels: {istio: egressgateway}
",
                ),
            ]),
        )
        .warning("selector-matches-nothing", "spec.selector"),
        case(
            "analysis: a gateway selector matching the run labels",
            ingress(),
        )
        .gateway_labels(&[("istio", "ingressgateway"), ("zone", "a")])
        .absent("selector-matches-nothing"),
        case(
            "analysis: two VirtualServices for one host on the mesh",
            documents(&[
                virtual_service(
                    "  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
",
                ),
                networking(
                    "VirtualService",
                    "reviews-canary",
                    "  hosts: [reviews.default.svc.cluster.local]
  http:
  - route: [{destination: {host: reviews}}]
",
                ),
            ]),
        )
        .warning("host-conflict", "spec.hosts[0]"),
        case(
            "analysis: one host on the mesh and on a gateway",
            documents(&[
                gateway(
                    "  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [\"*\"]
",
                ),
                virtual_service(
                    "  hosts: [reviews.example.com]
  http:
  - route: [{destination: {host: reviews}}]
",
                ),
                networking(
                    "VirtualService",
                    "reviews-edge",
                    "  hosts: [reviews.example.com]
  gateways: [web]
  http:
  - route: [{destination: {host: reviews}}]
",
                ),
            ]),
        )
        .absent("host-conflict"),
        case(
            "analysis: one name for objects of two kinds",
            documents(&[
                virtual_service(
                    "  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
",
                ),
                destination_rule("  host: reviews\n"),
            ]),
        )
        .absent("duplicate-name"),
        case(
            "analysis: the same object twice",
            documents(&[
                virtual_service(
                    "  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
",
                ),
                virtual_service(
                    "  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: v1}}]
",
                ),
            ]),
        )
        .warning("duplicate-name", "metadata.name")
        .absent("host-conflict"),
        case(
            "analysis: namespace-wide PeerAuthentications without creation times",
            documents(&[namespace_pa("first", None), namespace_pa("second", None)]),
        )
        .warning("policy-conflict", "metadata.name"),
        case(
            "analysis: namespace-wide PeerAuthentications with creation times",
            documents(&[
                namespace_pa("first", Some("2024-05-02T10:00:00Z")),
                namespace_pa("second", Some("2024-05-01T10:00:00Z")),
            ]),
        )
        .info("policy-conflict", "metadata.name")
        .message(
            "policy-conflict",
            "metadata.name",
            "the oldest, shop/second,",
        ),
        case(
            "analysis: a host a ServiceEntry in another namespace declares",
            documents(&[
                "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: ratings
  namespace: backend
spec:
  hosts: [ratings]
  location: MESH_INTERNAL
  ports:
  - {number: 9080, name: http, protocol: HTTP}
  resolution: STATIC
  endpoints:
  - address: 10.0.0.5
"
                .to_owned(),
                virtual_service(
                    "  hosts: [reviews]
  http:
  - route: [{destination: {host: ratings.backend.svc.cluster.local}}]
",
                ),
            ]),
        )
        .absent("host-not-declared"),
        case(
            "analysis: a host nothing declares",
            virtual_service(
                "  hosts: [reviews]
  http:
  - route: [{destination: {host: ratings.backend.svc.cluster.local}}]
",
            ),
        )
        .warning(
            "host-not-declared",
            "spec.http[0].route[0].destination.host",
        ),
    ]
}

#[test]
fn parsing() {
    run_table(parsing_cases());
}

#[test]
fn gateway_rules() {
    run_table(gateway_cases());
}

#[test]
fn virtual_service_rules() {
    run_table(virtual_service_cases());
}

#[test]
fn destination_rule_rules() {
    run_table(destination_rule_cases());
}

#[test]
fn service_entry_rules() {
    run_table(service_entry_cases());
}

#[test]
fn workload_entry_rules() {
    run_table(workload_entry_cases());
}

#[test]
fn sidecar_rules() {
    run_table(sidecar_cases());
}

#[test]
fn peer_authentication_rules() {
    run_table(peer_authentication_cases());
}

#[test]
fn authorization_policy_rules() {
    run_table(authorization_policy_cases());
}

#[test]
fn request_authentication_rules() {
    run_table(request_authentication_cases());
}

#[test]
fn mesh_rules() {
    run_table(mesh_cases());
}

#[test]
fn cross_object_analysis() {
    run_table(analysis_cases());
}

/// EnvoyFilter, a Gateway API Gateway and a core Service are read past, one warning each, naming
/// the object; the supported object beside them is still read.
#[test]
fn unsupported_kinds_warn_once_each() {
    let yaml = documents(&[
        "apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: lua, namespace: istio-system}
spec: {configPatches: []}
"
        .to_owned(),
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: public}
spec: {gatewayClassName: istio}
"
        .to_owned(),
        "apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  ports: [{port: 9080}]
"
        .to_owned(),
        destination_rule("  host: reviews\n"),
    ]);
    let outcome = run("test.yaml", &yaml, &ValidateOptions::default());
    assert_eq!(outcome.objects, 1, "{}", show(&outcome.findings));
    let unsupported: Vec<(Level, String)> = outcome
        .findings
        .iter()
        .filter(|f| f.code == "kind-not-supported")
        .map(|f| (f.level, f.object.as_ref().unwrap().to_string()))
        .collect();
    assert_eq!(
        unsupported,
        [
            (Warning, "EnvoyFilter istio-system/lua".to_owned()),
            (Warning, "Gateway default/public".to_owned()),
            (Warning, "Service default/reviews".to_owned()),
        ],
        "{}",
        show(&outcome.findings)
    );
    assert_eq!(outcome.findings.len(), 3, "{}", show(&outcome.findings));
    // The Gateway API Gateway shares a name with a supported kind: the warning says which
    // API versions are read.
    let gateway = outcome
        .findings
        .iter()
        .find(|f| f.object.as_ref().is_some_and(|o| o.kind == "Gateway"))
        .unwrap();
    assert!(
        gateway.message.contains("networking.istio.io/v1"),
        "{gateway}"
    );
}

/// A finding points at the line and column of the value it is about, and names the file and
/// the object, also for an object that is not the first in its file.
#[test]
fn findings_point_at_the_offending_value() {
    let yaml = "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: shop
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {prefix: /v1}
    route:
    - destination: {host: reviews}
  - route:
    - destination:
        host: reviews
      weight: -5
      wieght: 5
";
    let outcome = run("routes.yaml", yaml, &ValidateOptions::default());
    let weight = outcome
        .findings
        .iter()
        .find(|f| f.code == "out-of-range")
        .unwrap_or_else(|| panic!("no out-of-range finding:\n{}", show(&outcome.findings)));
    assert_eq!(weight.level, Error);
    assert_eq!(weight.field, "spec.http[1].route[0].weight");
    assert_eq!(
        (weight.position.line, weight.position.column),
        (23, 15),
        "{weight}"
    );
    assert_eq!(weight.file.as_deref(), Some("routes.yaml"));
    let object = weight.object.as_ref().unwrap();
    assert_eq!(
        (
            object.kind.as_str(),
            object.namespace.as_str(),
            object.name.as_str()
        ),
        ("VirtualService", "shop", "reviews")
    );
    assert!(
        weight.to_string().starts_with(
            "routes.yaml:23:15: error: VirtualService shop/reviews: spec.http[1].route[0].weight: "
        ),
        "{weight}"
    );

    // A parse-time finding points at the misspelt key.
    let unknown = outcome
        .findings
        .iter()
        .find(|f| f.code == "unknown-field")
        .unwrap_or_else(|| panic!("no unknown-field finding:\n{}", show(&outcome.findings)));
    assert_eq!(unknown.field, "spec.http[1].route[0].wieght");
    assert_eq!((unknown.position.line, unknown.position.column), (24, 7));
    assert!(unknown.message.contains("did you mean \"weight\"?"));

    // Nothing else is wrong with the two objects.
    let errors: Vec<&Finding> = outcome
        .findings
        .iter()
        .filter(|f| f.level == Error)
        .collect();
    assert_eq!(errors.len(), 2, "{}", show(&outcome.findings));
}

/// The helper the table is built on reports nothing for a valid object, so that a case
/// expecting no errors proves something.
#[test]
fn a_valid_object_has_no_findings() {
    let all = findings(&destination_rule(
        "  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
",
    ));
    assert!(all.is_empty(), "{}", show(&all));
    let invalid = findings(&destination_rule("  host: \"reviews!\"\n"));
    assert_eq!(
        invalid
            .iter()
            .map(|f| (f.level, f.code, f.field.as_str()))
            .collect::<Vec<_>>(),
        [(Error, "invalid-host", "spec.host")]
    );
}

/// The table's checks can fail: a wrong error, a missing warning, a code that should be absent,
/// a message without the text, and a wrong object count are each reported.
#[test]
fn the_table_reports_wrong_expectations() {
    let yaml = || {
        virtual_service(
            "  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: v1}}]
    fault:
      abort: {httpStatus: 503}
",
        )
    };
    assert!(
        case("ok", yaml())
            .warning("no-effect", "spec.http[0].fault.abort")
            .check()
            .is_empty()
    );
    let wrong = [
        case("an error that is not there", yaml()).error("invalid-host", "spec.hosts[0]"),
        case("a warning at another field", yaml()).warning("no-effect", "spec.http[0].fault"),
        case("a code that is there", yaml()).absent("subset-not-found"),
        case("a message without the text", yaml()).message(
            "no-effect",
            "spec.http[0].fault.abort",
            "no such words",
        ),
        case("a wrong count", yaml()).objects(2),
        case("an unexpected error", destination_rule("  host: \"a b\"\n")),
    ];
    for wrong in wrong {
        assert!(!wrong.check().is_empty(), "{} passed", wrong.name);
    }
}
