//! The WebSocket base framing protocol (RFC 6455 §5.2): opcodes, header
//! parsing for client frames, and encoding of (unmasked) server frames.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! | Masking-key (continued)       |          Payload Data         |
//! +-------------------------------- - - - - - - - - - - - - - - - +
//! ```
//!
//! Header parsing is split from payload handling so that the decoder can
//! validate everything the header says (and refuse oversized frames) before a
//! single payload byte is buffered. [`parse_header`] enforces the per-frame
//! rules that need no connection state; rules that depend on the message in
//! progress (fragmentation, size limits) live in the decoder. It fails as soon
//! as the offending byte is present rather than waiting for the full header.
//!
//! The encoders write server frames, which are never masked ("A server MUST
//! NOT mask any frames that it sends to the client", §5.1), and always use the
//! minimal length encoding, producing header and payload in one allocation.

use bytes::{BufMut, Bytes, BytesMut};

use super::ProtocolError;

/// Frame opcode (RFC 6455 §5.2). The reserved opcodes 0x3-0x7 and 0xB-0xF
/// have no variant: no extension defining them is ever negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: continuation of a fragmented data message.
    Continuation,
    /// 0x1: text (UTF-8) data frame.
    Text,
    /// 0x2: binary data frame.
    Binary,
    /// 0x8: connection close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// Decode the low nibble of the first header byte; `None` for reserved opcodes.
    pub fn from_u8(v: u8) -> Option<OpCode> {
        match v {
            0x0 => Some(OpCode::Continuation),
            0x1 => Some(OpCode::Text),
            0x2 => Some(OpCode::Binary),
            0x8 => Some(OpCode::Close),
            0x9 => Some(OpCode::Ping),
            0xA => Some(OpCode::Pong),
            _ => None,
        }
    }

    /// The wire value of this opcode.
    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Control frames are Close, Ping and Pong (opcodes with the high bit set).
    pub fn is_control(self) -> bool {
        self.as_u8() & 0x8 != 0
    }
}

/// Largest payload a control frame may carry (§5.5: "All control frames
/// MUST have a payload length of 125 bytes or less").
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A parsed, validated client frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN bit: this is the final fragment of a message.
    pub fin: bool,
    /// Frame opcode.
    pub opcode: OpCode,
    /// Masking key (client frames are always masked).
    pub mask: [u8; 4],
    /// Declared payload length.
    pub payload_len: u64,
    /// Bytes occupied by the header itself (6, 8 or 14 for masked frames).
    pub header_len: usize,
}

