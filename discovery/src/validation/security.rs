//! PeerAuthentication, AuthorizationPolicy and RequestAuthentication rules.

use super::check::Check;
use super::rules;
use crate::resources::common::{PolicyTargetReference, WorkloadSelector};
use crate::resources::security::{
    AuthorizationAction, AuthorizationPolicy, Condition, JwtRule, Operation, PeerAuthentication,
    RequestAuthentication, Rule, Source, is_set,
};
use crate::yaml::{self, FieldPath, Value};

pub(crate) fn validate_peer_authentication(
    check: &mut Check<'_>,
    spec: &FieldPath,
    policy: &PeerAuthentication,
) {
    rules::workload_selector(check, &spec.field("selector"), &policy.selector);
    let Some(ports) = &policy.port_level_mtls else {
        return;
    };
    let path = spec.field("portLevelMtls");
    let has_labels = policy
        .selector
        .as_ref()
        .and_then(|s| s.match_labels.as_ref())
        .is_some_and(|l| !l.is_empty());
    if !has_labels {
        check.error(
            spec,
            "conflict",
            "portLevelMtls requires selector: mesh-wide and namespace-wide policies cannot set \
             port-level mTLS",
        );
    }
    if ports.is_empty() {
        check.error(&path, "required", "should have at least 1 properties");
    }
    for port in ports.keys() {
        let at = path.key(port);
        match port.parse::<u64>() {
            Err(_) => check.error(
                &at,
                "wrong-type",
                format!("type conversion error from string {port:?} to port number"),
            ),
            Ok(number) if number == 0 || number > 65535 => {
                check.error(&at, "invalid-port", "port must be between 1-65535")
            }
            Ok(_) => {}
        }
    }
}

/// `selector`, `targetRef` and `targetRefs` are alternatives.
fn attachment(
    check: &mut Check<'_>,
    spec: &FieldPath,
    selector: &Option<WorkloadSelector>,
    target_ref: &Option<PolicyTargetReference>,
    target_refs: &Option<Vec<PolicyTargetReference>>,
) {
    check.exclusive(
        spec,
        &[
            ("selector", selector.is_some()),
            ("targetRef", target_ref.is_some()),
            ("targetRefs", target_refs.is_some()),
        ],
        "only one of targetRefs or selector can be set",
    );
    rules::workload_selector(check, &spec.field("selector"), selector);
    if let Some(reference) = target_ref {
        policy_target(check, &spec.field("targetRef"), reference);
    }
    if let Some(references) = target_refs {
        let path = spec.field("targetRefs");
        if references.len() > 16 {
            check.error(&path, "out-of-range", "must have at most 16 items");
        }
        for (i, reference) in references.iter().enumerate() {
            policy_target(check, &path.index(i), reference);
        }
    }
}

/// What a policy may attach to.
const TARGET_KINDS: &[(&str, &str)] = &[
    ("", "Service"),
    ("core", "Service"),
    ("networking.istio.io", "ServiceEntry"),
    ("gateway.networking.k8s.io", "Gateway"),
    ("gateway.networking.k8s.io", "GatewayClass"),
];

fn policy_target(check: &mut Check<'_>, path: &FieldPath, reference: &PolicyTargetReference) {
    let group = reference.group.as_deref().unwrap_or("");
    let group_ok = group.is_empty()
        || (group.len() <= 253
            && group.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            }));
    if !group_ok {
        check.error(
            &path.field("group"),
            "invalid-value",
            format!(
                "Invalid value: {group:?}: should match a DNS subdomain (or be empty for core)"
            ),
        );
    }
    match reference.kind.as_deref() {
        None => check.required(&path.field("kind")),
        Some(kind) => {
            let kind_ok = kind.len() <= 63
                && kind.starts_with(|c: char| c.is_ascii_alphabetic())
                && !kind.ends_with('-')
                && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !kind_ok {
                check.error(
                    &path.field("kind"),
                    "invalid-value",
                    format!("Invalid value: {kind:?}: should match '^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$'"),
                );
            } else if group_ok && !TARGET_KINDS.contains(&(group, kind)) {
                check.error(
                    path,
                    "unsupported-value",
                    format!(
                        "targetRef must be to a Service, ServiceEntry, Gateway or GatewayClass, but \
                         was {group}/{kind}"
                    ),
                );
            }
        }
    }
    match reference.name.as_deref() {
        None => check.required(&path.field("name")),
        Some("") => check.error(
            &path.field("name"),
            "required",
            "should be at least 1 chars long",
        ),
        Some(_) => {}
    }
    if reference
        .namespace
        .as_deref()
        .is_some_and(|n| !n.is_empty())
    {
        check.error(
            &path.field("namespace"),
            "unsupported-value",
            "cross namespace referencing is not currently supported",
        );
    }
}

