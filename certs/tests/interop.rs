//! Interoperability: certificates from our CA checked by other X.509 implementations, the
//! openssl CLI and Python's `cryptography` path verifier. Both tools are required (install them
//! with `scripts/install-test-deps`); a missing tool fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use strait_certs::bundle::certs_to_pem;
use strait_certs::{Authority, AuthorityOptions, CertificateRequest, SpiffeId, TrustDomain};

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "strait-certs-interop-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA of trust domain `td` and an SVID it issued, written as PEM files `root.pem`,
/// `int.pem` and `leaf.pem` under `dir/name`.
struct Issued {
    root: PathBuf,
    int: PathBuf,
    leaf: PathBuf,
    id: SpiffeId,
}

fn issue(dir: &Path, name: &str, td: &str) -> Issued {
    let td = TrustDomain::new(td).unwrap();
    let ca = Authority::init(
        td.clone(),
        &dir.join(name).join("ca"),
        &AuthorityOptions::default(),
    )
    .unwrap();
    let id = SpiffeId::istio(&td, "default", "web").unwrap();
    let request = CertificateRequest::new(&id).unwrap();
    let issued = ca
        .sign_csr(request.csr_der(), &id, Duration::from_secs(3600))
        .unwrap();
    let out = dir.join(name);
    let write = |file: &str, pem: String| {
        let path = out.join(file);
        std::fs::write(&path, pem).unwrap();
        path
    };
    Issued {
        root: write("root.pem", ca.trust_bundle().to_pem()),
        int: write("int.pem", certs_to_pem(&issued.chain_der[1..])),
        leaf: write("leaf.pem", certs_to_pem(&issued.chain_der[..1])),
        id,
    }
}

fn run(program: &str, args: &[&str]) -> Output {
    match Command::new(program).args(args).output() {
        Ok(output) => output,
        Err(e) => panic!(
            "{program} is required by the interop tests and could not be run ({e}); \
             install it with scripts/install-test-deps"
        ),
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn openssl_verify(root: &Path, int: &Path, leaf: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["verify"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-CAfile", path(root), "-untrusted", path(int), path(leaf)]);
    run("openssl", &args)
}

#[test]
fn openssl_verifies_our_svids_and_refuses_another_cas() {
    let dir = TempDir::new("openssl");
    let a = issue(dir.path(), "a", "a.mesh");
    let b = issue(dir.path(), "b", "b.mesh");

    for purpose in ["sslclient", "sslserver"] {
        let out = openssl_verify(
            &a.root,
            &a.int,
            &a.leaf,
            &["-x509_strict", "-purpose", purpose],
        );
        assert!(
            out.status.success(),
            "openssl verify ({purpose}): {}",
            text(&out)
        );
        assert!(text(&out).contains(": OK"), "{}", text(&out));
    }

    // B's leaf and intermediate against A's root.
    let out = openssl_verify(&a.root, &b.int, &b.leaf, &[]);
    assert!(
        !out.status.success(),
        "another CA's leaf verified: {}",
        text(&out)
    );

    // openssl sees exactly the one URI SAN, critical, and the empty subject.
    let out = run(
        "openssl",
        &["x509", "-in", path(&a.leaf), "-noout", "-text"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let dump = text(&out);
    assert!(
        dump.contains("X509v3 Subject Alternative Name: critical"),
        "{dump}"
    );
    assert!(dump.contains(&format!("URI:{}", a.id)), "{dump}");
    assert!(dump.contains("X509v3 Key Usage: critical"), "{dump}");
    assert!(dump.contains("CA:FALSE"), "{dump}");
}

#[test]
fn openssl_accepts_the_csr_proof_of_possession() {
    let dir = TempDir::new("csr");
    let id = SpiffeId::parse("spiffe://a.mesh/ns/default/sa/web").unwrap();
    let request = CertificateRequest::new(&id).unwrap();
    let csr = dir.path().join("csr.pem");
    std::fs::write(&csr, request.csr_pem()).unwrap();
    let out = run("openssl", &["req", "-in", path(&csr), "-noout", "-verify"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).to_lowercase().contains("verify ok"),
        "{}",
        text(&out)
    );
}

const PYTHON_VERIFY: &str = r#"
import sys
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store
def load(path):
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificates(f.read())
roots, ints, leaf = load(sys.argv[1]), load(sys.argv[2]), load(sys.argv[3])[0]
verifier = PolicyBuilder().store(Store(roots)).build_client_verifier()
try:
    result = verifier.verify(leaf, ints)
except Exception as e:
    print("REFUSED", type(e).__name__, e)
    sys.exit(3)
for name in result.subjects or []:
    print("SUBJECT", name.value)
"#;

fn python_verify(root: &Path, int: &Path, leaf: &Path) -> Output {
    run(
        "python3",
        &["-c", PYTHON_VERIFY, path(root), path(int), path(leaf)],
    )
}

#[test]
fn python_cryptography_verifies_our_svids() {
    let probe = run("python3", &["-c", "import cryptography.x509.verification"]);
    assert!(
        probe.status.success(),
        "Python's cryptography (43 or later) is required by the interop tests; install it with \
         scripts/install-test-deps: {}",
        text(&probe)
    );
    let dir = TempDir::new("python");
    let a = issue(dir.path(), "a", "a.mesh");
    let b = issue(dir.path(), "b", "b.mesh");

    let out = python_verify(&a.root, &a.int, &a.leaf);
    assert!(
        out.status.success(),
        "cryptography refused our SVID: {}",
        text(&out)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("SUBJECT {}", a.id)
    );

    let out = python_verify(&a.root, &b.int, &b.leaf);
    assert_eq!(
        out.status.code(),
        Some(3),
        "another CA's leaf: {}",
        text(&out)
    );
}
