//! [`ModelRewriteLayer`]: resolves the request's `model` against the [`Catalog`].
//!
//! Reads the typed request's `model`; inserts a [`RoutePlan`] (every target, best first) and
//! the first [`Target`] (which a fallback layer further in replaces attempt by attempt). An
//! id that resolves to nothing is answered with a 404 in the envelope without calling the
//! inner service. Resolution: aliases, then catalog ids (endpoints cheapest first), then
//! `<provider>/<model>` passed through to that provider as `<model>` (cost unknown).
//!
//! The catalog sits in an `Arc`: every clone of the layer and its services shares it.
//!
//! ```
//! use std::sync::Arc;
//! use modelgate::model_rewrite::{Catalog, ModelRewriteLayer};
//! use modelgate::provider::{Provider, ProviderKind};
//!
//! let mut catalog = Catalog::new();
//! catalog
//!     .add_provider(Arc::new(
//!         Provider::builder("groq", ProviderKind::OpenAi, "https://api.groq.com/openai/v1")
//!             .build()
//!             .unwrap(),
//!     ))
//!     .unwrap();
//! catalog.add_alias("fast", "groq/llama-3.1-8b-instant");
//! catalog.validate().unwrap();
//! let plan = catalog.resolve("fast").unwrap();
//! assert_eq!(&*plan.targets[0].upstream_model, "llama-3.1-8b-instant");
//! let _layer = ModelRewriteLayer::new(Arc::new(catalog));
//! ```

mod catalog;
mod prefs;
mod sticky;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

pub use self::catalog::{Catalog, DataCollection, Endpoint, Model, ModelInfo};
pub use self::prefs::{used_parameters, MaxPrice, ProviderPrefs, Sort, Variant};
use self::sticky::Sessions;
use crate::auth::Principal;
use crate::chat::ChatRequest;
use crate::facts::{RoutePlan, Target};
use crate::future::ResponseFuture;
use crate::Error;

/// Builds [`ModelRewrite`]; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct ModelRewriteLayer {
    catalog: Arc<Catalog>,
    sessions: Option<Arc<Sessions>>,
}

/// How long a sticky session lasts without a request, by default: about as long as
/// providers keep a prompt cache.
pub const DEFAULT_SESSION_IDLE: Duration = Duration::from_secs(300);

impl ModelRewriteLayer {
    /// Resolves against this catalog; sessions stick to their endpoint for
    /// [`DEFAULT_SESSION_IDLE`].
    pub fn new(catalog: Arc<Catalog>) -> Self {
        ModelRewriteLayer {
            catalog,
            sessions: Some(Arc::new(Sessions::new(DEFAULT_SESSION_IDLE))),
        }
    }

    /// How long a session stays on its endpoint without a request (`None` or zero: no
    /// sticky sessions). A session is one key's requests for one model with the same
    /// `session_id` (body) or `x-session-id` (header), or else the same instructions and first
    /// user message.
    pub fn sticky_sessions(mut self, idle: Option<Duration>) -> Self {
        self.sessions = idle
            .filter(|d| !d.is_zero())
            .map(|d| Arc::new(Sessions::new(d)));
        self
    }
}

impl<S> Layer<S> for ModelRewriteLayer {
    type Service = ModelRewrite<S>;
    fn layer(&self, inner: S) -> ModelRewrite<S> {
        ModelRewrite {
            inner,
            catalog: self.catalog.clone(),
            sessions: self.sessions.clone(),
        }
    }
}

/// Resolves `model` into a [`RoutePlan`]; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct ModelRewrite<S> {
    inner: S,
    catalog: Arc<Catalog>,
    sessions: Option<Arc<Sessions>>,
}

