use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::FakeRelativeClock;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{service_fn, Layer, Service, ServiceExt};

use super::*;
use crate::auth::{KeyRecord, Principal};
use crate::chat::Usage;
use crate::future::testing::MustBeReady;
use crate::future::BoxFuture;

fn principal(limits: RateLimits) -> Principal {
    let mut r = KeyRecord::from_config("app", "sk-mg-app-0123456789abcdef");
    r.rate_limits = limits;
    Principal::new(r)
}

/// One request of `body_len` bytes through the layer; the fake answer reports `used` tokens.
async fn send<T: RateLimitStore>(
    store: &Arc<T>,
    p: &Principal,
    body_len: usize,
    used: Option<u64>,
) -> Response<GatewayBody<Full<bytes::Bytes>>> {
    let svc = RateLimitLayer::new(store.clone()).layer(service_fn(
        move |req: Request<GatewayBody<Full<bytes::Bytes>>>| async move {
            if let (Some(slot), Some(used)) = (req.extensions().get::<UsageSlot>(), used) {
                slot.record(Usage {
                    prompt_tokens: used / 2,
                    completion_tokens: used - used / 2,
                    total_tokens: used,
                    ..Usage::default()
                });
            }
            Ok::<_, Infallible>(Response::new(Full::new(bytes::Bytes::from_static(b"{}"))))
        },
    ));
    let mut req = Request::new(Full::new(bytes::Bytes::from(vec![b'x'; body_len])));
    req.extensions_mut().insert(p.clone());
    svc.oneshot(req).await.unwrap()
}

fn header(res: &Response<impl Sized>, name: &str) -> String {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_burst_past_requests_per_minute_gets_exactly_the_expected_429s() {
    let clock = FakeRelativeClock::default();
    let store = Arc::new(MemoryRateLimits::with_clock(clock.clone()));
    let p = principal(RateLimits {
        requests_per_minute: Some(3),
        ..RateLimits::default()
    });
    let mut statuses = Vec::new();
    let mut remaining = Vec::new();
    for _ in 0..5 {
        let res = send(&store, &p, 10, None).await;
        statuses.push(res.status().as_u16());
        remaining.push(header(&res, "x-ratelimit-remaining-requests"));
        assert_eq!(header(&res, "x-ratelimit-limit-requests"), "3");
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    assert_eq!(remaining, ["2", "1", "0", "0", "0"]);

    let res = send(&store, &p, 10, None).await;
    assert_eq!(header(&res, "retry-after"), "20", "one request per 20 s");
    assert_eq!(header(&res, "x-ratelimit-reset-requests"), "1m0s");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], 429);
    assert_eq!(v["error"]["type"], "rate_limit_exceeded");
    assert!(!String::from_utf8_lossy(&body).contains("0123456789abcdef"));

    clock.advance(Duration::from_millis(19_500));
    let res = send(&store, &p, 10, None).await;
    assert_eq!(res.status(), 429);
    assert_eq!(
        header(&res, "retry-after"),
        "1",
        "0.5 s rounds up to 1, never 0"
    );
    clock.advance(Duration::from_millis(500));
    assert_eq!(send(&store, &p, 10, None).await.status(), 200);
    assert_eq!(send(&store, &p, 10, None).await.status(), 429);
}

#[tokio::test]
async fn the_day_window_refuses_when_the_minute_window_would_not() {
    let clock = FakeRelativeClock::default();
    let store = Arc::new(MemoryRateLimits::with_clock(clock.clone()));
    let p = principal(RateLimits {
        requests_per_minute: Some(100),
        requests_per_day: Some(2),
        ..RateLimits::default()
    });
    let first = send(&store, &p, 10, None).await;
    assert_eq!(
        header(&first, "x-ratelimit-limit-requests"),
        "2",
        "the tighter window"
    );
    assert_eq!(header(&first, "x-ratelimit-remaining-requests"), "1");
    assert_eq!(send(&store, &p, 10, None).await.status(), 200);
    let res = send(&store, &p, 10, None).await;
    assert_eq!(res.status(), 429);
    assert_eq!(header(&res, "retry-after"), "43200", "one request per 12 h");
}

