//! Golden tests of the Anthropic and Gemini stream translators against the wire fixtures: the
//! upstream stream, fed whole and split at every byte boundary, must give the expected OpenAI
//! stream event by event. Bedrock's ConverseStream fixtures, framed as event-stream frames,
//! must give what the Anthropic fixtures they word give.
//!
//! The expected files use the upstream id and model, a fixed `created` and no
//! `native_finish_reason`; the gateway writes its own `gen-…` id, the public model, the
//! `provider` and the provider's own finish reason as `native_finish_reason`. Those fields are
//! checked separately and removed before the comparison; generated Gemini call ids are checked
//! for their shape (`call_` + 24 hex digits).

use bytes::BytesMut;
use modelgate::facts::GenerationId;
use modelgate::provider::ProviderKind;
use modelgate::sse::event_stream::{event_frame, exception_frame, EventStreamDecoder};
use modelgate::sse::SseDecoder;
use modelgate::stream_normalize::{StreamContext, Translator};
use serde_json::Value;

fn fixture(path: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn ctx() -> StreamContext {
    let mut ctx = StreamContext::new(GenerationId::new(), "public/model", "up");
    ctx.include_usage = true;
    ctx
}

/// Feeds `pieces` through a fresh translator; returns the raw output.
fn run<'a>(kind: ProviderKind, pieces: impl IntoIterator<Item = &'a [u8]>) -> (String, String) {
    let ctx = ctx();
    let id = ctx.id.as_str().to_owned();
    let mut t = Translator::new(kind, ctx);
    let mut dec = SseDecoder::new();
    let mut out = BytesMut::new();
    for p in pieces {
        dec.feed(p);
        while let Some(ev) = dec.next_event() {
            t.on_event(&ev, &mut out);
        }
    }
    dec.finish();
    while let Some(ev) = dec.next_event() {
        t.on_event(&ev, &mut out);
    }
    t.on_end(&mut out);
    (String::from_utf8(out.to_vec()).unwrap(), id)
}

/// The data of each event; the framing is checked on the way.
fn events(text: &str) -> Vec<String> {
    assert!(!text.contains('\r'), "LF only");
    assert!(text.ends_with("\n\n"), "ends with a blank line: {text:?}");
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            assert!(!e.contains('\n'), "one line per event: {e:?}");
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("only data lines: {e:?}"))
                .to_owned()
        })
        .collect()
}

fn normalise(data: &str, gen_id: Option<&str>) -> Value {
    if data == "[DONE]" {
        return Value::String(data.into());
    }
    let mut v: Value = serde_json::from_str(data).unwrap();
    let Some(obj) = v.as_object_mut() else {
        return v;
    };
    if obj.contains_key("error") {
        if let Some(id) = gen_id {
            // OpenRouter's error chunk: the chunk's head and one choice ending in `error`.
            assert_eq!(obj["id"], id, "the error chunk has the generation id");
            assert_eq!(obj["model"], "public/model");
            assert_eq!(obj["provider"], "up");
            assert_eq!(obj["object"], "chat.completion.chunk");
            assert_eq!(obj["choices"][0]["finish_reason"], "error");
            assert!(obj["error"]["code"].is_u64(), "code is the status");
            obj.retain(|k, _| k == "error");
        }
        if let Some(e) = obj.get_mut("error").and_then(Value::as_object_mut) {
            // The gateway's envelope adds `code` and `metadata`; compare the client-visible core.
            e.retain(|k, _| k == "message" || k == "type");
            if let Some(Value::String(m)) = e.get_mut("message") {
                if let Some((_, rest)) = m.split_once(": ") {
                    *m = rest.to_owned();
                }
            }
        }
        return v;
    }
    if let Some(id) = gen_id {
        assert_eq!(obj["id"], id, "every chunk has the generation id");
        assert_eq!(obj["model"], "public/model");
        assert_eq!(obj["provider"], "up");
        assert_eq!(obj["object"], "chat.completion.chunk");
        assert!(obj["created"].as_u64().unwrap() > 1_700_000_000);
    }
    for k in ["id", "model", "provider", "created"] {
        obj.remove(k);
    }
    // OpenAI writes `usage: null` on every chunk of a stream with usage; the gateway, as
    // OpenRouter, leaves it out of all but the last.
    if obj.get("usage").is_some_and(Value::is_null) {
        obj.remove("usage");
    }
    for c in obj["choices"].as_array_mut().unwrap() {
        if c["finish_reason"].is_string() && gen_id.is_some() {
            assert!(c["native_finish_reason"].is_string(), "native reason kept");
        }
        c.as_object_mut().unwrap().remove("native_finish_reason");
        if let Some(calls) = c["delta"]["tool_calls"].as_array_mut() {
            for call in calls {
                if let Some(Value::String(id)) = call.get_mut("id") {
                    let hex = id
                        .strip_prefix("call_")
                        .map(|h| h.len() == 24 && h.bytes().all(|b| b.is_ascii_hexdigit()));
                    if hex == Some(true) {
                        *id = "call_<generated>".into();
                    }
                }
            }
        }
    }
    v
}

