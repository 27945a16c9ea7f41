//! The bundled proxy: `cargo run --release --example proxy [-- --config FILE]`.
//!
//! Without `--config` it runs on the embedded default: 127.0.0.1:8080, every well-known
//! provider whose key variable is set, plus a local Ollama. `RUST_LOG` sets the log level.

use std::path::PathBuf;
use std::process::ExitCode;

use modelgate::proxy::{serve, shutdown_signal, Config, Proxy};
use tracing_subscriber::EnvFilter;

/// mimalloc, not the system allocator: a gateway allocates and frees per request and per
/// stream event from every worker thread, and glibc's malloc costs it more
/// (`docs/performance.md` says how to measure it). The library itself leaves the choice to the
/// binary that embeds it.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: proxy [--config FILE]\n\n\
Runs the modelgate proxy. Without --config it uses the embedded default: it listens on\n\
127.0.0.1:8080, enables each well-known provider whose key variable is set (OPENAI_API_KEY,\n\
ANTHROPIC_API_KEY, GEMINI_API_KEY, OPENROUTER_API_KEY, GROQ_API_KEY, ...) and a local Ollama.";

#[tokio::main]
async fn main() -> ExitCode {
    // Colours only for a terminal: escape codes in a log file cost as much as the line.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();

    let mut args = std::env::args().skip(1);
    let mut config_path: Option<PathBuf> = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => match args.next() {
                Some(p) => config_path = Some(PathBuf::from(p)),
                None => return fail("--config needs a file"),
            },
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return fail(&format!("unknown argument `{other}`\n\n{USAGE}")),
        }
    }

    let env = |k: &str| std::env::var(k).ok();
    let config = match &config_path {
        Some(path) => match Config::from_file(path) {
            Ok(c) => c,
            Err(e) => return fail(&e.to_string()),
        },
        None => Config::embedded_default(&env),
    };
    let options = match config.serve_options() {
        Ok(o) => o,
        Err(e) => return fail(&e.to_string()),
    };
    let proxy = match Proxy::from_config(&config, &env).await {
        Ok(p) => p,
        Err(e) => return fail(&e.to_string()),
    };
    match &config_path {
        Some(p) => tracing::info!(config = %p.display(), "configuration loaded"),
        None => tracing::info!("no --config: running on the embedded default"),
    }
    for p in proxy.catalog().providers() {
        tracing::info!(
            provider = p.name(),
            kind = p.kind().as_str(),
            base_url = %p.display_url(),
            key = if p.has_key() { "set" } else { "none" },
            "provider live"
        );
    }
    tracing::info!(
        models = proxy.catalog().models().len(),
        "catalog ready; any `<provider>/<model>` is passed through"
    );

    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => return fail(&format!("cannot listen on {}: {e}", config.listen)),
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    if proxy.is_anonymous() {
        tracing::info!("listening on http://{addr} (no keys: unauthenticated, loopback only)");
    } else {
        let state = match config.redis_url() {
            Some(_) => "the shared Redis ([state] redis_url)".to_owned(),
            None => config.state_dir().display().to_string(),
        };
        tracing::info!(
            management = proxy.has_management(),
            state = %state,
            "listening on http://{addr} (client keys required)"
        );
    }
    let recorder = proxy.recorder().clone();
    #[cfg(feature = "otel")]
    let telemetry = proxy.telemetry().cloned();
    let served = serve(listener, proxy.router(), shutdown_signal(), options).await;
    // Every usage record of the requests that ran is written before the process exits.
    // A sink still failing after 30 s (the shared Redis down, say): what it has not taken
    // goes to the spill file of the state dir, written at the next start.
    if recorder.close(std::time::Duration::from_secs(30)).await {
        tracing::info!(stats = ?recorder.stats(), "usage records written");
    } else {
        tracing::error!(stats = ?recorder.stats(), "usage records still queued: neither written nor spilled");
    }
    // The last spans go to the collector (bounded: a collector that is down does not hold
    // the exit up).
    #[cfg(feature = "otel")]
    if let Some(t) = telemetry {
        if tokio::time::timeout(std::time::Duration::from_secs(10), t.flush())
            .await
            .is_ok()
        {
            tracing::info!(stats = ?t.stats(), "trace spans exported");
        }
    }
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("modelgate: {msg}");
    ExitCode::from(2)
}
