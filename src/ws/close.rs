//! Close status codes (RFC 6455 §7.4) and Close frame payloads (§5.5.1).
//!
//! Codes are plain `u16` constants rather than an enum because applications
//! may use any code in 3000-4999 and peers may send codes this server does not
//! know; the only question the server must answer about a received code is
//! whether it may legally appear on the wire ([`is_valid_received`]).
//!
//! §5.5.1: "If there is a body, the first two bytes of the body MUST be a
//! 2-byte unsigned integer (in network byte order) representing a status code
//! [...] Following the 2-byte integer, the body MAY contain UTF-8-encoded data
//! with value /reason/". §7.4.1 reserves 1004 and forbids 1005, 1006 and 1015
//! on the wire ("MUST NOT be set as a status code in a Close control frame by
//! an endpoint").

use bytes::Bytes;

use super::ProtocolError;

/// 1000: the purpose for which the connection was established has been fulfilled.
pub const NORMAL: u16 = 1000;
/// 1001: the endpoint is going away (server shutdown, page navigation).
pub const GOING_AWAY: u16 = 1001;
/// 1002: the endpoint is terminating the connection due to a protocol error.
pub const PROTOCOL_ERROR: u16 = 1002;
/// 1003: a type of data was received that the endpoint cannot accept.
pub const UNSUPPORTED: u16 = 1003;
/// 1007: a message's data was not consistent with its type (e.g. non-UTF-8 text).
pub const INVALID_PAYLOAD: u16 = 1007;
/// 1008: a message violated the endpoint's policy.
pub const POLICY: u16 = 1008;
/// 1009: a message was too big to process.
pub const TOO_BIG: u16 = 1009;
/// 1011: the server encountered an unexpected condition.
pub const INTERNAL: u16 = 1011;

/// Whether `code` may legally appear in a Close frame received from a peer.
///
/// Accepts 1000-1003, 1007-1011, the IANA-registered 1012-1014, and the
/// library/application ranges 3000-4999. Rejects everything below 1000,
/// the reserved 1004, the never-on-the-wire 1005/1006/1015, the unassigned
/// 1016-2999, and 5000 and above.
pub fn is_valid_received(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Parse a received Close frame's payload into `(code, reason)`.
///
/// Empty payload → `None` (no status code present, which is allowed).
/// One byte → protocol error (a code needs two). Invalid code → protocol
/// error. Reason not UTF-8 → [`ProtocolError::InvalidUtf8`] (1007).
pub fn parse_close_payload(payload: Bytes) -> Result<Option<(u16, Bytes)>, ProtocolError> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(ProtocolError::InvalidClosePayload),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !is_valid_received(code) {
                return Err(ProtocolError::InvalidCloseCode(code));
            }
            let reason = payload.slice(2..);
            if std::str::from_utf8(&reason).is_err() {
                return Err(ProtocolError::InvalidUtf8);
            }
            Ok(Some((code, reason)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_codes() {
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ] {
            assert!(is_valid_received(code), "{code}");
        }
    }

    #[test]
    fn invalid_codes() {
        for code in [
            0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!is_valid_received(code), "{code}");
        }
    }

    #[test]
    fn constants() {
        assert_eq!(
            [NORMAL, GOING_AWAY, PROTOCOL_ERROR, UNSUPPORTED],
            [1000, 1001, 1002, 1003]
        );
        assert_eq!(
            [INVALID_PAYLOAD, POLICY, TOO_BIG, INTERNAL],
            [1007, 1008, 1009, 1011]
        );
    }

    #[test]
    fn parse_payloads() {
        assert_eq!(parse_close_payload(Bytes::new()), Ok(None));
        assert_eq!(
            parse_close_payload(Bytes::from_static(&[0x03])),
            Err(ProtocolError::InvalidClosePayload)
        );
        assert_eq!(
            parse_close_payload(Bytes::from_static(&[0x03, 0xe8])),
            Ok(Some((1000, Bytes::new())))
        );
        assert_eq!(
            parse_close_payload(Bytes::from_static(b"\x0f\xa0bye \xc2\xb5")),
            Ok(Some((4000, Bytes::from_static("bye µ".as_bytes()))))
        );
        assert_eq!(
            parse_close_payload(Bytes::from_static(&[0x03, 0xed])),
            Err(ProtocolError::InvalidCloseCode(1005))
        );
        let err =
            parse_close_payload(Bytes::from_static(b"\x03\xe8\xce\xba\xed\xa0\x80")).unwrap_err();
        assert_eq!(err, ProtocolError::InvalidUtf8);
        assert_eq!(err.close_code(), INVALID_PAYLOAD);
        assert_eq!(
            ProtocolError::InvalidCloseCode(0).close_code(),
            PROTOCOL_ERROR
        );
        assert_eq!(
            ProtocolError::InvalidClosePayload.close_code(),
            PROTOCOL_ERROR
        );
    }
}
