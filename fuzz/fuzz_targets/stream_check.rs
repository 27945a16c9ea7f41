//! The property every stream translator keeps, whatever the upstream sends: the client gets a
//! well-formed OpenAI stream: compact JSON `data:` events, ending in exactly one of `[DONE]` or
//! one error event.

use std::sync::Arc;

use bytes::BytesMut;
use modelgate::provider::ProviderKind;
use modelgate::sse::SseDecoder;
use modelgate::stream_normalize::{StreamContext, Translator};
use modelgate::GenerationId;

pub fn check(kind: ProviderKind, data: &[u8]) {
    let mut state = Translator::new(
        kind,
        StreamContext {
            id: GenerationId::new(),
            model: Arc::from("m"),
            provider: Arc::from("p"),
            include_usage: data.first().is_some_and(|b| b & 1 == 1),
            created: 0,
            pricing: None,
        },
    );
    let mut decoder = SseDecoder::new();
    let mut out = BytesMut::new();
    for piece in data.chunks(7) {
        decoder.feed(piece);
        while let Some(ev) = decoder.next_event() {
            state.on_event(&ev, &mut out);
        }
    }
    decoder.finish();
    while let Some(ev) = decoder.next_event() {
        state.on_event(&ev, &mut out);
    }
    state.on_end(&mut out);
    let text = std::str::from_utf8(&out).expect("UTF-8 out");
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
