//! The core's stream (OpenAI chunks) written in the Responses API's event grammar.
//!
//! Every event has its `event:` line, a `type` and a `sequence_number` counting from 0.
//! `response.created` and `response.in_progress` go out with the first chunk; then each output
//! item is added, filled and done before the next: a `reasoning` item
//! (`response.reasoning_summary_part.added`, `…_text.delta`, `…_text.done`, `…_part.done`), a
//! `message` (`response.content_part.added`, `response.output_text.delta`,
//! `response.output_text.done`, `response.content_part.done`), a `function_call`
//! (`response.function_call_arguments.delta` / `.done`; a `custom_tool_call` is given whole in
//! its `done`), each ending with `response.output_item.done` and the whole item. Exactly one
//! terminal event ends the stream: `response.completed` (the whole output and the usage),
//! `response.incomplete`, or `response.failed` for the core's error event or an end without
//! `[DONE]`. Keep-alives stay SSE comments; there is no `[DONE]`.

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use serde_json::{json, Value};

use super::answer::{
    call_item, carried, item_id, skeleton, status, ErrorOut, Item, OutputText, ResponseOut,
    Summary, UsageOut,
};
use super::request::Shape;
use crate::chat::{Usage, UsageField};
use crate::dialect::edge::{CoreEvent, StreamWriter};
use crate::sse::{SseEvent, KEEPALIVE};
use crate::Error;

/// The item open now.
#[derive(Debug)]
enum Open {
    Reasoning {
        id: String,
        text: String,
    },
    Message {
        id: String,
        text: String,
    },
    Call {
        id: String,
        tool_index: u32,
        call_id: String,
        name: String,
        arguments: String,
    },
}

/// A text delta: the bulk of a stream.
#[derive(Serialize)]
struct TextDelta<'a> {
    item_id: &'a str,
    output_index: usize,
    content_index: u32,
    delta: &'a str,
    logprobs: [(); 0],
}

/// The stream writer of the edge: writes the core's chunks as Responses events.
#[derive(Debug)]
pub struct Writer {
    response: ResponseOut,
    shape: Shape,
    seq: u64,
    started: bool,
    open: Option<Open>,
    usage: Option<Usage>,
    finish: Option<String>,
    /// The first tool call's `extra_content`, for `encrypted_content`.
    carried: Option<Value>,
    finished: bool,
}

impl Writer {
    /// A writer for the answer `id` of the public `model`.
    pub(crate) fn new(id: &str, model: &str, shape: Shape) -> Self {
        Writer {
            response: skeleton(id, model, crate::chat::unix_now(), &shape.echo),
            shape,
            seq: 0,
            started: false,
            open: None,
            usage: None,
            finish: None,
            carried: None,
            finished: false,
        }
    }

    /// Writes one event: `event: <type>`, then its data with `type` and `sequence_number`
    /// first and the fields of `body` after.
    fn event<T: Serialize>(&mut self, kind: &str, body: &T, out: &mut BytesMut) {
        out.put_slice(b"event: ");
        out.put_slice(kind.as_bytes());
        out.put_slice(b"\ndata: {\"type\":\"");
        out.put_slice(kind.as_bytes());
        out.put_slice(b"\",\"sequence_number\":");
        out.put_slice(itoa::Buffer::new().format(self.seq).as_bytes());
        self.seq += 1;
        // Serialising our own values into memory cannot fail.
        let fields = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
        if fields.len() > 2 {
            out.put_u8(b',');
            out.put_slice(&fields[1..]);
        } else {
            out.put_u8(b'}');
        }
        out.put_slice(b"\n\n");
    }

    fn start(&mut self, out: &mut BytesMut) {
        if std::mem::replace(&mut self.started, true) {
            return;
        }
        let response = self.response.clone();
        self.event("response.created", &json!({ "response": response }), out);
        self.event(
            "response.in_progress",
            &json!({ "response": response }),
            out,
        );
    }

    fn index(&self) -> usize {
        self.response.output.len()
    }

    fn add(&mut self, item: &Item, out: &mut BytesMut) {
        let index = self.index();
        self.event(
            "response.output_item.added",
            &json!({ "output_index": index, "item": item }),
            out,
        );
    }

    fn done(&mut self, item: Item, out: &mut BytesMut) {
        let index = self.index();
        self.event(
            "response.output_item.done",
            &json!({ "output_index": index, "item": item }),
            out,
        );
        self.response.output.push(item);
    }

