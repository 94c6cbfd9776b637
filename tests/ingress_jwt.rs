//! RequestAuthentication at the ingress gateway, end to end: tokens signed by a key made here,
//! whose JWKS a small HTTP server serves. A valid token reaches the backend without its
//! Authorization header (kept with `forwardOriginalToken`), claims copied to headers; an
//! invalid one is 401 `Jwt verification fails` with a reason in the access log; a request
//! without a token passes authentication and AuthorizationPolicy decides on the request
//! principal and claims; a JWKS URI that is down refuses tokens and says which URI.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use common::backend::Backend;
use common::client;
use common::gateway::{Gateway, free_port};

const ISSUER: &str = "https://issuer.example.com";

/// An ES256 key made for the test.
struct Signer {
    key: EncodingKey,
    jwk: Value,
}

impl Signer {
    fn new(kid: &str) -> Signer {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        Signer {
            key,
            jwk: serde_json::to_value(&jwk).unwrap(),
        }
    }

    fn token(&self, claims: Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = self.jwk["kid"].as_str().map(str::to_owned);
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }

    /// A token for `sub` in `groups`, valid for ten minutes.
    fn bearer(&self, sub: &str, groups: &[&str]) -> String {
        let now = jsonwebtoken::get_current_timestamp();
        let token = self.token(json!({
            "iss": ISSUER, "sub": sub, "aud": "shop", "groups": groups,
            "iat": now, "exp": now + 600,
        }));
        format!("Bearer {token}")
    }
}

/// Serves `document` at every path over plain HTTP/1.1.
async fn serve_jwks(document: String) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let document = document.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_request| {
                    let body = Bytes::from(document.clone());
                    async move { Ok::<_, Infallible>(http::Response::new(Full::new(body))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// HTTP on 80 for web.example.com, routed to `web`.
fn config(web: SocketAddr) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: istio-system}}
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
  gateways: [istio-system/edge]
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
        port = web.port()
    )
}

/// A RequestAuthentication selecting the ingress, with one rule for `ISSUER` at `jwks_uri`.
fn request_authentication(jwks_uri: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: istio-system}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  jwtRules:
  - issuer: {ISSUER}
    audiences: [shop]
    jwksUri: {jwks_uri}
    outputClaimToHeaders:
    - {{header: x-jwt-sub, claim: sub}}
{extra}"#
    )
}

fn authorization(rules: &str) -> String {
    format!(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: require-jwt, namespace: istio-system}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  action: ALLOW
  rules:
{rules}"#
    )
}

async fn get(addr: SocketAddr, authorization: Option<&str>) -> client::Response {
    let headers: Vec<(&str, &str)> = authorization
        .map(|value| ("authorization", value))
        .into_iter()
        .collect();
    client::get_with(addr, "web.example.com", "/orders?page=2", &headers).await
}

