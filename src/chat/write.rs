//! A request written out as JSON without serde's derived code, byte for byte as
//! `serde_json::to_vec` writes it.
//!
//! The request is written to the provider on every attempt. serde's derived code goes through
//! a map serializer (for the `flatten`ed extras) and writes each key and value in pieces; this
//! writes each known key as one literal, the strings in one copy when they need no escape, and
//! hands serde only the values of the rarer shapes (tools, stop sequences, content parts, the
//! extras' values). A test holds the two to the same bytes.

use serde::Serialize;

use super::{ChatRequest, Content, Extra, Message, Role};
use crate::stream_normalize::raw::{key, Key, ObjectWriter};

impl ChatRequest {
    /// The request as `serde_json::to_vec` writes it, appended to `out`.
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
        let mut w = ObjectWriter::begin(out);
        w.str_field(key!("model"), &self.model);
        let list = w.field(key!("messages"));
        list.push(b'[');
        for (i, m) in self.messages.iter().enumerate() {
            if i > 0 {
                list.push(b',');
            }
            write_message(m, list);
        }
        list.push(b']');
        if let Some(v) = self.stream {
            w.raw_field(key!("stream"), bool_text(v));
        }
        opt_json(&mut w, key!("stream_options"), &self.stream_options);
        opt_u32(&mut w, key!("max_tokens"), self.max_tokens);
        opt_u32(
            &mut w,
            key!("max_completion_tokens"),
            self.max_completion_tokens,
        );
        opt_json(&mut w, key!("temperature"), &self.temperature);
        opt_json(&mut w, key!("top_p"), &self.top_p);
        opt_u32(&mut w, key!("n"), self.n);
        opt_json(&mut w, key!("stop"), &self.stop);
        opt_json(&mut w, key!("tools"), &self.tools);
        opt_json(&mut w, key!("tool_choice"), &self.tool_choice);
        if let Some(v) = self.parallel_tool_calls {
            w.raw_field(key!("parallel_tool_calls"), bool_text(v));
        }
        opt_json(&mut w, key!("response_format"), &self.response_format);
        opt_str(&mut w, key!("reasoning_effort"), &self.reasoning_effort);
        opt_str(&mut w, key!("user"), &self.user);
        opt_json(&mut w, key!("seed"), &self.seed);
        if let Some(v) = self.logprobs {
            w.raw_field(key!("logprobs"), bool_text(v));
        }
        opt_u32(&mut w, key!("top_logprobs"), self.top_logprobs);
        opt_json(&mut w, key!("presence_penalty"), &self.presence_penalty);
        opt_json(&mut w, key!("frequency_penalty"), &self.frequency_penalty);
        // `models`, `provider` and `route` are the gateway's: never written.
        extras(&mut w, &self.extra);
        w.end();
    }
}

fn write_message(m: &Message, out: &mut Vec<u8>) {
    let mut w = ObjectWriter::begin(out);
    w.raw_field(key!("role"), role_text(m.role));
    match &m.content {
        None => {}
        Some(Content::Text(t)) => w.str_field(key!("content"), t),
        Some(parts) => w.json_field(key!("content"), parts),
    }
    opt_str(&mut w, key!("name"), &m.name);
    opt_json(&mut w, key!("tool_calls"), &m.tool_calls);
    opt_str(&mut w, key!("tool_call_id"), &m.tool_call_id);
    opt_str(&mut w, key!("refusal"), &m.refusal);
    opt_str(&mut w, key!("reasoning_content"), &m.reasoning_content);
    extras(&mut w, &m.extra);
    w.end();
}

/// The fields nobody knows, after the known ones, as `flatten` writes them.
fn extras(w: &mut ObjectWriter<'_>, extra: &Extra) {
    for (k, v) in extra {
        w.dynamic_field(k, v);
    }
}

fn opt_json<T: Serialize>(w: &mut ObjectWriter<'_>, key: Key, value: &Option<T>) {
    if let Some(v) = value {
        w.json_field(key, v);
    }
}

fn opt_str(w: &mut ObjectWriter<'_>, key: Key, value: &Option<String>) {
    if let Some(v) = value {
        w.str_field(key, v);
    }
}

