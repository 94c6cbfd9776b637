//! Envoy's response flags: short codes in the access log and metrics that say why a response
//! is what it is (`NR` no route, `UH` no healthy upstream, `UF` upstream connection failure...).

use std::fmt;

/// A set of response flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ResponseFlags(u32);

macro_rules! flags {
    ($($name:ident = $bit:expr, $code:literal, $meaning:literal;)*) => {
        impl ResponseFlags {
            $(
                #[doc = $meaning]
                pub const $name: ResponseFlags = ResponseFlags(1 << $bit);
            )*

            const ALL: &'static [(ResponseFlags, &'static str)] = &[$((ResponseFlags::$name, $code),)*];
        }
    };
}

flags! {
    NO_ROUTE = 0, "NR", "No route matched the request (or no virtual host its authority).";
    NO_HEALTHY_UPSTREAM = 1, "UH", "The cluster had no healthy endpoint.";
    UPSTREAM_CONNECTION_FAILURE = 2, "UF", "Connecting to the endpoint failed.";
    UPSTREAM_OVERFLOW = 3, "UO", "A connection-pool or request limit was reached (circuit breaking).";
    UPSTREAM_REQUEST_TIMEOUT = 4, "UT", "The route's timeout expired.";
    UPSTREAM_RETRY_LIMIT_EXCEEDED = 5, "URX", "Retries were exhausted.";
    UPSTREAM_CONNECTION_TERMINATION = 6, "UC", "The upstream closed or reset the connection.";
    DOWNSTREAM_CONNECTION_TERMINATION = 7, "DC", "The client went away before the response was complete.";
    DELAY_INJECTED = 8, "DI", "A fault delay was injected.";
    FAULT_INJECTED = 9, "FI", "A fault abort was injected.";
    NO_CLUSTER_FOUND = 10, "NC", "The route named a cluster that does not exist.";
    UNAUTHORIZED = 11, "RBAC", "An authorization policy denied the request.";
    INVALID_REQUEST = 12, "DPE", "The request was malformed.";
    UPSTREAM_PROTOCOL_ERROR = 13, "UPE", "The upstream sent a malformed response.";
    UNAUTHENTICATED = 14, "UAUTHN", "A request token failed verification (Strait's flag: Envoy reports this only as the response code detail jwt_authn_access_denied).";
    DNS_RESOLUTION_FAILED = 15, "DF", "Resolving the name of the destination an explicit proxy request named failed.";
}

impl ResponseFlags {
    pub const NONE: ResponseFlags = ResponseFlags(0);

    pub fn contains(self, other: ResponseFlags) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr for ResponseFlags {
    type Output = ResponseFlags;

    fn bitor(self, other: ResponseFlags) -> ResponseFlags {
        ResponseFlags(self.0 | other.0)
    }
}

impl std::ops::BitOrAssign for ResponseFlags {
    fn bitor_assign(&mut self, other: ResponseFlags) {
        self.0 |= other.0;
    }
}

/// `-` when empty, else the codes joined by `,` (as Envoy writes them).
impl fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        let mut first = true;
        for (flag, code) in ResponseFlags::ALL {
            if self.contains(*flag) {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(code)?;
                first = false;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_like_envoy() {
        assert_eq!(ResponseFlags::NONE.to_string(), "-");
        assert_eq!(ResponseFlags::NO_ROUTE.to_string(), "NR");
        let both = ResponseFlags::UPSTREAM_CONNECTION_FAILURE
            | ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED;
        assert_eq!(both.to_string(), "UF,URX");
        assert!(both.contains(ResponseFlags::UPSTREAM_CONNECTION_FAILURE));
        assert!(!both.contains(ResponseFlags::NO_ROUTE));
    }
}
