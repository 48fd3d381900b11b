//! Finding the token on a WebSocket upgrade request.
//!
//! Browsers cannot set headers on `new WebSocket(...)`, so the token may arrive
//! in the query string or a cookie as well as in `Authorization: Bearer`. The
//! sources are tried in a fixed order (query, header, cookie) and the first
//! non-empty token wins. This works on already-split request parts (the raw
//! query string and lower-cased header names) so it stays independent of the
//! HTTP parser.

/// Token from an upgrade request, in this order: `?token=` query parameter
/// (percent-decoded), `Authorization: Bearer T`, then a cookie named
/// `cookie_name` (Cookie header parsing: `a=1; b=2`). Header names in
/// `headers` are lower-case. Empty values count as absent.
pub fn token_from_request(
    query: Option<&str>,
    headers: &[(String, Vec<u8>)],
    cookie_name: &str,
) -> Option<String> {
    query
        .and_then(token_from_query)
        .or_else(|| token_from_authorization(headers))
        .or_else(|| token_from_cookie(headers, cookie_name))
}

/// The first non-empty `token` parameter. A leading `?` is tolerated. `+` is
/// kept as-is: JWTs are base64url and never contain spaces, so form-style
/// `+`→space decoding could only corrupt a token.
fn token_from_query(query: &str) -> Option<String> {
    let query = query.strip_prefix('?').unwrap_or(query);
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .filter(|(k, _)| percent_decode(k).as_deref() == Some("token"))
        .find_map(|(_, v)| percent_decode(v).filter(|t| !t.is_empty()))
}

/// `Authorization: Bearer <token>`, scheme matched case-insensitively.
fn token_from_authorization(headers: &[(String, Vec<u8>)]) -> Option<String> {
    headers
        .iter()
        .filter(|(name, _)| name == "authorization")
        .find_map(|(_, value)| {
            let value = std::str::from_utf8(value).ok()?.trim();
            let (scheme, rest) = value.split_once([' ', '\t'])?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return None;
            }
            let token = rest.trim();
            (!token.is_empty()).then(|| token.to_string())
        })
}

/// The named cookie from any `Cookie` header (`a=1; b=2`). Surrounding
/// double quotes (allowed by RFC 6265) are removed.
fn token_from_cookie(headers: &[(String, Vec<u8>)], cookie_name: &str) -> Option<String> {
    if cookie_name.is_empty() {
        return None;
    }
    headers
        .iter()
        .filter(|(name, _)| name == "cookie")
        .filter_map(|(_, value)| std::str::from_utf8(value).ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.split_once('='))
        .filter(|(name, _)| name.trim() == cookie_name)
        .find_map(|(_, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|x| x.strip_suffix('"'))
                .unwrap_or(v);
            (!v.is_empty()).then(|| v.to_string())
        })
}

/// Decodes `%XX` escapes; `None` for a bad escape or non-UTF-8 result.
fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_string());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex_val(*bytes.get(i + 1)?)?;
            let lo = hex_val(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(name: &str, value: &str) -> (String, Vec<u8>) {
        (name.to_string(), value.as_bytes().to_vec())
    }

    const C: &str = "rc_token";

    #[test]
    fn query_parameter() {
        assert_eq!(
            token_from_request(Some("token=abc.def.ghi"), &[], C).as_deref(),
            Some("abc.def.ghi")
        );
        assert_eq!(
            token_from_request(Some("?room=1&token=a.b.c&x=y"), &[], C).as_deref(),
            Some("a.b.c")
        );
        // Percent-decoding of value and key; `+` kept literally.
        assert_eq!(
            token_from_request(Some("%74oken=a%2Eb%2ec%3D+"), &[], C).as_deref(),
            Some("a.b.c=+")
        );
        // First non-empty `token` wins; other keys ignored.
        assert_eq!(
            token_from_request(Some("tokens=x&token=&token=second&token=third"), &[], C).as_deref(),
            Some("second")
        );
        assert_eq!(token_from_request(Some("mytoken=x&token"), &[], C), None);
        assert_eq!(token_from_request(Some(""), &[], C), None);
        // Bad escapes are ignored rather than passed through.
        assert_eq!(token_from_request(Some("token=a%zz"), &[], C), None);
        assert_eq!(token_from_request(Some("token=a%f"), &[], C), None);
        assert_eq!(token_from_request(Some("token=%ff%fe"), &[], C), None);
    }

    #[test]
    fn bearer_header() {
        for v in ["Bearer tok", "bearer tok", "BEARER  tok ", "BeArEr\ttok"] {
            let hs = [h("authorization", v)];
            assert_eq!(
                token_from_request(None, &hs, C).as_deref(),
                Some("tok"),
                "{v}"
            );
        }
        for v in [
            "Basic dXNlcjpwYXNz",
            "Bearer",
            "Bearer   ",
            "Bearertok",
            "tok",
        ] {
            let hs = [h("authorization", v)];
            assert_eq!(token_from_request(None, &hs, C), None, "{v}");
        }
        // Non-UTF-8 header value is skipped; a later valid one is used.
        let hs = [
            ("authorization".to_string(), vec![0xff, 0xfe]),
            h("authorization", "Bearer later"),
        ];
        assert_eq!(token_from_request(None, &hs, C).as_deref(), Some("later"));
    }

    #[test]
    fn cookie() {
        let hs = [h("cookie", "a=1; rc_token=tok.en.x; b=2")];
        assert_eq!(
            token_from_request(None, &hs, C).as_deref(),
            Some("tok.en.x")
        );
        let hs = [h("cookie", "rc_token=\"quoted\"")];
        assert_eq!(token_from_request(None, &hs, C).as_deref(), Some("quoted"));
        // Missing cookie, similarly named cookies, several Cookie headers.
        let hs = [h("cookie", "a=1; b=2")];
        assert_eq!(token_from_request(None, &hs, C), None);
        let hs = [h("cookie", "xrc_token=1; rc_token_old=2; rc_token=")];
        assert_eq!(token_from_request(None, &hs, C), None);
        let hs = [h("cookie", "a=1"), h("cookie", "rc_token=second")];
        assert_eq!(token_from_request(None, &hs, C).as_deref(), Some("second"));
        assert_eq!(token_from_request(None, &[], C), None);
        assert_eq!(token_from_request(None, &[h("cookie", "=x")], ""), None);
    }

    #[test]
    fn source_order() {
        let all = [
            h("cookie", "rc_token=from-cookie"),
            h("authorization", "Bearer from-header"),
        ];
        assert_eq!(
            token_from_request(Some("token=from-query"), &all, C).as_deref(),
            Some("from-query")
        );
        assert_eq!(
            token_from_request(Some("other=1"), &all, C).as_deref(),
            Some("from-header")
        );
        assert_eq!(
            token_from_request(None, &all[..1], C).as_deref(),
            Some("from-cookie")
        );
        // A non-Bearer Authorization falls through to the cookie.
        let basic = [h("authorization", "Basic x"), h("cookie", "rc_token=c")];
        assert_eq!(token_from_request(None, &basic, C).as_deref(), Some("c"));
        // Header names must already be lower-case (as documented).
        let upper = [h("Authorization", "Bearer x")];
        assert_eq!(token_from_request(None, &upper, C), None);
    }

    #[test]
    fn percent_decode_rules() {
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("%41%42c").as_deref(), Some("ABc"));
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%G0"), None);
    }
}