fn opt_u32(w: &mut ObjectWriter<'_>, key: Key, value: Option<u32>) {
    if let Some(n) = value {
        w.raw_field(key, itoa::Buffer::new().format(n));
    }
}

fn bool_text(v: bool) -> &'static str {
    if v {
        "true"
    } else {
        "false"
    }
}

fn role_text(role: Role) -> &'static str {
    match role {
        Role::System => "\"system\"",
        Role::Developer => "\"developer\"",
        Role::User => "\"user\"",
        Role::Assistant => "\"assistant\"",
        Role::Tool => "\"tool\"",
        Role::Function => "\"function\"",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(r: &ChatRequest) -> String {
        let mut out = Vec::new();
        r.write_json(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_request_is_written_as_serde_writes_it() {
        for text in [
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"m\"é\n","messages":[{"role":"system","content":"Be \"brief\"\u0001"},
                {"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url",
                 "image_url":{"url":"data:x"}}],"name":"ann"},
                {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function",
                 "function":{"name":"f","arguments":"{}"}}],"refusal":"no"},
                {"role":"tool","tool_call_id":"c1","content":"42","x_part":[1,{"a":null}]},
                {"role":"developer","content":"d","reasoning_content":"r"},
                {"role":"function","content":"f","name":"g"}],
              "stream":true,"stream_options":{"include_usage":true},"temperature":0.7,
              "top_p":1,"n":2,"stop":["\n"],"tools":[{"type":"function","function":{"name":"f"}}],
              "tool_choice":"auto","parallel_tool_calls":false,"response_format":{"type":"json_object"},
              "reasoning_effort":"low","user":"u-1","seed":-5,"logprobs":true,"top_logprobs":3,
              "presence_penalty":-0.5,"frequency_penalty":1e-3,"models":["a","b"],
              "provider":{"sort":"price"},"route":"fallback","max_completion_tokens":4294967295,
              "max_tokens":0,"top_k":5,"x_custom":{"b":1,"a":[true,"\u00e9"]},"":null}"#,
        ] {
            let r: ChatRequest = serde_json::from_str(text).unwrap();
            assert_eq!(ours(&r), serde_json::to_string(&r).unwrap(), "{text}");
        }
        // Extras that clash with a known name are written twice, as serde writes them.
        let mut r: ChatRequest = serde_json::from_str(r#"{"model":"m","messages":[]}"#).unwrap();
        r.extra.insert("model".into(), "x".into());
        assert_eq!(ours(&r), serde_json::to_string(&r).unwrap());
    }

    proptest::proptest! {
        #[test]
        fn any_request_is_written_as_serde_writes_it(
            model in ".{0,12}",
            texts in proptest::collection::vec(proptest::option::of(".{0,20}"), 0..4),
            role_ix in proptest::collection::vec(0usize..6, 4),
            stream in proptest::option::of(proptest::bool::ANY),
            max_tokens in proptest::option::of(proptest::num::u32::ANY),
            temperature in proptest::option::of(-1e300f64..1e300),
            user in proptest::option::of(".{0,8}"),
            extra in proptest::collection::btree_map(".{0,6}", -1e9f64..1e9, 0..3),
        ) {
            let roles = [
                Role::System, Role::Developer, Role::User, Role::Assistant, Role::Tool,
                Role::Function,
            ];
            let messages = texts
                .iter()
                .zip(&role_ix)
                .map(|(t, &r)| {
                    let mut m = Message::text(roles[r], t.clone().unwrap_or_default());
                    if t.is_none() {
                        m.content = None;
                        m.name = Some("n\u{0}".into());
                    }
                    m
                })
                .collect();
            let r = ChatRequest {
                model,
                messages: std::sync::Arc::new(messages),
                stream,
                max_tokens,
                temperature,
                user,
                extra: extra
                    .into_iter()
                    .map(|(k, v)| (k, serde_json::json!(v)))
                    .collect(),
                ..Default::default()
            };
            proptest::prop_assert_eq!(ours(&r), serde_json::to_string(&r).unwrap());
        }
    }
}