fn golden(kind: ProviderKind, stem: &str) {
    let dir = match kind {
        ProviderKind::Anthropic => "anthropic",
        _ => "gemini",
    };
    let input = fixture(&format!("{dir}/{stem}.sse"));
    let expected: Vec<Value> = events(&fixture(&format!("{dir}/{stem}.expected_openai.sse")))
        .iter()
        .map(|e| normalise(e, None))
        .collect();
    let (whole, id) = run(kind, [input.as_bytes()]);
    let got: Vec<Value> = openai_shape(
        events(&whole)
            .iter()
            .map(|e| normalise(e, Some(&id)))
            .collect(),
    );
    assert_eq!(got.len(), expected.len(), "{stem}: event count\n{whole}");
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g, e, "{stem}: event {i}");
    }
    // Split at every byte boundary, and byte by byte: the same events.
    let bytes = input.as_bytes();
    for cut in 1..bytes.len() {
        let (out, id) = run(kind, [&bytes[..cut], &bytes[cut..]]);
        let again: Vec<Value> = openai_shape(
            events(&out)
                .iter()
                .map(|e| normalise(e, Some(&id)))
                .collect(),
        );
        assert_eq!(again, got, "{stem}: split at byte {cut}");
    }
    let (out, id) = run(kind, bytes.chunks(1));
    let again: Vec<Value> = openai_shape(
        events(&out)
            .iter()
            .map(|e| normalise(e, Some(&id)))
            .collect(),
    );
    assert_eq!(again, got, "{stem}: byte by byte");
}

/// A Bedrock fixture (`{"event": …, "payload": …}` lines) as the event-stream bytes Bedrock
/// sends.
fn converse_stream(stem: &str) -> Vec<u8> {
    fixture(&format!("bedrock/{stem}.jsonl"))
        .lines()
        .flat_map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            event_frame(
                v["event"].as_str().unwrap(),
                v["payload"].to_string().as_bytes(),
            )
        })
        .collect()
}

/// Feeds event-stream `pieces` through a fresh Bedrock translator; returns the raw output.
fn run_bedrock<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> (String, String) {
    let ctx = ctx();
    let id = ctx.id.as_str().to_owned();
    let mut t = Translator::new(ProviderKind::Bedrock, ctx);
    let mut dec = EventStreamDecoder::new();
    let mut out = BytesMut::new();
    for p in pieces {
        dec.feed(p);
        while let Some(ev) = dec.next_event() {
            t.on_event(&ev, &mut out);
        }
    }
    dec.finish();
    assert_eq!(dec.fault(), None);
    t.on_end(&mut out);
    (String::from_utf8(out.to_vec()).unwrap(), id)
}

