//! Authentication errors.
//!
//! One variant per reason a token is refused, so callers can log and count them
//! precisely. `Display` is for operators (logs); [`AuthError::message`] is the
//! short text that may be sent to the client. Neither ever includes key bytes:
//! `BadKey` carries only a description written by this module.

/// Why authentication failed (or why a verifier could not be built).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// Not a well-formed compact JWS: wrong segment count, bad base64url, bad
    /// JSON, wrong claim types, unsupported `crit` header, or over the size limit.
    #[error("malformed token")]
    Malformed,
    /// The signature did not verify against any configured key for its algorithm.
    #[error("token signature is invalid")]
    BadSignature,
    /// `exp` is in the past (beyond the configured leeway).
    #[error("token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the configured leeway).
    #[error("token is not valid yet")]
    NotYetValid,
    /// An audience is configured and the token's `aud` does not name it.
    #[error("token audience does not match")]
    WrongAudience,
    /// An issuer is configured and the token's `iss` differs or is absent.
    #[error("token issuer does not match")]
    WrongIssuer,
    /// The header's `alg` is `none`, unknown, or has no configured key.
    #[error("token algorithm is not allowed")]
    AlgorithmNotAllowed,
    /// The token is bound (via its `app` claim) to a different application.
    #[error("token is for a different application")]
    WrongApp,
    /// `sub` is missing, not a string, empty, too long or has control characters.
    #[error("token subject is missing or invalid")]
    InvalidSubject,
    /// `exp` is required by configuration but the token has none.
    #[error("token has no expiry but one is required")]
    MissingExpiry,
    /// A key could not be loaded (server configuration error); the text says why.
    #[error("bad authentication key: {0}")]
    BadKey(String),
}

impl AuthError {
    /// Client-facing text. Safe to send over the wire: it is fixed per variant
    /// and says nothing about the server's keys.
    pub fn message(&self) -> &'static str {
        match self {
            AuthError::Malformed => "malformed token",
            AuthError::BadSignature => "invalid token signature",
            AuthError::Expired => "token expired",
            AuthError::NotYetValid => "token not yet valid",
            AuthError::WrongAudience => "token audience not accepted",
            AuthError::WrongIssuer => "token issuer not accepted",
            AuthError::AlgorithmNotAllowed => "token algorithm not allowed",
            AuthError::WrongApp => "token not valid for this application",
            AuthError::InvalidSubject => "token subject invalid",
            AuthError::MissingExpiry => "token must have an expiry",
            AuthError::BadKey(_) => "server authentication is misconfigured",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_key_message_does_not_echo_detail() {
        let e = AuthError::BadKey("SECRET-DETAIL".into());
        assert!(!e.message().contains("SECRET"));
        assert!(e.to_string().contains("SECRET-DETAIL"));
    }

    #[test]
    fn every_variant_has_a_message() {
        let all = [
            AuthError::Malformed,
            AuthError::BadSignature,
            AuthError::Expired,
            AuthError::NotYetValid,
            AuthError::WrongAudience,
            AuthError::WrongIssuer,
            AuthError::AlgorithmNotAllowed,
            AuthError::WrongApp,
            AuthError::InvalidSubject,
            AuthError::MissingExpiry,
            AuthError::BadKey(String::new()),
        ];
        for e in all {
            assert!(!e.message().is_empty());
        }
    }
}
