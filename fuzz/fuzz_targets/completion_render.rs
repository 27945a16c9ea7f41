//! Property: splicing a non-streamed upstream answer (`render_completion`) never panics; what
//! it accepts is JSON (serde_json agrees), and its answer is JSON too, stamped with the
//! gateway's id, the public model and the provider, with a priced usage when prices are set.
//! The first input byte chooses whether the answer is priced (bit 0) and whether the prices
//! include the prompt cache's (bit 1); the rest is the answer.
//!
//! JSON allows numbers past f64's range (`1e999`): they are copied as the provider wrote them,
//! and serde_json's `Value` refuses them, so the structural checks run when it reads both.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate::facts::Pricing;
use modelgate::stream_normalize::{render_completion, StreamContext};
use modelgate::GenerationId;
use serde_json::value::RawValue;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, answer)) = data.split_first() else {
        return;
    };
    let priced = flags & 1 == 1;
    let mut ctx = StreamContext::new(GenerationId::new(), "public/model", "prov");
    // Cache prices too (the second flag bit), so fuzzed cache counts reach the arithmetic.
    ctx.pricing = priced.then_some(Pricing::new(1.0, 2.0).with_cache(
        (flags & 2 == 2).then_some(0.1),
        (flags & 2 == 2).then_some(1.25),
    ));
    let is_json = |b: &[u8]| serde_json::from_slice::<Box<RawValue>>(b).is_ok();
    match render_completion(answer, &ctx) {
        Ok(rendered) => {
            assert!(
                is_json(answer),
                "an accepted answer is JSON serde_json reads too"
            );
            assert!(is_json(&rendered.json), "the answer is JSON");
            let (Ok(input), Ok(out)) = (
                serde_json::from_slice::<Value>(answer),
                serde_json::from_slice::<Value>(&rendered.json),
            ) else {
                return;
            };
            let choices = input.get("choices").and_then(Value::as_array);
            assert!(
                choices.is_some(),
                "an accepted answer has a `choices` array"
            );
            let out = out.as_object().expect("the answer is an object");
            assert_eq!(out["id"], ctx.id.as_str());
            assert_eq!(out["model"], "public/model");
            assert_eq!(out["provider"], "prov");
            // Read from the first choice's own members (a nested key of that name is not it),
            // the last one when it repeats, as serde_json's `Value` keeps it.
            let first = choices.and_then(|c| c.first()).and_then(Value::as_object);
            assert_eq!(
                rendered.finish_reason.as_deref(),
                first
                    .and_then(|c| c.get("finish_reason"))
                    .and_then(Value::as_str),
                "the recorded finish reason is the first choice's"
            );
            if priced && rendered.usage.is_some() {
                assert!(
                    out["usage"]["cost"].is_number(),
                    "a priced usage has its cost"
                );
            }
        }
        Err(e) => {
            assert!(
                e.status().is_client_error() || e.status().is_server_error(),
                "an error status"
            );
            assert!(!e.message().is_empty());
        }
    }
});
