//! Verifying one token against one JWT rule: its shape, the key (by `kid`, else every key
//! that fits the algorithm), the signature, `exp` and `nbf` (with Envoy's 60 s of clock
//! skew), the issuer, and the audiences when the rule lists some. Each failure says which.

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation, errors::ErrorKind};
use serde_json::{Map, Value};

use crate::snapshot::JwtRule;

/// Envoy's default allowance for clocks that disagree (`clock_skew_seconds`).
const CLOCK_SKEW_SECONDS: u64 = 60;

/// The public keys of a JSON Web Key Set that can verify tokens.
#[derive(Clone)]
pub struct KeySet {
    keys: Vec<Key>,
}

#[derive(Clone)]
struct Key {
    kid: Option<String>,
    /// The `alg` the key is restricted to, when it names one.
    alg: Option<String>,
    key: DecodingKey,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self
            .keys
            .iter()
            .map(|k| k.kid.as_deref().unwrap_or("-"))
            .collect();
        f.debug_struct("KeySet").field("kids", &kids).finish()
    }
}

/// Why a JWKS cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("the JWKS is not JSON: {0}")]
    NotJson(String),
    #[error("the JWKS is not a key set or a key: {0}")]
    NotAKeySet(String),
    #[error("the JWKS has no usable key ({0})")]
    NoUsableKey(String),
}

impl KeySet {
    /// Parses a JWKS document: `{"keys": [...]}` or a single key. Keys that cannot be used
    /// (an unknown type, bad components) are skipped; none usable is an error.
    pub fn parse(text: &str) -> Result<KeySet, JwksError> {
        let document: Value =
            serde_json::from_str(text).map_err(|e| JwksError::NotJson(e.to_string()))?;
        let jwks: Vec<Value> = match document {
            Value::Object(ref object) if object.contains_key("keys") => match object.get("keys") {
                Some(Value::Array(keys)) => keys.clone(),
                _ => return Err(JwksError::NotAKeySet("\"keys\" is not a list".into())),
            },
            Value::Object(_) => vec![document],
            _ => return Err(JwksError::NotAKeySet("not a JSON object".into())),
        };
        let mut keys = Vec::new();
        let mut problems = Vec::new();
        for value in jwks {
            let jwk: Jwk = match serde_json::from_value(value) {
                Ok(jwk) => jwk,
                Err(error) => {
                    problems.push(error.to_string());
                    continue;
                }
            };
            match DecodingKey::from_jwk(&jwk) {
                Ok(key) => keys.push(Key {
                    kid: jwk.common.key_id.clone(),
                    alg: jwk
                        .common
                        .key_algorithm
                        .map(|a| format!("{a:?}"))
                        .filter(|a| a != "UNKNOWN_ALGORITHM"),
                    key,
                }),
                Err(error) => problems.push(error.to_string()),
            }
        }
        if keys.is_empty() {
            let why = if problems.is_empty() {
                "the set is empty".to_owned()
            } else {
                problems.join("; ")
            };
            return Err(JwksError::NoUsableKey(why));
        }
        Ok(KeySet { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("Jwt is not in the form of Header.Payload.Signature with base64url JSON: {0}")]
    Malformed(String),
    #[error("Jwt algorithm {0} is not supported")]
    UnsupportedAlgorithm(String),
    #[error("Jwks has no key with kid {0:?}")]
    UnknownKid(String),
    #[error("Jwks has no key for algorithm {0}")]
    NoKeyForAlgorithm(String),
    #[error("Jwt signature does not verify")]
    BadSignature,
    #[error("Jwt is expired")]
    Expired,
    #[error("Jwt is not yet valid (nbf)")]
    NotYetValid,
    #[error("Jwt issuer is not {expected:?}")]
    WrongIssuer { expected: String },
    #[error("Audiences in Jwt are not allowed (allowed: {allowed})")]
    WrongAudience { allowed: String },
    #[error("Jwt claim {0} has the wrong type")]
    BadClaim(String),
}

/// A token's header and claims, read but not yet verified.
#[derive(Debug, Clone)]
pub struct Unverified {
    header: Header,
    claims: Map<String, Value>,
}

impl Unverified {
    /// The `iss` the token claims.
    pub fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }
}

/// Reads a token's header and claims without trusting them.
pub fn inspect(token: &str) -> Result<Unverified, VerifyError> {
    if token.split('.').count() != 3 {
        return Err(VerifyError::Malformed("not three parts".to_owned()));
    }
    let header = jsonwebtoken::decode_header(token).map_err(|e| malformed(&e))?;
    let claims: Map<String, Value> =
        jsonwebtoken::dangerous::insecure_decode_claims(token).map_err(|e| malformed(&e))?;
    Ok(Unverified { header, claims })
}

fn malformed(error: &jsonwebtoken::errors::Error) -> VerifyError {
    match error.kind() {
        ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
            VerifyError::UnsupportedAlgorithm(error.to_string())
        }
        _ => VerifyError::Malformed(error.to_string()),
    }
}

