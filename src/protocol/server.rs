//! Server → client messages, written once straight into a complete WebSocket text frame.
//!
//! [`FrameWriter`] reserves the largest frame header (10 bytes) in front of the JSON, and
//! [`FrameWriter::finish`] writes the real header right before the payload and drops the
//! unused prefix, so a frame is one allocation and the JSON is never copied. The result is
//! a `Bytes` that fan-out clones (a reference-count bump) for every receiver.
use bytes::{BufMut, Bytes, BytesMut};
use simd_json::prelude::*;
use simd_json::BorrowedValue;

use super::client::RequestId;
use crate::ws;

/// Bytes reserved in front of the payload: the longest server frame header (no mask).
const MAX_HEADER: usize = 10;

/// Builds one text frame; write JSON with the `push_*` helpers, then [`finish`](Self::finish).
pub struct FrameWriter {
    buf: BytesMut,
}

impl FrameWriter {
    pub fn with_capacity(payload: usize) -> Self {
        let mut buf = BytesMut::with_capacity(MAX_HEADER + payload);
        buf.put_bytes(0, MAX_HEADER);
        FrameWriter { buf }
    }

    #[inline]
    pub fn raw(&mut self, s: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(s);
        self
    }

    /// A JSON string literal, escaped.
    pub fn string(&mut self, s: &str) -> &mut Self {
        serde_json::to_writer((&mut self.buf).writer(), s).expect("writing to memory cannot fail");
        self
    }

    /// A JSON value from a parsed client message or API body.
    pub fn value(&mut self, v: &BorrowedValue<'_>) -> &mut Self {
        v.write(&mut (&mut self.buf).writer())
            .expect("writing to memory cannot fail");
        self
    }

    /// `,"id":<id>` when there is an id.
    pub fn id(&mut self, id: Option<&RequestId>) -> &mut Self {
        if let Some(id) = id {
            self.raw(b",\"id\":").raw(id.0.as_bytes());
        }
        self
    }

    pub fn finish(mut self) -> Bytes {
        let len = self.buf.len() - MAX_HEADER;
        let hlen = ws::header_len(len);
        let mut hdr = BytesMut::with_capacity(MAX_HEADER);
        ws::encode_header(ws::OpCode::Text, true, len, &mut hdr);
        debug_assert_eq!(hdr.len(), hlen);
        let start = MAX_HEADER - hlen;
        self.buf[start..MAX_HEADER].copy_from_slice(&hdr);
        let mut frame = self.buf.split_off(start);
        drop(self.buf);
        frame.truncate(hlen + len);
        frame.freeze()
    }
}

/// How a delivered message names its origin in `"topic"`.
#[derive(Debug, Clone, Copy)]
pub enum Via<'a> {
    Topic(&'a str),
    User,
    Broadcast,
    Direct,
}

