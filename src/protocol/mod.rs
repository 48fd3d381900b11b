//! The client protocol (SPEC §3): JSON text frames with a `type`.
//!
//! [`client`] turns a client's text message into a typed [`client::ClientMsg`] with
//! simd-json; [`server`] writes server messages straight into complete WebSocket frames
//! (`Bytes`), once, so fan-out only clones the buffer. Neither knows about sockets.
pub mod client;
pub mod server;

/// Error codes sent in `{"type":"error","code":...}`; stable strings clients can match on.
pub mod code {
    pub const BAD_JSON: &str = "bad_json";
    pub const BAD_REQUEST: &str = "bad_request";
    pub const UNKNOWN_TYPE: &str = "unknown_type";
    pub const NOT_AUTHENTICATED: &str = "not_authenticated";
    pub const ALREADY_AUTHENTICATED: &str = "already_authenticated";
    pub const INVALID_TOPIC: &str = "invalid_topic";
    pub const FORBIDDEN: &str = "forbidden";
    pub const TOO_MANY_SUBSCRIPTIONS: &str = "too_many_subscriptions";
    pub const NOT_SUBSCRIBED: &str = "not_subscribed";
    pub const UNSUPPORTED: &str = "unsupported";
    pub const RATE_LIMITED: &str = "rate_limited";
    pub const HOOK_FAILED: &str = "hook_failed";
    pub const AUTH_FAILED: &str = "auth_failed";
}

/// Longest topic name accepted, in bytes.
pub const MAX_TOPIC_LEN: usize = 200;

/// Topic names are restricted to a safe alphabet so they never need escaping in frames,
/// Redis channel names or URLs: `A-Z a-z 0-9 _ - : . @ / = + , ~ { }`.
pub fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= MAX_TOPIC_LEN
        && t.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'_' | b'-'
                        | b':'
                        | b'.'
                        | b'@'
                        | b'/'
                        | b'='
                        | b'+'
                        | b','
                        | b'~'
                        | b'{'
                        | b'}'
                )
        })
}

/// The personal topic of a user, to which each of its connections is subscribed.
pub fn user_topic(user_type: &str, user_id: &str) -> String {
    format!("user:{user_type}:{user_id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn topic_alphabet() {
        assert!(valid_topic("chat:room-1"));
        assert!(valid_topic("user:staff:42"));
        assert!(!valid_topic(""));
        assert!(!valid_topic("a b"));
        assert!(!valid_topic("a\"b"));
        assert!(!valid_topic(&"x".repeat(MAX_TOPIC_LEN + 1)));
    }
}
