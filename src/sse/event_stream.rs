//! AWS event-stream framing (`application/vnd.amazon.eventstream`, Bedrock's streams), decoded
//! into the same [`SseEvent`]s the SSE decoder gives, so one stream reader serves both.
//!
//! Frames are decoded by `aws-smithy-eventstream`, which checks both CRCs of every frame. Each
//! frame becomes one event:
//!
//! - an `event` frame: `event` is its `:event-type` (`messageStart`, `contentBlockDelta`, …),
//!   `data` its payload;
//! - an `exception` frame: `event` is its `:exception-type` (`throttlingException`,
//!   `modelStreamErrorException`, …: every name ends in `Exception`), `data` its payload
//!   (`{"message": …}`);
//! - an `error` frame: `event` is its `:error-code`, `data` `{"message": <:error-message>}`.
//!
//! A corrupt frame (a CRC that does not match, a length out of bounds), one larger than the
//! limit, or a stream that ends inside a frame stops the decoder: [`fault`](EventStreamDecoder::fault) says why, and the reader ends
//! the stream with an error. The same events come out however the bytes are split.
//!
//! ```
//! use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
//! use modelgate::sse::event_stream::EventStreamDecoder;
//!
//! let frame = Message::new(&b"{\"role\":\"assistant\"}"[..])
//!     .add_header(Header::new(":message-type", HeaderValue::String("event".into())))
//!     .add_header(Header::new(":event-type", HeaderValue::String("messageStart".into())));
//! let mut bytes = Vec::new();
//! aws_smithy_eventstream::frame::write_message_to(&frame, &mut bytes).unwrap();
//!
//! let mut d = EventStreamDecoder::new();
//! for byte in &bytes {
//!     d.feed(std::slice::from_ref(byte));
//! }
//! let ev = d.next_event().unwrap();
//! assert_eq!(ev.event.as_deref(), Some("messageStart"));
//! assert_eq!(ev.data, "{\"role\":\"assistant\"}");
//! ```

use std::collections::VecDeque;

use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::Message;
use bytes::{Buf, BytesMut};

use super::{SseEvent, DEFAULT_MAX_EVENT_BYTES};

/// Incremental event-stream decoder; see the [module docs](self).
#[derive(Debug, Default)]
pub struct EventStreamDecoder {
    buf: BytesMut,
    frames: MessageFrameDecoder,
    /// Bytes of the frame being read that the frame decoder has taken already (its prelude).
    taken: usize,
    ready: VecDeque<SseEvent>,
    max_frame: usize,
    fault: Option<String>,
}

impl EventStreamDecoder {
    /// A decoder that stops at a frame larger than [`DEFAULT_MAX_EVENT_BYTES`].
    pub fn new() -> Self {
        Self::with_max_frame_bytes(DEFAULT_MAX_EVENT_BYTES)
    }

    /// A decoder that stops at a frame larger than `max_frame_bytes`.
    pub fn with_max_frame_bytes(max_frame_bytes: usize) -> Self {
        EventStreamDecoder {
            max_frame: max_frame_bytes.max(16),
            ..Default::default()
        }
    }

    /// Feeds the next bytes of the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.fault.is_some() {
            return;
        }
        self.buf.extend_from_slice(bytes);
        loop {
            // A frame announcing more than the limit is refused before its bytes come.
            if self.taken == 0 && self.buf.len() >= 4 {
                let announced = (&self.buf[..4]).get_u32() as usize;
                if announced > self.max_frame {
                    return self.too_large();
                }
            }
            let before = self.buf.len();
            match self.frames.decode_frame(&mut self.buf) {
                Ok(DecodedFrame::Complete(message)) => {
                    self.taken = 0;
                    self.ready.push_back(event_of(&message));
                }
                Ok(DecodedFrame::Incomplete) => {
                    self.taken += before - self.buf.len();
                    if self.taken + self.buf.len() > self.max_frame {
                        self.too_large();
                    }
                    return;
                }
                Err(e) => {
                    self.stop(format!("the provider sent a corrupt stream frame ({e})"));
                    return;
                }
            }
        }
    }

    fn too_large(&mut self) {
        self.stop(format!(
            "the provider sent a stream frame larger than the limit of {} bytes",
            self.max_frame
        ));
    }

    fn stop(&mut self, why: String) {
        self.fault = Some(why);
        self.buf = BytesMut::new();
    }

    /// The next complete event, if any.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        self.ready.pop_front()
    }

    /// Ends the stream: part of a frame left over means it was cut inside that frame, a
    /// [`fault`](Self::fault).
    pub fn finish(&mut self) {
        if self.fault.is_none() && self.has_partial() {
            self.stop("the provider's stream ended inside a frame".into());
        }
    }

    /// True when part of a frame is buffered.
    pub fn has_partial(&self) -> bool {
        self.taken > 0 || !self.buf.is_empty()
    }

    /// Why the decoder stopped (a corrupt or oversized frame): nothing more is decoded, and
    /// the stream should end as an error. Events complete before it are still given.
    pub fn fault(&self) -> Option<&str> {
        self.fault.as_deref()
    }
}

