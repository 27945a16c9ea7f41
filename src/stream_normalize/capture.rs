//! The answer's text, kept for the request's spans when it asks
//! ([`CaptureContent`](crate::facts::CaptureContent)): read from what goes to the client, in
//! any of the shapes the core answers in (Chat Completions, Anthropic Messages, Responses).

use serde_json::Value;

/// The text of a whole answer.
pub(crate) fn whole(json: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(json).ok()?;
    let mut text = String::new();
    if let Some(content) = v
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
    {
        text.push_str(content);
    } else if let Some(blocks) = v.get("content").and_then(Value::as_array) {
        // Anthropic Messages: the text blocks.
        for b in blocks.iter().filter(|b| b["type"] == "text") {
            text.push_str(b["text"].as_str().unwrap_or_default());
        }
    } else if let Some(items) = v.get("output").and_then(Value::as_array) {
        // Responses: the output messages' text parts.
        for part in items
            .iter()
            .filter(|i| i["type"] == "message")
            .filter_map(|i| i["content"].as_array())
            .flatten()
            .filter(|p| p["type"] == "output_text")
        {
            text.push_str(part["text"].as_str().unwrap_or_default());
        }
    } else {
        return None;
    }
    Some(text)
}

/// A stream's text, gathered from the events going to the client (whole events: the stream
/// writes each event at once).
#[derive(Debug, Default)]
pub(crate) struct Captured {
    pub(crate) text: String,
}

impl Captured {
    /// Reads the text deltas of `sse`: a chat chunk's `choices[0].delta.content`, Anthropic's
    /// `content_block_delta` of text, Responses' `response.output_text.delta`.
    pub(crate) fn feed_sse(&mut self, sse: &[u8]) {
        for line in sse.split(|&b| b == b'\n') {
            let Some(data) = line.strip_prefix(b"data:") else {
                continue;
            };
            let Ok(v) = serde_json::from_slice::<Value>(data) else {
                continue;
            };
            let delta = match v.get("type").and_then(Value::as_str) {
                Some("content_block_delta") => v.pointer("/delta/text"),
                Some("response.output_text.delta") => v.get("delta"),
                _ => v.pointer("/choices/0/delta/content"),
            };
            if let Some(t) = delta.and_then(Value::as_str) {
                self.text.push_str(t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_answers_in_each_shape() {
        let chat = br#"{"choices":[{"message":{"role":"assistant","content":"Hi"}}]}"#;
        assert_eq!(whole(chat).as_deref(), Some("Hi"));
        let messages = br#"{"content":[{"type":"thinking","thinking":"x"},{"type":"text","text":"Hel"},{"type":"text","text":"lo"}]}"#;
        assert_eq!(whole(messages).as_deref(), Some("Hello"));
        let responses = br#"{"output":[{"type":"reasoning"},{"type":"message","content":[{"type":"output_text","text":"Yo"}]}]}"#;
        assert_eq!(whole(responses).as_deref(), Some("Yo"));
        assert_eq!(whole(b"{}"), None);
        assert_eq!(whole(b"not json"), None);
    }

    #[test]
    fn stream_deltas_in_each_shape() {
        let mut c = Captured::default();
        c.feed_sse(b"data: {\"choices\":[{\"delta\":{\"content\":\"He\"}}]}\n\ndata: {\"choices\":[{\"delta\":{}}]}\n\ndata: [DONE]\n\n");
        c.feed_sse(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"ll\"}}\n\n");
        c.feed_sse(b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"o\"}\n\n");
        c.feed_sse(b": keepalive\n\n");
        assert_eq!(c.text, "Hello");
    }
}
