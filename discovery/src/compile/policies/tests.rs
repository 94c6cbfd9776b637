//! Which policies reach a workload, how their values are expanded, and PeerAuthentication
//! precedence.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use strait_proxy::authz::{Attributes, Protocol, evaluate};
use strait_proxy::snapshot::{MtlsMode, PathNormalization, Policies};

use super::{Workload, compile};
use crate::findings::Finding;
use crate::resources::{LoadOptions, Loaded, Object, load_text};

fn load(files: &[(&str, &str)]) -> Vec<Object> {
    let mut loaded = Loaded::default();
    for (name, yaml) in files {
        load_text(
            &Arc::from(*name),
            yaml,
            &LoadOptions::default(),
            &mut loaded,
        );
    }
    assert!(loaded.findings.is_empty(), "{:?}", loaded.findings);
    loaded.objects
}

fn policies_for(
    files: &[(&str, &str)],
    namespace: &str,
    labels: &[(&str, &str)],
) -> (Policies, Vec<Finding>) {
    let objects = load(files);
    let refs: Vec<&Object> = objects.iter().collect();
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let mut findings = Vec::new();
    let policies = compile(
        &refs,
        Workload {
            namespace,
            labels: &labels,
        },
        &mut findings,
    );
    (policies, findings)
}

fn names(policies: &[strait_proxy::snapshot::AuthorizationPolicy]) -> Vec<&str> {
    policies.iter().map(|p| p.name.as_str()).collect()
}

fn authz(namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec}"
    )
}

const INGRESS: &[(&str, &str)] = &[("istio", "ingressgateway")];

#[test]
fn scope_is_root_namespace_namespace_and_selector() {
    let files = [
        (
            "root.yaml",
            authz(
                "istio-system",
                "mesh-deny",
                "  action: DENY\n  rules: [{}]\n",
            ),
        ),
        ("own.yaml", authz("gw", "ns-allow", "  rules: [{}]\n")),
        (
            "selected.yaml",
            authz(
                "gw",
                "for-ingress",
                "  selector: {matchLabels: {istio: ingressgateway}}\n  action: AUDIT\n  rules: [{}]\n",
            ),
        ),
        (
            "other-selector.yaml",
            authz(
                "gw",
                "for-egress",
                "  selector: {matchLabels: {istio: egressgateway}}\n  action: DENY\n  rules: [{}]\n",
            ),
        ),
        (
            "other-ns.yaml",
            authz("shop", "shop-deny", "  action: DENY\n  rules: [{}]\n"),
        ),
        (
            "root-selector.yaml",
            authz(
                "istio-system",
                "root-ingress",
                "  selector: {matchLabels: {istio: ingressgateway}}\n  action: CUSTOM\n  provider: {name: ext}\n  rules: [{}]\n",
            ),
        ),
    ];
    let files: Vec<(&str, &str)> = files.iter().map(|(n, y)| (*n, y.as_str())).collect();
    let (policies, findings) = policies_for(&files, "gw", INGRESS);
    assert!(findings.is_empty(), "{findings:?}");
    assert_eq!(names(&policies.deny), ["istio-system/mesh-deny"]);
    assert_eq!(names(&policies.allow), ["gw/ns-allow"]);
    assert_eq!(names(&policies.audit), ["gw/for-ingress"]);
    assert_eq!(names(&policies.custom), ["istio-system/root-ingress"]);

    // The same objects for a workload in shop with other labels.
    let (shop, _) = policies_for(&files, "shop", &[("app", "web")]);
    assert_eq!(
        names(&shop.deny),
        ["istio-system/mesh-deny", "shop/shop-deny"]
    );
    assert!(shop.allow.is_empty() && shop.audit.is_empty() && shop.custom.is_empty());
}

