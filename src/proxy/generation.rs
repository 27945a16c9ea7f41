//! `GET /v1/generation?id=gen-…`: the record of one of the calling key's requests, in
//! OpenRouter's shape (`total_cost`, `tokens_prompt`, `provider_responses`, `created_at` in
//! RFC 3339, …) followed by the gateway's own fields (`cost`, `prompt_tokens`, `attempts`, …).

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use super::keys::rfc3339;
use crate::usage::{AttemptRecord, Recorder, UsageRecord};
use crate::Error;

#[derive(Serialize)]
struct Generation<'a> {
    data: Data<'a>,
}

/// OpenRouter's generation object, then the record's own fields under their names.
#[derive(Serialize)]
pub(super) struct Data<'a> {
    id: &'a str,
    upstream_id: Option<()>,
    total_cost: f64,
    usage: f64,
    cache_discount: Option<()>,
    upstream_inference_cost: Option<()>,
    created_at: String,
    model: &'a str,
    app_id: Option<()>,
    streamed: bool,
    cancelled: bool,
    provider_name: Option<&'a str>,
    latency: Option<u64>,
    moderation_latency: Option<()>,
    generation_time: Option<u64>,
    finish_reason: Option<&'a str>,
    native_finish_reason: Option<()>,
    tokens_prompt: u64,
    tokens_completion: u64,
    native_tokens_prompt: u64,
    native_tokens_completion: u64,
    native_tokens_completion_images: Option<()>,
    native_tokens_reasoning: u64,
    native_tokens_cached: u64,
    num_media_prompt: Option<()>,
    num_input_audio_prompt: Option<()>,
    num_media_completion: Option<()>,
    num_search_results: Option<()>,
    num_fetches: Option<()>,
    origin: &'a str,
    is_byok: bool,
    http_referer: Option<&'a str>,
    external_user: Option<&'a str>,
    user_agent: Option<()>,
    api_type: &'static str,
    data_region: &'static str,
    preset_id: Option<()>,
    router: Option<()>,
    service_tier: Option<()>,
    web_search_engine: Option<()>,
    workspace_id: Option<()>,
    session_id: Option<&'a str>,
    provider_responses: Vec<ProviderResponse<'a>>,
    // The gateway's own.
    key_id: Option<&'a str>,
    requested_model: &'a str,
    provider: Option<&'a str>,
    upstream_model: Option<&'a str>,
    prompt_tokens: u64,
    completion_tokens: u64,
    cached_tokens: u64,
    cache_write_tokens: u64,
    reasoning_tokens: u64,
    cost: Option<f64>,
    estimated: bool,
    status: Option<u16>,
    error: Option<&'a str>,
    latency_ms: u64,
    time_to_first_token_ms: Option<u64>,
    title: Option<&'a str>,
    categories: Option<&'a str>,
    user: Option<&'a str>,
    dialect: crate::Dialect,
    attempts: &'a [AttemptRecord],
}

/// One attempt, as OpenRouter lists the providers it tried.
#[derive(Serialize)]
struct ProviderResponse<'a> {
    provider_name: &'a str,
    model_permaslug: &'a str,
    status: Option<u16>,
    latency: u64,
    is_byok: bool,
}

impl<'a> Data<'a> {
    pub(super) fn of(r: &'a UsageRecord) -> Self {
        let cost = r.cost.unwrap_or(0.0);
        Data {
            id: &r.id,
            upstream_id: None,
            total_cost: cost,
            usage: cost,
            cache_discount: None,
            upstream_inference_cost: None,
            created_at: rfc3339(r.created_at).unwrap_or_default(),
            model: &r.model,
            app_id: None,
            streamed: r.streamed,
            cancelled: r.cancelled,
            provider_name: r.provider.as_deref(),
            latency: r.time_to_first_token_ms,
            moderation_latency: None,
            generation_time: r
                .time_to_first_token_ms
                .map(|first| r.latency_ms.saturating_sub(first)),
            finish_reason: r.finish_reason.as_deref(),
            native_finish_reason: None,
            tokens_prompt: r.prompt_tokens,
            tokens_completion: r.completion_tokens,
            native_tokens_prompt: r.prompt_tokens,
            native_tokens_completion: r.completion_tokens,
            native_tokens_completion_images: None,
            native_tokens_reasoning: r.reasoning_tokens,
            native_tokens_cached: r.cached_tokens,
            num_media_prompt: None,
            num_input_audio_prompt: None,
            num_media_completion: None,
            num_search_results: None,
            num_fetches: None,
            origin: r.referer.as_deref().unwrap_or(""),
            is_byok: false,
            http_referer: r.referer.as_deref(),
            external_user: r.user.as_deref(),
            user_agent: None,
            api_type: "completions",
            data_region: "global",
            preset_id: None,
            router: None,
            service_tier: None,
            web_search_engine: None,
            workspace_id: None,
            session_id: r.session_id.as_deref(),
            provider_responses: r
                .attempts
                .iter()
                .map(|a| ProviderResponse {
                    provider_name: &a.provider,
                    model_permaslug: &a.model,
                    status: a.status,
                    latency: a.latency_ms,
                    is_byok: false,
                })
                .collect(),
            key_id: r.key_id.as_deref(),
            requested_model: &r.requested_model,
            provider: r.provider.as_deref(),
            upstream_model: r.upstream_model.as_deref(),
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            cached_tokens: r.cached_tokens,
            cache_write_tokens: r.cache_write_tokens,
            reasoning_tokens: r.reasoning_tokens,
            cost: r.cost,
            estimated: r.estimated,
            status: r.status,
            error: r.error.as_deref(),
            latency_ms: r.latency_ms,
            time_to_first_token_ms: r.time_to_first_token_ms,
            title: r.title.as_deref(),
            categories: r.categories.as_deref(),
            user: r.user.as_deref(),
            dialect: r.dialect,
            attempts: &r.attempts,
        }
    }
}

/// Answers `GET /v1/generation` for the key `principal`: another key's record is as unknown as
/// a missing one.
pub(crate) async fn generation(
    recorder: &Recorder,
    principal: &crate::auth::Principal,
    query: Option<&str>,
) -> Response<Full<Bytes>> {
    let id = query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("id="))
        .unwrap_or("");
    if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Error::invalid_request("give the generation id as `?id=gen-…`", Some("id".into()))
            .into_response();
    }
    match recorder.generation(id).await {
        Ok(Some(r)) if r.key_id.as_deref() == Some(principal.id.as_str()) => {
            super::generations::json(&Generation { data: Data::of(&r) })
        }
        Ok(_) => Error::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            format!("no generation `{id}` for this key"),
        )
        .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "generation lookup failed");
            Error::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "the usage store cannot be read right now",
            )
            .into_response()
        }
    }
}
