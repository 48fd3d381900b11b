//! WebSocket (RFC 6455) frame codec: a pure, I/O-free decoder for client
//! frames and encoders for server frames.
//!
//! It is deliberately free of I/O and async so that the io_uring connection
//! tasks can hand it whatever bytes a completion delivered, and so that every
//! protocol rule can be unit-tested with byte fixtures. It depends only on
//! `bytes` (payloads are split off the read buffer without copying) and
//! `thiserror`. No extensions (e.g. permessage-deflate) are negotiated, so
//! RSV bits and reserved opcodes are always errors.
//!
//! Layout:
//! * [`frame`] — opcodes, client header parsing, server frame encoding;
//! * [`codec`] — the incremental [`Decoder`] (fragmentation, limits, UTF-8);
//! * [`mask`] — word-at-a-time payload (un)masking;
//! * [`utf8`] — incremental UTF-8 validation across fragments and reads;
//! * [`close`] — close status codes and Close payload parsing.
//!
//! Every [`ProtocolError`] maps to the status code to send in the Close
//! frame that fails the connection ([`ProtocolError::close_code`]).

pub mod close;
pub mod codec;
pub mod frame;
pub mod mask;
pub mod utf8;

pub use codec::{Decoder, Limits};
pub use frame::{
    encode_binary, encode_close, encode_frame, encode_header, encode_text, header_len,
    parse_header, FrameHeader, OpCode, MAX_CONTROL_PAYLOAD,
};

use bytes::Bytes;

/// A complete message or control frame received from a client, payload
/// already unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A complete text message; the payload is valid UTF-8.
    Text(Bytes),
    /// A complete binary message.
    Binary(Bytes),
    /// A Ping; the application data must be echoed in a Pong (§5.5.2).
    Ping(Bytes),
    /// A Pong (solicited or unsolicited).
    Pong(Bytes),
    /// A Close with its status code and UTF-8 reason, or `None` when the
    /// frame had no body.
    Close(Option<(u16, Bytes)>),
}

/// A violation of RFC 6455 (or of the configured [`Limits`]) by the client.
/// Every variant is fatal to the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A client frame without the MASK bit (§5.1).
    #[error("client frame is not masked")]
    UnmaskedFrame,
    /// RSV1, RSV2 or RSV3 set without a negotiated extension (§5.2).
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    /// Opcode 0x3-0x7 or 0xB-0xF (§5.2).
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A control frame with a payload longer than 125 bytes (§5.5).
    #[error("control frame payload longer than 125 bytes")]
    ControlFrameTooLong,
    /// A control frame without FIN (§5.5).
    #[error("fragmented control frame")]
    FragmentedControl,
    /// A continuation frame with no fragmented message in progress (§5.4).
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    /// A new text/binary frame while a fragmented message is in progress (§5.4).
    #[error("new data frame while a fragmented message is in progress")]
    ExpectedContinuation,
    /// A Close frame carrying a status code that must not be sent (§7.4).
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// A Close frame with a 1-byte body (§5.5.1).
    #[error("close frame payload of 1 byte")]
    InvalidClosePayload,
    /// Text message or close reason that is not valid UTF-8 (§8.1).
    #[error("invalid UTF-8 in text message or close reason")]
    InvalidUtf8,
    /// 64-bit payload length with the most significant bit set (§5.2).
    #[error("64-bit payload length with the most significant bit set")]
    InvalidLength,
    /// Payload length not encoded in the minimal number of bytes (§5.2).
    #[error("payload length not minimally encoded")]
    NonMinimalLength,
    /// A frame's declared payload exceeds [`Limits::max_frame`].
    #[error("frame payload of {len} bytes exceeds limit of {max}")]
    FrameTooBig {
        /// Declared payload length.
        len: u64,
        /// Configured limit.
        max: usize,
    },
    /// A message's accumulated payload would exceed [`Limits::max_message`].
    #[error("message of {len} bytes exceeds limit of {max}")]
    MessageTooBig {
        /// Message length including the offending frame.
        len: usize,
        /// Configured limit.
        max: usize,
    },
}

impl ProtocolError {
    /// The status code to send in the Close frame that fails the connection:
    /// 1007 for invalid UTF-8, 1009 for size limits, 1002 otherwise.
    pub fn close_code(&self) -> u16 {
        match self {
            ProtocolError::InvalidUtf8 => close::INVALID_PAYLOAD,
            ProtocolError::FrameTooBig { .. } | ProtocolError::MessageTooBig { .. } => {
                close::TOO_BIG
            }
            _ => close::PROTOCOL_ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn public_api_is_reexported() {
        let _ = Decoder::new(Limits {
            max_frame: 1,
            max_message: 1,
        });
        let _ = Limits::default();
        assert_eq!(header_len(5), 2);
        let mut out = BytesMut::new();
        encode_header(OpCode::Pong, true, 0, &mut out);
        assert_eq!(&out[..], &[0x8a, 0x00]);
        assert_eq!(&encode_text(b"")[..], &[0x81, 0x00]);
        assert_eq!(&encode_binary(b"")[..], &[0x82, 0x00]);
        assert_eq!(encode_close(close::NORMAL, "").len(), 4);
        assert!(close::is_valid_received(close::NORMAL));
    }

    #[test]
    fn close_codes_for_every_variant() {
        use ProtocolError::*;
        let protocol = [
            UnmaskedFrame,
            ReservedBits,
            ReservedOpcode(3),
            ControlFrameTooLong,
            FragmentedControl,
            UnexpectedContinuation,
            ExpectedContinuation,
            InvalidCloseCode(1005),
            InvalidClosePayload,
            InvalidLength,
            NonMinimalLength,
        ];
        for e in protocol {
            assert_eq!(e.close_code(), 1002, "{e}");
        }
        assert_eq!(InvalidUtf8.close_code(), 1007);
        assert_eq!(FrameTooBig { len: 2, max: 1 }.close_code(), 1009);
        assert_eq!(MessageTooBig { len: 2, max: 1 }.close_code(), 1009);
        assert_eq!(
            FrameTooBig { len: 2, max: 1 }.to_string(),
            "frame payload of 2 bytes exceeds limit of 1"
        );
    }
}