#[test]
fn root_namespace_follows_mesh_config() {
    let mesh = "rootNamespace: mesh-root\n";
    let files = [
        ("mesh.yaml", mesh.to_owned()),
        (
            "a.yaml",
            authz("mesh-root", "root-deny", "  action: DENY\n  rules: [{}]\n"),
        ),
        (
            "b.yaml",
            authz(
                "istio-system",
                "old-root",
                "  action: DENY\n  rules: [{}]\n",
            ),
        ),
    ];
    let files: Vec<(&str, &str)> = files.iter().map(|(n, y)| (*n, y.as_str())).collect();
    let (policies, _) = policies_for(&files, "gw", INGRESS);
    assert_eq!(names(&policies.deny), ["mesh-root/root-deny"]);
}

#[test]
fn allow_nothing_and_allow_all_keep_their_meaning() {
    let files = [
        ("a.yaml", authz("gw", "nothing", "  {}\n")),
        ("b.yaml", authz("gw", "all", "  rules: [{}]\n")),
    ];
    let files: Vec<(&str, &str)> = files.iter().map(|(n, y)| (*n, y.as_str())).collect();
    let (policies, _) = policies_for(&files, "gw", INGRESS);
    let nothing = policies
        .allow
        .iter()
        .find(|p| p.name == "gw/nothing")
        .unwrap();
    assert!(nothing.rules.is_empty());
    let all = policies.allow.iter().find(|p| p.name == "gw/all").unwrap();
    assert_eq!(all.rules.len(), 1);
}

fn http_request<'a>(principal: Option<&'a str>, path: &'a str) -> Attributes<'a> {
    let destination: SocketAddr = "10.0.0.9:8080".parse().unwrap();
    Attributes {
        source_principal: principal,
        path: Some(path),
        method: Some("GET"),
        host: Some("shop.example.com"),
        ..Attributes::connection(Protocol::Http, "10.0.0.1".parse().unwrap(), destination)
    }
}

#[test]
fn cluster_local_principals_cover_the_trust_domain_and_its_aliases() {
    let mesh = "trustDomain: east.mesh\ntrustDomainAliases: [old.mesh]\n";
    let policy = authz(
        "gw",
        "by-principal",
        "  rules:\n  - from:\n    - source: {principals: [cluster.local/ns/shop/sa/web]}\n",
    );
    let files = [("mesh.yaml", mesh), ("p.yaml", policy.as_str())];
    let (policies, _) = policies_for(&files, "gw", INGRESS);
    let allowed =
        |principal: &str| evaluate(&policies, &http_request(Some(principal), "/")).allowed;
    assert!(allowed("spiffe://east.mesh/ns/shop/sa/web"));
    assert!(allowed("spiffe://old.mesh/ns/shop/sa/web"));
    assert!(!allowed("spiffe://west.mesh/ns/shop/sa/web"));
    assert!(
        !allowed("spiffe://cluster.local/ns/shop/sa/web"),
        "cluster.local is not this mesh's name"
    );
    assert!(!allowed("spiffe://east.mesh/ns/shop/sa/other"));

    // An alias written in the policy stands for the local domain too.
    let by_alias = authz(
        "gw",
        "by-alias",
        "  rules:\n  - from:\n    - source: {principals: [old.mesh/ns/shop/*], trustDomains: [cluster.local]}\n",
    );
    let files = [("mesh.yaml", mesh), ("p.yaml", by_alias.as_str())];
    let (policies, _) = policies_for(&files, "gw", INGRESS);
    let allowed =
        |principal: &str| evaluate(&policies, &http_request(Some(principal), "/")).allowed;
    assert!(allowed("spiffe://east.mesh/ns/shop/sa/any"));
    assert!(!allowed("spiffe://west.mesh/ns/shop/sa/any"));
}

#[test]
fn namespaces_and_service_accounts() {
    let policy = authz(
        "shop",
        "ns",
        "  rules:\n  - from:\n    - source: {namespaces: [payments]}\n    - source: {serviceAccounts: [web]}\n",
    );
    let (policies, _) = policies_for(&[("p.yaml", policy.as_str())], "shop", &[]);
    let allowed =
        |principal: &str| evaluate(&policies, &http_request(Some(principal), "/")).allowed;
    assert!(allowed("spiffe://cluster.local/ns/payments/sa/a"));
    assert!(
        allowed("spiffe://west.mesh/ns/payments/sa/a"),
        "namespaces match any trust domain"
    );
    assert!(
        allowed("spiffe://cluster.local/ns/shop/sa/web"),
        "a bare service account is the policy's namespace"
    );
    assert!(!allowed("spiffe://cluster.local/ns/other/sa/web"));
}

