//! Property: reading an embeddings request never panics; an accepted one has input, builds
//! for every kind or is refused with a 400 (a kind without embeddings, token ids for Gemini),
//! and what goes to an OpenAI-kind provider is JSON with the upstream model and none of the
//! gateway's own fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate::dialect::embeddings::read_request;
use modelgate::provider::{Provider, ProviderKind};

fuzz_target!(|data: &[u8]| {
    let Ok((chat, e)) = read_request(data) else {
        return;
    };
    assert!(!e.input().is_empty());
    assert_eq!(chat.model, e.request.model);
    let body: serde_json::Value =
        serde_json::from_slice(&e.openai_body("up-model", None).expect("a body"))
            .expect("JSON upstream");
    assert_eq!(body["model"], "up-model");
    for field in ["models", "provider", "session_id"] {
        assert!(body.get(field).is_none(), "{field} went upstream");
    }
    for kind in [
        ProviderKind::OpenAi,
        ProviderKind::Azure,
        ProviderKind::Anthropic,
        ProviderKind::Gemini,
    ] {
        let provider = Provider::builder("p", kind, "http://127.0.0.1:9/v1")
            .build()
            .expect("a provider");
        if let Err(err) = provider.build_embeddings_request(&e, "up-model", None) {
            assert_eq!(err.status(), 400, "{err}");
        }
    }
});
