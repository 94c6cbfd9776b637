//! Who is calling `CreateCertificate`, and how refusals become gRPC statuses.
//!
//! A caller with a verified client SVID is that SVID's identity. Without one, the metadata
//! `authorization: Bearer TOKEN` carries a one-time bootstrap token: [`bearer_token`] reads it
//! (a malformed header is a refusal, not "no token"). Token refusals are `UNAUTHENTICATED` with
//! the reason; CSR problems are `INVALID_ARGUMENT`; a CA that cannot issue is `UNAVAILABLE`;
//! anything about local files is logged here and reported to the caller as `INTERNAL` without
//! paths.

use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::authority::AuthorityError;
use crate::tokens::TokenError;

/// The metadata key that carries the bootstrap token.
pub const AUTHORIZATION: &str = "authorization";

/// Why the `authorization` metadata was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizationError {
    #[error("the authorization metadata is not ASCII text")]
    NotText,
    #[error("the authorization metadata must be `Bearer TOKEN`")]
    NotBearer,
    #[error("the authorization metadata holds an empty bearer token")]
    EmptyToken,
    #[error("the authorization metadata appears more than once")]
    Repeated,
}

/// The bearer token in `metadata`, if the caller sent one.
pub fn bearer_token(metadata: &MetadataMap) -> Result<Option<String>, AuthorizationError> {
    let mut values = metadata.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthorizationError::Repeated);
    }
    let text = value.to_str().map_err(|_| AuthorizationError::NotText)?;
    let (scheme, token) = text
        .trim()
        .split_once(' ')
        .ok_or(AuthorizationError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthorizationError::NotBearer);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthorizationError::EmptyToken);
    }
    Ok(Some(token.to_owned()))
}

pub(crate) fn authorization_status(error: &AuthorizationError) -> Status {
    Status::unauthenticated(error.to_string())
}

/// A token refusal names its reason; a ledger failure is logged and stays local.
pub(crate) fn token_status(error: &TokenError) -> Status {
    match error {
        TokenError::Malformed
        | TokenError::Unknown
        | TokenError::Expired
        | TokenError::AlreadyUsed => {
            Status::unauthenticated(format!("bootstrap token refused: {error}"))
        }
        TokenError::Random | TokenError::Fs(_) | TokenError::BadLedger { .. } => {
            tracing::error!("bootstrap token ledger: {error}");
            Status::internal("the bootstrap token ledger is unavailable")
        }
    }
}

/// An issuance refusal: the caller's input, the caller's identity, or the CA's state.
pub(crate) fn authority_status(error: &AuthorityError) -> Status {
    match error {
        AuthorityError::CsrTooLarge { .. }
        | AuthorityError::CsrMalformed
        | AuthorityError::CsrBadSignature
        | AuthorityError::CsrUnsupportedKey => Status::invalid_argument(error.to_string()),
        AuthorityError::NotAWorkloadId(_) | AuthorityError::WrongTrustDomain { .. } => {
            Status::permission_denied(error.to_string())
        }
        AuthorityError::IssuerExpired => Status::unavailable(error.to_string()),
        _ => {
            tracing::error!("certificate authority: {error}");
            Status::internal("the certificate authority failed to issue")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;
    use tonic::metadata::MetadataValue;

    fn with(values: &[&str]) -> MetadataMap {
        let mut map = MetadataMap::new();
        for value in values {
            map.append(AUTHORIZATION, MetadataValue::try_from(*value).unwrap());
        }
        map
    }

    #[test]
    fn bearer_token_is_read_from_the_authorization_metadata() {
        assert_eq!(bearer_token(&MetadataMap::new()), Ok(None));
        assert_eq!(
            bearer_token(&with(&["Bearer abc-DEF_123"])),
            Ok(Some("abc-DEF_123".to_owned()))
        );
        // The scheme is case-insensitive, surrounding spaces are not part of the token.
        assert_eq!(
            bearer_token(&with(&["bearer   tok  "])),
            Ok(Some("tok".to_owned()))
        );
    }

    #[test]
    fn malformed_authorization_is_refused_not_ignored() {
        assert_eq!(
            bearer_token(&with(&["Basic dXNlcjpwYXNz"])),
            Err(AuthorizationError::NotBearer)
        );
        assert_eq!(
            bearer_token(&with(&["tokenwithoutscheme"])),
            Err(AuthorizationError::NotBearer)
        );
        assert_eq!(
            bearer_token(&with(&["Bearer  "])),
            Err(AuthorizationError::NotBearer)
        );
        assert_eq!(
            bearer_token(&with(&["Bearer a", "Bearer b"])),
            Err(AuthorizationError::Repeated)
        );
        let mut map = MetadataMap::new();
        map.insert(
            AUTHORIZATION,
            // HTTP allows such bytes in a header value; they are not text.
            MetadataValue::try_from(&b"Bearer \xff"[..]).unwrap(),
        );
        assert_eq!(bearer_token(&map), Err(AuthorizationError::NotText));
        assert_eq!(
            authorization_status(&AuthorizationError::NotBearer).code(),
            Code::Unauthenticated
        );
    }

    #[test]
    fn refusals_map_to_statuses_that_name_the_reason() {
        let replay = token_status(&TokenError::AlreadyUsed);
        assert_eq!(replay.code(), Code::Unauthenticated);
        assert!(replay.message().contains("already used"), "{replay:?}");
        assert_eq!(
            token_status(&TokenError::Expired).code(),
            Code::Unauthenticated
        );
        assert_eq!(
            token_status(&TokenError::Unknown).code(),
            Code::Unauthenticated
        );
        assert_eq!(
            token_status(&TokenError::Malformed).code(),
            Code::Unauthenticated
        );
        let ledger = token_status(&TokenError::BadLedger {
            path: "/secret/path".into(),
            reason: "x".into(),
        });
        assert_eq!(ledger.code(), Code::Internal);
        assert!(!ledger.message().contains("/secret/path"));

        let big = authority_status(&AuthorityError::CsrTooLarge {
            size: 9000,
            max: 8192,
        });
        assert_eq!(big.code(), Code::InvalidArgument);
        assert_eq!(
            authority_status(&AuthorityError::CsrMalformed).code(),
            Code::InvalidArgument
        );
        assert_eq!(
            authority_status(&AuthorityError::IssuerExpired).code(),
            Code::Unavailable
        );
    }
}
