//! Server-Sent Events: an incremental parser for upstream streams (frames may be split at
//! any byte) and the encoder for the frames the gateway sends to clients.

use bytes::Bytes;

/// One SSE frame: the `event:` field (empty if absent) and the `data:` lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseFrame {
    pub event: String,
    pub data: String,
}

/// Incremental SSE parser.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    event: String,
    data: Option<String>,
}

/// The frame that ends an OpenAI stream.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// `data: <json>\n\n`
pub fn encode_data(json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

impl SseParser {
    /// Feed bytes; returns the frames they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseFrame> {
        self.buf.extend_from_slice(bytes);
        let mut frames = Vec::new();
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos;
            let mut line = &self.buf[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = String::from_utf8_lossy(line).into_owned();
            start = end + 1;
            if let Some(frame) = self.line(&line) {
                frames.push(frame);
            }
        }
        self.buf.drain(..start);
        frames
    }

    /// The last frame of a stream that ended without a blank line.
    pub fn finish(&mut self) -> Option<SseFrame> {
        if !self.buf.is_empty() {
            let rest = String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned();
            let rest = rest.trim_end_matches('\r').to_owned();
            if let Some(f) = self.line(&rest) {
                return Some(f);
            }
        }
        self.line("")
    }

    fn line(&mut self, line: &str) -> Option<SseFrame> {
        if line.is_empty() {
            let data = self.data.take()?;
            return Some(SseFrame {
                event: std::mem::take(&mut self.event),
                data,
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "event" => self.event = value.to_owned(),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn byte_by_byte() {
        let input = b"event: a\r\ndata: {\"x\":1}\r\n\r\n: ping\n\ndata: one\ndata: two\n\ndata: [DONE]\n\n";
        let mut p = SseParser::default();
        let mut frames = Vec::new();
        for b in input.iter() {
            frames.extend(p.push(std::slice::from_ref(b)));
        }
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].event, "a");
        assert_eq!(frames[0].data, "{\"x\":1}");
        assert_eq!(frames[1].data, "one\ntwo");
        assert_eq!(frames[2].data, "[DONE]");
    }

    #[test]
    fn trailing_frame_without_blank_line() {
        let mut p = SseParser::default();
        assert!(p.push(b"data: last").is_empty());
        assert_eq!(p.finish().unwrap().data, "last");
    }
}
