//! `Dispatch` built the embedder's way: through an egress proxy (HTTP `CONNECT`), and to a
//! provider whose certificate a private authority signed.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use modelgate::dispatch::Dispatch;
use modelgate::provider::{Provider, ProviderKind};
use modelgate::{Catalog, DecodeLayer, ModelRewriteLayer, StreamNormalizeLayer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::{ServiceBuilder, ServiceExt};

const ANSWER: &str = r#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;

/// A provider on 127.0.0.1 answering every request with `ANSWER`, over `tls` when given.
async fn provider(tls: Option<tokio_rustls::TlsAcceptor>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    let mut res =
                        http::Response::new(Full::new(Bytes::from_static(ANSWER.as_bytes())));
                    res.headers_mut()
                        .insert("content-type", "application/json".parse().unwrap());
                    Ok::<_, std::convert::Infallible>(res)
                });
                let builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                match tls {
                    Some(acceptor) => {
                        let Ok(stream) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let _ = builder
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .await;
                    }
                    None => {
                        let _ = builder
                            .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                            .await;
                    }
                }
            });
        }
    });
    port
}

/// An HTTP `CONNECT` proxy on 127.0.0.1: the targets it tunnelled to.
async fn egress_proxy() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            let log = log.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let target = head
                    .strip_prefix("CONNECT ")
                    .and_then(|rest| rest.split(' ').next())
                    .unwrap_or_default()
                    .to_owned();
                log.lock().unwrap().push(target.clone());
                let Ok(mut upstream) = TcpStream::connect(&target).await else {
                    return;
                };
                client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (port, seen)
}

/// One chat request through the gateway stack to `base_url`, dispatched by `dispatch`.
async fn chat(base_url: &str, dispatch: impl FnOnce(&Arc<Provider>) -> Dispatch) -> StatusCode {
    let p = Arc::new(
        Provider::builder("up", ProviderKind::OpenAi, base_url)
            .build()
            .unwrap(),
    );
    let mut catalog = Catalog::new();
    catalog.add_provider(p.clone()).unwrap();
    let svc = ServiceBuilder::new()
        .layer(DecodeLayer::new())
        .layer(ModelRewriteLayer::new(Arc::new(catalog)))
        .layer(StreamNormalizeLayer::new())
        .service(dispatch(&p));
    let req = Request::post("/v1/chat/completions")
        .body(Full::new(Bytes::from(
            r#"{"model":"up/m","messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(
        status != StatusCode::OK || body.starts_with(b"{\"id\":\"gen-"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    status
}

#[tokio::test]
async fn every_connection_can_go_through_an_egress_proxy() {
    let port = provider(None).await;
    let (proxy, seen) = egress_proxy().await;
    let status = chat(&format!("http://127.0.0.1:{port}/v1"), |p| {
        Dispatch::builder()
            .egress_proxy(format!("http://127.0.0.1:{proxy}").parse().unwrap())
            .build([p])
    })
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(*seen.lock().unwrap(), [format!("127.0.0.1:{port}")]);
}

#[tokio::test]
async fn a_provider_signed_by_a_private_authority_is_trusted_when_configured() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let ring = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(ring.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let port = provider(Some(tokio_rustls::TlsAcceptor::from(Arc::new(server)))).await;
    let url = format!("https://localhost:{port}/v1");

    // The public roots do not know the authority.
    assert_eq!(
        chat(&url, |p| Dispatch::new([p])).await,
        StatusCode::BAD_GATEWAY
    );
    // Trusted once configured.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(ring)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let status = chat(&url, |p| Dispatch::builder().tls_config(tls).build([p])).await;
    assert_eq!(status, StatusCode::OK);
}
