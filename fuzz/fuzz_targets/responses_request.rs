//! Property: the Responses request reader never panics, whatever the bytes; what it refuses is
//! a client error with a message; what it accepts is a core request that validates and that
//! every provider kind builds a request from, or refuses with a client error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate::dialect::responses::read_request;
use modelgate::provider::{Provider, ProviderKind};

fuzz_target!(|data: &[u8]| {
    match read_request(data) {
        Ok(req) => {
            req.validate()
                .expect("an accepted request is a valid core request");
            for kind in [
                ProviderKind::OpenAi,
                ProviderKind::Anthropic,
                ProviderKind::Gemini,
            ] {
                let provider = Provider::builder("p", kind, "http://127.0.0.1:9/v1")
                    .build()
                    .expect("a provider");
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
