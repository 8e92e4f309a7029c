//! `--devices-from URL`: the device list comes from upstream's node, which already polls the
//! devices, instead of this node polling them a second time.
//!
//! Upstream's `/devices` is as untrusted as a device: it relays whatever the devices send (one
//! padded field made it tens of megabytes), and its entries carry upstream's own keys. So the list
//! is fetched like every other answer ([`etho_http::fetch_json`]: no redirects, capped at what a
//! daemon accepts, bounded in time), and [`relay_document`] rebuilds each entry the way this node
//! builds its own: a valid id, name and address or the entry is rejected (listed on
//! `GET /devices/rejected` with the reason), only the known fields ([`crate::fields`]), and the
//! node's keys (`ip`, `port`, `status`, `last_seen`, `consecutive_errors`, `poll_error`,
//! `backup_path`). Upstream keeps one entry per machine id, so there is no conflict to judge here:
//! identity is upstream's.
//!
//! While upstream cannot be read, the last good list is served; past the unreached timeout every
//! entry turns `offline` (with the reason in `poll_error`), so the daemons stop trying devices
//! nobody has seen.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use etho_http::ServiceUrl;
use etho_model::device::{is_valid_device_name, is_valid_machine_id, MAX_DEVICE_MAP_BYTES};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::entry::backup_path;
use crate::fields::{check, keep_known, DATABASES};
use crate::poller::{is_status_word, shown};
use crate::registry::{now_f64, DiscoveryConfig, MAX_TARGETS};
use crate::target::DEVICE_PORT;

/// The list as last read, and how reading it went.
#[derive(Debug, Default)]
struct State {
    devices: Map<String, Value>,
    rejected: Map<String, Value>,
    last_ok: Option<f64>,
    failing: bool,
}

/// Reads upstream's device list (see the module docs). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Relay {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    url: ServiceUrl,
    client: reqwest::Client,
    timeout: Duration,
    interval: Duration,
    stale_after: Duration,
    results: Option<PathBuf>,
    state: Mutex<State>,
}

/// Why upstream's answer was not a device list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// Not a JSON object.
    #[error("upstream's node answered JSON that is not an object")]
    NotAnObject,
    /// Upstream's `{"error": <traceback>}` answer.
    #[error("upstream's node reported an error: {0}")]
    Upstream(String),
}

