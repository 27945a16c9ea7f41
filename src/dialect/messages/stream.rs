//! The core's stream (OpenAI chunks) written in the Messages API's event grammar.
//!
//! Every event has its `event:` line. `message_start` goes out with the first chunk (or the
//! first keep-alive), its `input_tokens` the local estimate (providers other than Anthropic
//! report usage only at the end); then content blocks, each opened, filled and closed before
//! the next opens: `thinking` (from `reasoning_content` / `reasoning`), `text`, `tool_use`
//! (`input_json_delta` fragments, empty ones skipped); at the core's `[DONE]`,
//! `message_delta` (the stop reason and the final usage) and `message_stop`. A keep-alive is
//! `event: ping`. The core's error event, or an end without `[DONE]`, becomes one
//! `event: error`, and nothing follows it.

use bytes::{BufMut, BytesMut};
use http::StatusCode;
use serde::Serialize;
use serde_json::Value;

use super::answer::{stop_reason, tool_id, UsageOut};
use super::error::error_event;
use crate::chat::{Usage, UsageField};
use crate::dialect::edge::{CoreEvent, StreamWriter};
use crate::sse::SseEvent;
#[cfg(test)]
use crate::sse::KEEPALIVE;
use crate::Error;

/// `event: ping`, as Anthropic sends it while a stream waits.
pub(crate) const PING: &[u8] = b"event: ping\ndata: {\"type\":\"ping\"}\n\n";

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event<'a> {
    MessageStart {
        message: StartMessage<'a>,
    },
    ContentBlockStart {
        index: u32,
        content_block: StartBlock<'a>,
    },
    ContentBlockDelta {
        index: u32,
        delta: Delta<'a>,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        delta: StopDelta,
        usage: UsageOut,
    },
    MessageStop,
}

impl Event<'_> {
    fn name(&self) -> &'static str {
        match self {
            Event::MessageStart { .. } => "message_start",
            Event::ContentBlockStart { .. } => "content_block_start",
            Event::ContentBlockDelta { .. } => "content_block_delta",
            Event::ContentBlockStop { .. } => "content_block_stop",
            Event::MessageDelta { .. } => "message_delta",
            Event::MessageStop => "message_stop",
        }
    }
}