/// `{"type":"message","topic":...,"data":...}`.
pub fn message(via: Via<'_>, data: &BorrowedValue<'_>) -> Bytes {
    let mut w = FrameWriter::with_capacity(64);
    w.raw(br#"{"type":"message","topic":"#);
    match via {
        Via::Topic(t) => w.string(t),
        Via::User => w.raw(br#""user""#),
        Via::Broadcast => w.raw(br#""broadcast""#),
        Via::Direct => w.raw(br#""direct""#),
    };
    w.raw(br#","data":"#).value(data).raw(b"}");
    w.finish()
}

pub fn auth_success(user_type: &str, user_id: Option<&str>, conn_id: &str) -> Bytes {
    let mut w = FrameWriter::with_capacity(96);
    w.raw(br#"{"type":"auth_success","user_type":"#)
        .string(user_type)
        .raw(br#","user_id":"#);
    match user_id {
        Some(u) => w.string(u),
        None => w.raw(b"null"),
    };
    w.raw(br#","conn_id":"#).string(conn_id).raw(b"}");
    w.finish()
}

pub fn auth_required(timeout_secs: u64) -> Bytes {
    let mut w = FrameWriter::with_capacity(48);
    w.raw(br#"{"type":"auth_required","timeout":"#)
        .raw(timeout_secs.to_string().as_bytes())
        .raw(b"}");
    w.finish()
}

pub fn subscribed(topic: &str, id: Option<&RequestId>) -> Bytes {
    let mut w = FrameWriter::with_capacity(64);
    w.raw(br#"{"type":"subscribed","topic":"#)
        .string(topic)
        .raw(br#","recovered":false"#)
        .id(id)
        .raw(b"}");
    w.finish()
}

pub fn unsubscribed(topic: &str, id: Option<&RequestId>) -> Bytes {
    let mut w = FrameWriter::with_capacity(64);
    w.raw(br#"{"type":"unsubscribed","topic":"#)
        .string(topic)
        .id(id)
        .raw(b"}");
    w.finish()
}

/// `{"type":"reply","id":...,"data":...}`: a backend hook's answer to a `custom` message.
pub fn reply(id: Option<&RequestId>, data: &simd_json::OwnedValue) -> Bytes {
    let mut w = FrameWriter::with_capacity(64);
    w.raw(br#"{"type":"reply""#).id(id).raw(br#","data":"#);
    data.write(&mut (&mut w.buf).writer())
        .expect("writing to memory cannot fail");
    w.raw(b"}");
    w.finish()
}

/// `{"type":"join"|"leave","topic":...,"user_type":...,"user_id":...}`.
pub fn presence_event(kind: &str, topic: &str, user_type: &str, user_id: Option<&str>) -> Bytes {
    let mut w = FrameWriter::with_capacity(96);
    w.raw(br#"{"type":"#)
        .string(kind)
        .raw(br#","topic":"#)
        .string(topic)
        .raw(br#","user_type":"#)
        .string(user_type);
    w.raw(br#","user_id":"#);
    match user_id {
        Some(u) => w.string(u),
        None => w.raw(b"null"),
    };
    w.raw(b"}");
    w.finish()
}

pub fn ack(id: &RequestId) -> Bytes {
    let mut w = FrameWriter::with_capacity(32);
    w.raw(br#"{"type":"ack","id":"#)
        .raw(id.0.as_bytes())
        .raw(b"}");
    w.finish()
}

pub fn pong(
    user_type: Option<&str>,
    user_id: Option<&str>,
    timestamp_ms: u64,
    id: Option<&RequestId>,
) -> Bytes {
    let mut w = FrameWriter::with_capacity(96);
    w.raw(br#"{"type":"pong","user_type":"#);
    match user_type {
        Some(t) => w.string(t),
        None => w.raw(b"null"),
    };
    w.raw(br#","user_id":"#);
    match user_id {
        Some(u) => w.string(u),
        None => w.raw(b"null"),
    };
    w.raw(br#","timestamp":"#)
        .raw(timestamp_ms.to_string().as_bytes())
        .id(id)
        .raw(b"}");
    w.finish()
}

pub fn error(code: &str, message: &str, id: Option<&RequestId>) -> Bytes {
    let mut w = FrameWriter::with_capacity(64 + message.len());
    w.raw(br#"{"type":"error","code":"#)
        .string(code)
        .raw(br#","message":"#)
        .string(message)
        .id(id)
        .raw(b"}");
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Split a server frame into (header byte 0, payload) after checking its length field.
    fn payload(frame: &Bytes) -> &str {
        assert_eq!(frame[0], 0x81, "FIN + text");
        let (len, off) = match frame[1] {
            n @ 0..=125 => (n as usize, 2),
            126 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
            _ => (
                u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize,
                10,
            ),
        };
        assert_eq!(frame.len(), off + len, "length field matches");
        std::str::from_utf8(&frame[off..]).unwrap()
    }

    #[test]
    fn message_frame_is_valid_json() {
        let mut data = br#"{"text":"hi \"there\"","n":[1,2]}"#.to_vec();
        let v = simd_json::to_borrowed_value(&mut data).unwrap();
        let f = message(Via::Topic("chat:1"), &v);
        let s = payload(&f);
        let parsed: serde_json::Value = serde_json::from_str(s).unwrap();
        assert_eq!(parsed["type"], "message");
        assert_eq!(parsed["topic"], "chat:1");
        assert_eq!(parsed["data"]["text"], "hi \"there\"");
    }

    #[test]
    fn header_sizes_for_each_length_class() {
        for n in [0usize, 100, 125, 126, 1000, 65535, 65536, 200_000] {
            let mut w = FrameWriter::with_capacity(n);
            w.raw(b"\"");
            w.raw(&vec![b'a'; n]);
            w.raw(b"\"");
            let f = w.finish();
            assert_eq!(payload(&f).len(), n + 2);
        }
    }

    #[test]
    fn ids_and_escapes() {
        let id = RequestId("\"x\"".into());
        let f = error("bad_request", "a \"quoted\"\nmessage", Some(&id));
        let v: serde_json::Value = serde_json::from_str(payload(&f)).unwrap();
        assert_eq!(v["id"], "x");
        assert_eq!(v["message"], "a \"quoted\"\nmessage");
        let f = auth_success("user", None, "0-1");
        let v: serde_json::Value = serde_json::from_str(payload(&f)).unwrap();
        assert!(v["user_id"].is_null());
        let f = pong(Some("user"), Some("u\"1"), 5, None);
        let v: serde_json::Value = serde_json::from_str(payload(&f)).unwrap();
        assert_eq!(v["user_id"], "u\"1");
    }
}