/// Parse the header of a client-to-server frame at the start of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed. Errors are reported as soon
/// as the bytes that prove them are present. Enforced here:
///
/// * RSV1-3: "MUST be 0 unless an extension is negotiated that defines
///   meanings for non-zero values" (§5.2) — no extensions are negotiated.
/// * Reserved opcodes: "If an unknown opcode is received, the receiving
///   endpoint MUST _Fail the WebSocket Connection_" (§5.2).
/// * Masking: "The server MUST close the connection upon receiving a frame
///   that is not masked" (§5.1).
/// * Control frames: "All control frames MUST have a payload length of 125
///   bytes or less and MUST NOT be fragmented" (§5.5).
/// * 64-bit length: "the most significant bit MUST be 0" (§5.2).
/// * "the minimal number of bytes MUST be used to encode the length" (§5.2).
pub fn parse_header(buf: &[u8]) -> Result<Option<FrameHeader>, ProtocolError> {
    let Some(&b0) = buf.first() else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(ProtocolError::ReservedBits);
    }
    let opcode = OpCode::from_u8(b0 & 0x0f).ok_or(ProtocolError::ReservedOpcode(b0 & 0x0f))?;
    let fin = b0 & 0x80 != 0;
    if opcode.is_control() && !fin {
        return Err(ProtocolError::FragmentedControl);
    }
    let Some(&b1) = buf.get(1) else {
        return Ok(None);
    };
    if b1 & 0x80 == 0 {
        return Err(ProtocolError::UnmaskedFrame);
    }
    let len7 = b1 & 0x7f;
    if opcode.is_control() && usize::from(len7) > MAX_CONTROL_PAYLOAD {
        return Err(ProtocolError::ControlFrameTooLong);
    }
    let (payload_len, len_end) = match len7 {
        126 => {
            let Some(ext) = buf.get(2..4) else {
                return Ok(None);
            };
            let len = u16::from_be_bytes([ext[0], ext[1]]);
            if len < 126 {
                return Err(ProtocolError::NonMinimalLength);
            }
            (u64::from(len), 4)
        }
        127 => {
            // Fail on the high bit as soon as its byte has arrived.
            if buf.get(2).is_some_and(|&b| b & 0x80 != 0) {
                return Err(ProtocolError::InvalidLength);
            }
            let Some(ext) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut be = [0u8; 8];
            be.copy_from_slice(ext);
            let len = u64::from_be_bytes(be);
            if len <= 0xffff {
                return Err(ProtocolError::NonMinimalLength);
            }
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    let header_len = len_end + 4;
    let Some(key) = buf.get(len_end..header_len) else {
        return Ok(None);
    };
    Ok(Some(FrameHeader {
        fin,
        opcode,
        mask: [key[0], key[1], key[2], key[3]],
        payload_len,
        header_len,
    }))
}

/// Length of an unmasked (server) frame header for a payload of `payload_len`
/// bytes: 2, 4 or 10.
#[inline]
pub fn header_len(payload_len: usize) -> usize {
    if payload_len < 126 {
        2
    } else if payload_len <= 0xffff {
        4
    } else {
        10
    }
}

/// Append an unmasked frame header to `out`, for callers that build the
/// payload in place right after it.
///
/// Control frames must have `fin == true` and `payload_len <= 125`
/// (checked with `debug_assert!`).
pub fn encode_header(opcode: OpCode, fin: bool, payload_len: usize, out: &mut BytesMut) {
    debug_assert!(
        !opcode.is_control() || (fin && payload_len <= MAX_CONTROL_PAYLOAD),
        "control frames must be final and carry at most 125 bytes"
    );
    out.reserve(header_len(payload_len));
    out.put_u8(u8::from(fin) << 7 | opcode.as_u8());
    if payload_len < 126 {
        // Fits in 7 bits, checked just above.
        out.put_u8(payload_len as u8);
    } else if let Ok(len) = u16::try_from(payload_len) {
        out.put_u8(126);
        out.put_u16(len);
    } else {
        out.put_u8(127);
        out.put_u64(payload_len as u64);
    }
}

/// One complete, final, unmasked frame (header and payload in one allocation).
pub fn encode_frame(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(header_len(payload.len()) + payload.len());
    encode_header(opcode, true, payload.len(), &mut out);
    out.extend_from_slice(payload);
    out.freeze()
}

/// A complete text frame. `payload` must be UTF-8 (not checked).
pub fn encode_text(payload: &[u8]) -> Bytes {
    encode_frame(OpCode::Text, payload)
}

/// A complete binary frame.
pub fn encode_binary(payload: &[u8]) -> Bytes {
    encode_frame(OpCode::Binary, payload)
}

/// A Close frame carrying `code` and `reason`. The reason is truncated on a
/// char boundary so that the payload fits the 125-byte control frame limit
/// (2 bytes of code + at most 123 bytes of reason).
pub fn encode_close(code: u16, reason: &str) -> Bytes {
    const MAX_REASON: usize = MAX_CONTROL_PAYLOAD - 2;
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = reason.as_bytes().get(..end).unwrap_or_default();
    let mut out = BytesMut::with_capacity(2 + 2 + reason.len());
    encode_header(OpCode::Close, true, 2 + reason.len(), &mut out);
    out.put_u16(code);
    out.extend_from_slice(reason);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcode_roundtrip() {
        for v in 0u8..16 {
            match OpCode::from_u8(v) {
                Some(op) => assert_eq!(op.as_u8(), v),
                None => assert!(matches!(v, 3..=7 | 0xb..=0xf), "{v}"),
            }
        }
        assert!(OpCode::Close.is_control());
        assert!(OpCode::Ping.is_control());
        assert!(OpCode::Pong.is_control());
        assert!(!OpCode::Text.is_control());
        assert!(!OpCode::Binary.is_control());
        assert!(!OpCode::Continuation.is_control());
    }

    #[test]
    fn rfc_unmasked_hello() {
        // RFC 6455 §5.7: a single-frame unmasked text message.
        assert_eq!(
            &encode_text(b"Hello")[..],
            &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        );
    }

    #[test]
    fn rfc_unmasked_ping_and_fragments() {
        // RFC 6455 §5.7: unmasked Ping "Hello".
        assert_eq!(
            &encode_frame(OpCode::Ping, b"Hello")[..],
            &[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        );
        // Fragmented unmasked text: 0x01 0x03 "Hel", 0x80 0x02 "lo".
        let mut out = BytesMut::new();
        encode_header(OpCode::Text, false, 3, &mut out);
        out.extend_from_slice(b"Hel");
        encode_header(OpCode::Continuation, true, 2, &mut out);
        out.extend_from_slice(b"lo");
        assert_eq!(
            &out[..],
            &[0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f]
        );
    }

    #[test]
    fn rfc_256_and_64k_binary_headers() {
        // RFC 6455 §5.7: 256 bytes binary in a single unmasked frame.
        let f = encode_frame(OpCode::Binary, &[0xaa; 256]);
        assert_eq!(&f[..4], &[0x82, 0x7e, 0x01, 0x00]);
        assert_eq!(f.len(), 4 + 256);
        // 64 KiB binary in a single unmasked frame.
        let f = encode_frame(OpCode::Binary, &vec![0x55; 65536]);
        assert_eq!(
            &f[..10],
            &[0x82, 0x7f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00]
        );
        assert_eq!(f.len(), 10 + 65536);
        assert!(f[10..].iter().all(|&b| b == 0x55));
    }

    #[test]
    fn header_len_boundaries() {
        assert_eq!(header_len(0), 2);
        assert_eq!(header_len(125), 2);
        assert_eq!(header_len(126), 4);
        assert_eq!(header_len(65535), 4);
        assert_eq!(header_len(65536), 10);
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 1 << 20] {
            let mut out = BytesMut::new();
            encode_header(OpCode::Binary, true, len, &mut out);
            assert_eq!(out.len(), header_len(len), "{len}");
        }
    }

    #[test]
    fn encode_header_non_fin() {
        let mut out = BytesMut::new();
        encode_header(OpCode::Binary, false, 300, &mut out);
        assert_eq!(&out[..], &[0x02, 126, 0x01, 0x2c]);
    }

    #[test]
    fn close_encoding() {
        assert_eq!(&encode_close(1000, "")[..], &[0x88, 0x02, 0x03, 0xe8]);
        assert_eq!(
            &encode_close(1001, "bye")[..],
            &[0x88, 0x05, 0x03, 0xe9, b'b', b'y', b'e']
        );
    }

    #[test]
    fn close_reason_truncation() {
        // Exactly 123 ASCII bytes fit.
        let r = "a".repeat(123);
        let f = encode_close(1000, &r);
        assert_eq!(f[1] as usize, 125);
        assert_eq!(&f[4..], r.as_bytes());
        // Longer ASCII is cut at 123.
        let f = encode_close(1000, &"b".repeat(500));
        assert_eq!(f[1] as usize, 125);
        assert_eq!(f.len(), 127);
        // 2-byte chars: 61 fit in 122 bytes, the 62nd would straddle 123.
        let f = encode_close(1000, &"µ".repeat(100));
        assert_eq!(f[1] as usize, 2 + 122);
        assert!(std::str::from_utf8(&f[4..]).is_ok());
        // 4-byte chars: 30 fit in 120 bytes.
        let f = encode_close(4000, &"𝄞".repeat(40));
        assert_eq!(f[1] as usize, 2 + 120);
        assert_eq!(&f[2..4], &4000u16.to_be_bytes());
        assert!(std::str::from_utf8(&f[4..]).is_ok());
        // Every truncation point is valid UTF-8 and within the limit.
        let mixed = "aµ€𝄞".repeat(20);
        for n in 0..mixed.len() {
            if !mixed.is_char_boundary(n) {
                continue;
            }
            let f = encode_close(1000, &mixed[..n]);
            assert!(f[1] as usize <= 125);
            assert!(std::str::from_utf8(&f[4..]).is_ok());
        }
    }

    fn masked(b0: u8, len_bytes: &[u8]) -> Vec<u8> {
        let mut v = vec![b0];
        v.extend_from_slice(len_bytes);
        v.extend_from_slice(&[1, 2, 3, 4]);
        v
    }

    #[test]
    fn parse_masked_headers() {
        let h = parse_header(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d])
            .unwrap()
            .unwrap();
        assert_eq!(
            h,
            FrameHeader {
                fin: true,
                opcode: OpCode::Text,
                mask: [0x37, 0xfa, 0x21, 0x3d],
                payload_len: 5,
                header_len: 6,
            }
        );
        let h = parse_header(&masked(0x02, &[0xfe, 0x01, 0x00]))
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.payload_len, h.header_len),
            (false, OpCode::Binary, 256, 8)
        );
        let h = parse_header(&masked(0x82, &[0xff, 0, 0, 0, 0, 0, 1, 0, 0]))
            .unwrap()
            .unwrap();
        assert_eq!((h.payload_len, h.header_len), (65536, 14));
    }

    #[test]
    fn parse_needs_more() {
        let full = masked(0x82, &[0xff, 0, 0, 0, 0, 0, 1, 0, 0]);
        for n in 0..full.len() {
            assert_eq!(parse_header(&full[..n]), Ok(None), "{n}");
        }
    }

    #[test]
    fn parse_errors_fail_fast() {
        assert_eq!(parse_header(&[0xc1]), Err(ProtocolError::ReservedBits));
        assert_eq!(parse_header(&[0x91]), Err(ProtocolError::ReservedBits));
        assert_eq!(parse_header(&[0xa1]), Err(ProtocolError::ReservedBits));
        for op in [3u8, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
            assert_eq!(
                parse_header(&[0x80 | op]),
                Err(ProtocolError::ReservedOpcode(op))
            );
        }
        assert_eq!(parse_header(&[0x09]), Err(ProtocolError::FragmentedControl));
        assert_eq!(
            parse_header(&[0x81, 0x05]),
            Err(ProtocolError::UnmaskedFrame)
        );
        assert_eq!(
            parse_header(&[0x89, 0xfe]),
            Err(ProtocolError::ControlFrameTooLong)
        );
        assert_eq!(parse_header(&[0x89, 0xfe]).unwrap_err().close_code(), 1002);
        assert_eq!(
            parse_header(&[0x82, 0xff, 0x80]),
            Err(ProtocolError::InvalidLength)
        );
        assert_eq!(
            parse_header(&masked(0x82, &[0xfe, 0x00, 0x7d])),
            Err(ProtocolError::NonMinimalLength)
        );
        assert_eq!(
            parse_header(&masked(0x82, &[0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff])),
            Err(ProtocolError::NonMinimalLength)
        );
        // 125-byte ping is fine.
        assert!(parse_header(&masked(0x89, &[0xfd])).unwrap().is_some());
    }
}
