//! Property: the request decoder (serde's derived code) never panics; it reads a request
//! exactly as `serde_json::from_str` does; what it accepts survives a round trip; and the body
//! sent to an OpenAI-compatible provider is what serde writes (byte for byte, unless the
//! request has OpenRouter's reasoning, which becomes `reasoning_effort`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate::decode::parse_chat_request;
use modelgate::facts::Target;
use modelgate::provider::{Provider, ProviderKind};
use modelgate::ChatRequest;

fuzz_target!(|data: &[u8]| {
    let serde = std::str::from_utf8(data)
        .ok()
        .and_then(|text| serde_json::from_str::<ChatRequest>(text).ok());
    match parse_chat_request(data) {
        Ok(req) => {
            assert_eq!(Some(&req), serde.as_ref(), "read as serde reads it");
            let json = serde_json::to_vec(&req).expect("an accepted request serialises");
            let again: ChatRequest = serde_json::from_slice(&json).expect("and parses again");
            assert_eq!(again.model, req.model);
            assert_eq!(again.messages.len(), req.messages.len());
            let provider = Provider::builder("p", ProviderKind::OpenAi, "http://127.0.0.1:9/v1")
                .build()
                .expect("a provider");
            let target = Target::new(std::sync::Arc::new(provider), "up", "pub");
            let mut sent = req.clone();
            sent.model = "up".into();
            let upstream = provider_body(&target, req);
            // What the OpenAI kind changes on the way: OpenRouter's reasoning becomes
            // `reasoning_effort`, and its reasoning on assistant messages is not sent.
            let comparable = |bytes: &[u8]| {
                let mut v: serde_json::Value = serde_json::from_slice(bytes).expect("JSON");
                v.as_object_mut().map(|o| o.remove("reasoning_effort"));
                for m in v["messages"].as_array_mut().into_iter().flatten() {
                    m.as_object_mut().map(|o| (o.remove("reasoning_details"), o.remove("reasoning")));
                }
                v
            };
            let expected = serde_json::to_vec(&sent).expect("serialises");
            assert_eq!(comparable(&upstream), comparable(&expected));
            if sent.reasoning.is_none() && !expected.windows(9).any(|w| w == b"reasoning") {
                assert_eq!(upstream, expected, "byte for byte");
            }
        }
        Err(e) => {
            assert!(e.status().is_client_error());
            assert!(!e.message().is_empty());
            // Refused by serde, or by the checks after it.
            if let Some(req) = serde {
                assert!(
                    req.validate().is_err(),
                    "refused what serde reads and is valid"
                );
            }
        }
    }
});

/// The body `target`'s provider is sent for `req` (a whole body, ready at once).
fn provider_body(target: &Target, req: ChatRequest) -> Vec<u8> {
    use http_body::Body;
    use std::task::{Context, Poll, Waker};
    let built = target
        .provider
        .build_request(req, &target.upstream_model, target.max_output_tokens)
        .expect("an OpenAI-compatible request builds");
    let mut body = built.into_body();
    let mut cx = Context::from_waker(Waker::noop());
    match std::pin::Pin::new(&mut body).poll_frame(&mut cx) {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().expect("data").to_vec(),
        other => panic!("the body is not ready at once: {other:?}"),
    }
}
