//! Property: whatever the core's stream holds (chunks, keep-alives, error events, garbage, a
//! cut anywhere), the Messages stream the edge writes from it is a valid Anthropic event
//! sequence: every event named, `message_start` first, blocks opened and closed in order, and
//! `message_stop` or one `error` last.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use modelgate::dialect::messages::{check_event_sequence, write_stream};

// Frames: the input split at 0xFF bytes; an empty piece is a keep-alive.
fuzz_target!(|data: &[u8]| {
    let pieces: Vec<Bytes> = data
        .split(|&b| b == 0xFF)
        .map(|p| {
            if p.is_empty() {
                Bytes::from_static(modelgate::sse::KEEPALIVE)
            } else {
                Bytes::copy_from_slice(p)
            }
        })
        .collect();
    // A stream that opens with `event:` is an `anthropic` endpoint's own, passed on as it is.
    let native = pieces
        .iter()
        .find(|p| p.as_ref() != modelgate::sse::KEEPALIVE)
        .is_some_and(|p| p.starts_with(b"event:"));
    let out = write_stream(pieces);
    if !native {
        if let Err(e) = check_event_sequence(&out) {
            panic!("{e}\n{}", String::from_utf8_lossy(&out));
        }
    }
});
