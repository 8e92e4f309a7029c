//! The device registry: which devices the node knows, where they are and how they are doing.
//!
//! Devices come from three sources: `--device HOST[:PORT]` flags, `POST /device/add`, and mDNS
//! browsing of `_ethoscope._tcp.local.` ([`crate::mdns`]); addresses are checked as
//! [`crate::target::Target`]s. Each target gets its own poll loop ([`crate::poller`]) every
//! [`DiscoveryConfig::poll_interval`]; the registry keeps the last checked answer and the status
//! machine per target and builds the `GET /devices` map that both backup daemons read.
//!
//! Known devices and added targets persist in SQLite ([`crate::store`]), so after a restart every
//! known device is listed (as `offline` until it answers) and keeps being polled. Devices whose
//! answers fail validation are *rejected*: listed on `GET /devices/rejected` with the reason,
//! never on `GET /devices`.
//!
//! Nothing here holds a lock across an `.await`; SQLite runs on the blocking pool.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use etho_http::ServiceUrl;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use etho_model::device::EntryFields;
use etho_model::health::{runs_experiment, Link, Sighting};

use crate::poller::{self, NodeStatus, PollReport, PollState, Reach, Thresholds};
use crate::store::{self, DeviceRow, Store};
use crate::target::{Source, Target, TargetError};

/// How the node finds and polls devices.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveryConfig {
    /// `HOST[:PORT]` targets polled from the start (`--device`).
    pub devices: Vec<String>,
    /// Time between two polls of one device (upstream: 5 s).
    pub poll_interval: Duration,
    /// Bound on each request to a device (connect plus whole answer).
    pub device_timeout: Duration,
    /// When to report `offline`.
    pub thresholds: Thresholds,
    /// Browse `_ethoscope._tcp.local.` over mDNS. Off by default: the mDNS library joins the
    /// multicast group on every network interface.
    pub mdns: bool,
    /// Keep the registry in `<state_dir>/devices.sqlite`.
    pub persist: bool,
}

impl Default for DiscoveryConfig {
    fn default() -> DiscoveryConfig {
        DiscoveryConfig {
            devices: Vec::new(),
            poll_interval: Duration::from_secs(5),
            device_timeout: Duration::from_secs(3),
            thresholds: Thresholds::default(),
            mdns: false,
            persist: true,
        }
    }
}

/// What the node knows about one target.
#[derive(Debug, Clone)]
struct Entry {
    ip: Option<IpAddr>,
    id: Option<String>,
    name: Option<String>,
    device_status: String,
    fields: Map<String, Value>,
    databases: Option<Map<String, Value>>,
    poll: PollState,
    poll_error: Option<String>,
    rejected: Option<String>,
    /// When the node first saw the device running, or not running, as it last reported.
    activity_since: Option<f64>,
    /// Status and last_seen as last written to SQLite.
    persisted: Option<(NodeStatus, Option<f64>)>,
}

/// One entry of `GET /devices/rejected`.
#[derive(Debug, Serialize)]
struct RejectedEntry<'a> {
    ip: String,
    port: u16,
    id: &'a Option<String>,
    status: &'static str,
    reason: &'a str,
    last_seen: Option<f64>,
}

/// One entry of `GET /devices/pending`.
#[derive(Debug, Serialize)]
struct PendingEntry<'a> {
    id: &'a Option<String>,
    status: NodeStatus,
    poll_error: &'a Option<String>,
}

