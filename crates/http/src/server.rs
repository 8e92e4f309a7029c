//! Serving a router with the limits every etho-backup server needs.
//!
//! A graceful shutdown waits for the requests in flight; without a bound, one slow client keeps a
//! daemon from stopping. Every server therefore gets a request timeout (answered `408`) and a
//! request body limit (answered `413`): none of our endpoints takes more than a short list of
//! addresses.

use std::future::Future;
use std::time::Duration;

use axum::http::StatusCode;
use axum::Router;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

/// The limits [`serve`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Longest time one request may take, body read and handler included.
    pub request_timeout: Duration,
    /// Largest request body accepted.
    pub body_limit: usize,
}

impl Default for ServerLimits {
    /// 10 s (every handler answers from memory, or within its own shorter fetch timeout) and
    /// 64 KiB (the largest body any endpoint takes is a `POST /device/add` address list).
    fn default() -> ServerLimits {
        ServerLimits {
            request_timeout: Duration::from_secs(10),
            body_limit: 64 * 1024,
        }
    }
}

/// `router` with the timeout and body-limit layers (what [`serve`] serves; tests can drive it
/// without a socket).
pub fn with_limits(router: Router, limits: ServerLimits) -> Router {
    router
        .layer(RequestBodyLimitLayer::new(limits.body_limit))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
}

/// Serves `router` (with [`with_limits`]) on `listener` until `shutdown` resolves, then finishes
/// the requests in flight, each bounded by the request timeout.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, with_limits(router, limits))
        .with_graceful_shutdown(shutdown)
        .await
}
