//! The common request read without serde's derived code.
//!
//! serde_json spends about 40 instructions a byte on a short request, mostly per key and per
//! value. This reader takes the request apart with the crate's own JSON scanner (the one the
//! answers are spliced with) and reads the values of the usual shapes itself: strings, the
//! booleans and counts, the messages. Every other known member's value is handed to serde one
//! by one, an unknown member becomes a [`serde_json::Value`] in `extra`, as serde's `flatten`
//! makes it.
//!
//! It gives up (`None`) rather than decide anything serde might decide differently: a key
//! written with an escape, a known key twice, a value of another type, a missing `model`,
//! `messages` or `role`. Then the request is read again by serde, which also words the error.
//! So whatever this reads, serde reads the same: a property test and the `decode_request` fuzz
//! target hold it to that.

use std::sync::Arc;

use serde_json::Value;

use crate::chat::{
    ChatRequest, Content, Extra, Message, ResponseFormat, Role, Stop, StreamOptions, Tool,
    ToolChoice,
};
use crate::stream_normalize::raw::{Scan, Scanner};

/// `text` read as a [`ChatRequest`], or `None` when serde has to read it; see the module docs.
pub(super) fn chat_request(text: &str) -> Option<ChatRequest> {
    let mut sc = Scanner::new(text);
    let mut seen = 0u32;
    let (mut model, mut messages) = (None, None);
    // Everything but `model` and `messages`, read into the fields of one [`Fields`].
    let mut r = Fields::default();
    sc.document(|sc| {
        sc.plain_object(|sc, key| {
            match key {
                "model" => {
                    once(&mut seen, 0, sc)?;
                    model = Some(sc.owned_string()?);
                }
                "messages" => {
                    once(&mut seen, 1, sc)?;
                    let mut list = Vec::new();
                    sc.array(|sc| {
                        list.push(message(sc)?);
                        Ok(())
                    })?;
                    messages = Some(list);
                }
                "stream" => {
                    once(&mut seen, 2, sc)?;
                    r.stream = sc.optional_bool()?;
                }
                "stream_options" => {
                    once(&mut seen, 3, sc)?;
                    r.stream_options = sc.with_serde()?;
                }
                "max_tokens" => {
                    once(&mut seen, 4, sc)?;
                    r.max_tokens = sc.optional_u32()?;
                }
                "max_completion_tokens" => {
                    once(&mut seen, 5, sc)?;
                    r.max_completion_tokens = sc.optional_u32()?;
                }
                "temperature" => {
                    once(&mut seen, 6, sc)?;
                    r.temperature = sc.with_serde()?;
                }
                "top_p" => {
                    once(&mut seen, 7, sc)?;
                    r.top_p = sc.with_serde()?;
                }
                "n" => {
                    once(&mut seen, 8, sc)?;
                    r.n = sc.optional_u32()?;
                }
                "stop" => {
                    once(&mut seen, 9, sc)?;
                    r.stop = sc.with_serde()?;
                }
                "tools" => {
                    once(&mut seen, 10, sc)?;
                    r.tools = sc.with_serde()?;
                }
                "tool_choice" => {
                    once(&mut seen, 11, sc)?;
                    r.tool_choice = sc.with_serde()?;
                }
                "parallel_tool_calls" => {
                    once(&mut seen, 12, sc)?;
                    r.parallel_tool_calls = sc.optional_bool()?;
                }
                "response_format" => {
                    once(&mut seen, 13, sc)?;
                    r.response_format = sc.with_serde()?;
                }
                "reasoning_effort" => {
                    once(&mut seen, 14, sc)?;
                    r.reasoning_effort = sc.optional_string()?;
                }
                "user" => {
                    once(&mut seen, 23, sc)?;
                    r.user = sc.optional_string()?;
                }
                "seed" => {
                    once(&mut seen, 15, sc)?;
                    r.seed = sc.with_serde()?;
                }
                "logprobs" => {
                    once(&mut seen, 16, sc)?;
                    r.logprobs = sc.optional_bool()?;
                }
                "top_logprobs" => {
                    once(&mut seen, 17, sc)?;
                    r.top_logprobs = sc.optional_u32()?;
                }
                "presence_penalty" => {
                    once(&mut seen, 18, sc)?;
                    r.presence_penalty = sc.with_serde()?;
                }
                "frequency_penalty" => {
                    once(&mut seen, 19, sc)?;
                    r.frequency_penalty = sc.with_serde()?;
                }
                "models" => {
                    once(&mut seen, 20, sc)?;
                    r.models = sc.with_serde()?;
                }
                "provider" => {
                    once(&mut seen, 21, sc)?;
                    r.provider = sc.with_serde()?;
                }
                "route" => {
                    once(&mut seen, 22, sc)?;
                    r.route = sc.optional_string()?;
                }
                _ => return extra(sc, &mut r.extra, key),
            }
            Ok(())
        })
    })
    .ok()?;
    Some(r.into_request(model?, messages?))
}

