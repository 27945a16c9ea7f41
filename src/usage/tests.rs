use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tower::{service_fn, Layer, Service, ServiceExt};

use super::*;
use crate::auth::{KeyRecord, LimitReset, Principal};
use crate::chat::{ChatRequest, CompletionTokensDetails, PromptTokensDetails, Usage};
use crate::facts::{Attempt, AttemptOutcome, Attempts, Pricing, StreamEnd, Target, UsageSlot};
use crate::provider::{Provider, ProviderKind};

const PRICES: Pricing = Pricing::new(3.0, 15.0);

fn target() -> Target {
    let p = Arc::new(
        Provider::builder("prov", ProviderKind::OpenAi, "http://127.0.0.1:9/v1")
            .build()
            .unwrap(),
    );
    let mut t = Target::new(p, "up-model", "pub/model");
    t.pricing = Some(PRICES);
    t
}

fn key(limit: Option<f64>, reset: Option<LimitReset>) -> Principal {
    let mut r = KeyRecord::from_config("app", "sk-mg-test-key-0123456789");
    r.limit = limit;
    r.limit_reset = reset;
    Principal::new(r)
}

fn request(stream: bool, principal: &Principal) -> Request<ChatRequest> {
    let body: ChatRequest = serde_json::from_value(serde_json::json!({
        "model": "pub/model",
        "messages": [{"role": "user", "content": "hello there"}],
        "stream": stream,
        "max_tokens": 1000,
        "user": "u-42",
    }))
    .unwrap();
    let mut req = Request::new(body);
    req.extensions_mut().insert(principal.clone());
    req.extensions_mut().insert(target());
    req.headers_mut()
        .insert("http-referer", "https://app.example".parse().unwrap());
    req.headers_mut()
        .insert("x-title", "My App".parse().unwrap());
    req
}

fn usage(prompt: u64, completion: u64) -> Usage {
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        prompt_tokens_details: Some(PromptTokensDetails {
            cached_tokens: Some(4),
            ..Default::default()
        }),
        completion_tokens_details: Some(CompletionTokensDetails {
            reasoning_tokens: Some(2),
            ..Default::default()
        }),
        ..Usage::default()
    }
}

fn served(req: &Request<ChatRequest>) {
    let t = req.extensions().get::<Target>().unwrap();
    req.extensions().get::<Attempts>().unwrap().push(Attempt {
        provider: t.provider.name_arc().clone(),
        model: t.public_model.clone(),
        upstream_model: t.upstream_model.clone(),
        kind: t.provider.kind(),
        outcome: AttemptOutcome::Served,
        status: Some(200),
        started: tokio::time::Instant::now(),
        latency: Duration::from_millis(5),
        error: None,
        pricing: t.pricing,
        span: None,
    });
}

struct Setup {
    sink: Arc<MemorySink>,
    recorder: Recorder,
    now: Arc<AtomicI64>,
    layer: UsageLayer,
}

fn setup(capacity: usize) -> Setup {
    let sink = Arc::new(MemorySink::new());
    let recorder = Recorder::start(vec![sink.clone()], Arc::new(SpendLedger::new()), capacity)
        .unwrap()
        .max_wait(Duration::from_secs(2));
    // Wednesday 2 December 2026, 12:00 UTC.
    let now = Arc::new(AtomicI64::new(1_796_212_800));
    let clock = now.clone();
    let layer = UsageLayer::new(recorder.clone()).clock(move || clock.load(Ordering::SeqCst));
    Setup {
        sink,
        recorder,
        now,
        layer,
    }
}

/// Answers at once with `usage` (through the slot, as stream normalisation does).
fn answering(
    u: Option<Usage>,
) -> impl Service<
    Request<ChatRequest>,
    Response = Response<()>,
    Error = Error,
    Future = std::future::Ready<Result<Response<()>, Error>>,
> + Clone {
    service_fn(move |req: Request<ChatRequest>| {
        served(&req);
        assert!(req.extensions().get::<PriceAnswers>().is_some());
        if let (Some(u), Some(slot)) = (&u, req.extensions().get::<UsageSlot>()) {
            slot.record(PRICES.price(u.clone()));
            slot.record_finish_reason(Some("stop"));
        }
        std::future::ready(Ok(Response::new(())))
    })
}