    /// Closes the open item, if any.
    fn close(&mut self, out: &mut BytesMut) {
        let Some(open) = self.open.take() else {
            return;
        };
        let index = self.index();
        match open {
            Open::Reasoning { id, text } => {
                let at = json!({"item_id": id, "output_index": index, "summary_index": 0});
                let mut body = at.clone();
                body["text"] = Value::String(text.clone());
                self.event("response.reasoning_summary_text.done", &body, out);
                let mut body = at;
                body["part"] = json!(Summary { text: text.clone() });
                self.event("response.reasoning_summary_part.done", &body, out);
                let encrypted = self
                    .shape
                    .encrypted_reasoning
                    .then(|| self.carried.as_ref().map(carried))
                    .flatten();
                self.done(
                    Item::Reasoning {
                        id,
                        summary: vec![Summary { text }],
                        encrypted_content: encrypted,
                    },
                    out,
                );
            }
            Open::Message { id, text } => {
                let at = json!({"item_id": id, "output_index": index, "content_index": 0});
                let mut body = at.clone();
                body["text"] = Value::String(text.clone());
                body["logprobs"] = json!([]);
                self.event("response.output_text.done", &body, out);
                let part = OutputText {
                    text,
                    annotations: [],
                };
                let mut body = at;
                body["part"] = json!(part);
                self.event("response.content_part.done", &body, out);
                self.done(
                    Item::Message {
                        id,
                        status: "completed",
                        role: "assistant",
                        content: vec![part],
                    },
                    out,
                );
            }
            Open::Call {
                id,
                call_id,
                name,
                arguments,
                ..
            } => {
                if !self.shape.custom_tools.contains(&name) {
                    self.event(
                        "response.function_call_arguments.done",
                        &json!({"item_id": id, "output_index": index, "arguments": arguments}),
                        out,
                    );
                }
                let item = call_item(&self.shape, id, call_id, name, arguments);
                self.done(item, out);
            }
        }
    }

    fn reasoning(&mut self, text: &str, out: &mut BytesMut) {
        if !matches!(self.open, Some(Open::Reasoning { .. })) {
            self.close(out);
            let id = item_id("rs", &self.response.id, self.index());
            let item = Item::Reasoning {
                id: id.clone(),
                summary: Vec::new(),
                encrypted_content: None,
            };
            self.add(&item, out);
            let index = self.index();
            self.event(
                "response.reasoning_summary_part.added",
                &json!({"item_id": id, "output_index": index, "summary_index": 0, "part": Summary { text: String::new() }}),
                out,
            );
            self.open = Some(Open::Reasoning {
                id,
                text: String::new(),
            });
        }
        let index = self.index();
        if let Some(Open::Reasoning { id, text: all }) = &mut self.open {
            all.push_str(text);
            let id = id.clone();
            self.event(
                "response.reasoning_summary_text.delta",
                &json!({"item_id": id, "output_index": index, "summary_index": 0, "delta": text}),
                out,
            );
        }
    }

    fn text(&mut self, text: &str, out: &mut BytesMut) {
        if !matches!(self.open, Some(Open::Message { .. })) {
            self.close(out);
            let id = item_id("msg", &self.response.id, self.index());
            let item = Item::Message {
                id: id.clone(),
                status: "in_progress",
                role: "assistant",
                content: Vec::new(),
            };
            self.add(&item, out);
            let index = self.index();
            self.event(
                "response.content_part.added",
                &json!({"item_id": id, "output_index": index, "content_index": 0,
                        "part": OutputText { text: String::new(), annotations: [] }}),
                out,
            );
            self.open = Some(Open::Message {
                id,
                text: String::new(),
            });
        }
        let index = self.index();
        let mut pending = None;
        if let Some(Open::Message { id, text: all }) = &mut self.open {
            all.push_str(text);
            pending = Some(id.clone());
        }
        if let Some(id) = pending {
            let delta = TextDelta {
                item_id: &id,
                output_index: index,
                content_index: 0,
                delta: text,
                logprobs: [],
            };
            self.event("response.output_text.delta", &delta, out);
        }
    }

