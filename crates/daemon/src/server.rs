//! Serving a daemon's axum router until shutdown, with the request timeout and body limit every
//! server gets ([`etho_http::ServerLimits`]).

use etho_http::ServerLimits;
use tokio_util::sync::CancellationToken;

/// Serves `router` on `listener` until `shutdown` is cancelled, then finishes in-flight requests
/// (each bounded by the request timeout).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    etho_http::serve(listener, router, ServerLimits::default(), async move {
        shutdown.cancelled().await
    })
    .await
}

/// Binds `addr`, with a message naming the address on failure.
pub async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}