#[tokio::test]
async fn a_whole_answer_is_recorded_once_with_exact_cost() {
    let s = setup(16);
    let p = key(None, None);
    let mut svc = s.layer.layer(answering(Some(usage(1_000, 500))));
    let res = svc.ready().await.unwrap().call(request(false, &p)).await;
    assert_eq!(res.unwrap().status(), StatusCode::OK);
    s.recorder.flush().await;
    let records = s.sink.records();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.key_id.as_deref(), Some("cfg_app"));
    assert_eq!((r.prompt_tokens, r.completion_tokens), (1_000, 500));
    assert_eq!((r.cached_tokens, r.reasoning_tokens), (4, 2));
    // 1,000 × $3/M + 500 × $15/M = $0.003 + $0.0075.
    assert_eq!(r.cost, Some((1_000.0 * 3.0 + 500.0 * 15.0) / 1e6));
    assert_eq!(r.cost, Some(0.0105));
    assert_eq!(r.provider.as_deref(), Some("prov"));
    assert_eq!(r.upstream_model.as_deref(), Some("up-model"));
    assert_eq!(r.model, "pub/model");
    assert_eq!(r.status, Some(200));
    assert_eq!(r.finish_reason.as_deref(), Some("stop"));
    assert!(!r.cancelled && !r.estimated && !r.streamed);
    assert_eq!(r.attempts.len(), 1);
    assert_eq!(r.attempts[0].outcome, "served");
    assert_eq!(r.referer.as_deref(), Some("https://app.example"));
    assert_eq!(r.title.as_deref(), Some("My App"));
    assert_eq!(r.user.as_deref(), Some("u-42"));
    assert!(r.time_to_first_token_ms.is_some());
    assert_eq!(
        s.recorder
            .ledger()
            .cached("cfg_app")
            .unwrap()
            .spent(None, 0),
        0.0105
    );
    assert_eq!(s.recorder.stats().written, 1);
    assert_eq!(s.recorder.stats().queued, 0, "the place was given back");
}

#[tokio::test]
async fn a_spent_limit_is_a_402_until_the_window_starts_over() {
    let s = setup(16);
    let p = key(Some(0.02), Some(LimitReset::Daily));
    let mut svc = s.layer.layer(answering(Some(usage(1_000, 500))));
    // $0.0105 each: the first two go through (the second starts below the limit), the third
    // finds $0.021 spent.
    for _ in 0..2 {
        let res = svc.ready().await.unwrap().call(request(false, &p)).await;
        assert!(res.is_ok());
    }
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(request(false, &p))
        .await
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::PAYMENT_REQUIRED);
    assert!(err.message().contains("credit limit"), "{}", err.message());
    assert!(err.message().contains("today (UTC)"), "{}", err.message());
    // Refused before anything was sent: no record for it.
    s.recorder.flush().await;
    assert_eq!(s.sink.records().len(), 2);
    // Midnight UTC: a new day, a new allowance.
    s.now.fetch_add(12 * 3_600, Ordering::SeqCst);
    let res = svc.ready().await.unwrap().call(request(false, &p)).await;
    assert!(res.is_ok());
    // A key without a limit is never refused.
    let free = key(None, None);
    for _ in 0..5 {
        assert!(svc
            .ready()
            .await
            .unwrap()
            .call(request(false, &free))
            .await
            .is_ok());
    }
}

#[tokio::test]
async fn an_unaffordable_max_tokens_is_refused_when_asked() {
    let s = setup(16);
    // max_tokens 1,000 at $15/M is up to $0.015: more than the $0.01 left.
    let p = key(Some(0.01), None);
    let mut lenient = s.layer.clone().layer(answering(None));
    assert!(lenient
        .ready()
        .await
        .unwrap()
        .call(request(false, &p))
        .await
        .is_ok());
    let mut strict = s
        .layer
        .clone()
        .refuse_unaffordable(true)
        .layer(answering(None));
    let err = strict
        .ready()
        .await
        .unwrap()
        .call(request(false, &p))
        .await
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::PAYMENT_REQUIRED);
    assert_eq!(err.param(), Some("max_tokens"));
}