fn to_value(v: &impl Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

impl Entry {
    fn new() -> Entry {
        Entry {
            ip: None,
            id: None,
            name: None,
            device_status: String::new(),
            fields: Map::new(),
            databases: None,
            poll: PollState::default(),
            poll_error: None,
            rejected: None,
            activity_since: None,
            persisted: None,
        }
    }

    fn status(&self) -> NodeStatus {
        self.poll.status(&self.device_status)
    }

    /// The address the device answered from, else the target's host.
    fn ip_text(&self, target: &Target) -> String {
        self.ip
            .map(|ip| ip.to_string())
            .unwrap_or_else(|| target.host.clone())
    }

    /// The `GET /devices` entry: the device's own fields, then the node's.
    fn device_json(&self, target: &Target) -> Option<(String, Value)> {
        let id = self.id.as_ref()?;
        let name = self.name.as_ref()?;
        if self.rejected.is_some() {
            return None;
        }
        let mut obj = self.fields.clone();
        obj.insert("id".into(), Value::from(id.as_str()));
        obj.insert("name".into(), Value::from(name.as_str()));
        if let Some(db) = &self.databases {
            obj.insert("databases".into(), Value::Object(db.clone()));
        }
        obj.insert("ip".into(), Value::from(self.ip_text(target)));
        obj.insert("port".into(), Value::from(target.port));
        obj.insert("status".into(), to_value(&self.status()));
        obj.insert("last_seen".into(), to_value(&self.poll.last_seen));
        obj.insert(
            "consecutive_errors".into(),
            Value::from(self.poll.consecutive_errors),
        );
        obj.insert("poll_error".into(), to_value(&self.poll_error));
        Some((id.clone(), Value::Object(obj)))
    }

    /// Takes in one poll's report (identity, fields, rejection, error; not the status machine).
    fn absorb(&mut self, target: &Target, report: PollReport) {
        match report {
            PollReport::Answered {
                id,
                data,
                databases,
            } => {
                if self.rejected.take().is_some() {
                    tracing::info!(target = %target, "device answers validly again");
                }
                if self.id.as_deref().is_some_and(|old| old != id) {
                    tracing::warn!(target = %target, old = ?self.id, new = %id,
                        "another device answers at this address");
                }
                self.id = Some(id);
                self.name = Some(data.name);
                self.device_status = data.status;
                self.fields = data.fields;
                self.databases = databases;
                self.poll_error = None;
            }
            PollReport::IdOnly { id, error } => {
                if self.id.as_deref() != Some(id.as_str()) {
                    // Another (or a new) device: nothing of the old one applies.
                    self.name = None;
                    self.fields.clear();
                    self.databases = None;
                }
                self.id = Some(id);
                self.poll_error = Some(error);
            }
            PollReport::Rejected { id, reason } => {
                let reason = reason.to_string();
                if self.rejected.as_deref() != Some(reason.as_str()) {
                    tracing::warn!(target = %target, "device rejected: {reason}");
                }
                if id.is_some() {
                    self.id = id;
                }
                self.rejected = Some(reason);
                self.poll_error = None;
            }
            PollReport::Unreachable { error, .. } => {
                self.poll_error = Some(error);
            }
        }
    }

    /// The row to write when the status changed or last_seen moved by a minute or more, for
    /// a device with a valid identity; records it as written.
    fn row_to_persist(&mut self, target: &Target, now: f64) -> Option<DeviceRow> {
        let (Some(id), Some(name), None) = (&self.id, &self.name, &self.rejected) else {
            return None;
        };
        let status = self.status();
        let stale = match &self.persisted {
            None => true,
            Some((persisted, seen)) => {
                persisted != &status
                    || match (seen, self.poll.last_seen) {
                        (Some(a), Some(b)) => b - a >= 60.0,
                        (None, Some(_)) => true,
                        _ => false,
                    }
            }
        };
        if !stale {
            return None;
        }
        let row = DeviceRow {
            id: id.clone(),
            name: name.clone(),
            target: target.clone(),
            ip: self.ip_text(target),
            last_seen: self.poll.last_seen,
            status: status.to_string(),
            device_status: self.device_status.clone(),
            activity_since: self.activity_since,
            now,
        };
        self.persisted = Some((status, self.poll.last_seen));
        Some(row)
    }
}

impl Entry {
    /// What the node's polling knows about the device, for its health
    /// ([`etho_model::health::Sighting`]); `doc` is its `GET /devices` entry.
    fn sighting(&self, doc: &Map<String, Value>) -> Sighting {
        let poll = &self.poll;
        let link = match poll.reach {
            Reach::Online => Link::Online {
                since: poll.online_since.or(poll.last_seen).unwrap_or(0.0),
            },
            Reach::Busy { since } => Link::Busy { since },
            Reach::Unreached { since } => Link::Unreached { since },
            Reach::Offline | Reach::Unknown => Link::Offline {
                last_seen: poll.last_seen,
            },
        };
        let fields = EntryFields(doc);
        Sighting {
            link,
            reported: Some(self.device_status.clone()).filter(|s| !s.is_empty()),
            activity_since: self.activity_since,
            device_time: self
                .fields
                .get("time")
                .and_then(Value::as_f64)
                .filter(|t| t.is_finite() && *t > 0.0),
            experiment: fields.announced_filename().map(str::to_string),
            mariadb: fields.mariadb_report(),
            sqlite: fields.sqlite_report(),
        }
    }
}

fn log_change(target: &Target, entry: &Entry, before: &NodeStatus, after: &NodeStatus) {
    match (&entry.name, &entry.poll_error) {
        (Some(name), Some(err)) if after.is_notable() => {
            tracing::info!(target = %target, device = %name, "{before} → {after} ({err})")
        }
        (Some(name), _) => {
            tracing::info!(target = %target, device = %name, "{before} → {after}")
        }
        (None, _) => tracing::debug!(target = %target, "{before} → {after}"),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Current time as fractional epoch seconds.
pub fn now_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The node's device registry. See the module docs.
#[derive(Debug)]
pub struct DeviceRegistry {
    config: DiscoveryConfig,
    db_path: Option<PathBuf>,
    entries: Mutex<BTreeMap<Target, Entry>>,
    store: Arc<Mutex<Store>>,
    new_targets: mpsc::UnboundedSender<(Target, Source)>,
    new_targets_rx: Mutex<Option<mpsc::UnboundedReceiver<(Target, Source)>>>,
    client: reqwest::Client,
}

/// Stops discovery when dropped.
#[derive(Debug)]
pub struct DiscoveryGuard {
    token: CancellationToken,
}

impl DiscoveryGuard {
    /// Stops discovery now.
    pub fn stop(&self) {
        self.token.cancel();
    }
}

impl Drop for DiscoveryGuard {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Answer of `POST /device/add`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AddResult {
    /// Accepted addresses (as given, trimmed).
    pub added: Vec<String>,
    /// Refused entries (as given, trimmed).
    pub problems: Vec<String>,
    /// Why each refused entry was refused.
    pub messages: Vec<String>,
}

/// Why an address was not added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddError {
    /// Not a device address.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The registry holds [`MAX_TARGETS`] addresses already.
    #[error("the node already polls {MAX_TARGETS} addresses, the most it keeps")]
    Full,
}

/// Most addresses one `POST /device/add` may carry.
pub const MAX_ADD: usize = 256;

/// Most addresses the registry holds and polls. `POST /device/add` and mDNS announcements come
/// from the network; without a bound, a client could make the node keep (and poll forever)
/// any number of addresses. A lab has dozens of devices.
pub const MAX_TARGETS: usize = 2048;

impl DeviceRegistry {
    /// A registry with nothing loaded yet; `state_dir` holds `devices.sqlite` when persistence is
    /// on. Opening the database and polling begin with [`DeviceRegistry::start`].
    pub fn new(
        config: DiscoveryConfig,
        state_dir: &Path,
    ) -> Result<DeviceRegistry, reqwest::Error> {
        let client = etho_http::client(config.device_timeout)?;
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(DeviceRegistry {
            db_path: config.persist.then(|| state_dir.join("devices.sqlite")),
            config,
            entries: Mutex::new(BTreeMap::new()),
            store: Arc::new(Mutex::new(Store::Closed)),
            new_targets: tx,
            new_targets_rx: Mutex::new(Some(rx)),
            client,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DiscoveryConfig {
        &self.config
    }

    /// The `GET /devices` map: every known, valid device keyed by id, with its own fields plus
    /// `ip`, `port`, `status`, `last_seen`, `consecutive_errors` and `poll_error`. When one id
    /// answers on two targets (an address change), the most recently seen one wins.
    pub fn devices(&self) -> Map<String, Value> {
        let entries = lock(&self.entries);
        let mut best: BTreeMap<String, (f64, Value)> = BTreeMap::new();
        for (target, entry) in entries.iter() {
            let Some((id, doc)) = entry.device_json(target) else {
                continue;
            };
            let seen = entry.poll.last_seen.unwrap_or(f64::MIN);
            match best.get(&id) {
                Some((s, _)) if *s >= seen => {}
                _ => {
                    best.insert(id, (seen, doc));
                }
            }
        }
        best.into_iter().map(|(id, (_, doc))| (id, doc)).collect()
    }

    /// What polling knows about every known, valid device, by id, for the health view; the most
    /// recently seen target of an id wins, as in [`DeviceRegistry::devices`].
    pub fn sightings(&self) -> HashMap<String, Sighting> {
        let entries = lock(&self.entries);
        let mut best: HashMap<String, (f64, Sighting)> = HashMap::new();
        for (target, entry) in entries.iter() {
            let Some((id, Value::Object(doc))) = entry.device_json(target) else {
                continue;
            };
            let seen = entry.poll.last_seen.unwrap_or(f64::MIN);
            if best.get(&id).is_none_or(|(s, _)| *s < seen) {
                best.insert(id, (seen, entry.sighting(&doc)));
            }
        }
        best.into_iter().map(|(id, (_, s))| (id, s)).collect()
    }

    /// Targets whose device was rejected, keyed by `HOST:PORT`, with the reason.
    pub fn rejected(&self) -> Map<String, Value> {
        let entries = lock(&self.entries);
        entries
            .iter()
            .filter_map(|(target, e)| {
                let entry = RejectedEntry {
                    ip: e.ip_text(target),
                    port: target.port,
                    id: &e.id,
                    status: "rejected",
                    reason: e.rejected.as_deref()?,
                    last_seen: e.poll.last_seen,
                };
                Some((target.to_string(), to_value(&entry)))
            })
            .collect()
    }

    /// Targets that never gave a complete identity (unreachable since added, or busy before
    /// their first `/data` answer), keyed by `HOST:PORT`. Not on `GET /devices`: without a
    /// name, a backup daemon could not use them.
    pub fn pending(&self) -> Map<String, Value> {
        let entries = lock(&self.entries);
        entries
            .iter()
            .filter(|(_, e)| (e.id.is_none() || e.name.is_none()) && e.rejected.is_none())
            .map(|(target, e)| {
                let entry = PendingEntry {
                    id: &e.id,
                    status: e.status(),
                    poll_error: &e.poll_error,
                };
                (target.to_string(), to_value(&entry))
            })
            .collect()
    }

    /// Adds a target to poll (no effect when already known). Refused once the registry holds
    /// [`MAX_TARGETS`] addresses.
    pub fn add_target(&self, target: Target, source: Source) -> Result<(), AddError> {
        {
            let mut entries = lock(&self.entries);
            if entries.contains_key(&target) {
                return Ok(());
            }
            if entries.len() >= MAX_TARGETS {
                return Err(AddError::Full);
            }
            entries.insert(target.clone(), Entry::new());
        }
        tracing::info!(target = %target, source = source.as_str(), "new device address");
        let _ = self.new_targets.send((target, source));
        Ok(())
    }

    /// `POST /device/add`: a comma-separated (or whitespace-separated) list of IPs, each
    /// optionally with `:PORT`.
    pub fn add_list(&self, list: &str) -> AddResult {
        let mut result = AddResult {
            added: Vec::new(),
            problems: Vec::new(),
            messages: Vec::new(),
        };
        let items: Vec<&str> = list
            .split(|c: char| c == ',' || c.is_whitespace())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if items.is_empty() {
            result.messages.push("no address given".into());
        }
        for (i, item) in items.into_iter().enumerate() {
            let shown: String = item.chars().take(80).collect();
            if i >= MAX_ADD {
                result.problems.push(shown.clone());
                result.messages.push(format!(
                    "{shown}: more than {MAX_ADD} addresses in one request"
                ));
                continue;
            }
            let added = Target::parse(item, false)
                .map_err(AddError::from)
                .and_then(|t| self.add_target(t, Source::Manual));
            match added {
                Ok(()) => result.added.push(shown),
                Err(e) => {
                    result.messages.push(format!("{shown}: {e}"));
                    result.problems.push(shown);
                }
            }
        }
        result
    }

    /// Opens (or creates) the registry database, loads known devices and targets, adds the
    /// configured ones and starts polling. Polling stops when the guard is dropped.
    pub fn start(self: &Arc<Self>) -> DiscoveryGuard {
        let token = CancellationToken::new();
        // An existing registry is loaded now; a new one is created on the first write, so a
        // node that never sees a device leaves no file behind.
        if let Some(path) = self.db_path.as_ref().filter(|p| p.exists()) {
            self.load_store(path);
        }
        for d in &self.config.devices {
            let added = Target::parse(d, true)
                .map_err(AddError::from)
                .and_then(|t| self.add_target(t, Source::Flag));
            if let Err(e) = added {
                tracing::error!("ignoring device {}: {e}", poller::shown(d));
            }
        }
        let rx = lock(&self.new_targets_rx).take();
        match rx {
            Some(rx) => {
                tokio::spawn(self.clone().supervise(rx, token.clone()));
            }
            None => tracing::warn!("device discovery was already started"),
        }
        if self.config.mdns {
            crate::mdns::spawn_browser(self.clone(), token.clone());
        }
        DiscoveryGuard { token }
    }

    /// Loads the known devices and saved addresses from an existing registry file and queues
    /// them for polling; a file that cannot be read leaves the registry in memory only.
    fn load_store(&self, path: &Path) {
        let loaded = store::open(path).and_then(|conn| {
            let (known, targets) = store::load(&conn)?;
            Ok((conn, known, targets))
        });
        let (conn, known, targets) = match loaded {
            Ok(loaded) => loaded,
            Err(err) => {
                tracing::error!(
                    "device registry {} unavailable, keeping devices in memory only: {}",
                    path.display(),
                    etho_model::error_chain(&err)
                );
                *lock(&self.store) = Store::Failed;
                return;
            }
        };
        *lock(&self.store) = Store::Open(conn);
        let mut entries = lock(&self.entries);
        for k in known {
            let e = entries.entry(k.target.clone()).or_insert_with(Entry::new);
            e.id = Some(k.id);
            e.name = Some(k.name);
            e.ip = k.ip.parse().ok();
            e.device_status = k.device_status;
            e.activity_since = k.activity_since;
            e.poll = PollState::remembered(k.last_seen);
            e.persisted = Some((NodeStatus::Offline, k.last_seen));
            let _ = self.new_targets.send((k.target, Source::Known));
        }
        for t in targets {
            if !entries.contains_key(&t) {
                entries.insert(t.clone(), Entry::new());
                let _ = self.new_targets.send((t, Source::Known));
            }
        }
    }

    async fn supervise(
        self: Arc<Self>,
        mut rx: mpsc::UnboundedReceiver<(Target, Source)>,
        token: CancellationToken,
    ) {
        let mut polling: HashSet<Target> = HashSet::new();
        loop {
            let next = tokio::select! {
                n = rx.recv() => n,
                _ = token.cancelled() => None,
            };
            let Some((target, source)) = next else { break };
            if matches!(source, Source::Manual | Source::Mdns) {
                self.persist_target(&target, source).await;
            }
            if polling.insert(target.clone()) {
                tokio::spawn(self.clone().poll_loop(target, token.clone()));
            }
        }
    }

    async fn poll_loop(self: Arc<Self>, target: Target, token: CancellationToken) {
        loop {
            let report = self.poll_once(&target).await;
            let (delay, write) = self.apply(&target, report.0, report.1, now_f64());
            if let Some(w) = write {
                self.persist_device(w).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = token.cancelled() => return,
            }
        }
    }

    async fn poll_once(&self, target: &Target) -> (Option<IpAddr>, PollReport) {
        let ip = match self.resolve(target).await {
            Ok(ip) => ip,
            Err(error) => {
                let report = PollReport::Unreachable {
                    refused: false,
                    error,
                };
                return (None, report);
            }
        };
        let base = ServiceUrl::device(ip, target.port);
        let report = poller::poll_device(&self.client, &base, self.config.device_timeout).await;
        (Some(ip), report)
    }

    /// The target's address: its IP, or its host name resolved within the device timeout.
    async fn resolve(&self, target: &Target) -> Result<IpAddr, String> {
        if let Ok(ip) = target.host.parse::<IpAddr>() {
            return Ok(ip);
        }
        let lookup = tokio::time::timeout(
            self.config.device_timeout,
            tokio::net::lookup_host((target.host.as_str(), target.port)),
        )
        .await;
        match lookup {
            Ok(Ok(mut addrs)) => addrs
                .next()
                .map(|a| a.ip())
                .ok_or_else(|| format!("{} has no address", target.host)),
            Ok(Err(e)) => Err(format!("cannot resolve {}: {e}", target.host)),
            Err(_) => Err(format!("cannot resolve {} in time", target.host)),
        }
    }

    /// Applies one poll's report at `now`; returns the delay before the next poll and the row
    /// to persist, if anything worth persisting changed.
    fn apply(
        &self,
        target: &Target,
        ip: Option<IpAddr>,
        report: PollReport,
        now: f64,
    ) -> (Duration, Option<DeviceRow>) {
        let mut entries = lock(&self.entries);
        let entry = entries.entry(target.clone()).or_insert_with(Entry::new);
        let before = entry.status();
        let outcome = report.outcome();
        if ip.is_some() {
            entry.ip = ip;
        }
        let running_before = runs_experiment(&entry.device_status);
        let answered = matches!(report, PollReport::Answered { .. });
        entry.absorb(target, report);
        if answered
            && (entry.activity_since.is_none()
                || runs_experiment(&entry.device_status) != running_before)
        {
            entry.activity_since = Some(now);
        }
        entry.poll = entry.poll.next(outcome, now, &self.config.thresholds);
        let after = entry.status();
        if before != after {
            log_change(target, entry, &before, &after);
        }
        let delay = entry.poll.next_poll_in(self.config.poll_interval);
        (delay, entry.row_to_persist(target, now))
    }

    async fn persist_device(&self, row: DeviceRow) {
        let res = self
            .with_store(move |conn| store::save_device(conn, &row))
            .await;
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("cannot save device registry: {e}"),
            Err(e) => tracing::error!("device registry writer failed: {e}"),
        }
    }

    async fn persist_target(&self, target: &Target, source: Source) {
        let target = target.clone();
        let res = self
            .with_store(move |conn| store::save_target(conn, &target, source, now_f64()))
            .await;
        if let Ok(Err(e)) = res {
            tracing::error!("cannot save device address: {e}");
        }
    }

    /// Runs `f` on the registry database (opened on first use) on the blocking pool; nothing
    /// happens when persistence is off or the file is unusable.
    async fn with_store(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<()> + Send + 'static,
    ) -> Result<rusqlite::Result<()>, tokio::task::JoinError> {
        let store = self.store.clone();
        let path = self.db_path.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = lock(&store);
            match guard.get(path.as_deref()) {
                Some(conn) => f(conn),
                None => Ok(()),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poller::{DeviceData, Rejection};
    use serde_json::json;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn registry() -> DeviceRegistry {
        DeviceRegistry::new(
            DiscoveryConfig {
                persist: false,
                ..DiscoveryConfig::default()
            },
            Path::new("/nonexistent"),
        )
        .unwrap()
    }

    fn answered(status: &str) -> PollReport {
        let fields = json!({"id": ID, "name": "ETHOSCOPE_001", "status": status, "time": 1.0});
        PollReport::Answered {
            id: ID.into(),
            data: DeviceData {
                name: "ETHOSCOPE_001".into(),
                status: status.into(),
                fields: fields.as_object().unwrap().clone(),
            },
            databases: Some(
                json!({"SQLite": {}, "MariaDB": {}})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        }
    }

    #[test]
    fn add_list_answers_like_upstream() {
        let r = registry();
        let res = r.add_list("127.0.0.10, 127.0.0.11:9001,not-an-ip,,0.0.0.0");
        assert_eq!(res.added, vec!["127.0.0.10", "127.0.0.11:9001"]);
        assert_eq!(res.problems, vec!["not-an-ip", "0.0.0.0"]);
        assert_eq!(res.messages.len(), 2);
        // Unresolved targets are pending, not devices.
        assert!(r.devices().is_empty());
        assert_eq!(r.pending().len(), 2);
        assert_eq!(
            serde_json::to_string(&r.pending()["127.0.0.10:9000"]).unwrap(),
            r#"{"id":null,"status":"offline","poll_error":null}"#
        );
        let many = vec!["127.0.0.1"; MAX_ADD + 2].join(",");
        assert_eq!(r.add_list(&many).problems.len(), 2);
        assert!(r.add_list("").messages[0].contains("no address"));
    }

    #[test]
    fn registry_holds_at_most_max_targets() {
        let r = registry();
        let ports = (1..=u16::MAX).take(MAX_TARGETS);
        for port in ports {
            let t = Target::ip("127.0.0.10".parse().unwrap(), port);
            assert_eq!(r.add_target(t, Source::Manual), Ok(()));
        }
        assert_eq!(r.pending().len(), MAX_TARGETS);
        let res = r.add_list("127.0.0.11, 127.0.0.10:1");
        // A new address is refused; one already known is still "added" (nothing to do).
        assert_eq!(res.problems, vec!["127.0.0.11"]);
        assert_eq!(res.added, vec!["127.0.0.10:1"]);
        assert!(
            res.messages[0].contains("already polls"),
            "{:?}",
            res.messages
        );
        assert_eq!(r.pending().len(), MAX_TARGETS);
    }

    #[test]
    fn devices_map_shape_and_statuses() {
        let r = registry();
        let t = Target::parse("127.0.0.10", false).unwrap();
        r.add_target(t.clone(), Source::Flag).unwrap();
        let ip = Some("127.0.0.10".parse().unwrap());
        let (delay, write) = r.apply(&t, ip, answered("running"), 100.0);
        assert_eq!(delay, Duration::from_secs(5));
        assert!(write.is_some(), "a new device is persisted");
        let map = r.devices();
        let d = &map[ID];
        assert_eq!(d["name"], "ETHOSCOPE_001");
        assert_eq!(d["ip"], "127.0.0.10");
        assert_eq!(d["port"], 9000);
        assert_eq!(d["status"], "running");
        assert_eq!(d["last_seen"], 100.0);
        assert_eq!(d["time"], 1.0);
        assert_eq!(d["databases"]["MariaDB"], json!({}));
        // The daemons' parser accepts it.
        let (devs, problems) = etho_model::device::parse_device_map(&Value::Object(map)).unwrap();
        assert_eq!((devs.len(), problems.len()), (1, 0));

        // Same status a second later: nothing to persist.
        assert!(r.apply(&t, ip, answered("running"), 101.0).1.is_none());
        let refused = || PollReport::Unreachable {
            refused: true,
            error: "/id: connection refused".into(),
        };
        let (_, w) = r.apply(&t, ip, refused(), 105.0);
        assert_eq!(w.unwrap().status, "unreached");
        assert_eq!(r.devices()[ID]["status"], "unreached");
        assert_eq!(r.devices()[ID]["poll_error"], "/id: connection refused");
        r.apply(&t, ip, refused(), 110.0);
        let (delay, w) = r.apply(&t, ip, refused(), 115.0);
        assert_eq!(w.unwrap().status, "offline");
        assert_eq!(delay, Duration::from_secs(30));
        let d = &r.devices()[ID];
        assert_eq!(d["status"], "offline");
        // Last good answer kept, with when it was seen.
        assert_eq!(d["last_seen"], 101.0);
        assert_eq!(d["name"], "ETHOSCOPE_001");
        // Busy: /id answers, /data does not.
        r.apply(&t, ip, answered("stopped"), 120.0);
        r.apply(
            &t,
            ip,
            PollReport::IdOnly {
                id: ID.into(),
                error: "/data: no answer within 3s".into(),
            },
            125.0,
        );
        assert_eq!(r.devices()[ID]["status"], "busy");
    }

    /// The polling view the health reads: since when the device answers, what it last said it
    /// was doing and since when, kept while it does not answer.
    #[test]
    fn sightings_follow_polls() {
        let r = registry();
        let t = Target::parse("127.0.0.10", false).unwrap();
        let ip = Some("127.0.0.10".parse().unwrap());
        assert!(r.sightings().is_empty());
        r.apply(&t, ip, answered("running"), 100.0);
        r.apply(&t, ip, answered("running"), 105.0);
        let s = &r.sightings()[ID];
        assert_eq!(s.link, Link::Online { since: 100.0 });
        assert_eq!(
            (s.reported.as_deref(), s.activity_since, s.device_time),
            (Some("running"), Some(100.0), Some(1.0))
        );
        assert_eq!(s.mariadb, etho_model::device::DatabaseReport::Absent);
        r.apply(&t, ip, answered("stopped"), 110.0);
        assert_eq!(r.sightings()[ID].activity_since, Some(110.0));
        let refused = PollReport::Unreachable {
            refused: true,
            error: "/id: connection refused".into(),
        };
        r.apply(&t, ip, refused, 115.0);
        let s = &r.sightings()[ID];
        assert_eq!(s.link, Link::Unreached { since: 115.0 });
        assert_eq!(
            (s.reported.as_deref(), s.activity_since),
            (Some("stopped"), Some(110.0))
        );
        // Busy devices are not reachable for the health either.
        r.apply(
            &t,
            ip,
            PollReport::IdOnly {
                id: ID.into(),
                error: "/data: no answer within 3s".into(),
            },
            120.0,
        );
        assert_eq!(r.sightings()[ID].link, Link::Busy { since: 120.0 });
    }

    #[test]
    fn hostile_devices_are_flagged_not_listed() {
        let r = registry();
        let t = Target::parse("127.0.0.66", false).unwrap();
        r.add_target(t.clone(), Source::Manual).unwrap();
        r.apply(&t, None, answered("running"), 1.0);
        assert_eq!(r.devices().len(), 1);
        let (_, w) = r.apply(
            &t,
            None,
            PollReport::Rejected {
                id: Some(ID.into()),
                reason: Rejection::BadName("\"../../x\"".into()),
            },
            2.0,
        );
        assert!(w.is_none());
        assert!(r.devices().is_empty());
        let rej = r.rejected();
        assert_eq!(
            serde_json::to_string(&rej).unwrap(),
            format!(
                r#"{{"127.0.0.66:9000":{{"ip":"127.0.0.66","port":9000,"id":"{ID}","status":"rejected","reason":"device reports an invalid name \"../../x\"","last_seen":2.0}}}}"#
            ),
            "the wire shape the page reads"
        );
        assert_eq!(rej["127.0.0.66:9000"]["status"], "rejected");
        assert!(rej["127.0.0.66:9000"]["reason"]
            .as_str()
            .unwrap()
            .contains("invalid name"));
        // Becoming valid again lists it again.
        r.apply(&t, None, answered("running"), 3.0);
        assert_eq!(r.devices().len(), 1);
        assert!(r.rejected().is_empty());
    }

    #[test]
    fn one_id_on_two_addresses_shows_the_latest() {
        let r = registry();
        let a = Target::parse("127.0.0.10", false).unwrap();
        let b = Target::parse("127.0.0.20", false).unwrap();
        r.apply(
            &a,
            Some("127.0.0.10".parse().unwrap()),
            answered("running"),
            1.0,
        );
        r.apply(
            &b,
            Some("127.0.0.20".parse().unwrap()),
            answered("running"),
            2.0,
        );
        assert_eq!(r.devices()[ID]["ip"], "127.0.0.20");
        assert_eq!(r.devices().len(), 1);
    }

    #[tokio::test]
    async fn registry_persists_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let config = DiscoveryConfig {
            poll_interval: Duration::from_secs(3600),
            device_timeout: Duration::from_millis(200),
            ..DiscoveryConfig::default()
        };
        {
            let r = Arc::new(DeviceRegistry::new(config.clone(), dir.path()).unwrap());
            let guard = r.start();
            assert!(
                !dir.path().join("devices.sqlite").exists(),
                "no file before there is something to keep"
            );
            let t = Target::parse("127.0.0.10:1", false).unwrap();
            let (_, w) = r.apply(&t, None, answered("running"), 50.0);
            r.persist_device(w.unwrap()).await;
            r.add_list("127.0.0.11:1");
            // The manual target is saved by the supervisor: wait for it (bounded).
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let n: i64 = lock(&r.store)
                    .get(None)
                    .unwrap()
                    .query_row("SELECT COUNT(*) FROM targets", [], |row| row.get(0))
                    .unwrap();
                if n == 1 {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "target never saved");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            guard.stop();
        }
        let r = Arc::new(DeviceRegistry::new(config, dir.path()).unwrap());
        let _guard = r.start();
        let d = &r.devices()[ID];
        assert_eq!(d["status"], "offline");
        assert_eq!(d["name"], "ETHOSCOPE_001");
        assert_eq!(d["last_seen"], 50.0);
        assert_eq!(d["port"], 1);
        assert!(r.pending().contains_key("127.0.0.11:1"));
        // A restarted node still knows the device was running when last heard.
        let s = &r.sightings()[ID];
        assert_eq!(
            s.link,
            Link::Offline {
                last_seen: Some(50.0)
            }
        );
        assert_eq!(
            (s.reported.as_deref(), s.activity_since),
            (Some("running"), Some(50.0))
        );
    }
}