#[tokio::test]
async fn tokens_are_reserved_then_settled_with_the_real_usage() {
    let clock = FakeRelativeClock::default();
    let store = Arc::new(MemoryRateLimits::with_clock(clock.clone()));
    let p = principal(RateLimits {
        tokens_per_minute: Some(1000),
        ..RateLimits::default()
    });
    // 400 bytes reserve 100 tokens; the answer used 900: 800 more are owed.
    let res = send(&store, &p, 400, Some(900)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-ratelimit-limit-tokens"), "1000");
    assert_eq!(header(&res, "x-ratelimit-remaining-tokens"), "900");
    drop(res);
    // 900 used: 100 left, so the next 100-token reservation fits, exactly.
    let res = send(&store, &p, 400, Some(100)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-ratelimit-remaining-tokens"), "0");
    let res = send(&store, &p, 400, Some(100)).await;
    assert_eq!(res.status(), 429);
    assert_eq!(header(&res, "retry-after"), "6", "100 tokens at 1000/min");

    // Unused reservation comes back: 100 reserved, 10 used.
    clock.advance(Duration::from_secs(60));
    let res = send(&store, &p, 400, Some(10)).await;
    assert_eq!(header(&res, "x-ratelimit-remaining-tokens"), "900");
    drop(res);
    let res = send(&store, &p, 4, Some(0)).await;
    assert_eq!(header(&res, "x-ratelimit-remaining-tokens"), "989");
}

#[tokio::test]
async fn without_usage_the_estimate_stands_and_errors_cost_nothing() {
    let clock = FakeRelativeClock::default();
    let store = Arc::new(MemoryRateLimits::with_clock(clock.clone()));
    let p = principal(RateLimits {
        tokens_per_minute: Some(1000),
        ..RateLimits::default()
    });
    drop(send(&store, &p, 400, None).await);
    let res = send(&store, &p, 4, Some(1)).await;
    assert_eq!(header(&res, "x-ratelimit-remaining-tokens"), "899");
    drop(res);

    // An error answer gives its reservation back.
    let svc = RateLimitLayer::new(store.clone()).layer(service_fn(
        |_req: Request<GatewayBody<Full<bytes::Bytes>>>| async {
            let mut res = Response::new(Full::new(bytes::Bytes::new()));
            *res.status_mut() = StatusCode::BAD_REQUEST;
            Ok::<_, Infallible>(res)
        },
    ));
    let mut req = Request::new(Full::new(bytes::Bytes::from(vec![b'x'; 400])));
    req.extensions_mut().insert(p.clone());
    drop(svc.oneshot(req).await.unwrap());
    let res = send(&store, &p, 4, Some(1)).await;
    assert_eq!(
        header(&res, "x-ratelimit-remaining-tokens"),
        "898",
        "only the two 1-token requests count"
    );
}

/// A store that decides only through `acquire`, as a remote one does.
struct Remote(MemoryRateLimits<FakeRelativeClock>);

impl RateLimitStore for Remote {
    fn acquire<'a>(
        &'a self,
        key: &'a str,
        limits: &'a RateLimits,
        tokens: u32,
    ) -> BoxFuture<'a, Result<Decision, StoreError>> {
        self.0.acquire(key, limits, tokens)
    }

    fn reconcile(&self, key: &str, limits: &RateLimits, reserved: u32, used: u64) {
        self.0.reconcile(key, limits, reserved, used)
    }
}

