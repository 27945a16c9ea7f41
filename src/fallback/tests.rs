use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::{service_fn, Layer, ServiceExt};

use super::*;
use crate::error::{ErrorSource, Retry};
use crate::facts::{AttemptOutcome, Attempts, RoutePlan, Target};
use crate::provider::{Provider, ProviderKind};

/// A body that yields these frames, then ends.
#[derive(Debug, Default)]
struct Frames(VecDeque<Bytes>);

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

fn frames(parts: &[&'static str]) -> Frames {
    Frames(
        parts
            .iter()
            .map(|p| Bytes::from_static(p.as_bytes()))
            .collect(),
    )
}

/// A body that waits, then yields these frames.
struct Slow {
    sleep: Pin<Box<tokio::time::Sleep>>,
    frames: Frames,
}

impl Body for Slow {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        std::task::ready!(std::future::Future::poll(self.sleep.as_mut(), cx));
        Pin::new(&mut self.frames).poll_frame(cx)
    }
}

/// What a scripted target does on one call.
#[derive(Debug, Clone, Copy)]
enum Act {
    Ok,
    /// Answers after this many milliseconds.
    Late(u64),
    /// Fails with this status after this many milliseconds.
    LateFail(u64, u16),
    /// Streams only: headers at once, the first event after this many milliseconds.
    SlowFirstEvent(u64),
    Status(u16, Option<u64>),
    Refused,
    /// The attempt cannot be said in this provider's API: a 400 of the request's, tried
    /// elsewhere.
    Untranslatable,
    StreamError(u16),
    StreamThenCut,
    Hang,
}

type Script = Arc<Mutex<std::collections::HashMap<String, VecDeque<Act>>>>;
type Calls = Arc<Mutex<Vec<(String, Instant)>>>;

fn provider(name: &str, rpm: Option<u32>) -> Arc<Provider> {
    Arc::new(
        Provider::builder(name, ProviderKind::OpenAi, "http://127.0.0.1:9/v1")
            .requests_per_minute(rpm.and_then(std::num::NonZeroU32::new))
            .build()
            .unwrap(),
    )
}

fn target(name: &str, model: &str) -> Target {
    Target::new(provider(name, None), "up", model)
}

fn upstream_error(name: &str, status: u16, retry_after: Option<u64>) -> Error {
    let mut headers = http::HeaderMap::new();
    if let Some(s) = retry_after {
        headers.insert("retry-after", s.into());
    }
    crate::provider::upstream_error(
        StatusCode::from_u16(status).unwrap(),
        &headers,
        br#"{"error":{"message":"no"}}"#,
        &Arc::from(name),
        &crate::error::Secrets::none(),
    )
}

/// An inner service that plays each provider's script (default: `Ok`) and logs every call.
fn scripted(
    script: Script,
    calls: Calls,
) -> impl Service<
    Request<ChatRequest>,
    Response = Response<Frames>,
    Error = Error,
    Future = BoxFuture<'static, Result<Response<Frames>, Error>>,
> + Clone {
    service_fn(move |req: Request<ChatRequest>| {
        let t = req.extensions().get::<Target>().unwrap().clone();
        let name = t.provider.name().to_owned();
        calls.lock().unwrap().push((name.clone(), Instant::now()));
        let act = script
            .lock()
            .unwrap()
            .get_mut(&name)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Act::Ok);
        let stream = req.body().is_stream();
        let fut: BoxFuture<'static, Result<Response<Frames>, Error>> = Box::pin(async move {
            match act {
                Act::Ok if stream => Ok(Response::new(frames(&[
                    ": keepalive\n\n",
                    "data: {\"id\":\"x\",\"choices\":[]}\n\n",
                    "data: [DONE]\n\n",
                ]))),
                Act::Ok => Ok(Response::new(frames(&["{\"served_by\":\"x\"}"]))),
                Act::Status(s, ra) => Err(upstream_error(&name, s, ra)),
                Act::Untranslatable => Err(Error::invalid_request("not here", None)
                    .with_retry(Retry::Elsewhere)),
                Act::Refused => Err(Error::bad_gateway(
                    "connection refused",
                    ErrorSource::Connect,
                    Retry::Safe,
                )),
                Act::StreamError(code) => {
                    let e = upstream_error(&name, code, None);
                    let event: &'static str = Box::leak(
                        String::from_utf8(e.to_sse_event().to_vec())
                            .unwrap()
                            .into_boxed_str(),
                    );
                    Ok(Response::new(frames(&[": keepalive\n\n", event])))
                }
                Act::StreamThenCut => Ok(Response::new(frames(&[
                    "data: {\"id\":\"x\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
                    "data: {\"error\":{\"code\":502,\"message\":\"cut\",\"type\":\"upstream_error\",\"param\":null}}\n\n",
                ]))),
                Act::Hang => std::future::pending().await,
                Act::Late(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok(Response::new(ok_body(stream)))
                }
                Act::LateFail(ms, status) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Err(upstream_error(&name, status, None))
                }
                Act::SlowFirstEvent(_) => unreachable!("handled by the hedging inner"),
            }
        });
        fut
    })
}

