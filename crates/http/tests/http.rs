//! The shared fetch and server layers against real loopback servers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::Redirect;
use axum::routing::{get, post};
use axum::Router;
use etho_http::{client, fetch_bytes, fetch_json, with_limits, FetchError, ServerLimits};
use etho_model::error_chain;
use reqwest::Url;
use serde_json::{json, Value};
use tower::ServiceExt;

/// Serves `router` on 127.0.0.1 (port 0) for the rest of the test; returns its base URL.
async fn spawn(router: Router) -> Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    Url::parse(&format!("http://{addr}/")).unwrap()
}

fn http() -> reqwest::Client {
    client(Duration::from_secs(2)).unwrap()
}

const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn json_answers_are_parsed() {
    let router = Router::new().route("/doc", get(|| async { axum::Json(json!({"a": 1})) }));
    let base = spawn(router).await;
    let doc: Value = fetch_json(&http(), &base.join("doc").unwrap(), 1024, TIMEOUT)
        .await
        .unwrap();
    assert_eq!(doc, json!({"a": 1}));
}

#[tokio::test]
async fn redirects_are_never_followed() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&hits);
    let router = Router::new()
        .route("/moved", get(|| async { Redirect::temporary("/target") }))
        .route(
            "/target",
            get(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async { axum::Json(json!({})) }
            }),
        );
    let base = spawn(router).await;
    let err = fetch_bytes(&http(), &base.join("moved").unwrap(), 1024, TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::Status(s) if s == StatusCode::TEMPORARY_REDIRECT),
        "{err:?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the redirect was followed");
}

#[tokio::test]
async fn bodies_above_the_cap_are_refused_announced_or_streamed() {
    let router = Router::new()
        .route("/announced", get(|| async { "x".repeat(10_000) }))
        .route(
            "/streamed",
            get(|| async {
                // No Content-Length: sent chunked, so only the running count can stop it.
                let chunks = (0..10).map(|_| Ok::<_, std::io::Error>("y".repeat(1000)));
                Body::from_stream(futures::stream::iter(chunks))
            }),
        );
    let base = spawn(router).await;
    for path in ["announced", "streamed"] {
        let err = fetch_bytes(&http(), &base.join(path).unwrap(), 4096, TIMEOUT)
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::TooLarge(4096)), "{path}: {err:?}");
    }
    let whole = fetch_bytes(&http(), &base.join("streamed").unwrap(), 10_000, TIMEOUT)
        .await
        .unwrap();
    assert_eq!(whole.len(), 10_000, "a body of exactly the cap is accepted");
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let router = Router::new().route("/never", get(std::future::pending::<&'static str>));
    let base = spawn(router).await;
    let started = std::time::Instant::now();
    let err = fetch_bytes(
        &http(),
        &base.join("never").unwrap(),
        1024,
        Duration::from_millis(300),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, FetchError::Timeout(_)), "{err:?}");
    assert!(started.elapsed() < TIMEOUT);
    assert!(error_chain(&err).contains("no answer within"));
}

#[tokio::test]
async fn refused_connections_are_told_apart() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = Url::parse(&format!("http://{addr}/status")).unwrap();
    let err = fetch_bytes(&http(), &url, 1024, TIMEOUT).await.unwrap_err();
    assert!(err.is_refused(), "{err:?}");
    let text = error_chain(&err);
    assert!(text.starts_with("connection refused"), "{text}");
}

#[tokio::test]
async fn invalid_json_keeps_the_parser_error() {
    let base = spawn(Router::new().route("/bad", get(|| async { "{not json" }))).await;
    let err = fetch_json::<Value>(&http(), &base.join("bad").unwrap(), 1024, TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Json(_)), "{err:?}");
    let text = error_chain(&err);
    assert!(
        text.starts_with("invalid JSON: key must be a string"),
        "{text}"
    );
}

fn limited() -> Router {
    let router = Router::new()
        .route("/slow", get(std::future::pending::<&'static str>))
        .route(
            "/echo",
            post(|body: String| async move { body.len().to_string() }),
        );
    with_limits(
        router,
        ServerLimits {
            request_timeout: Duration::from_secs(10),
            body_limit: 1024,
        },
    )
}

/// The timeout layer answers 408 instead of letting a request hang (time is paused, so the ten
/// seconds pass at once).
#[tokio::test(start_paused = true)]
async fn servers_time_requests_out() {
    let response = limited()
        .oneshot(Request::get("/slow").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
}

#[tokio::test]
async fn servers_refuse_large_bodies() {
    let small = limited()
        .oneshot(
            Request::post("/echo")
                .body(Body::from("x".repeat(1024)))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(small.status(), StatusCode::OK);
    let large = limited()
        .oneshot(
            Request::post("/echo")
                .body(Body::from("x".repeat(1025)))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(large.status(), StatusCode::PAYLOAD_TOO_LARGE);
}