#[tokio::test]
async fn a_store_that_must_be_asked_decides_the_same_as_one_that_answers_at_once() {
    let p = principal(RateLimits {
        requests_per_minute: Some(3),
        tokens_per_minute: Some(1000),
        ..RateLimits::default()
    });
    // (body bytes, tokens the answer used, seconds to wait before)
    let script = [
        (400, Some(900), 0),
        (400, Some(100), 0),
        (400, Some(100), 0),
        (40, None, 7),
        (40, Some(5), 0),
        (40, Some(5), 20),
        (40, Some(5), 60),
    ];
    let names = [
        "retry-after",
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    ];
    let at_once_clock = FakeRelativeClock::default();
    let at_once = Arc::new(MemoryRateLimits::with_clock(at_once_clock.clone()));
    let asked_clock = FakeRelativeClock::default();
    let asked = Arc::new(Remote(MemoryRateLimits::with_clock(asked_clock.clone())));
    assert!(at_once
        .acquire_now("k", &RateLimits::default(), 0)
        .is_some());
    assert!(asked.acquire_now("k", &RateLimits::default(), 0).is_none());
    let mut statuses = Vec::new();
    for (body, used, wait) in script {
        at_once_clock.advance(Duration::from_secs(wait));
        asked_clock.advance(Duration::from_secs(wait));
        let a = send(&at_once, &p, body, used).await;
        let b = send(&asked, &p, body, used).await;
        assert_eq!(a.status(), b.status());
        for name in names {
            assert_eq!(header(&a, name), header(&b, name), "{name}");
        }
        let a = a.into_body().collect().await.unwrap().to_bytes();
        let b = b.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(a, b);
        statuses.push(b"{}" == &a[..]);
    }
    assert_eq!(
        statuses,
        [true, true, false, false, false, true, true],
        "both paths let in and refused"
    );
}

#[tokio::test]
async fn the_inner_service_is_only_called_once_ready() {
    let limited = principal(RateLimits {
        requests_per_minute: Some(2),
        ..RateLimits::default()
    });
    let unlimited = principal(RateLimits::default());
    let clock = FakeRelativeClock::default();
    let at_once: Arc<dyn RateLimitStore> = Arc::new(MemoryRateLimits::with_clock(clock.clone()));
    let asked: Arc<dyn RateLimitStore> =
        Arc::new(Remote(MemoryRateLimits::with_clock(clock.clone())));
    for store in [at_once, asked] {
        let mut svc = RateLimitLayer::new(store).layer(MustBeReady::default());
        let mut statuses = Vec::new();
        for p in [&limited, &limited, &limited, &unlimited, &limited] {
            let mut req = Request::new(Full::<bytes::Bytes>::default());
            req.extensions_mut().insert(p.clone());
            let ready = ServiceExt::<Request<Full<bytes::Bytes>>>::ready(&mut svc)
                .await
                .unwrap();
            let res = ready.call(req).await.unwrap();
            statuses.push(res.status().as_u16());
        }
        assert_eq!(statuses, [200, 200, 429, 200, 429]);
    }
}

#[tokio::test]
async fn no_principal_or_no_limits_passes_untouched() {
    let store = Arc::new(MemoryRateLimits::with_clock(FakeRelativeClock::default()));
    let res = send(&store, &principal(RateLimits::default()), 10, None).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("x-ratelimit-limit-requests").is_none());
    assert_eq!(store.tracked(), 0);
}

#[test]
fn idle_keys_are_evicted_so_memory_follows_the_active_keys() {
    let clock = FakeRelativeClock::default();
    let store = MemoryRateLimits::with_clock(clock.clone());
    let limits = RateLimits {
        requests_per_minute: Some(10),
        tokens_per_minute: Some(10_000),
        ..RateLimits::default()
    };
    let mut peak = 0;
    for i in 0..200_000u32 {
        let d = store.decide(&format!("key-{i}"), &limits, 10);
        assert!(d.allowed);
        clock.advance(Duration::from_millis(1));
        peak = peak.max(store.tracked());
    }
    // A key's state is fresh again 6 s (one request at 10/min) after its request: about 6,000
    // keys are live at any time, plus what arrives between two sweeps; two states per key.
    assert!(peak < 2 * (6_000 + 4_096 + 100), "peak {peak}");
}

