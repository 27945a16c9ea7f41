//! An existing axum app that mounts the gateway stack under `/llm`, next to its own routes.
//!
//! `cargo run --example axum_embed`, then
//! `curl localhost:3000/llm/v1/chat/completions -d '{"model":"ollama/llama3.2","messages":[{"role":"user","content":"hi"}]}'`
//! (or `openai/gpt-4o-mini` with `OPENAI_API_KEY` set). The app's own routes stay its own.

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use modelgate::provider::{Provider, ProviderKind};
use modelgate::usage::{JsonLinesSink, Recorder, SpendLedger};
use modelgate::{
    Catalog, DecodeLayer, Dispatch, FallbackLayer, ModelRewriteLayer, StreamNormalizeLayer,
    UsageLayer,
};
use tower::ServiceBuilder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // The providers this app may use: a local Ollama, and OpenAI when a key is set.
    let mut catalog = Catalog::new();
    catalog.add_provider(Arc::new(
        Provider::builder("ollama", ProviderKind::OpenAi, "http://127.0.0.1:11434/v1").build()?,
    ))?;
    if let Ok(key) = std::env::var("OPENAI_API_KEY") {
        catalog.add_provider(Arc::new(
            Provider::builder("openai", ProviderKind::OpenAi, "https://api.openai.com/v1")
                .api_key(Some(key))
                .build()?,
        ))?;
    }
    let catalog = Arc::new(catalog);

    // Usage records (tokens, cost, attempts) appended to a JSON Lines file.
    let sink = Arc::new(JsonLinesSink::open(std::path::Path::new(
        "llm-usage.jsonl",
    ))?);
    let recorder = Recorder::start(vec![sink], Arc::new(SpendLedger::new()), 4096)?;

    // The gateway onion: decode → model rewrite → usage → fallback → stream normalisation →
    // dispatch.
    let gateway = ServiceBuilder::new()
        .layer(DecodeLayer::new().max_body_bytes(8 << 20))
        .layer(ModelRewriteLayer::new(catalog.clone()))
        .layer(UsageLayer::new(recorder.clone()))
        .layer(FallbackLayer::new())
        .layer(StreamNormalizeLayer::new())
        .service(Dispatch::new(catalog.providers()));

    // The app's own routes, and the gateway under a prefix. `Error = Infallible`, so no
    // HandleErrorLayer is needed: typed errors are already envelope responses.
    let llm = Router::new().route_service("/v1/chat/completions", gateway);
    let app = Router::new()
        .route(
            "/",
            get(|| async { "my app: the LLM gateway is under /llm" }),
        )
        .route("/api/status", get(|| async { "ok" }))
        .nest("/llm", llm);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    // Every record written before exit.
    recorder.flush().await;
    Ok(())
}