pub(crate) fn validate_authorization_policy(
    check: &mut Check<'_>,
    spec: &FieldPath,
    policy: &AuthorizationPolicy,
) {
    attachment(
        check,
        spec,
        &policy.selector,
        &policy.target_ref,
        &policy.target_refs,
    );
    let action = policy.action.unwrap_or_default();
    let rules_list = policy.rules.as_deref().unwrap_or_default();
    let rules_path = spec.field("rules");
    match action {
        AuthorizationAction::Custom => {
            if rules_list.is_empty() {
                check.error(
                    &rules_path,
                    "required",
                    "CUSTOM action without rules is never triggered: add an empty rule {} to apply \
                     it to every request",
                );
            } else if policy.provider.as_ref().and_then(|p| p.name.as_deref()).is_none_or(str::is_empty) {
                check.error(&spec.field("provider").field("name"), "required", "provider.name must not be empty");
            }
        }
        AuthorizationAction::Deny if rules_list.is_empty() => check.error(
            &rules_path,
            "required",
            "DENY action without rules is never triggered: add an empty rule {} to deny every request",
        ),
        _ => {}
    }
    if action != AuthorizationAction::Custom && policy.provider.is_some() {
        check.error(
            &spec.field("provider"),
            "conflict",
            "provider must only be set with the CUSTOM action",
        );
    }
    if rules_list.len() > 512 {
        check.error(&rules_path, "out-of-range", "must have at most 512 items");
    }
    for (i, rule) in rules_list.iter().enumerate() {
        let at = rules_path.index(i);
        authorization_rule(check, &at, rule, action);
        if action == AuthorizationAction::Deny && only_http_attributes(rule) {
            check.warning(
                &at,
                "deny-tcp",
                "this DENY rule uses only HTTP attributes, so on TCP ports it matches every \
                 connection and denies all TCP traffic in its scope; add `ports` to scope it",
            );
        }
    }
}

/// A DENY rule whose conditions are all HTTP-only matches every TCP connection (the HTTP
/// conditions cannot be evaluated and are dropped).
fn only_http_attributes(rule: &Rule) -> bool {
    /// Source fields a TCP connection can be judged by (the rest need HTTP).
    const TCP_SOURCE: &[&str] = &[
        "principals",
        "notPrincipals",
        "namespaces",
        "notNamespaces",
        "serviceAccounts",
        "notServiceAccounts",
        "ipBlocks",
        "notIpBlocks",
        "remoteIpBlocks",
        "notRemoteIpBlocks",
        "trustDomains",
        "notTrustDomains",
    ];
    let sources: Vec<&Source> = rule.from.iter().filter_map(|f| f.source.as_ref()).collect();
    let operations: Vec<&Operation> = rule
        .to
        .iter()
        .filter_map(|t| t.operation.as_ref())
        .collect();
    let tcp_source = sources.iter().any(|s| {
        s.fields()
            .into_iter()
            .any(|(name, list)| TCP_SOURCE.contains(&name) && is_set(list))
    });
    let tcp_operation = operations
        .iter()
        .any(|o| is_set(&o.ports) || is_set(&o.not_ports));
    (!sources.is_empty() && operations.is_empty() && !tcp_source)
        || (!operations.is_empty() && !tcp_operation)
}