fn ok_body(stream: bool) -> Frames {
    if stream {
        frames(&[
            ": keepalive\n\n",
            "data: {\"id\":\"x\",\"choices\":[]}\n\n",
            "data: [DONE]\n\n",
        ])
    } else {
        frames(&["{\"served_by\":\"x\"}"])
    }
}

fn request(targets: Vec<Target>, stream: bool) -> Request<ChatRequest> {
    let mut req = Request::new(ChatRequest {
        model: targets[0].public_model.to_string(),
        stream: Some(stream),
        ..Default::default()
    });
    req.extensions_mut().insert(RoutePlan {
        model: targets[0].public_model.clone(),
        targets,
    });
    req
}

fn fast_policy() -> FallbackPolicy {
    FallbackPolicy {
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_secs(2),
        ..FallbackPolicy::default()
    }
}

struct Harness {
    script: Script,
    calls: Calls,
    layer: FallbackLayer,
}

impl Harness {
    fn new(policy: FallbackPolicy) -> Self {
        Harness {
            script: Script::default(),
            calls: Calls::default(),
            layer: FallbackLayer::new().policy(policy),
        }
    }

    fn script(&self, name: &str, acts: &[Act]) {
        self.script
            .lock()
            .unwrap()
            .insert(name.to_owned(), acts.iter().cloned().collect());
    }

    async fn send(
        &self,
        req: Request<ChatRequest>,
    ) -> Result<Response<FallbackBody<Frames>>, Error> {
        let svc = self
            .layer
            .layer(scripted(self.script.clone(), self.calls.clone()));
        svc.oneshot(req).await
    }

    fn called(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.0.clone())
            .collect()
    }
}