impl Relay {
    /// A relay of `url` (upstream's `/devices`), read every poll interval.
    pub fn new(url: ServiceUrl, config: &DiscoveryConfig, client: reqwest::Client) -> Relay {
        Relay {
            shared: Arc::new(Shared {
                url,
                client,
                timeout: config.device_timeout.max(Duration::from_secs(5)),
                interval: config.poll_interval,
                stale_after: config.thresholds.unreached_timeout,
                results: config.results_dir.clone(),
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The URL read.
    pub fn url(&self) -> &str {
        self.shared.url.endpoint().as_str()
    }

    /// The relayed `GET /devices` map.
    pub fn devices(&self) -> Map<String, Value> {
        self.lock().devices.clone()
    }

    /// Upstream's entries that were refused, keyed by upstream's key, with the reason.
    pub fn rejected(&self) -> Map<String, Value> {
        self.lock().rejected.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the list every poll interval until `token` is cancelled.
    pub fn spawn(&self, token: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let result = this.fetch().await;
                this.store(result, now_f64());
                tokio::select! {
                    _ = tokio::time::sleep(this.shared.interval) => {}
                    _ = token.cancelled() => return,
                }
            }
        });
    }

    async fn fetch(&self) -> Result<Value, String> {
        let s = &self.shared;
        etho_http::fetch_json::<Value>(&s.client, s.url.endpoint(), MAX_DEVICE_MAP_BYTES, s.timeout)
            .await
            .map_err(|e| etho_model::error_chain(&e))
    }

    /// Takes in one read at `now`.
    fn store(&self, result: Result<Value, String>, now: f64) {
        let parsed = result.and_then(|doc| {
            relay_document(&doc, self.shared.results.as_deref()).map_err(|e| e.to_string())
        });
        let mut st = self.lock();
        match parsed {
            Ok((devices, rejected)) => {
                if st.failing {
                    tracing::info!("upstream's device list at {} is readable again", self.url());
                }
                st.devices = devices;
                st.rejected = rejected;
                st.last_ok = Some(now);
                st.failing = false;
            }
            Err(error) => {
                if !st.failing {
                    tracing::warn!(
                        "cannot read upstream's device list at {}: {error}",
                        self.url()
                    );
                }
                st.failing = true;
                let silent = now - st.last_ok.unwrap_or(f64::MIN);
                if silent >= self.shared.stale_after.as_secs_f64() {
                    let note = format!("upstream's node at {} cannot be read: {error}", self.url());
                    for entry in st.devices.values_mut() {
                        if let Some(obj) = entry.as_object_mut() {
                            obj.insert("status".into(), Value::from("offline"));
                            obj.insert("poll_error".into(), Value::from(shown(&note)));
                        }
                    }
                }
            }
        }
    }
}

/// Upstream's list as this node's: `(devices, rejected)`, each keyed like `GET /devices` and
/// `GET /devices/rejected`.
pub type Relayed = (Map<String, Value>, Map<String, Value>);

/// An entry refused: the address it names, if valid, and why.
type Refused = (Option<String>, String);

/// Rebuilds upstream's `/devices` answer as this node's: `(devices, rejected)`. At most
/// [`MAX_TARGETS`] devices are kept.
pub fn relay_document(doc: &Value, results: Option<&Path>) -> Result<Relayed, RelayError> {
    let map = doc.as_object().ok_or(RelayError::NotAnObject)?;
    if let Some(err) = map.get("error") {
        return Err(RelayError::Upstream(shown(&err.to_string())));
    }
    let mut devices = Map::new();
    let mut rejected = Map::new();
    for (key, entry) in map {
        if devices.len() >= MAX_TARGETS {
            break;
        }
        match relay_entry(key, entry, results) {
            Ok((id, doc)) => {
                devices.insert(id, Value::Object(doc));
            }
            Err((ip, reason)) => {
                let key: String = key.chars().take(80).collect();
                let rejection = serde_json::json!({
                    "ip": ip, "port": DEVICE_PORT, "id": null, "status": "rejected",
                    "reason": reason, "last_seen": null,
                });
                rejected.insert(key, rejection);
            }
        }
    }
    Ok((devices, rejected))
}

/// One upstream entry as this node's entry, or (its address, why it is refused).
fn relay_entry(
    key: &str,
    entry: &Value,
    results: Option<&Path>,
) -> Result<(String, Map<String, Value>), Refused> {
    let Some(obj) = entry.as_object() else {
        return Err((None, "the entry is not a JSON object".into()));
    };
    let text = |k: &str| obj.get(k).and_then(Value::as_str);
    let ip = text("ip")
        .and_then(|s| s.trim().parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_unspecified() && !ip.is_multicast());
    let shown_ip = ip.map(|ip| ip.to_string());
    let id = text("id").unwrap_or(key);
    if !is_valid_machine_id(id) || (!key.is_empty() && key != id) {
        return Err((shown_ip, format!("invalid machine id {}", shown(id))));
    }
    let name = match text("name") {
        Some(n) if is_valid_device_name(n) => n,
        other => {
            let name = other.map_or_else(|| "<missing>".into(), shown);
            return Err((shown_ip, format!("invalid name {name}")));
        }
    };
    let Some(ip) = ip else {
        return Err((
            None,
            format!("invalid address {}", shown(&format!("{:?}", obj.get("ip")))),
        ));
    };
    let status = text("status")
        .filter(|s| is_status_word(s))
        .unwrap_or("unknown");
    let mut out = keep_known(obj);
    out.insert("id".into(), Value::from(id));
    out.insert("name".into(), Value::from(name));
    if let Some(db) = obj
        .get("databases")
        .filter(|d| d.is_object())
        .and_then(|d| check(d, &DATABASES))
    {
        out.insert("databases".into(), db);
    }
    out.insert("ip".into(), Value::from(ip.to_string()));
    out.insert("port".into(), Value::from(DEVICE_PORT));
    out.insert("status".into(), Value::from(status));
    let last_seen = obj
        .get("last_seen")
        .and_then(Value::as_f64)
        .filter(|t| t.is_finite());
    out.insert(
        "last_seen".into(),
        last_seen.map_or(Value::Null, Value::from),
    );
    let errors = obj
        .get("consecutive_errors")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    out.insert("consecutive_errors".into(), Value::from(errors));
    out.insert("poll_error".into(), Value::Null);
    if let Some(results) = results {
        let path = backup_path(results, id, name, status, &out);
        out.insert("backup_path".into(), path.map_or(Value::Null, Value::from));
    }
    Ok((id.to_string(), out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixture(name: &str) -> Value {
        let path = format!(
            "{}/../model/tests/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// Upstream's recorded lists become entries the daemons use, with this node's keys and
    /// upstream's backup path.
    #[test]
    fn recorded_upstream_lists_are_relayed() {
        let results = Path::new("/ethoscope_data/results");
        for name in [
            "head-node-devices.json",
            "head-node-devices-startup-window.json",
            "july-node-devices.json",
        ] {
            let upstream = fixture(name);
            let (devices, rejected) = relay_document(&upstream, Some(results)).unwrap();
            assert!(rejected.is_empty(), "{name}: {rejected:?}");
            assert_eq!(devices.len(), upstream.as_object().unwrap().len(), "{name}");
            let (parsed, problems) =
                etho_model::device::parse_device_map(&Value::Object(devices.clone())).unwrap();
            assert!(problems.is_empty(), "{name}: {problems:?}");
            for d in &parsed {
                let theirs = &upstream[&d.id];
                assert_eq!(d.ip.to_string(), theirs["ip"].as_str().unwrap());
                assert_eq!(d.status, theirs["status"].as_str().unwrap());
                assert_eq!(d.raw["port"], DEVICE_PORT);
                // Where upstream computed a backup path, ours is the same.
                if let Some(path) = theirs.get("backup_path").and_then(Value::as_str) {
                    assert_eq!(d.raw["backup_path"], path, "{name} {}", d.id);
                }
                // Upstream's own keys are not relayed.
                for key in ["ping", "skip_scanning", "status_details", "active"] {
                    assert!(d.raw.get(key).is_none(), "{name}: {key}");
                }
            }
        }
        let head = fixture("head-node-devices.json");
        let (devices, _) = relay_document(&head, None).unwrap();
        let one = &devices["400c6373839f11ec5edfc384f5d734e5"];
        assert_eq!(
            one["databases"]["MariaDB"]["ETHOSCOPE_001_db"]["db_status"],
            "tracking"
        );
        assert!(one.get("backup_path").is_none());
    }

    #[test]
    fn hostile_upstream_entries_are_rejected() {
        let id = "0123456789abcdef0123456789abcdef";
        let doc = json!({
            id: {"id": id, "name": "ETHOSCOPE_001", "ip": "127.0.0.10", "status": "running",
                 "padding": "x".repeat(100_000), "backup_filename": "y".repeat(1000)},
            "../x": {"id": "../x", "name": "E", "ip": "127.0.0.11"},
            "ffffffffffffffffffffffffffffffff": {"name": "../../etc", "ip": "127.0.0.12"},
            "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee": {"name": "E", "ip": "0.0.0.0"},
            "dddddddddddddddddddddddddddddddd": [1, 2],
        });
        let (devices, rejected) = relay_document(&doc, None).unwrap();
        assert_eq!(devices.len(), 1);
        assert!(serde_json::to_vec(&devices).unwrap().len() < 1000);
        assert!(devices[id].get("padding").is_none());
        assert_eq!(rejected.len(), 4);
        assert!(rejected["ffffffffffffffffffffffffffffffff"]["reason"]
            .as_str()
            .unwrap()
            .contains("invalid name"));
        assert!(relay_document(&json!({"error": "Traceback"}), None).is_err());
        assert!(relay_document(&json!([]), None).is_err());
    }
}