fn echoed_header(response: &client::Response, name: &str) -> Option<String> {
    response.json()["headers"][name].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_verified_and_feed_authorization() {
    let signer = Signer::new("k1");
    let forger = Signer::new("k1");
    let jwks = serve_jwks(json!({ "keys": [signer.jwk.clone()] }).to_string()).await;
    let jwks_uri = format!("http://{jwks}/jwks.json");
    let backend = Backend::start("web-1").await;
    let gateway = Gateway::builder()
        .config("web.yaml", &config(backend.addr))
        .config("jwt.yaml", &request_authentication(&jwks_uri, ""))
        .server_port(80)
        .start();
    let addr = gateway.addr(80);
    let alice = signer.bearer("alice", &["dev", "admins"]);
    let bob = signer.bearer("bob", &["dev"]);

    // A valid token reaches the backend without its Authorization header, its subject copied.
    let ok = get(addr, Some(&alice)).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(echoed_header(&ok, "authorization"), None);
    assert_eq!(echoed_header(&ok, "x-jwt-sub").as_deref(), Some("alice"));

    // No token passes authentication (there is no AuthorizationPolicy yet); a client cannot
    // set the claim header itself.
    let anonymous = client::get_with(
        addr,
        "web.example.com",
        "/orders",
        &[("x-jwt-sub", "alice")],
    )
    .await;
    assert_eq!(anonymous.status, 200, "{}", anonymous.text());
    assert_eq!(echoed_header(&anonymous, "x-jwt-sub"), None);

    // Invalid tokens are 401 with Envoy's body and a challenge; the reason is in the log.
    let served = backend.requests();
    let now = jsonwebtoken::get_current_timestamp();
    let expired = format!(
        "Bearer {}",
        signer.token(json!({"iss": ISSUER, "sub": "alice", "aud": "shop", "exp": now - 3600}))
    );
    let wrong_audience = format!(
        "Bearer {}",
        signer.token(json!({"iss": ISSUER, "sub": "alice", "aud": "other", "exp": now + 600}))
    );
    let unknown_issuer = format!(
        "Bearer {}",
        signer.token(json!({"iss": "https://elsewhere", "sub": "alice", "exp": now + 600}))
    );
    for (token, why) in [
        (forger.bearer("alice", &[]), "signature"),
        (expired, "expired"),
        (wrong_audience, "Audiences"),
        (unknown_issuer, "not configured"),
        ("Bearer not.a.token".to_owned(), "Header.Payload.Signature"),
    ] {
        let refused = get(addr, Some(&token)).await;
        assert_eq!(refused.status, 401, "{why}: {}", refused.text());
        assert_eq!(refused.text(), "Jwt verification fails", "{why}");
        assert_eq!(
            refused.header("www-authenticate"),
            Some(r#"Bearer realm="http://web.example.com/orders", error="invalid_token""#),
            "{why}"
        );
        gateway.access_log_line(|l| l.contains(" 401 ") && l.contains("UAUTHN") && l.contains(why));
    }
    assert_eq!(
        backend.requests(),
        served,
        "no refused request reached the backend"
    );

    // requestPrincipals: ["*"] requires a token.
    gateway.apply(
        "authz.yaml",
        &authorization("  - from:\n    - source: {requestPrincipals: [\"*\"]}\n"),
    );
    let denied = get(addr, None).await;
    assert_eq!(denied.status, 403, "{}", denied.text());
    assert_eq!(denied.text(), "RBAC: access denied");
    assert_eq!(get(addr, Some(&bob)).await.status, 200);

    // A principal is issuer/subject.
    gateway.apply(
        "authz.yaml",
        &authorization(&format!(
            "  - from:\n    - source: {{requestPrincipals: [\"{ISSUER}/alice\"]}}\n"
        )),
    );
    assert_eq!(get(addr, Some(&alice)).await.status, 200);
    assert_eq!(get(addr, Some(&bob)).await.status, 403);

    // A list claim matches when any element does.
    gateway.apply(
        "authz.yaml",
        &authorization(
            "  - when:\n    - key: request.auth.claims[groups]\n      values: [admins]\n",
        ),
    );
    assert_eq!(get(addr, Some(&alice)).await.status, 200);
    assert_eq!(get(addr, Some(&bob)).await.status, 403);
    assert_eq!(get(addr, None).await.status, 403);

    // forwardOriginalToken keeps the header for the backend.
    gateway.remove_config("authz.yaml");
    gateway.apply(
        "jwt.yaml",
        &request_authentication(&jwks_uri, "    forwardOriginalToken: true\n"),
    );
    let forwarded = get(addr, Some(&alice)).await;
    assert_eq!(forwarded.status, 200, "{}", forwarded.text());
    assert_eq!(
        echoed_header(&forwarded, "authorization").as_deref(),
        Some(alice.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_uri_that_is_down_refuses_tokens_and_names_it() {
    let signer = Signer::new("k1");
    let jwks_uri = format!("http://127.0.0.1:{}/jwks.json", free_port());
    let backend = Backend::start("web-1").await;
    let gateway = Gateway::builder()
        .config("web.yaml", &config(backend.addr))
        .config("jwt.yaml", &request_authentication(&jwks_uri, ""))
        .server_port(80)
        .start();
    let addr = gateway.addr(80);

    let refused = get(addr, Some(&signer.bearer("alice", &[]))).await;
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert_eq!(refused.text(), "Jwt verification fails");
    let line = gateway.access_log_line(|l| l.contains(" 401 ") && l.contains("UAUTHN"));
    assert!(line.contains(&jwks_uri), "{line}");
    assert_eq!(backend.requests(), 0);

    // Without a token the request still passes.
    assert_eq!(get(addr, None).await.status, 200);
}