/// Verifies `token` (already inspected) against `rule` with `keys`; the verified claims.
pub fn verify(
    token: &str,
    unverified: &Unverified,
    rule: &JwtRule,
    keys: &KeySet,
) -> Result<Map<String, Value>, VerifyError> {
    let alg = unverified.header.alg;
    let alg_name = format!("{alg:?}");
    let mut candidates: Vec<&Key> = match &unverified.header.kid {
        Some(kid) => {
            let with_kid: Vec<&Key> = keys
                .keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect();
            if with_kid.is_empty() {
                return Err(VerifyError::UnknownKid(kid.clone()));
            }
            with_kid
        }
        None => keys.keys.iter().collect(),
    };
    candidates.retain(|k| {
        k.key.family() == alg.family() && k.alg.as_ref().is_none_or(|a| *a == alg_name)
    });
    if candidates.is_empty() {
        return Err(VerifyError::NoKeyForAlgorithm(alg_name));
    }
    let validation = validation(rule, alg);
    for key in candidates {
        match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
            Ok(data) => return Ok(data.claims),
            // Another key may still fit.
            Err(error) if signature_failed(error.kind()) => continue,
            // The signature held; the claims are what failed.
            Err(error) => return Err(refusal(&error, rule)),
        }
    }
    Err(VerifyError::BadSignature)
}

/// Whether the key did not verify the signature (as opposed to the claims failing after it).
fn signature_failed(kind: &ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::InvalidSignature
            | ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat
            | ErrorKind::Provider(_)
    )
}

fn validation(rule: &JwtRule, alg: Algorithm) -> Validation {
    let mut validation = Validation::new(alg);
    validation.leeway = CLOCK_SKEW_SECONDS;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    let mut required: Vec<&str> = Vec::new();
    if let Some(issuer) = &rule.issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    if rule.audiences.is_empty() {
        validation.validate_aud = false;
    } else {
        validation.set_audience(&rule.audiences);
        required.push("aud");
    }
    validation.set_required_spec_claims(&required);
    validation
}

fn refusal(error: &jsonwebtoken::errors::Error, rule: &JwtRule) -> VerifyError {
    match error.kind() {
        ErrorKind::ExpiredSignature => VerifyError::Expired,
        ErrorKind::ImmatureSignature => VerifyError::NotYetValid,
        ErrorKind::InvalidIssuer => VerifyError::WrongIssuer {
            expected: rule.issuer.clone().unwrap_or_default(),
        },
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => VerifyError::WrongIssuer {
            expected: rule.issuer.clone().unwrap_or_default(),
        },
        ErrorKind::InvalidAudience => VerifyError::WrongAudience {
            allowed: rule.audiences.join(", "),
        },
        ErrorKind::MissingRequiredClaim(_) => VerifyError::WrongAudience {
            allowed: rule.audiences.join(", "),
        },
        ErrorKind::InvalidClaimFormat(claim) => VerifyError::BadClaim(claim.clone()),
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => VerifyError::Malformed(error.to_string()),
        _ => VerifyError::BadSignature,
    }
}
