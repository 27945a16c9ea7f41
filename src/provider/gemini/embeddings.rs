//! Embeddings through Gemini's `batchEmbedContents`: one request per input text, the model
//! named in each; `dimensions` is `outputDimensionality`. Token ids cannot be sent (Gemini
//! takes text only).

use serde::Deserialize;
use serde_json::{json, Value};

use crate::embeddings::Embeddings;
use crate::Error;

/// The `batchEmbedContents` body for `model`.
pub(crate) fn request(e: &Embeddings, model: &str) -> Result<Value, Error> {
    let Some(texts) = e.input().texts() else {
        return Err(super::bad(
            "input",
            "token ids cannot be embedded by a Gemini model: send the input as text",
        ));
    };
    let name = format!("models/{model}");
    let requests: Vec<Value> = texts
        .into_iter()
        .map(|text| {
            let mut r = json!({"model": name, "content": {"parts": [{"text": text}]}});
            if let Some(d) = e.request.dimensions {
                r["outputDimensionality"] = json!(d);
            }
            r
        })
        .collect();
    Ok(json!({ "requests": requests }))
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    embeddings: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    values: Vec<f32>,
}

/// The vectors of a `batchEmbedContents` answer, in the order of the inputs.
pub(crate) fn vectors(bytes: &[u8]) -> Result<Vec<Vec<f32>>, String> {
    let a: Answer = serde_json::from_slice(bytes)
        .map_err(|e| format!("the provider's embeddings answer is malformed ({e})"))?;
    Ok(a.embeddings.into_iter().map(|v| v.values).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embeddings::EmbeddingsRequest;

    fn read(body: &str) -> Embeddings {
        Embeddings::new(serde_json::from_str::<EmbeddingsRequest>(body).unwrap()).1
    }

    #[test]
    fn each_text_is_one_request_and_tokens_are_refused() {
        let e = read(r#"{"model":"m","input":["a","b"],"dimensions":3}"#);
        let body = request(&e, "text-embedding-004").unwrap();
        assert_eq!(
            body,
            json!({"requests": [
                {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 3},
                {"model": "models/text-embedding-004", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 3},
            ]})
        );
        let e = read(r#"{"model":"m","input":[1,2]}"#);
        assert_eq!(request(&e, "x").unwrap_err().param(), Some("input"));
        assert_eq!(
            vectors(br#"{"embeddings":[{"values":[0.5,1]},{"values":[2]}]}"#).unwrap(),
            vec![vec![0.5, 1.0], vec![2.0]]
        );
    }
}
