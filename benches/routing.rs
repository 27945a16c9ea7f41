//! Routing on the happy path: what model rewrite and fallback add per request over an inner
//! service that answers at once, for a model with two endpoints (the bench harness's setup).
//! `cargo bench --bench routing`.

use std::sync::Arc;

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use http_body_util::Full;
use modelgate::facts::{Pricing, Target};
use modelgate::model_rewrite::{Catalog, Endpoint, Model};
use modelgate::provider::{Provider, ProviderKind};
use modelgate::{ChatRequest, Error, FallbackLayer, ModelRewriteLayer};
use tower::{service_fn, Layer, Service};

fn catalog() -> Arc<Catalog> {
    let mut c = Catalog::new();
    let mut endpoints = Vec::new();
    for (name, price) in [("mock", 1.0), ("mock-b", 1.5)] {
        let p = Arc::new(
            Provider::builder(name, ProviderKind::OpenAi, "http://127.0.0.1:9/v1")
                .build()
                .unwrap(),
        );
        c.add_provider(p.clone()).unwrap();
        endpoints.push(Endpoint::new(
            p,
            "mock-model",
            Pricing::new(price, price * 2.0),
        ));
    }
    c.add_model(Model {
        id: Arc::from("mock-model"),
        name: "Mock".into(),
        context_length: None,
        endpoints,
        hedge: None,
        info: Default::default(),
    })
    .unwrap();
    Arc::new(c)
}

// Not inlined: under callgrind its call count is the number of iterations.
#[inline(never)]
fn request() -> Request<ChatRequest> {
    let body: ChatRequest = serde_json::from_str(
        r#"{"model":"mock-model","messages":[{"role":"user","content":"ping"}],"max_tokens":16}"#,
    )
    .unwrap();
    let mut req = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-bench")
        .body(body)
        .unwrap();
    req.extensions_mut().insert(modelgate::GenerationId::new());
    req
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let catalog = catalog();
    // The inner service reads the target (as dispatch does) and answers at once.
    let inner = service_fn(|req: Request<ChatRequest>| async move {
        let t = req.extensions().get::<Target>().map(|t| t.provider.clone());
        black_box(t);
        Ok::<_, Error>(Response::new(Full::new(Bytes::from_static(b"{}"))))
    });
    let mut g = c.benchmark_group("routing");
    // The floor: the same inner with a target put in by hand.
    let first = catalog.resolve("mock-model").unwrap().targets[0].clone();
    g.bench_function("inner_only", |b| {
        let mut svc = inner;
        b.iter(|| {
            let mut req = request();
            req.extensions_mut().insert(first.clone());
            rt.block_on(svc.call(req)).unwrap()
        })
    });
    g.bench_function("model_rewrite", |b| {
        let mut svc = ModelRewriteLayer::new(catalog.clone()).layer(inner);
        b.iter(|| rt.block_on(svc.call(request())).unwrap())
    });
    g.bench_function("model_rewrite_fallback", |b| {
        let mut svc =
            ModelRewriteLayer::new(catalog.clone()).layer(FallbackLayer::new().layer(inner));
        b.iter(|| rt.block_on(svc.call(request())).unwrap())
    });
    g.finish();
}

criterion_group!(routing, benches);
criterion_main!(routing);
