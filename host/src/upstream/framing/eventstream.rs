//! AWS event-stream decoding: the binary framing of Bedrock's streamed answers
//! (`ConverseStream`, `InvokeModelWithResponseStream`).
//!
//! Sits between the upstream HTTP body and the provider's translation: bytes go in as the
//! network delivers them, whole messages come out with both CRC32s checked. It knows the framing
//! and the `:`-headers AWS uses to say what a message is, nothing of the JSON payloads.
//!
//! The parsing and both checksums are `aws-smithy-eventstream`'s (`read_message_from`). Its
//! streaming `MessageFrameDecoder` is not used: it buffers whatever it is given until the length
//! prefix's worth of bytes has arrived and exposes neither that length nor the kind of an error,
//! so it can neither cap a message's size nor tell a corrupted frame from a malformed one. Here the
//! decoder reads the 12-byte prelude itself (checking its CRC first, so a corrupted length is
//! reported as corruption), refuses a length over the cap before buffering any of it, and hands
//! each complete frame to the crate.

use aws_smithy_eventstream::frame::read_message_from;
use bytes::{Bytes, BytesMut};

/// Total length, headers length, prelude CRC: 3 × u32.
const PRELUDE_BYTES: usize = 12;
/// The message CRC that ends every frame.
const MESSAGE_CRC_BYTES: usize = 4;
/// A frame with no headers and no payload.
const MIN_MESSAGE_BYTES: usize = PRELUDE_BYTES + MESSAGE_CRC_BYTES;

/// One decoded message: the headers AWS uses to classify it, and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMessage {
    /// `:message-type`: `event`, `exception` or `error`.
    pub message_type: String,
    /// `:event-type` of an event, e.g. `contentBlockDelta`, `chunk`.
    pub event_type: Option<String>,
    /// `:exception-type` of an exception, e.g. `throttlingException`.
    pub exception_type: Option<String>,
    /// `:error-code` of an error message.
    pub error_code: Option<String>,
    /// `:error-message` of an error message.
    pub error_message: Option<String>,
    /// `:content-type` of the payload, e.g. `application/json`.
    pub content_type: Option<String>,
    pub payload: Bytes,
}

/// Why the stream cannot be decoded. None of them can be recovered from: framing has no
/// resynchronisation point, so the decoder stays failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error(
        "event-stream {part} CRC mismatch (corrupted frame): the frame says {expected:#010x}, \
         its bytes give {computed:#010x}"
    )]
    Crc {
        /// `"prelude"` (the length prefix) or `"message"` (headers and payload).
        part: &'static str,
        expected: u32,
        computed: u32,
    },
    #[error(
        "event-stream message of {length} bytes is larger than the limit of {max} bytes \
         (refused before reading it)"
    )]
    TooLarge { length: usize, max: usize },
    #[error(
        "event-stream body ended inside a message ({buffered} bytes of it received{}): truncated stream",
        expected_suffix(*.expected)
    )]
    Truncated {
        buffered: usize,
        /// The message's length, once its prelude had arrived.
        expected: Option<usize>,
    },
    #[error("malformed event-stream message: {0}")]
    Malformed(String),
}

fn expected_suffix(expected: Option<usize>) -> String {
    expected.map(|n| format!(" of {n}")).unwrap_or_default()
}

/// An incremental decoder: feed it the body's chunks in order, then call `finish`.
#[derive(Debug)]
pub struct EventStreamDecoder {
    max_message_bytes: usize,
    /// Bytes received and not yet part of a returned message; starts at a frame boundary.
    buffer: BytesMut,
    /// The length of the frame at the front of `buffer`, once its prelude has been checked.
    frame_len: Option<usize>,
    /// Set by the first error; every later call returns it (after any messages that came before
    /// the bad frame have been returned).
    failed: Option<FrameError>,
}

impl EventStreamDecoder {
    /// `max_message_bytes` caps one whole frame (prelude, headers, payload, CRC).
    pub fn new(max_message_bytes: usize) -> Self {
        EventStreamDecoder {
            max_message_bytes,
            buffer: BytesMut::new(),
            frame_len: None,
            failed: None,
        }
    }