async fn text(res: Response<FallbackBody<Frames>>) -> String {
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn fails_over_in_order_and_records_every_attempt() {
    let h = Harness::new(fast_policy());
    h.script("a", &[Act::Status(503, None)]);
    h.script("b", &[Act::Refused]);
    let attempts = Attempts::new();
    let mut req = request(
        vec![target("a", "m"), target("b", "m"), target("c", "m")],
        false,
    );
    req.extensions_mut().insert(attempts.clone());
    let res = h.send(req).await.unwrap();
    assert!(res.extensions().get::<Attempts>().is_some());
    assert_eq!(h.called(), ["a", "b", "c"]);
    let rec = attempts.to_vec();
    let summary: Vec<(&str, AttemptOutcome, Option<u16>)> = rec
        .iter()
        .map(|a| (&*a.provider, a.outcome, a.status))
        .collect();
    assert_eq!(
        summary,
        [
            ("a", AttemptOutcome::Failed, Some(503)),
            ("b", AttemptOutcome::Failed, Some(502)),
            ("c", AttemptOutcome::Served, Some(200)),
        ]
    );
    assert!(rec[0].error.as_deref().unwrap().contains("a"));
}

#[tokio::test(start_paused = true)]
async fn a_request_error_ends_the_walk_at_once() {
    let h = Harness::new(fast_policy());
    h.script("a", &[Act::Status(400, None)]);
    let e = h
        .send(request(vec![target("a", "m"), target("b", "m")], false))
        .await
        .unwrap_err();
    assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    assert_eq!(h.called(), ["a"]);
    assert_eq!(e.should_retry(), None, "one attempt: no advice");
}

#[tokio::test(start_paused = true)]
async fn a_models_list_moves_on_to_the_next_model_on_any_upstream_error() {
    let h = Harness::new(fast_policy());
    h.script("a", &[Act::Status(400, None)]);
    let res = h
        .send(request(
            vec![target("a", "m1"), target("b", "m1"), target("c", "m2")],
            false,
        ))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(h.called(), ["a", "c"], "b serves the same model: skipped");
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_with_jitter_then_give_up_with_should_retry_false() {
    let h = Harness::new(FallbackPolicy {
        retries_per_target: 2,
        ..fast_policy()
    });
    h.script(
        "a",
        &[
            Act::Status(500, None),
            Act::Status(500, None),
            Act::Status(502, None),
        ],
    );
    let t0 = Instant::now();
    let e = h
        .send(request(vec![target("a", "m")], false))
        .await
        .unwrap_err();
    assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(e.should_retry(), Some(false));
    let calls = h.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 3, "one try and retries_per_target = 2");
    let gap1 = calls[1].1 - calls[0].1;
    let gap2 = calls[2].1 - calls[1].1;
    // Full jitter: below the base, then below twice the base (the spread is tested below).
    assert!(gap1 <= Duration::from_millis(100), "{gap1:?}");
    assert!(gap2 <= Duration::from_millis(200), "{gap2:?}");
    assert_eq!(calls[0].1, t0);
    let res = e.into_response();
    assert_eq!(res.headers()["x-should-retry"], "false");
}

#[test]
fn backoffs_are_drawn_below_a_bound_that_doubles_per_retry() {
    let policy = FallbackPolicy {
        backoff_base: Duration::from_millis(25),
        backoff_max: Duration::from_millis(150),
        ..FallbackPolicy::default()
    };
    for (tries, bound) in [(1, 25), (2, 50), (3, 100), (4, 150), (9, 150)] {
        let bound = Duration::from_millis(bound);
        let waits: Vec<Duration> = (0..4000).map(|_| super::backoff(&policy, tries)).collect();
        assert!(
            waits.iter().all(|w| *w <= bound),
            "retry {tries}: {bound:?}"
        );
        // Full jitter: uniform below the bound, so a mean of half of it (equal jitter, a wait
        // between half and all of it, would give three quarters) and some waits near zero.
        let mean = waits.iter().sum::<Duration>() / 4000;
        assert!(
            mean > bound * 2 / 5 && mean < bound * 3 / 5,
            "retry {tries}: mean {mean:?} of {bound:?}"
        );
        assert!(waits.iter().any(|w| *w < bound / 10), "retry {tries}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_backoff_counts_from_the_targets_own_failure() {
    let h = Harness::new(fast_policy());
    // `a` fails at once, `b` only after 150 ms: by then `a`'s backoff (below 100 ms) is over.
    h.script("a", &[Act::Status(503, None)]);
    h.script("b", &[Act::LateFail(150, 503)]);
    let t0 = Instant::now();
    let res = h
        .send(request(vec![target("a", "m"), target("b", "m")], false))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let calls = h.calls.lock().unwrap().clone();
    let at: Vec<_> = calls.iter().map(|(n, t)| (n.as_str(), *t - t0)).collect();
    assert_eq!(
        at,
        [
            ("a", Duration::ZERO),
            ("b", Duration::ZERO),
            ("a", Duration::from_millis(150)),
        ],
        "a's retry waits no longer once its backoff has passed"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_and_a_long_one_is_not_waited_for() {
    let h = Harness::new(fast_policy());
    h.script("a", &[Act::Status(429, Some(3))]);
    let res = h
        .send(request(vec![target("a", "m")], false))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let calls = h.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].1 - calls[0].1, Duration::from_secs(3));

    let h = Harness::new(fast_policy());
    h.script("a", &[Act::Status(429, Some(60))]);
    let t0 = Instant::now();
    let e = h
        .send(request(vec![target("a", "m")], false))
        .await
        .unwrap_err();
    assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(60)));
    assert_eq!(h.called(), ["a"], "60 s is over max_retry_wait");
    assert_eq!(Instant::now(), t0, "never waited");
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_told_to_wait_cools_down_and_is_skipped() {
    let h = Harness::new(fast_policy());
    let a = target("a", "m");
    let b = target("b", "m");
    h.script("a", &[Act::Status(429, Some(60))]);
    let res = h
        .send(request(vec![a.clone(), b.clone()], false))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(h.called(), ["a", "b"]);
    // Within the minute: a is skipped, never called.
    let attempts = Attempts::new();
    let mut req = request(vec![a.clone(), b.clone()], false);
    req.extensions_mut().insert(attempts.clone());
    h.send(req).await.unwrap();
    assert_eq!(h.called(), ["a", "b", "b"]);
    assert_eq!(attempts.to_vec()[0].outcome, AttemptOutcome::Skipped);
    // After it: a is probed again.
    tokio::time::advance(Duration::from_secs(61)).await;
    h.send(request(vec![a.clone(), b.clone()], false))
        .await
        .unwrap();
    assert_eq!(h.called(), ["a", "b", "b", "a"]);
}

#[tokio::test(start_paused = true)]
async fn every_endpoint_cooling_is_answered_at_once_with_retry_after() {
    let h = Harness::new(fast_policy());
    let a = target("a", "m");
    h.script("a", &[Act::Status(429, Some(20))]);
    // 20 s is over the 10 s retry wait: the first request gets the 429 itself.
    let e = h.send(request(vec![a.clone()], false)).await.unwrap_err();
    assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
    tokio::time::advance(Duration::from_secs(5)).await;
    let t = Instant::now();
    let e = h.send(request(vec![a.clone()], false)).await.unwrap_err();
    assert_eq!(Instant::now(), t, "answered at once");
    assert_eq!(
        e.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "every provider asked to wait: a rate limit"
    );
    assert_eq!(e.retry_after(), Some(Duration::from_secs(15)));
    assert_eq!(h.called(), ["a"]);

    // One endpoint failing, the other rate limited: 503.
    let b = target("b", "m");
    let h2 = Harness::new(FallbackPolicy {
        retries_per_target: 0,
        ..fast_policy()
    });
    h2.script("b", &[Act::Refused; 5]);
    for _ in 0..5 {
        let _ = h2.send(request(vec![b.clone()], false)).await;
    }
    let e = h2
        .send(request(vec![a.clone(), b.clone()], false))
        .await
        .unwrap_err();
    assert_eq!(
        e.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        e.message()
    );
    assert!(e.message().contains("cooling down"));
    assert!(e.retry_after().unwrap() >= Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_provider_out_of_requests_is_skipped_not_queued() {
    let h = Harness::new(fast_policy());
    let limited = Target::new(provider("a", Some(1)), "up", "m");
    let b = target("b", "m");
    h.send(request(vec![limited.clone(), b.clone()], false))
        .await
        .unwrap();
    h.send(request(vec![limited.clone(), b.clone()], false))
        .await
        .unwrap();
    assert_eq!(h.called(), ["a", "b"]);
}

#[tokio::test(start_paused = true)]
async fn the_retry_budget_stops_retries_but_not_fail_over() {
    let h = Harness {
        layer: FallbackLayer::new().policy(fast_policy()).retry_budget(
            Duration::from_secs(1),
            0,
            0.0,
        ),
        ..Harness::new(fast_policy())
    };
    h.script("a", &[Act::Status(503, None)]);
    h.script("b", &[Act::Status(503, None)]);
    let e = h
        .send(request(vec![target("a", "m"), target("b", "m")], false))
        .await
        .unwrap_err();
    assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h.called(), ["a", "b"], "fail-over is free, retries are not");
    assert_eq!(e.should_retry(), Some(false));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_bounds_the_wait() {
    let h = Harness::new(FallbackPolicy {
        deadline: Some(Duration::from_secs(5)),
        ..fast_policy()
    });
    h.script("a", &[Act::Hang]);
    let t0 = Instant::now();
    let e = h
        .send(request(vec![target("a", "m"), target("b", "m")], false))
        .await
        .unwrap_err();
    assert_eq!(e.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(Instant::now() - t0, Duration::from_secs(5));
    assert_eq!(h.called(), ["a"]);
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_fails_before_its_first_event_fails_over_unnoticed() {
    let h = Harness::new(fast_policy());
    h.script("a", &[Act::StreamError(529)]);
    let attempts = Attempts::new();
    let mut req = request(vec![target("a", "m"), target("b", "m")], true);
    req.extensions_mut().insert(attempts.clone());
    let res = h.send(req).await.unwrap();
    let body = text(res).await;
    assert_eq!(
        body,
        ": keepalive\n\n: keepalive\n\ndata: {\"id\":\"x\",\"choices\":[]}\n\ndata: [DONE]\n\n"
    );
    assert_eq!(h.called(), ["a", "b"]);
    let outcomes: Vec<AttemptOutcome> = attempts.to_vec().iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, [AttemptOutcome::Failed, AttemptOutcome::Served]);
    assert_eq!(attempts.to_vec()[0].status, Some(503));
}

#[tokio::test(start_paused = true)]
async fn a_stream_with_every_target_failing_ends_in_one_error_event() {
    let h = Harness::new(FallbackPolicy {
        retries_per_target: 0,
        ..fast_policy()
    });
    h.script("a", &[Act::StreamError(503)]);
    h.script("b", &[Act::StreamError(500)]);
    let res = h
        .send(request(vec![target("a", "m"), target("b", "m")], true))
        .await
        .unwrap();
    let body = text(res).await;
    assert_eq!(body.matches("data: ").count(), 1, "{body}");
    assert!(
        body.ends_with("\n\n") && body.contains("\"code\":502"),
        "{body}"
    );
    assert_eq!(h.called(), ["a", "b"]);
}

#[tokio::test(start_paused = true)]
async fn a_stream_cut_after_its_first_event_is_never_retried() {
    let h = Harness::new(fast_policy());
    h.script("a", &[Act::StreamThenCut]);
    let res = h
        .send(request(vec![target("a", "m"), target("b", "m")], true))
        .await
        .unwrap();
    let body = text(res).await;
    assert!(body.contains("\"content\":\"hi\"") && body.contains("\"message\":\"cut\""));
    assert_eq!(h.called(), ["a"]);
}

#[tokio::test(start_paused = true)]
async fn a_failing_endpoint_cools_after_failures_in_a_row() {
    let h = Harness::new(FallbackPolicy {
        retries_per_target: 0,
        ..fast_policy()
    });
    let a = target("a", "m");
    let b = target("b", "m");
    h.script("a", &[Act::Refused; 5]);
    for _ in 0..7 {
        h.send(request(vec![a.clone(), b.clone()], false))
            .await
            .unwrap();
    }
    let to_a = h.called().iter().filter(|c| *c == "a").count();
    assert_eq!(
        to_a, 5,
        "cooling after 5 failures in a row: not called again"
    );
    assert!(a.health.snapshot(Instant::now()).cooling);
}

#[tokio::test(start_paused = true)]
async fn a_request_one_provider_cannot_take_moves_on_without_cooling_it() {
    let h = Harness::new(FallbackPolicy {
        retries_per_target: 0,
        ..fast_policy()
    });
    let a = target("a", "m");
    let b = target("b", "m");
    h.script("a", &[Act::Untranslatable; 7]);
    for _ in 0..7 {
        h.send(request(vec![a.clone(), b.clone()], false))
            .await
            .unwrap();
    }
    assert_eq!(h.called().iter().filter(|c| *c == "b").count(), 7);
    assert_eq!(h.called().iter().filter(|c| *c == "a").count(), 7);
    assert!(
        !a.health.snapshot(Instant::now()).cooling,
        "the request's fault, not the endpoint's"
    );
}

/// Hedging: an inner whose bodies may hold back their first event.
mod hedging {
    use super::*;
    use crate::facts::Hedge;
    use http_body_util::combinators::UnsyncBoxBody;

    type AnyBody = UnsyncBoxBody<Bytes, Infallible>;

    fn hedged(name: &str, after_ms: u64) -> Target {
        let mut t = target(name, "m");
        t.hedge = Some(Hedge::After(Duration::from_millis(after_ms)));
        t
    }

    fn inner(
        script: Script,
        calls: Calls,
    ) -> impl Service<
        Request<ChatRequest>,
        Response = Response<AnyBody>,
        Error = Error,
        Future = BoxFuture<'static, Result<Response<AnyBody>, Error>>,
    > + Clone {
        let plain = scripted(script.clone(), calls.clone());
        service_fn(move |req: Request<ChatRequest>| {
            let name = req
                .extensions()
                .get::<Target>()
                .unwrap()
                .provider
                .name()
                .to_owned();
            let next = script
                .lock()
                .unwrap()
                .get(&name)
                .and_then(|q| q.front().copied());
            let stream = req.body().is_stream();
            let mut plain = plain.clone();
            let fut: BoxFuture<'static, Result<Response<AnyBody>, Error>> = match next {
                Some(Act::SlowFirstEvent(ms)) => {
                    script.lock().unwrap().get_mut(&name).unwrap().pop_front();
                    calls.lock().unwrap().push((name, Instant::now()));
                    Box::pin(async move {
                        let body = Slow {
                            sleep: Box::pin(tokio::time::sleep(Duration::from_millis(ms))),
                            frames: ok_body(stream),
                        };
                        Ok(Response::new(UnsyncBoxBody::new(body)))
                    })
                }
                _ => Box::pin(async move {
                    let res = plain.call(req).await?;
                    Ok(res.map(UnsyncBoxBody::new))
                }),
            };
            fut
        })
    }

    async fn send(
        h: &Harness,
        req: Request<ChatRequest>,
    ) -> Result<Response<FallbackBody<AnyBody>>, Error> {
        h.layer
            .layer(inner(h.script.clone(), h.calls.clone()))
            .oneshot(req)
            .await
    }

    async fn body_text(res: Response<FallbackBody<AnyBody>>) -> String {
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_answer_is_hedged_and_the_first_to_answer_wins() {
        let h = Harness::new(fast_policy());
        h.script("a", &[Act::Late(5_000)]);
        h.script("b", &[Act::Late(100)]);
        let attempts = Attempts::new();
        let mut req = request(vec![hedged("a", 1_000), hedged("b", 1_000)], false);
        req.extensions_mut().insert(attempts.clone());
        let t0 = Instant::now();
        let res = send(&h, req).await.unwrap();
        assert_eq!(
            Instant::now() - t0,
            Duration::from_millis(1_100),
            "hedge at 1 s, answer 100 ms later"
        );
        assert_eq!(body_text(res).await, "{\"served_by\":\"x\"}");
        let rec: Vec<(String, AttemptOutcome)> = attempts
            .to_vec()
            .iter()
            .map(|a| (a.provider.to_string(), a.outcome))
            .collect();
        assert_eq!(
            rec,
            [
                ("a".to_owned(), AttemptOutcome::Cancelled),
                ("b".to_owned(), AttemptOutcome::Served)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_answer_starts_no_hedge() {
        let h = Harness::new(fast_policy());
        h.script("a", &[Act::Late(200)]);
        let res = send(
            &h,
            request(vec![hedged("a", 1_000), hedged("b", 1_000)], false),
        )
        .await
        .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(h.called(), ["a"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_is_hedged_on_its_first_event_not_its_headers() {
        let h = Harness::new(fast_policy());
        h.script("a", &[Act::SlowFirstEvent(5_000)]);
        let t0 = Instant::now();
        let res = send(
            &h,
            request(vec![hedged("a", 1_000), hedged("b", 1_000)], true),
        )
        .await
        .unwrap();
        let body = body_text(res).await;
        assert_eq!(
            body,
            "data: {\"id\":\"x\",\"choices\":[]}\n\ndata: [DONE]\n\n"
        );
        assert_eq!(
            Instant::now() - t0,
            Duration::from_secs(1),
            "b answered at once"
        );
        assert_eq!(h.called(), ["a", "b"]);
    }

    #[tokio::test(start_paused = true)]
    async fn when_the_hedge_fails_the_first_attempt_still_serves() {
        let h = Harness::new(fast_policy());
        h.script("a", &[Act::Late(3_000)]);
        h.script("b", &[Act::Status(503, None)]);
        let t0 = Instant::now();
        let res = send(
            &h,
            request(vec![hedged("a", 1_000), hedged("b", 1_000)], false),
        )
        .await
        .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(Instant::now() - t0, Duration::from_secs(3));
        assert_eq!(h.called(), ["a", "b"]);
    }

    #[tokio::test(start_paused = true)]
    async fn both_failing_goes_on_with_the_plan() {
        let h = Harness::new(FallbackPolicy {
            retries_per_target: 0,
            ..fast_policy()
        });
        h.script("a", &[Act::LateFail(2_000, 500)]);
        h.script("b", &[Act::Status(503, None)]);
        let attempts = Attempts::new();
        let mut req = request(
            vec![hedged("a", 1_000), hedged("b", 1_000), target("c", "m")],
            false,
        );
        req.extensions_mut().insert(attempts.clone());
        let t0 = Instant::now();
        let res = send(&h, req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            Instant::now() - t0,
            Duration::from_secs(2),
            "c right after a failed"
        );
        assert_eq!(h.called(), ["a", "b", "c"]);
        let outcomes: Vec<AttemptOutcome> = attempts.to_vec().iter().map(|a| a.outcome).collect();
        assert_eq!(
            outcomes,
            [
                AttemptOutcome::Failed,
                AttemptOutcome::Failed,
                AttemptOutcome::Served
            ]
        );
    }
}

mod property {
    use super::*;
    use proptest::prelude::*;

    fn act() -> impl Strategy<Value = Act> {
        prop_oneof![
            Just(Act::Ok),
            Just(Act::Status(503, None)),
            Just(Act::Status(429, Some(1))),
            Just(Act::Status(400, None)),
            Just(Act::Refused),
            Just(Act::StreamError(529)),
            Just(Act::Late(1_500)),
            Just(Act::LateFail(1_500, 503)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        /// For any plan and any pattern of failures and delays, hedged or not: no target is
        /// called more than the retry policy allows, at most `max_attempts` calls go out, and
        /// the client gets exactly one answer (a response, or an error).
        #[test]
        fn never_beyond_the_retry_policy_and_always_one_answer(
            n in 1usize..5,
            scripts in proptest::collection::vec(proptest::collection::vec(act(), 0..5), 5),
            stream in any::<bool>(),
            retries in 0u32..3,
            hedge in any::<bool>(),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            rt.block_on(async {
                let h = Harness::new(FallbackPolicy { retries_per_target: retries, ..fast_policy() });
                let names = ["a", "b", "c", "d", "e"];
                for (i, s) in scripts.iter().enumerate() {
                    h.script(names[i], s);
                }
                let targets: Vec<Target> = names[..n]
                    .iter()
                    .map(|p| {
                        let mut t = target(p, "m");
                        if hedge {
                            t.hedge = Some(crate::facts::Hedge::After(Duration::from_secs(1)));
                        }
                        t
                    })
                    .collect();
                let answer = h.send(request(targets, stream)).await;
                match answer {
                    Ok(res) => {
                        let body = text(res).await;
                        let events = body.matches("data: ").count();
                        if stream {
                            prop_assert!(body.ends_with("data: [DONE]\n\n") || events == 1, "{}", body);
                        }
                    }
                    Err(e) => prop_assert!(e.status().as_u16() >= 400),
                }
                let called = h.called();
                prop_assert!(called.len() <= FallbackPolicy::default().max_attempts);
                for name in &names[..n] {
                    let count = called.iter().filter(|c| *c == name).count();
                    prop_assert!(count <= 1 + retries as usize, "{name} called {count} times");
                }
                Ok(())
            })?;
        }
    }
}

mod classify {
    use super::body::{classify, FrameKind};
    use crate::Error;
    use proptest::prelude::*;

    /// The first version: every line split out, then the first that is not a comment read.
    fn by_lines(frame: &[u8]) -> FrameKind {
        for event in frame.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            if event.starts_with(b":") {
                continue;
            }
            if event.starts_with(b"data: {\"error\"") || event.starts_with(b"data:{\"error\"") {
                if let Some(e) = Error::from_sse_event(event) {
                    return FrameKind::Error(e);
                }
            }
            return FrameKind::Data;
        }
        FrameKind::Comments
    }

    fn same(a: &FrameKind, b: &FrameKind) -> bool {
        match (a, b) {
            (FrameKind::Comments, FrameKind::Comments) | (FrameKind::Data, FrameKind::Data) => true,
            (FrameKind::Error(a), FrameKind::Error(b)) => {
                a.status() == b.status() && a.message() == b.message()
            }
            _ => false,
        }
    }

    #[test]
    fn frames_are_told_apart() {
        let error = "data: {\"error\":{\"code\":529,\"message\":\"Overloaded\",\"type\":\"overloaded_error\"}}\n\n";
        for (frame, want) in [
            ("", "comments"),
            ("\n\n", "comments"),
            (": keepalive\n\n", "comments"),
            (": keepalive\n\n: keepalive", "comments"),
            ("data: {\"id\":\"gen-1\"}\n\n", "data"),
            (": keepalive\n\ndata: {\"id\":\"gen-1\"}\n\n", "data"),
            ("data: {\"error\" but not JSON\n\n", "data"),
            ("data: [DONE]\n\n", "data"),
            (error, "error"),
        ] {
            let got = match classify(frame.as_bytes()) {
                FrameKind::Comments => "comments",
                FrameKind::Data => "data",
                FrameKind::Error(e) => {
                    assert_eq!(e.message(), "Overloaded");
                    "error"
                }
            };
            assert_eq!(got, want, "{frame:?}");
        }
        let with_comment = format!(": keepalive\n\n{error}");
        assert!(matches!(
            classify(with_comment.as_bytes()),
            FrameKind::Error(_)
        ));
    }

    proptest! {
        #[test]
        fn reads_as_the_line_by_line_version(
            lines in proptest::collection::vec(
                prop_oneof![
                    Just(String::new()),
                    Just(": keepalive".to_owned()),
                    Just("data: {\"error\":{\"code\":502,\"message\":\"cut\"}}".to_owned()),
                    Just("data:{\"error\":{\"message\":\"no code\"}}".to_owned()),
                    Just("data: {\"error\"".to_owned()),
                    "data: [ -~]{0,40}",
                    "[:a-z ]{0,12}",
                ],
                0..6,
            ),
            trailing_newline in any::<bool>(),
        ) {
            let mut frame = lines.join("\n");
            if trailing_newline {
                frame.push('\n');
            }
            let (a, b) = (classify(frame.as_bytes()), by_lines(frame.as_bytes()));
            prop_assert!(same(&a, &b), "{frame:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn durations_set_to_the_maximum_mean_never_and_panic_nothing() {
    // An embedder's way of saying "no limit": every duration of the policy at its maximum.
    let h = Harness::new(FallbackPolicy {
        backoff_base: Duration::MAX,
        backoff_max: Duration::MAX,
        max_retry_wait: Duration::MAX,
        deadline: Some(Duration::MAX),
        health: HealthPolicy {
            cooldown: Duration::MAX,
            max_cooldown: Duration::MAX,
            failures_to_cool: 1,
            ..HealthPolicy::default()
        },
        ..FallbackPolicy::default()
    });
    let (a, b) = (target("a", "m"), target("b", "m"));
    // `a` is told to wait (and cools down for that long); `b` fails once, then answers.
    h.script("a", &[Act::Status(429, Some(5))]);
    h.script("b", &[Act::Status(503, None)]);
    let res = h
        .send(request(vec![a.clone(), b.clone()], false))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(h.called(), ["a", "b", "a"], "a's 5 s wait, then a again");

    // `b` failed and cools down for "ever"; a plan of `b` alone is refused at once.
    h.script("b", &[Act::Status(503, None)]);
    let e = h.send(request(vec![b.clone()], false)).await.unwrap_err();
    let res = e.into_response();
    assert!(res.status().is_server_error(), "{:?}", res.status());
}
