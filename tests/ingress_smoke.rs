//! The ingress gateway end to end, in its simplest form: a Gateway, a VirtualService and a
//! ServiceEntry in front of a real backend.

mod common;

use common::backend::Backend;
use common::client;
use common::gateway::Gateway;

fn config(backend: std::net::SocketAddr) -> String {
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
  - route:
    - destination: {{host: web.default.svc.cluster.local, port: {{number: 8080}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web, namespace: default}}
spec:
  hosts: [web.default.svc.cluster.local]
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]
"#,
        port = backend.port()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_reaches_the_backend_and_an_unknown_host_gets_404_nr() {
    let backend = Backend::start("web-1").await;
    let gateway = Gateway::builder()
        .config("web.yaml", &config(backend.addr))
        .server_port(80)
        .start();
    let response = client::get(gateway.addr(80), "web.example.com", "/hello?x=1").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.backend(), Some("web-1"));
    assert_eq!(response.json()["path"], "/hello?x=1");

    let missing = client::get(gateway.addr(80), "other.example.com", "/").await;
    assert_eq!(missing.status, 404);
    let line = gateway.access_log_line(|l| l.contains("other.example.com"));
    assert!(line.contains(" 404 NR "), "{line}");
}
