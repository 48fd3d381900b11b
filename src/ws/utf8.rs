//! Incremental UTF-8 validation for text messages (RFC 6455 §5.6, §8.1).
//!
//! "When an endpoint is to interpret a byte stream as UTF-8 but finds that the
//! byte stream is not, in fact, a valid UTF-8 stream, that endpoint MUST _Fail
//! the WebSocket Connection_." A text message may be split into fragments and
//! each fragment may itself arrive in several reads, and code points may be
//! cut anywhere. To fail as soon as invalid bytes are seen (rather than after
//! buffering a whole message) the validator is fed every chunk as it is
//! unmasked and keeps only the carry of an incomplete trailing code point
//! (at most 3 bytes) between chunks.
//!
//! All bulk work is done by `std::str::from_utf8`, which is SIMD-accelerated
//! and already distinguishes "invalid" (`error_len() == Some(_)`) from
//! "valid so far but truncated" (`error_len() == None`); it also checks
//! truncated prefixes strictly (e.g. `E0 80` or `ED A0` is rejected at once),
//! so feeding a partial code point is enough to fail fast.

/// Returned when the bytes fed so far cannot be the prefix of valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utf8Error;

/// Streaming UTF-8 validator state: the incomplete code point carried over
/// from the previous chunk.
#[derive(Debug, Clone, Default)]
pub struct Utf8Validator {
    carry: [u8; 4],
    carry_len: usize,
}

/// Width of the code point introduced by lead byte `b` (0 for a byte that
/// cannot start a code point; such bytes never end up in the carry).
#[inline]
fn width(b: u8) -> usize {
    match b {
        0x00..=0x7f => 1,
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => 0,
    }
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forget any carried bytes (start of a new message).
    pub fn reset(&mut self) {
        self.carry_len = 0;
    }

    /// True when no incomplete code point is pending, i.e. the bytes fed so
    /// far form complete, valid UTF-8.
    pub fn is_complete(&self) -> bool {
        self.carry_len == 0
    }

    /// Feed the next chunk of the message. Fails as soon as the bytes seen so
    /// far cannot be a prefix of valid UTF-8.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), Utf8Error> {
        if self.carry_len > 0 {
            let need = width(self.carry[0]).saturating_sub(self.carry_len);
            if need == 0 {
                // Unreachable: the carry always holds a valid, truncated prefix.
                return Err(Utf8Error);
            }
            let take = need.min(data.len());
            let end = self.carry_len + take;
            let (head, rest) = data.split_at(take);
            self.carry
                .get_mut(self.carry_len..end)
                .ok_or(Utf8Error)?
                .copy_from_slice(head);
            self.carry_len = end;
            let pending = self.carry.get(..end).ok_or(Utf8Error)?;
            match std::str::from_utf8(pending) {
                Ok(_) => self.carry_len = 0,
                // Still a valid but truncated prefix: `data` was exhausted.
                Err(e) if e.error_len().is_none() => return Ok(()),
                Err(_) => return Err(Utf8Error),
            }
            data = rest;
        }
        match std::str::from_utf8(data) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = data.get(e.valid_up_to()..).ok_or(Utf8Error)?;
                // A truncated code point is at most 3 bytes long.
                let slot = self.carry.get_mut(..tail.len()).ok_or(Utf8Error)?;
                slot.copy_from_slice(tail);
                self.carry_len = tail.len();
                Ok(())
            }
            Err(_) => Err(Utf8Error),
        }
    }

    /// End of message: a trailing incomplete code point is an error.
    pub fn finish(&mut self) -> Result<(), Utf8Error> {
        let complete = self.is_complete();
        self.reset();
        if complete {
            Ok(())
        } else {
            Err(Utf8Error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_split(data: &[u8], splits: &[usize]) -> Result<(), Utf8Error> {
        let mut v = Utf8Validator::new();
        let mut start = 0;
        for &s in splits {
            v.feed(&data[start..s])?;
            start = s;
        }
        v.feed(&data[start..])?;
        v.finish()
    }

    #[test]
    fn valid_whole_and_every_two_way_split() {
        let s = "Hello-µ@ßöäüàá-UTF-8!! κόσμε 𝄞 \u{10FFFF}".as_bytes();
        assert!(feed_split(s, &[]).is_ok());
        for i in 0..=s.len() {
            assert!(feed_split(s, &[i]).is_ok(), "split at {i}");
        }
    }

    #[test]
    fn valid_byte_at_a_time() {
        let s = "κόσμε𝄞€$¢".as_bytes();
        let splits: Vec<usize> = (1..s.len()).collect();
        assert!(feed_split(s, &splits).is_ok());
    }

    #[test]
    fn valid_three_way_splits_of_four_byte_char() {
        let s = "a𝄞b".as_bytes();
        for i in 0..=s.len() {
            for j in i..=s.len() {
                assert!(feed_split(s, &[i, j]).is_ok(), "{i} {j}");
            }
        }
    }

    #[test]
    fn invalid_detected_at_every_split() {
        let cases: &[&[u8]] = &[
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited", // surrogate
            b"ab\xc0\xafcd",                                                   // overlong
            b"\xf4\x90\x80\x80",                                               // > U+10FFFF
            b"\xff",
            b"abc\x80",
            b"\xe0\x80\xaf",
        ];
        for case in cases {
            for i in 0..=case.len() {
                assert_eq!(feed_split(case, &[i]), Err(Utf8Error), "{case:?} @ {i}");
            }
        }
    }

    #[test]
    fn fails_fast_on_invalid_prefix() {
        // ED A0 can only start a surrogate: reject before the third byte.
        let mut v = Utf8Validator::new();
        assert!(v.feed(b"ok\xed").is_ok());
        assert_eq!(v.feed(b"\xa0"), Err(Utf8Error));
        // F4 90 is above U+10FFFF.
        let mut v = Utf8Validator::new();
        assert!(v.feed(b"\xf4").is_ok());
        assert_eq!(v.feed(b"\x90"), Err(Utf8Error));
    }

    #[test]
    fn truncated_at_end_fails_on_finish() {
        let mut v = Utf8Validator::new();
        assert!(v.feed("x€".as_bytes().split_at(3).0).is_ok());
        assert!(!v.is_complete());
        assert_eq!(v.finish(), Err(Utf8Error));
        // finish resets, so the validator can be reused.
        assert!(v.feed(b"fine").is_ok());
        assert!(v.finish().is_ok());
    }

    #[test]
    fn empty_feeds_are_harmless() {
        let mut v = Utf8Validator::new();
        v.feed(b"").unwrap();
        v.feed(b"\xe2").unwrap();
        v.feed(b"").unwrap();
        v.feed(b"\x82").unwrap();
        v.feed(b"").unwrap();
        v.feed(b"\xac").unwrap();
        v.finish().unwrap();
    }
}
