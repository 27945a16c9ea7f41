//! Embeddings through Bedrock's `InvokeModel`, in the model family's own body:
//!
//! - Amazon Titan (`amazon.titan-embed-…`): `{"inputText", "dimensions"}`, one text a request
//!   (a list of more is a 400 naming `input`); the answer counts its tokens
//!   (`inputTextTokenCount`).
//! - Cohere (`cohere.embed-…`): `{"texts", "input_type", "embedding_types": ["float"]}`, the
//!   request's `input_type` or `search_document`; `dimensions` as `output_dimension`. Cohere
//!   counts no tokens here: the usage is estimated.
//!
//! Other models are refused with a 400 (fallback moves on). Token ids cannot be sent.

use serde_json::{json, Value};

use super::bad;
use crate::embeddings::Embeddings;
use crate::Error;

/// The `InvokeModel` body for `model`.
pub(crate) fn request(e: &Embeddings, model: &str) -> Result<Value, Error> {
    let Some(texts) = e.input().texts() else {
        return Err(bad(
            "input",
            "token ids cannot be embedded by a Bedrock model: send the input as text",
        ));
    };
    let dims = e.request.dimensions;
    if model.contains("titan-embed") {
        let [text] = texts[..] else {
            return Err(bad(
                "input",
                format!(
                    "Titan embeds one text a request, and {} were sent: send them one at a time",
                    texts.len()
                ),
            ));
        };
        let mut body = json!({ "inputText": text });
        if let Some(d) = dims {
            body["dimensions"] = json!(d);
        }
        return Ok(body);
    }
    if model.contains("cohere.embed") {
        let input_type = e
            .request
            .extra
            .get("input_type")
            .and_then(Value::as_str)
            .unwrap_or("search_document");
        let mut body = json!({
            "texts": texts,
            "input_type": input_type,
            "embedding_types": ["float"],
        });
        if let Some(d) = dims {
            body["output_dimension"] = json!(d);
        }
        return Ok(body);
    }
    Err(bad(
        "model",
        format!("`{model}` is not a Bedrock embeddings model the gateway speaks to (Amazon Titan, Cohere)"),
    ))
}

/// The vectors of an `InvokeModel` embeddings answer, and its token count when it has one.
pub(crate) fn vectors(bytes: &[u8]) -> Result<(Vec<Vec<f32>>, Option<u64>), String> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("the provider's embeddings answer is malformed ({e})"))?;
    let floats = |v: &Value| -> Option<Vec<f32>> {
        v.as_array()?
            .iter()
            .map(|x| x.as_f64().map(|f| f as f32))
            .collect()
    };
    let bad_answer = || "the provider's embeddings answer holds no vectors".to_owned();
    if let Some(one) = v.get("embedding") {
        let tokens = v.get("inputTextTokenCount").and_then(Value::as_u64);
        return Ok((vec![floats(one).ok_or_else(bad_answer)?], tokens));
    }
    let list = match v.get("embeddings") {
        Some(Value::Object(by_type)) => by_type.get("float"),
        other => other,
    };
    let list = list.and_then(Value::as_array).ok_or_else(bad_answer)?;
    let vectors = list
        .iter()
        .map(|x| floats(x).ok_or_else(bad_answer))
        .collect::<Result<_, _>>()?;
    Ok((vectors, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embeddings::EmbeddingsRequest;

    fn read(body: &str) -> Embeddings {
        Embeddings::new(serde_json::from_str::<EmbeddingsRequest>(body).unwrap()).1
    }

    #[test]
    fn titan_takes_one_text_and_cohere_several() {
        let one = read(r#"{"model":"m","input":"hi","dimensions":256}"#);
        assert_eq!(
            request(&one, "amazon.titan-embed-text-v2:0").unwrap(),
            json!({"inputText": "hi", "dimensions": 256})
        );
        let two = read(r#"{"model":"m","input":["a","b"],"input_type":"search_query"}"#);
        let e = request(&two, "amazon.titan-embed-text-v2:0").unwrap_err();
        assert_eq!(e.param(), Some("input"));
        assert_eq!(
            request(&two, "cohere.embed-english-v3").unwrap(),
            json!({"texts": ["a", "b"], "input_type": "search_query", "embedding_types": ["float"]})
        );
        assert_eq!(
            request(&two, "meta.llama3").unwrap_err().param(),
            Some("model")
        );
        assert_eq!(
            vectors(br#"{"embedding":[0.5,1],"inputTextTokenCount":3}"#).unwrap(),
            (vec![vec![0.5, 1.0]], Some(3))
        );
        assert_eq!(
            vectors(br#"{"embeddings":{"float":[[1],[2]]},"id":"x"}"#).unwrap(),
            (vec![vec![1.0], vec![2.0]], None)
        );
        assert_eq!(
            vectors(br#"{"embeddings":[[1]]}"#).unwrap(),
            (vec![vec![1.0]], None)
        );
        assert!(vectors(br#"{"embeddings":"x"}"#).is_err());
    }
}
