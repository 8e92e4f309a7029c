//! `GET /backup/status`: both daemons' `GET /status`, fetched concurrently and merged.
//!
//! The dashboard polls this endpoint, and upstream's version made it wait for two sequential
//! 5 s fetches with no cache, so one slow daemon stalled the whole UI. Here:
//!
//! - both daemons are asked at the same time; each fetch (connect and whole body) is bounded by
//!   [`NodeConfig::daemon_timeout`] and its body by [`NodeConfig::daemon_body_limit`], streamed
//!   and abandoned at the cap. Any failure turns that side into the seed's "unavailable" object
//!   ([`etho_model::merge::ServiceReport::Unavailable`]); the other side still works;
//! - the reply is built once ([`etho_model::merge::UnifiedStatus`]), serialized once and kept as
//!   shared bytes for [`NodeConfig::status_cache_ttl`] (at most 1 s by default), so a busy
//!   dashboard costs about two fetches per daemon per TTL, not one per request;
//! - concurrent requests that find the cache stale join the one refresh in flight (single
//!   flight). The refresh runs in its own task, so a client hanging up cannot cancel it for the
//!   others, and every waiter gets an answer within the daemon timeout plus the merge time;
//!   nobody queues behind a slow daemon twice;
//! - past half the TTL, a request still gets the cached reply and starts the next refresh in the
//!   background, so steady polling never waits for a fetch (see `bench/status.sh`).

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{routing::get, Router};
use bytes::Bytes;
use etho_model::merge::{Service, ServiceReport, UnifiedStatus};
use futures::future::{BoxFuture, FutureExt, Shared};
use reqwest::Url;
use serde_json::Value;

use crate::{AppState, NodeConfig};

/// Base URL of a backup daemon; its status document is at `<base>/status`.
///
/// Accepts `http://HOST:PORT[/prefix]`, or `HOST:PORT` (as upstream's `-i` did) which means
/// `http://HOST:PORT`. Only plain HTTP: the daemons listen on the node itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonUrl {
    base: Url,
    status: Url,
}

/// Why a daemon URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid daemon URL {input:?}: {reason}")]
pub struct DaemonUrlError {
    input: String,
    reason: String,
}

impl DaemonUrl {
    /// Parses and validates a daemon base URL.
    pub fn parse(input: &str) -> Result<DaemonUrl, DaemonUrlError> {
        let err = |reason: &str| DaemonUrlError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let text = input.trim();
        let text = if text.contains("://") {
            text.to_string()
        } else {
            format!("http://{text}")
        };
        let mut base = Url::parse(&text).map_err(|e| err(&e.to_string()))?;
        if base.scheme() != "http" {
            return Err(err("only http:// is supported"));
        }
        if base.host_str().is_none_or(str::is_empty) {
            return Err(err("no host"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(err("a query or fragment is not allowed"));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(err("credentials are not allowed"));
        }
        // `<base>/status`, also when the base has a path prefix or already names /status.
        let path = base.path().trim_end_matches('/').to_string();
        let path = path.strip_suffix("/status").unwrap_or(&path).to_string();
        base.set_path(&format!("{path}/"));
        let status = base.join("status").map_err(|e| err(&e.to_string()))?;
        Ok(DaemonUrl { base, status })
    }

    /// The base URL (always ends with `/`).
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The daemon's `GET /status` URL.
    pub fn status_url(&self) -> &Url {
        &self.status
    }
}

impl FromStr for DaemonUrl {
    type Err = DaemonUrlError;
    fn from_str(s: &str) -> Result<DaemonUrl, DaemonUrlError> {
        DaemonUrl::parse(s)
    }
}

impl fmt::Display for DaemonUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.base.as_str().trim_end_matches('/'))
    }
}

/// Why one daemon fetch did not produce a usable document (logged, never sent to clients).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Connecting, sending or reading failed (the message includes the underlying causes).
    #[error("request failed: {0}")]
    Request(String),
    /// The daemon answered with a non-2xx status.
    #[error("HTTP status {0}")]
    Status(reqwest::StatusCode),
    /// The body is larger than the cap.
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    /// Connect plus whole body took longer than the daemon timeout.
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    /// The body is not JSON.
    #[error("body is not JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// The body is JSON but not an object.
    #[error("body is JSON but not an object")]
    NotAnObject,
}

/// Last known reachability of a daemon, to log changes once instead of every refresh.
const HEALTH_UNKNOWN: u8 = 0;
const HEALTH_UP: u8 = 1;
const HEALTH_DOWN: u8 = 2;

#[derive(Debug)]
struct Daemon {
    service: Service,
    url: DaemonUrl,
    health: AtomicU8,
}

