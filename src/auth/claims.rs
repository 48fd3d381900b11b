//! The claim set ringcast understands.
//!
//! Registered claims (`exp`, `nbf`, `iat`, `aud`, `iss`) sit next to ringcast's
//! own (`sub`, `user_type`, `roles`, `topics`, `app`); anything else is kept in
//! `extra` so applications can carry their own data through untouched. Only
//! `sub` is mandatory; the rest default so that minimal tokens from other
//! issuers still deserialize.

use super::AuthError;

/// Longest accepted `sub`, in characters.
pub const MAX_SUBJECT_CHARS: usize = 128;

/// Default for [`Claims::user_type`] when the token has none.
pub fn default_user_type() -> String {
    "user".to_string()
}

/// Checks a user id: 1..=128 characters, none of them control characters.
pub fn validate_subject(sub: &str) -> Result<(), AuthError> {
    let mut n = 0usize;
    for c in sub.chars() {
        if c.is_control() {
            return Err(AuthError::InvalidSubject);
        }
        n += 1;
        if n > MAX_SUBJECT_CHARS {
            return Err(AuthError::InvalidSubject);
        }
    }
    if n == 0 {
        return Err(AuthError::InvalidSubject);
    }
    Ok(())
}

/// Claims ringcast understands; unknown claims are kept in `extra`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Claims {
    /// User id (required, 1..=128 chars, no control chars).
    pub sub: String,
    /// Kind of principal; `"user"` when absent.
    #[serde(default = "default_user_type")]
    pub user_type: String,
    /// Roles granted to the principal.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Extra topics this token may subscribe to: exact names, or a pattern ending
    /// in `*` that matches every topic starting with the text before the `*`
    /// (e.g. `"chat:team-7:*"`).
    #[serde(default)]
    pub topics: Vec<String>,
    /// Application the token is bound to; `None` means any application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Not-before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued-at, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Audience: a string or an array of strings (kept as JSON, as issued).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Every claim not named above.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Claims {
    /// Whether `roles` contains `r` exactly (case-sensitive).
    pub fn has_role(&self, r: &str) -> bool {
        self.roles.iter().any(|x| x == r)
    }

    /// Whether `topics` grants `topic`: an exact entry, or an entry ending in
    /// `*` whose text before the `*` is a prefix of `topic`. Only a trailing `*`
    /// is special; a `*` elsewhere is an ordinary character. A bare `"*"` grants
    /// every topic, as the issuer asked.
    pub fn allows_topic(&self, topic: &str) -> bool {
        self.topics.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => topic.starts_with(prefix),
            None => p == topic,
        })
    }

    /// Whether the token's `aud` (string or array of strings) names `expected`.
    pub(crate) fn audience_contains(&self, expected: &str) -> bool {
        match &self.aud {
            Some(serde_json::Value::String(s)) => s == expected,
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .any(|v| matches!(v, serde_json::Value::String(s) if s == expected)),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: serde_json::Value) -> Claims {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn defaults_and_extra() {
        let c = claims(json!({"sub": "u1", "custom": {"a": 1}, "exp": 10}));
        assert_eq!(c.user_type, "user");
        assert!(c.roles.is_empty() && c.topics.is_empty());
        assert_eq!(c.exp, Some(10));
        assert_eq!(c.extra.get("custom"), Some(&json!({"a": 1})));
        assert!(!c.extra.contains_key("exp") && !c.extra.contains_key("sub"));
        // Round trip keeps extra claims at the top level and omits absent options.
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["custom"], json!({"a": 1}));
        assert!(v.get("nbf").is_none());
        assert_eq!(serde_json::from_value::<Claims>(v).unwrap(), c);
    }

    #[test]
    fn roles() {
        let c = claims(json!({"sub": "u", "roles": ["admin", "mod"]}));
        assert!(c.has_role("admin"));
        assert!(!c.has_role("Admin"));
        assert!(!c.has_role("ad"));
    }

    #[test]
    fn topics_exact_and_prefix() {
        let c = claims(json!({"sub": "u", "topics": ["news", "chat:team-7:*", "a*b"]}));
        assert!(c.allows_topic("news"));
        assert!(!c.allows_topic("news2"));
        assert!(!c.allows_topic("new"));
        assert!(c.allows_topic("chat:team-7:general"));
        assert!(c.allows_topic("chat:team-7:"));
        assert!(!c.allows_topic("chat:team-7"));
        assert!(!c.allows_topic("chat:team-70:x"));
        assert!(c.allows_topic("a*b"));
        assert!(!c.allows_topic("axb"));
        let none = claims(json!({"sub": "u"}));
        assert!(!none.allows_topic("news"));
        let all = claims(json!({"sub": "u", "topics": ["*"]}));
        assert!(all.allows_topic("anything"));
    }

    #[test]
    fn audience_forms() {
        let s = claims(json!({"sub": "u", "aud": "ringcast"}));
        assert!(s.audience_contains("ringcast"));
        assert!(!s.audience_contains("other"));
        let a = claims(json!({"sub": "u", "aud": ["x", "ringcast"]}));
        assert!(a.audience_contains("ringcast"));
        let n = claims(json!({"sub": "u", "aud": 5}));
        assert!(!n.audience_contains("5"));
        assert!(!claims(json!({"sub": "u"})).audience_contains("ringcast"));
    }

    #[test]
    fn subject_rules() {
        assert!(validate_subject("user-42").is_ok());
        assert!(validate_subject(&"é".repeat(128)).is_ok());
        assert_eq!(validate_subject(""), Err(AuthError::InvalidSubject));
        assert_eq!(
            validate_subject(&"x".repeat(129)),
            Err(AuthError::InvalidSubject)
        );
        assert_eq!(validate_subject("a\nb"), Err(AuthError::InvalidSubject));
        assert_eq!(validate_subject("a\u{7f}"), Err(AuthError::InvalidSubject));
        assert_eq!(validate_subject("\0"), Err(AuthError::InvalidSubject));
    }
}
