//! The Ethoscope node's HTTP side of the backup system.
//!
//! A lab's node is the one place users look at: it lists the devices (`GET /devices`, consumed by
//! both backup daemons), shows the dashboard (`GET /`) and answers the unified backup status
//! (`GET /backup/status`), which merges the MySQL daemon's and the rsync daemon's own `GET /status`
//! documents with [`etho_model::merge::unify`].
//!
//! - [`NodeConfig`]: everything the node needs, built by the binary from its flags.
//! - [`AppState`]: the shared, cheaply cloned state every handler receives.
//! - [`app`]: the complete router, so tests can drive it without a socket; [`serve`] runs it.
//! - [`backup_status`]: the unified status endpoint (concurrent, bounded daemon fetches, a
//!   single-flight cache of the serialized reply), each entry with its [`health`].
//! - [`backup_history`]: `GET /backup/history/<id>`, both daemons' run histories merged.
//! - [`metrics`]: `GET /metrics` (Prometheus text format) from the latest unified status.
//! - [`alerts`]: Slack/Mattermost webhook messages when a device's backup goes bad or recovers.
//! - [`archive`]: browsing and downloading the archive the daemons wrote, and scopr's
//!   `index.txt` (read-only).
//!
//! What it does not do: back anything up. The daemons do that; the node only reads their status.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::{routing::get, Router};

pub mod alerts;
pub mod archive;
pub mod backup_history;
pub mod backup_status;
pub mod dashboard;
pub mod devices;
pub mod entry;
pub mod fields;
pub mod health;
pub mod identity;
pub mod mdns;
pub mod metrics;
pub mod poller;
pub mod registry;
pub mod relay;
pub mod store;
pub mod target;

pub use etho_http::ServiceUrl;

/// Configuration of the node, built by the binary from its flags.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Base URL of the MySQL backup daemon; its status is `<url>/status`.
    pub mysql_backup_url: ServiceUrl,
    /// Base URL of the rsync backup daemon; its status is `<url>/status`.
    pub rsync_backup_url: ServiceUrl,
    /// Bound on each daemon fetch: connecting plus reading the whole body.
    pub daemon_timeout: Duration,
    /// Largest daemon `/status` body accepted; a larger one makes that daemon "unavailable".
    pub daemon_body_limit: usize,
    /// A unified status reply older than half of this is refreshed in the background while it
    /// is still served (1 s keeps the view live; see [`backup_status`]).
    pub status_cache_ttl: Duration,
    /// Directory for the node's own persistent state.
    pub state_dir: PathBuf,
    /// Device discovery and polling (see [`registry`]).
    pub discovery: registry::DiscoveryConfig,
    /// Serving the archive (see [`archive`]); `None` turns `/archive` off.
    pub archive: Option<archive::ArchiveConfig>,
    /// Chat alerts (see [`alerts`]); `None` sends none.
    pub alerts: Option<alerts::AlertConfig>,
    /// When a device's health is `at_risk` or `lagging` (see [`health`]).
    pub health: etho_model::health::Thresholds,
    /// `--admin-token`: requests that change the registry must carry it
    /// (`Authorization: Bearer <token>`); confirming a conflicted address needs it.
    pub admin_token: Option<AdminToken>,
}

/// The admin token; its `Debug` does not show it, so it never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(pub String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<hidden>)")
    }
}

/// Default `/status` body cap: far above a real daemon's reply, far below memory trouble.
pub const DEFAULT_DAEMON_BODY_LIMIT: usize = 32 * 1024 * 1024;