/// [`Fields`]: a [`ChatRequest`]'s fields but `model` and `messages`, named once here, and
/// the request they make with those two. (A `ChatRequest` made up front would allocate an
/// empty conversation only to drop it.)
macro_rules! other_fields {
    ($($field:ident: $ty:ty,)*) => {
        #[derive(Default)]
        struct Fields {
            $($field: $ty,)*
        }

        impl Fields {
            fn into_request(self, model: String, messages: Vec<Message>) -> ChatRequest {
                ChatRequest {
                    model,
                    messages: Arc::new(messages),
                    $($field: self.$field,)*
                }
            }
        }
    };
}

other_fields! {
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    n: Option<u32>,
    stop: Option<Stop>,
    tools: Option<Arc<Vec<Tool>>>,
    tool_choice: Option<ToolChoice>,
    parallel_tool_calls: Option<bool>,
    response_format: Option<ResponseFormat>,
    reasoning_effort: Option<String>,
    user: Option<String>,
    seed: Option<i64>,
    logprobs: Option<bool>,
    top_logprobs: Option<u32>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    models: Option<Vec<String>>,
    provider: Option<Value>,
    route: Option<String>,
    extra: Extra,
}

/// One message.
fn message(sc: &mut Scanner<'_>) -> Scan<Message> {
    let mut seen = 0u32;
    let mut role = None;
    let mut m = Message::text(Role::User, "");
    m.content = None;
    sc.plain_object(|sc, key| {
        match key {
            "role" => {
                once(&mut seen, 0, sc)?;
                role = Some(match sc.str_value()?.as_ref() {
                    "system" => Role::System,
                    "developer" => Role::Developer,
                    "user" => Role::User,
                    "assistant" => Role::Assistant,
                    "tool" => Role::Tool,
                    "function" => Role::Function,
                    _ => return sc.err("an unknown role"),
                })
            }
            "content" => {
                once(&mut seen, 1, sc)?;
                m.content = match sc.peek() {
                    Some(b'"') => Some(Content::Text(sc.owned_string()?)),
                    _ => sc.with_serde()?,
                }
            }
            "name" => {
                once(&mut seen, 2, sc)?;
                m.name = sc.optional_string()?;
            }
            "tool_calls" => {
                once(&mut seen, 3, sc)?;
                m.tool_calls = sc.with_serde()?;
            }
            "tool_call_id" => {
                once(&mut seen, 4, sc)?;
                m.tool_call_id = sc.optional_string()?;
            }
            "refusal" => {
                once(&mut seen, 5, sc)?;
                m.refusal = sc.optional_string()?;
            }
            "reasoning_content" => {
                once(&mut seen, 6, sc)?;
                m.reasoning_content = sc.optional_string()?;
            }
            _ => return extra(sc, &mut m.extra, key),
        }
        Ok(())
    })?;
    m.role = match role {
        Some(r) => r,
        None => return sc.err("no role"),
    };
    Ok(m)
}

/// A member no field names: its value, as serde's `flatten` keeps it (the last of a repeated
/// key).
fn extra(sc: &mut Scanner<'_>, extra: &mut Extra, key: &str) -> Scan<()> {
    let value = sc.with_serde()?;
    extra.insert(key.to_owned(), value);
    Ok(())
}