fn authorization_rule(
    check: &mut Check<'_>,
    path: &FieldPath,
    rule: &Rule,
    action: AuthorizationAction,
) {
    let from = path.field("from");
    if rule.from.len() > 512 {
        check.error(&from, "out-of-range", "must have at most 512 items");
    }
    for (i, entry) in rule.from.iter().enumerate() {
        let at = from.index(i);
        match &entry.source {
            None => check.required(&at.field("source")),
            Some(source) => rule_source(check, &at.field("source"), source, action),
        }
    }
    let to = path.field("to");
    for (i, entry) in rule.to.iter().enumerate() {
        let at = to.index(i);
        match &entry.operation {
            None => check.required(&at.field("operation")),
            Some(operation) => rule_operation(check, &at.field("operation"), operation),
        }
    }
    let when = path.field("when");
    for (i, condition) in rule.when.iter().enumerate() {
        rule_condition(check, &when.index(i), condition, action);
    }
}

fn rule_source(
    check: &mut Check<'_>,
    path: &FieldPath,
    source: &Source,
    action: AuthorizationAction,
) {
    let lists = source.fields();
    if !lists.iter().any(|(_, list)| is_set(list)) {
        check.error(
            path,
            "required",
            "from.source must not be empty: it would match nothing",
        );
    }
    let service_accounts =
        source.service_accounts.is_some() || source.not_service_accounts.is_some();
    let identities = source.principals.is_some()
        || source.not_principals.is_some()
        || source.namespaces.is_some()
        || source.not_namespaces.is_some();
    if service_accounts && identities {
        check.error(
            path,
            "conflict",
            "Cannot set serviceAccounts with namespaces or principals",
        );
    }
    for (field, list) in lists {
        let Some(values) = list else { continue };
        let at = path.field(field);
        let identity_field = matches!(
            field,
            "namespaces"
                | "notNamespaces"
                | "principals"
                | "notPrincipals"
                | "requestPrincipals"
                | "notRequestPrincipals"
                | "serviceAccounts"
                | "notServiceAccounts"
        );
        if action == AuthorizationAction::Custom && identity_field && !values.is_empty() {
            check.error(
                &at,
                "unsupported-value",
                format!("{field} is currently not supported with the CUSTOM action"),
            );
        }
        if field.ends_with("erviceAccounts") {
            service_account_list(check, &at, values);
            continue;
        }
        if let Some(i) = values.iter().position(String::is_empty) {
            check.error(
                &at.index(i),
                "invalid-value",
                format!("empty value not allowed in {field}"),
            );
        }
        if field.ends_with("pBlocks") {
            for (i, value) in values.iter().enumerate().filter(|(_, v)| !v.is_empty()) {
                rules::ip_or_cidr(check, &at.index(i), value);
            }
        }
    }
}

/// `serviceAccounts`: `sa` or `ns/sa`, no wildcards, at most 16.
fn service_account_list(check: &mut Check<'_>, path: &FieldPath, values: &[String]) {
    if values.len() > 16 {
        check.error(path, "out-of-range", "may not have more than 16 values");
    }
    for (i, value) in values.iter().enumerate() {
        let at = path.index(i);
        let problem = if value.is_empty() {
            Some("empty value not allowed".to_owned())
        } else if value.contains('*') {
            Some("wildcard not allowed".to_owned())
        } else if value.len() > 320 {
            Some("value cannot exceed 320 characters".to_owned())
        } else {
            match value.split('/').collect::<Vec<_>>().as_slice() {
                [_] => None,
                ["", _] => Some(format!(
                    "expected format 'serviceAccount' or 'namespace/serviceAccount', found empty namespace {value:?}"
                )),
                [_, ""] => Some(format!(
                    "expected format 'serviceAccount' or 'namespace/serviceAccount', found empty serviceAccount {value:?}"
                )),
                [_, _] => None,
                _ => Some(format!(
                    "expected format 'serviceAccount' or 'namespace/serviceAccount', found {value:?}"
                )),
            }
        };
        if let Some(problem) = problem {
            check.error(&at, "invalid-value", problem);
        }
    }
}

