//! The device registry: which devices the node knows, where they are and how they are doing.
//!
//! Devices come from three sources: `--device HOST[:PORT]` flags, `POST /device/add`, and mDNS
//! browsing of `_ethoscope._tcp.local.` ([`crate::mdns`]); addresses are checked as
//! [`crate::target::Target`]s. Each address gets its own poll loop ([`crate::poller`]) every
//! [`DiscoveryConfig::poll_interval`]; the registry keeps the last checked answer and the status
//! machine per address ([`crate::entry`]) and builds the `GET /devices` map that both backup
//! daemons read. With `--devices-from` the list comes from upstream's node instead
//! ([`crate::relay`]) and nothing is polled.
//!
//! Everything on the lab LAN is untrusted, so ([`crate::identity`]):
//!
//! - a machine id belongs to one address: a second live address claiming it is a *conflict*,
//!   listed with the status `conflict` (which the daemons skip), on `GET /devices/rejected`, and
//!   in the device's entry, until one side stops claiming it or an operator confirms one
//!   ([`DeviceRegistry::confirm`]);
//! - only the fields the node knows are relayed, each capped ([`crate::fields`]);
//! - addresses added by hand or by mDNS are forgotten after [`DiscoveryConfig::forget_after`]
//!   without an ethoscope answer, a full registry evicts the oldest address that never answered
//!   as one, and `DELETE /device/<address>` removes one;
//! - `GET /devices/pending` says the same of every address that never answered as an ethoscope,
//!   so it does not tell a closed port from an open one.
//!
//! Known devices (with their binding) and added addresses persist in SQLite ([`crate::store`]), so
//! after a restart every known device is listed (as `offline` until it answers) and keeps being
//! polled. Devices whose answers fail validation are *rejected*: listed on `GET /devices/rejected`
//! with the reason, never on `GET /devices`.
//!
//! Nothing here holds a lock across an `.await`; SQLite runs on the blocking pool.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use etho_http::ServiceUrl;
use etho_model::device::CONFLICT_STATUS;
use etho_model::health::{runs_experiment, Sighting};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::entry::{to_value, Entry, RejectedEntry};
use crate::identity::{self, Binding, Claimant, Verdict};
use crate::poller::{self, NodeStatus, PollReport, PollState, Thresholds};
use crate::relay::Relay;
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
    /// Addresses added by hand or by mDNS that give no ethoscope answer for this long are
    /// forgotten (`--forget-after`, 7 days).
    pub forget_after: Duration,
    /// The results folder, for the `backup_path` of each entry (upstream's rule); `None` leaves
    /// it out.
    pub results_dir: Option<PathBuf>,
    /// Take the device list from upstream's node at this URL instead of polling devices
    /// (`--devices-from`).
    pub devices_from: Option<ServiceUrl>,
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
            forget_after: DEFAULT_FORGET_AFTER,
            results_dir: None,
            devices_from: None,
        }
    }
}

/// Default of [`DiscoveryConfig::forget_after`]: a week.
pub const DEFAULT_FORGET_AFTER: Duration = Duration::from_secs(7 * 86_400);

/// Most addresses one `POST /device/add` may carry.
pub const MAX_ADD: usize = 256;

/// Most addresses the registry holds and polls. `POST /device/add` and mDNS announcements come
/// from the network; without a bound, a client could make the node keep (and poll forever)
/// any number of addresses. A lab has dozens of devices.
pub const MAX_TARGETS: usize = etho_model::device::MAX_DEVICES;

/// Most addresses a conflict lists.
const CONFLICT_ADDRESSES: usize = 8;

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
    /// The registry holds [`MAX_TARGETS`] addresses, every one of them a device or configured.
    #[error("the node already polls {MAX_TARGETS} addresses, the most it keeps")]
    Full,
    /// The node takes its devices from upstream's node.
    #[error("this node takes its device list from {0} (--devices-from)")]
    Relayed(String),
}