    fn call(
        &mut self,
        tool_index: u32,
        call_id: Option<&str>,
        name: Option<&str>,
        arguments: &str,
        extra_content: Option<&Value>,
        out: &mut BytesMut,
    ) {
        let same = matches!(&self.open, Some(Open::Call { tool_index: t, .. }) if *t == tool_index);
        if !same {
            if self.carried.is_none() {
                self.carried = extra_content.cloned();
            }
            let carry = self.shape.encrypted_reasoning && self.carried.is_some();
            if carry && !matches!(self.open, Some(Open::Reasoning { .. })) {
                // The provider's state to hand back came with the call, after any reasoning
                // was done: an empty reasoning item just before the call carries it (the
                // client sends it back before the call, where the request reader looks).
                self.reasoning_item_only(out);
            }
            self.close(out);
            let id = item_id("fc", &self.response.id, self.index());
            let call_id = call_id.filter(|c| !c.is_empty()).map_or_else(
                || item_id("call", &self.response.id, self.index()),
                str::to_owned,
            );
            let name = name.unwrap_or_default().to_owned();
            let item = if self.shape.custom_tools.contains(&name) {
                Item::CustomToolCall {
                    id: id.clone(),
                    call_id: call_id.clone(),
                    name: name.clone(),
                    input: String::new(),
                    status: "in_progress",
                }
            } else {
                Item::FunctionCall {
                    id: id.clone(),
                    call_id: call_id.clone(),
                    name: name.clone(),
                    arguments: String::new(),
                    status: "in_progress",
                }
            };
            self.add(&item, out);
            self.open = Some(Open::Call {
                id,
                tool_index,
                call_id,
                name,
                arguments: String::new(),
            });
        }
        if arguments.is_empty() {
            return;
        }
        let index = self.index();
        let mut delta = None;
        if let Some(Open::Call {
            id,
            name,
            arguments: all,
            ..
        }) = &mut self.open
        {
            all.push_str(arguments);
            if !self.shape.custom_tools.contains(name.as_str()) {
                delta = Some(id.clone());
            }
        }
        if let Some(id) = delta {
            self.event(
                "response.function_call_arguments.delta",
                &json!({"item_id": id, "output_index": index, "delta": arguments}),
                out,
            );
        }
    }

    /// A reasoning item with no summary, added and done at once.
    fn reasoning_item_only(&mut self, out: &mut BytesMut) {
        self.close(out);
        let id = item_id("rs", &self.response.id, self.index());
        let item = Item::Reasoning {
            id: id.clone(),
            summary: Vec::new(),
            encrypted_content: None,
        };
        self.add(&item, out);
        self.done(
            Item::Reasoning {
                id,
                summary: Vec::new(),
                encrypted_content: self.carried.as_ref().map(carried),
            },
            out,
        );
    }

    /// The core's `[DONE]`: the terminal event, `completed` or `incomplete`.
    fn end(&mut self, out: &mut BytesMut) {
        self.start(out);
        self.close(out);
        let (status, incomplete) = status(self.finish.as_deref());
        self.response.status = status;
        self.response.incomplete_details = incomplete;
        self.response.usage = self.usage.as_ref().map(UsageOut::of);
        let kind = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        let response =
            std::mem::replace(&mut self.response, skeleton("", "", 0, &Default::default()));
        self.event(kind, &json!({ "response": response }), out);
        self.finished = true;
    }
}

impl StreamWriter for Writer {
    /// True once a terminal event has been written.
    fn is_finished(&self) -> bool {
        self.finished
    }

    /// A keep-alive from the core: kept as an SSE comment.
    fn ping(&mut self, out: &mut BytesMut) {
        if !self.finished {
            out.put_slice(KEEPALIVE);
        }
    }

    /// Handles one event of the core's stream.
    fn on_event(&mut self, ev: &SseEvent, out: &mut BytesMut) {
        if self.finished {
            return;
        }
        let chunk = match crate::dialect::edge::core_event(ev) {
            CoreEvent::Empty => return,
            CoreEvent::Done => return self.end(out),
            CoreEvent::Failed(err) => return self.fail(&err, out),
            CoreEvent::Chunk(chunk) => chunk,
        };
        if !self.started && !chunk.model.is_empty() {
            self.response.model.clone_from(&chunk.model);
        }
        self.start(out);
        if let UsageField::Present(u) = &chunk.usage {
            self.usage = Some(u.clone());
        }
        for choice in chunk.choices.iter().filter(|c| c.index == 0) {
            let d = &choice.delta;
            let reasoning = d
                .reasoning_content
                .as_deref()
                .or_else(|| d.extra.get("reasoning").and_then(Value::as_str));
            if let Some(t) = reasoning.filter(|t| !t.is_empty()) {
                self.reasoning(t, out);
            }
            if let Some(t) = d.content.as_deref().filter(|t| !t.is_empty()) {
                self.text(t, out);
            }
            for call in d.tool_calls.iter().flatten() {
                let f = call.function.as_ref();
                self.call(
                    call.index.unwrap_or(0),
                    call.id.as_deref(),
                    f.and_then(|f| f.name.as_deref()),
                    f.and_then(|f| f.arguments.as_deref()).unwrap_or_default(),
                    call.extra.get("extra_content"),
                    out,
                );
            }
            if let Some(r) = &choice.finish_reason {
                self.finish = Some(r.clone());
            }
        }
    }

