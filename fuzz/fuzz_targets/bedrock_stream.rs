//! Property: whatever a Bedrock upstream streams (any sequence of ConverseStream events and
//! exceptions with any payloads, framed as event-stream frames, cut anywhere), the client gets
//! a well-formed OpenAI stream ending in exactly one of `[DONE]` or one error event (see
//! `stream_check.rs`).
#![no_main]

mod stream_check;

use libfuzzer_sys::fuzz_target;
use modelgate::sse::event_stream::{event_frame, exception_frame};

const EVENTS: &[&str] = &[
    "messageStart",
    "contentBlockStart",
    "contentBlockDelta",
    "contentBlockStop",
    "messageStop",
    "metadata",
];

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    // Each piece: its first byte chooses the event, the rest is its payload.
    let mut stream = Vec::new();
    for piece in rest.split(|b| *b == b'\n') {
        let Some((&which, payload)) = piece.split_first() else {
            continue;
        };
        let which = usize::from(which);
        if which < EVENTS.len() {
            stream.extend(event_frame(EVENTS[which], payload));
        } else if which == 0xEE {
            stream.extend(exception_frame(
                "throttlingException",
                &String::from_utf8_lossy(payload),
            ));
        } else {
            stream.extend(event_frame("someLaterEvent", payload));
        }
    }
    // Cut anywhere.
    if flags & 4 == 4 && !stream.is_empty() {
        let keep = usize::from(flags) * 7 % stream.len();
        stream.truncate(keep);
    }
    stream_check::check_framed(flags, &stream);
});
