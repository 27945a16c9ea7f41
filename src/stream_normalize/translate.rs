//! What the Anthropic and Gemini translators share: they turn each upstream event into
//! OpenAI-dialect chunks and hand them to an [`OpenAiStream`], which stamps them (gateway id,
//! public model, provider), keeps `role` and tool identity once with a dense index, and ends the
//! stream with the usage chunk and `[DONE]` or with one error event.

use bytes::BytesMut;
use serde_json::Value;

use super::openai::OpenAiStream;
use crate::chat::{
    ChatChunk, ChunkChoice, Delta, FunctionCallDelta, ReasoningDetail, ToolCallDelta, UsageField,
};
use crate::Error;

/// Seconds since the Unix epoch (`created` of translated answers).
pub(crate) use crate::facts::unix_now as now_unix;

/// Writes one OpenAI chunk with one choice through the OpenAI stage.
pub(crate) fn emit(
    stage: &mut OpenAiStream,
    head: &ChunkHead,
    index: u32,
    delta: Delta,
    finish: Option<(&str, &str)>,
    out: &mut BytesMut,
) {
    let chunk = ChatChunk {
        id: head.id.clone(),
        created: head.created,
        model: head.model.clone(),
        choices: vec![ChunkChoice {
            index,
            delta,
            finish_reason: finish.map(|(f, _)| f.to_owned()),
            native_finish_reason: finish.map(|(_, n)| n.to_owned()),
            ..Default::default()
        }],
        usage: UsageField::Absent,
        ..Default::default()
    };
    match serde_json::to_string(&chunk) {
        Ok(json) => stage.on_json(&json, out),
        Err(e) => stage.fail(
            Error::internal(format!("cannot serialise a chunk: {e}")),
            out,
        ),
    }
}

/// The upstream identity every translated chunk carries (the OpenAI stage replaces `id` and
/// `model` with the gateway's).
#[derive(Debug, Default, Clone)]
pub(crate) struct ChunkHead {
    pub(crate) id: String,
    pub(crate) model: String,
    pub(crate) created: u64,
}

/// A text delta.
pub(crate) fn text(content: String) -> Delta {
    Delta {
        content: Some(content),
        ..Default::default()
    }
}

/// A reasoning delta: the text as `reasoning_content` and `reasoning`, and as one
/// `reasoning.text` detail of `format` at `index`.
pub(crate) fn reasoning(content: String, format: &str, index: u32) -> Delta {
    Delta {
        reasoning_content: Some(content.clone()),
        reasoning: Some(content.clone()),
        reasoning_details: Some(vec![ReasoningDetail::text(
            format,
            index,
            Some(content),
            None,
        )]),
        ..Default::default()
    }
}

/// A delta of reasoning details alone (a signature, encrypted reasoning).
pub(crate) fn reasoning_detail(detail: ReasoningDetail) -> Delta {
    Delta {
        reasoning_details: Some(vec![detail]),
        ..Default::default()
    }
}

/// A tool-call delta: identity (`id`, `name`) on the first fragment only.
pub(crate) fn tool_call(
    index: u32,
    id: Option<String>,
    name: Option<String>,
    arguments: String,
    extra_content: Option<Value>,
) -> Delta {
    let mut extra = crate::chat::Extra::new();
    if let Some(e) = extra_content {
        extra.insert("extra_content".into(), e);
    }
    let first = id.is_some();
    Delta {
        tool_calls: Some(vec![ToolCallDelta {
            index: Some(index),
            id,
            kind: first.then(|| "function".to_owned()),
            function: Some(FunctionCallDelta {
                name,
                arguments: Some(arguments),
            }),
            extra,
        }]),
        ..Default::default()
    }
}
