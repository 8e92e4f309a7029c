//! `GET /backup/status`: both daemons' `GET /status`, fetched concurrently and merged.
//!
//! The dashboard polls this endpoint, and upstream's version made it wait for two sequential
//! 5 s fetches with no cache, so one slow daemon stalled the whole UI. Here:
//!
//! - both daemons are asked at the same time ([`etho_http::fetch_bytes`]); each fetch (connect
//!   and whole body) is bounded by [`NodeConfig::daemon_timeout`] and its body by
//!   [`NodeConfig::daemon_body_limit`], streamed and abandoned at the cap. Any failure turns that
//!   side into the seed's "unavailable" object ([`etho_model::merge::ServiceReport::Unavailable`]);
//!   the other side still works;
//! - a daemon's document is relayed byte for byte ([`etho_model::merge::DaemonDocument`]);
//! - the reply is built once ([`etho_model::merge::UnifiedStatus`]), serialized once and kept as
//!   shared bytes, stamped when its refresh *completed*;
//! - stale-while-revalidate: once the kept reply is older than half of
//!   [`NodeConfig::status_cache_ttl`], the next request starts one refresh in the background and
//!   still gets the kept reply at once. A request never waits for a daemon when a reply exists,
//!   so a hung daemon (each refresh then takes the whole daemon timeout) costs the dashboard
//!   nothing but freshness: the reply is then as old as that timeout. Only the first request after
//!   start, with nothing kept yet, waits for the first refresh;
//! - concurrent requests that find nothing kept join the one refresh in flight (single flight).
//!   The refresh runs in its own task, so a client hanging up cannot cancel it for the others.
//!   At most one refresh is in flight at any time;
//! - every merged entry gets its `health` ([`crate::health`]) from both daemons' entries (their
//!   last ones while they do not answer) and the registry's polling view, after the seed's
//!   fields, which stay exactly as the merge made them.
//!
//! Upstream's cache (and ours before) was stamped with the *start* of the fetch and expired
//! after 1 s, shorter than the 2 s daemon timeout: with one daemon hung, every request found the
//! cache expired and waited the full timeout (24 requests/s at 50 concurrent clients instead of
//! 11.7 k).

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{routing::get, Router};
use bytes::Bytes;
use etho_http::{FetchError, ServiceUrl};
use etho_model::error_chain;
use etho_model::merge::{DaemonDocument, DocumentError, Service, ServiceReport, UnifiedStatus};
use futures::future::{BoxFuture, FutureExt, Shared};

use crate::health::HealthView;
use crate::registry::{now_f64, DeviceRegistry};
use crate::{AppState, NodeConfig};

/// Last known reachability of a daemon, to log changes once instead of every refresh.
const HEALTH_UNKNOWN: u8 = 0;
const HEALTH_UP: u8 = 1;
const HEALTH_DOWN: u8 = 2;

#[derive(Debug)]
struct Daemon {
    service: Service,
    url: ServiceUrl,
    health: AtomicU8,
}

/// Why one daemon's reply could not be used (logged, never sent to clients).
#[derive(Debug, thiserror::Error)]
enum Unusable {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Document(#[from] DocumentError),
}

/// A refresh in flight, shared by every request waiting for it. `None` output: the refresh task
/// died (a bug), answered with 500.
type Inflight = Shared<BoxFuture<'static, Option<Bytes>>>;

#[derive(Default)]
struct Cache {
    /// The latest reply and when its refresh completed.
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
    devices: Arc<DeviceRegistry>,
    health: HealthView,
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
    /// Builds the service (HTTP client with connection reuse, empty cache); `devices` gives the
    /// polling view the health needs.
    pub fn new(
        config: &NodeConfig,
        devices: Arc<DeviceRegistry>,
    ) -> anyhow::Result<BackupStatusService> {
        let client = etho_http::client(config.daemon_timeout)
            .map_err(|e| anyhow::anyhow!("cannot build the HTTP client: {e}"))?;
        let daemon = |service, url: &ServiceUrl| Daemon {
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
            devices,
            health: HealthView::new(config.health),
        })
    }

    /// The serialized unified reply: the last completed one, at once, whatever its age (a
    /// refresh starts in the background once it is past half the TTL); else, before the first
    /// refresh completed, the refresh in flight. `None` only if a refresh task panicked.
    pub async fn current(self: &Arc<Self>) -> Option<Bytes> {
        let inflight = {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((at, bytes)) = &cache.fresh {
                let bytes = bytes.clone();
                if at.elapsed() >= self.ttl / 2 && cache.inflight.is_none() {
                    // Runs as its own task; this request does not wait for it.
                    let _background = self.start_refresh(&mut cache);
                }
                return Some(bytes);
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
        let (mysql, rsync) =
            tokio::join!(self.fetch_body(&self.mysql), self.fetch_body(&self.rsync));
        let this = Arc::clone(&self);
        let bytes = tokio::task::spawn_blocking(move || {
            let mysql = this.mysql.report(mysql.and_then(parse_document));
            let rsync = this.rsync.report(rsync.and_then(parse_document));
            let sightings = this.devices.sightings();
            let now = now_f64();
            let mut unified = etho_model::merge::unify(&mysql, &rsync);
            this.health
                .annotate(&mysql, &rsync, &mut unified, &sightings, now);
            let status = UnifiedStatus {
                mysql_backup: mysql.into_document(Service::MysqlBackup),
                rsync_backup: rsync.into_document(Service::RsyncBackup),
                unified_devices: unified,
            };
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
            cache.fresh = Some((Instant::now(), bytes.clone()));
        }
        drop(guard);
        bytes
    }

    /// GET `<daemon>/status`: connect and whole body within the daemon timeout, body streamed
    /// and abandoned at the cap.
    async fn fetch_body(&self, daemon: &Daemon) -> Result<Bytes, Unusable> {
        let url = daemon.url.endpoint();
        Ok(etho_http::fetch_bytes(&self.client, url, self.body_limit, self.timeout).await?)
    }
}

impl Daemon {
    /// Turns a fetch result into a report; logs when the daemon's reachability changes (and at
    /// debug level while it stays down), so a dead daemon does not flood the log.
    fn report(&self, result: Result<DaemonDocument, Unusable>) -> ServiceReport {
        let key = self.service.key();
        match result {
            Ok(doc) => {
                if self.health.swap(HEALTH_UP, Ordering::Relaxed) == HEALTH_DOWN {
                    tracing::info!("{key} reachable again at {}", self.url.endpoint());
                }
                ServiceReport::Available(doc)
            }
            Err(err) => {
                let err = error_chain(&err);
                if self.health.swap(HEALTH_DOWN, Ordering::Relaxed) != HEALTH_DOWN {
                    tracing::warn!("{key} unavailable at {}: {err}", self.url.endpoint());
                } else {
                    tracing::debug!("{key} still unavailable: {err}");
                }
                ServiceReport::Unavailable
            }
        }
    }
}

/// A daemon body as a document (an object, kept byte for byte).
fn parse_document(body: Bytes) -> Result<DaemonDocument, Unusable> {
    Ok(DaemonDocument::parse(&body)?)
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