#[tokio::test]
async fn a_failed_answer_costs_nothing_and_is_recorded() {
    let s = setup(16);
    let p = key(None, None);
    let inner = service_fn(|req: Request<ChatRequest>| {
        let attempts = req.extensions().get::<Attempts>().unwrap();
        let t = req.extensions().get::<Target>().unwrap();
        attempts.push(Attempt {
            provider: t.provider.name_arc().clone(),
            model: t.public_model.clone(),
            upstream_model: t.upstream_model.clone(),
            kind: t.provider.kind(),
            outcome: AttemptOutcome::Failed,
            status: Some(502),
            started: tokio::time::Instant::now(),
            latency: Duration::from_millis(3),
            error: Some("boom".into()),
            pricing: t.pricing,
            span: None,
        });
        req.extensions()
            .get::<UsageSlot>()
            .unwrap()
            .record(Usage::default());
        std::future::ready(Err::<Response<()>, _>(Error::bad_gateway(
            "prov: boom",
            crate::error::ErrorSource::Upstream,
            crate::error::Retry::Retryable,
        )))
    });
    let mut svc = s.layer.layer(inner);
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(request(false, &p))
        .await
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
    s.recorder.flush().await;
    let r = &s.sink.records()[0];
    assert_eq!(r.status, Some(502));
    assert_eq!(r.error.as_deref(), Some("prov: boom"));
    assert_eq!(r.provider, None, "nobody served");
    assert_eq!(r.cost, None, "no served endpoint, no price");
    assert_eq!(r.attempts[0].outcome, "failed");
    assert_eq!(
        s.recorder
            .ledger()
            .cached("cfg_app")
            .unwrap()
            .spent(None, 0),
        0.0
    );
}

