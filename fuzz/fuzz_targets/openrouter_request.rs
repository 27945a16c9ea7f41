//! Property: OpenRouter's request rules never panic on any request: the parameter rule for
//! every provider kind, `middle-out` at any context length (it keeps the first and last
//! messages, only drops, and fits when it drops), and the translation for every kind
//! (reasoning settings, `reasoning_details` sent back) either builds or is a 400 naming a field.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate::dispatch::middle_out;
use modelgate::provider::{keep_supported, Provider, ProviderKind};
use modelgate::ChatRequest;

fuzz_target!(|data: &[u8]| {
    let Some((&context, data)) = data.split_first() else {
        return;
    };
    let Ok(req) = serde_json::from_slice::<ChatRequest>(data) else {
        return;
    };
    let _ = middle_out::asked(&req);
    let mut fitted = req.clone();
    let dropped = middle_out::fit(&mut fitted, u64::from(context) * 16);
    assert_eq!(fitted.messages.len() + dropped, req.messages.len());
    if dropped > 0 {
        assert_eq!(fitted.messages.first(), req.messages.first());
        assert_eq!(fitted.messages.last(), req.messages.last());
    }
    for kind in [ProviderKind::OpenAi, ProviderKind::Anthropic, ProviderKind::Gemini] {
        let mut r = req.clone();
        let dropped = keep_supported(&mut r, kind.parameters());
        assert!(dropped.iter().all(|d| !kind.parameters().contains(d)));
        let provider = Provider::builder("p", kind, "http://127.0.0.1:9/v1")
            .build()
            .expect("a provider");
        if let Err(e) = provider.build_request(r, "up-model", Some(1024)) {
            assert!(e.status().is_client_error(), "{e}");
        }
    }
});
