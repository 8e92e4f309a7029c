//! One capped, time-bounded `GET`.
//!
//! Every answer comes from something the node does not control (a device, a daemon, the node as a
//! daemon sees it), so: the whole exchange (connect, headers, body) is bounded by one timeout, the
//! body is streamed and abandoned at the cap (an announced `Content-Length` above it is refused
//! before reading), a redirect is an answer like any other non-2xx (the client never follows it),
//! and a refused connection is told apart from other failures (the node's device state machine
//! needs to know that nothing listens).

use std::time::Duration;

use bytes::Bytes;
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;

/// Why a fetch did not produce a usable body. Causes are kept as sources: format with
/// `etho_model::error_chain` (or `{:#}` through anyhow) for the whole story.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Nothing listens at that address.
    #[error("connection refused")]
    Refused(#[source] reqwest::Error),
    /// Connect plus the whole answer took longer than the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Any other network failure (reset, DNS, protocol error, ...).
    #[error("request failed")]
    Network(#[source] reqwest::Error),
    /// A non-2xx answer (redirects included: they are never followed).
    #[error("HTTP {0}")]
    Status(StatusCode),
    /// The body is larger than the cap.
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    /// The body is not the expected JSON.
    #[error("invalid JSON")]
    Json(#[source] serde_json::Error),
}

impl FetchError {
    /// True when nothing listens at the address (connection refused).
    pub fn is_refused(&self) -> bool {
        matches!(self, FetchError::Refused(_))
    }
}

/// The client every fetch uses: no environment proxy, no redirects, `connect_timeout` for the
/// TCP connect, idle connections kept 30 s for reuse.
pub fn client(connect_timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(concat!("etho-backup/", env!("CARGO_PKG_VERSION")))
        .build()
}

fn request_error(err: reqwest::Error) -> FetchError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return FetchError::Refused(err.without_url());
            }
        }
        source = e.source();
    }
    FetchError::Network(err.without_url())
}

/// `GET url`: a 2xx body of at most `limit` bytes, the whole exchange within `timeout`.
pub async fn fetch_bytes(
    client: &reqwest::Client,
    url: &Url,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, FetchError> {
    let exchange = async {
        let mut response = client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(request_error)?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status()));
        }
        let announced = response.content_length().unwrap_or(0);
        if announced > limit as u64 {
            return Err(FetchError::TooLarge(limit));
        }
        let mut body = Vec::with_capacity(announced as usize);
        while let Some(chunk) = response.chunk().await.map_err(request_error)? {
            if body.len() + chunk.len() > limit {
                return Err(FetchError::TooLarge(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(body))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(FetchError::Timeout(timeout)),
    }
}

/// [`fetch_bytes`], then the body parsed as `T`.
pub async fn fetch_json<T: DeserializeOwned>(
    client: &reqwest::Client,
    url: &Url,
    limit: usize,
    timeout: Duration,
) -> Result<T, FetchError> {
    let body = fetch_bytes(client, url, limit, timeout).await?;
    serde_json::from_slice(&body).map_err(FetchError::Json)
}