    /// Every message completed by `bytes`, in order.
    ///
    /// If the chunk completes some good messages and then hits a bad frame, the good messages
    /// are returned and the error comes from the next call (`push` or `finish`), so nothing that
    /// arrived intact is dropped.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<EventMessage>, FrameError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        self.buffer.extend_from_slice(bytes);
        let mut messages = Vec::new();
        loop {
            match self.next_message() {
                Ok(Some(message)) => messages.push(message),
                Ok(None) => return Ok(messages),
                Err(error) => {
                    self.failed = Some(error.clone());
                    // The bad bytes are of no further use; free them now.
                    self.buffer = BytesMut::new();
                    return if messages.is_empty() {
                        Err(error)
                    } else {
                        Ok(messages)
                    };
                }
            }
        }
    }

    /// The body ended: `Err` if a partial message is left (a truncated stream) or an earlier
    /// error has not been returned yet.
    pub fn finish(&mut self) -> Result<(), FrameError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if self.buffer.is_empty() {
            return Ok(());
        }
        let error = FrameError::Truncated {
            buffered: self.buffer.len(),
            expected: self.frame_len.or_else(|| self.peek_len()),
        };
        self.failed = Some(error.clone());
        Err(error)
    }

    /// The next complete message at the front of the buffer, if it is all there.
    fn next_message(&mut self) -> Result<Option<EventMessage>, FrameError> {
        let Some(len) = self.checked_frame_len()? else {
            return Ok(None);
        };
        if self.buffer.len() < len {
            // Grow once to the frame's size (already checked against the cap) instead of by
            // doubling as the chunks come in.
            self.buffer.reserve(len - self.buffer.len());
            return Ok(None);
        }
        self.frame_len = None;
        let frame = self.buffer.split_to(len).freeze();
        decode_frame(frame).map(Some)
    }

    /// The length of the frame at the front of the buffer once its prelude is in and valid.
    fn checked_frame_len(&mut self) -> Result<Option<usize>, FrameError> {
        if let Some(len) = self.frame_len {
            return Ok(Some(len));
        }
        if self.buffer.len() < PRELUDE_BYTES {
            return Ok(None);
        }
        // The prelude CRC comes first: a flipped bit in the length is corruption, not a huge
        // message, and it must be caught before the length decides how much to wait for.
        let expected = be_u32(&self.buffer[8..12]);
        let computed = crc32fast::hash(&self.buffer[..8]);
        if expected != computed {
            return Err(FrameError::Crc {
                part: "prelude",
                expected,
                computed,
            });
        }
        let len = be_u32(&self.buffer[..4]) as usize;
        if len > self.max_message_bytes {
            return Err(FrameError::TooLarge {
                length: len,
                max: self.max_message_bytes,
            });
        }
        if len < MIN_MESSAGE_BYTES {
            return Err(FrameError::Malformed(format!(
                "length prefix {len} is shorter than the {MIN_MESSAGE_BYTES}-byte minimum frame"
            )));
        }
        self.frame_len = Some(len);
        Ok(Some(len))
    }

    /// The unchecked length prefix, for the truncation message.
    fn peek_len(&self) -> Option<usize> {
        (self.buffer.len() >= 4).then(|| be_u32(&self.buffer[..4]) as usize)
    }
}

fn be_u32(bytes: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[..4]);
    u32::from_be_bytes(word)
}