/// A response whose body holds the slot, as a stream's body does.
#[derive(Debug)]
struct Held(#[allow(dead_code)] Option<UsageSlot>);

#[tokio::test]
async fn a_stream_left_mid_way_is_recorded_cancelled_with_an_estimate() {
    let s = setup(16);
    let p = key(None, None);
    let inner = service_fn(|req: Request<ChatRequest>| {
        served(&req);
        let slot = req.extensions().get::<UsageSlot>().cloned();
        std::future::ready(Ok::<_, Error>(Response::new(Held(slot))))
    });
    let mut svc = s.layer.layer(inner);
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(request(true, &p))
        .await
        .unwrap();
    let slot = res.body().0.clone().unwrap();
    // Seven events went out, then the client went away (the body is dropped unfinished).
    slot.report_stream(None, None, 7, Some(tokio::time::Instant::now()), None);
    drop(slot);
    s.recorder.flush().await;
    assert!(s.sink.records().is_empty(), "the stream is still alive");
    drop(res);
    s.recorder.flush().await;
    let r = &s.sink.records()[0];
    assert!(r.cancelled && r.estimated && r.streamed);
    assert_eq!(r.completion_tokens, 7);
    assert!(r.prompt_tokens > 0);
    assert_eq!(r.cost, Some(PRICES.cost(r.prompt_tokens, 7)));
    assert_eq!(r.status, Some(200));
    assert!(r.time_to_first_token_ms.is_some());
}

#[tokio::test]
async fn a_stream_with_usage_and_an_error_event_keeps_both() {
    let s = setup(16);
    let p = key(None, None);
    let inner = service_fn(|req: Request<ChatRequest>| {
        served(&req);
        let slot = req.extensions().get::<UsageSlot>().cloned().unwrap();
        slot.report_stream(
            Some(&usage(10, 3)),
            Some("length"),
            4,
            None,
            Some(StreamEnd::Failed("cut".into())),
        );
        std::future::ready(Ok::<_, Error>(Response::new(())))
    });
    let mut svc = s.layer.layer(inner);
    svc.ready()
        .await
        .unwrap()
        .call(request(true, &p))
        .await
        .unwrap();
    s.recorder.flush().await;
    let r = &s.sink.records()[0];
    assert!(!r.cancelled && !r.estimated);
    assert_eq!(r.error.as_deref(), Some("cut"));
    assert_eq!((r.prompt_tokens, r.completion_tokens), (10, 3));
    assert_eq!(
        r.cost,
        Some(PRICES.cost(10, 3)),
        "tokens were produced: charged"
    );
}

#[tokio::test]
async fn a_client_gone_before_the_answer_is_recorded_cancelled() {
    let s = setup(16);
    let p = key(None, None);
    let inner = service_fn(|req: Request<ChatRequest>| {
        served(&req);
        std::future::pending::<Result<Response<()>, Error>>()
    });
    let mut svc = s.layer.layer(inner);
    let fut = svc.ready().await.unwrap().call(request(false, &p));
    let _ = tokio::time::timeout(Duration::from_millis(10), fut).await;
    s.recorder.flush().await;
    let r = &s.sink.records()[0];
    assert!(r.cancelled);
    assert_eq!(r.status, None);
    assert_eq!(r.cost, Some(0.0), "nothing came back: nothing charged");
}

#[tokio::test]
async fn an_answer_dropped_before_it_is_polled_is_recorded_once_cancelled() {
    // Metering calls the inner service at `call` time: the record is pending from then on.
    let s = setup(16);
    let p = key(None, None);
    let mut svc = s.layer.layer(answering(Some(usage(10, 5))));
    let fut = svc.ready().await.unwrap().call(request(false, &p));
    drop(fut);
    s.recorder.flush().await;
    let records = s.sink.records();
    assert_eq!(records.len(), 1);
    assert!(records[0].cancelled);
    assert_eq!(records[0].status, None);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_waits_then_refuses_and_counts() {
    let s = setup(1);
    let p = key(None, None);
    let inner = service_fn(|req: Request<ChatRequest>| {
        served(&req);
        let slot = req.extensions().get::<UsageSlot>().cloned();
        std::future::ready(Ok::<_, Error>(Response::new(Held(slot))))
    });
    let mut svc = s.layer.layer(inner);
    // The one place is held by a stream in flight.
    let first = svc
        .ready()
        .await
        .unwrap()
        .call(request(true, &p))
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(request(false, &p))
        .await
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(2),
        "the bounded wait"
    );
    let stats = s.recorder.stats();
    assert_eq!((stats.waits, stats.refused), (1, 1));
    // A request waiting while the stream ends gets the freed place.
    let mut svc2 = svc.clone();
    let waiting = tokio::spawn(async move {
        svc2.ready()
            .await
            .unwrap()
            .call(request(false, &key(None, None)))
            .await
            .map(|_| ())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(first);
    waiting.await.unwrap().unwrap();
    s.recorder.flush().await;
    assert_eq!(
        s.sink.records().len(),
        2,
        "both requests that ran are recorded"
    );
}

/// Fails its first `n` writes.
struct Flaky {
    fail: AtomicUsize,
    inner: MemorySink,
}

impl UsageSink for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }
    fn write(
        &self,
        batch: Arc<[UsageRecord]>,
    ) -> crate::future::BoxFuture<'_, Result<(), SinkError>> {
        if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Box::pin(std::future::ready(Err(SinkError("disk full".into()))));
        }
        self.inner.write(batch)
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_sink_is_retried_and_loses_nothing() {
    let flaky = Arc::new(Flaky {
        fail: AtomicUsize::new(3),
        inner: MemorySink::new(),
    });
    let recorder = Recorder::start(vec![flaky.clone()], Arc::new(SpendLedger::new()), 64).unwrap();
    let layer = UsageLayer::new(recorder.clone());
    let mut svc = layer.layer(answering(Some(usage(1, 1))));
    let p = key(None, None);
    for _ in 0..10 {
        svc.ready()
            .await
            .unwrap()
            .call(request(false, &p))
            .await
            .unwrap();
    }
    recorder.flush().await;
    let mut ids: Vec<_> = flaky.inner.records().iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), 10);
    ids.dedup();
    assert_eq!(ids.len(), 10);
    assert_eq!(recorder.stats().write_failures, 3);
}

