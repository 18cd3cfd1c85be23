//! Server-Sent Events, both ways. Sits between the HTTP body stream and a provider's
//! [`StreamDecoder`](super::StreamDecoder): [`SseParser`] cuts upstream bytes into frames
//! (whatever the network's chunk boundaries), and [`encode_data`] / [`DONE`] write the
//! OpenAI-style frames the gateway sends to its clients.

use bytes::Bytes;

/// The terminating frame of an OpenAI stream.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// One dispatched SSE event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseFrame {
    /// The `event:` field; empty when the frame had none.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// An incremental SSE parser: feed it body chunks, get complete frames back.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of a line not yet terminated. Kept as bytes so a UTF-8 sequence split across
    /// two chunks is decoded only once it is whole.
    line: Vec<u8>,
    /// A `\r` ended the previous chunk: a `\n` opening the next one belongs to it.
    pending_cr: bool,
    event: String,
    data: String,
    /// Whether any `data:` line arrived since the last dispatch (an empty `data:` line
    /// still makes a frame, a lone `event:` does not).
    has_data: bool,
}

impl SseParser {
    /// Parse `bytes`, returning every frame completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseFrame> {
        let mut frames = Vec::new();
        let mut rest = bytes;
        if self.pending_cr {
            self.pending_cr = false;
            if let Some((b'\n', tail)) = rest.split_first() {
                rest = tail;
            }
        }
        while let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&rest[..pos]);
            let is_cr = rest[pos] == b'\r';
            rest = &rest[pos + 1..];
            if is_cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    None => self.pending_cr = true,
                    Some(_) => {}
                }
            }
            let line = std::mem::take(&mut self.line);
            if let Some(frame) = self.line_done(&line) {
                frames.push(frame);
            }
        }
        self.line.extend_from_slice(rest);
        frames
    }

    /// The frame left when the body ended without its blank line, if any.
    pub fn finish(&mut self) -> Option<SseFrame> {
        self.pending_cr = false;
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            // Never a dispatch: the line is not empty.
            let _ = self.line_done(&line);
        }
        self.dispatch()
    }

    fn line_done(&mut self, line: &[u8]) -> Option<SseFrame> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line[0] == b':' {
            return None;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.find(':') {
            Some(i) => {
                let v = &text[i + 1..];
                (&text[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (&*text, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => value.clone_into(&mut self.event),
            // `id` and `retry` matter for browser reconnection only.
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseFrame> {
        let event = std::mem::take(&mut self.event);
        if !std::mem::take(&mut self.has_data) {
            return None;
        }
        Some(SseFrame {
            event,
            data: std::mem::take(&mut self.data),
        })
    }
}

/// One `data: <json>\n\n` frame.
pub fn encode_data(json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn frame(event: &str, data: &str) -> SseFrame {
        SseFrame {
            event: event.to_owned(),
            data: data.to_owned(),
        }
    }

    const STREAM: &str = "event: message_start\ndata: {\"a\":1}\n\n: keep-alive\n\ndata: x\ndata: y\n\nevent: ping\ndata:\n\ndata: caf\u{e9}\n\n";

    fn expected() -> Vec<SseFrame> {
        vec![
            frame("message_start", "{\"a\":1}"),
            frame("", "x\ny"),
            frame("ping", ""),
            frame("", "caf\u{e9}"),
        ]
    }

    #[test]
    fn whole_stream() {
        let mut p = SseParser::default();
        assert_eq!(p.push(STREAM.as_bytes()), expected());
        assert_eq!(p.finish(), None);
    }

    #[test]
    fn byte_by_byte() {
        for text in [STREAM.to_owned(), STREAM.replace('\n', "\r\n")] {
            let mut p = SseParser::default();
            let mut frames = Vec::new();
            for b in text.as_bytes() {
                frames.extend(p.push(std::slice::from_ref(b)));
            }
            assert_eq!(frames, expected(), "{text:?}");
        }
    }

    #[test]
    fn every_split_point() {
        let text = STREAM.replace('\n', "\r\n");
        let bytes = text.as_bytes();
        for i in 0..=bytes.len() {
            let mut p = SseParser::default();
            let mut frames = p.push(&bytes[..i]);
            frames.extend(p.push(&bytes[i..]));
            assert_eq!(frames, expected(), "split at {i}");
        }
    }

    #[test]
    fn lone_cr_line_endings() {
        let mut p = SseParser::default();
        assert_eq!(p.push(b"data: a\r\rdata: b\r"), vec![frame("", "a")]);
        assert_eq!(p.push(b"\r"), vec![frame("", "b")]);
    }

    #[test]
    fn trailing_frame_without_blank_line() {
        let mut p = SseParser::default();
        assert!(p.push(b"data: [DONE]").is_empty());
        assert_eq!(p.finish(), Some(frame("", "[DONE]")));
        assert_eq!(p.finish(), None);

        let mut p = SseParser::default();
        assert!(p.push(b"event: e\ndata: 1\n").is_empty());
        assert_eq!(p.finish(), Some(frame("e", "1")));
    }

    #[test]
    fn event_without_data_is_dropped() {
        let mut p = SseParser::default();
        assert!(p.push(b"event: lonely\n\ndata: 2\n\n") == vec![frame("", "2")]);
    }

    #[test]
    fn field_without_space_and_unknown_fields() {
        let mut p = SseParser::default();
        assert_eq!(
            p.push(b"id: 7\nretry: 10\nevent:e\ndata:{}\n\n"),
            vec![frame("e", "{}")]
        );
    }

    #[test]
    fn encoding() {
        assert_eq!(&encode_data(b"{\"a\":1}")[..], b"data: {\"a\":1}\n\n");
        let mut p = SseParser::default();
        assert_eq!(p.push(DONE), vec![frame("", "[DONE]")]);
    }
}
