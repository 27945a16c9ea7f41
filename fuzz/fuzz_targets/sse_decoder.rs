//! Property: the SSE decoder yields the same events however the input is chunked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate::sse::decode_chunks;

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
    assert_eq!(decode_chunks(bytewise), whole);
});
