//! Property: whatever the core's stream holds (chunks, keep-alives, error events, garbage, a
//! cut anywhere), the Responses stream the edge writes from it has increasing sequence numbers
//! from 0, every item added is done before the next, and exactly one terminal event, last.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use modelgate::dialect::responses::{check_event_sequence, write_stream, Shape};

// Frames: the input after its first byte split at 0xFF bytes; an empty piece is a keep-alive.
// The first byte's bits: encrypted reasoning asked, `f` a custom tool.
fuzz_target!(|data: &[u8]| {
    let (flags, rest) = data.split_first().map_or((0, data), |(f, r)| (*f, r));
    let pieces: Vec<Bytes> = rest
        .split(|&b| b == 0xFF)
        .map(|p| {
            if p.is_empty() {
                Bytes::from_static(modelgate::sse::KEEPALIVE)
            } else {
                Bytes::copy_from_slice(p)
            }
        })
        .collect();
    // A stream that opens with `event:` is a provider's own, passed on as it is.
    let native = pieces
        .iter()
        .find(|p| p.as_ref() != modelgate::sse::KEEPALIVE)
        .is_some_and(|p| p.starts_with(b"event:"));
    let custom: &[&str] = if flags & 2 == 2 { &["f"] } else { &[] };
    let out = write_stream(pieces, Shape::new(flags & 1 == 1, custom));
    if !native {
        if let Err(e) = check_event_sequence(&out) {
            panic!("{e}\n{}", String::from_utf8_lossy(&out));
        }
    }
});