/// One whole frame (its length already checked) into a message.
fn decode_frame(frame: Bytes) -> Result<EventMessage, FrameError> {
    let message = match read_message_from(frame.clone()) {
        Ok(message) => message,
        Err(error) => {
            // The crate's error kinds are private: tell corruption from malformation by checking
            // the message CRC here (the prelude CRC was checked before).
            let body_len = frame.len() - MESSAGE_CRC_BYTES;
            let expected = be_u32(&frame[body_len..]);
            let computed = crc32fast::hash(&frame[..body_len]);
            return Err(if expected != computed {
                FrameError::Crc {
                    part: "message",
                    expected,
                    computed,
                }
            } else {
                FrameError::Malformed(error.to_string())
            });
        }
    };

    let mut message_type = None;
    let mut event_type = None;
    let mut exception_type = None;
    let mut error_code = None;
    let mut error_message = None;
    let mut content_type = None;
    for header in message.headers() {
        let name = header.name().as_str();
        let field = match name {
            ":message-type" => &mut message_type,
            ":event-type" => &mut event_type,
            ":exception-type" => &mut exception_type,
            ":error-code" => &mut error_code,
            ":error-message" => &mut error_message,
            ":content-type" => &mut content_type,
            _ => continue,
        };
        let value = header
            .value()
            .as_string()
            .map_err(|_| FrameError::Malformed(format!("header {name} is not of string type")))?;
        *field = Some(value.as_str().to_owned());
    }
    let message_type = message_type
        .ok_or_else(|| FrameError::Malformed("message without a :message-type header".into()))?;
    Ok(EventMessage {
        message_type,
        event_type,
        exception_type,
        error_code,
        error_message,
        content_type,
        payload: message.payload().clone(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use aws_smithy_eventstream::frame::write_message_to;
    use aws_smithy_types::event_stream::{Header, HeaderValue, Message};

    const MAX: usize = 64 * 1024;

    /// Headers (all of string type) and payload → one frame.
    type Encoder = fn(&[(&str, &str)], &[u8]) -> Vec<u8>;
    const ENCODERS: [Encoder; 2] = [hand_encode, crate_encode];

    /// A frame written by hand from the format's description, independently of the crate:
    /// prelude (total length, headers length, CRC of those 8 bytes), headers of string type 7
    /// (name length u8, name, 7, value length u16, value), payload, CRC of everything before.
    fn hand_encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
        let mut encoded_headers = Vec::new();
        for (name, value) in headers {
            encoded_headers.push(u8::try_from(name.len()).unwrap());
            encoded_headers.extend_from_slice(name.as_bytes());
            encoded_headers.push(7);
            encoded_headers.extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
            encoded_headers.extend_from_slice(value.as_bytes());
        }
        let total = PRELUDE_BYTES + encoded_headers.len() + payload.len() + MESSAGE_CRC_BYTES;
        let mut frame = Vec::with_capacity(total);
        frame.extend_from_slice(&u32::try_from(total).unwrap().to_be_bytes());
        frame.extend_from_slice(&u32::try_from(encoded_headers.len()).unwrap().to_be_bytes());
        let prelude_crc = crc32fast::hash(&frame);
        frame.extend_from_slice(&prelude_crc.to_be_bytes());
        frame.extend_from_slice(&encoded_headers);
        frame.extend_from_slice(payload);
        let message_crc = crc32fast::hash(&frame);
        frame.extend_from_slice(&message_crc.to_be_bytes());
        frame
    }

    /// The same through the crate's own writer.
    fn crate_encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
        let mut message = Message::new(Bytes::copy_from_slice(payload));
        for (name, value) in headers {
            message = message.add_header(Header::new(
                name.to_string(),
                HeaderValue::String(value.to_string().into()),
            ));
        }
        let mut frame = Vec::new();
        write_message_to(&message, &mut frame).unwrap();
        frame
    }

    fn event_headers(event_type: &str) -> Vec<(&'static str, String)> {
        vec![
            (":message-type", "event".to_string()),
            (":event-type", event_type.to_string()),
            (":content-type", "application/json".to_string()),
        ]
    }

    fn as_refs<'a>(headers: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
        headers.iter().map(|(n, v)| (*n, v.as_str())).collect()
    }

    fn sample_stream(encode: Encoder) -> (Vec<u8>, Vec<EventMessage>) {
        let payloads = [
            r#"{"role":"assistant"}"#,
            r#"{"contentBlockIndex":0,"delta":{"text":"Hello"}}"#,
            "",
            r#"{"stopReason":"end_turn"}"#,
        ];
        let types = ["messageStart", "contentBlockDelta", "ping", "messageStop"];
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for (event_type, payload) in types.iter().zip(payloads) {
            let headers = event_headers(event_type);
            stream.extend(encode(&as_refs(&headers), payload.as_bytes()));
            expected.push(EventMessage {
                message_type: "event".into(),
                event_type: Some(event_type.to_string()),
                exception_type: None,
                error_code: None,
                error_message: None,
                content_type: Some("application/json".into()),
                payload: Bytes::copy_from_slice(payload.as_bytes()),
            });
        }
        (stream, expected)
    }

    fn decode_in_chunks(stream: &[u8], chunk: usize) -> Result<Vec<EventMessage>, FrameError> {
        let mut decoder = EventStreamDecoder::new(MAX);
        let mut messages = Vec::new();
        for piece in stream.chunks(chunk) {
            messages.extend(decoder.push(piece)?);
        }
        decoder.finish()?;
        Ok(messages)
    }

    #[test]
    fn both_encoders_produce_the_same_bytes() {
        let headers = [(":message-type", "event"), (":event-type", "chunk")];
        assert_eq!(
            hand_encode(&headers, b"{\"bytes\":\"e30=\"}"),
            crate_encode(&headers, b"{\"bytes\":\"e30=\"}")
        );
    }

    #[test]
    fn whole_stream_in_one_chunk() {
        for encode in ENCODERS {
            let (stream, expected) = sample_stream(encode);
            assert_eq!(decode_in_chunks(&stream, stream.len()).unwrap(), expected);
        }
    }

    #[test]
    fn byte_by_byte() {
        for encode in ENCODERS {
            let (stream, expected) = sample_stream(encode);
            assert_eq!(decode_in_chunks(&stream, 1).unwrap(), expected);
        }
    }

    #[test]
    fn every_split_point_and_chunk_size() {
        let (stream, expected) = sample_stream(hand_encode);
        for split in 0..=stream.len() {
            let mut decoder = EventStreamDecoder::new(MAX);
            let mut messages = decoder.push(&stream[..split]).unwrap();
            messages.extend(decoder.push(&stream[split..]).unwrap());
            decoder.finish().unwrap();
            assert_eq!(messages, expected, "split at {split}");
        }
        for chunk in 2..40 {
            assert_eq!(
                decode_in_chunks(&stream, chunk).unwrap(),
                expected,
                "chunks of {chunk}"
            );
        }
    }

    #[test]
    fn messages_come_out_as_soon_as_complete() {
        let (stream, _) = sample_stream(hand_encode);
        let first_len = be_u32(&stream[..4]) as usize;
        let mut decoder = EventStreamDecoder::new(MAX);
        assert!(decoder.push(&stream[..first_len - 1]).unwrap().is_empty());
        assert_eq!(
            decoder
                .push(&stream[first_len - 1..first_len])
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn exception_message_fields() {
        let payload = br#"{"message":"Too many requests, please wait before trying again."}"#;
        for encode in ENCODERS {
            let frame = encode(
                &[
                    (":message-type", "exception"),
                    (":exception-type", "throttlingException"),
                    (":content-type", "application/json"),
                ],
                payload,
            );
            let messages = decode_in_chunks(&frame, 7).unwrap();
            assert_eq!(
                messages,
                vec![EventMessage {
                    message_type: "exception".into(),
                    event_type: None,
                    exception_type: Some("throttlingException".into()),
                    error_code: None,
                    error_message: None,
                    content_type: Some("application/json".into()),
                    payload: Bytes::copy_from_slice(payload),
                }]
            );
        }
    }

    #[test]
    fn error_message_fields() {
        let frame = hand_encode(
            &[
                (":message-type", "error"),
                (":error-code", "InternalFailure"),
                (":error-message", "An internal error occurred"),
            ],
            b"",
        );
        let message = decode_in_chunks(&frame, 5).unwrap().remove(0);
        assert_eq!(message.message_type, "error");
        assert_eq!(message.error_code.as_deref(), Some("InternalFailure"));
        assert_eq!(
            message.error_message.as_deref(),
            Some("An internal error occurred")
        );
        assert!(message.payload.is_empty());
    }

    #[test]
    fn other_headers_of_any_type_are_ignored() {
        let message = Message::new(Bytes::from_static(b"{}"))
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String("event".into()),
            ))
            .add_header(Header::new(
                ":event-type",
                HeaderValue::String("chunk".into()),
            ))
            .add_header(Header::new("x-count", HeaderValue::Int32(7)))
            .add_header(Header::new("x-flag", HeaderValue::Bool(true)));
        let mut frame = Vec::new();
        write_message_to(&message, &mut frame).unwrap();
        let decoded = decode_in_chunks(&frame, 3).unwrap().remove(0);
        assert_eq!(decoded.event_type.as_deref(), Some("chunk"));
        assert_eq!(&decoded.payload[..], b"{}");
    }

    #[test]
    fn a_known_header_of_another_type_is_malformed() {
        let message = Message::new(Bytes::new())
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String("event".into()),
            ))
            .add_header(Header::new(":event-type", HeaderValue::Int32(1)));
        let mut frame = Vec::new();
        write_message_to(&message, &mut frame).unwrap();
        let error = decode_in_chunks(&frame, frame.len()).unwrap_err();
        assert_eq!(
            error,
            FrameError::Malformed("header :event-type is not of string type".into())
        );
    }

    #[test]
    fn missing_message_type_is_malformed() {
        let frame = hand_encode(&[(":event-type", "chunk")], b"{}");
        let error = decode_in_chunks(&frame, frame.len()).unwrap_err();
        assert!(
            matches!(error, FrameError::Malformed(ref m) if m.contains(":message-type")),
            "{error}"
        );
    }

    #[test]
    fn flipped_payload_byte_is_a_message_crc_error() {
        let mut frame = hand_encode(&[(":message-type", "event")], b"{\"text\":\"hi\"}");
        let at = frame.len() - MESSAGE_CRC_BYTES - 3;
        frame[at] ^= 0x01;
        let error = decode_in_chunks(&frame, 4).unwrap_err();
        assert!(
            matches!(
                error,
                FrameError::Crc {
                    part: "message",
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error
            .to_string()
            .starts_with("event-stream message CRC mismatch (corrupted frame)"));
    }

    #[test]
    fn flipped_header_or_crc_byte_is_a_message_crc_error() {
        let clean = hand_encode(&[(":message-type", "event")], b"{}");
        for at in PRELUDE_BYTES..clean.len() {
            let mut frame = clean.clone();
            frame[at] ^= 0x80;
            let error = decode_in_chunks(&frame, frame.len()).unwrap_err();
            assert!(
                matches!(
                    error,
                    FrameError::Crc {
                        part: "message",
                        ..
                    }
                ),
                "byte {at}: {error:?}"
            );
        }
    }

    #[test]
    fn flipped_prelude_byte_is_a_prelude_crc_error() {
        let clean = hand_encode(&[(":message-type", "event")], b"{}");
        for at in 0..PRELUDE_BYTES {
            for bit in [0x01, 0x80] {
                let mut frame = clean.clone();
                frame[at] ^= bit;
                let mut decoder = EventStreamDecoder::new(MAX);
                // Detected as soon as the prelude is in, without waiting for the length it claims.
                let error = decoder.push(&frame[..PRELUDE_BYTES]).unwrap_err();
                assert!(
                    matches!(
                        error,
                        FrameError::Crc {
                            part: "prelude",
                            ..
                        }
                    ),
                    "byte {at}: {error:?}"
                );
            }
        }
    }

    fn prelude(total_len: u32, headers_len: u32) -> Vec<u8> {
        let mut prelude = Vec::new();
        prelude.extend_from_slice(&total_len.to_be_bytes());
        prelude.extend_from_slice(&headers_len.to_be_bytes());
        let crc = crc32fast::hash(&prelude);
        prelude.extend_from_slice(&crc.to_be_bytes());
        prelude
    }

    #[test]
    fn huge_length_prefix_is_refused_at_once_without_allocating() {
        let mut decoder = EventStreamDecoder::new(MAX);
        let error = decoder.push(&prelude(u32::MAX, 0)).unwrap_err();
        assert_eq!(
            error,
            FrameError::TooLarge {
                length: u32::MAX as usize,
                max: MAX
            }
        );
        assert!(
            decoder.buffer.capacity() < 1024,
            "{}",
            decoder.buffer.capacity()
        );
        // The decoder stays failed.
        assert_eq!(decoder.push(b"more").unwrap_err(), error);
        assert_eq!(decoder.finish().unwrap_err(), error);
    }

    #[test]
    fn the_cap_is_inclusive() {
        let frame = hand_encode(&[(":message-type", "event")], &[b'x'; 100]);
        let mut decoder = EventStreamDecoder::new(frame.len());
        assert_eq!(decoder.push(&frame).unwrap().len(), 1);
        let mut decoder = EventStreamDecoder::new(frame.len() - 1);
        assert!(matches!(
            decoder.push(&frame),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn length_shorter_than_a_frame_is_malformed() {
        let mut decoder = EventStreamDecoder::new(MAX);
        let error = decoder.push(&prelude(8, 0)).unwrap_err();
        assert!(matches!(error, FrameError::Malformed(_)), "{error:?}");
    }

    #[test]
    fn inconsistent_headers_length_is_malformed() {
        // Valid CRCs, but a headers length larger than the frame: the crate's parser refuses it.
        let mut frame = prelude(16, 1000);
        let crc = crc32fast::hash(&frame);
        frame.extend_from_slice(&crc.to_be_bytes());
        let error = decode_in_chunks(&frame, frame.len()).unwrap_err();
        assert!(matches!(error, FrameError::Malformed(_)), "{error:?}");
    }

    #[test]
    fn finish_with_a_partial_message_is_truncated() {
        let (stream, expected) = sample_stream(hand_encode);
        let first_len = be_u32(&stream[..4]) as usize;
        let cut = first_len + 20;
        let mut decoder = EventStreamDecoder::new(MAX);
        assert_eq!(decoder.push(&stream[..cut]).unwrap(), expected[..1]);
        let error = decoder.finish().unwrap_err();
        let second_len = be_u32(&stream[first_len..first_len + 4]) as usize;
        assert_eq!(
            error,
            FrameError::Truncated {
                buffered: 20,
                expected: Some(second_len)
            }
        );
        assert!(error.to_string().contains("truncated stream"), "{error}");

        // Less than a prelude: the length may not even be known.
        let mut decoder = EventStreamDecoder::new(MAX);
        decoder.push(&stream[..3]).unwrap();
        assert_eq!(
            decoder.finish().unwrap_err(),
            FrameError::Truncated {
                buffered: 3,
                expected: None
            }
        );
    }

    #[test]
    fn finish_on_a_boundary_is_ok() {
        let mut decoder = EventStreamDecoder::new(MAX);
        decoder.finish().unwrap();
        let (stream, _) = sample_stream(crate_encode);
        let mut decoder = EventStreamDecoder::new(MAX);
        decoder.push(&stream).unwrap();
        decoder.finish().unwrap();
    }

    #[test]
    fn good_messages_before_a_bad_frame_are_delivered_then_the_error() {
        let (mut stream, expected) = sample_stream(hand_encode);
        let first_len = be_u32(&stream[..4]) as usize;
        let at = first_len + PRELUDE_BYTES + 2;
        stream[at] ^= 0x01;
        let mut decoder = EventStreamDecoder::new(MAX);
        assert_eq!(decoder.push(&stream).unwrap(), expected[..1]);
        assert!(matches!(
            decoder.finish(),
            Err(FrameError::Crc {
                part: "message",
                ..
            })
        ));
    }
}
