use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::*;
use crate::bundle::TrustBundle;
use crate::rotation::{
    ISTIO_ALPN_H2, ISTIO_ALPN_TCP, IdentityCell, MESH_SERVER_ALPN, mesh_client_config,
    mesh_server_config,
};
use crate::svid::Svid;

/// A test trust domain: a root and an intermediate made with rcgen, so that tests can forge
/// leaves the real CA would never issue.
struct Pki {
    td: TrustDomain,
    root: CertificateDer<'static>,
    int_params: CertificateParams,
    int_key: KeyPair,
    int: CertificateDer<'static>,
}

impl Pki {
    fn new(td: &str) -> Self {
        let now = SystemTime::now();
        Self::with_root_validity(
            td,
            now - Duration::from_secs(86400),
            now + Duration::from_secs(3650 * 86400),
        )
    }

    fn with_root_validity(td: &str, not_before: SystemTime, not_after: SystemTime) -> Self {
        let now = SystemTime::now();
        let root_key = KeyPair::generate().unwrap();
        let mut root_params = CertificateParams::default();
        root_params.distinguished_name = DistinguishedName::new();
        root_params
            .distinguished_name
            .push(DnType::CommonName, format!("{td} root"));
        root_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        root_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        root_params.not_before = not_before.into();
        root_params.not_after = not_after.into();
        let root = root_params.self_signed(&root_key).unwrap();

        let int_key = KeyPair::generate().unwrap();
        let mut int_params = CertificateParams::default();
        int_params.distinguished_name = DistinguishedName::new();
        int_params
            .distinguished_name
            .push(DnType::CommonName, format!("{td} issuing"));
        int_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        int_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        int_params.use_authority_key_identifier_extension = true;
        int_params.not_before = (now - Duration::from_secs(3600)).into();
        int_params.not_after = (now + Duration::from_secs(86400)).into();
        let int = int_params
            .signed_by(&int_key, &Issuer::from_params(&root_params, &root_key))
            .unwrap();
        Self {
            td: TrustDomain::new(td).unwrap(),
            root: root.der().clone(),
            int_params,
            int_key,
            int: int.der().clone(),
        }
    }

    fn id(&self, sa: &str) -> SpiffeId {
        SpiffeId::istio(&self.td, "default", sa).unwrap()
    }