#[test]
fn path_normalization_comes_from_mesh_config() {
    let (default, _) = policies_for(&[], "gw", INGRESS);
    assert_eq!(default.path_normalization, PathNormalization::Base);
    let mesh = "pathNormalization: {normalization: DECODE_AND_MERGE_SLASHES}\n";
    let (decoded, _) = policies_for(&[("mesh.yaml", mesh)], "gw", INGRESS);
    assert_eq!(
        decoded.path_normalization,
        PathNormalization::DecodeAndMergeSlashes
    );
}

#[test]
fn unsupported_parts_fail_closed_and_are_reported() {
    let deny = authz(
        "gw",
        "deny-mysql",
        "  action: DENY\n  rules:\n  - when:\n    - key: experimental.envoy.filters.network.mysql_proxy[db.table]\n      values: [\"[update]\"]\n",
    );
    let allow = authz(
        "gw",
        "allow-mysql",
        "  rules:\n  - when:\n    - key: experimental.envoy.filters.network.mysql_proxy[db.table]\n      values: [\"[select]\"]\n",
    );
    let target = authz(
        "gw",
        "targeted",
        "  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]\n  action: DENY\n  rules: [{}]\n",
    );
    let files = [
        ("d.yaml", deny.as_str()),
        ("a.yaml", allow.as_str()),
        ("t.yaml", target.as_str()),
    ];
    let (policies, findings) = policies_for(&files, "gw", INGRESS);
    let deny = &policies.deny;
    assert_eq!(
        names(deny),
        ["gw/deny-mysql"],
        "the targetRefs policy is left out"
    );
    assert_eq!(deny[0].rules.len(), 1);
    assert!(
        !evaluate(&policies, &http_request(None, "/")).allowed,
        "DENY fails closed"
    );
    assert!(policies.allow[0].rules.is_empty(), "ALLOW drops the rule");
    let text: Vec<String> = findings.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|f| f.contains("experimental.envoy.filters") && f.contains("fails closed")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|f| f.contains("matches nothing")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|f| f.contains("targetRefs is not supported")),
        "{text:?}"
    );
}

fn peer_auth(namespace: &str, name: &str, created: Option<&str>, spec: &str) -> String {
    let created = created
        .map(|c| format!(", creationTimestamp: \"{c}\""))
        .unwrap_or_default();
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {namespace}{created}}}\nspec:\n{spec}"
    )
}

fn peer_for(
    files: &[String],
    namespace: &str,
    labels: &[(&str, &str)],
) -> strait_proxy::snapshot::PeerAuthentication {
    let named: Vec<(String, &str)> = files
        .iter()
        .enumerate()
        .map(|(i, y)| (format!("pa{i}.yaml"), y.as_str()))
        .collect();
    let files: Vec<(&str, &str)> = named.iter().map(|(n, y)| (n.as_str(), *y)).collect();
    policies_for(&files, namespace, labels)
        .0
        .peer_authentication
}