fn rule_operation(check: &mut Check<'_>, path: &FieldPath, operation: &Operation) {
    let lists = operation.fields();
    if !lists.iter().any(|(_, list)| is_set(list)) {
        check.error(
            path,
            "required",
            "to.operation must not be empty: it would match nothing",
        );
    }
    for (field, list) in lists {
        let Some(values) = list else { continue };
        let at = path.field(field);
        for (i, value) in values.iter().enumerate() {
            let item = at.index(i);
            if value.is_empty() {
                check.error(
                    &item,
                    "invalid-value",
                    format!("empty value not allowed in {field}"),
                );
                continue;
            }
            match field {
                "ports" | "notPorts" if value.parse::<u32>().map_or(true, |p| p > 65535) => {
                    check.error(
                        &item,
                        "invalid-port",
                        format!("bad port ({value}): ports are numbers up to 65535"),
                    );
                }
                "paths" | "notPaths" => path_template(check, &item, value),
                _ => {}
            }
        }
    }
}

/// Paths with `{*}` (one segment) and `{**}` (any number, last) templates.
fn path_template(check: &mut Check<'_>, path: &FieldPath, value: &str) {
    if !value.contains('{') && !value.contains('}') {
        return;
    }
    let trimmed = value.trim_matches('/');
    let mut seen_double = false;
    for segment in trimmed.split('/') {
        match segment {
            "{*}" | "{**}" if seen_double => {
                check.error(
                    path,
                    "invalid-value",
                    format!("invalid path {value:?}: {{**}} must be the last operator"),
                );
                return;
            }
            "{**}" => seen_double = true,
            "{*}" => {}
            _ if segment.contains('{') || segment.contains('}') => {
                check.error(
                    path,
                    "invalid-value",
                    format!(
                        "invalid path {value:?}: only {{*}} and {{**}} templates are supported"
                    ),
                );
                return;
            }
            _ => {
                let literal_ok = !segment.is_empty()
                    && segment
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-._~%!$&'()+,;:@=".contains(c));
                if !literal_ok {
                    check.error(
                        path,
                        "invalid-value",
                        format!(
                            "invalid path {value:?}: segment {segment:?} is not a valid literal"
                        ),
                    );
                    return;
                }
            }
        }
    }
}

/// `when` keys Istio evaluates.
fn rule_condition(
    check: &mut Check<'_>,
    path: &FieldPath,
    condition: &Condition,
    action: AuthorizationAction,
) {
    let Some(key) = condition.key.as_deref().filter(|k| !k.is_empty()) else {
        check.required(&path.field("key"));
        return;
    };
    let values = condition.values.as_deref().unwrap_or_default();
    let not_values = condition.not_values.as_deref().unwrap_or_default();
    if values.is_empty() && not_values.is_empty() {
        check.error(
            path,
            "required",
            format!("at least one of values or notValues must be set for key {key}"),
        );
    }
    let key_path = path.field("key");
    let map_key = |prefix: &str| {
        key.strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('[') && rest.ends_with(']') && rest.len() > 2)
    };
    let problem = match key {
        "source.ip" | "remote.ip" | "destination.ip" => {
            for (field, list) in [("values", values), ("notValues", not_values)] {
                for (i, value) in list.iter().enumerate() {
                    rules::ip_or_cidr(check, &path.field(field).index(i), value);
                }
            }
            None
        }
        "destination.port" => {
            for (field, list) in [("values", values), ("notValues", not_values)] {
                for (i, value) in list.iter().enumerate() {
                    if value.parse::<u32>().map_or(true, |p| p > 65535) {
                        check.error(
                            &path.field(field).index(i),
                            "invalid-port",
                            format!("bad port ({value})"),
                        );
                    }
                }
            }
            None
        }
        "source.serviceAccount" => {
            for (field, list) in [("values", values), ("notValues", not_values)] {
                service_account_list(check, &path.field(field), list);
            }
            None
        }
        "source.namespace"
        | "source.principal"
        | "source.trustDomain"
        | "request.auth.principal"
        | "request.auth.audiences"
        | "request.auth.presenter"
        | "connection.sni" => None,
        "destination.namespace" => {
            Some("attribute destination.namespace is replaced by the policy's metadata.namespace")
        }
        "destination.name" | "destination.user" => {
            Some("deprecated attribute: only supported in v1alpha1")
        }
        _ if key.starts_with("destination.labels") => {
            Some("attribute destination.labels is replaced by the workload selector")
        }
        _ if map_key("request.headers")
            || map_key("request.auth.claims")
            || map_key("request.experimental.inline.headers") =>
        {
            None
        }
        _ if key.starts_with("experimental.envoy.filters.") => None,
        _ if key.starts_with("request.headers") || key.starts_with("request.auth.claims") => {
            Some("bad key: should have format a[b]")
        }
        _ => Some("unknown attribute"),
    };
    if let Some(problem) = problem {
        check.error(
            &key_path,
            "unsupported-value",
            format!("{problem}: {key:?}"),
        );
    }
    for (field, list) in [("values", values), ("notValues", not_values)] {
        if let Some(i) = list.iter().position(String::is_empty) {
            check.error(
                &path.field(field).index(i),
                "invalid-value",
                format!("empty value not allowed for {key}"),
            );
        }
    }
    if action == AuthorizationAction::Custom
        && (matches!(
            key,
            "source.namespace" | "source.serviceAccount" | "source.principal"
        ) || key.starts_with("request.auth."))
    {
        check.error(
            &key_path,
            "unsupported-value",
            format!("{key} is currently not supported with the CUSTOM action"),
        );
    }
}

