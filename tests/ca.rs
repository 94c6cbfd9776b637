//! `strait ca`: creating the CA, issuing and signing workload certificates that outside tools
//! (openssl) accept, minting bootstrap tokens, and refusing bad input without issuing anything.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Run, TempDir, run, strait};

fn ca(data: &Path, args: &[&str]) -> Run {
    run(strait().arg("ca").args(args).arg("--data").arg(data))
}

fn openssl(args: &[&str]) -> Run {
    run(Command::new("openssl").args(args))
}

fn init(dir: &TempDir) -> std::path::PathBuf {
    let data = dir.path().join("data");
    let created = ca(&data, &["init", "--trust-domain", "cluster.local"]);
    assert_eq!(created.code, Some(0), "{}", created.stderr);
    data
}

#[test]
fn issued_certificates_verify_with_openssl_and_carry_only_the_granted_identity() {
    let dir = TempDir::new("ca-issue");
    let data = init(&dir);
    let out = dir.path().join("web");
    let issued = ca(
        &data,
        &[
            "issue",
            "--spiffe-id",
            "spiffe://cluster.local/ns/default/sa/web",
            "--out",
            out.to_str().unwrap(),
            "--ttl",
            "1h",
        ],
    );
    assert_eq!(issued.code, Some(0), "{}", issued.stderr);
    assert!(
        issued.stdout.contains("valid for 3600 s"),
        "{}",
        issued.stdout
    );
    let mode = |name: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(out.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("key.pem"), 0o600);
    // The chain is leaf + intermediate; openssl verifies the leaf against the bundle.
    let chain = std::fs::read_to_string(out.join("cert-chain.pem")).unwrap();
    let intermediate = &chain[chain.find("-----END CERTIFICATE-----").unwrap() + 26..];
    let untrusted = dir.write("intermediate.pem", intermediate);
    let verified = openssl(&[
        "verify",
        "-x509_strict",
        "-purpose",
        "sslclient",
        "-CAfile",
        out.join("root-cert.pem").to_str().unwrap(),
        "-untrusted",
        untrusted.to_str().unwrap(),
        out.join("cert-chain.pem").to_str().unwrap(),
    ]);
    assert_eq!(
        verified.code,
        Some(0),
        "{} {}",
        verified.stdout,
        verified.stderr
    );

    // A CSR made by openssl that asks for a name and CA powers gets only the granted ID.
    let key = dir.path().join("vm.key");
    let csr = dir.path().join("vm.csr");
    let made = openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key.to_str().unwrap(),
        "-subj",
        "/CN=admin",
        "-addext",
        "subjectAltName=DNS:admin.example.com,URI:spiffe://cluster.local/ns/kube-system/sa/admin",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-out",
        csr.to_str().unwrap(),
    ]);
    assert_eq!(made.code, Some(0), "{}", made.stderr);
    let signed = ca(
        &data,
        &[
            "sign",
            "--csr",
            csr.to_str().unwrap(),
            "--spiffe-id",
            "spiffe://cluster.local/ns/vm/sa/app",
        ],
    );
    assert_eq!(signed.code, Some(0), "{}", signed.stderr);
    let leaf = dir.write("vm.pem", &signed.stdout);
    let text = openssl(&["x509", "-noout", "-text", "-in", leaf.to_str().unwrap()]);
    assert!(
        text.stdout
            .contains("URI:spiffe://cluster.local/ns/vm/sa/app")
    );
    assert!(!text.stdout.contains("admin"), "{}", text.stdout);
    assert!(text.stdout.contains("CA:FALSE"), "{}", text.stdout);
}

#[test]
fn bad_input_is_refused_with_a_reason_and_nothing_is_issued() {
    let dir = TempDir::new("ca-refuse");
    let data = init(&dir);
    let again = ca(&data, &["init", "--trust-domain", "cluster.local"]);
    assert_ne!(again.code, Some(0));
    assert!(
        again.stderr.contains("refusing to overwrite"),
        "{}",
        again.stderr
    );

    let garbage = dir.write("garbage.csr", "not a certificate request");
    let refused = ca(
        &data,
        &[
            "sign",
            "--csr",
            garbage.to_str().unwrap(),
            "--spiffe-id",
            "spiffe://cluster.local/ns/a/sa/b",
        ],
    );
    assert_ne!(refused.code, Some(0));
    assert!(
        refused.stdout.is_empty(),
        "nothing issued: {}",
        refused.stdout
    );
    assert!(refused.stderr.contains("garbage.csr"), "{}", refused.stderr);

    let other_domain = ca(
        &data,
        &["token", "--identity", "spiffe://other.example/ns/a/sa/b"],
    );
    assert_ne!(other_domain.code, Some(0));
    assert!(
        other_domain
            .stderr
            .contains("not in this CA's trust domain"),
        "{}",
        other_domain.stderr
    );

    let malformed = ca(
        &data,
        &["token", "--identity", "spiffe://cluster.local/ns/../sa/b"],
    );
    assert_ne!(malformed.code, Some(0));
    assert!(
        malformed.stderr.contains("SPIFFE ID"),
        "{}",
        malformed.stderr
    );

    let no_ca = ca(&dir.path().join("empty"), &["bundle"]);
    assert_ne!(no_ca.code, Some(0));
    assert!(no_ca.stderr.contains("strait ca init"), "{}", no_ca.stderr);
}

#[test]
fn tokens_are_long_random_and_the_bundle_is_spiffe_json() {
    let dir = TempDir::new("ca-token");
    let data = init(&dir);
    let mint = || {
        ca(
            &data,
            &["token", "--identity", "spiffe://cluster.local/ns/vm/sa/app"],
        )
    };
    let (first, second) = (mint(), mint());
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    let token = first.stdout.trim();
    assert!(token.len() >= 43, "256 bits in base64url: {token}");
    assert_ne!(token, second.stdout.trim());
    let ledger = std::fs::read_to_string(data.join("ca/bootstrap-tokens.json")).unwrap();
    assert!(
        !ledger.contains(token),
        "only a hash of the token is stored"
    );

    let bundle = ca(&data, &["bundle", "--format", "spiffe"]);
    assert_eq!(bundle.code, Some(0), "{}", bundle.stderr);
    let json: serde_json::Value = serde_json::from_str(&bundle.stdout).unwrap();
    let keys = json["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["use"], "x509-svid");
}