#[derive(Serialize)]
struct StartMessage<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: [(); 0],
    stop_reason: Option<&'static str>,
    stop_sequence: Option<&'static str>,
    usage: UsageOut,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StartBlock<'a> {
    Text {
        text: &'static str,
    },
    Thinking {
        thinking: &'static str,
        signature: &'static str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Empty,
    },
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
#[serde(tag = "type")]
enum Delta<'a> {
    #[serde(rename = "text_delta")]
    Text { text: &'a str },
    #[serde(rename = "thinking_delta")]
    Thinking { thinking: &'a str },
    #[serde(rename = "input_json_delta")]
    InputJson { partial_json: &'a str },
}

#[derive(Serialize)]
struct StopDelta {
    stop_reason: &'static str,
    stop_sequence: Option<&'static str>,
}

/// The block open now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Thinking,
    /// A tool call, by the core's tool index.
    Tool(u32),
}

/// The stream writer of the edge: writes the core's chunks as Messages events.
#[derive(Debug)]
pub struct Writer {
    id: String,
    model: String,
    input_estimate: u64,
    started: bool,
    open: Option<Open>,
    /// Blocks opened so far: the next block's index.
    blocks: u32,
    usage: Option<Usage>,
    finish: Option<String>,
    called_tools: bool,
    finished: bool,
}

impl Writer {
    /// A writer for the answer `id` of the public `model`, whose prompt is estimated at
    /// `input_estimate` tokens.
    pub(crate) fn new(
        id: impl Into<String>,
        model: impl Into<String>,
        input_estimate: u64,
    ) -> Self {
        Writer {
            id: id.into(),
            model: model.into(),
            input_estimate,
            started: false,
            open: None,
            blocks: 0,
            usage: None,
            finish: None,
            called_tools: false,
            finished: false,
        }
    }

    fn write(&self, ev: &Event<'_>, out: &mut BytesMut) {
        out.put_slice(b"event: ");
        out.put_slice(ev.name().as_bytes());
        out.put_slice(b"\ndata: ");
        let mut w = std::mem::take(out).writer();
        // Serialising plain strings and numbers into memory cannot fail.
        let _ = serde_json::to_writer(&mut w, ev);
        *out = w.into_inner();
        out.put_slice(b"\n\n");
    }

    fn start(&mut self, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        let ev = Event::MessageStart {
            message: StartMessage {
                id: &self.id,
                kind: "message",
                role: "assistant",
                model: &self.model,
                content: [],
                stop_reason: None,
                stop_sequence: None,
                usage: UsageOut {
                    input_tokens: self.input_estimate,
                    output_tokens: 1,
                    ..UsageOut::default()
                },
            },
        };
        self.write(&ev, out);
    }

    fn close(&mut self, out: &mut BytesMut) {
        if self.open.take().is_some() {
            let index = self.blocks - 1;
            self.write(&Event::ContentBlockStop { index }, out);
        }
    }

    /// Opens `block` unless it is the one open; returns its index.
    fn open(&mut self, block: Open, start: StartBlock<'_>, out: &mut BytesMut) -> u32 {
        if self.open == Some(block) {
            return self.blocks - 1;
        }
        self.close(out);
        let index = self.blocks;
        self.blocks += 1;
        self.open = Some(block);
        self.write(
            &Event::ContentBlockStart {
                index,
                content_block: start,
            },
            out,
        );
        index
    }

    fn delta(&mut self, index: u32, delta: Delta<'_>, out: &mut BytesMut) {
        self.write(&Event::ContentBlockDelta { index, delta }, out);
    }

    fn done(&mut self, out: &mut BytesMut) {
        self.start(out);
        self.close(out);
        let mut usage = self.usage.as_ref().map(UsageOut::of).unwrap_or(UsageOut {
            input_tokens: self.input_estimate,
            ..UsageOut::default()
        });
        if self.usage.is_none() {
            usage.output_tokens = 0;
        }
        let ev = Event::MessageDelta {
            delta: StopDelta {
                stop_reason: stop_reason(self.finish.as_deref(), self.called_tools),
                stop_sequence: None,
            },
            usage,
        };
        self.write(&ev, out);
        self.write(&Event::MessageStop, out);
        self.finished = true;
    }
}

impl StreamWriter for Writer {
    /// True once `message_stop` or the error event has been written.
    fn is_finished(&self) -> bool {
        self.finished
    }

    /// A keep-alive from the core: `event: ping`.
    fn ping(&mut self, out: &mut BytesMut) {
        if !self.finished {
            out.put_slice(PING);
        }
    }

    /// Handles one event of the core's stream.
    fn on_event(&mut self, ev: &SseEvent, out: &mut BytesMut) {
        if self.finished {
            return;
        }
        let chunk = match crate::dialect::edge::core_event(ev) {
            CoreEvent::Empty => return,
            CoreEvent::Done => return self.done(out),
            CoreEvent::Failed(err) => return self.fail(&err, out),
            CoreEvent::Chunk(chunk) => chunk,
        };
        if !self.started && !chunk.model.is_empty() {
            // The public model the core stamped.
            self.model.clone_from(&chunk.model);
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
                let start = StartBlock::Thinking {
                    thinking: "",
                    signature: "",
                };
                let index = self.open(Open::Thinking, start, out);
                self.delta(index, Delta::Thinking { thinking: t }, out);
            }
            if let Some(t) = d.content.as_deref().filter(|t| !t.is_empty()) {
                let index = self.open(Open::Text, StartBlock::Text { text: "" }, out);
                self.delta(index, Delta::Text { text: t }, out);
            }
            for call in d.tool_calls.iter().flatten() {
                let at = call.index.unwrap_or(0);
                let f = call.function.as_ref();
                let name = f.and_then(|f| f.name.as_deref());
                let index = if self.open == Some(Open::Tool(at)) {
                    self.blocks - 1
                } else {
                    let id = tool_id(call.id.as_deref());
                    self.called_tools = true;
                    let start = StartBlock::ToolUse {
                        id: &id,
                        name: name.unwrap_or_default(),
                        input: Empty {},
                    };
                    self.open(Open::Tool(at), start, out)
                };
                if let Some(args) = f.and_then(|f| f.arguments.as_deref()) {
                    if !args.is_empty() {
                        self.delta(index, Delta::InputJson { partial_json: args }, out);
                    }
                }
            }
            if let Some(r) = &choice.finish_reason {
                self.finish = Some(r.clone());
            }
        }
    }

    /// Ends the stream with one `event: error`.
    fn fail(&mut self, err: &Error, out: &mut BytesMut) {
        if self.finished {
            return;
        }
        self.finished = true;
        out.put_slice(&error_event(err));
    }

    /// The core's stream ended: without `[DONE]` that is a cut.
    fn on_end(&mut self, out: &mut BytesMut) {
        if !self.finished {
            let err = Error::new(
                StatusCode::BAD_GATEWAY,
                "api_error",
                "the answer ended before it was complete",
            );
            self.fail(&err, out);
        }
    }
}

