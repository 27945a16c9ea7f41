//! The spine alone, served by hyper: decode, model rewrite, stream normalisation and dispatch to
//! one OpenAI-compatible upstream. No keys, no rate limits, no metering: the smallest gateway
//! the crate makes, and what the benchmarks measure as "the spine" against the bare hyper
//! proxy. With `--endpoints N` (N > 1) the model gets N endpoints on that upstream and the
//! fallback layer walks them: the spine plus routing. With `--key KEY` the auth and rate-limit
//! layers go in front: only `KEY` is accepted, limited to `--rpm N` requests a minute (default
//! 100,000,000, far above any load): the spine plus the edge layers.
//!
//! `cargo run --release --example spine -- [--listen ADDR] [--upstream URL] [--model ID
//! [--upstream-model NAME] [--endpoints N]] [--key KEY [--rpm N]]`
//!
//! Defaults: `127.0.0.1:8080`, a local Ollama (`http://127.0.0.1:11434/v1`), and no catalog
//! model (any `upstream/<model>` is passed through). `--model ID` also serves `ID` itself, sent
//! upstream as `NAME` (default `ID`). `UPSTREAM_API_KEY`, when set, is the upstream's bearer
//! key. Without keys the gateway is open to whoever reaches it, so it only listens on a
//! loopback address.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use modelgate::auth::{AuthLayer, KeyRecord, LocalKeyStore, RateLimits};
use modelgate::body::GatewayBody;
use modelgate::facts::Pricing;
use modelgate::model_rewrite::{Endpoint, Model};
use modelgate::provider::{Provider, ProviderKind};
use modelgate::rate_limit::RateLimitLayer;
use modelgate::{
    Catalog, DecodeLayer, Dispatch, FallbackLayer, ModelRewriteLayer, StreamNormalizeLayer,
};
use tower::{Service, ServiceBuilder};

/// mimalloc, not the system allocator: a gateway allocates and frees per request and per
/// stream event from every worker thread, and glibc's malloc costs it more
/// (`docs/performance.md` says how to measure it). The library itself leaves the choice to the
/// binary that embeds it.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: spine [--listen ADDR] [--upstream URL] [--model ID \
[--upstream-model NAME] [--endpoints N]] [--key KEY [--rpm N]]\n\n\
Serves the gateway's spine (decode, model rewrite, stream normalisation, dispatch) in front of\n\
one OpenAI-compatible upstream, provider name `upstream`. With --endpoints N > 1, model ID has\n\
N endpoints there (providers upstream, upstream-2, ...) and the fallback layer walks them.\n\
With --key KEY, the auth and rate-limit layers go in front: KEY is the only key accepted, with\n\
--rpm N requests a minute (default 100000000). Loopback addresses only.";

