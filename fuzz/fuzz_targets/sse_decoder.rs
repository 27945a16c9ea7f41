//! Properties: the SSE decoder yields the same events however the input is chunked; with small
//! limits it also stops at the same place however chunked, and never holds an event larger
//! than its limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate::sse::{decode_chunks, decode_chunks_with, SseDecoder, SseEvent};

/// Decodes `pieces` with a 32-byte line and a 64-byte event limit: the events, and whether
/// the decoder stopped at an event over its limit.
fn decode_small(pieces: &[&[u8]]) -> (Vec<SseEvent>, Option<usize>) {
    let (events, stopped) =
        decode_chunks_with(SseDecoder::with_limits(32, 64), pieces.iter().copied());
    for ev in &events {
        assert!(ev.data.len() <= 64, "an event over its limit was kept");
    }
    (events, stopped)
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    // The first byte seeds the chunk sizes (1..=16); the rest is the stream.
    let seed = data[0];
    let input = &data[1..];
    let whole = decode_chunks([input]);
    let mut pieces = Vec::new();
    let mut rest = input;
    let mut i = 0usize;
    while !rest.is_empty() {
        let n = (usize::from(seed.rotate_left(i as u32 % 8)) % 16 + 1).min(rest.len());
        pieces.push(&rest[..n]);
        rest = &rest[n..];
        i += 1;
    }
    assert_eq!(decode_chunks(pieces.iter().copied()), whole);
    let bytewise: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(decode_chunks(bytewise.iter().copied()), whole);

    let small = decode_small(&[input]);
    assert_eq!(decode_small(&pieces), small);
    assert_eq!(decode_small(&bytewise), small);
});