#[test]
fn resets_are_written_like_openai_does() {
    assert_eq!(format_reset(Duration::from_micros(1)), "1ms");
    assert_eq!(format_reset(Duration::from_millis(20)), "20ms");
    assert_eq!(format_reset(Duration::from_millis(1001)), "2s");
    assert_eq!(format_reset(Duration::from_secs(360)), "6m0s");
    assert_eq!(format_reset(Duration::from_secs(3723)), "1h2m3s");
    assert_eq!(format_reset(Duration::from_secs(3600)), "1h0m0s");
    assert_eq!(format_reset(Duration::ZERO), "0ms");
    assert_eq!(format_reset(Duration::MAX), "5124095576030431h0m15s");
}

#[tokio::test]
async fn an_upstream_that_reports_absurd_usage_spends_the_window_and_panics_nothing() {
    let clock = FakeRelativeClock::default();
    let store = Arc::new(MemoryRateLimits::with_clock(clock.clone()));
    let p = principal(RateLimits {
        tokens_per_minute: Some(1000),
        ..RateLimits::default()
    });
    let svc = RateLimitLayer::new(store.clone()).layer(service_fn(
        |req: Request<GatewayBody<Full<bytes::Bytes>>>| async move {
            let slot = req.extensions().get::<UsageSlot>().unwrap();
            slot.record(Usage {
                prompt_tokens: u64::MAX,
                completion_tokens: u64::MAX,
                total_tokens: u64::MAX,
                ..Usage::default()
            });
            Ok::<_, Infallible>(Response::new(Full::new(bytes::Bytes::new())))
        },
    ));
    let mut req = Request::new(Full::new(bytes::Bytes::from(vec![b'x'; 400])));
    req.extensions_mut().insert(p.clone());
    drop(svc.oneshot(req).await.unwrap());
    // The usage counts as more than the window holds: the next request waits, as after any
    // answer that used far more than it reserved.
    let res = send(&store, &p, 4, Some(1)).await;
    assert_eq!(res.status(), 429);
    // A debt of at most a hundred years, as in Redis.
    let wait: u64 = header(&res, "retry-after").parse().unwrap();
    let year = 365 * 86_400;
    assert!(wait > year && wait <= 100 * year, "{wait}");
}

#[tokio::test]
async fn without_a_principal_it_refuses_loudly_unless_told_which_key_a_request_is() {
    let inner = || {
        service_fn(|_req: Request<GatewayBody<Full<bytes::Bytes>>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(bytes::Bytes::new())))
        })
    };
    let req = || Request::new(Full::new(bytes::Bytes::from_static(b"{}")));
    let res = RateLimitLayer::in_memory()
        .layer(inner())
        .oneshot(req())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("AuthLayer") && text.contains("key_fn"),
        "{text}"
    );

    // The embedder's own authentication says who: a tenant header here.
    let layer = RateLimitLayer::in_memory().key_fn(|headers, _| {
        let tenant = headers.get("x-tenant")?.to_str().ok()?;
        Some(LimitedKey {
            id: format!("tenant:{tenant}"),
            label: tenant.to_owned(),
            limits: RateLimits {
                requests_per_minute: Some(1),
                ..RateLimits::default()
            },
        })
    });
    let tenant = |name: &'static str| {
        let mut r = req();
        r.headers_mut().insert("x-tenant", name.parse().unwrap());
        r
    };
    let svc = layer.layer(inner());
    assert_eq!(
        svc.clone().oneshot(tenant("a")).await.unwrap().status(),
        200
    );
    assert_eq!(
        svc.clone().oneshot(tenant("a")).await.unwrap().status(),
        429
    );
    assert_eq!(
        svc.clone().oneshot(tenant("b")).await.unwrap().status(),
        200
    );
    // No key for it: not limited.
    assert_eq!(svc.clone().oneshot(req()).await.unwrap().status(), 200);
    assert_eq!(svc.oneshot(req()).await.unwrap().status(), 200);
}
