//! The property every stream translator keeps, whatever the upstream sends: the client gets a
//! well-formed OpenAI stream: compact JSON `data:` events, ending in exactly one of `[DONE]` or
//! one error event.

use bytes::BytesMut;
use modelgate::provider::ProviderKind;
use modelgate::sse::SseDecoder;
use modelgate::stream_normalize::{StreamContext, Translator};
use modelgate::GenerationId;

pub fn check(kind: ProviderKind, data: &[u8]) {
    let flags = data.first().copied().unwrap_or_default();
    let ctx = context(flags);
    let out = translate(kind, &ctx, data, true);
    // Chunks translated like an earlier one of the same shape (and event buffers reused) read
    // as if each was read in full. (With the clock in play two runs could straddle a second.)
    if ctx.created != 0 {
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&translate(kind, &ctx, data, false)),
            "the short way and the full reading disagree"
        );
    }
    well_formed(&out);
}

/// [`check`] for a Bedrock upstream: `stream` in event-stream frames, read as the proxy
/// reads it (a frame left unfinished, or a corrupt one, ends the stream as an error).
#[allow(dead_code)] // one fuzz target uses it
pub fn check_framed(flags: u8, stream: &[u8]) {
    let ctx = context(flags);
    let mut state = Translator::new(ProviderKind::Bedrock, ctx);
    let mut decoder = modelgate::sse::event_stream::EventStreamDecoder::new();
    let mut out = BytesMut::new();
    for piece in stream.chunks(usize::from(flags >> 3) + 1) {
        decoder.feed(piece);
        while let Some(ev) = decoder.next_event() {
            state.on_event(&ev, &mut out);
        }
    }
    decoder.finish();
    match decoder.fault() {
        Some(why) if !state.is_finished() => state.on_error(
            modelgate::Error::bad_gateway(
                why,
                modelgate::error::ErrorSource::Transport,
                modelgate::error::Retry::Retryable,
            ),
            &mut out,
        ),
        _ => state.on_end(&mut out),
    }
    well_formed(&out);
}

fn context(flags: u8) -> StreamContext {
    let mut ctx = StreamContext::new(GenerationId::new(), "m", "p");
    ctx.include_usage = flags & 1 == 1;
    // Taken from the upstream (or the clock) when 0.
    ctx.created = if flags & 2 == 2 { 0 } else { 1_767_225_600 };
    ctx
}

/// Compact JSON `data:` events, ending in exactly one of `[DONE]` or one error event.
fn well_formed(out: &[u8]) {
    let text = std::str::from_utf8(out).expect("UTF-8 out");
    assert!(text.ends_with("\n\n"));
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    let mut terminal = 0;
    for (i, e) in events.iter().enumerate() {
        let d = e.strip_prefix("data: ").expect("only data lines");
        assert!(!d.contains('\n') && !d.contains('\r'));
        if d == "[DONE]" {
            terminal += 1;
            assert_eq!(i, events.len() - 1, "[DONE] is last");
            continue;
        }
        // Grammar, not range: RFC 8259 allows numbers beyond f64 (`1E600`), which a provider's
        // unknown fields may carry and the gateway forwards untouched.
        let v: std::collections::BTreeMap<String, &serde_json::value::RawValue> =
            serde_json::from_str(d).expect("every event is a JSON object");
        if v.contains_key("error") {
            terminal += 1;
            assert_eq!(i, events.len() - 1, "the error event is last");
        }
    }
    assert_eq!(terminal, 1);
}

fn translate(kind: ProviderKind, ctx: &StreamContext, data: &[u8], shapes: bool) -> BytesMut {
    // The same generated ids (Gemini's tool calls) in both runs.
    fastrand::seed(7);
    let mut state = Translator::new(kind, ctx.clone());
    if !shapes {
        state.read_every_chunk_in_full();
    }
    let mut decoder = SseDecoder::new();
    let mut out = BytesMut::new();
    for piece in data.chunks(7) {
        decoder.feed(piece);
        while let Some(ev) = decoder.next_event() {
            state.on_event(&ev, &mut out);
            // As the proxy does: the fast run reuses event buffers, the other does not.
            if shapes {
                decoder.recycle(ev);
            }
        }
    }
    decoder.finish();
    while let Some(ev) = decoder.next_event() {
        state.on_event(&ev, &mut out);
    }
    state.on_end(&mut out);
    out
}