/// Why an operator's confirmation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfirmError {
    /// No address with that identity.
    #[error("{target} has not answered with machine id {id}")]
    NotAClaimant {
        /// The id.
        id: String,
        /// The address given.
        target: String,
    },
}

/// What `DELETE /device/<address>` removed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Removed {
    /// The address.
    pub removed: String,
    /// The device that was bound to it, now forgotten.
    pub device: Option<String>,
}

/// An address to start polling.
#[derive(Debug)]
struct Poll {
    target: Target,
    generation: u64,
    token: CancellationToken,
}

/// A change to the registry file. Sent while the registry's lock is held and written in order by
/// one task, so the file never goes back to an older state (a slow write of a device's old
/// address landing after an operator's confirmation, say).
#[derive(Debug)]
enum Write {
    /// Insert or update a device (and its binding).
    Device(DeviceRow),
    /// Save an address added by hand or by mDNS.
    Target(Target, Source, f64),
    /// When a saved address last answered as an ethoscope.
    Answer(Target, f64),
    /// Delete an address, and the device bound to it.
    Forget(Target, Option<String>),
    /// Answered once everything before it is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The registry's state, behind one lock.
#[derive(Debug, Default)]
struct Inner {
    entries: BTreeMap<Target, Entry>,
    /// Each machine id's address.
    bindings: BTreeMap<String, Binding>,
    /// Ids in conflict now (to log changes once).
    conflicted: BTreeSet<String>,
    next_generation: u64,
}

/// One applied poll: when to poll next and what was saved.
#[derive(Debug)]
struct Applied {
    delay: Duration,
    /// The device row queued for the registry file (what the tests check).
    #[cfg_attr(not(test), allow(dead_code))]
    device: Option<DeviceRow>,
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

/// The sentence a conflict shows, in `/devices`, `/devices/rejected` and the logs.
fn conflict_reason(id: &str, addresses: &[String]) -> String {
    format!(
        "machine id {id} is claimed by {}: nothing is backed up under this id until one of them \
         stops answering with it or an operator confirms the right address \
         (POST /device/{id}/confirm)",
        addresses.join(" and ")
    )
}

impl Inner {
    fn generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    /// Every id and the addresses whose last identity it is.
    fn ids(&self) -> BTreeMap<&str, Vec<Claimant>> {
        let mut ids: BTreeMap<&str, Vec<Claimant>> = BTreeMap::new();
        for (target, e) in &self.entries {
            if let Some(id) = &e.id {
                ids.entry(id.as_str()).or_default().push(Claimant {
                    target: target.clone(),
                    seen: e.seen(),
                    since: e.claimed_since,
                });
            }
        }
        ids
    }

    fn verdict(&self, id: &str) -> Verdict {
        let claimants: Vec<Claimant> = self
            .entries
            .iter()
            .filter(|(_, e)| e.id.as_deref() == Some(id))
            .map(|(target, e)| Claimant {
                target: target.clone(),
                seen: e.seen(),
                since: e.claimed_since,
            })
            .collect();
        identity::judge(self.bindings.get(id), &claimants)
    }

    /// Re-judges `id` after something changed and keeps its binding and conflict state.
    fn rebind(&mut self, id: &str) {
        match self.verdict(id) {
            Verdict::Held {
                binding,
                moved_from,
                ..
            } => {
                if self.bindings.get(id) != Some(&binding) {
                    if let Some(from) = moved_from {
                        tracing::warn!(
                            "machine id {id} moved from {from} to {} (the old address stopped \
                             answering with it)",
                            binding.target
                        );
                    }
                    if let Some(e) = self.entries.get_mut(&binding.target) {
                        e.persisted = None;
                    }
                    self.bindings.insert(id.to_string(), binding);
                }
                if self.conflicted.remove(id) {
                    tracing::info!("the conflict over machine id {id} is resolved");
                }
            }
            Verdict::Conflict { bound, others } => {
                if !self.bindings.contains_key(id) {
                    if let Some(e) = self.entries.get_mut(&bound) {
                        e.persisted = None;
                    }
                    let binding = Binding {
                        target: bound.clone(),
                        confirmed: false,
                    };
                    self.bindings.insert(id.to_string(), binding);
                }
                if self.conflicted.insert(id.to_string()) {
                    let mut addresses = vec![bound.to_string()];
                    addresses.extend(others.iter().map(Target::to_string));
                    tracing::warn!("{}", conflict_reason(id, &addresses));
                }
            }
            Verdict::Unclaimed => {}
        }
    }