impl Default for NodeConfig {
    /// Upstream's ports on loopback, a 2 s daemon timeout and a 1 s status cache.
    fn default() -> NodeConfig {
        NodeConfig {
            mysql_backup_url: ServiceUrl::daemon("http://127.0.0.1:8090")
                .expect("static URL is valid"),
            rsync_backup_url: ServiceUrl::daemon("http://127.0.0.1:8093")
                .expect("static URL is valid"),
            daemon_timeout: Duration::from_secs(2),
            daemon_body_limit: DEFAULT_DAEMON_BODY_LIMIT,
            status_cache_ttl: Duration::from_secs(1),
            state_dir: PathBuf::from("/var/lib/etho-backup/node"),
            discovery: registry::DiscoveryConfig::default(),
            archive: None,
            alerts: None,
            admin_token: None,
            health: etho_model::health::Thresholds::default(),
        }
    }
}

/// State shared by every handler. Cloning is cheap (everything is behind `Arc`).
#[derive(Clone)]
pub struct AppState {
    /// The configuration the node was started with.
    pub config: Arc<NodeConfig>,
    /// Fetches, merges and caches the unified backup status.
    pub backup_status: Arc<backup_status::BackupStatusService>,
    /// Known devices and their polling (started by [`serve`]).
    pub devices: Arc<registry::DeviceRegistry>,
    /// The archive index and downloads (its scan is started by [`serve`]); `None` when off.
    pub archive: Option<Arc<archive::ArchiveService>>,
}

impl AppState {
    /// Builds the state (HTTP client, caches) from a configuration.
    pub fn new(config: NodeConfig) -> anyhow::Result<AppState> {
        let config = Arc::new(config);
        let devices = Arc::new(registry::DeviceRegistry::new(
            config.discovery.clone(),
            &config.state_dir,
        )?);
        let backup_status = Arc::new(backup_status::BackupStatusService::new(
            &config,
            Arc::clone(&devices),
        )?);
        let archive = match &config.archive {
            Some(a) => Some(Arc::new(archive::ArchiveService::new(a.clone())?)),
            None => None,
        };
        Ok(AppState {
            config,
            backup_status,
            devices,
            archive,
        })
    }
}

/// The node's complete router.
pub fn app(state: AppState) -> Router {
    let router = Router::new()
        .route("/healthz", get(healthz_get))
        .merge(backup_status::router())
        .merge(backup_history::router())
        .merge(metrics::router())
        .merge(devices::router())
        .merge(dashboard::router());
    let router = if state.archive.is_some() {
        router.merge(archive::router())
    } else {
        router
    };
    router.with_state(state)
}

/// Liveness: answers as long as the server accepts requests, independent of the daemons.
async fn healthz_get() -> &'static str {
    "ok\n"
}

/// The node's request timeout and body limit: [`etho_http::ServerLimits`]'s defaults, with room
/// for a `GET /backup/status` that waits for a slow daemon up to [`NodeConfig::daemon_timeout`].
pub fn server_limits(config: &NodeConfig) -> etho_http::ServerLimits {
    let limits = etho_http::ServerLimits::default();
    etho_http::ServerLimits {
        request_timeout: limits
            .request_timeout
            .max(config.daemon_timeout + Duration::from_secs(5)),
        ..limits
    }
}

/// Serves [`app`] on `listener`, with [`server_limits`], until `shutdown` resolves, then
/// finishes in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let _discovery = state.devices.start();
    let _archive = state.archive.as_ref().map(|a| a.start());
    let alerts = tokio_util::sync::CancellationToken::new();
    let _alerts = alerts.clone().drop_guard();
    if let Some(config) = &state.config.alerts {
        alerts::start(Arc::clone(&state.backup_status), config.clone(), alerts)
            .map_err(std::io::Error::other)?;
    }
    let limits = server_limits(&state.config);
    etho_http::serve(listener, app(state), limits, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_timeout_leaves_room_for_the_daemon_timeout() {
        let short = NodeConfig::default();
        assert_eq!(
            server_limits(&short).request_timeout,
            Duration::from_secs(10)
        );
        let long = NodeConfig {
            daemon_timeout: Duration::from_secs(30),
            ..NodeConfig::default()
        };
        assert_eq!(
            server_limits(&long).request_timeout,
            Duration::from_secs(35)
        );
        assert_eq!(server_limits(&long).body_limit, 64 * 1024);
    }
}
