//! The usage seen so far in a stream, carried between `on-chunk` calls: empty, or the prompt,
//! completion and total counts as 12 little-endian bytes.

use switchyard_sdk::Usage;

pub fn encode(u: Option<&Usage>) -> Vec<u8> {
    let Some(u) = u else { return Vec::new() };
    let mut v = Vec::with_capacity(12);
    for x in [u.prompt_tokens, u.completion_tokens, u.total_tokens] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v
}

pub fn decode(b: &[u8]) -> Option<Usage> {
    let word = |i: usize| {
        b.get(i * 4..i * 4 + 4)
            .and_then(|s| s.try_into().ok())
            .map(u32::from_le_bytes)
    };
    Some(Usage {
        prompt_tokens: word(0)?,
        completion_tokens: word(1)?,
        total_tokens: word(2)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let u = Usage {
            prompt_tokens: 1,
            completion_tokens: 2,
            total_tokens: 3,
        };
        assert_eq!(decode(&encode(Some(&u))), Some(u));
        assert_eq!(decode(&encode(None)), None);
        assert_eq!(decode(&[1, 2, 3]), None);
    }
}
