use std::os::unix::fs::PermissionsExt;

use rcgen::{CertificateParams, CustomExtension, DnType, PKCS_ECDSA_P384_SHA384};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER, OID_X509_EXT_BASIC_CONSTRAINTS, OID_X509_EXT_KEY_USAGE,
    OID_X509_EXT_SUBJECT_ALT_NAME, OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
};

use super::*;
use crate::bundle::parse_pem_certs;
use crate::fs::test_dir::TestDir;
use x509_parser::certificate::X509Certificate;

fn td() -> TrustDomain {
    TrustDomain::new("cluster.local").unwrap()
}

fn web() -> SpiffeId {
    SpiffeId::parse("spiffe://cluster.local/ns/default/sa/web").unwrap()
}

fn init(name: &str, options: &AuthorityOptions) -> (TestDir, Authority) {
    let dir = TestDir::new(name);
    let ca = Authority::init(td(), &dir.path().join("ca"), options).unwrap();
    (dir, ca)
}

fn cert(der: &[u8]) -> X509Certificate<'_> {
    x509::parse_cert(der).unwrap()
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
}

fn extension_critical(c: &X509Certificate<'_>, oid: &x509_parser::der_parser::Oid<'_>) -> bool {
    c.get_extension_unique(oid).unwrap().unwrap().critical
}