    /// A leaf for `uri` shaped like ours, changed by `edit`; returns its key and chain.
    fn leaf(
        &self,
        uri: &str,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> (KeyPair, Vec<CertificateDer<'static>>) {
        let now = SystemTime::now();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = (now - Duration::from_secs(120)).into();
        params.not_after = (now + Duration::from_secs(3600)).into();
        edit(&mut params);
        let leaf = params
            .signed_by(&key, &Issuer::from_params(&self.int_params, &self.int_key))
            .unwrap();
        (key, vec![leaf.der().clone(), self.int.clone()])
    }

    fn svid(&self, sa: &str) -> Svid {
        let (key, chain) = self.leaf(self.id(sa).as_str(), |_| {});
        svid_of(key, chain)
    }

    fn bundle(&self) -> TrustBundle {
        TrustBundle::new(self.td.clone(), vec![self.root.clone()])
    }
}

fn svid_of(key: KeyPair, chain: Vec<CertificateDer<'static>>) -> Svid {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Svid::new(chain, key, SystemTime::now()).unwrap()
}

fn shared(bundles: impl IntoIterator<Item = TrustBundle>) -> SharedBundles {
    TrustBundleSet::from_bundles(bundles).unwrap().into_shared()
}

/// Runs both verifiers on a chain and returns the client verifier's verdict, after checking
/// that the server verifier agrees.
fn verdict(
    bundles: &SharedBundles,
    authorizer: Authorizer,
    chain: &[CertificateDer<'_>],
) -> Result<SpiffeId, VerifyError> {
    let now = unix_now();
    let as_client = MeshClientVerifier::new(
        bundles.clone(),
        ClientAuth::Required(authorizer.clone()),
    )
    .verify(&chain[0], &chain[1..], now);
    let as_server =
        MeshServerVerifier::new(bundles.clone(), authorizer).verify(&chain[0], &chain[1..], now);
    assert_eq!(as_client, as_server);
    as_client
}

#[test]
fn accepts_a_good_chain() {
    let a = Pki::new("a.mesh");
    let bundles = shared([a.bundle()]);
    let (_, chain) = a.leaf(a.id("web").as_str(), |_| {});
    assert_eq!(verdict(&bundles, Authorizer::Any, &chain), Ok(a.id("web")));
    assert_eq!(
        verdict(&bundles, Authorizer::ids([a.id("web")]), &chain),
        Ok(a.id("web"))
    );
    assert_eq!(
        verdict(&bundles, Authorizer::trust_domains([a.td.clone()]), &chain),
        Ok(a.id("web"))
    );
    assert_eq!(peer_identity(&chain), Ok(a.id("web")));
}

#[test]
fn rejects_each_bad_svid_with_its_reason() {
    let a = Pki::new("a.mesh");
    let b = Pki::new("b.mesh");
    let c = Pki::new("c.mesh");
    let bundles = shared([a.bundle(), b.bundle()]);
    let web = a.id("web");

    let (_, two_uris) = a.leaf(web.as_str(), |p| {
        p.subject_alt_names.push(SanType::URI(
            "spiffe://a.mesh/ns/default/sa/admin".try_into().unwrap(),
        ));
    });
    assert_eq!(
        verdict(&bundles, Authorizer::Any, &two_uris),
        Err(VerifyError::UriSanCount(2))
    );

    let (_, no_uri) = a.leaf(web.as_str(), |p| {
        p.subject_alt_names = vec![SanType::DnsName("web.default.svc".try_into().unwrap())];
    });
    assert_eq!(
        verdict(&bundles, Authorizer::Any, &no_uri),
        Err(VerifyError::UriSanCount(0))
    );

    let (_, malformed) = a.leaf("spiffe://A.mesh/ns/default/sa/web", |_| {});
    assert_eq!(
        verdict(&bundles, Authorizer::Any, &malformed),
        Err(VerifyError::MalformedId(
            SpiffeIdError::TrustDomainUppercase
        ))
    );

    let (_, td_only) = a.leaf("spiffe://a.mesh", |_| {});
    assert!(matches!(
        verdict(&bundles, Authorizer::Any, &td_only),
        Err(VerifyError::NotAWorkloadId(_))
    ));

    let (_, ca_leaf) = a.leaf(web.as_str(), |p| {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    });
    assert_eq!(
        verdict(&bundles, Authorizer::Any, &ca_leaf),
        Err(VerifyError::LeafIsCa)
    );

    let (_, cert_sign) = a.leaf(web.as_str(), |p| {
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
        ];
    });
    assert_eq!(
        verdict(&bundles, Authorizer::Any, &cert_sign),
        Err(VerifyError::LeafCanSign)
    );

    let (_, crl_sign) = a.leaf(web.as_str(), |p| {
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign];
    });
    assert_eq!(
        verdict(&bundles, Authorizer::Any, &crl_sign),
        Err(VerifyError::LeafCanSign)
    );

    let (_, no_ku) = a.leaf(web.as_str(), |p| p.key_usages = vec![]);
    assert_eq!(
        verdict(&bundles, Authorizer::Any, &no_ku),
        Err(VerifyError::LeafLacksDigitalSignature)
    );

    // An ID of trust domain A signed by B's CA: A's anchors are used, and they do not sign it.
    let (_, cross) = b.leaf(web.as_str(), |_| {});
    assert_eq!(
        verdict(&bundles, Authorizer::Any, &cross),
        Err(VerifyError::Chain(webpki::Error::UnknownIssuer))
    );

    let (_, unknown) = c.leaf(c.id("web").as_str(), |_| {});
    assert_eq!(
        verdict(&bundles, Authorizer::Any, &unknown),
        Err(VerifyError::UnknownTrustDomain(c.td.clone()))
    );

