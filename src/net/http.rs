//! HTTP/1.1 on the WebSocket listener, parsed with `httparse`: just enough for the upgrade,
//! `/health`, the demo page and the JSON API. Requests are bounded in header size, header
//! count, body size and time (a client that trickles bytes is cut off at the deadline).
use bytes::{Bytes, BytesMut};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use std::time::{Duration, Instant};

/// Most headers accepted in one request.
pub const MAX_HEADERS: usize = 64;

/// A parsed request; owned, since HTTP is not the hot path.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    pub query: Option<String>,
    /// Header names lower-cased.
    pub headers: Vec<(String, Vec<u8>)>,
    /// HTTP/1.0 = 0, HTTP/1.1 = 1.
    pub version: u8,
    pub body: Bytes,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::trim)
    }

    /// Whether a comma-separated header contains `token` (case-insensitive).
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// A query parameter, percent-decoded.
    pub fn query_param(&self, key: &str) -> Option<String> {
        let q = self.query.as_deref()?;
        q.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k)? == key)
                .then(|| percent_decode(v))
                .flatten()
        })
    }

    pub fn keep_alive(&self) -> bool {
        if self.header_has_token("connection", "close") {
            return false;
        }
        self.version == 1 || self.header_has_token("connection", "keep-alive")
    }
}

/// Percent-decode a URL component (`+` is a space).
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 3;
            }
            b'%' => return None,
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Why a request could not be read; each maps to one answer.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The peer closed or the socket failed: nothing to answer.
    Closed,
    /// Deadline passed before a complete request (slowloris).
    Timeout,
    BadRequest(&'static str),
    HeadersTooLarge,
    BodyTooLarge,
    LengthRequired,
}

impl ReadError {
    pub fn response(&self) -> Option<Response> {
        Some(match self {
            ReadError::Closed => return None,
            ReadError::Timeout => Response::error(408, "request timeout"),
            ReadError::BadRequest(m) => Response::error(400, m),
            ReadError::HeadersTooLarge => Response::error(431, "request headers too large"),
            ReadError::BodyTooLarge => Response::error(413, "request body too large"),
            ReadError::LengthRequired => {
                Response::error(411, "chunked bodies are not supported; send Content-Length")
            }
        })
    }
}

/// Limits applied while reading a request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    pub timeout: Duration,
}

/// Outcome of trying to parse the bytes gathered so far.
enum Parsed {
    Partial,
    Head {
        req: Request,
        head_len: usize,
        body_len: usize,
    },
}

fn parse_head(buf: &[u8], limits: &Limits) -> Result<Parsed, ReadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Request::new(&mut headers);
    let status = r.parse(buf).map_err(|e| match e {
        httparse::Error::TooManyHeaders => ReadError::HeadersTooLarge,
        _ => ReadError::BadRequest("malformed HTTP request"),
    })?;
    let head_len = match status {
        httparse::Status::Partial => {
            return if buf.len() > limits.max_header_bytes {
                Err(ReadError::HeadersTooLarge)
            } else {
                Ok(Parsed::Partial)
            };
        }
        httparse::Status::Complete(n) => n,
    };
    if head_len > limits.max_header_bytes {
        return Err(ReadError::HeadersTooLarge);
    }
    let target = r.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target.to_owned(), None),
    };
    let headers: Vec<(String, Vec<u8>)> = r
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect();
    let req = Request {
        method: r.method.unwrap_or("").to_owned(),
        path,
        query,
        headers,
        version: r.version.unwrap_or(1),
        body: Bytes::new(),
    };
    if req.header_has_token("transfer-encoding", "chunked") {
        return Err(ReadError::LengthRequired);
    }
    let body_len = match req.header_str("content-length") {
        None => 0,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| ReadError::BadRequest("invalid Content-Length"))?,
    };
    if body_len > limits.max_body_bytes {
        return Err(ReadError::BodyTooLarge);
    }
    Ok(Parsed::Head {
        req,
        head_len,
        body_len,
    })
}