    /// Ends the stream with `response.failed`.
    fn fail(&mut self, err: &Error, out: &mut BytesMut) {
        if self.finished {
            return;
        }
        self.start(out);
        self.open = None;
        self.response.status = "failed";
        self.response.error = Some(ErrorOut {
            code: if err.status().is_server_error() {
                "server_error".to_owned()
            } else {
                err.kind().to_owned()
            },
            message: err.message().to_owned(),
        });
        self.response.usage = self.usage.as_ref().map(UsageOut::of);
        let response =
            std::mem::replace(&mut self.response, skeleton("", "", 0, &Default::default()));
        self.event("response.failed", &json!({ "response": response }), out);
        self.finished = true;
    }

    /// The core's stream ended: without `[DONE]` that is a cut.
    fn on_end(&mut self, out: &mut BytesMut) {
        if !self.finished {
            let err = Error::new(
                http::StatusCode::BAD_GATEWAY,
                "server_error",
                "the answer ended before it was complete",
            );
            self.fail(&err, out);
        }
    }
}

/// Checks that `bytes` is a well-formed Responses event stream: each event named by its
/// `event:` line and its data's `type`, sequence numbers increasing from 0, every item added
/// done before the next is added, and exactly one terminal event (`response.completed`,
/// `response.incomplete` or `response.failed`), last. For tests and fuzzing.
#[doc(hidden)]
pub fn check_event_sequence(bytes: &[u8]) -> Result<(), String> {
    let events = crate::dialect::edge::named_events(bytes)?;
    let mut open: Option<u64> = None;
    let mut items = 0u64;
    let mut ended = false;
    for (i, (name, v)) in events.iter().enumerate() {
        let name = name.as_str();
        if ended {
            return Err(format!("event {i} after the terminal event"));
        }
        if v["sequence_number"].as_u64() != Some(i as u64) {
            let got = &v["sequence_number"];
            return Err(format!(
                "event {i}: sequence_number {got} where {i} was due"
            ));
        }
        let index = v["output_index"].as_u64();
        match name {
            "response.output_item.added" if open.is_none() && index == Some(items) => open = index,
            "response.output_item.added" => {
                return Err(format!(
                    "event {i}: item added while another is open, or out of order"
                ))
            }
            "response.output_item.done" if open.is_some() && index == open => {
                open = None;
                items += 1;
            }
            "response.output_item.done" => {
                return Err(format!("event {i}: an item done that was not open"))
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                if name != "response.failed" && open.is_some() {
                    return Err(format!("event {i}: {name} with an item still open"));
                }
                if name == "response.completed"
                    && v["response"]["output"].as_array().map(Vec::len) != Some(items as usize)
                {
                    return Err(format!(
                        "event {i}: the final output does not hold every item done"
                    ));
                }
                ended = true;
            }
            _ if index.is_some() && index != open => {
                return Err(format!("event {i} `{name}` for an item that is not open"))
            }
            _ => {}
        }
    }
    if !ended {
        return Err("the stream has no terminal event".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn chunk(delta: &str, finish: Option<&str>) -> String {
        format!(
            "data: {{\"id\":\"g\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"pub/m\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{}}}]}}\n\n",
            finish.map_or("null".to_owned(), |f| format!("\"{f}\""))
        )
    }

    fn run(shape: Shape, pieces: &[&str]) -> String {
        let frames = pieces.iter().map(|p| Bytes::from(p.to_string())).collect();
        let out = crate::dialect::responses::write_stream(frames, shape);
        let text = String::from_utf8(out.to_vec()).unwrap();
        check_event_sequence(text.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{text}"));
        text
    }

    fn types(text: &str) -> Vec<String> {
        crate::sse::decode_chunks([text.as_bytes()])
            .into_iter()
            .map(|e| e.event.unwrap())
            .collect()
    }

    #[test]
    fn text_reasoning_and_calls_in_the_responses_grammar() {
        let usage = "data: {\"id\":\"g\",\"choices\":[],\"usage\":{\"prompt_tokens\":50,\"completion_tokens\":9,\"total_tokens\":59}}\n\n";
        let shape = Shape {
            encrypted_reasoning: true,
            ..Shape::default()
        };
        let text = run(
            shape,
            &[
                std::str::from_utf8(KEEPALIVE).unwrap(),
                &chunk(r#"{"role":"assistant","content":""}"#, None),
                &chunk(r#"{"reasoning_content":"hmm"}"#, None),
                &chunk(r#"{"content":"Hel"}"#, None),
                &chunk(r#"{"content":"lo"}"#, None),
                &chunk(
                    r#"{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""},"extra_content":{"google":{"thought_signature":"sig"}}}]}"#,
                    None,
                ),
                &chunk(
                    r#"{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":1}"}}]}"#,
                    None,
                ),
                &chunk("{}", Some("tool_calls")),
                usage,
                "data: [DONE]\n\n",
            ],
        );
        assert!(text.starts_with(": keepalive"));
        let t = types(&text);
        assert_eq!(&t[..2], ["response.created", "response.in_progress"]);
        assert_eq!(t.last().unwrap(), "response.completed");
        assert!(t.contains(&"response.output_text.delta".to_owned()));
        assert!(t.contains(&"response.reasoning_summary_text.delta".to_owned()));
        assert!(t.contains(&"response.function_call_arguments.done".to_owned()));
        let last = crate::sse::decode_chunks([text.as_bytes()]).pop().unwrap();
        let v: Value = serde_json::from_str(&last.data).unwrap();
        let o = &v["response"]["output"];
        assert_eq!(o[0]["type"], "reasoning");
        assert_eq!(o[0]["summary"][0]["text"], "hmm");
        assert_eq!(o[1]["content"][0]["text"], "Hello");
        assert_eq!(o[3]["arguments"], "{\"a\":1}");
        assert_eq!(v["response"]["usage"]["total_tokens"], 59);
        assert_eq!(v["response"]["status"], "completed");
        // The signature the next turn needs came with the call: a reasoning item just before
        // it carries it.
        assert_eq!(o[2]["type"], "reasoning");
        assert!(o[2]["encrypted_content"]
            .as_str()
            .unwrap()
            .contains("thought_signature"));
        assert!(!text.contains("[DONE]"));
    }

    #[test]
    fn a_fault_or_a_cut_is_one_failed_event() {
        let text = run(
            Shape::default(),
            &[
                &chunk(r#"{"content":"Hi"}"#, None),
                "data: {\"error\":{\"code\":502,\"type\":\"upstream_error\",\"message\":\"boom\"}}\n\n",
            ],
        );
        assert!(text.contains("\"status\":\"failed\""), "{text}");
        assert!(text.contains("boom"));
        let text = run(Shape::default(), &[&chunk(r#"{"content":"Hi"}"#, None)]);
        assert_eq!(types(&text).last().unwrap(), "response.failed");
        let text = run(
            Shape::default(),
            &[
                &chunk(r#"{"content":"Hi"}"#, Some("length")),
                "data: [DONE]\n\n",
            ],
        );
        assert_eq!(types(&text).last().unwrap(), "response.incomplete");
        assert!(text.contains("max_output_tokens"));
    }

    proptest::proptest! {
        #[test]
        fn any_core_stream_is_written_as_a_valid_sequence(
            pieces in proptest::collection::vec(0usize..9, 0..24),
        ) {
            let parts = [
                chunk(r#"{"content":"Hi"}"#, None),
                chunk(r#"{"reasoning_content":"hmm"}"#, None),
                chunk(r#"{"tool_calls":[{"index":0,"id":"c0","function":{"name":"f","arguments":""}}]}"#, None),
                chunk(r#"{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}"#, None),
                chunk(r#"{"tool_calls":[{"index":1,"id":"c1","function":{"name":"apply_patch","arguments":"{"}}]}"#, None),
                chunk("{}", Some("stop")),
                String::from_utf8(KEEPALIVE.to_vec()).unwrap(),
                "data: [DONE]\n\n".to_owned(),
                "data: {\"error\":{\"code\":502,\"type\":\"x\",\"message\":\"m\"}}\n\n".to_owned(),
            ];
            let frames = pieces.iter().map(|&i| Bytes::from(parts[i].clone())).collect();
            let shape = Shape {
                encrypted_reasoning: true,
                custom_tools: ["apply_patch".to_owned()].into(),
                ..Shape::default()
            };
            let out = crate::dialect::responses::write_stream(frames, shape);
            if let Err(e) = check_event_sequence(&out) {
                proptest::prop_assert!(false, "{e}\n{}", String::from_utf8_lossy(&out));
            }
        }
    }
}