    let (_, good) = a.leaf(web.as_str(), |_| {});
    assert_eq!(
        verdict(&bundles, Authorizer::ids([a.id("api")]), &good),
        Err(VerifyError::NotAuthorized(web.clone()))
    );
    assert_eq!(
        verdict(&bundles, Authorizer::trust_domains([b.td.clone()]), &good),
        Err(VerifyError::NotAuthorized(web.clone()))
    );

    let (_, expired_leaf) = a.leaf(web.as_str(), |p| {
        p.not_after = (SystemTime::now() - Duration::from_secs(60)).into();
    });
    assert!(matches!(
        verdict(&bundles, Authorizer::Any, &expired_leaf),
        Err(VerifyError::Chain(webpki::Error::CertExpired { .. }))
    ));

    // A trust domain whose bundle has no roots distrusts all its SVIDs.
    let empty = shared([TrustBundle::new(a.td.clone(), vec![])]);
    assert_eq!(
        verdict(&empty, Authorizer::Any, &good),
        Err(VerifyError::EmptyBundle(a.td.clone()))
    );

    assert_eq!(
        verdict(
            &bundles,
            Authorizer::Any,
            &[CertificateDer::from(vec![1, 2, 3])]
        ),
        Err(VerifyError::BadEncoding)
    );
    assert_eq!(peer_identity(&[]), Err(VerifyError::NoCertificate));
}

#[test]
fn rejects_a_chain_to_an_expired_root() {
    let now = SystemTime::now();
    let expired = Pki::with_root_validity(
        "a.mesh",
        now - Duration::from_secs(30 * 86400),
        now - Duration::from_secs(86400),
    );
    let bundles = shared([expired.bundle()]);
    let (_, chain) = expired.leaf(expired.id("web").as_str(), |_| {});
    assert_eq!(
        verdict(&bundles, Authorizer::Any, &chain),
        Err(VerifyError::ExpiredRoot(expired.td.clone()))
    );
    // A bundle that also holds a current root of another CA still refuses the chain to the
    // expired root, and accepts the other CA's chains.
    let other = Pki::new("a.mesh");
    let both = shared([TrustBundle::new(
        expired.td.clone(),
        vec![expired.root.clone(), other.root.clone()],
    )]);
    assert_eq!(
        verdict(&both, Authorizer::Any, &chain),
        Err(VerifyError::ExpiredRoot(expired.td.clone()))
    );
    let (_, good) = other.leaf(other.id("web").as_str(), |_| {});
    assert_eq!(verdict(&both, Authorizer::Any, &good), Ok(other.id("web")));
}

#[test]
fn server_verifier_requires_server_auth_eku() {
    let a = Pki::new("a.mesh");
    let bundles = shared([a.bundle()]);
    let (_, client_only) = a.leaf(a.id("web").as_str(), |p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    });
    let now = unix_now();
    let server_side = MeshServerVerifier::new(bundles.clone(), Authorizer::Any).verify(
        &client_only[0],
        &client_only[1..],
        now,
    );
    assert!(
        matches!(server_side, Err(VerifyError::Chain(_))),
        "{server_side:?}"
    );
    let client_side = MeshClientVerifier::new(bundles, ClientAuth::Required(Authorizer::Any))
        .verify(&client_only[0], &client_only[1..], now);
    assert_eq!(client_side, Ok(a.id("web")));
}

#[test]
fn rustls_errors_carry_the_reason() {
    let unknown = VerifyError::UnknownTrustDomain(TrustDomain::new("x.mesh").unwrap());
    let error = unknown.to_rustls();
    assert_eq!(VerifyError::from_rustls(&error), Some(&unknown));
    assert_eq!(
        VerifyError::Chain(webpki::Error::UnknownIssuer).to_rustls(),
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
    );
    assert_eq!(
        VerifyError::BadEncoding.to_rustls(),
        rustls::Error::InvalidCertificate(CertificateError::BadEncoding)
    );
}

/// Which side of a handshake failed, and how.
#[derive(Debug)]
enum Failed {
    Client(rustls::Error),
    Server(rustls::Error),
}