pub(crate) fn validate_request_authentication(
    check: &mut Check<'_>,
    spec: &FieldPath,
    policy: &RequestAuthentication,
) {
    attachment(
        check,
        spec,
        &policy.selector,
        &policy.target_ref,
        &policy.target_refs,
    );
    let rules_path = spec.field("jwtRules");
    if policy.jwt_rules.len() > 4096 {
        check.error(&rules_path, "out-of-range", "must have at most 4096 items");
    }
    for (i, rule) in policy.jwt_rules.iter().enumerate() {
        jwt_rule(check, &rules_path.index(i), rule);
    }
}

fn jwt_rule(check: &mut Check<'_>, path: &FieldPath, rule: &JwtRule) {
    check.exclusive(
        path,
        &[
            ("jwksUri", rule.jwks_uri.is_some()),
            ("jwks_uri", rule.jwks_uri_snake.is_some()),
            ("jwks", rule.jwks.is_some()),
        ],
        "only one of jwks or jwksUri can be set",
    );
    if rule.issuer.as_deref() == Some("") {
        check.error(
            &path.field("issuer"),
            "invalid-value",
            "should be at least 1 chars long",
        );
    }
    let jwks_uri = rule.jwks_uri.as_deref().or(rule.jwks_uri_snake.as_deref());
    if rule.issuer.as_deref().is_none_or(str::is_empty) && jwks_uri.is_none_or(str::is_empty) {
        check.error(
            path,
            "required",
            "issuer or jwksUri must be non-empty string",
        );
    }
    rules::non_empty_strings(check, &path.field("audiences"), &rule.audiences);
    for (field, uri) in [
        ("jwksUri", &rule.jwks_uri),
        ("jwks_uri", &rule.jwks_uri_snake),
    ] {
        if let Some(uri) = uri {
            jwks_uri_rule(check, &path.field(field), uri);
        }
    }
    if let Some(jwks) = rule.jwks.as_deref().filter(|j| !j.is_empty())
        && let Err(problem) = jwks_document(jwks)
    {
        check.error(
            &path.field("jwks"),
            "invalid-value",
            format!("jwks parse error: {problem}"),
        );
    }
    let headers = path.field("fromHeaders");
    for (i, header) in rule.from_headers.iter().enumerate() {
        let at = headers.index(i).field("name");
        match header.name.as_deref() {
            None => check.required(&at),
            Some("") => check.error(&at, "invalid-value", "should be at least 1 chars long"),
            Some(_) => {}
        }
    }
    rules::non_empty_strings(check, &path.field("fromParams"), &rule.from_params);
    rules::non_empty_strings(check, &path.field("fromCookies"), &rule.from_cookies);
    let outputs = path.field("outputClaimToHeaders");
    for (i, output) in rule.output_claim_to_headers.iter().enumerate() {
        let at = outputs.index(i);
        for (field, value) in [("claim", &output.claim), ("header", &output.header)] {
            match value.as_deref() {
                None => check.required(&at.field(field)),
                Some("") => check.error(
                    &at.field(field),
                    "invalid-value",
                    "should be at least 1 chars long",
                ),
                Some(header) if field == "header" => {
                    rules::strict_header_name(check, &at.field(field), header)
                }
                Some(_) => {}
            }
        }
    }
    let claims = path.field("spaceDelimitedClaims");
    if rule.space_delimited_claims.len() > 64 {
        check.error(&claims, "out-of-range", "must have at most 64 items");
    }
    rules::non_empty_strings(check, &claims, &rule.space_delimited_claims);
    rules::duration(check, &path.field("timeout"), &rule.timeout);
}

