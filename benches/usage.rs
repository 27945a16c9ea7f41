//! Metering: what the usage layer adds per request over an inner service that answers at
//! once, and what storing a record costs in the state database (per record, in batches of
//! 512 as the writer makes them). `cargo bench --bench usage`.

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use http::{Request, Response};
use modelgate::auth::{KeyRecord, Principal};
use modelgate::chat::Usage;
use modelgate::facts::{Pricing, Target, UsageSlot};
use modelgate::future::BoxFuture;
use modelgate::provider::{Provider, ProviderKind};
use modelgate::state::StateDb;
use modelgate::usage::{Recorder, SinkError, SpendLedger, UsageLayer, UsageRecord, UsageSink};
use modelgate::{ChatRequest, Error};
use tower::{service_fn, Layer, Service};

/// Takes records and drops them.
struct Null;

impl UsageSink for Null {
    fn name(&self) -> &str {
        "null"
    }
    fn write(&self, batch: Arc<[UsageRecord]>) -> BoxFuture<'_, Result<(), SinkError>> {
        black_box(batch);
        Box::pin(std::future::ready(Ok(())))
    }
}

fn request(principal: &Principal, target: &Target) -> Request<ChatRequest> {
    let body: ChatRequest = serde_json::from_str(
        r#"{"model":"mock-model","messages":[{"role":"user","content":"ping"}],"max_tokens":16}"#,
    )
    .unwrap();
    let mut req = Request::new(body);
    req.extensions_mut().insert(modelgate::GenerationId::new());
    req.extensions_mut().insert(principal.clone());
    req.extensions_mut().insert(target.clone());
    req
}

fn usage() -> Usage {
    Usage {
        prompt_tokens: 18,
        completion_tokens: 11,
        total_tokens: 29,
        ..Usage::default()
    }
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let provider = Arc::new(
        Provider::builder("mock", ProviderKind::OpenAi, "http://127.0.0.1:9/v1")
            .build()
            .unwrap(),
    );
    let mut target = Target::new(provider, "mock-model", "mock-model");
    target.pricing = Some(Pricing::new(1.0, 2.0));
    let mut record = KeyRecord::from_config("bench", "sk-mg-bench-0123456789");
    record.limit = Some(1e9);
    let principal = Principal::new(record);
    // The inner service reports usage as stream normalisation does, and answers at once.
    let inner = service_fn(|req: Request<ChatRequest>| async move {
        if let Some(slot) = req.extensions().get::<UsageSlot>() {
            slot.record(usage());
        }
        Ok::<_, Error>(Response::new(()))
    });

    let mut g = c.benchmark_group("usage");
    g.bench_function("inner_only", |b| {
        let mut svc = inner;
        b.iter(|| rt.block_on(svc.call(request(&principal, &target))).unwrap())
    });
    g.bench_function("usage_layer", |b| {
        let recorder =
            Recorder::start(vec![Arc::new(Null)], Arc::new(SpendLedger::new()), 16_384).unwrap();
        let mut svc = UsageLayer::new(recorder).layer(inner);
        b.iter(|| rt.block_on(svc.call(request(&principal, &target))).unwrap())
    });

    // Records as the writer stores them.
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let template: UsageRecord = {
        let sink = Arc::new(modelgate::usage::MemorySink::new());
        let recorder =
            Recorder::start(vec![sink.clone()], Arc::new(SpendLedger::new()), 16).unwrap();
        let mut svc = UsageLayer::new(recorder.clone()).layer(inner);
        rt.block_on(svc.call(request(&principal, &target))).unwrap();
        rt.block_on(recorder.flush());
        sink.records().remove(0)
    };
    g.throughput(Throughput::Elements(512));
    g.bench_function("state_db_put_512_records", |b| {
        b.iter(|| {
            let batch: Vec<UsageRecord> = (0..512)
                .map(|_| {
                    let mut r = template.clone();
                    // Real ids: their order (time) decides how many pages an insert dirties.
                    r.id = modelgate::facts::GenerationId::new().as_str().to_owned();
                    r
                })
                .collect();
            db.put_records(&batch).unwrap();
        })
    });
    g.finish();
}

/// The activity APIs over a store of a million records: a day of one busy key (hours, by
/// model), and a page of its records.
fn activity(c: &mut Criterion) {
    use modelgate::usage::activity::{summarize, ActivityQuery, Bucket, GroupBy};
    use modelgate::usage::query::GenerationQuery;
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let day = 1_796_601_600i64;
    let template: UsageRecord = serde_json::from_value(serde_json::json!({
        "id": "", "created_at": 0, "key_id": "busy", "requested_model": "m", "model": "m",
        "provider": "p", "upstream_model": "u", "prompt_tokens": 18, "completion_tokens": 11,
        "cached_tokens": 0, "reasoning_tokens": 0, "cost": 0.0001, "estimated": false,
        "streamed": true, "status": 200, "error": null, "finish_reason": "stop",
        "cancelled": false, "latency_ms": 800, "time_to_first_token_ms": 200, "attempts": [],
        "referer": null, "title": null, "user": null
    }))
    .unwrap();
    const RECORDS: i64 = 1_000_000;
    for chunk in 0..RECORDS / 10_000 {
        let batch: Vec<UsageRecord> = (0..10_000)
            .map(|i| {
                let n = chunk * 10_000 + i;
                let at = day + n * 86_400 / RECORDS;
                let mut r = template.clone();
                r.id = format!("gen-{at:010}-{n:020}");
                r.created_at = at;
                r.model = format!("model-{}", n % 5);
                // One record in five is another key's.
                if n % 5 == 0 {
                    r.key_id = Some(format!("key-{}", n % 1000));
                }
                r
            })
            .collect();
        db.put_records(&batch).unwrap();
    }
    let mut g = c.benchmark_group("activity");
    g.sample_size(20);
    g.bench_function("a_day_of_a_busy_key_by_model_in_a_million_records", |b| {
        let q = ActivityQuery {
            key: Some("busy".into()),
            since: day,
            until: day + 86_400,
            bucket: Bucket::Hour,
            group_by: Some(GroupBy::Model),
        };
        b.iter(|| {
            let rows = summarize(&q, db.activity(q.since, q.until).unwrap());
            // The busy key's four models (the fifth is the other keys'), each hour.
            assert_eq!(rows.len(), 24 * 4);
            black_box(rows)
        })
    });
    g.bench_function("a_page_of_fifty_of_a_busy_key_in_a_million_records", |b| {
        let q = GenerationQuery {
            key: Some("busy".into()),
            limit: 50,
            ..Default::default()
        };
        b.iter(|| black_box(db.list_records(&q).unwrap()))
    });
    g.finish();
}

criterion_group!(metering, benches, activity);
criterion_main!(metering);
