//! Auth and rate limits: what they add per request, and the memory bound of the limiter
//! under a million distinct keys. `cargo bench --bench auth`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use governor::clock::FakeRelativeClock;
use http::{Request, Response};
use modelgate::auth::{AuthLayer, KeyRecord, LocalKeyStore, RateLimits};
use modelgate::body::GatewayBody;
use modelgate::rate_limit::{MemoryRateLimits, RateLimitLayer, RateLimitStore};
use tower::{service_fn, Layer, Service};

const KEY: &str = "sk-mg-bench-0123456789abcdef";

fn store() -> Arc<LocalKeyStore> {
    let mut s = LocalKeyStore::in_memory();
    // A realistic key table: the caller among ten thousand others.
    for i in 0..10_000 {
        s.add(KeyRecord::from_config(
            &format!("k{i}"),
            &format!("sk-mg-other-{i:020}"),
        ))
        .unwrap();
    }
    let mut r = KeyRecord::from_config("bench", KEY);
    r.rate_limits = RateLimits::default()
        .with_requests_per_minute(u32::MAX)
        .with_tokens_per_minute(u32::MAX);
    s.add(r).unwrap();
    Arc::new(s)
}

// Not inlined: under callgrind its call count is the number of iterations.
#[inline(never)]
fn request() -> Request<String> {
    Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {KEY}"))
        .body(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#.to_owned())
        .unwrap()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let inner = service_fn(|_req: Request<String>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    });
    c.bench_function("key_digest", |b| {
        b.iter(|| modelgate::auth::KeyDigest::of(black_box(KEY)))
    });
    let mut g = c.benchmark_group("edge");
    g.bench_function("no_layers", |b| {
        let mut svc = inner;
        b.iter(|| rt.block_on(svc.call(black_box(request()))).unwrap())
    });
    g.bench_function("auth", |b| {
        let mut svc = AuthLayer::new(store()).layer(inner);
        b.iter(|| rt.block_on(svc.call(black_box(request()))).unwrap())
    });
    g.bench_function("auth_rate_limit", |b| {
        // The rate limiter hands the body on as a `GatewayBody`.
        let inner = service_fn(|_req: Request<GatewayBody<String>>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        });
        let mut svc = AuthLayer::new(store()).layer(RateLimitLayer::in_memory().layer(inner));
        b.iter(|| rt.block_on(svc.call(black_box(request()))).unwrap())
    });
    g.finish();

    // A million distinct keys, one request each, 1 ms apart on the fake clock: memory follows
    // the keys active in the last window, not the million.
    let mut g = c.benchmark_group("eviction");
    g.sample_size(10);
    g.bench_function("million_keys", |b| {
        b.iter(|| {
            let clock = FakeRelativeClock::default();
            let limits = MemoryRateLimits::with_clock(clock.clone());
            let rl = RateLimits::default()
                .with_requests_per_minute(10)
                .with_tokens_per_minute(10_000);
            let before = rss_kib();
            let mut peak = 0;
            for i in 0..1_000_000u32 {
                let key = format!("key-{i}");
                let d = rt.block_on(limits.acquire(&key, &rl, 10)).unwrap();
                assert!(d.allowed);
                clock.advance(Duration::from_millis(1));
                if i % 1024 == 0 {
                    peak = peak.max(limits.tracked());
                }
            }
            eprintln!(
                "eviction: peak {peak} states held for 1,000,000 keys; RSS grew {} KiB",
                rss_kib().saturating_sub(before)
            );
        })
    });
    g.finish();
}

criterion_group!(group, benches);
criterion_main!(group);
