//! The incremental, I/O-free message decoder for client-to-server traffic.
//!
//! The connection task appends whatever it read to a `BytesMut` and calls
//! [`Decoder::decode`] until it returns `Ok(None)`. The decoder never reads
//! or writes a socket and never allocates according to a size the peer
//! declared: a frame header is parsed and checked against [`Limits`] before
//! any of its payload is buffered, so a hostile length costs nothing.
//!
//! Shape and the reasons for it:
//!
//! * **A frame stays in the caller's buffer until it is complete.** While the
//!   payload trickles in, the decoder remembers the parsed header and how many
//!   payload bytes it has already unmasked (in place) and, for text, fed to
//!   the incremental UTF-8 validator. Each byte is therefore unmasked and
//!   validated exactly once however the stream is split, and invalid UTF-8 is
//!   reported as soon as it arrives, even in the middle of a frame (RFC 6455
//!   §8.1: an endpoint that finds a byte stream is not valid UTF-8 "MUST _Fail
//!   the WebSocket Connection_").
//! * **Single-frame messages are zero-copy:** the completed frame is
//!   `split_to` off the caller's buffer, the header is advanced past, and the
//!   payload is frozen into `Bytes`.
//! * **Fragmented messages** (§5.4) are accumulated into one `BytesMut` that
//!   is frozen when the final fragment arrives. Control frames may be
//!   "injected in the middle of a fragmented message" (§5.4) and are returned
//!   immediately without disturbing that state.
//! * **Connection-state rules** are checked here, as early as the first
//!   header byte: "a continuation frame without a message in progress" and a
//!   new data frame inside a fragmented message are protocol errors (§5.4:
//!   "fragments of one message MUST NOT be interleaved between fragments of
//!   another message").
//! * **Errors are terminal.** After an error the connection must be failed
//!   (send a Close with [`ProtocolError::close_code`] and drop it); the
//!   decoder keeps returning the same error and never panics.

use bytes::{Buf, BytesMut};

use super::close::parse_close_payload;
use super::frame::{parse_header, FrameHeader, OpCode};
use super::mask::apply_mask_offset;
use super::utf8::Utf8Validator;
use super::{Message, ProtocolError};

/// Size limits enforced by the decoder (a violation fails with 1009).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload accepted in a single frame.
    pub max_frame: usize,
    /// Largest total payload accepted for one (possibly fragmented) message.
    pub max_message: usize,
}

impl Default for Limits {
    /// 16 MiB for both: the largest messages Autobahn|Testsuite's 9.x
    /// performance cases send (16 * 2^20 bytes) are exactly at the limit.
    fn default() -> Self {
        Limits {
            max_frame: 16 << 20,
            max_message: 16 << 20,
        }
    }
}

/// Type of the fragmented data message in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataKind {
    Text,
    Binary,
}

/// The frame at the front of the caller's buffer whose payload is incomplete.
#[derive(Debug, Clone, Copy)]
struct Pending {
    header: FrameHeader,
    /// Payload length, already checked against the limits.
    payload_len: usize,
    /// Payload bytes already unmasked in place (and UTF-8-checked for text).
    processed: usize,
    /// Payload belongs to a text message and is validated as it arrives.
    text: bool,
}

/// Incremental decoder of client frames into messages; one per connection.
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    pending: Option<Pending>,
    /// Kind of the fragmented message in progress, if any.
    fragmented: Option<DataKind>,
    /// Payload of the fragmented message received so far.
    partial: BytesMut,
    /// UTF-8 state of the text message in progress.
    utf8: Utf8Validator,
    /// Set once decoding failed; the connection is dead.
    failed: Option<ProtocolError>,
}

impl Decoder {
    /// A decoder at the start of a connection.
    pub fn new(limits: Limits) -> Self {
        Decoder {
            limits,
            pending: None,
            fragmented: None,
            partial: BytesMut::new(),
            utf8: Utf8Validator::new(),
            failed: None,
        }
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// True when the decoder holds no partial message and is not in the
    /// middle of a frame. The caller's own buffer may still hold the first
    /// bytes of a frame header, so buffers can be released only when this
    /// is true *and* that buffer is empty.
    pub fn is_idle(&self) -> bool {
        self.pending.is_none() && self.fragmented.is_none()
    }

    /// Consume as many bytes from `buf` as form complete frames and return the
    /// next complete data message or control frame.
    ///
    /// `Ok(None)` means more bytes are needed: any partial frame is left in
    /// `buf` (its payload possibly already unmasked in place, which the
    /// decoder keeps track of), and the caller should append more data to the
    /// same buffer and call again. Control frames arriving between the
    /// fragments of a data message are returned immediately (RFC 6455 §5.4).
    ///
    /// On error the connection must be failed with
    /// [`ProtocolError::close_code`]; further calls return the same error.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, ProtocolError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let result = self.decode_inner(buf);
        if let Err(err) = &result {
            self.failed = Some(err.clone());
        }
        result
    }

