//! Responses the proxy makes itself (no route, no healthy upstream, timeouts, faults,
//! redirects): each carries its response flag and a plain reason for the access log. A gRPC
//! request gets its answer as a gRPC status, as Envoy maps HTTP statuses to gRPC codes.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::body::{self, Body};
use super::flags::ResponseFlags;

/// Why the proxy answered itself: the flag and a reason for the access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reason {
    pub(crate) flags: ResponseFlags,
    pub(crate) text: String,
}

/// Marks a response the proxy made, so telemetry can find its reason.
#[derive(Clone, Debug)]
pub(crate) struct LocalReply(pub(crate) Reason);

/// Builds a local reply. For gRPC, the status travels as `grpc-status` on an HTTP 200, the way
/// gRPC clients expect errors.
pub(crate) fn local_reply(
    status: StatusCode,
    flags: ResponseFlags,
    reason: String,
    grpc: bool,
) -> Response<Body> {
    let mut response = if grpc {
        let mut response = Response::new(body::empty());
        let code = grpc_status_for(status);
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", HeaderValue::from(code));
        let message = if flags.contains(ResponseFlags::UNAUTHORIZED) {
            RBAC_DENIED
        } else if flags.contains(ResponseFlags::UNAUTHENTICATED) {
            JWT_REFUSED
        } else {
            reason.as_str()
        };
        if let Ok(message) = HeaderValue::from_str(&percent_encode(message)) {
            headers.insert("grpc-message", message);
        }
        response
    } else {
        // Envoy's exact body for an authorization denial; the reason stays in the access log.
        let text = if flags.contains(ResponseFlags::UNAUTHORIZED) {
            RBAC_DENIED.to_owned()
        } else if flags.contains(ResponseFlags::UNAUTHENTICATED) {
            JWT_REFUSED.to_owned()
        } else {
            format!("{}\n", status_text(status, &reason))
        };
        let mut response = Response::new(body::full(text));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        response
    };
    response.extensions_mut().insert(LocalReply(Reason {
        flags,
        text: reason,
    }));
    response
}

/// What a client denied by an authorization policy is told (as Envoy words it).
const RBAC_DENIED: &str = "RBAC: access denied";

/// What a client whose token failed verification is told (as Envoy words it).
const JWT_REFUSED: &str = "Jwt verification fails";

/// The body text of a local reply: Envoy's short phrases where users know them.
fn status_text(status: StatusCode, reason: &str) -> String {
    match status.as_u16() {
        503 if reason.starts_with("no healthy upstream") => "no healthy upstream".to_owned(),
        504 => "upstream request timeout".to_owned(),
        _ => reason.to_owned(),
    }
}

/// Envoy's HTTP-to-gRPC status mapping for local replies.
pub(crate) fn grpc_status_for(status: StatusCode) -> u16 {
    match status.as_u16() {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2, "Responses").
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Whether a request is gRPC (`content-type: application/grpc...`).
pub(crate) fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_requests_get_a_grpc_status() {
        let response = local_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            ResponseFlags::NO_HEALTHY_UPSTREAM,
            "no healthy upstream in cluster c".into(),
            true,
        );
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "14");
        assert!(response.extensions().get::<LocalReply>().is_some());
    }

    #[test]
    fn authorization_denials_do_not_tell_the_client_which_policy() {
        let response = local_reply(
            StatusCode::FORBIDDEN,
            ResponseFlags::UNAUTHORIZED,
            "denied by DENY policy shop/admin".into(),
            true,
        );
        assert_eq!(response.headers()["grpc-status"], "7");
        assert_eq!(response.headers()["grpc-message"], "RBAC: access denied");
        let reason = &response.extensions().get::<LocalReply>().unwrap().0;
        assert_eq!(reason.text, "denied by DENY policy shop/admin");
    }

    #[test]
    fn token_refusals_say_what_envoy_says() {
        let response = local_reply(
            StatusCode::UNAUTHORIZED,
            ResponseFlags::UNAUTHENTICATED,
            "token in header authorization: Jwt is expired".into(),
            true,
        );
        assert_eq!(response.headers()["grpc-status"], "16");
        assert_eq!(response.headers()["grpc-message"], "Jwt verification fails");
        let reason = &response.extensions().get::<LocalReply>().unwrap().0;
        assert!(reason.text.contains("expired"));
    }

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(percent_encode("a b%é"), "a b%25%C3%A9");
    }

    #[test]
    fn http_requests_get_the_status_and_a_phrase() {
        let response = local_reply(
            StatusCode::NOT_FOUND,
            ResponseFlags::NO_ROUTE,
            "no route".into(),
            false,
        );
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
}
