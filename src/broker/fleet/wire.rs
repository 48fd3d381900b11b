//! What one node puts on a Redis channel for the others: a small binary envelope
//! around an already complete WebSocket frame, so a receiving node never re-encodes.
//!
//! ```text
//! b'r' 1 | node-id length (1 byte) | node id | kind (1 byte) | body
//! ```
//! The node id lets a node drop its own messages when Redis echoes them back (it
//! delivered them locally already). Hand-written rather than serde: it sits on every
//! cross-node message, and the body (a frame) must be sliced out without a copy.
use bytes::{BufMut, Bytes, BytesMut};

const MAGIC: u8 = b'r';
const VERSION: u8 = 1;

/// What a message asks the receiving node to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Deliver this frame to the channel's receivers (topic subscribers or broadcast).
    Frame(Bytes),
    /// Close every local connection of the user whose personal topic this is.
    DisconnectUser { code: u16 },
    /// Deliver this frame to one connection of the receiving node.
    ToConn { id: u64, frame: Bytes },
    /// Close one connection of the receiving node.
    DisconnectConn { id: u64, code: u16 },
}

/// A decoded envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub origin: &'a [u8],
    pub body: Body,
}

/// Encode an envelope from `origin` (this node's id).
pub fn encode(origin: &str, body: &Body) -> Bytes {
    let extra = match body {
        Body::Frame(f) => f.len(),
        Body::ToConn { frame, .. } => 8 + frame.len(),
        Body::DisconnectUser { .. } => 2,
        Body::DisconnectConn { .. } => 10,
    };
    let mut b = BytesMut::with_capacity(4 + origin.len() + extra);
    b.put_u8(MAGIC);
    b.put_u8(VERSION);
    b.put_u8(origin.len() as u8);
    b.put_slice(origin.as_bytes());
    match body {
        Body::Frame(f) => {
            b.put_u8(b'F');
            b.put_slice(f);
        }
        Body::DisconnectUser { code } => {
            b.put_u8(b'D');
            b.put_u16(*code);
        }
        Body::ToConn { id, frame } => {
            b.put_u8(b'C');
            b.put_u64(*id);
            b.put_slice(frame);
        }
        Body::DisconnectConn { id, code } => {
            b.put_u8(b'X');
            b.put_u64(*id);
            b.put_u16(*code);
        }
    }
    b.freeze()
}

/// Decode an envelope; `None` for anything malformed (a foreign publisher on our
/// channels, a newer version). Frames are slices of `payload`, not copies.
pub fn decode(payload: &Bytes) -> Option<Envelope<'_>> {
    let p = &payload[..];
    if p.len() < 4 || p[0] != MAGIC || p[1] != VERSION {
        return None;
    }
    let n = usize::from(p[2]);
    let origin = p.get(3..3 + n)?;
    let kind = *p.get(3 + n)?;
    let at = 4 + n;
    let rest = &p[at..];
    let u64_at =
        |r: &[u8]| -> Option<u64> { Some(u64::from_be_bytes(r.get(..8)?.try_into().ok()?)) };
    let u16_at =
        |r: &[u8]| -> Option<u16> { Some(u16::from_be_bytes(r.get(..2)?.try_into().ok()?)) };
    let body = match kind {
        b'F' if !rest.is_empty() => Body::Frame(payload.slice(at..)),
        b'D' if rest.len() == 2 => Body::DisconnectUser {
            code: u16_at(rest)?,
        },
        b'C' if rest.len() > 8 => Body::ToConn {
            id: u64_at(rest)?,
            frame: payload.slice(at + 8..),
        },
        b'X' if rest.len() == 10 => Body::DisconnectConn {
            id: u64_at(rest)?,
            code: u16_at(&rest[8..])?,
        },
        _ => return None,
    };
    Some(Envelope { origin, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_kind() {
        let frame = Bytes::from_static(b"\x81\x02hi");
        for body in [
            Body::Frame(frame.clone()),
            Body::DisconnectUser { code: 4000 },
            Body::ToConn {
                id: 1 << 48 | 9,
                frame: frame.clone(),
            },
            Body::DisconnectConn { id: 7, code: 4000 },
        ] {
            let b = encode("node_1", &body);
            let e = decode(&b).expect("decodes");
            assert_eq!(e.origin, b"node_1");
            assert_eq!(e.body, body);
        }
    }

    #[test]
    fn frames_are_slices_of_the_payload() {
        let b = encode("n", &Body::Frame(Bytes::from_static(b"frame")));
        let Some(Envelope {
            body: Body::Frame(f),
            ..
        }) = decode(&b)
        else {
            panic!("not a frame")
        };
        assert_eq!(f.as_ptr(), b[b.len() - 5..].as_ptr());
    }

    #[test]
    fn rejects_garbage_and_truncation() {
        assert_eq!(decode(&Bytes::from_static(b"")), None);
        assert_eq!(decode(&Bytes::from_static(b"{\"method\":1}")), None);
        let good = encode("abc", &Body::DisconnectConn { id: 1, code: 2 });
        for cut in 0..good.len() {
            assert_eq!(decode(&good.slice(..cut)), None, "cut at {cut}");
        }
        let mut bad = good.to_vec();
        bad[1] = 9;
        assert_eq!(decode(&Bytes::from(bad)), None);
        assert_eq!(decode(&Bytes::from_static(b"r\x01\x09ab")), None);
        assert_eq!(decode(&Bytes::from_static(b"r\x01\x01aF")), None);
    }
}
