//! Generated Istio configuration of any size, shaped like a real mesh: per service a
//! ServiceEntry, its WorkloadEntries, a DestinationRule with subsets, a VirtualService with
//! header matches and weighted routes, and an AuthorizationPolicy.

/// Objects generated per service.
pub const OBJECTS_PER_SERVICE: usize = 6;

/// YAML for `services` services, split into files of at most `per_file` services, as a
/// directory of configuration would hold them: `(file name, text)`.
pub fn mesh_files(services: usize, per_file: usize) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut text = String::new();
    for service in 0..services {
        text.push_str(&service_yaml(service));
        if (service + 1) % per_file.max(1) == 0 || service + 1 == services {
            files.push((
                format!("services-{:05}.yaml", files.len()),
                std::mem::take(&mut text),
            ));
        }
    }
    files
}

fn service_yaml(i: usize) -> String {
    let ns = format!("team-{}", i % 50);
    let host = format!("svc-{i}.{ns}.svc.cluster.local");
    format!(
        "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc-{i}, namespace: {ns}}}
spec:
  hosts: [{host}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 8080, name: http, protocol: HTTP}}
  - {{number: 9090, name: grpc, protocol: GRPC}}
  workloadSelector:
    labels: {{app: svc-{i}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: svc-{i}-v1, namespace: {ns}}}
spec:
  address: 10.{a}.{b}.1
  labels: {{app: svc-{i}, version: v1}}
  serviceAccount: svc-{i}
  locality: us-east/zone-a
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: svc-{i}-v2, namespace: {ns}}}
spec:
  address: 10.{a}.{b}.2
  labels: {{app: svc-{i}, version: v2}}
  serviceAccount: svc-{i}
  locality: us-east/zone-b
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: svc-{i}, namespace: {ns}}}
spec:
  host: {host}
  trafficPolicy:
    connectionPool:
      tcp: {{maxConnections: 100, connectTimeout: 2s}}
      http: {{http2MaxRequests: 1000, idleTimeout: 1h}}
    outlierDetection: {{consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}}
  subsets:
  - name: v1
    labels: {{version: v1}}
  - name: v2
    labels: {{version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: svc-{i}, namespace: {ns}}}
spec:
  hosts: [{host}]
  http:
  - match:
    - headers:
        x-canary: {{exact: \"true\"}}
      uri: {{prefix: /api/}}
    route:
    - destination: {{host: {host}, subset: v2}}
  - route:
    - destination: {{host: {host}, subset: v1}}
      weight: 90
    - destination: {{host: {host}, subset: v2}}
      weight: 10
    retries: {{attempts: 3, perTryTimeout: 500ms, retryOn: \"5xx,connect-failure\"}}
    timeout: 5s
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: svc-{i}, namespace: {ns}}}
spec:
  selector:
    matchLabels: {{app: svc-{i}}}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: [\"cluster.local/ns/{ns}/sa/client-{i}\"]
    to:
    - operation:
        methods: [GET, POST]
        paths: [\"/api/*\"]
---
",
        a = i / 250,
        b = i % 250,
    )
}

/// Routes each service of [`gateway_files`] has.
pub const ROUTES_PER_SERVICE: usize = 5;

/// An ingress gateway's configuration for `services` services, split into files of at most
/// `per_file` services: one Gateway (`istio-system/bench-gw`, HTTP on port 80, every host), and
/// per service a ServiceEntry with two endpoints and a VirtualService bound to the gateway with
/// [`ROUTES_PER_SERVICE`] routes (prefix and header match, rewrite, regex, redirect, and a
/// weighted split with retries).
pub fn gateway_files(services: usize, per_file: usize) -> Vec<(String, String)> {
    let mut files = vec![(
        "gateway.yaml".to_owned(),
        "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bench-gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [\"*/*\"]
"
        .to_owned(),
    )];
    let mut text = String::new();
    let mut first = 0;
    for service in 0..services {
        text.push_str(&gateway_service_yaml(service));
        if (service + 1) % per_file.max(1) == 0 || service + 1 == services {
            files.push((
                format!("services-{first:05}.yaml"),
                std::mem::take(&mut text),
            ));
            first = service + 1;
        }
    }
    files
}

fn gateway_service_yaml(i: usize) -> String {
    let ns = format!("team-{}", i % 50);
    let host = format!("svc-{i}.{ns}.svc.cluster.local");
    format!(
        "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc-{i}, namespace: {ns}}}
spec:
  hosts: [{host}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 8080, name: http, protocol: HTTP}}
  - {{number: 8081, name: http-canary, protocol: HTTP}}
  endpoints:
  - {{address: 10.{a}.{b}.1}}
  - {{address: 10.{a}.{b}.2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: svc-{i}, namespace: {ns}}}
spec:
  hosts: [svc-{i}.example.com]
  gateways: [istio-system/bench-gw]
  http:
  - name: canary
    match:
    - uri: {{prefix: /api/}}
      headers:
        x-canary: {{exact: \"true\"}}
    route:
    - destination: {{host: {host}, port: {{number: 8081}}}}
    headers:
      response:
        set: {{x-canary: \"1\"}}
  - name: v2
    match:
    - uri: {{prefix: /v2/}}
    rewrite: {{uri: /}}
    route:
    - destination: {{host: {host}, port: {{number: 8080}}}}
  - name: items
    match:
    - uri: {{regex: \"/items/[0-9]+\"}}
    route:
    - destination: {{host: {host}, port: {{number: 8080}}}}
    timeout: 2s
  - name: old
    match:
    - uri: {{exact: /old}}
    redirect: {{uri: /new}}
  - name: default
    route:
    - destination: {{host: {host}, port: {{number: 8080}}}}
      weight: 90
    - destination: {{host: {host}, port: {{number: 8081}}}}
      weight: 10
    retries: {{attempts: 2, perTryTimeout: 1s, retryOn: \"5xx,connect-failure\"}}
---
",
        a = i / 250,
        b = i % 250,
    )
}