/// A Converse stream gives the client what the Anthropic stream it words gives, whole and split
/// at every byte.
fn bedrock_golden(stem: &str, anthropic_stem: &str) {
    let shape = |(out, id): (String, String)| -> Vec<Value> {
        events(&out)
            .iter()
            .map(|e| normalise(e, Some(&id)))
            .collect()
    };
    let anthropic = fixture(&format!("anthropic/{anthropic_stem}.sse"));
    let expected = shape(run(ProviderKind::Anthropic, [anthropic.as_bytes()]));
    let bytes = converse_stream(stem);
    let got = shape(run_bedrock([&bytes[..]]));
    assert_eq!(got, expected, "{stem}");
    for cut in 1..bytes.len() {
        let again = shape(run_bedrock([&bytes[..cut], &bytes[cut..]]));
        assert_eq!(again, got, "{stem}: split at byte {cut}");
    }
    assert_eq!(
        shape(run_bedrock(bytes.chunks(1))),
        got,
        "{stem}: byte by byte"
    );
}

#[test]
fn bedrock_tool_calls_as_the_anthropic_stream_they_word() {
    bedrock_golden("converse_tool", "anthropic_tool");
}

#[test]
fn bedrock_reasoning_and_its_signature_as_the_anthropic_stream_they_word() {
    bedrock_golden("converse_thinking", "anthropic_thinking");
}

#[test]
fn bedrock_exception_frames_and_cuts_are_the_one_error_event() {
    let mut bytes = converse_stream("converse_text");
    // An exception in the middle: what came before, then the error.
    let mut with_exception = bytes[..0].to_vec();
    for line in fixture("bedrock/converse_text.jsonl").lines().take(2) {
        let v: Value = serde_json::from_str(line).unwrap();
        with_exception.extend(event_frame(
            v["event"].as_str().unwrap(),
            v["payload"].to_string().as_bytes(),
        ));
    }
    with_exception.extend(exception_frame(
        "modelStreamErrorException",
        "The model stopped",
    ));
    let (out, _) = run_bedrock([&with_exception[..]]);
    let evs = events(&out);
    let last: Value = serde_json::from_str(evs.last().unwrap()).unwrap();
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("The model stopped"),
        "{out}"
    );
    assert!(out.contains("Tides come mostly"));
    assert!(!out.contains("[DONE]"));
    // Cut inside the last frame (after `messageStop`): the stream ends in an error, not a
    // clean end.
    bytes.truncate(bytes.len() - 10);
    let (out, _) = run_bedrock_unchecked(&bytes);
    assert!(out.contains("\"error\""), "{out}");
    assert!(!out.contains("[DONE]"));
}

/// As [`run_bedrock`], whatever state the decoder ends in.
fn run_bedrock_unchecked(bytes: &[u8]) -> (String, String) {
    let ctx = ctx();
    let id = ctx.id.as_str().to_owned();
    let mut t = Translator::new(ProviderKind::Bedrock, ctx);
    let mut dec = EventStreamDecoder::new();
    let mut out = BytesMut::new();
    dec.feed(bytes);
    dec.finish();
    while let Some(ev) = dec.next_event() {
        t.on_event(&ev, &mut out);
    }
    match dec.fault() {
        Some(why) => t.on_error(
            modelgate::Error::bad_gateway(
                why,
                modelgate::error::ErrorSource::Transport,
                modelgate::error::Retry::Retryable,
            ),
            &mut out,
        ),
        None => t.on_end(&mut out),
    }
    (String::from_utf8(out.to_vec()).unwrap(), id)
}

/// The chunks without OpenRouter's reasoning fields, which the expected streams (OpenAI's
/// shape, with `reasoning_content`) do not have: `reasoning` must repeat `reasoning_content`,
/// and a chunk of reasoning details alone is left out.
fn openai_shape(chunks: Vec<Value>) -> Vec<Value> {
    chunks
        .into_iter()
        .filter_map(|mut c| {
            let Some(delta) = c
                .get_mut("choices")
                .and_then(|ch| ch.get_mut(0))
                .and_then(|ch| ch.get_mut("delta"))
                .and_then(Value::as_object_mut)
            else {
                return Some(c);
            };
            if let Some(r) = delta.remove("reasoning") {
                assert_eq!(Some(&r), delta.get("reasoning_content"));
            }
            if delta.remove("reasoning_details").is_some() && delta.values().all(Value::is_null) {
                return None;
            }
            Some(c)
        })
        .collect()
}