#[test]
fn peer_authentication_narrowest_wins_and_unset_inherits() {
    let mesh = peer_auth("istio-system", "mesh", None, "  mtls: {mode: STRICT}\n");
    let namespace = peer_auth("shop", "ns", None, "  mtls: {mode: PERMISSIVE}\n");
    let workload = peer_auth(
        "shop",
        "web",
        None,
        "  selector: {matchLabels: {app: web}}\n  mtls: {mode: DISABLE}\n",
    );
    let unset_workload = peer_auth(
        "shop",
        "web",
        None,
        "  selector: {matchLabels: {app: web}}\n  mtls: {mode: UNSET}\n  portLevelMtls:\n    \"8080\": {mode: STRICT}\n    \"9090\": {mode: UNSET}\n",
    );
    let web = &[("app", "web")];
    assert_eq!(
        peer_for(&[], "shop", web).mode,
        MtlsMode::Permissive,
        "nothing: PERMISSIVE"
    );
    assert_eq!(
        peer_for(std::slice::from_ref(&mesh), "shop", web).mode,
        MtlsMode::Strict
    );
    assert_eq!(
        peer_for(&[mesh.clone(), namespace.clone()], "shop", web).mode,
        MtlsMode::Permissive
    );
    let all = peer_for(&[mesh.clone(), namespace.clone(), workload], "shop", web);
    assert_eq!(all.mode, MtlsMode::Disable);
    assert_eq!(all.sources, ["istio-system/mesh", "shop/ns", "shop/web"]);
    assert_eq!(
        peer_for(&[mesh.clone(), namespace.clone()], "shop", &[("app", "db")]).mode,
        MtlsMode::Permissive
    );

    // UNSET at the workload inherits the namespace's; port-level UNSET inherits the workload's.
    let ports = peer_for(&[mesh.clone(), unset_workload.clone()], "shop", web);
    assert_eq!(ports.mode, MtlsMode::Strict);
    assert_eq!(ports.mode_for(8080), MtlsMode::Strict);
    assert_eq!(ports.mode_for(9090), MtlsMode::Strict);
    let permissive_ns = peer_for(&[mesh, namespace, unset_workload], "shop", web);
    assert_eq!(permissive_ns.mode, MtlsMode::Permissive);
    assert_eq!(permissive_ns.mode_for(8080), MtlsMode::Strict);
    assert_eq!(permissive_ns.mode_for(9090), MtlsMode::Permissive);
    assert_eq!(permissive_ns.mode_for(7070), MtlsMode::Permissive);
}

#[test]
fn peer_authentication_ties_go_to_the_oldest_else_the_first_by_name() {
    let older = peer_auth(
        "shop",
        "b-older",
        Some("2024-01-01T00:00:00Z"),
        "  mtls: {mode: STRICT}\n",
    );
    let newer = peer_auth(
        "shop",
        "a-newer",
        Some("2025-01-01T00:00:00Z"),
        "  mtls: {mode: DISABLE}\n",
    );
    let chosen = peer_for(&[newer.clone(), older], "shop", &[]);
    assert_eq!(chosen.mode, MtlsMode::Strict);
    assert_eq!(chosen.sources, ["shop/b-older"]);

    let untimed = peer_auth("shop", "z-untimed", None, "  mtls: {mode: STRICT}\n");
    let chosen = peer_for(&[untimed, newer], "shop", &[]);
    assert_eq!(
        chosen.sources,
        ["shop/a-newer"],
        "without times for all: first by name"
    );
    assert_eq!(chosen.mode, MtlsMode::Disable);

    let w1 = peer_auth(
        "shop",
        "w1",
        Some("2024-06-01T00:00:00Z"),
        "  selector: {matchLabels: {app: web}}\n  mtls: {mode: DISABLE}\n",
    );
    let w2 = peer_auth(
        "shop",
        "w2",
        Some("2024-03-01T00:00:00Z"),
        "  selector: {matchLabels: {tier: front}}\n  mtls: {mode: STRICT}\n",
    );
    let chosen = peer_for(&[w1, w2], "shop", &[("app", "web"), ("tier", "front")]);
    assert_eq!(chosen.sources, ["shop/w2"]);
    assert_eq!(chosen.mode, MtlsMode::Strict);
}

fn request_authentication(namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec}"
    )
}