/// Read one request from `stream`, using `buf` for what has arrived (bytes after the
/// request stay in `buf`: pipelined requests or the first WebSocket frames).
/// `Ok(None)`: the peer closed cleanly between requests.
pub async fn read_request(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Request>, ReadError> {
    let deadline = Instant::now() + limits.timeout;
    loop {
        if !buf.is_empty() {
            if let Parsed::Head {
                mut req,
                head_len,
                body_len,
            } = parse_head(buf, limits)?
            {
                while buf.len() < head_len + body_len {
                    fill(stream, buf, deadline).await?;
                }
                let mut all = buf.split_to(head_len + body_len);
                req.body = all.split_off(head_len).freeze();
                return Ok(Some(req));
            }
        }
        match fill(stream, buf, deadline).await {
            Err(ReadError::Closed) if buf.is_empty() => return Ok(None),
            Err(e) => return Err(e),
            Ok(()) => {}
        }
    }
}

/// Append one read's worth of bytes to `buf`, before `deadline`.
async fn fill(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    deadline: Instant,
) -> Result<(), ReadError> {
    buf.reserve(4096);
    let len = buf.len();
    let owned = std::mem::take(buf);
    let left = deadline.saturating_duration_since(Instant::now());
    let read = monoio::time::timeout(left, stream.read(owned.slice_mut(len..))).await;
    match read {
        Err(_) => Err(ReadError::Timeout),
        Ok((res, slice)) => {
            *buf = slice.into_inner();
            match res {
                Ok(0) | Err(_) => Err(ReadError::Closed),
                Ok(_) => Ok(()),
            }
        }
    }
}

/// A response to write.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

impl Response {
    pub fn json(status: u16, body: impl Into<Bytes>) -> Self {
        Response {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// `{"error": {"code": status, "message": ...}}`
    pub fn error(status: u16, message: &str) -> Self {
        let body =
            serde_json::json!({ "error": { "status": status, "message": message } }).to_string();
        Response::json(status, body)
    }

    /// Prometheus text exposition.
    pub fn prometheus(body: String) -> Self {
        Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn html(body: &'static str) -> Self {
        Response {
            status: 200,
            content_type: "text/html; charset=utf-8",
            headers: Vec::new(),
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn encode(&self, keep_alive: bool) -> Vec<u8> {
        use std::fmt::Write as _;
        let mut head = String::with_capacity(160);
        let _ = write!(
            head,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nServer: ringcast\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (n, v) in &self.headers {
            let _ = write!(head, "{n}: {v}\r\n");
        }
        head.push_str(if keep_alive {
            "Connection: keep-alive\r\n\r\n"
        } else {
            "Connection: close\r\n\r\n"
        });
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

pub async fn write_response(
    stream: &mut TcpStream,
    resp: &Response,
    keep_alive: bool,
) -> std::io::Result<()> {
    let (res, _) = stream.write_all(resp.encode(keep_alive)).await;
    res.map(|_| ())
}

pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        max_header_bytes: 1024,
        max_body_bytes: 16,
        timeout: Duration::from_secs(1),
    };

    fn head(s: &str) -> Result<Option<Request>, ReadError> {
        match parse_head(s.as_bytes(), &L)? {
            Parsed::Partial => Ok(None),
            Parsed::Head { req, .. } => Ok(Some(req)),
        }
    }

    #[test]
    fn parses_path_query_headers() {
        let r = head("GET /ws?token=a%20b&x=1 HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\n\r\n").unwrap().unwrap();
        assert_eq!(r.path, "/ws");
        assert_eq!(r.query_param("token").as_deref(), Some("a b"));
        assert_eq!(r.query_param("x").as_deref(), Some("1"));
        assert_eq!(r.query_param("y"), None);
        assert!(r.header_has_token("connection", "upgrade"));
        assert!(r.keep_alive());
    }

    #[test]
    fn limits_and_errors() {
        assert_eq!(
            head("GET / HTTP/1.1\r\nHost: x\r\n").unwrap().map(|_| ()),
            None,
            "partial"
        );
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(2000));
        assert_eq!(head(&long).unwrap_err(), ReadError::HeadersTooLarge);
        assert_eq!(
            head("GARBAGE\r\n\r\n").unwrap_err(),
            ReadError::BadRequest("malformed HTTP request")
        );
        assert_eq!(
            head("POST / HTTP/1.1\r\nContent-Length: 99\r\n\r\n").unwrap_err(),
            ReadError::BodyTooLarge
        );
        assert_eq!(
            head("POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n").unwrap_err(),
            ReadError::BadRequest("invalid Content-Length")
        );
        assert_eq!(
            head("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap_err(),
            ReadError::LengthRequired
        );
        let many: String = (0..70).map(|i| format!("H{i}: v\r\n")).collect();
        assert_eq!(
            head(&format!("GET / HTTP/1.1\r\n{many}\r\n")).unwrap_err(),
            ReadError::HeadersTooLarge
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb+c").as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
    }
}
