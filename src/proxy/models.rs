//! `GET /v1/models`, OpenRouter-shaped: prices as strings in USD per token, and each
//! endpoint's live health (status, uptime over the recent outcomes, latency, throughput).

use bytes::Bytes;
use serde_json::{json, Value};

use crate::model_rewrite::Catalog;

/// USD per million tokens → USD per token, as a decimal string without float noise.
pub(crate) fn per_token(per_million: f64) -> String {
    let s = format!("{:.15}", per_million / 1_000_000.0);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-0" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

pub(crate) fn render(catalog: &Catalog) -> Bytes {
    let now = tokio::time::Instant::now();
    let data: Vec<Value> = catalog
        .models()
        .iter()
        .map(|m| {
            let cheapest = m
                .endpoints
                .iter()
                .min_by(|a, b| {
                    (a.pricing.prompt_per_million + a.pricing.completion_per_million).total_cmp(
                        &(b.pricing.prompt_per_million + b.pricing.completion_per_million),
                    )
                })
                .expect("a catalog model has at least one endpoint");
            let endpoints: Vec<Value> = m
                .endpoints
                .iter()
                .map(|e| {
                    let h = e.health.snapshot(now);
                    json!({
                        "provider_name": e.provider.name(),
                        "model": &*e.model,
                        "context_length": e.context_length.or(m.context_length),
                        "max_completion_tokens": e.max_output_tokens,
                        "pricing": {
                            "prompt": per_token(e.pricing.prompt_per_million),
                            "completion": per_token(e.pricing.completion_per_million),
                        },
                        "supported_parameters": e.supported_parameters,
                        "status": if h.cooling { "cooling" } else { "ok" },
                        "uptime": (h.samples > 0).then(|| ((1.0 - h.error_rate) * 1000.0).round() / 10.0),
                        "latency_ms": h.latency.map(|d| d.as_millis() as u64),
                        "latency_p95_ms": h.latency_p95.map(|d| d.as_millis() as u64),
                        "throughput": h.throughput.map(|t| (t * 10.0).round() / 10.0),
                    })
                })
                .collect();
            json!({
                "id": &*m.id,
                "name": m.name,
                "object": "model",
                "created": 0,
                "owned_by": m.id.split('/').next().unwrap_or(""),
                "context_length": m.context_length,
                "pricing": {
                    "prompt": per_token(cheapest.pricing.prompt_per_million),
                    "completion": per_token(cheapest.pricing.completion_per_million),
                    "request": "0",
                    "image": "0",
                },
                "top_provider": {
                    "context_length": cheapest.context_length.or(m.context_length),
                    "max_completion_tokens": cheapest.max_output_tokens,
                },
                "endpoints": endpoints,
            })
        })
        .collect();
    Bytes::from(serde_json::to_vec(&json!({ "object": "list", "data": data })).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::per_token;

    #[test]
    fn prices_per_token_as_strings() {
        assert_eq!(per_token(3.0), "0.000003");
        assert_eq!(per_token(15.0), "0.000015");
        assert_eq!(per_token(0.27), "0.00000027");
        assert_eq!(per_token(0.0), "0");
        assert_eq!(per_token(1.1), "0.0000011");
    }
}