/// The `reasoning_details` of a translated stream, each detail's fragments joined by index.
fn reasoning_details(kind: ProviderKind, stem: &str) -> Vec<Value> {
    let dir = match kind {
        ProviderKind::Anthropic => "anthropic",
        _ => "gemini",
    };
    let (out, _) = run(kind, [fixture(&format!("{dir}/{stem}.sse")).as_bytes()]);
    let mut joined: Vec<Value> = Vec::new();
    for e in events(&out) {
        let Ok(v) = serde_json::from_str::<Value>(&e) else {
            continue;
        };
        for d in v["choices"][0]["delta"]["reasoning_details"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let i = d["index"].as_u64().unwrap() as usize;
            if joined.len() <= i {
                joined.resize(i + 1, Value::Null);
            }
            let slot = &mut joined[i];
            if slot.is_null() {
                *slot = d.clone();
                continue;
            }
            if let Some(t) = d["text"].as_str() {
                let text = format!("{}{t}", slot["text"].as_str().unwrap_or_default());
                slot["text"] = text.into();
            }
            if let Some(sig) = d.get("signature") {
                slot["signature"] = sig.clone();
            }
        }
    }
    joined
}

#[test]
fn reasoning_details_in_openrouters_shape() {
    let d = reasoning_details(ProviderKind::Anthropic, "anthropic_thinking");
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["type"], "reasoning.text");
    assert_eq!(d[0]["format"], "anthropic-claude-v1");
    assert!(d[0]["text"]
        .as_str()
        .unwrap()
        .starts_with("The user wants 17 * 24."));
    assert!(
        d[0]["signature"].as_str().is_some_and(|s| !s.is_empty()),
        "{d:?}"
    );
    let d = reasoning_details(ProviderKind::Gemini, "gemini_tool");
    assert!(
        d.iter().any(|d| d["type"] == "reasoning.encrypted"
            && d["format"] == "google-gemini-v1"
            && d["data"].as_str().is_some_and(|s| !s.is_empty())),
        "the thought signature: {d:?}"
    );
}

#[test]
fn anthropic_text() {
    golden(ProviderKind::Anthropic, "anthropic_text");
}

#[test]
fn anthropic_tool_calls_get_a_dense_index_and_empty_arguments_become_braces() {
    golden(ProviderKind::Anthropic, "anthropic_tool");
}

#[test]
fn anthropic_thinking_streams_as_reasoning_content() {
    golden(ProviderKind::Anthropic, "anthropic_thinking");
}

#[test]
fn anthropic_error_event_becomes_the_one_error_event() {
    golden(ProviderKind::Anthropic, "anthropic_error");
}

#[test]
fn gemini_text_with_crlf_framing() {
    golden(ProviderKind::Gemini, "gemini_text");
}

#[test]
fn gemini_whole_function_calls_carry_their_signature() {
    golden(ProviderKind::Gemini, "gemini_tool");
}

#[test]
fn gemini_out_of_range_candidate_index_is_one_error_event() {
    let input = "data: {\"candidates\":[{\"index\":4294967295,\"content\":{\"parts\":[{\"text\":\"x\"}]}}]}\r\n\r\n";
    let (out, _) = run(ProviderKind::Gemini, [input.as_bytes()]);
    let events = events(&out);
    assert!(events.last().unwrap().contains("out of range"), "{out}");
    assert_eq!(events.iter().filter(|e| e.contains("\"error\"")).count(), 1);
}

#[test]
fn gemini_stream_without_a_finish_reason_is_truncated() {
    let input = fixture("gemini/gemini_text.sse");
    let cut = input.rfind("data:").unwrap();
    let (out, _) = run(ProviderKind::Gemini, [&input.as_bytes()[..cut]]);
    let events = events(&out);
    assert!(events.last().unwrap().contains("truncated"), "{out}");
    assert!(!events.iter().any(|e| e == "[DONE]"));
}