impl<S, B> Service<Request<ChatRequest>> for ModelRewrite<S>
where
    S: Service<Request<ChatRequest>, Response = Response<B>, Error = Error>,
{
    type Response = Response<B>;
    type Error = Error;
    type Future = ResponseFuture<S::Future, Response<B>, Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ChatRequest>) -> Self::Future {
        let mut read: Option<tokio::time::Instant> = None;
        let mut now = || *read.get_or_insert_with(tokio::time::Instant::now);
        let mut plan: RoutePlan = match self.catalog.plan_with(req.body(), &mut now) {
            Ok(plan) => plan,
            Err(e) => return ResponseFuture::ready(Err(e)),
        };
        if let Some(sessions) = &self.sessions {
            // Only where there is a choice to make, and the request did not make it
            // (`provider.order`, `provider.sort`, `:floor`, `:nitro`).
            let decided = || {
                let set = |k: &str| {
                    req.body()
                        .provider
                        .as_ref()
                        .is_some_and(|p| p.get(k).is_some_and(|v| !v.is_null()))
                };
                set("order")
                    || set("sort")
                    || Variant::split(&plan.model)
                        .is_some_and(|(_, v)| matches!(v, Variant::Floor | Variant::Nitro))
            };
            // An embeddings request has no conversation: only its `x-session-id` could make one.
            let conversation =
                !req.body().messages.is_empty() || req.headers().contains_key("x-session-id");
            if plan.targets.len() > 1 && conversation && !decided() {
                let key = req.extensions().get::<Principal>().map(|p| p.id.as_str());
                let header = req
                    .headers()
                    .get("x-session-id")
                    .and_then(|v| v.to_str().ok());
                let session = sessions.session_of(key, req.body(), header, &plan.model);
                sessions.stick(session, &mut plan, now());
            }
        }
        // A key limited to some models: every model the request may be served by must be
        // listed (by the id sent or the one it resolved to).
        if let Some(allowed) = req
            .extensions()
            .get::<Principal>()
            .and_then(|p| p.models.as_ref())
        {
            let body = req.body();
            let sent = std::iter::once(&body.model).chain(body.models.iter().flatten());
            for sent in sent {
                let model = self.catalog.model_of(sent);
                let ok = allowed
                    .iter()
                    .any(|m| m == sent || model.as_deref().is_some_and(|r| m == r));
                if !ok {
                    return ResponseFuture::ready(Err(Error::new(
                        http::StatusCode::FORBIDDEN,
                        "permission_error",
                        format!("model `{sent}` is not allowed for this key"),
                    )
                    .with_param(Some("model".into()))
                    .with_source(crate::error::ErrorSource::Client)));
                }
            }
        }
        if Variant::split(&plan.model).is_some_and(|(_, v)| v == Variant::Thinking) {
            let reasoning = req
                .body_mut()
                .reasoning
                .get_or_insert_with(Default::default);
            reasoning.enabled.get_or_insert(true);
        }
        let first: Option<Target> = plan.targets.first().cloned();
        let ext = req.extensions_mut();
        if let Some(t) = first {
            ext.insert(t);
        }
        ext.insert(plan);
        ResponseFuture::Inner {
            future: self.inner.call(req),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::Pricing;
    use crate::provider::{Provider, ProviderKind};
    use tower::{service_fn, ServiceExt};

    fn catalog() -> Arc<Catalog> {
        let mut c = Catalog::new();
        let a = Arc::new(
            Provider::builder("a", ProviderKind::OpenAi, "http://127.0.0.1:1/v1")
                .build()
                .unwrap(),
        );
        let b = Arc::new(
            Provider::builder("b", ProviderKind::OpenAi, "http://127.0.0.1:2/v1")
                .build()
                .unwrap(),
        );
        c.add_provider(a.clone()).unwrap();
        c.add_provider(b.clone()).unwrap();
        let ep = |p: &Arc<Provider>, price: f64| {
            Endpoint::new(p.clone(), "up", Pricing::new(price, price))
        };
        c.add_model(Model {
            id: Arc::from("vendor/m"),
            name: "M".into(),
            context_length: Some(1000),
            endpoints: vec![ep(&a, 3.0), ep(&b, 1.0)],
            hedge: None,
            info: Default::default(),
        })
        .unwrap();
        c.add_alias("cheap", "vendor/m");
        c.validate().unwrap();
        Arc::new(c)
    }

    async fn served_by(model: &str) -> Result<(String, String, usize), Error> {
        let svc = ModelRewriteLayer::new(catalog()).layer(service_fn(
            |req: Request<ChatRequest>| async move {
                let t = req.extensions().get::<Target>().unwrap();
                let plan = req.extensions().get::<RoutePlan>().unwrap();
                Ok::<_, Error>(Response::new((
                    t.provider.name().to_owned(),
                    t.upstream_model.to_string(),
                    plan.targets.len(),
                )))
            },
        ));
        let req = Request::new(ChatRequest {
            model: model.into(),
            // Cheapest first, not the default random balancing.
            provider: Some(serde_json::json!({"sort": "price"})),
            ..Default::default()
        });
        svc.oneshot(req).await.map(Response::into_body)
    }

    /// The provider that request `body` goes to first, through `layer`.
    async fn first_of(
        layer: &ModelRewriteLayer,
        body: serde_json::Value,
        session: Option<&str>,
    ) -> String {
        let svc = layer
            .clone()
            .layer(service_fn(|req: Request<ChatRequest>| async move {
                let t = req.extensions().get::<Target>().unwrap();
                Ok::<_, Error>(Response::new(t.provider.name().to_owned()))
            }));
        let mut req = Request::new(serde_json::from_value::<ChatRequest>(body).unwrap());
        if let Some(s) = session {
            req.headers_mut().insert("x-session-id", s.parse().unwrap());
        }
        svc.oneshot(req).await.unwrap().into_body()
    }

    fn conversation(first: &str, turns: usize) -> serde_json::Value {
        let mut messages = vec![serde_json::json!({"role": "user", "content": first})];
        for i in 0..turns {
            messages.push(serde_json::json!({"role": "assistant", "content": format!("a{i}")}));
            messages.push(serde_json::json!({"role": "user", "content": format!("u{i}")}));
        }
        serde_json::json!({"model": "vendor/m", "messages": messages})
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_stays_on_its_endpoint_while_it_is_healthy_and_fresh() {
        let layer = ModelRewriteLayer::new(catalog());
        // Balancing is random: a conversation keeps its first endpoint, turn after turn.
        let first = first_of(&layer, conversation("tides?", 0), None).await;
        for turns in 1..30 {
            assert_eq!(
                first_of(&layer, conversation("tides?", turns), None).await,
                first
            );
        }
        // A session id, from the body or the header, whatever the messages.
        let mut body = conversation("x", 0);
        body["session_id"] = "s-1".into();
        let s1 = first_of(&layer, body.clone(), None).await;
        for i in 0..30 {
            body["messages"][0]["content"] = format!("other {i}").into();
            assert_eq!(first_of(&layer, body.clone(), None).await, s1);
        }
        let h = first_of(&layer, conversation("y", 0), Some("s-2")).await;
        for i in 0..30 {
            assert_eq!(
                first_of(&layer, conversation(&format!("z{i}"), 0), Some("s-2")).await,
                h
            );
        }
        // Sessions spread over both endpoints.
        let mut seen = std::collections::HashSet::new();
        for i in 0..64 {
            seen.insert(first_of(&layer, conversation(&format!("q{i}"), 0), None).await);
        }
        assert_eq!(seen.len(), 2);
        // `provider.order` decides over the session.
        let other = if first == "a" { "b" } else { "a" };
        let mut ordered = conversation("tides?", 1);
        ordered["provider"] = serde_json::json!({"order": [other]});
        assert_eq!(first_of(&layer, ordered, None).await, other);
        // Idle past the timeout: the session starts over (and goes anywhere).
        tokio::time::advance(DEFAULT_SESSION_IDLE + Duration::from_secs(1)).await;
        let mut after = std::collections::HashSet::new();
        for i in 0..64 {
            let layer = layer.clone();
            tokio::time::advance(DEFAULT_SESSION_IDLE + Duration::from_secs(1)).await;
            after.insert(first_of(&layer, conversation("tides?", i), None).await);
        }
        assert_eq!(after.len(), 2, "no longer held");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cooling_endpoint_lets_its_sessions_go() {
        let catalog = catalog();
        let layer = ModelRewriteLayer::new(catalog.clone());
        let body = || {
            let mut b = conversation("tides?", 0);
            b["session_id"] = "s".into();
            b
        };
        let first = first_of(&layer, body(), None).await;
        let model = &catalog.models()[0];
        let stuck = model
            .endpoints
            .iter()
            .find(|e| e.provider.name() == first)
            .unwrap();
        stuck.health.on_rate_limited(
            tokio::time::Instant::now(),
            Duration::from_secs(60),
            &crate::health::HealthPolicy::default(),
        );
        let moved = first_of(&layer, body(), None).await;
        assert_ne!(moved, first);
        // The session now sticks to where it went.
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(first_of(&layer, body(), None).await, moved);
        let off = ModelRewriteLayer::new(catalog).sticky_sessions(None);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..64 {
            seen.insert(first_of(&off, body(), None).await);
        }
        assert_eq!(
            seen.len(),
            2,
            "without sticky sessions, balancing as before"
        );
    }

    #[tokio::test]
    async fn a_key_limited_to_some_models_gets_403_for_the_others() {
        let mut record = crate::auth::KeyRecord::from_config("k", "sk-mg-0123456789abcdef");
        record.models = Some(vec!["vendor/m".into()]);
        let principal = Principal::new(record);
        for (model, ok) in [("vendor/m", true), ("cheap", true), ("a/other", false)] {
            let svc = ModelRewriteLayer::new(catalog()).layer(service_fn(
                |_req: Request<ChatRequest>| async { Ok::<_, Error>(Response::new(())) },
            ));
            let mut req = Request::new(ChatRequest {
                model: model.into(),
                ..Default::default()
            });
            req.extensions_mut().insert(principal.clone());
            match svc.oneshot(req).await {
                Ok(_) => assert!(ok, "{model} should be refused"),
                Err(e) => {
                    assert!(!ok, "{model} should pass: {}", e.message());
                    assert_eq!(e.status(), http::StatusCode::FORBIDDEN);
                    assert!(e.message().contains(model));
                }
            }
        }
    }

    #[tokio::test]
    async fn catalog_alias_and_pass_through() {
        assert_eq!(
            served_by("vendor/m").await.unwrap(),
            ("b".into(), "up".into(), 2)
        );
        assert_eq!(
            served_by("cheap").await.unwrap(),
            ("b".into(), "up".into(), 2)
        );
        assert_eq!(
            served_by("a/some/model").await.unwrap(),
            ("a".into(), "some/model".into(), 1)
        );
        let e = served_by("nope/x").await.unwrap_err();
        assert_eq!(e.status(), http::StatusCode::NOT_FOUND);
        assert!(e.message().contains("nope/x"));
        assert_eq!(
            served_by("a/").await.unwrap_err().status(),
            http::StatusCode::NOT_FOUND
        );
    }
}
