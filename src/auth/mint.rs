//! Issuing HS256 tokens.
//!
//! ringcast normally only verifies tokens, but operators need a way to make one
//! (`ringcast token --sub ID ...`) and tests need realistic tokens, so this is a
//! thin wrapper over `jsonwebtoken::encode` that fills in `iat`/`exp` and
//! applies the same `sub` rules the verifier enforces: a minted token is always
//! one the verifier can accept.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::claims::validate_subject;
use super::{AuthError, Claims};

/// Mint an HS256 token valid from now for `ttl` (`iat` = now, `exp` = now + ttl,
/// whole seconds). Fails with `BadKey` for an empty secret and `InvalidSubject`
/// for a `sub` the verifier would refuse.
pub fn mint_hs256(
    secret: &[u8],
    sub: &str,
    user_type: &str,
    roles: &[String],
    topics: &[String],
    app: Option<&str>,
    ttl: Duration,
) -> Result<String, AuthError> {
    if secret.is_empty() {
        return Err(AuthError::BadKey("HS256 secret is empty".to_string()));
    }
    validate_subject(sub)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = Claims {
        sub: sub.to_string(),
        user_type: user_type.to_string(),
        roles: roles.to_vec(),
        topics: topics.to_vec(),
        app: app.map(str::to_string),
        exp: Some(now.saturating_add(ttl.as_secs())),
        nbf: None,
        iat: Some(now),
        aud: None,
        iss: None,
        extra: serde_json::Map::new(),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| AuthError::BadKey(format!("HS256 signing failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::super::{KeySource, Verifier, VerifyOptions};
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn minted_token_round_trips() {
        let secret = b"mint-secret";
        let t = mint_hs256(
            secret,
            "user-1",
            "bot",
            &s(&["admin"]),
            &s(&["chat:team-7:*"]),
            Some("chat"),
            Duration::from_secs(300),
        )
        .unwrap();
        let v = Verifier::new(
            vec![KeySource::Hs256Secret(secret.to_vec())],
            VerifyOptions {
                require_exp: true,
                ..Default::default()
            },
        )
        .unwrap();
        let c = v.verify(&t, Some("chat")).unwrap();
        assert_eq!(c.sub, "user-1");
        assert_eq!(c.user_type, "bot");
        assert!(c.has_role("admin"));
        assert!(c.allows_topic("chat:team-7:random"));
        assert_eq!(c.app.as_deref(), Some("chat"));
        assert_eq!(c.exp.unwrap() - c.iat.unwrap(), 300);
        assert!(c.extra.is_empty());
        assert_eq!(v.verify(&t, Some("other")), Err(AuthError::WrongApp));
    }

    #[test]
    fn minted_header_is_hs256() {
        let t = mint_hs256(b"k", "u", "user", &[], &[], None, Duration::from_secs(1)).unwrap();
        let h = jsonwebtoken::decode_header(&t).unwrap();
        assert_eq!(h.alg, Algorithm::HS256);
        // No `app` claim when none is given.
        let payload = t.split('.').nth(1).unwrap();
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert!(v.get("app").is_none());
    }

    #[test]
    fn mint_rejects_bad_input() {
        let ttl = Duration::from_secs(60);
        assert!(matches!(
            mint_hs256(b"", "u", "user", &[], &[], None, ttl),
            Err(AuthError::BadKey(_))
        ));
        assert_eq!(
            mint_hs256(b"k", "", "user", &[], &[], None, ttl),
            Err(AuthError::InvalidSubject)
        );
        assert_eq!(
            mint_hs256(b"k", "a\tb", "user", &[], &[], None, ttl),
            Err(AuthError::InvalidSubject)
        );
    }
}
