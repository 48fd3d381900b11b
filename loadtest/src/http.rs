//! Minimal HTTP/1.1 keep-alive client for the publish APIs (POST with a JSON
//! body, response status + body read by Content-Length or chunked encoding).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub struct HttpClient {
    addr: SocketAddr,
    authority: String,
    api_key: Option<String>,
    conn: Option<BufReader<TcpStream>>,
}

const TIMEOUT: Duration = Duration::from_secs(10);

impl HttpClient {
    pub fn new(addr: SocketAddr, authority: &str, api_key: Option<String>) -> Self {
        HttpClient {
            addr,
            authority: authority.to_string(),
            api_key,
            conn: None,
        }
    }

    /// Sends a request; retries once on a fresh connection if the kept-alive
    /// one turned out to be closed. Returns (status, body).
    pub async fn request(&mut self, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
        let reused = self.conn.is_some();
        match tokio::time::timeout(TIMEOUT, self.try_request(method, path, body)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.conn = None;
                if reused {
                    tokio::time::timeout(TIMEOUT, self.try_request(method, path, body))
                        .await
                        .map_err(|_| anyhow!("http timeout"))?
                } else {
                    Err(e)
                }
            }
            Err(_) => {
                self.conn = None;
                bail!("http timeout")
            }
        }
    }

    pub async fn post(&mut self, path: &str, body: &str) -> Result<(u16, String)> {
        self.request("POST", path, body).await
    }

    async fn try_request(&mut self, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
        if self.conn.is_none() {
            let s = TcpStream::connect(self.addr)
                .await
                .context("http connect")?;
            s.set_nodelay(true)?;
            self.conn = Some(BufReader::new(s));
        }
        let conn = self.conn.as_mut().expect("connected");
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.authority,
            body.len()
        );
        if let Some(k) = &self.api_key {
            req.push_str(&format!("Authorization: apikey {k}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        conn.get_mut().write_all(req.as_bytes()).await?;

        let mut line = String::new();
        if conn.read_line(&mut line).await? == 0 {
            bail!("connection closed");
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad status line {line:?}"))?;
        let mut len: Option<usize> = None;
        let mut chunked = false;
        let mut close = false;
        loop {
            line.clear();
            if conn.read_line(&mut line).await? == 0 {
                bail!("eof in headers");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let k = k.trim().to_ascii_lowercase();
                let v = v.trim();
                match k.as_str() {
                    "content-length" => len = v.parse().ok(),
                    "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
                    "connection" => close = v.eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                conn.read_line(&mut line).await?;
                let n = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)?;
                let mut chunk = vec![0u8; n + 2];
                conn.read_exact(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(n) = len {
            body.resize(n, 0);
            conn.read_exact(&mut body).await?;
        } else {
            conn.read_to_end(&mut body).await?;
            close = true;
        }
        if close {
            self.conn = None;
        }
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}