    fn decode_inner(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, ProtocolError> {
        loop {
            let mut pending = match self.pending {
                Some(p) => p,
                None => match self.start_frame(buf)? {
                    Some(p) => p,
                    None => return Ok(None),
                },
            };

            let header_len = pending.header.header_len;
            let available = buf
                .len()
                .saturating_sub(header_len)
                .min(pending.payload_len);
            if available > pending.processed {
                let fresh = buf
                    .get_mut(header_len + pending.processed..header_len + available)
                    .unwrap_or_default();
                apply_mask_offset(fresh, pending.header.mask, pending.processed);
                if pending.text {
                    self.utf8
                        .feed(fresh)
                        .map_err(|_| ProtocolError::InvalidUtf8)?;
                }
                pending.processed = available;
            }
            if available < pending.payload_len {
                self.pending = Some(pending);
                return Ok(None);
            }
            self.pending = None;

            // The whole frame is in `buf` and its payload is unmasked.
            let mut payload = buf.split_to(header_len + pending.payload_len);
            payload.advance(header_len);
            let fin = pending.header.fin;
            match pending.header.opcode {
                OpCode::Ping => return Ok(Some(Message::Ping(payload.freeze()))),
                OpCode::Pong => return Ok(Some(Message::Pong(payload.freeze()))),
                OpCode::Close => {
                    return Ok(Some(Message::Close(parse_close_payload(payload.freeze())?)))
                }
                OpCode::Text if fin => {
                    self.finish_text()?;
                    return Ok(Some(Message::Text(payload.freeze())));
                }
                OpCode::Binary if fin => return Ok(Some(Message::Binary(payload.freeze()))),
                OpCode::Text | OpCode::Binary => {
                    self.fragmented = Some(if pending.header.opcode == OpCode::Text {
                        DataKind::Text
                    } else {
                        DataKind::Binary
                    });
                    let capacity = payload.len().saturating_mul(2).min(self.limits.max_message);
                    self.partial = BytesMut::with_capacity(capacity);
                    self.partial.extend_from_slice(&payload);
                }
                OpCode::Continuation => {
                    self.partial.extend_from_slice(&payload);
                    if fin {
                        let data = std::mem::take(&mut self.partial).freeze();
                        return match self.fragmented.take() {
                            Some(DataKind::Text) => {
                                self.finish_text()?;
                                Ok(Some(Message::Text(data)))
                            }
                            Some(DataKind::Binary) => Ok(Some(Message::Binary(data))),
                            // start_frame rejects continuations outside a message.
                            None => Err(ProtocolError::UnexpectedContinuation),
                        };
                    }
                }
            }
        }
    }

    /// Parse and validate the header at the front of `buf`. Checks that need
    /// only the first byte run before the rest of the header has arrived.
    fn start_frame(&mut self, buf: &BytesMut) -> Result<Option<Pending>, ProtocolError> {
        if let Some(op) = buf.first().and_then(|b| OpCode::from_u8(b & 0x0f)) {
            self.check_sequence(op)?;
        }
        let Some(header) = parse_header(buf)? else {
            return Ok(None);
        };
        let len = header.payload_len;
        if len > self.limits.max_frame as u64 {
            return Err(ProtocolError::FrameTooBig {
                len,
                max: self.limits.max_frame,
            });
        }
        // Cannot fail: len <= max_frame, which is a usize.
        let payload_len = usize::try_from(len).map_err(|_| ProtocolError::FrameTooBig {
            len,
            max: self.limits.max_frame,
        })?;
        let text = match header.opcode {
            OpCode::Text => {
                self.utf8.reset();
                true
            }
            OpCode::Continuation => self.fragmented == Some(DataKind::Text),
            _ => false,
        };
        if !header.opcode.is_control() {
            let so_far = if header.opcode == OpCode::Continuation {
                self.partial.len()
            } else {
                0
            };
            let total = so_far.saturating_add(payload_len);
            if total > self.limits.max_message {
                return Err(ProtocolError::MessageTooBig {
                    len: total,
                    max: self.limits.max_message,
                });
            }
        }
        let pending = Pending {
            header,
            payload_len,
            processed: 0,
            text,
        };
        self.pending = Some(pending);
        Ok(Some(pending))
    }

    /// §5.4 fragmentation rules for a frame with opcode `op`.
    fn check_sequence(&self, op: OpCode) -> Result<(), ProtocolError> {
        match (op, self.fragmented) {
            (OpCode::Continuation, None) => Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, Some(_)) => Err(ProtocolError::ExpectedContinuation),
            _ => Ok(()),
        }
    }

