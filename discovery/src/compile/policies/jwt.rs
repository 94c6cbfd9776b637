//! RequestAuthentications to the JWT rules of one workload or gateway. They are selected as
//! AuthorizationPolicies are (the root namespace's apply mesh-wide, a namespace's to its own
//! workloads, `selector.matchLabels` narrows either) and their rules combined as if they were
//! one policy. `targetRef(s)` are not supported (the policy is left out, with a warning).

use std::time::Duration as StdDuration;

use strait_proxy::snapshot::{
    ClaimToHeader as CompiledClaimToHeader, JwksSource, JwtRule as CompiledJwtRule, TokenLocation,
};

use super::{Mesh, Workload, applies};
use crate::findings::Finding;
use crate::resources::security::{JwtRule, RequestAuthentication};
use crate::resources::{Object, Spec};
use crate::validation::check::Check;
use crate::yaml::FieldPath;

/// Istio's default time allowed for fetching a JWKS.
const DEFAULT_TIMEOUT: StdDuration = StdDuration::from_secs(5);

/// The JWT rules that apply to `workload`, ordered by policy namespace/name.
pub(super) fn compile(
    objects: &[&Object],
    workload: Workload<'_>,
    mesh: &Mesh,
    findings: &mut Vec<Finding>,
) -> Vec<CompiledJwtRule> {
    let mut selected: Vec<(&Object, &RequestAuthentication)> = objects
        .iter()
        .filter_map(|object| match &object.spec {
            Spec::RequestAuthentication(policy) => Some((*object, policy)),
            _ => None,
        })
        .filter(|(object, policy)| applies(object, &policy.selector, workload, mesh))
        .collect();
    selected.sort_by(|(a, _), (b, _)| (&a.namespace, a.name()).cmp(&(&b.namespace, b.name())));
    let mut rules = Vec::new();
    for (object, policy) in selected {
        let mut check = Check::new(object, findings);
        if policy.target_ref.is_some() || policy.target_refs.as_ref().is_some_and(|t| !t.is_empty())
        {
            let field = if policy.target_ref.is_some() {
                "targetRef"
            } else {
                "targetRefs"
            };
            check.warning(
                &FieldPath::ROOT.field("spec").field(field),
                "not-supported",
                format!("{field} is not supported: this policy is not applied (use selector)"),
            );
            continue;
        }
        let name = format!("{}/{}", object.namespace, object.name());
        let path = FieldPath::ROOT.field("spec").field("jwtRules");
        for (i, rule) in policy.jwt_rules.iter().enumerate() {
            match compile_rule(rule, &name) {
                Some(compiled) => rules.push(compiled),
                None => check.warning(
                    &path.index(i),
                    "not-served",
                    "the rule has neither jwks nor jwksUri: tokens of its issuer are refused",
                ),
            }
        }
    }
    rules
}

/// One rule; `None` when it names no keys at all (OpenID discovery is not supported).
fn compile_rule(rule: &JwtRule, policy: &str) -> Option<CompiledJwtRule> {
    let uri = rule
        .jwks_uri
        .as_deref()
        .or(rule.jwks_uri_snake.as_deref())
        .filter(|u| !u.is_empty());
    let jwks = match (rule.jwks.as_deref().filter(|j| !j.is_empty()), uri) {
        (Some(inline), _) => JwksSource::Inline(inline.to_owned()),
        (None, Some(uri)) => JwksSource::Uri(uri.to_owned()),
        (None, None) => return None,
    };
    let mut locations: Vec<TokenLocation> = rule
        .from_headers
        .iter()
        .filter_map(|h| {
            let name = h.name.as_deref().filter(|n| !n.is_empty())?;
            Some(TokenLocation::Header {
                name: name.to_ascii_lowercase(),
                prefix: h.prefix.clone().unwrap_or_default(),
            })
        })
        .collect();
    locations.extend(
        rule.from_params
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| TokenLocation::Param(p.clone())),
    );
    locations.extend(
        rule.from_cookies
            .iter()
            .filter(|c| !c.is_empty())
            .map(|c| TokenLocation::Cookie(c.clone())),
    );
    if locations.is_empty() {
        locations = TokenLocation::defaults();
    }
    Some(CompiledJwtRule {
        policy: policy.to_owned(),
        issuer: rule.issuer.clone().filter(|i| !i.is_empty()),
        audiences: rule.audiences.clone(),
        jwks,
        locations,
        forward_original_token: rule.forward_original_token.unwrap_or(false),
        output_payload_to_header: rule
            .output_payload_to_header
            .as_deref()
            .filter(|h| !h.is_empty())
            .map(str::to_ascii_lowercase),
        output_claim_to_headers: rule
            .output_claim_to_headers
            .iter()
            .filter_map(|o| {
                Some(CompiledClaimToHeader {
                    header: o
                        .header
                        .as_deref()
                        .filter(|h| !h.is_empty())?
                        .to_ascii_lowercase(),
                    claim: o.claim.clone().filter(|c| !c.is_empty())?,
                })
            })
            .collect(),
        space_delimited_claims: rule.space_delimited_claims.clone(),
        fetch_timeout: rule
            .timeout
            .as_ref()
            .and_then(|t| t.value)
            .unwrap_or(DEFAULT_TIMEOUT),
    })
}