#[test]
fn init_makes_a_root_and_a_pathlen_0_intermediate_inside_it() {
    let (dir, ca) = init("ca-init", &AuthorityOptions::default());
    let ca_dir = dir.path().join("ca");
    let bundle = ca.trust_bundle();
    assert_eq!(bundle.trust_domain, td());
    assert_eq!(bundle.roots.len(), 1);
    assert_eq!(bundle.sequence, 1);
    assert_eq!(bundle.refresh_hint, Some(DEFAULT_REFRESH_HINT));

    let root = cert(&bundle.roots[0]);
    let bc = root.basic_constraints().unwrap().unwrap().value;
    assert!(bc.ca);
    let ku = root.key_usage().unwrap().unwrap();
    assert!(ku.critical && ku.value.key_cert_sign() && ku.value.crl_sign());
    assert!(!ku.value.digital_signature());
    assert_eq!(x509::ec_curve(root.public_key()), Some(Curve::P256));
    let (root_nb, root_na) = x509::validity(&root);
    let root_life = root_na.duration_since(root_nb).unwrap();
    assert!(root_life >= Duration::from_secs(10 * 365 * 24 * 3600));
    assert_eq!(root.issuer(), root.subject());

    assert_eq!(ca.intermediates().len(), 1);
    let int = cert(&ca.intermediates()[0]);
    let bc = int.basic_constraints().unwrap().unwrap().value;
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
    let ku = int.key_usage().unwrap().unwrap();
    assert!(ku.critical && ku.value.key_cert_sign() && ku.value.crl_sign());
    assert!(int.extended_key_usage().unwrap().is_none(), "no EKU on CAs");
    assert!(
        int.name_constraints().unwrap().is_none(),
        "no name constraints on CAs"
    );
    let (int_nb, int_na) = x509::validity(&int);
    assert!(int_nb >= root_nb && int_na <= root_na);
    assert_eq!(int.issuer(), root.subject());
    int.verify_signature(Some(root.public_key())).unwrap();
    assert!(
        int.get_extension_unique(&OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER)
            .unwrap()
            .is_some()
    );
    assert_eq!(ca.chain_not_after(), int_na);

    // Keys are owner-only, certificates readable, the directory owner-only.
    let mode = |name: &str| {
        std::fs::metadata(ca_dir.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(files::CA_KEY), 0o600);
    assert_eq!(mode(files::ROOT_KEY), 0o600);
    assert_eq!(mode(files::CA_CERT), 0o644);
    assert_eq!(
        std::fs::metadata(&ca_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // The layout is Istio's: cert-chain.pem is the intermediate then the root.
    let chain =
        parse_pem_certs(&std::fs::read_to_string(ca_dir.join(files::CERT_CHAIN)).unwrap()).unwrap();
    assert_eq!(
        chain,
        vec![ca.intermediates()[0].clone(), bundle.roots[0].clone()]
    );
}

#[test]
fn init_refuses_an_existing_authority() {
    let (dir, _ca) = init("ca-twice", &AuthorityOptions::default());
    let again = Authority::init(td(), &dir.path().join("ca"), &AuthorityOptions::default());
    assert!(matches!(again, Err(AuthorityError::AlreadyInitialized(_))));
}

#[test]
fn issued_leaf_has_exactly_the_svid_fields() {
    let (_dir, ca) = init("ca-leaf", &AuthorityOptions::default());
    let ttl = Duration::from_secs(3600);
    let (_key, issued) = ca.issue(&web(), ttl).unwrap();
    assert_eq!(issued.chain_der.len(), 2);
    assert_eq!(issued.chain_der[1], ca.intermediates()[0]);
    assert_eq!(
        parse_pem_certs(&issued.chain_pem).unwrap(),
        issued.chain_der
    );

    let leaf = cert(&issued.chain_der[0]);
    let int = cert(&ca.intermediates()[0]);
    // Empty subject, one critical URI SAN and nothing else.
    assert_eq!(leaf.subject().iter().count(), 0);
    assert!(extension_critical(&leaf, &OID_X509_EXT_SUBJECT_ALT_NAME));
    let san = leaf.subject_alternative_name().unwrap().unwrap().value;
    assert_eq!(san.general_names, vec![GeneralName::URI(web().as_str())]);
    // Key usage: critical digitalSignature only.
    let ku = leaf.key_usage().unwrap().unwrap();
    assert!(ku.critical);
    assert!(ku.value.digital_signature());
    assert!(!ku.value.key_cert_sign() && !ku.value.crl_sign());
    assert!(!ku.value.key_encipherment());
    // EKU serverAuth + clientAuth.
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(!eku.any && !eku.code_signing);
    // CA:FALSE, explicitly.
    assert!(!leaf.basic_constraints().unwrap().unwrap().value.ca);
    assert!(extension_critical(&leaf, &OID_X509_EXT_BASIC_CONSTRAINTS));
    assert!(extension_critical(&leaf, &OID_X509_EXT_KEY_USAGE));
    // AKI names the intermediate's SKI; the leaf has its own SKI.
    let aki = match leaf
        .get_extension_unique(&OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER)
        .unwrap()
        .unwrap()
        .parsed_extension()
    {
        ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.clone().unwrap(),
        other => panic!("{other:?}"),
    };
    let int_ski = match int
        .get_extension_unique(&OID_X509_EXT_SUBJECT_KEY_IDENTIFIER)
        .unwrap()
        .unwrap()
        .parsed_extension()
    {
        ParsedExtension::SubjectKeyIdentifier(ski) => ski.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(aki.0, int_ski.0);
    assert!(
        leaf.get_extension_unique(&OID_X509_EXT_SUBJECT_KEY_IDENTIFIER)
            .unwrap()
            .is_some()
    );
    // Validity: NotAfter = issue + TTL, NotBefore backdated 2 minutes.
    let (nb, na) = x509::validity(&leaf);
    assert_eq!((nb, na), (issued.not_before, issued.not_after));
    assert_eq!(secs(na), secs(issued.issued_at) + 3600);
    assert_eq!(secs(nb), secs(issued.issued_at) - 120);
    // Signed by the intermediate; a random serial of 16 bytes that differs per leaf.
    leaf.verify_signature(Some(int.public_key())).unwrap();
    assert_eq!(leaf.raw_serial().len(), 16);
    let (_, second) = ca.issue(&web(), ttl).unwrap();
    assert_ne!(cert(&second.chain_der[0]).raw_serial(), leaf.raw_serial());
}

#[test]
fn leaf_validity_is_capped_at_the_issuer_and_the_max_ttl() {
    let options = AuthorityOptions {
        intermediate_ttl: Duration::from_secs(3600),
        max_workload_ttl: Duration::from_secs(48 * 3600),
        ..AuthorityOptions::default()
    };
    let (_dir, ca) = init("ca-cap", &options);
    let (_, capped) = ca.issue(&web(), Duration::from_secs(24 * 3600)).unwrap();
    assert_eq!(capped.not_after, ca.chain_not_after());
    let int = cert(&ca.intermediates()[0]);
    assert_eq!(x509::validity(&int).1, capped.not_after);

    let (_dir2, ca2) = init(
        "ca-maxttl",
        &AuthorityOptions {
            max_workload_ttl: Duration::from_secs(7200),
            ..AuthorityOptions::default()
        },
    );
    let (_, clamped) = ca2.issue(&web(), Duration::from_secs(24 * 3600)).unwrap();
    assert_eq!(secs(clamped.not_after), secs(clamped.issued_at) + 7200);
    let (_, default) = ca2.issue(&web(), Duration::ZERO).unwrap();
    // A default longer than the maximum is shortened as well.
    assert_eq!(secs(default.not_after), secs(default.issued_at) + 7200);
}

#[test]
fn load_after_init_signs_under_the_same_root() {
    let (dir, ca) = init("ca-load", &AuthorityOptions::default());
    let before = ca.trust_bundle();
    drop(ca);
    let loaded = Authority::load(&dir.path().join("ca")).unwrap();
    assert_eq!(loaded.trust_bundle(), before);
    assert_eq!(loaded.origin(), AuthorityOrigin::SelfSigned);
    let (_, issued) = loaded.issue(&web(), Duration::from_secs(600)).unwrap();
    let leaf = cert(&issued.chain_der[0]);
    let int = cert(&issued.chain_der[1]);
    let root = cert(&before.roots[0]);
    leaf.verify_signature(Some(int.public_key())).unwrap();
    int.verify_signature(Some(root.public_key())).unwrap();
}

#[test]
fn load_refuses_a_key_that_is_not_the_certificates() {
    let (dir, _ca) = init("ca-swap", &AuthorityOptions::default());
    let ca_dir = dir.path().join("ca");
    let other = KeyPair::generate().unwrap();
    std::fs::write(ca_dir.join(files::CA_KEY), other.serialize_pem()).unwrap();
    assert!(matches!(
        Authority::load(&ca_dir),
        Err(AuthorityError::KeyMismatch { .. })
    ));
}

fn csr(params: &CertificateParams, key: &KeyPair) -> Vec<u8> {
    params.serialize_request(key).unwrap().der().to_vec()
}

#[test]
fn csr_signing_takes_only_the_public_key() {
    let (_dir, ca) = init("ca-csr", &AuthorityOptions::default());
    let key = KeyPair::generate().unwrap();

    // A request asking for everything it must not get.
    let mut greedy = CertificateParams::default();
    greedy.distinguished_name.push(DnType::CommonName, "admin");
    greedy.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    greedy.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    greedy.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
    greedy.subject_alt_names = vec![
        SanType::DnsName("evil.example".try_into().unwrap()),
        SanType::URI(
            "spiffe://cluster.local/ns/kube-system/sa/admin"
                .try_into()
                .unwrap(),
        ),
    ];
    greedy.custom_extensions = vec![CustomExtension::from_oid_content(&[1, 2, 3, 4], vec![5, 0])];
    let issued = ca
        .sign_csr(&csr(&greedy, &key), &web(), Duration::from_secs(600))
        .unwrap();
    let leaf = cert(&issued.chain_der[0]);
    assert_eq!(leaf.subject().iter().count(), 0);
    let san = leaf.subject_alternative_name().unwrap().unwrap().value;
    assert_eq!(san.general_names, vec![GeneralName::URI(web().as_str())]);
    assert!(!leaf.basic_constraints().unwrap().unwrap().value.ca);
    let ku = leaf.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_cert_sign());
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth && !eku.code_signing);
    assert!(
        leaf.get_extension_unique(&x509_parser::der_parser::oid!(1.2.3.4))
            .unwrap()
            .is_none()
    );
    // The leaf carries the request's key.
    assert_eq!(
        leaf.public_key().raw,
        key.subject_public_key_info().as_slice()
    );
}

#[test]
fn bad_csrs_are_refused_with_a_reason() {
    let (_dir, ca) = init("ca-badcsr", &AuthorityOptions::default());
    let ttl = Duration::from_secs(600);
    let good = csr(&CertificateParams::default(), &KeyPair::generate().unwrap());

    assert!(matches!(
        ca.sign_csr(b"garbage", &web(), ttl),
        Err(AuthorityError::CsrMalformed)
    ));
    assert!(matches!(
        ca.sign_csr(&[], &web(), ttl),
        Err(AuthorityError::CsrMalformed)
    ));
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(matches!(
        ca.sign_csr(&trailing, &web(), ttl),
        Err(AuthorityError::CsrMalformed)
    ));
    assert!(matches!(
        ca.sign_csr(&vec![0x30; MAX_CSR_BYTES + 1], &web(), ttl),
        Err(AuthorityError::CsrTooLarge { .. })
    ));

    // Tamper with the signed part (a byte of the public key): the self-signature fails.
    let key = KeyPair::generate().unwrap();
    let raw = key.public_key_raw().to_vec();
    let request = csr(&CertificateParams::default(), &key);
    let at = request
        .windows(raw.len())
        .position(|w| w == raw.as_slice())
        .unwrap();
    let mut tampered = request.clone();
    tampered[at + raw.len() - 1] ^= 0x01;
    assert!(matches!(
        ca.sign_csr(&tampered, &web(), ttl),
        Err(AuthorityError::CsrBadSignature)
    ));
    // Tamper with the signature itself.
    let mut bad_sig = request.clone();
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 0x01;
    assert!(matches!(
        ca.sign_csr(&bad_sig, &web(), ttl),
        Err(AuthorityError::CsrBadSignature)
    ));

    let p384 = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
    assert!(matches!(
        ca.sign_csr(&csr(&CertificateParams::default(), &p384), &web(), ttl),
        Err(AuthorityError::CsrUnsupportedKey)
    ));

    // Identities the CA does not grant.
    let foreign = SpiffeId::parse("spiffe://other.mesh/ns/default/sa/web").unwrap();
    assert!(matches!(
        ca.sign_csr(&good, &foreign, ttl),
        Err(AuthorityError::WrongTrustDomain { .. })
    ));
    let td_id = SpiffeId::parse("spiffe://cluster.local").unwrap();
    assert!(matches!(
        ca.sign_csr(&good, &td_id, ttl),
        Err(AuthorityError::NotAWorkloadId(_))
    ));
}

/// Writes Istio plug-in CA files: a root and an intermediate valid until `int_not_after`.
fn write_plug_in_files(
    dir: &Path,
    int_not_after: SystemTime,
) -> (KeyPair, CertificateDer<'static>) {
    std::fs::create_dir_all(dir).unwrap();
    let now = SystemTime::now();
    let root_key = KeyPair::generate().unwrap();
    let mut root = CertificateParams::default();
    root.distinguished_name = DistinguishedName::new();
    root.distinguished_name
        .push(DnType::OrganizationName, "Istio");
    root.distinguished_name.push(DnType::CommonName, "Root CA");
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    root.not_before = (now - Duration::from_secs(3 * 86400)).into();
    root.not_after = (now + Duration::from_secs(3650 * 86400)).into();
    let root_cert = root.self_signed(&root_key).unwrap();

    let int_key = KeyPair::generate().unwrap();
    let mut int = CertificateParams::default();
    int.distinguished_name = DistinguishedName::new();
    int.distinguished_name
        .push(DnType::CommonName, "Intermediate CA");
    int.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    int.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    int.use_authority_key_identifier_extension = true;
    int.not_before = (now - Duration::from_secs(2 * 86400)).into();
    int.not_after = int_not_after.into();
    let int_cert = int
        .signed_by(&int_key, &Issuer::from_params(&root, &root_key))
        .unwrap();

    std::fs::write(dir.join(files::ROOT_CERT), root_cert.pem()).unwrap();
    std::fs::write(dir.join(files::CA_CERT), int_cert.pem()).unwrap();
    std::fs::write(dir.join(files::CA_KEY), int_key.serialize_pem()).unwrap();
    std::fs::write(
        dir.join(files::CERT_CHAIN),
        format!("{}{}", int_cert.pem(), root_cert.pem()),
    )
    .unwrap();
    (root_key, root_cert.der().clone())
}

#[test]
fn plug_in_takes_istio_ca_files() {
    let dir = TestDir::new("ca-plugin");
    let source = dir.path().join("cacerts");
    let (_, root) = write_plug_in_files(&source, SystemTime::now() + Duration::from_secs(86400));
    let ca_dir = dir.path().join("ca");
    let ca = Authority::plug_in(td(), &source, &ca_dir, &AuthorityOptions::default()).unwrap();
    assert_eq!(ca.origin(), AuthorityOrigin::PlugIn);
    assert_eq!(ca.trust_bundle().roots, vec![root.clone()]);
    let (_, issued) = ca.issue(&web(), Duration::from_secs(600)).unwrap();
    assert_eq!(issued.chain_der.len(), 2, "leaf and intermediate, no root");
    cert(&issued.chain_der[0])
        .verify_signature(Some(cert(&issued.chain_der[1]).public_key()))
        .unwrap();
    assert!(!ca_dir.join(files::ROOT_KEY).exists());
    let mode = std::fs::metadata(ca_dir.join(files::CA_KEY))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // A restart reads the copied files.
    let reloaded = Authority::load(&ca_dir).unwrap();
    assert_eq!(reloaded.origin(), AuthorityOrigin::PlugIn);
    assert_eq!(reloaded.trust_bundle().roots, vec![root]);
}

#[test]
fn plug_in_refuses_a_chain_that_does_not_reach_the_root() {
    let dir = TestDir::new("ca-plugin-broken");
    let source = dir.path().join("cacerts");
    write_plug_in_files(&source, SystemTime::now() + Duration::from_secs(86400));
    // Replace the root with an unrelated one.
    let other = dir.path().join("other");
    write_plug_in_files(&other, SystemTime::now() + Duration::from_secs(86400));
    std::fs::copy(other.join(files::ROOT_CERT), source.join(files::ROOT_CERT)).unwrap();
    let ca_dir = dir.path().join("ca");
    assert!(matches!(
        Authority::plug_in(td(), &source, &ca_dir, &AuthorityOptions::default()),
        Err(AuthorityError::BrokenChain(_))
    ));
    assert!(!ca_dir.join(files::AUTHORITY).exists());
}

#[test]
fn an_expired_issuer_does_not_issue() {
    let dir = TestDir::new("ca-expired");
    let source = dir.path().join("cacerts");
    write_plug_in_files(&source, SystemTime::now() - Duration::from_secs(3600));
    let ca = Authority::plug_in(
        td(),
        &source,
        &dir.path().join("ca"),
        &AuthorityOptions::default(),
    )
    .unwrap();
    assert!(matches!(
        ca.issue(&web(), Duration::from_secs(600)),
        Err(AuthorityError::IssuerExpired)
    ));
}

#[test]
fn published_bundle_sequence_rises_once_per_change_of_roots_and_survives_reloads() {
    let (dir, ca) = init("published", &AuthorityOptions::default());
    let ca_dir = dir.path().join("ca");
    let first = published_trust_bundle(&ca_dir).unwrap();
    assert_eq!(first.sequence, 1);
    assert_eq!(first.roots, ca.trust_bundle().roots);
    assert_eq!(first.refresh_hint, Some(DEFAULT_REFRESH_HINT));
    // Unchanged roots: the same sequence, however often it is asked for.
    assert_eq!(published_trust_bundle(&ca_dir).unwrap(), first);

    // An operator adds a second root: the sequence goes up once, and stays there.
    let (other_dir, other) = init("published-next", &AuthorityOptions::default());
    let both = format!(
        "{}{}",
        ca.trust_bundle().to_pem(),
        other.trust_bundle().to_pem()
    );
    std::fs::write(ca_dir.join(files::ROOT_CERT), both).unwrap();
    let second = published_trust_bundle(&ca_dir).unwrap();
    assert_eq!(second.sequence, 2);
    assert_eq!(second.roots.len(), 2);
    assert_eq!(published_trust_bundle(&ca_dir).unwrap().sequence, 2);
    // The CA still loads, and the recorded sequence is what a restart sees.
    assert_eq!(Authority::load(&ca_dir).unwrap().trust_bundle().sequence, 2);
    drop(other_dir);
}
