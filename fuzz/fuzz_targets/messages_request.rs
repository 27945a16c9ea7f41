//! Property: the Messages request reader never panics, whatever the bytes; what it refuses is
//! a client error with a message; what it accepts for any provider is a core request that
//! validates and that a provider's request can be built from (or is refused by it, clearly).
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate::dialect::messages::read_request;
use modelgate::provider::{Provider, ProviderKind};

fuzz_target!(|data: &[u8]| {
    match read_request(data) {
        Ok((req, translatable)) => {
            if !translatable {
                // Served only by an `anthropic` endpoint, from the client's own bytes.
                return;
            }
            req.validate()
                .expect("an accepted request is a valid core request");
            let json = serde_json::to_vec(&req).expect("it serialises");
            let _: modelgate::ChatRequest =
                serde_json::from_slice(&json).expect("and parses again");
            for kind in [ProviderKind::OpenAi, ProviderKind::Gemini] {
                let provider = Provider::builder("p", kind, "http://127.0.0.1:9/v1")
                    .build()
                    .expect("a provider");
                // Built, or refused with a client error naming why: never a panic.
                if let Err(e) = provider.build_request(req.clone(), "up", None) {
                    assert!(e.status().is_client_error(), "{e}");
                }
            }
        }
        Err(e) => {
            assert!(e.status().is_client_error());
            assert!(!e.message().is_empty());
        }
    }
});
