//! `GET /v1/models`, OpenRouter-shaped: prices as strings in USD per token, and each
//! endpoint's live health (status, uptime over the recent outcomes, latency, throughput).

use bytes::Bytes;
use serde_json::{json, Value};

use crate::facts::Pricing;
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

/// An endpoint's prices as OpenRouter lists them; the cache prices only where configured
/// (`input_cache_write_1h`, the one-hour write price, is the gateway's own key).
fn pricing(p: &Pricing) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    out.insert("prompt".into(), per_token(p.prompt_per_million).into());
    out.insert(
        "completion".into(),
        per_token(p.completion_per_million).into(),
    );
    for (name, price) in [
        ("input_cache_read", p.cache_read_per_million),
        ("input_cache_write", p.cache_write_per_million),
        ("input_cache_write_1h", p.cache_write_1h_per_million),
    ] {
        if let Some(price) = price {
            out.insert(name.into(), per_token(price).into());
        }
    }
    out
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
                        "pricing": pricing(&e.pricing),
                        "supported_parameters": e.supported_parameters,
                        "status": if h.cooling { "cooling" } else { "ok" },
                        "uptime": (h.samples > 0).then(|| ((1.0 - h.error_rate) * 1000.0).round() / 10.0),
                        "latency_ms": h.latency.map(|d| d.as_millis() as u64),
                        "latency_p95_ms": h.latency_p95.map(|d| d.as_millis() as u64),
                        "throughput": h.throughput.map(|t| (t * 10.0).round() / 10.0),
                    })
                })
                .collect();
            let mut listed_pricing = pricing(&cheapest.pricing);
            listed_pricing.insert("request".into(), "0".into());
            listed_pricing.insert("image".into(), "0".into());
            json!({
                "id": &*m.id,
                "name": m.name,
                "object": "model",
                "created": 0,
                "owned_by": m.id.split('/').next().unwrap_or(""),
                "context_length": m.context_length,
                "pricing": listed_pricing,
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
