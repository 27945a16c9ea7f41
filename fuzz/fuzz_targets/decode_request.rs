//! Property: the request decoder never panics, and what it accepts survives a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate::decode::parse_chat_request;

fuzz_target!(|data: &[u8]| {
    match parse_chat_request(data) {
        Ok(req) => {
            let json = serde_json::to_vec(&req).expect("an accepted request serialises");
            let again: modelgate::ChatRequest =
                serde_json::from_slice(&json).expect("and parses again");
            assert_eq!(again.model, req.model);
            assert_eq!(again.messages.len(), req.messages.len());
        }
        Err(e) => {
            assert!(e.status().is_client_error());
            assert!(!e.message().is_empty());
        }
    }
});