/// A refresh in flight, shared by every request waiting for it. `None` output: the refresh task
/// died (a bug), answered with 500.
type Inflight = Shared<BoxFuture<'static, Option<Bytes>>>;

#[derive(Default)]
struct Cache {
    /// The latest reply and when its fetch started.
    fresh: Option<(Instant, Bytes)>,
    /// The refresh in flight and its generation.
    inflight: Option<(u64, Inflight)>,
    generation: u64,
}

/// Fetches both daemons, merges and caches the serialized unified reply.
pub struct BackupStatusService {
    client: reqwest::Client,
    mysql: Daemon,
    rsync: Daemon,
    timeout: Duration,
    body_limit: usize,
    ttl: Duration,
    cache: Mutex<Cache>,
}

impl fmt::Debug for BackupStatusService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackupStatusService")
            .field("mysql", &self.mysql.url)
            .field("rsync", &self.rsync.url)
            .field("timeout", &self.timeout)
            .field("body_limit", &self.body_limit)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl BackupStatusService {
    /// Builds the service (HTTP client with connection reuse, empty cache).
    pub fn new(config: &NodeConfig) -> anyhow::Result<BackupStatusService> {
        let client = reqwest::Client::builder()
            // The daemons are on the node: never route through an environment proxy, never
            // follow a redirect somewhere else.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.daemon_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the HTTP client: {e}"))?;
        let daemon = |service, url: &DaemonUrl| Daemon {
            service,
            url: url.clone(),
            health: AtomicU8::new(HEALTH_UNKNOWN),
        };
        Ok(BackupStatusService {
            client,
            mysql: daemon(Service::MysqlBackup, &config.mysql_backup_url),
            rsync: daemon(Service::RsyncBackup, &config.rsync_backup_url),
            timeout: config.daemon_timeout,
            body_limit: config.daemon_body_limit,
            ttl: config.status_cache_ttl,
            cache: Mutex::new(Cache::default()),
        })
    }

    /// The serialized unified reply: cached if younger than the TTL, else the refresh in flight,
    /// else a new refresh. `None` only if a refresh task panicked.
    ///
    /// Once the cached reply is past half its TTL, the first request starts a refresh in the
    /// background and still gets the cached reply, so under steady polling nobody waits for a
    /// fetch and the served reply is still never older than the TTL.
    pub async fn current(self: &Arc<Self>) -> Option<Bytes> {
        let inflight = {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((at, bytes)) = &cache.fresh {
                let age = at.elapsed();
                if age < self.ttl {
                    let bytes = bytes.clone();
                    if age >= self.ttl / 2 && cache.inflight.is_none() {
                        // Runs as its own task; this request does not wait for it.
                        let _background = self.start_refresh(&mut cache);
                    }
                    return Some(bytes);
                }
            }
            match &cache.inflight {
                Some((_, inflight)) => inflight.clone(),
                None => self.start_refresh(&mut cache),
            }
        };
        inflight.await
    }

    /// Spawns a refresh and records it as the one in flight.
    fn start_refresh(self: &Arc<Self>, cache: &mut Cache) -> Inflight {
        cache.generation += 1;
        let generation = cache.generation;
        let this = Arc::clone(self);
        let task = tokio::spawn(async move { this.refresh(generation).await });
        let inflight = task.map(Result::ok).boxed().shared();
        cache.inflight = Some((generation, inflight.clone()));
        inflight
    }

    /// One refresh: both fetches at once, then parse, merge and serialize on a blocking thread
    /// (a daemon body may be megabytes of JSON), then store.
    async fn refresh(self: Arc<Self>, generation: u64) -> Bytes {
        // Clears the in-flight slot even if this task panics, so later requests start afresh.
        let guard = ClearInflight {
            service: Arc::clone(&self),
            generation,
        };
        let started = Instant::now();
        let (mysql, rsync) =
            tokio::join!(self.fetch_body(&self.mysql), self.fetch_body(&self.rsync));
        let this = Arc::clone(&self);
        let bytes = tokio::task::spawn_blocking(move || {
            let mysql = this.mysql.report(mysql.and_then(parse_document));
            let rsync = this.rsync.report(rsync.and_then(parse_document));
            let status = UnifiedStatus::from_reports(mysql, rsync);
            serde_json::to_vec(&status).map(Bytes::from)
        })
        .await;
        let bytes = match bytes {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => {
                // Cannot happen for maps of JSON values; keep serving the contract regardless.
                tracing::error!("cannot serialize the unified backup status: {e}");
                both_unavailable()
            }
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            cache.fresh = Some((started, bytes.clone()));
        }
        drop(guard);
        bytes
    }

    /// GET `<daemon>/status`: connect and whole body within the daemon timeout, body streamed
    /// and abandoned at the cap.
    async fn fetch_body(&self, daemon: &Daemon) -> Result<Vec<u8>, FetchError> {
        let fetch = async {
            let mut response = self
                .client
                .get(daemon.url.status_url().clone())
                .header(header::ACCEPT, "application/json")
                .send()
                .await
                .map_err(request_error)?;
            if !response.status().is_success() {
                return Err(FetchError::Status(response.status()));
            }
            let limit = self.body_limit;
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
            Ok(body)
        };
        match tokio::time::timeout(self.timeout, fetch).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout(self.timeout)),
        }
    }
}

