//! OpenRouter's `middle-out` transform (the `context-compression` plugin): a conversation
//! too long for the serving endpoint's context loses messages from its middle until it fits,
//! keeping the first message and the last.
//!
//! Sizes are estimated, as the gateway has no tokenizer of every model: a quarter of each
//! message's JSON bytes, plus 4 a message, plus the answer's bound (`max_tokens`) when the
//! request gives one. An assistant message that called tools goes with the tool results that
//! answer it, so no provider sees a call without its result or a result without its call.
//! When even the first and last messages do not fit, the request goes as it is and the
//! provider's own refusal answers it.

use std::sync::Arc;

use crate::chat::{ChatRequest, Message, Role};

/// Whether the request asks for the transform.
pub fn asked(req: &ChatRequest) -> bool {
    req.transforms.iter().flatten().any(|t| t == "middle-out")
        || req
            .plugins
            .iter()
            .flatten()
            .any(|p| p.id == "context-compression" && p.enabled != Some(false))
}

/// The estimated tokens of one message.
fn tokens(m: &Message) -> u64 {
    let bytes = serde_json::to_vec(m).map_or(0, |v| v.len() as u64);
    bytes.div_ceil(4) + 4
}

/// Drops messages from the middle of `req` until its estimate fits `context` tokens; returns
/// how many it dropped.
pub fn fit(req: &mut ChatRequest, context: u64) -> usize {
    let reserve = u64::from(req.max_completion_tokens.or(req.max_tokens).unwrap_or(0));
    let sizes: Vec<u64> = req.messages.iter().map(tokens).collect();
    let total: u64 = sizes.iter().sum::<u64>() + reserve;
    let n = sizes.len();
    if total <= context || n < 3 {
        return 0;
    }
    // Units of the middle: a message, or an assistant's tool calls with their results.
    let mut units: Vec<(usize, usize)> = Vec::new();
    let mut i = 1;
    while i < n - 1 {
        let mut end = i + 1;
        if req.messages[i].role == Role::Assistant && req.messages[i].tool_calls.is_some() {
            while end < n - 1 && req.messages[end].role == Role::Tool {
                end += 1;
            }
        }
        units.push((i, end));
        i = end;
    }
    // From the middle outwards: the unit nearest the middle goes first.
    let middle = n / 2;
    units.sort_by_key(|&(start, end)| {
        let centre = (start + end) / 2;
        centre.abs_diff(middle)
    });
    let mut over = total - context;
    let mut dropped = vec![false; n];
    for (start, end) in units {
        if over == 0 {
            break;
        }
        let size: u64 = sizes[start..end].iter().sum();
        dropped[start..end].iter_mut().for_each(|d| *d = true);
        over = over.saturating_sub(size);
    }
    if over > 0 {
        // Nothing left to drop would make it fit: sent as it is.
        return 0;
    }
    let messages: Vec<Message> = req
        .messages
        .iter()
        .zip(&dropped)
        .filter(|(_, d)| !**d)
        .map(|(m, _)| m.clone())
        .collect();
    let count = n - messages.len();
    req.messages = Arc::new(messages);
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(messages: serde_json::Value) -> ChatRequest {
        serde_json::from_value(
            json!({"model": "m", "messages": messages, "transforms": ["middle-out"]}),
        )
        .unwrap()
    }

    fn texts(req: &ChatRequest) -> Vec<String> {
        req.messages
            .iter()
            .map(|m| match &m.content {
                Some(crate::chat::Content::Text(t)) => t.clone(),
                _ => String::new(),
            })
            .collect()
    }

    #[test]
    fn drops_from_the_middle_keeping_the_ends() {
        let long = "x".repeat(400); // about 100 tokens a message
        let mut msgs = vec![json!({"role": "system", "content": "rules"})];
        for i in 0..10 {
            msgs.push(json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": format!("{i}{long}")}));
        }
        msgs.push(json!({"role": "user", "content": "last"}));
        let mut req = request(json!(msgs));
        assert!(asked(&req));
        let before = req.messages.len();
        let dropped = fit(&mut req, 700);
        assert!(dropped > 0);
        assert_eq!(req.messages.len(), before - dropped);
        let t = texts(&req);
        assert_eq!(t.first().unwrap(), "rules");
        assert_eq!(t.last().unwrap(), "last");
        let total: u64 = req.messages.iter().map(tokens).sum();
        assert!(total <= 700, "{total}");
        // The ends of the middle survive before its centre does.
        assert!(
            t.iter().any(|m| m.starts_with('0')) || t.iter().any(|m| m.starts_with('9')),
            "{t:?}"
        );
        assert!(!t.iter().any(|m| m.starts_with('5')), "{t:?}");
    }

    #[test]
    fn tool_calls_go_with_their_results_and_short_prompts_stay() {
        let long = "y".repeat(2000);
        let mut req = request(json!([
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": long},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "last"}
        ]));
        let mut short = req.clone();
        assert_eq!(fit(&mut short, 100_000), 0);
        assert_eq!(fit(&mut req, 200), 2, "the call and its result, together");
        assert_eq!(texts(&req), ["first", "ok", "last"]);
        // Too long even at its ends: left alone.
        let mut req = request(json!([
            {"role": "user", "content": long}, {"role": "assistant", "content": "a"},
            {"role": "user", "content": "b"}]));
        assert_eq!(fit(&mut req, 10), 0);
        assert_eq!(req.messages.len(), 3);
        assert!(!asked(&ChatRequest::default()));
    }
}