#[test]
fn request_authentications_are_selected_and_their_rules_combined() {
    use std::time::Duration;
    use strait_proxy::snapshot::{ClaimToHeader, JwksSource, TokenLocation};

    let files = [
        (
            "mesh.yaml",
            request_authentication(
                "istio-system",
                "mesh",
                "  jwtRules:\n  - issuer: https://idp.example.com\n    jwksUri: http://idp.example.com/jwks\n",
            ),
        ),
        (
            "ingress.yaml",
            request_authentication(
                "gw",
                "ingress",
                r#"  selector: {matchLabels: {istio: ingressgateway}}
  jwtRules:
  - issuer: partner
    audiences: [shop]
    jwks: '{"keys": []}'
    fromHeaders: [{name: X-Partner-Token, prefix: "Token "}]
    fromParams: [token]
    fromCookies: [session]
    forwardOriginalToken: true
    outputPayloadToHeader: X-Payload
    outputClaimToHeaders: [{header: X-Team, claim: org.team}]
    timeout: 2s
"#,
            ),
        ),
        (
            "other.yaml",
            request_authentication(
                "shop",
                "other-namespace",
                "  jwtRules:\n  - issuer: nobody\n    jwks: '{\"keys\": []}'\n",
            ),
        ),
        (
            "unselected.yaml",
            request_authentication(
                "gw",
                "for-web",
                "  selector: {matchLabels: {app: web}}\n  jwtRules:\n  - issuer: web\n    jwks: '{\"keys\": []}'\n",
            ),
        ),
    ];
    let files: Vec<(&str, &str)> = files.iter().map(|(n, y)| (*n, y.as_str())).collect();
    let (policies, findings) = policies_for(&files, "gw", INGRESS);
    assert!(findings.is_empty(), "{findings:?}");
    let issuers: Vec<Option<&str>> = policies
        .jwt_rules
        .iter()
        .map(|r| r.issuer.as_deref())
        .collect();
    assert_eq!(issuers, [Some("partner"), Some("https://idp.example.com")]);

    let partner = &policies.jwt_rules[0];
    assert_eq!(partner.policy, "gw/ingress");
    assert_eq!(partner.audiences, ["shop"]);
    assert_eq!(partner.jwks, JwksSource::Inline(r#"{"keys": []}"#.into()));
    assert_eq!(
        partner.locations,
        [
            TokenLocation::Header {
                name: "x-partner-token".into(),
                prefix: "Token ".into()
            },
            TokenLocation::Param("token".into()),
            TokenLocation::Cookie("session".into()),
        ]
    );
    assert!(partner.forward_original_token);
    assert_eq!(
        partner.output_payload_to_header.as_deref(),
        Some("x-payload")
    );
    assert_eq!(
        partner.output_claim_to_headers,
        [ClaimToHeader {
            header: "x-team".into(),
            claim: "org.team".into()
        }]
    );
    assert_eq!(partner.fetch_timeout, Duration::from_secs(2));

    let mesh = &policies.jwt_rules[1];
    assert_eq!(mesh.locations, TokenLocation::defaults());
    assert_eq!(
        mesh.jwks,
        JwksSource::Uri("http://idp.example.com/jwks".into())
    );
    assert!(!mesh.forward_original_token);
    assert_eq!(mesh.fetch_timeout, Duration::from_secs(5));
}

#[test]
fn request_authentications_by_target_ref_or_without_keys_are_reported() {
    let files = [
        (
            "target.yaml",
            request_authentication(
                "gw",
                "by-target",
                "  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: edge}]\n  jwtRules:\n  - issuer: a\n    jwks: '{\"keys\": []}'\n",
            ),
        ),
        (
            "discovery.yaml",
            request_authentication(
                "gw",
                "discovery",
                "  jwtRules:\n  - issuer: https://a.example.com\n",
            ),
        ),
    ];
    let files: Vec<(&str, &str)> = files.iter().map(|(n, y)| (*n, y.as_str())).collect();
    let (policies, findings) = policies_for(&files, "gw", INGRESS);
    assert!(policies.jwt_rules.is_empty());
    let text = format!("{findings:?}");
    assert!(text.contains("targetRefs is not supported"), "{text}");
    assert!(text.contains("neither jwks nor jwksUri"), "{text}");
}
