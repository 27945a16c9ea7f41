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

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

pub use self::catalog::{Catalog, DataCollection, Endpoint, Model, ModelInfo};
pub use self::prefs::{used_parameters, MaxPrice, ProviderPrefs, Sort, Variant};
use crate::auth::Principal;
use crate::chat::ChatRequest;
use crate::facts::{RoutePlan, Target};
use crate::future::ResponseFuture;
use crate::Error;

/// Builds [`ModelRewrite`]; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct ModelRewriteLayer {
    catalog: Arc<Catalog>,
}

impl ModelRewriteLayer {
    /// Resolves against this catalog.
    pub fn new(catalog: Arc<Catalog>) -> Self {
        ModelRewriteLayer { catalog }
    }
}

impl<S> Layer<S> for ModelRewriteLayer {
    type Service = ModelRewrite<S>;
    fn layer(&self, inner: S) -> ModelRewrite<S> {
        ModelRewrite {
            inner,
            catalog: self.catalog.clone(),
        }
    }
}

/// Resolves `model` into a [`RoutePlan`]; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct ModelRewrite<S> {
    inner: S,
    catalog: Arc<Catalog>,
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
        let plan: RoutePlan = match self.catalog.plan_with(req.body(), &mut now) {
            Ok(plan) => plan,
            Err(e) => return ResponseFuture::ready(Err(e)),
        };
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