struct Args {
    listen: SocketAddr,
    upstream: String,
    model: Option<String>,
    upstream_model: Option<String>,
    endpoints: usize,
    key: Option<String>,
    rpm: Option<u32>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        upstream: "http://127.0.0.1:11434/v1".into(),
        model: None,
        upstream_model: None,
        endpoints: 1,
        key: None,
        rpm: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => {
                let v = value()?;
                a.listen = v
                    .parse()
                    .map_err(|e| format!("--listen `{v}` is not an address: {e}"))?;
            }
            "--upstream" => a.upstream = value()?,
            "--model" => a.model = Some(value()?),
            "--upstream-model" => a.upstream_model = Some(value()?),
            "--endpoints" => {
                let v = value()?;
                a.endpoints = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=16).contains(n))
                    .ok_or_else(|| format!("--endpoints `{v}`: a number from 1 to 16"))?;
            }
            "--key" => a.key = Some(value()?),
            "--rpm" => {
                let v = value()?;
                let n: u32 = v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("--rpm `{v}`: a positive whole number"))?;
                a.rpm = Some(n);
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`\n\n{USAGE}")),
        }
    }
    if a.model.is_none() && (a.upstream_model.is_some() || a.endpoints > 1) {
        return Err("--upstream-model and --endpoints need --model".into());
    }
    if a.key.is_none() && a.rpm.is_some() {
        return Err("--rpm needs --key".into());
    }
    if !a.listen.ip().is_loopback() {
        return Err(format!(
            "{} is not a loopback address: the spine is for trying and measuring, so it only \
             serves this machine (run the proxy, with [[keys]], to serve others)",
            a.listen
        ));
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("spine: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spine: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let key = std::env::var("UPSTREAM_API_KEY").ok();
    let mut providers = Vec::new();
    for n in 1..=args.endpoints {
        let name = if n == 1 {
            "upstream".to_owned()
        } else {
            format!("upstream-{n}")
        };
        providers.push(Arc::new(
            Provider::builder(&name, ProviderKind::OpenAi, &args.upstream)
                .api_key(key.clone())
                .build()?,
        ));
    }
    let mut catalog = Catalog::new();
    for p in &providers {
        catalog.add_provider(p.clone())?;
    }
    if let Some(id) = &args.model {
        let upstream_model = args.upstream_model.as_deref().unwrap_or(id);
        catalog.add_model(Model {
            id: Arc::from(id.as_str()),
            name: id.clone(),
            context_length: None,
            endpoints: providers
                .iter()
                .map(|p| {
                    // Nothing is metered here: prices only order the endpoints.
                    let free = Pricing::new(0.0, 0.0);
                    Endpoint::new(p.clone(), upstream_model, free)
                })
                .collect(),
            hedge: None,
            info: Default::default(),
        })?;
    }
    let catalog = Arc::new(catalog);
    let dispatch = Dispatch::new(&providers);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!(
        "spine: listening on http://{} → {} ({} endpoint{})",
        listener.local_addr()?,
        args.upstream,
        args.endpoints,
        if args.endpoints == 1 {
            ""
        } else {
            "s, fallback"
        }
    );
    if args.key.is_some() {
        println!("spine: auth and rate limits on: one key");
    }
    if args.endpoints == 1 {
        let gateway = ServiceBuilder::new()
            .layer(DecodeLayer::new())
            .layer(ModelRewriteLayer::new(catalog))
            .layer(StreamNormalizeLayer::new())
            .service(dispatch);
        serve_edge(listener, &args, gateway).await
    } else {
        let gateway = ServiceBuilder::new()
            .layer(DecodeLayer::new())
            .layer(ModelRewriteLayer::new(catalog))
            .layer(FallbackLayer::new())
            .layer(StreamNormalizeLayer::new())
            .service(dispatch);
        serve_edge(listener, &args, gateway).await
    }
}

/// Serves `gateway`, behind the auth and rate-limit layers when `--key` is given.
async fn serve_edge<S, B>(
    listener: tokio::net::TcpListener,
    args: &Args,
    gateway: S,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    S: Service<Request<GatewayBody<Incoming>>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Some(key) = &args.key else {
        // The request body as the rate limiter would pass it on.
        let gateway = ServiceBuilder::new()
            .map_request(|req: Request<Incoming>| req.map(GatewayBody::inner))
            .service(gateway);
        return serve(listener, gateway).await;
    };
    let mut record = KeyRecord::from_config("spine", key);
    record.rate_limits =
        RateLimits::default().with_requests_per_minute(args.rpm.unwrap_or(100_000_000));
    let mut keys = LocalKeyStore::in_memory();
    keys.add(record)?;
    let edge = ServiceBuilder::new()
        .layer(AuthLayer::new(Arc::new(keys)))
        .layer(RateLimitLayer::in_memory())
        .service(gateway);
    serve(listener, edge).await
}

/// Serves `gateway` on `listener`, HTTP/1.1 and HTTP/2, until Ctrl-C.
async fn serve<S, B>(
    listener: tokio::net::TcpListener,
    gateway: S,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let server = auto::Builder::new(TokioExecutor::new());
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let _ = tcp.set_nodelay(true);
        let conn = server
            .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(gateway.clone()))
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