/// Runs a TLS handshake between two in-memory connections.
fn handshake(
    client_config: ClientConfig,
    server_config: ServerConfig,
) -> Result<(ClientConnection, ServerConnection), Failed> {
    let name = ServerName::try_from("api.default.svc.cluster.local").unwrap();
    let mut client = ClientConnection::new(Arc::new(client_config), name).unwrap();
    let mut server = ServerConnection::new(Arc::new(server_config)).unwrap();
    for _ in 0..20 {
        let mut buf = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            server.read_tls(&mut buf.as_slice()).unwrap();
            server.process_new_packets().map_err(Failed::Server)?;
        }
        let mut buf = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            client.read_tls(&mut buf.as_slice()).unwrap();
            client.process_new_packets().map_err(Failed::Client)?;
        }
        if !client.is_handshaking() && !server.is_handshaking() {
            // Deliver anything left (the client's last flight in TLS 1.3).
            let mut buf = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut buf).unwrap();
            }
            if !buf.is_empty() {
                server.read_tls(&mut buf.as_slice()).unwrap();
                server.process_new_packets().map_err(Failed::Server)?;
            }
            return Ok((client, server));
        }
    }
    panic!("handshake did not finish");
}

fn configs(
    client: &Svid,
    server: &Svid,
    client_bundles: SharedBundles,
    server_bundles: SharedBundles,
    expected_server: Authorizer,
    client_auth: ClientAuth,
    alpn: &[&[u8]],
) -> (ClientConfig, ServerConfig) {
    let client_config = mesh_client_config(
        Arc::new(IdentityCell::new(client.clone())),
        client_bundles,
        expected_server,
        alpn,
    )
    .unwrap();
    let server_config = mesh_server_config(
        Arc::new(IdentityCell::new(server.clone())),
        server_bundles,
        client_auth,
        MESH_SERVER_ALPN,
    )
    .unwrap();
    (client_config, server_config)
}

#[test]
fn handshake_accepts_mesh_peers_both_ways() {
    let a = Pki::new("a.mesh");
    let b = Pki::new("b.mesh");
    let bundles = shared([a.bundle(), b.bundle()]);
    let web = a.svid("web");
    let api = b.svid("api");
    let (cc, sc) = configs(
        &web,
        &api,
        bundles.clone(),
        bundles.clone(),
        Authorizer::ids([b.id("api")]),
        ClientAuth::Required(Authorizer::Any),
        ISTIO_ALPN_H2,
    );
    let (client, server) = handshake(cc, sc).unwrap();
    assert_eq!(
        peer_identity(server.peer_certificates().unwrap()),
        Ok(a.id("web"))
    );
    assert_eq!(
        peer_identity(client.peer_certificates().unwrap()),
        Ok(b.id("api"))
    );
    assert_eq!(server.alpn_protocol(), Some(&b"h2"[..]));

    // A TCP client offers istio-peer-exchange first; the server picks plain "istio".
    let (cc, sc) = configs(
        &web,
        &api,
        bundles.clone(),
        bundles,
        Authorizer::Any,
        ClientAuth::Required(Authorizer::Any),
        ISTIO_ALPN_TCP,
    );
    let (_, server) = handshake(cc, sc).unwrap();
    assert_eq!(server.alpn_protocol(), Some(&b"istio"[..]));
}

#[test]
fn client_refuses_a_server_it_does_not_expect() {
    let a = Pki::new("a.mesh");
    let bundles = shared([a.bundle()]);
    let (cc, sc) = configs(
        &a.svid("web"),
        &a.svid("impostor"),
        bundles.clone(),
        bundles,
        Authorizer::ids([a.id("api")]),
        ClientAuth::Required(Authorizer::Any),
        ISTIO_ALPN_H2,
    );
    match handshake(cc, sc) {
        Err(Failed::Client(e)) => assert_eq!(
            VerifyError::from_rustls(&e),
            Some(&VerifyError::NotAuthorized(a.id("impostor")))
        ),
        other => panic!("expected the client to refuse: {other:?}"),
    }
}

