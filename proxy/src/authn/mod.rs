//! Request authentication: the JWT rules of the RequestAuthentications that apply, checked
//! before authorization with Istio's semantics.
//!
//! A request with no token passes (it simply has no request principal). Every token found
//! at any rule's location must verify against a rule that reads that location and names the
//! token's issuer; a token whose issuer no rule names, or that fails (signature, `exp`, `nbf`,
//! issuer, audiences), refuses the request with a reason. After verification the token's
//! header is removed unless `forwardOriginalToken`, and `outputPayloadToHeader` /
//! `outputClaimToHeaders` are written; headers of those names that the client sent are
//! removed first, so that only a verified token can set them. The first verified token gives
//! the request principal `iss/sub`, audiences, presenter and claims.

pub mod claims;
mod extract;
mod fetch;
pub(crate) mod jwks;
pub mod verify;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Request};
use serde_json::{Map, Value};

use crate::snapshot::{JwksSource, JwtRule, TokenLocation};
use claims::Claim;
use jwks::{JwksStore, RemoteJwks};
use verify::KeySet;

/// A JWT rule ready for requests: the compiled rule and where its keys are.
#[derive(Debug)]
pub(crate) struct ActiveJwtRule {
    pub(crate) rule: JwtRule,
    keys: RuleKeys,
}

#[derive(Debug)]
enum RuleKeys {
    /// Parsed once, when the snapshot is installed.
    Inline(Result<Arc<KeySet>, String>),
    Remote(Arc<RemoteJwks>),
}

impl ActiveJwtRule {
    async fn keys(&self) -> Result<Arc<KeySet>, String> {
        match &self.keys {
            RuleKeys::Inline(keys) => keys
                .clone()
                .map_err(|why| format!("the inline JWKS is not usable: {why}")),
            RuleKeys::Remote(remote) => remote.keys(self.rule.fetch_timeout).await,
        }
    }
}

/// The rules of a snapshot with their keys: inline key sets parsed, remote ones taken from
/// (or started in) `store`.
pub(crate) fn activate(rules: &[JwtRule], store: &JwksStore) -> Vec<ActiveJwtRule> {
    let uris: HashSet<String> = rules
        .iter()
        .filter_map(|rule| match &rule.jwks {
            JwksSource::Uri(uri) => Some(uri.clone()),
            JwksSource::Inline(_) => None,
        })
        .collect();
    let remotes: HashMap<String, Arc<RemoteJwks>> = store.sync(&uris);
    rules
        .iter()
        .map(|rule| {
            let keys = match &rule.jwks {
                JwksSource::Inline(text) => {
                    RuleKeys::Inline(KeySet::parse(text).map(Arc::new).map_err(|e| e.to_string()))
                }
                JwksSource::Uri(uri) => match remotes.get(uri) {
                    Some(remote) => RuleKeys::Remote(remote.clone()),
                    None => RuleKeys::Inline(Err(format!("JWKS from {uri} is not tracked"))),
                },
            };
            ActiveJwtRule {
                rule: rule.clone(),
                keys,
            }
        })
        .collect()
}

/// What the verified token says about the request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Authenticated {
    /// `iss/sub`.
    pub principal: String,
    pub audiences: Vec<String>,
    pub presenter: Option<String>,
    pub claims: Vec<Claim>,
}

/// Why a request's token was refused, for the access log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// A token that verified, and the rule and location it verified under.
struct Verified<'r> {
    rule: &'r ActiveJwtRule,
    location: &'r TokenLocation,
    token: String,
    claims: Map<String, Value>,
}

/// Authenticates `request` against `rules`: `Ok(None)` when it carries no token, the first
/// verified token's facts when every token verifies, else why not. On success the request's
/// headers are edited as the rules say.
pub(crate) async fn authenticate<B>(
    rules: &[ActiveJwtRule],
    request: &mut Request<B>,
) -> Result<Option<Authenticated>, Refusal> {
    if rules.is_empty() {
        return Ok(None);
    }
    for name in output_headers(rules) {
        request.headers_mut().remove(name);
    }
    let found = extract::find_tokens(
        rules.iter().flat_map(|r| &r.rule.locations),
        request.headers(),
        request.uri(),
    );
    let mut verified = Vec::with_capacity(found.len());
    for token in found {
        verified.push(verify_one(rules, token).await?);
    }
    let Some(first) = verified.first() else {
        return Ok(None);
    };
    let authenticated = Authenticated {
        principal: claims::principal(&first.claims),
        audiences: claims::audiences(&first.claims),
        presenter: claims::presenter(&first.claims),
        claims: claims::flatten(&first.claims, &first.rule.rule.space_delimited_claims),
    };
    let headers = request.headers_mut();
    for token in &verified {
        if !token.rule.rule.forward_original_token
            && let Some(name) = extract::header_name(token.location)
        {
            headers.remove(name);
        }
    }
    for token in &verified {
        let rule = &token.rule.rule;
        if let Some(name) = &rule.output_payload_to_header
            && let Some(payload) = token.token.split('.').nth(1)
        {
            set_header(headers, name, payload);
        }
        for output in &rule.output_claim_to_headers {
            if let Some(value) = claims::header_value(&token.claims, &output.claim) {
                set_header(headers, &output.header, &value);
            }
        }
    }
    Ok(Some(authenticated))
}

/// Verifies one token with the rules that read its location and name its issuer (exact
/// issuers first, then rules that accept any).
async fn verify_one<'r>(
    rules: &'r [ActiveJwtRule],
    found: extract::Found<'r>,
) -> Result<Verified<'r>, Refusal> {
    let at = found.location;
    let unverified =
        verify::inspect(&found.token).map_err(|e| Refusal(format!("token in {at}: {e}")))?;
    let issuer = unverified.issuer();
    let reads = |r: &&ActiveJwtRule| r.rule.locations.contains(at);
    let exact = rules
        .iter()
        .filter(reads)
        .filter(|r| r.rule.issuer.is_some() && r.rule.issuer.as_deref() == issuer);
    let any = rules
        .iter()
        .filter(reads)
        .filter(|r| r.rule.issuer.is_none());
    let mut first_error = None;
    for rule in exact.chain(any) {
        let outcome = match rule.keys().await {
            Ok(keys) => verify::verify(&found.token, &unverified, &rule.rule, &keys)
                .map_err(|e| e.to_string()),
            Err(why) => Err(why),
        };
        match outcome {
            Ok(claims) => {
                return Ok(Verified {
                    rule,
                    location: at,
                    token: found.token,
                    claims,
                });
            }
            Err(why) => {
                first_error.get_or_insert_with(|| {
                    format!(
                        "token in {at}, issuer {:?}: {why} (RequestAuthentication {})",
                        issuer.unwrap_or_default(),
                        rule.rule.policy
                    )
                });
            }
        }
    }
    Err(Refusal(first_error.unwrap_or_else(|| {
        format!(
            "token in {at}: Jwt issuer {:?} is not configured for that location",
            issuer.unwrap_or_default()
        )
    })))
}

/// Every header a rule writes after verification.
fn output_headers(rules: &[ActiveJwtRule]) -> impl Iterator<Item = &str> {
    rules.iter().flat_map(|r| {
        r.rule
            .output_payload_to_header
            .as_deref()
            .into_iter()
            .chain(
                r.rule
                    .output_claim_to_headers
                    .iter()
                    .map(|o| o.header.as_str()),
            )
    })
}

fn set_header(headers: &mut http::HeaderMap, name: &str, value: &str) {
    if let (Ok(name), Ok(value)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests;