/// A JWKS URI: `http://` or `https://` with a host, and a numeric port if any.
fn jwks_uri_rule(check: &mut Check<'_>, path: &FieldPath, uri: &str) {
    if uri.is_empty() {
        check.error(path, "invalid-value", "should be at least 1 chars long");
        return;
    }
    if uri.len() > 2048 {
        check.error(
            path,
            "out-of-range",
            "Too long: may not be longer than 2048",
        );
    }
    let rest = uri
        .split_once("://")
        .filter(|(scheme, _)| {
            scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")
        })
        .map(|(_, rest)| rest);
    let Some(rest) = rest else {
        check.error(
            path,
            "invalid-value",
            format!("url must have scheme http:// or https://: {uri:?}"),
        );
        return;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let port = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map(|(_, after)| after.strip_prefix(':')),
        None => Some(host_port.split_once(':').map(|(_, p)| p)),
    };
    let host_empty = host_port.is_empty() || host_port.starts_with(':');
    let port_bad = port.is_none() || port.flatten().is_some_and(|p| p.parse::<u16>().is_err());
    if host_empty || port_bad {
        check.error(
            path,
            "invalid-value",
            format!("{uri:?} is not a valid URL: it needs a host and a numeric port"),
        );
    }
}

/// An inline JWKS: a JSON object with a `keys` list, or a single key, each with a `kty`.
fn jwks_document(text: &str) -> Result<(), String> {
    let documents = yaml::parse_documents(text).map_err(|e| format!("not JSON: {}", e.message))?;
    let [document] = documents.as_slice() else {
        return Err("expected one JSON object".to_owned());
    };
    let keys: Vec<&yaml::Node> = match document.get("keys").map(|k| &k.value) {
        Some(Value::Seq(keys)) => keys.iter().collect(),
        Some(_) => return Err("\"keys\" must be a list".to_owned()),
        None if matches!(document.value, Value::Map(_)) => vec![document],
        None => return Err("expected a JSON object".to_owned()),
    };
    for key in keys {
        match key.get("kty").and_then(yaml::Node::as_str) {
            Some("RSA") if key.get("n").is_none() || key.get("e").is_none() => {
                return Err("an RSA key needs \"n\" and \"e\"".to_owned());
            }
            Some("EC")
                if key.get("crv").is_none() || key.get("x").is_none() || key.get("y").is_none() =>
            {
                return Err("an EC key needs \"crv\", \"x\" and \"y\"".to_owned());
            }
            Some("OKP") if key.get("crv").is_none() || key.get("x").is_none() => {
                return Err("an OKP key needs \"crv\" and \"x\"".to_owned());
            }
            Some("oct") if key.get("k").is_none() => {
                return Err("an oct key needs \"k\"".to_owned());
            }
            Some("RSA" | "EC" | "OKP" | "oct") => {}
            Some(other) => return Err(format!("unsupported key type {other:?}")),
            None => return Err("a key has no \"kty\"".to_owned()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_jwks_is_checked() {
        assert!(jwks_document(r#"{"keys":[{"kty":"EC","crv":"P-256","x":"a","y":"b"}]}"#).is_ok());
        assert!(jwks_document(r#"{"kty":"RSA","n":"a","e":"AQAB"}"#).is_ok());
        assert!(jwks_document(r#"{"keys":[{"kty":"RSA"}]}"#).is_err());
        assert!(jwks_document(r#"{"keys":[{"crv":"x"}]}"#).is_err());
        assert!(jwks_document("not json {").is_err());
    }
}
