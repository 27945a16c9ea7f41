//! What Gemini answers: a `GenerateContentResponse` (as an OpenAI completion), its finish
//! reasons and its usage metadata, as the gateway reads them (the stream translator in
//! `stream_normalize` uses the same tables).

use serde_json::{json, Value};

use crate::chat::{
    ChatCompletion, Choice, CompletionTokensDetails, FunctionCall, PromptTokensDetails,
    ReasoningDetail, ResponseMessage, ToolCall, Usage,
};

/// OpenAI finish reason for a Gemini one.
pub(crate) fn finish_reason(native: &str, called_tools: bool) -> &'static str {
    match native {
        "STOP" if called_tools => "tool_calls",
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" => "content_filter",
        n if n.starts_with("IMAGE_") => "content_filter",
        _ => "stop",
    }
}

/// A generated call id: `call_` and 24 hex digits.
pub(crate) fn call_id() -> String {
    format!("call_{:016x}{:08x}", fastrand::u64(..), fastrand::u32(..))
}

pub(crate) fn usage(meta: &Value) -> Option<Usage> {
    if !meta.is_object() {
        return None;
    }
    let get = |k: &str| meta.get(k).and_then(Value::as_u64);
    // Saturating: the counts are the provider's, whatever it sent.
    let prompt = get("promptTokenCount")
        .unwrap_or(0)
        .saturating_add(get("toolUsePromptTokenCount").unwrap_or(0));
    let thoughts = get("thoughtsTokenCount");
    let completion = get("candidatesTokenCount")
        .unwrap_or(0)
        .saturating_add(thoughts.unwrap_or(0));
    Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: get("totalTokenCount").unwrap_or(prompt.saturating_add(completion)),
        prompt_tokens_details: Some(PromptTokensDetails {
            cached_tokens: Some(get("cachedContentTokenCount").unwrap_or(0)),
            ..Default::default()
        }),
        completion_tokens_details: thoughts.map(|t| CompletionTokensDetails {
            reasoning_tokens: Some(t),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// OpenRouter's `reasoning_details` of a Gemini answer: its thoughts as one text, then each
/// thought signature (what a later turn must send back) as encrypted reasoning.
fn details(reasoning: &str, signatures: Vec<String>) -> Option<Vec<ReasoningDetail>> {
    let mut out = Vec::new();
    if !reasoning.is_empty() {
        out.push(ReasoningDetail::text(
            ReasoningDetail::GEMINI,
            0,
            Some(reasoning.to_owned()),
            None,
        ));
    }
    for sig in signatures {
        let index = out.len() as u32;
        out.push(ReasoningDetail::encrypted(
            ReasoningDetail::GEMINI,
            index,
            sig,
        ));
    }
    (!out.is_empty()).then_some(out)
}

/// A non-streamed Gemini answer as an OpenAI completion (identity not yet stamped).
pub(crate) fn completion(v: &Value) -> Result<ChatCompletion, String> {
    let Some(candidates) = v.get("candidates").and_then(Value::as_array) else {
        if let Some(reason) = v["promptFeedback"]["blockReason"].as_str() {
            return Ok(ChatCompletion {
                object: "chat.completion".into(),
                created: crate::chat::unix_now(),
                model: v["modelVersion"].as_str().unwrap_or_default().to_owned(),
                choices: vec![Choice {
                    message: ResponseMessage {
                        role: "assistant".into(),
                        content: None,
                        reasoning_content: None,
                        reasoning: None,
                        reasoning_details: None,
                        tool_calls: None,
                        extra: Default::default(),
                    },
                    finish_reason: Some("content_filter".into()),
                    native_finish_reason: Some(reason.to_owned()),
                    ..Default::default()
                }],
                usage: usage(&v["usageMetadata"]),
                ..Default::default()
            });
        }
        return Err("the answer has no `candidates`".into());
    };
    let mut choices = Vec::with_capacity(candidates.len());
    for (pos, c) in candidates.iter().enumerate() {
        let mut text = String::new();
        let mut reasoning = String::new();
        let mut signatures = Vec::new();
        let mut calls = Vec::new();
        for part in c["content"]["parts"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            if let Some(call) = part.get("functionCall") {
                let args = call.get("args").cloned().unwrap_or_else(|| json!({}));
                let mut extra = crate::chat::Extra::new();
                if let Some(s) = part.get("thoughtSignature") {
                    if let Some(sig) = s.as_str() {
                        signatures.push(sig.to_owned());
                    }
                    extra.insert(
                        "extra_content".into(),
                        json!({"google": {"thought_signature": s}}),
                    );
                }
                calls.push(ToolCall {
                    id: call["id"]
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(call_id),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: call["name"].as_str().unwrap_or_default().to_owned(),
                        arguments: serde_json::to_string(&args).unwrap_or_else(|_| "{}".into()),
                    },
                    extra,
                });
            } else if let Some(t) = part["text"].as_str() {
                if part["thought"].as_bool() == Some(true) {
                    reasoning.push_str(t);
                } else {
                    text.push_str(t);
                }
            }
        }
        let native = c["finishReason"].as_str().unwrap_or("STOP").to_owned();
        let reason = finish_reason(&native, !calls.is_empty());
        choices.push(Choice {
            index: c["index"]
                .as_u64()
                .and_then(|i| u32::try_from(i).ok())
                .unwrap_or(pos as u32),
            message: ResponseMessage {
                role: "assistant".into(),
                content: (!text.is_empty() || calls.is_empty()).then_some(text),
                reasoning_content: (!reasoning.is_empty()).then(|| reasoning.clone()),
                reasoning_details: details(&reasoning, signatures),
                reasoning: (!reasoning.is_empty()).then_some(reasoning),
                tool_calls: (!calls.is_empty()).then_some(calls),
                extra: Default::default(),
            },
            finish_reason: Some(reason.to_owned()),
            native_finish_reason: Some(native),
            logprobs: None,
            extra: Default::default(),
        });
    }
    Ok(ChatCompletion {
        id: format!("chatcmpl-{}", v["responseId"].as_str().unwrap_or_default()),
        object: "chat.completion".into(),
        created: crate::chat::unix_now(),
        model: v["modelVersion"].as_str().unwrap_or_default().to_owned(),
        choices,
        usage: usage(&v["usageMetadata"]),
        ..Default::default()
    })
}
