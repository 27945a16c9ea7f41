//! Property: whatever a gemini upstream sends, the client gets a well-formed OpenAI stream
//! ending in exactly one of `[DONE]` or one error event (see `stream_check.rs`).
#![no_main]

mod stream_check;

use libfuzzer_sys::fuzz_target;
use modelgate::provider::ProviderKind;

fuzz_target!(|data: &[u8]| stream_check::check(ProviderKind::Gemini, data));