/// Marks the known key numbered `bit` as read; a key read before is refused, as serde
/// refuses it.
fn once(seen: &mut u32, bit: u32, sc: &Scanner<'_>) -> Scan<()> {
    if *seen & (1 << bit) != 0 {
        return sc.err("a repeated key");
    }
    *seen |= 1 << bit;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What serde makes of `text`, when it makes a request of it.
    fn serde(text: &str) -> Option<ChatRequest> {
        serde_json::from_str(text).ok()
    }

    #[test]
    fn the_usual_requests_are_read_here_as_serde_reads_them() {
        for text in [
            r#"{"max_tokens":64,"messages":[{"content":"Say hello.","role":"user"}],"model":"m","stream":false}"#,
            r#"{"model":"m","messages":[{"role":"system","content":"Be \"brief\"\n"},
                {"role":"user","content":[{"type":"text","text":"hi"}],"name":"ann"},
                {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function",
                 "function":{"name":"f","arguments":"{}"}}]},
                {"role":"tool","tool_call_id":"c1","content":"42","x_part":[1,{"a":null}]}],
              "stream":true,"stream_options":{"include_usage":true},"temperature":0.7,
              "top_p":1,"n":2,"stop":["\n"],"tools":[{"type":"function","function":{"name":"f"}}],
              "tool_choice":"auto","parallel_tool_calls":false,"response_format":{"type":"json_object"},
              "reasoning_effort":"low","user":"u-1","seed":-5,"logprobs":true,"top_logprobs":3,
              "presence_penalty":-0.5,"frequency_penalty":1e-3,"models":["a","b"],
              "provider":{"sort":"price"},"route":"fallback","max_completion_tokens":null,
              "top_k":5,"x_custom":{"b":1,"a":[true,"\u00e9"]},"top_k":6}"#,
            "{ \"model\" : \"m\" , \"messages\" : [ ] }",
        ] {
            let ours = chat_request(text);
            assert!(ours.is_some(), "{text}");
            assert_eq!(ours, serde(text), "{text}");
        }
    }

    #[test]
    fn anything_serde_might_read_differently_is_left_to_it() {
        for text in [
            // Refused by serde: a repeated known key, a missing `model`, `messages` or `role`,
            // a wrong type, a count out of range.
            r#"{"model":"m","model":"n","messages":[]}"#,
            r#"{"model":"m","messages":[{"role":"user","role":"user","content":"x"}]}"#,
            r#"{"messages":[]}"#,
            r#"{"model":"m"}"#,
            r#"{"model":"m","messages":[{"content":"x"}]}"#,
            r#"{"model":"m","messages":[],"stream":"yes"}"#,
            r#"{"model":"m","messages":[],"max_tokens":-1}"#,
            r#"{"model":"m","messages":[],"max_tokens":4294967296}"#,
            r#"{"model":"m","messages":[],"n":1.0}"#,
            r#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#,
            r#"{"model":"m","messages":[],"temperature":"hot"}"#,
            r#"{"model":"\ud800","messages":[]}"#,
            r#"[]"#,
            // Read by serde, not here: an escaped key, another form of an enum.
            r#"{"mod\u0065l":"m","messages":[]}"#,
            r#"{"model":"m","messages":[{"role":{"user":null},"content":"x"}]}"#,
        ] {
            assert_eq!(chat_request(text), None, "{text}");
        }
        // An escaped value is decoded here, as serde decodes it.
        let escaped = r#"{"model":"m\u00e9","messages":[{"role":"us\u0065r","content":"\ta"}]}"#;
        assert_eq!(chat_request(escaped), serde(escaped));
        assert_eq!(chat_request(escaped).unwrap().model, "mé");
    }

    proptest::proptest! {
        // Most generated texts are refused by both; enough cases for a few thousand readings.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]
        #[test]
        fn whatever_is_read_here_serde_reads_the_same(
            model in proptest::sample::select(&["\"m\"", "\"m\"", "\"a\\u00e9\"", "null"][..]),
            messages in proptest::collection::vec(
                (
                    proptest::sample::select(&[
                        "\"user\"", "\"assistant\"", "\"tool\"", "\"system\"",
                        "\"developer\"", "\"function\"", "\"User\"", "{\"user\":null}",
                    ][..]),
                    proptest::collection::vec(
                        (
                            proptest::sample::select(&[
                                "content", "content", "name", "tool_call_id", "tool_calls",
                                "refusal", "reasoning_content", "x", "rol\\u0065", "role",
                            ][..]),
                        proptest::sample::select(&[
                            "\"user\"", "\"assistant\"", "\"tool\"", "\"User\"",
                            "\"hi\\n\"", "null", "1", "[]",
                            "[{\"type\":\"text\",\"text\":\"t\"}]", "{\"user\":null}",
                        ][..]),
                        ),
                        0..4,
                    ),
                ),
                0..3,
            ),
            others in proptest::collection::vec(
                (
                    proptest::sample::select(&[
                        "stream", "max_tokens", "temperature", "n", "user", "stop", "provider",
                        "top_k", "x", "", "model", "messages", "mod\\u0065l",
                    ][..]),
                    proptest::sample::select(&[
                        "\"m\"", "null", "true", "false", "0", "7", "-1", "4294967295",
                        "4294967296", "1.5", "1e2", "[]", "{}", "[\"s\"]",
                    ][..]),
                ),
                0..4,
            ),
            at in 0usize..4,
            spaced in proptest::bool::ANY,
        ) {
            let sep = if spaced { " ,\n " } else { "," };
            let object = |members: &[(&str, String)]| {
                let body = members
                    .iter()
                    .map(|(k, v)| format!("\"{k}\":{v}"))
                    .collect::<Vec<_>>()
                    .join(sep);
                format!("{{{body}}}")
            };
            let list = messages
                .iter()
                .map(|(role, rest)| {
                    let mut m = vec![("role", role.to_string())];
                    m.extend(rest.iter().map(|(k, v)| (*k, v.to_string())));
                    object(&m)
                })
                .collect::<Vec<_>>()
                .join(sep);
            let mut members: Vec<(&str, String)> =
                others.iter().map(|(k, v)| (*k, v.to_string())).collect();
            members.insert(at.min(members.len()), ("model", model.to_string()));
            members.insert(at.min(members.len()) / 2, ("messages", format!("[{list}]")));
            let text = object(&members);
            let theirs = serde_json::from_str::<ChatRequest>(&text);
            match chat_request(&text) {
                Some(ours) => {
                    proptest::prop_assert!(theirs.is_ok(), "{}: {:?}", text, theirs);
                    proptest::prop_assert_eq!(ours, theirs.unwrap(), "{}", text);
                }
                // Left to serde: what serde reads, it would read here but for an escaped key
                // or an enum in the form of a map.
                None => proptest::prop_assert!(
                    theirs.is_err() || text.contains("\\u0065") || text.contains("{\"user\""),
                    "{}",
                    text
                ),
            }
        }
    }
}