#[test]
fn server_refuses_clients_it_cannot_verify() {
    let a = Pki::new("a.mesh");
    let b = Pki::new("b.mesh");
    let server_bundles = shared([a.bundle(), b.bundle()]);
    let client_bundles = shared([a.bundle()]);

    // A client claiming an ID of A with a certificate from B's CA.
    let (key, chain) = b.leaf(a.id("web").as_str(), |_| {});
    let (cc, sc) = configs(
        &svid_of(key, chain),
        &a.svid("api"),
        client_bundles.clone(),
        server_bundles.clone(),
        Authorizer::Any,
        ClientAuth::Required(Authorizer::Any),
        ISTIO_ALPN_H2,
    );
    match handshake(cc, sc) {
        Err(Failed::Server(e)) => assert_eq!(
            e,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        ),
        other => panic!("expected the server to refuse: {other:?}"),
    }

    // A client whose leaf is a CA.
    let (key, chain) = a.leaf(a.id("web").as_str(), |p| {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    });
    let (cc, sc) = configs(
        &svid_of(key, chain),
        &a.svid("api"),
        client_bundles.clone(),
        server_bundles.clone(),
        Authorizer::Any,
        ClientAuth::Required(Authorizer::Any),
        ISTIO_ALPN_H2,
    );
    match handshake(cc, sc) {
        Err(Failed::Server(e)) => {
            assert_eq!(VerifyError::from_rustls(&e), Some(&VerifyError::LeafIsCa))
        }
        other => panic!("expected the server to refuse: {other:?}"),
    }

    // A valid client the server's authorizer does not admit.
    let (cc, sc) = configs(
        &b.svid("web"),
        &a.svid("api"),
        shared([a.bundle(), b.bundle()]),
        server_bundles.clone(),
        Authorizer::Any,
        ClientAuth::Required(Authorizer::trust_domains([a.td.clone()])),
        ISTIO_ALPN_H2,
    );
    match handshake(cc, sc) {
        Err(Failed::Server(e)) => assert_eq!(
            VerifyError::from_rustls(&e),
            Some(&VerifyError::NotAuthorized(b.id("web")))
        ),
        other => panic!("expected the server to refuse: {other:?}"),
    }
}

#[test]
fn client_certificate_is_required_or_optional_as_configured() {
    let a = Pki::new("a.mesh");
    let bundles = shared([a.bundle()]);
    let no_identity = |auth: ClientAuth| {
        let cc = mesh_client_config(
            Arc::new(IdentityCell::empty()),
            bundles.clone(),
            Authorizer::Any,
            ISTIO_ALPN_H2,
        )
        .unwrap();
        let sc = mesh_server_config(
            Arc::new(IdentityCell::new(a.svid("api"))),
            bundles.clone(),
            auth,
            MESH_SERVER_ALPN,
        )
        .unwrap();
        handshake(cc, sc)
    };
    match no_identity(ClientAuth::Required(Authorizer::Any)) {
        Err(Failed::Server(rustls::Error::NoCertificatesPresented)) => {}
        other => panic!("expected the server to require a certificate: {other:?}"),
    }
    let (_, server) = no_identity(ClientAuth::Optional(Authorizer::Any)).unwrap();
    assert!(server.peer_certificates().is_none());
}

#[test]
fn a_new_bundle_reaches_the_next_handshake_without_new_configs() {
    let a = Pki::new("a.mesh");
    let b = Pki::new("b.mesh");
    let server_bundles = shared([a.bundle()]);
    let client_bundles = shared([a.bundle(), b.bundle()]);
    let cc = Arc::new(
        mesh_client_config(
            Arc::new(IdentityCell::new(b.svid("web"))),
            client_bundles,
            Authorizer::Any,
            ISTIO_ALPN_H2,
        )
        .unwrap(),
    );
    let sc = Arc::new(
        mesh_server_config(
            Arc::new(IdentityCell::new(a.svid("api"))),
            server_bundles.clone(),
            ClientAuth::Required(Authorizer::Any),
            MESH_SERVER_ALPN,
        )
        .unwrap(),
    );
    match handshake((*cc).clone(), (*sc).clone()) {
        Err(Failed::Server(e)) => assert_eq!(
            VerifyError::from_rustls(&e),
            Some(&VerifyError::UnknownTrustDomain(b.td.clone()))
        ),
        other => panic!("expected an unknown trust domain: {other:?}"),
    }
    // Federate with B: swap the set in place.
    let mut next = TrustBundleSet::clone(&server_bundles.load());
    next.insert(b.bundle()).unwrap();
    server_bundles.store(Arc::new(next));
    let (_, server) = handshake((*cc).clone(), (*sc).clone()).unwrap();
    assert_eq!(
        peer_identity(server.peer_certificates().unwrap()),
        Ok(b.id("web"))
    );
}

