//! Server-Sent Events from an upstream. Sits between the HTTP body stream and a provider's
//! [`StreamDecoder`](crate::providers::StreamDecoder): [`SseParser`] cuts upstream bytes
//! into frames whatever the network's chunk boundaries, and refuses an event larger than
//! its cap instead of buffering an endless line.

use crate::providers::SseFrame;

/// An event that outgrew the parser's cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge(pub usize);

/// An incremental SSE parser: feed it body chunks, get complete frames back.
#[derive(Debug)]
pub struct SseParser {
    /// Longest event (its lines together) kept, in bytes.
    max_event: usize,
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

impl Default for SseParser {
    fn default() -> Self {
        SseParser::new(usize::MAX)
    }
}

impl SseParser {
    /// A parser that refuses events longer than `max_event` bytes.
    pub fn new(max_event: usize) -> Self {
        SseParser {
            max_event,
            line: Vec::new(),
            pending_cr: false,
            event: String::new(),
            data: String::new(),
            has_data: false,
        }
    }

    /// Parse `bytes`, returning every frame completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseFrame>, TooLarge> {
        let frames = self.push_unbounded(bytes);
        if self.line.len() + self.data.len() > self.max_event {
            return Err(TooLarge(self.max_event));
        }
        Ok(frames)
    }

    fn push_unbounded(&mut self, bytes: &[u8]) -> Vec<SseFrame> {
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
            if self.data.len() > self.max_event {
                // Stop collecting; `push` reports it.
                break;
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::providers::SseFrame;

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
        assert_eq!(p.push(STREAM.as_bytes()).unwrap(), expected());
        assert_eq!(p.finish(), None);
    }

    #[test]
    fn byte_by_byte() {
        for text in [STREAM.to_owned(), STREAM.replace('\n', "\r\n")] {
            let mut p = SseParser::default();
            let mut frames = Vec::new();
            for b in text.as_bytes() {
                frames.extend(p.push(std::slice::from_ref(b)).unwrap());
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
            let mut frames = p.push(&bytes[..i]).unwrap();
            frames.extend(p.push(&bytes[i..]).unwrap());
            assert_eq!(frames, expected(), "split at {i}");
        }
    }

    #[test]
    fn lone_cr_line_endings() {
        let mut p = SseParser::default();
        assert_eq!(
            p.push(b"data: a\r\rdata: b\r").unwrap(),
            vec![frame("", "a")]
        );
        assert_eq!(p.push(b"\r").unwrap(), vec![frame("", "b")]);
    }

    #[test]
    fn trailing_frame_without_blank_line() {
        let mut p = SseParser::default();
        assert!(p.push(b"data: [DONE]").unwrap().is_empty());
        assert_eq!(p.finish(), Some(frame("", "[DONE]")));
        assert_eq!(p.finish(), None);

        let mut p = SseParser::default();
        assert!(p.push(b"event: e\ndata: 1\n").unwrap().is_empty());
        assert_eq!(p.finish(), Some(frame("e", "1")));
    }

    #[test]
    fn event_without_data_is_dropped() {
        let mut p = SseParser::default();
        assert!(p.push(b"event: lonely\n\ndata: 2\n\n").unwrap() == vec![frame("", "2")]);
    }

    #[test]
    fn field_without_space_and_unknown_fields() {
        let mut p = SseParser::default();
        assert_eq!(
            p.push(b"id: 7\nretry: 10\nevent:e\ndata:{}\n\n").unwrap(),
            vec![frame("e", "{}")]
        );
    }

    #[test]
    fn events_past_the_cap_are_refused() {
        let mut p = SseParser::new(16);
        assert_eq!(
            p.push(b"data: short\n\n").unwrap(),
            vec![frame("", "short")]
        );
        // One line that never ends, fed in pieces.
        assert!(p.push(b"data: 0123456789").is_ok());
        assert_eq!(p.push(b"0123456789"), Err(TooLarge(16)));
        // Many short data lines of one event add up too.
        let mut p = SseParser::new(16);
        assert_eq!(
            p.push(b"data: 12345\ndata: 12345\ndata: 12345\ndata: 1\n"),
            Err(TooLarge(16))
        );
    }
}
