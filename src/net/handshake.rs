//! The RFC 6455 §4.2 opening handshake, server side, as pure functions over a parsed
//! request: validate it and compute `Sec-WebSocket-Accept`.
use base64::Engine as _;
use sha1::{Digest, Sha1};

use super::http::{Request, Response};

/// RFC 6455 §1.3: the GUID appended to the client's key.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Whether the request asks for a WebSocket upgrade at all.
pub fn is_upgrade(req: &Request) -> bool {
    req.header_has_token("upgrade", "websocket")
}

/// `Sec-WebSocket-Accept` for a client key.
pub fn accept_key(key: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(key);
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Check an upgrade request; on success return the accept key, else the HTTP answer.
pub fn check(req: &Request) -> Result<String, Response> {
    // RFC 6455 §4.2.1: "An HTTP/1.1 or higher GET request".
    if req.method != "GET" {
        return Err(
            Response::error(405, "WebSocket upgrade requires GET").with_header("Allow", "GET")
        );
    }
    if req.version < 1 {
        return Err(Response::error(400, "WebSocket upgrade requires HTTP/1.1"));
    }
    if !req.header_has_token("connection", "upgrade") {
        return Err(Response::error(400, "missing `Connection: Upgrade`"));
    }
    // §4.2.2: a version we do not speak gets 426 with the versions we do.
    if req.header_str("sec-websocket-version") != Some("13") {
        return Err(
            Response::error(426, "unsupported WebSocket version; use 13")
                .with_header("Sec-WebSocket-Version", "13"),
        );
    }
    let key = req
        .header_str("sec-websocket-key")
        .ok_or_else(|| Response::error(400, "missing Sec-WebSocket-Key"))?;
    // §4.2.1: the key "when decoded, is 16 bytes in length".
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(k) if k.len() == 16 => Ok(accept_key(key.as_bytes())),
        _ => Err(Response::error(400, "invalid Sec-WebSocket-Key")),
    }
}

/// The 101 answer.
pub fn switching_protocols(accept: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nServer: ringcast\r\n\r\n"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn rfc_sample_key() {
        // RFC 6455 §1.3 example.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    fn req(method: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            method: method.into(),
            path: "/ws".into(),
            query: None,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            version: 1,
            body: Bytes::new(),
        }
    }

    #[test]
    fn checks() {
        let good = [
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        assert!(check(&req("GET", &good)).is_ok());
        assert_eq!(check(&req("POST", &good)).unwrap_err().status, 405);
        let mut v8 = good;
        v8[2].1 = "8";
        assert_eq!(check(&req("GET", &v8)).unwrap_err().status, 426);
        let mut badkey = good;
        badkey[3].1 = "short";
        assert_eq!(check(&req("GET", &badkey)).unwrap_err().status, 400);
        assert_eq!(check(&req("GET", &good[..3])).unwrap_err().status, 400);
        let mut noconn = good;
        noconn[1].1 = "keep-alive";
        assert_eq!(check(&req("GET", &noconn)).unwrap_err().status, 400);
    }
}
