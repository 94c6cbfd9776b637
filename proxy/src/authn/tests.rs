use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Request;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::jwks::JwksStore;
use super::verify::{self, KeySet, VerifyError};
use super::*;
use crate::snapshot::{ClaimToHeader, JwksSource, JwtRule, TokenLocation};

/// A signing key made for the test, with its public JWK.
struct Signer {
    key: EncodingKey,
    alg: Algorithm,
    kid: Option<String>,
    jwk: Value,
}

impl Signer {
    fn new(alg: Algorithm, kid: Option<&str>) -> Signer {
        let (rcgen_alg, pem_kind) = match alg {
            Algorithm::ES256 => (&rcgen::PKCS_ECDSA_P256_SHA256, "ec"),
            Algorithm::ES384 => (&rcgen::PKCS_ECDSA_P384_SHA384, "ec"),
            Algorithm::RS256 | Algorithm::PS256 => (&rcgen::PKCS_RSA_SHA256, "rsa"),
            Algorithm::EdDSA => (&rcgen::PKCS_ED25519, "ed"),
            other => panic!("no test key for {other:?}"),
        };
        let pair = rcgen::KeyPair::generate_for(rcgen_alg).unwrap();
        let pem = pair.serialize_pem();
        let key = match pem_kind {
            "ec" => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
            "rsa" => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            _ => EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
        };
        let jwk = if alg == Algorithm::EdDSA {
            // An Ed25519 JWK is the raw public key.
            let x = base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                pair.public_key_raw(),
            );
            json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid})
        } else {
            let mut jwk = Jwk::from_encoding_key(&key, alg).unwrap();
            jwk.common.key_id = kid.map(str::to_owned);
            serde_json::to_value(&jwk).unwrap()
        };
        Signer {
            key,
            alg,
            kid: kid.map(str::to_owned),
            jwk,
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = self.kid.clone();
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

fn jwks(signers: &[&Signer]) -> String {
    json!({ "keys": signers.iter().map(|s| s.jwk.clone()).collect::<Vec<_>>() }).to_string()
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn claims(iss: &str, sub: &str) -> Value {
    json!({ "iss": iss, "sub": sub, "exp": now() + 600 })
}

fn rule(issuer: &str, keys: &str) -> JwtRule {
    JwtRule {
        policy: "shop/jwt".to_owned(),
        issuer: Some(issuer.to_owned()),
        audiences: Vec::new(),
        jwks: JwksSource::Inline(keys.to_owned()),
        locations: TokenLocation::defaults(),
        forward_original_token: false,
        output_payload_to_header: None,
        output_claim_to_headers: Vec::new(),
        space_delimited_claims: Vec::new(),
        fetch_timeout: Duration::from_secs(2),
    }
}

fn check(rule: &JwtRule, keys: &KeySet, token: &str) -> Result<String, VerifyError> {
    let unverified = verify::inspect(token)?;
    verify::verify(token, &unverified, rule, keys).map(|c| claims::principal(&c))
}

#[test]
fn tokens_of_each_key_type_verify() {
    for alg in [
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::EdDSA,
    ] {
        let signer = Signer::new(alg, Some("k1"));
        let keys = KeySet::parse(&jwks(&[&signer])).unwrap();
        let token = signer.sign(&claims("issuer", "alice"));
        assert_eq!(
            check(&rule("issuer", ""), &keys, &token).as_deref(),
            Ok("issuer/alice"),
            "{alg:?}"
        );
    }
}

#[test]
fn each_validation_failure_has_its_reason() {
    let signer = Signer::new(Algorithm::ES256, Some("k1"));
    let other = Signer::new(Algorithm::ES256, Some("k1"));
    let keys = KeySet::parse(&jwks(&[&signer])).unwrap();
    let plain = rule("issuer", "");

    let forged = other.sign(&claims("issuer", "alice"));
    assert_eq!(
        check(&plain, &keys, &forged),
        Err(VerifyError::BadSignature)
    );

    let expired = signer.sign(&json!({"iss": "issuer", "sub": "a", "exp": now() - 3600}));
    assert_eq!(check(&plain, &keys, &expired), Err(VerifyError::Expired));
    // Within the clock skew allowance an expired token still passes.
    let just_expired = signer.sign(&json!({"iss": "issuer", "sub": "a", "exp": now() - 10}));
    assert!(check(&plain, &keys, &just_expired).is_ok());

    let early = signer.sign(&json!({"iss": "issuer", "sub": "a", "nbf": now() + 3600}));
    assert_eq!(check(&plain, &keys, &early), Err(VerifyError::NotYetValid));

    let elsewhere = signer.sign(&claims("someone-else", "alice"));
    assert!(matches!(
        check(&plain, &keys, &elsewhere),
        Err(VerifyError::WrongIssuer { .. })
    ));

    let mut audience = rule("issuer", "");
    audience.audiences = vec!["shop".into(), "admin".into()];
    let wrong = signer.sign(&json!({"iss": "issuer", "sub": "a", "aud": ["web", "mobile"]}));
    assert!(matches!(
        check(&audience, &keys, &wrong),
        Err(VerifyError::WrongAudience { .. })
    ));
    let none = signer.sign(&json!({"iss": "issuer", "sub": "a"}));
    assert!(matches!(
        check(&audience, &keys, &none),
        Err(VerifyError::WrongAudience { .. })
    ));
    let one_of = signer.sign(&json!({"iss": "issuer", "sub": "a", "aud": ["web", "admin"]}));
    assert!(check(&audience, &keys, &one_of).is_ok());
    // Without audiences in the rule, any aud passes.
    assert!(check(&plain, &keys, &wrong).is_ok());

    let stranger = Signer::new(Algorithm::ES256, Some("k9"));
    let unknown = stranger.sign(&claims("issuer", "alice"));
    assert_eq!(
        check(&plain, &keys, &unknown),
        Err(VerifyError::UnknownKid("k9".into()))
    );

    for malformed in ["abc", "a.b", "a.b.c", "e30.e30.sig.extra", ""] {
        assert!(
            matches!(
                check(&plain, &keys, malformed),
                Err(VerifyError::Malformed(_))
            ),
            "{malformed:?}"
        );
    }
}

#[test]
fn without_a_kid_every_fitting_key_is_tried() {
    let first = Signer::new(Algorithm::ES256, None);
    let second = Signer::new(Algorithm::ES256, None);
    let rsa = Signer::new(Algorithm::RS256, None);
    let keys = KeySet::parse(&jwks(&[&first, &rsa, &second])).unwrap();
    let token = second.sign(&claims("issuer", "bob"));
    assert_eq!(
        check(&rule("issuer", ""), &keys, &token).as_deref(),
        Ok("issuer/bob")
    );
    // An algorithm no key fits says so.
    let only_ec = KeySet::parse(&jwks(&[&first])).unwrap();
    let rsa_token = rsa.sign(&claims("issuer", "bob"));
    assert_eq!(
        check(&rule("issuer", ""), &only_ec, &rsa_token),
        Err(VerifyError::NoKeyForAlgorithm("RS256".into()))
    );
}

#[test]
fn key_sets_parse_single_keys_and_refuse_empty_ones() {
    let signer = Signer::new(Algorithm::ES256, Some("k1"));
    assert_eq!(KeySet::parse(&signer.jwk.to_string()).unwrap().len(), 1);
    assert!(KeySet::parse(r#"{"keys": []}"#).is_err());
    assert!(KeySet::parse("not json").is_err());
    assert!(KeySet::parse(r#"{"keys": "x"}"#).is_err());
}

fn active(rules: Vec<JwtRule>) -> Vec<ActiveJwtRule> {
    let store = JwksStore::new(Duration::from_secs(60), None);
    activate(&rules, &store)
}

fn request(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut builder = Request::builder().uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_token_passes_unauthenticated() {
    let signer = Signer::new(Algorithm::ES256, Some("k1"));
    let rules = active(vec![rule("issuer", &jwks(&[&signer]))]);
    let mut plain = request("/", &[("authorization", "Basic dXNlcjpw")]);
    assert_eq!(authenticate(&rules, &mut plain).await, Ok(None));
    // And without rules, tokens are not looked at.
    let mut any = request("/", &[("authorization", "Bearer garbage")]);
    assert_eq!(authenticate(&[], &mut any).await, Ok(None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_token_gives_the_principal_and_leaves_the_request() {
    let signer = Signer::new(Algorithm::ES256, Some("k1"));
    let mut jwt = rule("issuer", &jwks(&[&signer]));
    jwt.output_payload_to_header = Some("x-jwt-payload".into());
    jwt.output_claim_to_headers = vec![ClaimToHeader {
        header: "x-jwt-team".into(),
        claim: "org.team".into(),
    }];
    let rules = active(vec![jwt]);
    let token = signer.sign(&json!({
        "iss": "issuer", "sub": "alice", "aud": "shop", "azp": "web",
        "groups": ["dev", "ops"], "org": {"team": "payments"}, "exp": now() + 60,
    }));
    let bearer = format!("Bearer {token}");
    let mut req = request(
        "/",
        &[
            ("authorization", &bearer),
            ("x-jwt-team", "forged-by-client"),
        ],
    );
    let facts = authenticate(&rules, &mut req).await.unwrap().unwrap();
    assert_eq!(facts.principal, "issuer/alice");
    assert_eq!(facts.audiences, ["shop"]);
    assert_eq!(facts.presenter.as_deref(), Some("web"));
    assert!(
        facts
            .claims
            .contains(&(vec!["groups".into()], vec!["dev".into(), "ops".into()]))
    );
    let headers = req.headers();
    assert!(
        headers.get("authorization").is_none(),
        "the token is not forwarded"
    );
    assert_eq!(headers["x-jwt-team"], "payments");
    assert_eq!(
        headers["x-jwt-payload"].to_str().unwrap(),
        token.split('.').nth(1).unwrap()
    );

    // Without a token, a header the client set under an output name does not get through.
    let mut forged = request("/", &[("x-jwt-team", "forged-by-client")]);
    assert_eq!(authenticate(&rules, &mut forged).await, Ok(None));
    assert!(forged.headers().get("x-jwt-team").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_original_token_keeps_the_header() {
    let signer = Signer::new(Algorithm::ES256, Some("k1"));
    let mut jwt = rule("issuer", &jwks(&[&signer]));
    jwt.forward_original_token = true;
    let rules = active(vec![jwt]);
    let bearer = format!("Bearer {}", signer.sign(&claims("issuer", "alice")));
    let mut req = request("/", &[("authorization", &bearer)]);
    assert!(authenticate(&rules, &mut req).await.unwrap().is_some());
    assert_eq!(req.headers()["authorization"], bearer.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_the_location_and_the_problem() {
    let signer = Signer::new(Algorithm::ES256, Some("k1"));
    let rules = active(vec![rule("issuer", &jwks(&[&signer]))]);

    let stranger = format!("Bearer {}", signer.sign(&claims("unknown-issuer", "eve")));
    let mut req = request("/", &[("authorization", &stranger)]);
    let refusal = authenticate(&rules, &mut req).await.unwrap_err();
    assert!(refusal.0.contains("header authorization"), "{refusal}");
    assert!(refusal.0.contains("not configured"), "{refusal}");

    let expired = signer.sign(&json!({"iss": "issuer", "sub": "a", "exp": now() - 3600}));
    let mut req = request(&format!("/?access_token={expired}"), &[]);
    let refusal = authenticate(&rules, &mut req).await.unwrap_err();
    assert!(
        refusal.0.contains("query parameter access_token"),
        "{refusal}"
    );
    assert!(refusal.0.contains("expired"), "{refusal}");
    assert!(refusal.0.contains("shop/jwt"), "{refusal}");

    let mut req = request("/", &[("authorization", "Bearer not-a-jwt")]);
    let refusal = authenticate(&rules, &mut req).await.unwrap_err();
    assert!(refusal.0.contains("Header.Payload.Signature"), "{refusal}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_token_must_verify_and_rules_combine() {
    let first = Signer::new(Algorithm::ES256, Some("a"));
    let second = Signer::new(Algorithm::RS256, Some("b"));
    let mut other = rule("second", &jwks(&[&second]));
    other.locations = vec![TokenLocation::Header {
        name: "x-second".into(),
        prefix: String::new(),
    }];
    let rules = active(vec![rule("first", &jwks(&[&first])), other]);
    let good_first = format!("Bearer {}", first.sign(&claims("first", "alice")));
    let good_second = second.sign(&claims("second", "bob"));
    let mut both = request(
        "/",
        &[("authorization", &good_first), ("x-second", &good_second)],
    );
    let facts = authenticate(&rules, &mut both).await.unwrap().unwrap();
    assert_eq!(facts.principal, "first/alice");

    let bad_second = first.sign(&claims("second", "bob"));
    let mut one_bad = request(
        "/",
        &[("authorization", &good_first), ("x-second", &bad_second)],
    );
    let refusal = authenticate(&rules, &mut one_bad).await.unwrap_err();
    assert!(refusal.0.contains("header x-second"), "{refusal}");

    // The second issuer's token in the first rule's location: that location has no rule for it.
    let misplaced = format!("Bearer {good_second}");
    let mut req = request("/", &[("authorization", &misplaced)]);
    assert!(authenticate(&rules, &mut req).await.is_err());
}

/// A JWKS served over plain HTTP by a small hyper server, whose document the test can change.
struct JwksServer {
    uri: String,
    document: Arc<Mutex<String>>,
}

async fn jwks_server(document: String) -> JwksServer {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let document = Arc::new(Mutex::new(document));
    let served = document.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let served = served.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_request| {
                    let body = served.lock().unwrap().clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(body)),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    JwksServer {
        uri: format!("http://{address}/jwks.json"),
        document,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_key_sets_are_fetched_and_refreshed() {
    let old = Signer::new(Algorithm::ES256, Some("old"));
    let new = Signer::new(Algorithm::ES256, Some("new"));
    let server = jwks_server(jwks(&[&old])).await;
    let store = JwksStore::new(Duration::from_millis(200), None);
    let mut jwt = rule("issuer", "");
    jwt.jwks = JwksSource::Uri(server.uri.clone());
    let rules = activate(&[jwt], &store);

    let bearer = |s: &Signer| format!("Bearer {}", s.sign(&claims("issuer", "alice")));
    let mut req = request("/", &[("authorization", &bearer(&old))]);
    assert!(authenticate(&rules, &mut req).await.unwrap().is_some());
    let mut req = request("/", &[("authorization", &bearer(&new))]);
    assert!(authenticate(&rules, &mut req).await.is_err());

    // The issuer rotates its key; the next refresh picks it up.
    *server.document.lock().unwrap() = jwks(&[&new]);
    let mut verified = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut req = request("/", &[("authorization", &bearer(&new))]);
        if authenticate(&rules, &mut req).await.is_ok() {
            verified = true;
            break;
        }
    }
    assert!(verified, "the rotated key was never fetched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_key_set_refuses_tokens_naming_the_uri() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let uri = format!("http://127.0.0.1:{port}/jwks.json");
    let store = JwksStore::new(Duration::from_secs(60), None);
    let mut jwt = rule("issuer", "");
    jwt.jwks = JwksSource::Uri(uri.clone());
    let rules = activate(&[jwt], &store);
    let signer = Signer::new(Algorithm::ES256, Some("k1"));
    let bearer = format!("Bearer {}", signer.sign(&claims("issuer", "alice")));
    let mut req = request("/", &[("authorization", &bearer)]);
    let refusal = authenticate(&rules, &mut req).await.unwrap_err();
    assert!(refusal.0.contains(&uri), "{refusal}");

    // https without trusted roots says so.
    let https = activate(
        &[JwtRule {
            jwks: JwksSource::Uri("https://127.0.0.1:1/jwks".into()),
            ..rule("issuer", "")
        }],
        &store,
    );
    let mut req = request("/", &[("authorization", &bearer)]);
    let refusal = authenticate(&https, &mut req).await.unwrap_err();
    assert!(refusal.0.contains("trusted root"), "{refusal}");
}

#[test]
fn a_store_forgets_uris_no_snapshot_names() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = JwksStore::new(Duration::from_secs(60), None);
        let a = "http://127.0.0.1:1/a".to_owned();
        let b = "http://127.0.0.1:1/b".to_owned();
        let first = store.sync(&HashSet::from([a.clone(), b.clone()]));
        let second = store.sync(&HashSet::from([a.clone()]));
        assert!(Arc::ptr_eq(&first[&a], &second[&a]), "a known URI is kept");
        assert!(!second.contains_key(&b));
    });
}