/// Checks that `bytes` is a well-formed Messages event stream: each event named by its
/// `event:` line and its `data`'s `type`, `message_start` first, blocks opened, filled and
/// closed in order with dense indexes, and either `message_delta` then `message_stop`, or one
/// `error` event, last. For tests and fuzzing.
#[doc(hidden)]
pub fn check_event_sequence(bytes: &[u8]) -> Result<(), String> {
    let events = crate::dialect::edge::named_events(bytes)?;
    let mut started = false;
    let mut open: Option<u64> = None;
    let mut next = 0u64;
    let mut ended = false;
    let mut delta_seen = false;
    for (i, (name, v)) in events.iter().enumerate() {
        let name = name.as_str();
        if ended {
            return Err(format!("event {i} after the end"));
        }
        let index = v["index"].as_u64();
        match name {
            "ping" => {}
            "error" => ended = true,
            "message_start" if !started => started = true,
            _ if !started => return Err(format!("event {i} `{name}` before message_start")),
            "content_block_start" if open.is_none() && index == Some(next) && !delta_seen => {
                open = index;
                next += 1;
            }
            "content_block_delta" if open.is_some() && index == open => {}
            "content_block_stop" if open.is_some() && index == open => open = None,
            "message_delta" if open.is_none() && !delta_seen => delta_seen = true,
            "message_stop" if delta_seen => ended = true,
            _ => return Err(format!("event {i} `{name}` out of order: {v}")),
        }
    }
    if !ended {
        return Err("the stream has neither message_stop nor an error".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn run(chunks: &[&str]) -> String {
        let mut w = Writer::new("gen-1", "pub/m", 42);
        let mut out = BytesMut::new();
        for c in chunks {
            if c.as_bytes() == KEEPALIVE {
                w.ping(&mut out);
                continue;
            }
            for ev in crate::sse::decode_chunks([c.as_bytes()]) {
                w.on_event(&ev, &mut out);
            }
        }
        w.on_end(&mut out);
        let text = String::from_utf8(out.to_vec()).unwrap();
        check_event_sequence(text.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{text}"));
        text
    }

    fn chunk(delta: &str, finish: Option<&str>) -> String {
        format!(
            "data: {{\"id\":\"g\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{}}}]}}\n\n",
            finish.map_or("null".to_owned(), |f| format!("\"{f}\""))
        )
    }

    #[test]
    fn text_thinking_and_tools_in_anthropics_grammar() {
        let usage = r#"data: {"id":"g","choices":[],"usage":{"prompt_tokens":50,"completion_tokens":9,"total_tokens":59,"prompt_tokens_details":{"cached_tokens":20}}}

"#;
        let text = run(&[
            std::str::from_utf8(KEEPALIVE).unwrap(),
            &chunk(r#"{"role":"assistant","content":""}"#, None),
            &chunk(r#"{"reasoning_content":"hmm"}"#, None),
            &chunk(r#"{"content":"Hel"}"#, None),
            &chunk(r#"{"content":"lo"}"#, None),
            &chunk(
                r#"{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]}"#,
                None,
            ),
            &chunk(
                r#"{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":"}}]}"#,
                None,
            ),
            &chunk(
                r#"{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]}"#,
                None,
            ),
            &chunk(
                r#"{"tool_calls":[{"index":1,"id":"call_2","type":"function","function":{"name":"g","arguments":"{}"}}]}"#,
                None,
            ),
            &chunk("{}", Some("tool_calls")),
            usage,
            "data: [DONE]\n\n",
        ]);
        let events = crate::sse::decode_chunks([text.as_bytes()]);
        let names: Vec<_> = events.iter().map(|e| e.event.clone().unwrap()).collect();
        assert_eq!(names[0], "ping");
        assert_eq!(names[1], "message_start");
        let start: Value = serde_json::from_str(&events[1].data).unwrap();
        assert_eq!(start["message"]["usage"]["input_tokens"], 42);
        assert_eq!(start["message"]["model"], "m", "the model the core stamped");
        let blocks: Vec<Value> = events
            .iter()
            .filter(|e| e.event.as_deref() == Some("content_block_start"))
            .map(|e| {
                serde_json::from_str::<Value>(&e.data).unwrap()["content_block"]["type"].clone()
            })
            .collect();
        assert_eq!(blocks, ["thinking", "text", "tool_use", "tool_use"]);
        assert!(text.contains(r#""partial_json":"{\"a\":""#), "{text}");
        assert!(!text.contains(r#""partial_json":"""#), "{text}");
        let delta: Value = serde_json::from_str(&events[events.len() - 2].data).unwrap();
        assert_eq!(delta["delta"]["stop_reason"], "tool_use");
        assert_eq!(delta["usage"]["input_tokens"], 30);
        assert_eq!(delta["usage"]["cache_read_input_tokens"], 20);
        assert_eq!(delta["usage"]["output_tokens"], 9);
        assert!(!text.contains("[DONE]"));
    }

    #[test]
    fn an_error_or_a_cut_ends_with_one_error_event() {
        let text = run(&[
            &chunk(r#"{"content":"Hi"}"#, None),
            "data: {\"error\":{\"code\":502,\"type\":\"upstream_error\",\"message\":\"boom\"}}\n\n",
            &chunk(r#"{"content":"after"}"#, None),
        ]);
        assert!(text.ends_with("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"boom\"}}\n\n"), "{text}");
        assert!(!text.contains("after"));
        let text = run(&[&chunk(r#"{"content":"Hi"}"#, None)]);
        assert!(text.contains("event: error"), "{text}");
        assert_eq!(text.matches("event: error").count(), 1);
        let text = run(&[
            "data: {\"error\":{\"code\":529,\"type\":\"overloaded_error\",\"message\":\"busy\"}}\n\n",
        ]);
        assert!(text.contains("overloaded_error"), "{text}");
    }

    proptest::proptest! {
        /// Whatever the core's stream holds, in any order and cut anywhere, the edge writes a
        /// valid event sequence.
        #[test]
        fn any_core_stream_is_written_as_a_valid_sequence(
            pieces in proptest::collection::vec(0usize..9, 0..24),
        ) {
            let parts: [&str; 9] = [
                r#"{"content":"Hi"}"#,
                r#"{"reasoning_content":"hmm"}"#,
                r#"{"tool_calls":[{"index":0,"id":"c0","function":{"name":"f","arguments":""}}]}"#,
                r#"{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}"#,
                r#"{"tool_calls":[{"index":1,"id":"c1","function":{"name":"g","arguments":"{"}}]}"#,
                "finish",
                "keepalive",
                "done",
                "error",
            ];
            let frames: Vec<Bytes> = pieces
                .iter()
                .map(|&i| match parts[i] {
                    "finish" => Bytes::from(chunk("{}", Some("stop"))),
                    "keepalive" => Bytes::from_static(KEEPALIVE),
                    "done" => Bytes::from_static(b"data: [DONE]\n\n"),
                    "error" => Bytes::from_static(b"data: {\"error\":{\"code\":502,\"type\":\"x\",\"message\":\"m\"}}\n\n"),
                    delta => Bytes::from(chunk(delta, None)),
                })
                .collect();
            let out = crate::dialect::messages::write_stream(frames);
            if let Err(e) = check_event_sequence(&out) {
                proptest::prop_assert!(false, "{e}\n{}", String::from_utf8_lossy(&out));
            }
        }
    }

    #[test]
    fn the_checker_refuses_what_anthropic_would_not_send() {
        for bad in [
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0}\n\n",
            "data: {\"type\":\"message_start\"}\n\n",
            "event: message_start\ndata: {\"type\":\"message_start\"}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0}\n\n",
        ] {
            assert!(check_event_sequence(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