    /// Removes an address; returns the device that was bound to it (now forgotten).
    fn remove(&mut self, target: &Target) -> Option<Option<String>> {
        let entry = self.entries.remove(target)?;
        entry.token.cancel();
        let Some(id) = entry.id else {
            return Some(None);
        };
        let bound = self.bindings.get(&id).is_some_and(|b| &b.target == target);
        if bound {
            self.bindings.remove(&id);
            self.conflicted.remove(&id);
        }
        self.rebind(&id);
        Some(bound.then_some(id))
    }

    /// The `/devices` document of one id (whose claimants [`Inner::ids`] gave), from its bound
    /// address when that one has it, with the entry it came from.
    fn device_doc(
        &self,
        id: &str,
        claimants: &[Claimant],
        results: Option<&Path>,
    ) -> Option<(&Entry, Map<String, Value>)> {
        let verdict = identity::judge(self.bindings.get(id), claimants);
        let bound = match &verdict {
            Verdict::Held { binding, .. } => Some(&binding.target),
            Verdict::Conflict { bound, .. } => Some(bound),
            Verdict::Unclaimed => None,
        };
        let doc_of = |t: &Target| {
            let e = self.entries.get(t)?;
            (e.id.as_deref() == Some(id))
                .then(|| e.device_json(t, results))
                .flatten()
                .map(|doc| (e, doc))
        };
        let (entry, mut doc) = bound.and_then(doc_of).or_else(|| {
            // The bound address is gone or answers for another device: the latest answer.
            let seen = |c: &&Claimant| {
                let e = self.entries.get(&c.target);
                e.and_then(|e| e.poll.last_seen).unwrap_or(f64::MIN)
            };
            let latest = claimants
                .iter()
                .max_by(|a, b| seen(a).total_cmp(&seen(b)))?;
            doc_of(&latest.target)
        })?;
        if let Verdict::Conflict { bound, others } = &verdict {
            let mut addresses = vec![bound.to_string()];
            addresses.extend(others.iter().map(Target::to_string));
            addresses.truncate(CONFLICT_ADDRESSES);
            doc.insert("status".into(), Value::from(CONFLICT_STATUS));
            let conflict = serde_json::json!({
                "addresses": addresses,
                "reason": conflict_reason(id, &addresses),
            });
            doc.insert("conflict".into(), conflict);
        }
        Some((entry, doc))
    }
}

/// The node's device registry. See the module docs.
#[derive(Debug)]
pub struct DeviceRegistry {
    config: DiscoveryConfig,
    db_path: Option<PathBuf>,
    inner: Mutex<Inner>,
    store: Arc<Mutex<Store>>,
    polls: mpsc::UnboundedSender<Poll>,
    polls_rx: Mutex<Option<mpsc::UnboundedReceiver<Poll>>>,
    writes: mpsc::UnboundedSender<Write>,
    writes_rx: Mutex<Option<mpsc::UnboundedReceiver<Write>>>,
    client: reqwest::Client,
    relay: Option<Relay>,
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

impl DeviceRegistry {
    /// A registry with nothing loaded yet; `state_dir` holds `devices.sqlite` when persistence is
    /// on. Opening the database and polling begin with [`DeviceRegistry::start`].
    pub fn new(
        config: DiscoveryConfig,
        state_dir: &Path,
    ) -> Result<DeviceRegistry, reqwest::Error> {
        let client = etho_http::client(config.device_timeout)?;
        let (polls, polls_rx) = mpsc::unbounded_channel();
        let (writes, writes_rx) = mpsc::unbounded_channel();
        let relay = config
            .devices_from
            .clone()
            .map(|url| Relay::new(url, &config, client.clone()));
        Ok(DeviceRegistry {
            db_path: (config.persist && relay.is_none()).then(|| state_dir.join("devices.sqlite")),
            config,
            inner: Mutex::new(Inner::default()),
            store: Arc::new(Mutex::new(Store::Closed)),
            polls,
            polls_rx: Mutex::new(Some(polls_rx)),
            writes,
            writes_rx: Mutex::new(Some(writes_rx)),
            client,
            relay,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DiscoveryConfig {
        &self.config
    }

    /// The `GET /devices` map: every known, valid device keyed by id, with its known fields plus
    /// `ip`, `port`, `status`, `last_seen`, `consecutive_errors`, `poll_error` and (with a
    /// results folder) `backup_path`, from the address the id is bound to. An id in conflict has
    /// the status `conflict` and a `conflict` object naming the addresses.
    pub fn devices(&self) -> Map<String, Value> {
        if let Some(relay) = &self.relay {
            return relay.devices();
        }
        let inner = lock(&self.inner);
        let results = self.config.results_dir.as_deref();
        inner
            .ids()
            .into_iter()
            .filter_map(|(id, claimants)| {
                let (_, doc) = inner.device_doc(id, &claimants, results)?;
                Some((id.to_string(), Value::Object(doc)))
            })
            .collect()
    }

    /// What polling knows about every device of [`DeviceRegistry::devices`], by id, for the
    /// health view: from the same address as its `/devices` entry, with its conflict if any.
    /// Empty while the node relays upstream's list (it does not poll).
    pub fn sightings(&self) -> HashMap<String, Sighting> {
        if self.relay.is_some() {
            return HashMap::new();
        }
        let inner = lock(&self.inner);
        inner
            .ids()
            .into_iter()
            .filter_map(|(id, claimants)| {
                let (entry, doc) = inner.device_doc(id, &claimants, None)?;
                Some((id.to_string(), entry.sighting(&doc)))
            })
            .collect()
    }

    /// Addresses whose device was rejected, keyed by `HOST:PORT`, with the reason: answers that
    /// fail validation, every address of an id in conflict (status `conflict`), and addresses
    /// claiming an id an operator confirmed elsewhere.
    pub fn rejected(&self) -> Map<String, Value> {
        if let Some(relay) = &self.relay {
            return relay.rejected();
        }
        let inner = lock(&self.inner);
        let entry = |target: &Target, status, reason: String| {
            let e = inner.entries.get(target)?;
            let entry = RejectedEntry {
                ip: e.ip_text(target),
                port: target.port,
                id: &e.id,
                status,
                reason,
                last_seen: e.poll.last_seen,
            };
            Some((target.to_string(), to_value(&entry)))
        };
        let mut out = Map::new();
        for (target, e) in &inner.entries {
            if let Some(reason) = &e.rejected {
                out.extend(entry(target, "rejected", reason.clone()));
            }
        }
        for (id, claimants) in inner.ids() {
            match identity::judge(inner.bindings.get(id), &claimants) {
                Verdict::Conflict { bound, others } => {
                    let mut all = vec![bound];
                    all.extend(others);
                    let addresses: Vec<String> = all.iter().map(Target::to_string).collect();
                    let reason = conflict_reason(id, &addresses);
                    for t in &all {
                        if !out.contains_key(&t.to_string()) {
                            out.extend(entry(t, CONFLICT_STATUS, reason.clone()));
                        }
                    }
                }
                Verdict::Held {
                    binding, impostors, ..
                } => {
                    for t in &impostors {
                        let reason = format!(
                            "claims machine id {id}, which an operator confirmed at {}",
                            binding.target
                        );
                        out.extend(entry(t, "rejected", reason));
                    }
                }
                Verdict::Unclaimed => {}
            }
        }
        out
    }

    /// Addresses that never gave a complete identity (unreachable since added, or busy before
    /// their first `/data` answer), keyed by `HOST:PORT`. Not on `GET /devices`: without a
    /// name, a backup daemon could not use them.
    pub fn pending(&self) -> Map<String, Value> {
        let inner = lock(&self.inner);
        inner
            .entries
            .iter()
            .filter(|(_, e)| (e.id.is_none() || e.name.is_none()) && e.rejected.is_none())
            .map(|(target, e)| (target.to_string(), e.pending_json()))
            .collect()
    }

    /// Adds an address to poll (no effect when already known, except that a `--device` address
    /// becomes permanent). A full registry first evicts the oldest address that never answered
    /// as an ethoscope; with none, the new one is refused.
    pub fn add_target(&self, target: Target, source: Source) -> Result<(), AddError> {
        if let Some(relay) = &self.relay {
            return Err(AddError::Relayed(relay.url().to_string()));
        }
        let (generation, token) = {
            let mut inner = lock(&self.inner);
            if let Some(e) = inner.entries.get_mut(&target) {
                if source == Source::Flag {
                    e.source = Source::Flag;
                }
                return Ok(());
            }
            if inner.entries.len() >= MAX_TARGETS {
                let victim = identity::evict(inner.entries.iter().map(|(t, e)| (t, e.age())))
                    .cloned()
                    .ok_or(AddError::Full)?;
                tracing::info!(target = %victim, "registry full: forgetting an address that never answered as an ethoscope");
                if let Some(device) = inner.remove(&victim) {
                    self.write(Write::Forget(victim, device));
                }
            }
            let generation = inner.generation();
            let now = now_f64();
            let entry = Entry::new(source, now, generation);
            let token = entry.token.clone();
            inner.entries.insert(target.clone(), entry);
            if matches!(source, Source::Manual | Source::Mdns) {
                self.write(Write::Target(target.clone(), source, now));
            }
            (generation, token)
        };
        tracing::info!(target = %target, source = source.as_str(), "new device address");
        let _ = self.polls.send(Poll {
            target,
            generation,
            token,
        });
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

    /// `DELETE /device/<address>`: stops polling an address and forgets it, with the device
    /// bound to it. `None` when the address is not known.
    pub async fn remove(&self, target: &Target) -> Option<Removed> {
        let device = {
            let mut inner = lock(&self.inner);
            let device = inner.remove(target)?;
            self.write(Write::Forget(target.clone(), device.clone()));
            device
        };
        tracing::info!(target = %target, device = ?device, "address removed by request");
        self.flush().await;
        Some(Removed {
            removed: target.to_string(),
            device,
        })
    }

    /// An operator's answer to a conflict: `target` is the address `id` belongs to. Other
    /// addresses claiming it are rejected from now on.
    pub async fn confirm(&self, id: &str, target: &Target) -> Result<(), ConfirmError> {
        {
            let mut guard = lock(&self.inner);
            let inner = &mut *guard;
            let not_a_claimant = || ConfirmError::NotAClaimant {
                id: id.to_string(),
                target: target.to_string(),
            };
            let entry = inner.entries.get_mut(target).ok_or_else(not_a_claimant)?;
            if entry.id.as_deref() != Some(id) {
                return Err(not_a_claimant());
            }
            entry.persisted = None;
            if let Some(row) = entry.row_to_persist(target, now_f64(), true) {
                self.write(Write::Device(row));
            }
            let binding = Binding {
                target: target.clone(),
                confirmed: true,
            };
            inner.bindings.insert(id.to_string(), binding);
            inner.rebind(id);
        }
        tracing::warn!(target = %target, "an operator confirmed {target} for machine id {id}");
        self.flush().await;
        Ok(())
    }

    /// Opens (or creates) the registry database, loads known devices and targets, adds the
    /// configured ones and starts polling (or, with `--devices-from`, fetching the list).
    /// Everything stops when the guard is dropped.
    pub fn start(self: &Arc<Self>) -> DiscoveryGuard {
        let token = CancellationToken::new();
        if let Some(relay) = &self.relay {
            relay.spawn(token.clone());
            return DiscoveryGuard { token };
        }
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
        let channels = (lock(&self.polls_rx).take(), lock(&self.writes_rx).take());
        match channels {
            (Some(polls), Some(writes)) => {
                tokio::spawn(self.clone().supervise(polls, token.clone()));
                tokio::spawn(self.clone().write_loop(writes, token.clone()));
            }
            _ => tracing::warn!("device discovery was already started"),
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
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        for k in known {
            let generation = inner.generation();
            let mut e = Entry::new(Source::Known, k.first_seen, generation);
            e.id = Some(k.id.clone());
            e.name = Some(k.name);
            e.ip = k.ip.parse().ok();
            e.device_status = k.device_status;
            e.activity_since = k.activity_since;
            e.poll = PollState::remembered(k.last_seen);
            e.persisted = Some((NodeStatus::Offline, k.last_seen));
            e.last_answer = k.last_seen;
            e.answer_persisted = k.last_seen;
            e.claimed_since = k.first_seen;
            let binding = Binding {
                target: k.target.clone(),
                confirmed: k.confirmed,
            };
            inner.bindings.insert(k.id, binding);
            self.queue(&k.target, &e);
            inner.entries.insert(k.target, e);
        }
        for saved in targets {
            match inner.entries.get_mut(&saved.target) {
                Some(e) => {
                    e.source = saved.source;
                    e.added = e.added.min(saved.added);
                    e.last_answer = match (e.last_answer, saved.last_answer) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    };
                }
                None => {
                    let generation = inner.generation();
                    let mut e = Entry::new(saved.source, saved.added, generation);
                    e.last_answer = saved.last_answer;
                    e.answer_persisted = saved.last_answer;
                    self.queue(&saved.target, &e);
                    inner.entries.insert(saved.target, e);
                }
            }
        }
    }

    fn queue(&self, target: &Target, e: &Entry) {
        let _ = self.polls.send(Poll {
            target: target.clone(),
            generation: e.generation,
            token: e.token.clone(),
        });
    }

    /// Queues a change of the registry file (nothing when persistence is off).
    fn write(&self, w: Write) {
        if self.db_path.is_some() {
            let _ = self.writes.send(w);
        }
    }

    /// Waits until every change queued so far is in the registry file (at once when persistence
    /// is off or discovery was not started).
    pub async fn flush(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.db_path.is_some() && lock(&self.writes_rx).is_none() {
            let _ = self.writes.send(Write::Flush(done));
            let _ = wait.await;
        }
    }

    /// Writes the queued changes in order until `token` is cancelled, then what is left.
    async fn write_loop(
        self: Arc<Self>,
        mut rx: mpsc::UnboundedReceiver<Write>,
        token: CancellationToken,
    ) {
        loop {
            let w = tokio::select! {
                w = rx.recv() => w,
                _ = token.cancelled() => break,
            };
            match w {
                Some(w) => self.store_write(w).await,
                None => return,
            }
        }
        while let Ok(w) = rx.try_recv() {
            self.store_write(w).await;
        }
    }

    async fn store_write(&self, w: Write) {
        let (what, res) = match w {
            Write::Flush(done) => {
                let _ = done.send(());
                return;
            }
            Write::Device(row) => (
                "save the device registry",
                self.with_store(move |c| store::save_device(c, &row)).await,
            ),
            Write::Target(t, source, now) => (
                "save a device address",
                self.with_store(move |c| store::save_target(c, &t, source, now))
                    .await,
            ),
            Write::Answer(t, at) => (
                "save a device address",
                self.with_store(move |c| store::save_answer(c, &t, at))
                    .await,
            ),
            Write::Forget(t, device) => (
                "forget a device address",
                self.with_store(move |c| store::forget(c, &t, device.as_deref()))
                    .await,
            ),
        };
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("cannot {what}: {e}"),
            Err(e) => tracing::error!("device registry writer failed: {e}"),
        }
    }

    async fn supervise(
        self: Arc<Self>,
        mut rx: mpsc::UnboundedReceiver<Poll>,
        token: CancellationToken,
    ) {
        let every =
            (self.config.forget_after / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        let mut sweep = tokio::time::interval(every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let msg = tokio::select! {
                m = rx.recv() => m,
                _ = sweep.tick() => {
                    self.sweep(now_f64()).await;
                    continue;
                }
                _ = token.cancelled() => None,
            };
            let Some(Poll {
                target,
                generation,
                token: entry_token,
            }) = msg
            else {
                break;
            };
            let poll = self
                .clone()
                .poll_loop(target, generation, token.clone(), entry_token);
            tokio::spawn(poll);
        }
    }

    /// Forgets the addresses that stayed silent for [`DiscoveryConfig::forget_after`].
    async fn sweep(&self, now: f64) {
        let forget_after = self.config.forget_after.as_secs_f64();
        let forgotten: Vec<(Target, Option<String>)> = {
            let mut inner = lock(&self.inner);
            let expired: Vec<Target> = inner
                .entries
                .iter()
                .filter(|(_, e)| identity::expired(&e.age(), now, forget_after))
                .map(|(t, _)| t.clone())
                .collect();
            expired
                .into_iter()
                .filter_map(|t| {
                    let device = inner.remove(&t)?;
                    self.write(Write::Forget(t.clone(), device.clone()));
                    Some((t, device))
                })
                .collect()
        };
        for (target, device) in forgotten {
            tracing::info!(target = %target, device = ?device,
                "forgetting an address with no ethoscope answer for {:?}", self.config.forget_after);
        }
        self.flush().await;
    }

    async fn poll_loop(
        self: Arc<Self>,
        target: Target,
        generation: u64,
        token: CancellationToken,
        entry_token: CancellationToken,
    ) {
        loop {
            let (ip, report) = tokio::select! {
                r = self.poll_once(&target) => r,
                _ = entry_token.cancelled() => return,
                _ = token.cancelled() => return,
            };
            let Some(applied) = self.apply(&target, generation, ip, report, now_f64()) else {
                return;
            };
            tokio::select! {
                _ = tokio::time::sleep(applied.delay) => {}
                _ = entry_token.cancelled() => return,
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

    /// Applies one poll's report at `now`: the entry, the id's binding, what to save (queued) and
    /// when to poll next. `None` when the address was removed (or re-added) meanwhile: that poll
    /// loop ends.
    fn apply(
        &self,
        target: &Target,
        generation: u64,
        ip: Option<IpAddr>,
        report: PollReport,
        now: f64,
    ) -> Option<Applied> {
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        let entry = inner
            .entries
            .get_mut(target)
            .filter(|e| e.generation == generation)?;
        let before = entry.status();
        let outcome = report.outcome();
        if ip.is_some() {
            entry.ip = ip;
        }
        let running_before = runs_experiment(&entry.device_status);
        let answered = matches!(report, PollReport::Answered { .. });
        let previous_id = entry.absorb(target, report, now);
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
        match (entry.last_answer, entry.answer_persisted) {
            (Some(at), Some(saved)) if at - saved < 3600.0 => {}
            (Some(at), _) if matches!(entry.source, Source::Manual | Source::Mdns) => {
                entry.answer_persisted = Some(at);
                self.write(Write::Answer(target.clone(), at));
            }
            _ => {}
        }
        let id = entry.id.clone();
        for id in previous_id.iter().chain(id.iter()) {
            inner.rebind(id);
        }
        let device = id.and_then(|id| {
            let confirmed = inner
                .bindings
                .get(&id)
                .filter(|b| &b.target == target)?
                .confirmed;
            inner
                .entries
                .get_mut(target)?
                .row_to_persist(target, now, confirmed)
        });
        if let Some(row) = &device {
            self.write(Write::Device(row.clone()));
        }
        Some(Applied { delay, device })
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
mod tests;