    /// End of a text message: it must not stop in the middle of a code point.
    fn finish_text(&mut self) -> Result<(), ProtocolError> {
        self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)
    }
}

#[cfg(test)]
mod tests {
    use super::super::close;
    use super::super::frame::{encode_close, encode_header, encode_text};
    use super::super::mask::apply_mask;
    use super::*;
    use bytes::Bytes;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A masked client frame with explicit first byte (FIN/RSV/opcode).
    fn raw_frame(b0: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_header(OpCode::Binary, true, payload.len(), &mut out);
        let mut v = out.to_vec();
        v[0] = b0;
        v[1] |= 0x80;
        v.extend_from_slice(&key);
        let start = v.len();
        v.extend_from_slice(payload);
        apply_mask(&mut v[start..], key);
        v
    }

    fn frame(op: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
        raw_frame(u8::from(fin) << 7 | op.as_u8(), payload, KEY)
    }

    fn limits() -> Limits {
        Limits {
            max_frame: 1 << 20,
            max_message: 4 << 20,
        }
    }

    /// Decode everything in `bytes` fed in one go.
    fn decode_all(bytes: &[u8]) -> Result<Vec<Message>, ProtocolError> {
        let mut d = Decoder::new(limits());
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(m) = d.decode(&mut buf)? {
            out.push(m);
        }
        Ok(out)
    }

    /// Decode `bytes` fed in chunks ending at `splits`.
    fn decode_split(
        bytes: &[u8],
        splits: &[usize],
        lim: Limits,
    ) -> Result<Vec<Message>, ProtocolError> {
        let mut d = Decoder::new(lim);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut start = 0;
        for &end in splits.iter().chain(std::iter::once(&bytes.len())) {
            buf.extend_from_slice(&bytes[start..end]);
            start = end;
            while let Some(m) = d.decode(&mut buf)? {
                out.push(m);
            }
        }
        Ok(out)
    }

    fn err_of(bytes: &[u8]) -> ProtocolError {
        decode_all(bytes).unwrap_err()
    }