/// The event a frame carries; see the [module docs](self).
fn event_of(message: &Message) -> SseEvent {
    let header = |name: &str| {
        message
            .headers()
            .iter()
            .find(|h| h.name().as_str() == name)
            .and_then(|h| h.value().as_string().ok())
            .map(|s| s.as_str().to_owned())
    };
    let payload = String::from_utf8_lossy(message.payload()).into_owned();
    let (event, data) = match header(":message-type").as_deref() {
        Some("exception") => (header(":exception-type"), payload),
        Some("error") => (
            header(":error-code"),
            serde_json::json!({ "message": header(":error-message").unwrap_or_default() })
                .to_string(),
        ),
        _ => (header(":event-type"), payload),
    };
    SseEvent {
        event,
        data,
        ..Default::default()
    }
}

/// One event frame (`:message-type` `event`) of `event_type` with a JSON `payload`: what a
/// Bedrock stream is made of. For tests, fakes and the bench's mock.
pub fn event_frame(event_type: &str, payload: &[u8]) -> Vec<u8> {
    frame(
        &[
            (":message-type", "event"),
            (":event-type", event_type),
            (":content-type", "application/json"),
        ],
        payload,
    )
}

/// One exception frame of `exception_type` (`throttlingException`, …) saying `message`.
pub fn exception_frame(exception_type: &str, message: &str) -> Vec<u8> {
    let payload = serde_json::json!({ "message": message }).to_string();
    frame(
        &[
            (":message-type", "exception"),
            (":exception-type", exception_type),
            (":content-type", "application/json"),
        ],
        payload.as_bytes(),
    )
}

fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    use aws_smithy_types::event_stream::{Header, HeaderValue};
    let mut message = Message::new(bytes::Bytes::copy_from_slice(payload));
    for (name, value) in headers {
        message = message.add_header(Header::new(
            (*name).to_owned(),
            HeaderValue::String((*value).to_owned().into()),
        ));
    }
    let mut out = Vec::new();
    // Writing to a Vec fails only for headers past the format's bounds, which these are not.
    let _ = aws_smithy_eventstream::frame::write_message_to(&message, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> Vec<u8> {
        let mut s = event_frame("messageStart", br#"{"role":"assistant"}"#);
        s.extend(event_frame(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"héllo"}}"#.as_bytes(),
        ));
        s.extend(exception_frame("throttlingException", "slow down"));
        s
    }

    fn decode(chunks: &[&[u8]]) -> (Vec<SseEvent>, Option<String>) {
        let mut d = EventStreamDecoder::new();
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c);
            out.extend(std::iter::from_fn(|| d.next_event()));
        }
        (out, d.fault().map(str::to_owned))
    }

    #[test]
    fn any_split_gives_the_same_events() {
        let s = stream();
        let (whole, fault) = decode(&[&s]);
        assert_eq!(fault, None);
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[1].event.as_deref(), Some("contentBlockDelta"));
        assert!(whole[1].data.contains("héllo"));
        assert_eq!(whole[2].event.as_deref(), Some("throttlingException"));
        assert_eq!(whole[2].data, r#"{"message":"slow down"}"#);
        for at in 1..s.len() {
            let (a, b) = s.split_at(at);
            assert_eq!(decode(&[a, b]).0, whole, "split at {at}");
        }
        let bytes: Vec<&[u8]> = s.chunks(1).collect();
        assert_eq!(decode(&bytes).0, whole);
    }

    #[test]
    fn a_bad_crc_or_an_oversized_frame_stops_the_decoder() {
        let mut s = stream();
        let last = s.len() - 1;
        s[last] ^= 1;
        let (events, fault) = decode(&[&s]);
        assert_eq!(events.len(), 2, "the frames before it are given");
        assert!(fault.unwrap().contains("corrupt"));

        let mut d = EventStreamDecoder::with_max_frame_bytes(64);
        d.feed(&event_frame("x", &[b' '; 100]));
        assert!(d.fault().unwrap().contains("larger than the limit"));
        assert!(d.next_event().is_none());

        // A prelude announcing a huge frame is refused before its bytes come.
        let mut d = EventStreamDecoder::with_max_frame_bytes(1 << 10);
        d.feed(&[0xFF, 0xFF, 0xFF, 0xF0, 0, 0, 0, 0]);
        assert!(d.fault().is_some());
    }
}
