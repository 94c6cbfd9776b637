//! Request authentication (RequestAuthentication's JWT rules), compiled: where a rule looks for
//! tokens, the issuer and audiences it accepts, where its keys come from, and what it writes
//! to the request once a token is verified. `authn` reads these; discovery builds them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One JWT rule of a RequestAuthentication that applies to the workload (or gateway).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JwtRule {
    /// The RequestAuthentication it came from (`namespace/name`), for the access log.
    pub policy: String,
    /// The `iss` a token must carry; `None` accepts any issuer (the rule names only a JWKS).
    pub issuer: Option<String>,
    /// When not empty, one of the token's `aud` must be one of these.
    pub audiences: Vec<String>,
    pub jwks: JwksSource,
    /// Where tokens are looked for; `fromHeaders`/`fromParams`/`fromCookies` replace the
    /// default (`Authorization: Bearer` and the `access_token` query parameter).
    pub locations: Vec<TokenLocation>,
    /// Keep the token on the request sent upstream (`forwardOriginalToken`).
    pub forward_original_token: bool,
    /// A header (lowercase) to carry the token's payload, base64url-encoded.
    pub output_payload_to_header: Option<String>,
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// Claims whose string value is a space-separated list (`scope`, `permission` and those
    /// the rule names).
    pub space_delimited_claims: Vec<String>,
    /// How long fetching the JWKS may take.
    pub fetch_timeout: Duration,
}

/// Where a rule's public keys come from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JwksSource {
    /// A JSON Web Key Set written in the policy (`jwks`).
    Inline(String),
    /// A URI the keys are fetched from and refreshed (`jwksUri`).
    Uri(String),
}

/// One place a token may be.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenLocation {
    /// A header (lowercase name) whose value starts with `prefix` (stripped).
    Header { name: String, prefix: String },
    /// A query parameter.
    Param(String),
    /// A cookie.
    Cookie(String),
}

impl TokenLocation {
    /// Istio's default locations: `Authorization: Bearer <token>` and `?access_token=`.
    pub fn defaults() -> Vec<TokenLocation> {
        vec![
            TokenLocation::Header {
                name: "authorization".to_owned(),
                prefix: "Bearer ".to_owned(),
            },
            TokenLocation::Param("access_token".to_owned()),
        ]
    }
}

impl std::fmt::Display for TokenLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenLocation::Header { name, .. } => write!(f, "header {name}"),
            TokenLocation::Param(name) => write!(f, "query parameter {name}"),
            TokenLocation::Cookie(name) => write!(f, "cookie {name}"),
        }
    }
}

/// `outputClaimToHeaders`: a claim (a `.`-separated path for nested claims) copied to a header
/// (lowercase name). Only string, integer and boolean claims are copied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimToHeader {
    pub header: String,
    pub claim: String,
}
