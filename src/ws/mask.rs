//! Client-to-server payload masking (RFC 6455 §5.3).
//!
//! Every byte of a client frame's payload is XORed with one of the four bytes
//! of the frame's masking key: "octet i of the transformed data is the XOR of
//! octet i of the original data with octet at index i modulo 4 of the masking
//! key". Masking is the only per-byte work the decoder cannot avoid, so it is
//! done a machine word (8 bytes) at a time with safe code: the 4-byte key is
//! doubled into a `u64`, the slice is walked with `chunks_exact_mut(8)`, and
//! only the at most 7 trailing bytes are handled one by one. The compiler is
//! free to vectorise the word loop further.
//!
//! The decoder unmasks frames that arrive in pieces, so [`apply_mask_offset`]
//! takes the position of the slice inside the payload and rotates the key to
//! match; masking is its own inverse, so the same functions mask and unmask.

/// XOR `buf` in place with `key`, where `buf[0]` is payload octet 0.
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    let [a, b, c, d] = key;
    let key64 = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let masked = u64::from_ne_bytes(word) ^ key64;
        chunk.copy_from_slice(&masked.to_ne_bytes());
    }
    // Whole 8-byte chunks consumed a multiple of 4 octets, so the remainder
    // starts again at key index 0.
    for (byte, k) in chunks.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *byte ^= *k;
    }
}

/// XOR `buf` in place with `key`, where `buf[0]` is payload octet `offset`.
#[inline]
pub fn apply_mask_offset(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let mut rotated = key;
    rotated.rotate_left(offset % 4);
    apply_mask(buf, rotated);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(buf: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= key[(i + offset) % 4];
        }
    }

    #[test]
    fn rfc_hello_example() {
        // RFC 6455 §5.7: masked "Hello" with key 37 fa 21 3d.
        let mut data = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(&data, b"Hello");
    }

    #[test]
    fn matches_naive_for_all_lengths_and_offsets() {
        let key = [0x12, 0x34, 0x56, 0x78];
        for len in 0..70 {
            for offset in 0..9 {
                let orig: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
                let mut fast = orig.clone();
                let mut slow = orig.clone();
                apply_mask_offset(&mut fast, key, offset);
                naive(&mut slow, key, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn piecewise_equals_whole() {
        let key = [0xde, 0xad, 0xbe, 0xef];
        let orig: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let mut whole = orig.clone();
        apply_mask(&mut whole, key);
        for split in [1usize, 3, 5, 8, 13, 500, 999] {
            let mut pieces = orig.clone();
            let (a, b) = pieces.split_at_mut(split);
            apply_mask_offset(a, key, 0);
            apply_mask_offset(b, key, split);
            assert_eq!(pieces, whole, "split {split}");
        }
    }

    #[test]
    fn involution() {
        let key = [1, 2, 3, 4];
        let orig = b"the quick brown fox jumps over the lazy dog".to_vec();
        let mut data = orig.clone();
        apply_mask(&mut data, key);
        assert_ne!(data, orig);
        apply_mask(&mut data, key);
        assert_eq!(data, orig);
    }
}