#[test]
fn tls12_handshake_verifies_signatures_through_the_mesh_verifiers() {
    let a = Pki::new("a.mesh");
    let bundles = shared([a.bundle()]);
    // A client limited to TLS 1.2, with the same verifier the mesh client config uses.
    let cc = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(MeshServerVerifier::new(
        bundles.clone(),
        Authorizer::ids([a.id("api")]),
    )))
    .with_client_cert_resolver(Arc::new(IdentityCell::new(a.svid("web"))));
    let sc = mesh_server_config(
        Arc::new(IdentityCell::new(a.svid("api"))),
        bundles,
        ClientAuth::Required(Authorizer::Any),
        MESH_SERVER_ALPN,
    )
    .unwrap();
    let (client, server) = handshake(cc, sc).unwrap();
    assert_eq!(
        client.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(
        peer_identity(server.peer_certificates().unwrap()),
        Ok(a.id("web"))
    );
}

#[test]
fn an_observer_hears_of_chains_to_no_root_held_with_the_leaf_s_trust_domain() {
    let a = Pki::new("a.mesh");
    // The same trust domain after a rotation: certificates of the same names, other keys.
    let a_next = Pki::new("a.mesh");
    let b = Pki::new("b.mesh");
    let c = Pki::new("c.mesh");
    let bundles = shared([a.bundle(), b.bundle()]);
    let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
    let observer = {
        let heard = heard.clone();
        UnknownIssuerObserver::new(move |td: &TrustDomain| heard.lock().unwrap().push(td.clone()))
    };
    let client_side =
        MeshClientVerifier::new(bundles.clone(), ClientAuth::Required(Authorizer::Any))
            .observing_unknown_issuers(Some(observer.clone()));
    let server_side = MeshServerVerifier::new(bundles.clone(), Authorizer::Any)
        .observing_unknown_issuers(Some(observer));
    let both = |chain: &[CertificateDer<'_>]| {
        let now = unix_now();
        let as_client = client_side.verify(&chain[0], &chain[1..], now);
        let as_server = server_side.verify(&chain[0], &chain[1..], now);
        assert_eq!(as_client, as_server);
        as_client
    };
    let take = || std::mem::take(&mut *heard.lock().unwrap());

    // A's new root signs it: a root of A's name, held with another key.
    let (_, rotated) = a_next.leaf(a.id("web").as_str(), |_| {});
    assert!(both(&rotated).unwrap_err().chains_to_no_root_held());
    assert_eq!(take(), [a.td.clone(), a.td.clone()]);

    // B's CA signs an ID of A: no root of that name among A's.
    let (_, cross) = b.leaf(a.id("web").as_str(), |_| {});
    assert_eq!(
        both(&cross),
        Err(VerifyError::Chain(webpki::Error::UnknownIssuer))
    );
    assert_eq!(take(), [a.td.clone(), a.td.clone()]);

    // Verified chains, other refusals and trust domains without a bundle are not its business.
    let (_, good) = a.leaf(a.id("web").as_str(), |_| {});
    assert!(both(&good).is_ok());
    let (_, ca_leaf) = a_next.leaf(a.id("web").as_str(), |p| {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    });
    assert_eq!(both(&ca_leaf), Err(VerifyError::LeafIsCa));
    let (_, unknown) = c.leaf(c.id("web").as_str(), |_| {});
    assert_eq!(
        both(&unknown),
        Err(VerifyError::UnknownTrustDomain(c.td.clone()))
    );
    assert_eq!(take(), Vec::<TrustDomain>::new());
}
