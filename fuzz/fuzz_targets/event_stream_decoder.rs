//! Properties: the event-stream decoder gives the same events (and the same fault) however the
//! bytes are split; a frame with one byte changed never yields an event and leaves the decoder
//! faulted by the end of the stream; nothing panics whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate::sse::event_stream::{event_frame, EventStreamDecoder};
use modelgate::sse::SseEvent;

fn decode<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> (Vec<SseEvent>, Option<String>) {
    let mut d = EventStreamDecoder::with_max_frame_bytes(4096);
    let mut events = Vec::new();
    for p in pieces {
        d.feed(p);
        events.extend(std::iter::from_fn(|| d.next_event()));
    }
    d.finish();
    events.extend(std::iter::from_fn(|| d.next_event()));
    (events, d.fault().map(str::to_owned))
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, rest)) = data.split_first() else {
        return;
    };
    // Raw bytes: no panic, and the same result however split.
    let whole = decode([rest]);
    let n = usize::from(seed % 13) + 1;
    assert_eq!(decode(rest.chunks(n)), whole);

    // Well-formed frames of the input's pieces: each comes out as sent.
    let payloads: Vec<&[u8]> = rest.split(|b| *b == 0xFF).take(8).collect();
    let mut stream = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        stream.extend(event_frame(&format!("e{i}"), p));
    }
    let (events, fault) = decode([&stream[..]]);
    assert_eq!(fault, None);
    assert_eq!(events.len(), payloads.len());
    for (ev, p) in events.iter().zip(&payloads) {
        assert_eq!(ev.data.as_bytes(), String::from_utf8_lossy(p).as_bytes());
    }
    assert_eq!(decode(stream.chunks(n)), (events.clone(), None));

    // One byte changed in the last frame: the frames before it come out, it never does.
    if let Some(last) = payloads.last() {
        let last_len = event_frame(&format!("e{}", payloads.len() - 1), last).len();
        let start = stream.len() - last_len;
        let at = start + usize::from(seed) % last_len;
        stream[at] ^= 0x5A;
        let (got, fault) = decode([&stream[..]]);
        assert!(fault.is_some(), "a changed byte at {at} went unnoticed");
        assert_eq!(&got[..], &events[..payloads.len() - 1]);
    }
});