impl Daemon {
    /// Turns a fetch result into a report; logs when the daemon's reachability changes (and at
    /// debug level while it stays down), so a dead daemon does not flood the log.
    fn report(&self, result: Result<serde_json::Map<String, Value>, FetchError>) -> ServiceReport {
        let key = self.service.key();
        match result {
            Ok(doc) => {
                if self.health.swap(HEALTH_UP, Ordering::Relaxed) == HEALTH_DOWN {
                    tracing::info!("{key} reachable again at {}", self.url.status_url());
                }
                ServiceReport::Available(doc)
            }
            Err(err) => {
                if self.health.swap(HEALTH_DOWN, Ordering::Relaxed) != HEALTH_DOWN {
                    tracing::warn!("{key} unavailable at {}: {err}", self.url.status_url());
                } else {
                    tracing::debug!("{key} still unavailable: {err}");
                }
                ServiceReport::Unavailable
            }
        }
    }
}

/// A reqwest error with its causes ("error sending request" alone does not say "refused").
fn request_error(err: reqwest::Error) -> FetchError {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    FetchError::Request(text)
}

/// A daemon body as a JSON object.
fn parse_document(body: Vec<u8>) -> Result<serde_json::Map<String, Value>, FetchError> {
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(doc)) => Ok(doc),
        Ok(_) => Err(FetchError::NotAnObject),
        Err(e) => Err(FetchError::Json(e)),
    }
}

/// The reply when nothing could be used (also the fallback if serialization ever failed).
fn both_unavailable() -> Bytes {
    let status =
        UnifiedStatus::from_reports(ServiceReport::Unavailable, ServiceReport::Unavailable);
    Bytes::from(serde_json::to_vec(&status).unwrap_or_default())
}

struct ClearInflight {
    service: Arc<BackupStatusService>,
    generation: u64,
}

impl Drop for ClearInflight {
    fn drop(&mut self) {
        let mut cache = self
            .service
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if matches!(&cache.inflight, Some((g, _)) if *g == self.generation) {
            cache.inflight = None;
        }
    }
}

/// Routes of this module, merged into [`crate::app`].
pub fn router() -> Router<AppState> {
    Router::new().route("/backup/status", get(backup_status_get))
}

async fn backup_status_get(State(state): State<AppState>) -> Response {
    match state.backup_status.current().await {
        Some(bytes) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            Body::from(bytes),
        )
            .into_response(),
        None => (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_url_forms() {
        let cases = [
            ("http://127.0.0.1:8090", "http://127.0.0.1:8090/status"),
            ("http://127.0.0.1:8090/", "http://127.0.0.1:8090/status"),
            ("127.0.0.1:8093", "http://127.0.0.1:8093/status"),
            ("localhost", "http://localhost/status"),
            ("http://node/backup", "http://node/backup/status"),
            ("http://node/backup/", "http://node/backup/status"),
            (
                "http://127.0.0.1:8090/status",
                "http://127.0.0.1:8090/status",
            ),
        ];
        for (input, status) in cases {
            let url = DaemonUrl::parse(input).unwrap();
            assert_eq!(url.status_url().as_str(), status, "{input}");
        }
        assert_eq!(
            DaemonUrl::parse("http://127.0.0.1:8090/")
                .unwrap()
                .to_string(),
            "http://127.0.0.1:8090"
        );
    }

    #[test]
    fn daemon_url_rejects() {
        for input in [
            "https://127.0.0.1:8090",
            "ftp://x",
            "http://",
            "http://a/?q=1",
            "http://u:p@127.0.0.1/",
            "http://127.0.0.1:99999",
            "",
        ] {
            let err = DaemonUrl::parse(input).unwrap_err();
            assert!(
                err.to_string().contains("invalid daemon URL"),
                "{input}: {err}"
            );
        }
    }
}