    fn text(s: &str) -> Message {
        Message::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn rfc_masked_hello() {
        let bytes = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(frame(OpCode::Text, true, b"Hello"), bytes);
        let mut d = Decoder::new(limits());
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(d.decode(&mut buf), Ok(Some(text("Hello"))));
        assert!(buf.is_empty());
        assert!(d.is_idle());
        assert_eq!(d.decode(&mut buf), Ok(None));
    }

    #[test]
    fn rfc_fragmented_hello() {
        let mut bytes = frame(OpCode::Text, false, b"Hel");
        bytes.extend(frame(OpCode::Continuation, true, b"lo"));
        assert_eq!(decode_all(&bytes), Ok(vec![text("Hello")]));
    }

    #[test]
    fn rfc_masked_ping_pong() {
        let mut bytes = frame(OpCode::Ping, true, b"Hello");
        bytes.extend(frame(OpCode::Pong, true, b"Hello"));
        let hello = Bytes::from_static(b"Hello");
        assert_eq!(
            decode_all(&bytes),
            Ok(vec![Message::Ping(hello.clone()), Message::Pong(hello)])
        );
    }

    #[test]
    fn rfc_256_and_64k_binary() {
        let small: Vec<u8> = (0..256u32).map(|i| i as u8).collect();
        let big: Vec<u8> = (0..65536u32).map(|i| (i * 31 % 251) as u8).collect();
        let f1 = frame(OpCode::Binary, true, &small);
        assert_eq!(&f1[..4], &[0x82, 0xfe, 0x01, 0x00]);
        let f2 = frame(OpCode::Binary, true, &big);
        assert_eq!(&f2[..10], &[0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0]);
        let mut bytes = f1;
        bytes.extend(f2);
        assert_eq!(
            decode_all(&bytes),
            Ok(vec![
                Message::Binary(Bytes::from(small)),
                Message::Binary(Bytes::from(big))
            ])
        );
    }

    #[test]
    fn single_frame_is_zero_copy() {
        let bytes = frame(OpCode::Binary, true, &[7u8; 1000]);
        let mut buf = BytesMut::from(&bytes[..]);
        let base = buf.as_ptr() as usize;
        let mut d = Decoder::new(limits());
        let Some(Message::Binary(b)) = d.decode(&mut buf).unwrap() else {
            panic!("expected binary");
        };
        assert_eq!(
            b.as_ptr() as usize,
            base + 8,
            "payload must alias the input buffer"
        );
    }

    #[test]
    fn empty_messages() {
        let mut bytes = frame(OpCode::Text, true, b"");
        bytes.extend(frame(OpCode::Binary, true, b""));
        bytes.extend(frame(OpCode::Text, false, b""));
        bytes.extend(frame(OpCode::Continuation, true, b""));
        bytes.extend(frame(OpCode::Ping, true, b""));
        bytes.extend(frame(OpCode::Close, true, b""));
        assert_eq!(
            decode_all(&bytes),
            Ok(vec![
                text(""),
                Message::Binary(Bytes::new()),
                text(""),
                Message::Ping(Bytes::new()),
                Message::Close(None)
            ])
        );
    }

    #[test]
    fn ping_interleaved_in_fragments() {
        let mut bytes = frame(OpCode::Text, false, b"fragment1 ");
        bytes.extend(frame(OpCode::Ping, true, b"ping payload"));
        bytes.extend(frame(OpCode::Continuation, false, b"fragment2 "));
        bytes.extend(frame(OpCode::Pong, true, b""));
        bytes.extend(frame(OpCode::Continuation, true, b"fragment3"));
        let mut d = Decoder::new(limits());
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(
            d.decode(&mut buf),
            Ok(Some(Message::Ping(Bytes::from_static(b"ping payload"))))
        );
        assert!(!d.is_idle(), "a fragmented message is open");
        assert_eq!(d.decode(&mut buf), Ok(Some(Message::Pong(Bytes::new()))));
        assert_eq!(
            d.decode(&mut buf),
            Ok(Some(text("fragment1 fragment2 fragment3")))
        );
        assert!(d.is_idle());
        assert!(buf.is_empty());
    }

    #[test]
    fn close_in_middle_of_fragmented_message() {
        let mut bytes = frame(OpCode::Binary, false, b"ab");
        bytes.extend(frame(OpCode::Close, true, b"\x03\xe8done"));
        assert_eq!(
            decode_all(&bytes),
            Ok(vec![Message::Close(Some((
                1000,
                Bytes::from_static(b"done")
            )))])
        );
    }

    #[test]
    fn utf8_split_across_fragments_valid() {
        let s = "κόσμε 𝄞 µ€".as_bytes();
        for i in 0..=s.len() {
            for j in i..=s.len() {
                let mut bytes = frame(OpCode::Text, false, &s[..i]);
                bytes.extend(frame(OpCode::Continuation, false, &s[i..j]));
                bytes.extend(frame(OpCode::Continuation, true, &s[j..]));
                assert_eq!(decode_all(&bytes), Ok(vec![text("κόσμε 𝄞 µ€")]), "{i} {j}");
            }
        }
    }

    #[test]
    fn utf8_split_across_fragments_invalid() {
        // Valid prefix "κόσμε" then a UTF-16 surrogate (ED A0 80).
        let s = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited";
        for i in 0..=s.len() {
            let mut bytes = frame(OpCode::Text, false, &s[..i]);
            bytes.extend(frame(OpCode::Continuation, true, &s[i..]));
            let e = err_of(&bytes);
            assert_eq!(e, ProtocolError::InvalidUtf8, "{i}");
            assert_eq!(e.close_code(), close::INVALID_PAYLOAD);
        }
    }

    #[test]
    fn utf8_final_fragment_mid_code_point() {
        let euro = "€".as_bytes();
        let mut bytes = frame(OpCode::Text, false, b"a");
        bytes.extend(frame(OpCode::Continuation, true, &euro[..2]));
        assert_eq!(err_of(&bytes), ProtocolError::InvalidUtf8);
        // Also for a single frame.
        assert_eq!(
            err_of(&frame(OpCode::Text, true, &euro[..1])),
            ProtocolError::InvalidUtf8
        );
    }

    #[test]
    fn utf8_fails_fast_in_first_fragment() {
        // Autobahn 6.4.1-style: fragment 1 valid, fragment 2 invalid, the
        // rest never arrives. Must fail without waiting for fragment 3.
        let mut bytes = frame(OpCode::Text, false, "κόσμε".as_bytes());
        bytes.extend(frame(OpCode::Continuation, false, b"\xf4\x90\x80\x80"));
        let mut d = Decoder::new(limits());
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(d.decode(&mut buf), Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn utf8_fails_fast_in_partial_frame() {
        // Autobahn 6.4.3-style: one text frame whose payload arrives in
        // pieces; the invalid bytes are sent, then the sender pauses.
        let payload =
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80\x65\x64\x69\x74\x65\x64";
        let bytes = frame(OpCode::Text, true, payload);
        let mut d = Decoder::new(limits());
        let mut buf = BytesMut::from(&bytes[..6 + 11]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert!(!d.is_idle());
        buf.extend_from_slice(&bytes[6 + 11..6 + 12]);
        // F4 alone is still a valid prefix ...
        assert_eq!(d.decode(&mut buf), Ok(None));
        buf.extend_from_slice(&bytes[6 + 12..6 + 13]);
        // ... but F4 90 is not: fail now, 8 payload bytes before the end.
        assert_eq!(d.decode(&mut buf), Err(ProtocolError::InvalidUtf8));
        // Terminal: the same error again, no panic.
        buf.extend_from_slice(&bytes[6 + 13..]);
        assert_eq!(d.decode(&mut buf), Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn binary_is_not_utf8_checked() {
        assert_eq!(
            decode_all(&frame(OpCode::Binary, true, b"\xff\xfe")),
            Ok(vec![Message::Binary(Bytes::from_static(b"\xff\xfe"))])
        );
    }

    #[test]
    fn header_errors_with_close_codes() {
        let cases: Vec<(Vec<u8>, ProtocolError)> = vec![
            // Unmasked: RFC §5.7 unmasked "Hello".
            (
                vec![0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f],
                ProtocolError::UnmaskedFrame,
            ),
            (raw_frame(0xc1, b"x", KEY), ProtocolError::ReservedBits),
            (raw_frame(0xa2, b"x", KEY), ProtocolError::ReservedBits),
            (raw_frame(0x91, b"x", KEY), ProtocolError::ReservedBits),
            (raw_frame(0x83, b"", KEY), ProtocolError::ReservedOpcode(3)),
            (raw_frame(0x87, b"", KEY), ProtocolError::ReservedOpcode(7)),
            (
                raw_frame(0x8b, b"", KEY),
                ProtocolError::ReservedOpcode(0xb),
            ),
            (
                raw_frame(0x8f, b"", KEY),
                ProtocolError::ReservedOpcode(0xf),
            ),
            (
                frame(OpCode::Ping, true, &[0u8; 126]),
                ProtocolError::ControlFrameTooLong,
            ),
            (
                frame(OpCode::Close, true, &[0u8; 200]),
                ProtocolError::ControlFrameTooLong,
            ),
            (
                frame(OpCode::Ping, false, b"x"),
                ProtocolError::FragmentedControl,
            ),
            (
                frame(OpCode::Continuation, true, b"x"),
                ProtocolError::UnexpectedContinuation,
            ),
            (
                vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
                ProtocolError::InvalidLength,
            ),
            (
                vec![0x82, 0xfe, 0x00, 0x05, 1, 2, 3, 4, 0, 0, 0, 0, 0],
                ProtocolError::NonMinimalLength,
            ),
        ];
        for (bytes, want) in cases {
            let got = err_of(&bytes);
            assert_eq!(got, want, "{bytes:02x?}");
            assert_eq!(got.close_code(), close::PROTOCOL_ERROR, "{want:?}");
        }
    }

    #[test]
    fn errors_fail_fast_on_partial_header() {
        for (bytes, want) in [
            (&[0xc1u8][..], ProtocolError::ReservedBits),
            (&[0x84][..], ProtocolError::ReservedOpcode(4)),
            (&[0x80][..], ProtocolError::UnexpectedContinuation),
            (&[0x81, 0x7f][..], ProtocolError::UnmaskedFrame),
            (&[0x89, 0xff][..], ProtocolError::ControlFrameTooLong),
        ] {
            let mut d = Decoder::new(limits());
            let mut buf = BytesMut::from(bytes);
            assert_eq!(d.decode(&mut buf), Err(want));
        }
    }

    #[test]
    fn new_message_inside_fragmented_message() {
        for op in [OpCode::Text, OpCode::Binary] {
            let mut bytes = frame(OpCode::Text, false, b"a");
            bytes.extend(frame(op, true, b"b"));
            let e = err_of(&bytes);
            assert_eq!(e, ProtocolError::ExpectedContinuation);
            assert_eq!(e.close_code(), 1002);
        }
    }

    #[test]
    fn continuation_after_complete_message() {
        let mut bytes = frame(OpCode::Text, false, b"a");
        bytes.extend(frame(OpCode::Continuation, true, b"b"));
        bytes.extend(frame(OpCode::Continuation, true, b"c"));
        let mut d = Decoder::new(limits());
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(d.decode(&mut buf), Ok(Some(text("ab"))));
        assert_eq!(
            d.decode(&mut buf),
            Err(ProtocolError::UnexpectedContinuation)
        );
    }

    #[test]
    fn close_frames() {
        assert_eq!(
            decode_all(&frame(OpCode::Close, true, b"")),
            Ok(vec![Message::Close(None)])
        );
        assert_eq!(
            decode_all(&frame(OpCode::Close, true, b"\x03\xe9bye")),
            Ok(vec![Message::Close(Some((
                1001,
                Bytes::from_static(b"bye")
            )))])
        );
        assert_eq!(
            decode_all(&frame(OpCode::Close, true, b"\x0b\xb8")),
            Ok(vec![Message::Close(Some((3000, Bytes::new())))])
        );
        let e = err_of(&frame(OpCode::Close, true, b"\x03"));
        assert_eq!(
            (e.clone(), e.close_code()),
            (ProtocolError::InvalidClosePayload, 1002)
        );
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            let e = err_of(&frame(OpCode::Close, true, &code.to_be_bytes()));
            assert_eq!(
                (e.clone(), e.close_code()),
                (ProtocolError::InvalidCloseCode(code), 1002)
            );
        }
        let e = err_of(&frame(OpCode::Close, true, b"\x03\xe8\xce\xba\xed\xa0\x80"));
        assert_eq!(
            (e.clone(), e.close_code()),
            (ProtocolError::InvalidUtf8, 1007)
        );
        // A server-encoded close (once masked) decodes back to itself.
        let server = encode_close(4001, "shutting down");
        let client = frame(OpCode::Close, true, &server[2..]);
        assert_eq!(
            decode_all(&client),
            Ok(vec![Message::Close(Some((
                4001,
                Bytes::from_static(b"shutting down")
            )))])
        );
    }

    #[test]
    fn frame_limit() {
        let lim = Limits {
            max_frame: 100,
            max_message: 1000,
        };
        assert_eq!(
            decode_split(&frame(OpCode::Binary, true, &[0; 100]), &[], lim),
            Ok(vec![Message::Binary(Bytes::from(vec![0u8; 100]))])
        );
        // Fails on the header alone: no payload has to arrive or be buffered.
        let f = frame(OpCode::Binary, true, &[0; 101]);
        let e = decode_split(&f[..8], &[], lim).unwrap_err();
        assert_eq!(e, ProtocolError::FrameTooBig { len: 101, max: 100 });
        assert_eq!(e.close_code(), close::TOO_BIG);
        // A huge declared 64-bit length is refused before anything is allocated.
        let huge = [
            0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4,
        ];
        let e = decode_split(&huge, &[], lim).unwrap_err();
        assert_eq!(e.close_code(), 1009);
    }

    #[test]
    fn message_limit() {
        let lim = Limits {
            max_frame: 100,
            max_message: 250,
        };
        let mut ok = frame(OpCode::Text, false, &[b'a'; 100]);
        ok.extend(frame(OpCode::Continuation, false, &[b'b'; 100]));
        ok.extend(frame(OpCode::Continuation, true, &[b'c'; 50]));
        let msgs = decode_split(&ok, &[], lim).unwrap();
        assert_eq!(msgs.len(), 1);
        let mut bad = frame(OpCode::Text, false, &[b'a'; 100]);
        bad.extend(frame(OpCode::Continuation, false, &[b'b'; 100]));
        bad.extend(frame(OpCode::Continuation, true, &[b'c'; 51]));
        // Only the header of the offending fragment is needed.
        let cut = bad.len() - 51;
        let e = decode_split(&bad[..cut], &[], lim).unwrap_err();
        assert_eq!(e, ProtocolError::MessageTooBig { len: 251, max: 250 });
        assert_eq!(e.close_code(), 1009);
        // A single frame larger than max_message but within max_frame.
        let lim = Limits {
            max_frame: 100,
            max_message: 50,
        };
        let e = decode_split(&frame(OpCode::Binary, true, &[0; 51]), &[], lim).unwrap_err();
        assert_eq!(e, ProtocolError::MessageTooBig { len: 51, max: 50 });
        // Control frames do not count towards the message limit.
        let lim = Limits {
            max_frame: 125,
            max_message: 10,
        };
        let mut bytes = frame(OpCode::Text, false, &[b'a'; 10]);
        bytes.extend(frame(OpCode::Ping, true, &[0; 125]));
        bytes.extend(frame(OpCode::Continuation, true, b""));
        assert_eq!(decode_split(&bytes, &[], lim).unwrap().len(), 2);
    }

    #[test]
    fn partial_frame_stays_in_buffer() {
        let bytes = frame(OpCode::Text, true, b"Hello, world");
        let mut d = Decoder::new(limits());
        let mut buf = BytesMut::from(&bytes[..3]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert_eq!(buf.len(), 3);
        assert!(
            d.is_idle(),
            "header incomplete: nothing held by the decoder"
        );
        buf.extend_from_slice(&bytes[3..10]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert_eq!(buf.len(), 10);
        assert!(!d.is_idle());
        buf.extend_from_slice(&bytes[10..]);
        assert_eq!(d.decode(&mut buf), Ok(Some(text("Hello, world"))));
        assert!(buf.is_empty());
        assert!(d.is_idle());
    }

    /// A stream exercising every frame shape: all three length encodings,
    /// fragmentation with interleaved control frames, multi-byte UTF-8 cut
    /// across fragments, different masking keys.
    fn sample_stream(with_64k: bool) -> (Vec<u8>, Vec<Message>) {
        let mut bytes = Vec::new();
        let mut want = Vec::new();
        bytes.extend(frame(OpCode::Text, true, b"Hello"));
        want.push(text("Hello"));
        let bin: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        bytes.extend(raw_frame(0x82, &bin, [9, 8, 7, 6]));
        want.push(Message::Binary(Bytes::from(bin)));
        let s = "héllo wörld 𝄞 €uro ".repeat(3);
        let sb = s.as_bytes();
        bytes.extend(raw_frame(0x01, &sb[..7], [1, 1, 2, 3]));
        bytes.extend(frame(OpCode::Ping, true, b"p"));
        want.push(Message::Ping(Bytes::from_static(b"p")));
        bytes.extend(raw_frame(0x00, &sb[7..40], [5, 8, 13, 21]));
        bytes.extend(raw_frame(0x00, b"", [0, 0, 0, 0]));
        bytes.extend(frame(OpCode::Pong, true, b""));
        want.push(Message::Pong(Bytes::new()));
        bytes.extend(raw_frame(0x80, &sb[40..], [0xff, 0, 0xff, 0]));
        want.push(Message::Text(Bytes::copy_from_slice(sb)));
        if with_64k {
            let big: Vec<u8> = (0..70000u32).map(|i| (i % 253) as u8).collect();
            bytes.extend(frame(OpCode::Binary, true, &big));
            want.push(Message::Binary(Bytes::from(big)));
        }
        bytes.extend(frame(OpCode::Close, true, b"\x03\xe8ok"));
        want.push(Message::Close(Some((1000, Bytes::from_static(b"ok")))));
        (bytes, want)
    }

    #[test]
    fn every_split_point_gives_same_messages() {
        let (bytes, want) = sample_stream(false);
        assert_eq!(decode_all(&bytes).as_ref(), Ok(&want));
        for split in 0..=bytes.len() {
            assert_eq!(
                decode_split(&bytes, &[split], limits()).as_ref(),
                Ok(&want),
                "split at {split}"
            );
        }
    }

    #[test]
    fn split_points_around_64k_frame() {
        // Every split in and near the 64-bit-length frame's header and tail,
        // strided through its payload (every split of all 71 KB is slow in
        // debug builds and adds nothing over the stream above).
        let (bytes, want) = sample_stream(true);
        let (small, _) = sample_stream(false);
        let big_start = small.len() - 10; // the final close frame is 10 bytes
        let big_end = big_start + 14 + 70000;
        let points = (big_start.saturating_sub(20)..big_start + 40)
            .chain((big_start + 40..big_end - 40).step_by(997))
            .chain(big_end - 40..=bytes.len());
        for split in points {
            assert_eq!(
                decode_split(&bytes, &[split], limits()).as_ref(),
                Ok(&want),
                "split at {split}"
            );
        }
    }

    #[test]
    fn small_stream_every_pair_of_split_points() {
        let mut bytes = frame(OpCode::Text, false, "a€".as_bytes());
        bytes.extend(frame(OpCode::Ping, true, b"xy"));
        bytes.extend(frame(OpCode::Continuation, true, "𝄞b".as_bytes()));
        let want = vec![Message::Ping(Bytes::from_static(b"xy")), text("a€𝄞b")];
        for i in 0..=bytes.len() {
            for j in i..=bytes.len() {
                assert_eq!(
                    decode_split(&bytes, &[i, j], limits()).as_ref(),
                    Ok(&want),
                    "{i} {j}"
                );
            }
        }
    }

    #[test]
    fn byte_at_a_time() {
        // Also shows each byte is processed once: 70 KB fed one byte at a
        // time would be far too slow if partial frames were rescanned.
        let (bytes, want) = sample_stream(true);
        let splits: Vec<usize> = (1..bytes.len()).collect();
        assert_eq!(decode_split(&bytes, &splits, limits()), Ok(want));
    }

    /// Tiny xorshift64* generator: deterministic, no dependencies.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Fuzz iteration count: `default`, or `WS_FUZZ_ITERS` for long runs
    /// (e.g. `WS_FUZZ_ITERS=2000000 cargo test --release random_`).
    fn fuzz_iters(default: usize) -> usize {
        std::env::var("WS_FUZZ_ITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    fn random_chunks(rng: &mut Rng, len: usize) -> Vec<usize> {
        let mut splits = Vec::new();
        let mut pos = 0;
        while pos < len {
            pos += 1 + rng.below(40);
            if pos < len {
                splits.push(pos);
            }
        }
        splits
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let lim = Limits {
            max_frame: 4096,
            max_message: 8192,
        };
        for _ in 0..fuzz_iters(20_000) {
            let len = rng.below(300);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Bias towards plausible headers so the decoder gets past byte 0.
            if let Some(b) = bytes.get_mut(0) {
                *b &= 0x8f;
            }
            if let Some(b) = bytes.get_mut(1) {
                *b |= 0x80;
            }
            let splits = random_chunks(&mut rng, len);
            let _ = decode_split(&bytes, &splits, lim);
        }
    }

    #[test]
    fn random_mutations_of_valid_stream_never_panic() {
        let (bytes, _) = sample_stream(true);
        let bytes = &bytes[..2000];
        let mut rng = Rng(42);
        let lim = limits();
        for _ in 0..fuzz_iters(3_000) {
            let mut b = bytes.to_vec();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(b.len());
                b[i] = rng.next() as u8;
            }
            let splits = random_chunks(&mut rng, b.len());
            let _ = decode_split(&b, &splits, lim);
        }
    }

    #[test]
    fn random_valid_streams_roundtrip_under_random_splits() {
        let mut rng = Rng(7);
        for _ in 0..fuzz_iters(300) {
            let mut bytes = Vec::new();
            let mut want = Vec::new();
            for _ in 0..1 + rng.below(6) {
                let n = rng.below(400);
                let payload: Vec<u8> = (0..n).map(|_| b'a' + rng.below(26) as u8).collect();
                let key = (rng.next() as u32).to_ne_bytes();
                let frags = 1 + rng.below(3);
                let mut start = 0;
                for f in 0..frags {
                    let end = if f + 1 == frags {
                        n
                    } else {
                        start + rng.below(n - start + 1)
                    };
                    let op = if f == 0 { 0x01 } else { 0x00 };
                    let fin = if f + 1 == frags { 0x80 } else { 0 };
                    bytes.extend(raw_frame(op | fin, &payload[start..end], key));
                    if f + 1 < frags && rng.below(2) == 0 {
                        bytes.extend(frame(OpCode::Ping, true, b"hb"));
                        want.push(Message::Ping(Bytes::from_static(b"hb")));
                    }
                    start = end;
                }
                want.push(Message::Text(Bytes::from(payload)));
            }
            let splits = random_chunks(&mut rng, bytes.len());
            assert_eq!(decode_split(&bytes, &splits, limits()), Ok(want));
        }
    }

    #[test]
    fn encoder_output_decodes_after_masking() {
        // Server frames are unmasked; mask one like a client would and decode.
        let server = encode_text("round trip ✓".as_bytes());
        let client = frame(OpCode::Text, true, &server[2..]);
        assert_eq!(decode_all(&client), Ok(vec![text("round trip ✓")]));
    }
}
