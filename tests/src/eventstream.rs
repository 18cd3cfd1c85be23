//! AWS event-stream framing (`application/vnd.amazon.eventstream`), the binary body of
//! Bedrock's ConverseStream. Written from the format's description, not with an AWS crate,
//! so the gateway's decoder (`aws-smithy-eventstream`) is checked against an independent
//! encoder rather than against itself.
//!
//! A message is: total length (u32 BE), headers length (u32 BE), CRC32 of those 8 bytes,
//! the headers (name length u8, name, value type u8, value), the payload, and the CRC32 of
//! everything before it. The mock only sends string headers (type 7: u16 BE length, bytes).

/// The header value type of a UTF-8 string.
const STRING: u8 = 7;

/// One message with string `headers` and `payload`.
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut head = Vec::new();
    for (name, value) in headers {
        // Names are at most 255 bytes and values 65535 by the format; ours are short constants
        // and JSON types, so a longer one is a bug in the mock, cut rather than wrapped.
        let name = &name.as_bytes()[..name.len().min(u8::MAX as usize)];
        let value = &value.as_bytes()[..value.len().min(u16::MAX as usize)];
        head.push(name.len() as u8);
        head.extend_from_slice(name);
        head.push(STRING);
        head.extend_from_slice(&(value.len() as u16).to_be_bytes());
        head.extend_from_slice(value);
    }
    let total = 12 + head.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(head.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(payload);
    let message_crc = crc32fast::hash(&out);
    out.extend_from_slice(&message_crc.to_be_bytes());
    out
}

/// An event (`:message-type: event`) with a JSON payload, headers in the order Bedrock sends.
pub fn event(event_type: &str, json: &str) -> Vec<u8> {
    encode(
        &[
            (":event-type", event_type),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        json.as_bytes(),
    )
}

/// An exception (`:message-type: exception`), e.g. `throttlingException`, with
/// `{"message": ...}` as its payload.
pub fn exception(exception_type: &str, message: &str) -> Vec<u8> {
    let payload = serde_json::json!({ "message": message }).to_string();
    encode(
        &[
            (":exception-type", exception_type),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        payload.as_bytes(),
    )
}

/// The same message with one payload byte flipped: the prelude still reads, so the decoder
/// gets as far as the message CRC and must refuse it there.
pub fn corrupt(message: &[u8]) -> Vec<u8> {
    let mut out = message.to_vec();
    // The byte just before the trailing CRC: payload if there is one, else the last header.
    if out.len() > 16 {
        let at = out.len() - 5;
        out[at] ^= 0x5a;
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// CRC-32 (IEEE, reflected, polynomial 0xEDB88320) bit by bit, so the test does not trust
    /// the crate the encoder uses.
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn one_string_header_byte_by_byte() {
        let got = encode(&[("a", "bc")], b"{}");
        // total = 12 prelude + (1+1+1+2+2 = 7) headers + 2 payload + 4 CRC = 25
        let mut want = vec![0, 0, 0, 25, 0, 0, 0, 7];
        let prelude = crc32(&want);
        want.extend_from_slice(&prelude.to_be_bytes());
        want.extend_from_slice(&[1, b'a', 7, 0, 2, b'b', b'c', b'{', b'}']);
        let message = crc32(&want);
        want.extend_from_slice(&message.to_be_bytes());
        assert_eq!(got, want);
        assert_eq!(
            crc32(b"123456789"),
            0xCBF4_3926,
            "the check value of CRC-32"
        );
    }

    /// `valid_no_headers` from the event-stream test data of smithy-rs
    /// (rust-runtime/aws-smithy-eventstream/test_data), Apache-2.0.
    #[test]
    fn published_example_without_headers() {
        let want: [u8; 36] = [
            0x00, 0x00, 0x00, 0x24, 0x00, 0x00, 0x00, 0x00, 0x51, 0x63, 0x56, 0xad, 0x61, 0x6e,
            0x6f, 0x74, 0x68, 0x65, 0x72, 0x20, 0x74, 0x65, 0x73, 0x74, 0x20, 0x70, 0x61, 0x79,
            0x6c, 0x6f, 0x61, 0x64, 0x8d, 0xf8, 0x0e, 0x65,
        ];
        assert_eq!(encode(&[], b"another test payload"), want);
    }

    #[test]
    fn event_headers_and_corruption() {
        let m = event("messageStart", r#"{"role":"assistant"}"#);
        let headers_len = u32::from_be_bytes(m[4..8].try_into().unwrap()) as usize;
        let headers = &m[12..12 + headers_len];
        assert!(headers.starts_with(b"\x0b:event-type\x07\x00\x0cmessageStart"));
        assert!(m[12 + headers_len..].starts_with(br#"{"role":"assistant"}"#));
        let bad = corrupt(&m);
        assert_eq!(bad[..12], m[..12], "the prelude stays valid");
        let n = bad.len();
        let crc = u32::from_be_bytes(bad[n - 4..].try_into().unwrap());
        assert_ne!(crc32(&bad[..n - 4]), crc);
        assert_eq!(crc32(&m[..n - 4]), crc);
    }
}
