//! An embeddings answer in OpenAI's shape: the public model, the usage priced.

use bytes::Bytes;

use super::{error_in_answer, unusable_answer, StreamContext};
use crate::chat::Usage;
use crate::embeddings::{encode_vector, usage, Embeddings, EmbeddingsAnswer};
use crate::provider::ProviderKind;
use crate::Error;

/// The answer for the client and its usage. An answer the gateway cannot read is a 502 with
/// the body as `raw`; one that holds an `error` object is that error.
pub(super) fn render(
    bytes: &[u8],
    ctx: &StreamContext,
    kind: ProviderKind,
    e: &Embeddings,
) -> Result<(Bytes, Usage), Error> {
    // Not an answer: the provider's error, if that is what it holds, else a 502 with the body.
    let garbage = |why: String| {
        let error = serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .is_some_and(|v| v.get("error").is_some_and(|e| e.is_object()));
        if error {
            error_in_answer(ctx, bytes)
        } else {
            unusable_answer(ctx, bytes, why)
        }
    };
    let mut answer = match kind {
        ProviderKind::Gemini | ProviderKind::Bedrock | ProviderKind::Vertex => {
            let (vectors, tokens) = match kind {
                ProviderKind::Gemini => (
                    crate::provider::gemini::embeddings::vectors(bytes).map_err(garbage)?,
                    None,
                ),
                ProviderKind::Vertex => {
                    crate::provider::vertex::embeddings_vectors(bytes).map_err(garbage)?
                }
                _ => crate::provider::bedrock::embeddings::vectors(bytes).map_err(garbage)?,
            };
            let format = e.format();
            let vectors = vectors.iter().map(|v| encode_vector(v, format)).collect();
            let tokens = tokens.unwrap_or_else(|| e.input().estimated_tokens());
            EmbeddingsAnswer::new(vectors, "", usage(tokens))?
        }
        _ => serde_json::from_slice::<EmbeddingsAnswer>(bytes).map_err(|err| {
            garbage(format!(
                "the provider's embeddings answer is malformed ({err})"
            ))
        })?,
    };
    if answer.data.len() != e.input().len() {
        return Err(garbage(format!(
            "the provider answered {} vectors for {} inputs",
            answer.data.len(),
            e.input().len()
        )));
    }
    if answer.usage.prompt_tokens == 0 {
        answer.usage = usage(e.input().estimated_tokens());
    }
    answer.usage.completion_tokens = 0;
    answer.usage.total_tokens = answer.usage.prompt_tokens;
    if let Some(p) = ctx.pricing {
        answer.usage = p.price(std::mem::take(&mut answer.usage));
    }
    answer.model = ctx.model.to_string();
    answer.id = Some(ctx.id.as_str().to_owned());
    let json = serde_json::to_vec(&answer)
        .map_err(|err| Error::internal(format!("cannot serialise the answer: {err}")))?;
    Ok((Bytes::from(json), answer.usage))
}