#[tokio::test]
async fn at_shutdown_what_a_failing_sink_has_not_taken_is_spilled_then_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let spill = dir.path().join("state").join("spill.jsonl");
    let down = Arc::new(Flaky {
        fail: AtomicUsize::new(usize::MAX),
        inner: MemorySink::new(),
    });
    let recorder = Recorder::start(vec![down.clone()], Arc::new(SpendLedger::new()), 64)
        .unwrap()
        .spill_to(&spill);
    let mut svc = UsageLayer::new(recorder.clone()).layer(answering(Some(usage(1, 1))));
    let p = key(None, None);
    for _ in 0..5 {
        svc.ready()
            .await
            .unwrap()
            .call(request(false, &p))
            .await
            .unwrap();
    }
    assert!(recorder.close(Duration::from_millis(200)).await);
    let stats = recorder.stats();
    assert_eq!((stats.spilled, stats.written), (5, 0));
    assert!(down.inner.records().is_empty());

    // The next start writes them to the sinks and removes the file.
    let back = Arc::new(MemorySink::new());
    let sinks: Vec<Arc<dyn UsageSink>> = vec![back.clone()];
    assert_eq!(replay_spill(&spill, &sinks).await.unwrap(), 5);
    let mut ids: Vec<_> = back.records().iter().map(|r| r.id.clone()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 5);
    assert!(!spill.exists());
    assert_eq!(replay_spill(&spill, &sinks).await.unwrap(), 0);

    // Without a spill file, close says the records went nowhere.
    let recorder = Recorder::start(vec![down], Arc::new(SpendLedger::new()), 64).unwrap();
    let mut svc = UsageLayer::new(recorder.clone()).layer(answering(Some(usage(1, 1))));
    svc.ready()
        .await
        .unwrap()
        .call(request(false, &p))
        .await
        .unwrap();
    assert!(!recorder.close(Duration::from_millis(100)).await);
}

#[cfg(feature = "proxy")]
#[tokio::test]
async fn the_state_store_keeps_records_and_spend_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let p = key(Some(1.0), Some(LimitReset::Monthly));
    {
        let db = crate::state::StateDb::open(dir.path()).unwrap();
        let recorder =
            Recorder::start(vec![Arc::new(db.clone())], Arc::new(SpendLedger::new()), 64).unwrap();
        let mut svc = UsageLayer::new(recorder.clone()).layer(answering(Some(usage(1_000, 500))));
        for _ in 0..3 {
            svc.ready()
                .await
                .unwrap()
                .call(request(false, &p))
                .await
                .unwrap();
        }
        recorder.flush().await;
        // Offering a batch again (a retry after a failure) charges nothing twice.
        let again = db.all_records();
        assert_eq!(again.len(), 3);
        db.put_records(&again).unwrap();
    }
    // Every recorder is gone: its writer ends and lets go of the database.
    let mut reopened = crate::state::StateDb::open(dir.path());
    for _ in 0..100 {
        if reopened.is_ok() {
            break;
        }
        tokio::task::yield_now().await;
        reopened = crate::state::StateDb::open(dir.path());
    }
    let db = reopened.unwrap();
    let spend = db.load_spend().unwrap();
    assert_eq!(spend.len(), 1);
    let (k, s) = &spend[0];
    assert_eq!(k, "cfg_app");
    assert!((s.total - 3.0 * 0.0105).abs() < 1e-12, "{}", s.total);
    let ledger = SpendLedger::with(spend);
    let now = crate::facts::unix_now() as i64;
    assert!((ledger.spent("cfg_app", Some(LimitReset::Monthly), now) - 0.0315).abs() < 1e-12);
    let some = db.all_records();
    let r = db.get_record(&some[0].id).unwrap().unwrap();
    assert_eq!(r, some[0]);
    assert_eq!(db.get_record("gen-missing").unwrap(), None);
}

#[tokio::test]
async fn attribution_is_recorded_up_to_512_characters() {
    let s = setup(16);
    let p = key(None, None);
    let mut svc = s.layer.layer(answering(Some(usage(10, 5))));
    let mut req = request(false, &p);
    req.body_mut().user = Some("é".repeat(10_000));
    req.headers_mut()
        .insert("x-title", "t".repeat(10_000).parse().unwrap());
    let res = svc.ready().await.unwrap().call(req).await;
    assert_eq!(res.unwrap().status(), StatusCode::OK);
    s.recorder.flush().await;
    let r = &s.sink.records()[0];
    assert_eq!(r.user.as_deref(), Some("é".repeat(512).as_str()));
    assert_eq!(r.title.as_deref(), Some("t".repeat(512).as_str()));
}
