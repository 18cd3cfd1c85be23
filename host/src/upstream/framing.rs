//! Body framing: the bytes of a streamed answer, whatever the network's chunk boundaries,
//! cut into the frames a provider's stream decoder reads. Server-Sent Events for most
//! providers, AWS's binary event-stream (both CRC32s checked) for Bedrock. Each frame is
//! capped in size: an upstream cannot make the gateway buffer an endless line.

use http::StatusCode;

use crate::error::GatewayError;
use crate::providers::{EventMessage, Frame, Framing};

pub mod eventstream;
pub mod sse;

/// Cuts one streamed body into frames.
pub enum FrameDecoder {
    Sse(sse::SseParser),
    EventStream(eventstream::EventStreamDecoder),
}

impl FrameDecoder {
    /// A decoder for `framing` whose frames may be at most `max_frame` bytes.
    pub fn new(framing: Framing, max_frame: usize) -> Self {
        match framing {
            Framing::Sse => FrameDecoder::Sse(sse::SseParser::new(max_frame)),
            Framing::EventStream => {
                FrameDecoder::EventStream(eventstream::EventStreamDecoder::new(max_frame))
            }
        }
    }

    /// Every frame completed by `bytes`. An error (a frame over the cap, a CRC mismatch)
    /// ends the stream: what follows cannot be trusted.
    pub fn push(&mut self, provider: &str, bytes: &[u8]) -> Result<Vec<Frame>, GatewayError> {
        match self {
            FrameDecoder::Sse(p) => match p.push(bytes) {
                Ok(frames) => Ok(frames.into_iter().map(Frame::Sse).collect()),
                Err(sse::TooLarge(cap)) => Err(frame_error(
                    provider,
                    format!("a Server-Sent Event was longer than {cap} bytes (client.max_stream_event_bytes)"),
                )),
            },
            FrameDecoder::EventStream(d) => d
                .push(bytes)
                .map(|msgs| msgs.into_iter().map(event).collect())
                .map_err(|e| frame_error(provider, e.to_string())),
        }
    }

    /// The body ended: the frame left without its terminator (SSE), or an error for a
    /// message cut short (event-stream).
    pub fn finish(&mut self, provider: &str) -> Result<Vec<Frame>, GatewayError> {
        match self {
            FrameDecoder::Sse(p) => Ok(p.finish().into_iter().map(Frame::Sse).collect()),
            FrameDecoder::EventStream(d) => d
                .finish()
                .map(|()| Vec::new())
                .map_err(|e| frame_error(provider, e.to_string())),
        }
    }
}

fn event(m: eventstream::EventMessage) -> Frame {
    Frame::Event(EventMessage {
        message_type: m.message_type,
        event_type: m.event_type,
        exception_type: m.exception_type,
        error_code: m.error_code,
        error_message: m.error_message,
        payload: m.payload,
    })
}

/// A stream whose framing broke. Not retryable once content went out; before that the
/// stream rule retries it like any failed attempt (a corrupted frame is often transient).
fn frame_error(provider: &str, what: String) -> GatewayError {
    GatewayError::upstream(
        StatusCode::BAD_GATEWAY,
        format!("provider {provider} sent a broken stream: {what}"),
    )
    .with_code("upstream_stream_error")
    .retryable(true)
}
