//! Polling one device: what its answers mean, and how its status follows from them.
//!
//! Everything a device sends is untrusted. [`parse_id_answer`], [`validate_info`] and
//! [`parse_databases`] turn raw JSON into checked values (a device that reports a bad id or name
//! is *rejected*: flagged on the node, never passed to the backup daemons). [`PollState::next`] is
//! the status machine, a pure function of the previous state, the poll's outcome and the time, so
//! every transition is tested without a clock:
//!
//! - answers on `/id` and `/data/<id>`: the status the device reports (`running`, `stopped`, ...);
//! - `/id` answers but `/data/<id>` does not: `busy`, and `offline` once busy for
//!   [`Thresholds::busy_timeout`] (upstream's newer node);
//! - no answer: `unreached`, then `offline` after [`Thresholds::refused_limit`] consecutive refused
//!   connections (nothing listens: the device is off) or after [`Thresholds::unreached_timeout`]
//!   of other failures (timeouts, garbage).
//!
//! [`poll_device`] does the HTTP side with short timeouts and a body-size cap
//! ([`etho_http::fetch_json`]).

use std::time::Duration;

use etho_http::{FetchError, ServiceUrl};
use etho_model::device::{is_valid_device_name, is_valid_machine_id, json_kind};
use etho_model::error_chain;
use serde_json::{Map, Value};

/// Largest device answer accepted (a real `/data` document is a few kB). What is kept of it is
/// far smaller ([`crate::fields`]).
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// Shortened display of untrusted text for messages and logs.
pub fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(80).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    format!("{out:?}")
}

/// A device answer that shows it must not be trusted with paths or SQL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// `/id` gave something that is not a 32-hex machine id.
    #[error("device reports an invalid machine id {0}")]
    BadId(String),
    /// `/data/<id>` gave a name that is not a plain name.
    #[error("device reports an invalid name {0}")]
    BadName(String),
    /// `/data/<id>` belongs to another machine than `/id` said.
    #[error("device reports id {data} in /data but {id} in /id")]
    IdMismatch {
        /// From `/id`.
        id: String,
        /// From `/data/<id>`.
        data: String,
    },
}

/// Why an answer could not be used (a malfunction rather than a lie).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// Not JSON, or not the expected JSON type.
    #[error("{0}")]
    Malformed(String),
    /// The firmware's `{"error": <traceback>}` answer.
    #[error("device reported an error: {0}")]
    DeviceError(String),
    /// The answer was refused for what it claims.
    #[error(transparent)]
    Rejected(#[from] Rejection),
}

/// Parses `GET /id`: `{"id": "<32 hex>"}`.
pub fn parse_id_answer(v: &Value) -> Result<String, AnswerError> {
    let obj = v
        .as_object()
        .ok_or_else(|| AnswerError::Malformed(format!("/id answered a JSON {}", json_kind(v))))?;
    if let Some(err) = obj.get("error") {
        return Err(AnswerError::DeviceError(error_text(err)));
    }
    match obj.get("id") {
        Some(Value::String(id)) if is_valid_machine_id(id) => Ok(id.clone()),
        Some(Value::String(id)) => Err(Rejection::BadId(shown(id)).into()),
        Some(other) => Err(Rejection::BadId(shown(&other.to_string())).into()),
        None => Err(AnswerError::Malformed("/id answer has no \"id\"".into())),
    }
}

fn error_text(err: &Value) -> String {
    let text = match err {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    // A traceback's last line says what happened.
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    shown(last.trim())
}

/// The checked content of a `GET /data/<id>` answer.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceData {
    /// Validated name.
    pub name: String,
    /// Device-reported status (`running`, `stopped`, ...), or `unknown` when it sent none or
    /// something that is not a status word.
    pub status: String,
    /// The answer's known fields, each checked and capped ([`crate::fields::keep_known`]); the
    /// node sets `id`, `name`, `status` and its own keys itself.
    pub fields: Map<String, Value>,
}

/// True for a short lower-case status word (`running`, `communication_error`, ...).
pub fn is_status_word(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// Checks a `GET /data/<id>` answer against the id learned from `/id`.
pub fn validate_info(id: &str, v: &Value) -> Result<DeviceData, AnswerError> {
    let obj = v
        .as_object()
        .ok_or_else(|| AnswerError::Malformed(format!("/data answered a JSON {}", json_kind(v))))?;
    if let Some(err) = obj.get("error").filter(|e| !e.is_null()) {
        // The firmware answers `{"error": traceback}` alone; a real info document carries
        // `error: null` or a short error next to its other fields.
        if obj.get("id").is_none() {
            return Err(AnswerError::DeviceError(error_text(err)));
        }
    }
    match obj.get("id") {
        None => {}
        Some(Value::String(d)) if d == id => {}
        Some(other) => {
            return Err(Rejection::IdMismatch {
                id: id.to_string(),
                data: shown(other.as_str().map_or(&other.to_string(), |s| s)),
            }
            .into())
        }
    }
    let name = match obj.get("name") {
        Some(Value::String(n)) if is_valid_device_name(n) => n.clone(),
        Some(Value::String(n)) => return Err(Rejection::BadName(shown(n)).into()),
        Some(other) => return Err(Rejection::BadName(shown(&other.to_string())).into()),
        None => return Err(Rejection::BadName("<missing>".into()).into()),
    };
    let status = match obj.get("status") {
        Some(Value::String(s)) if is_status_word(s) => s.clone(),
        _ => "unknown".to_string(),
    };
    Ok(DeviceData {
        name,
        status,
        fields: crate::fields::keep_known(obj),
    })
}

/// Checks a `GET /data/databases/<id>` answer: an object whose `SQLite` and `MariaDB` members,
/// when present, are objects; each kept as [`crate::fields::DATABASES`] allows (known keys,
/// bounded entries). Anything else is dropped (old firmware has no such endpoint).
pub fn parse_databases(v: &Value) -> Option<Map<String, Value>> {
    let obj = v.as_object()?;
    if obj.contains_key("error") {
        return None;
    }
    for key in ["SQLite", "MariaDB"] {
        if !matches!(
            obj.get(key),
            None | Some(Value::Null) | Some(Value::Object(_))
        ) {
            return None;
        }
    }
    let mut out = match crate::fields::check(v, &crate::fields::DATABASES)? {
        Value::Object(m) => m,
        _ => return None,
    };
    for key in ["SQLite", "MariaDB"] {
        if !out.get(key).is_some_and(Value::is_object) {
            out.insert(key.to_string(), Value::Object(Map::new()));
        }
    }
    Some(out)
}

/// Where a device stands, as the node reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reach {
    /// Never polled yet (known from the registry or just added).
    Unknown,
    /// Answers fully.
    Online,
    /// `/id` answers, `/data` does not, since `since` (epoch seconds).
    Busy {
        /// When it became busy.
        since: f64,
    },
    /// Does not answer, since `since`.
    Unreached {
        /// First failure of this streak.
        since: f64,
    },
    /// Given up on for now (still polled, less often).
    Offline,
}

/// A device's `status` on `GET /devices`: its own word while it answers, else the node's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeStatus {
    /// What the device reports (`running`, `stopped`, ..., or `unknown`).
    Device(String),
    /// `/id` answers, `/data` does not.
    Busy,
    /// No answer for now.
    Unreached,
    /// Given up on, or not polled yet.
    Offline,
}

impl NodeStatus {
    /// The wire word.
    pub fn as_str(&self) -> &str {
        match self {
            NodeStatus::Device(word) => word,
            NodeStatus::Busy => "busy",
            NodeStatus::Unreached => "unreached",
            NodeStatus::Offline => "offline",
        }
    }

    /// True for the states a lab needs to hear about: the node's own (busy, unreached,
    /// offline) and any device word other than `running` and `stopped`.
    pub fn is_notable(&self) -> bool {
        !matches!(self, NodeStatus::Device(word) if word == "running" || word == "stopped")
    }
}

impl std::fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for NodeStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl serde::Serialize for NodeStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The result of one poll, as the state machine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `/id` and `/data/<id>` answered and validated.
    Answered,
    /// `/id` answered, `/data/<id>` did not (or answered garbage).
    IdOnly,
    /// Connection refused: nothing listens there.
    Refused,
    /// Anything else: timeout, reset, bad `/id` answer.
    Failed,
}

/// When to give up on a device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Consecutive refused connections before `offline` (upstream: 3).
    pub refused_limit: u32,
    /// How long other failures may last before `offline` (upstream: 20 min).
    pub unreached_timeout: Duration,
    /// How long `busy` may last before `offline` (upstream: 10 min).
    pub busy_timeout: Duration,
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds {
            refused_limit: 3,
            unreached_timeout: Duration::from_secs(120),
            busy_timeout: Duration::from_secs(600),
        }
    }
}

/// A device's polling state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollState {
    /// Where it stands.
    pub reach: Reach,
    /// Consecutive polls without a full answer.
    pub consecutive_errors: u32,
    /// Consecutive refused connections.
    pub consecutive_refused: u32,
    /// Last full answer, epoch seconds.
    pub last_seen: Option<f64>,
    /// While online: the first full answer of this streak (how long the device has been
    /// reachable without interruption).
    pub online_since: Option<f64>,
}

impl Default for PollState {
    fn default() -> PollState {
        PollState {
            reach: Reach::Unknown,
            consecutive_errors: 0,
            consecutive_refused: 0,
            last_seen: None,
            online_since: None,
        }
    }
}

impl PollState {
    /// A device known from earlier runs, not polled yet: `offline` until it answers.
    pub fn remembered(last_seen: Option<f64>) -> PollState {
        PollState {
            reach: Reach::Offline,
            last_seen,
            ..PollState::default()
        }
    }

    /// The state after a poll with `outcome` at `now` (epoch seconds).
    pub fn next(self, outcome: Outcome, now: f64, t: &Thresholds) -> PollState {
        match outcome {
            Outcome::Answered => PollState {
                reach: Reach::Online,
                consecutive_errors: 0,
                consecutive_refused: 0,
                last_seen: Some(now),
                online_since: match self.reach {
                    Reach::Online => self.online_since.or(Some(now)),
                    _ => Some(now),
                },
            },
            Outcome::IdOnly => {
                let since = match self.reach {
                    Reach::Busy { since } => since,
                    _ => now,
                };
                let reach = if now - since >= t.busy_timeout.as_secs_f64() {
                    Reach::Offline
                } else {
                    Reach::Busy { since }
                };
                PollState {
                    reach,
                    consecutive_errors: self.consecutive_errors.saturating_add(1),
                    consecutive_refused: 0,
                    last_seen: self.last_seen,
                    online_since: None,
                }
            }
            Outcome::Refused | Outcome::Failed => {
                let refused = if outcome == Outcome::Refused {
                    self.consecutive_refused.saturating_add(1)
                } else {
                    0
                };
                let since = match self.reach {
                    Reach::Unreached { since } => since,
                    _ => now,
                };
                let gone = self.reach == Reach::Offline
                    || refused >= t.refused_limit
                    || now - since >= t.unreached_timeout.as_secs_f64();
                PollState {
                    reach: if gone {
                        Reach::Offline
                    } else {
                        Reach::Unreached { since }
                    },
                    consecutive_errors: self.consecutive_errors.saturating_add(1),
                    consecutive_refused: refused,
                    last_seen: self.last_seen,
                    online_since: None,
                }
            }
        }
    }

    /// The `status` the node reports: the device's own word while it answers, else the node's.
    pub fn status(&self, device_status: &str) -> NodeStatus {
        match self.reach {
            Reach::Online => NodeStatus::Device(device_status.to_string()),
            Reach::Busy { .. } => NodeStatus::Busy,
            Reach::Unreached { .. } => NodeStatus::Unreached,
            Reach::Offline | Reach::Unknown => NodeStatus::Offline,
        }
    }

    /// How long to wait before the next poll: the normal interval, slower once offline.
    pub fn next_poll_in(&self, interval: Duration) -> Duration {
        match self.reach {
            Reach::Offline => (interval * 6).min(Duration::from_secs(60)).max(interval),
            _ => interval,
        }
    }
}

/// What one poll found.
#[derive(Debug, Clone, PartialEq)]
pub enum PollReport {
    /// A full, valid answer.
    Answered {
        /// Machine id.
        id: String,
        /// `/data/<id>`, checked.
        data: DeviceData,
        /// `/data/databases/<id>`, when the device has it.
        databases: Option<Map<String, Value>>,
    },
    /// `/id` answered, `/data/<id>` did not.
    IdOnly {
        /// Machine id.
        id: String,
        /// What went wrong with `/data`.
        error: String,
    },
    /// The device lies about who it is.
    Rejected {
        /// The id, when `/id` was valid.
        id: Option<String>,
        /// Why.
        reason: Rejection,
    },
    /// No usable answer.
    Unreachable {
        /// Connection refused (nothing listens) rather than a timeout or garbage.
        refused: bool,
        /// What went wrong.
        error: String,
    },
}

impl PollReport {
    /// The state-machine outcome of this report (a rejected device answers, so it is not
    /// unreachable).
    pub fn outcome(&self) -> Outcome {
        match self {
            PollReport::Answered { .. } | PollReport::Rejected { .. } => Outcome::Answered,
            PollReport::IdOnly { .. } => Outcome::IdOnly,
            PollReport::Unreachable { refused: true, .. } => Outcome::Refused,
            PollReport::Unreachable { refused: false, .. } => Outcome::Failed,
        }
    }
}

/// A failed fetch, for `poll_error`: short for a refusal, with its causes otherwise.
fn fetch_problem(what: &str, err: &FetchError) -> String {
    match err {
        FetchError::Refused(_) => format!("{what}: {err}"),
        _ => format!("{what}: {}", error_chain(err)),
    }
}

/// Polls a device: `/id`, then `/data/<id>`, then `/data/databases/<id>`, each a capped fetch
/// ([`etho_http::fetch_json`], at most [`MAX_ANSWER_BYTES`]) within `timeout`.
pub async fn poll_device(
    client: &reqwest::Client,
    base: &ServiceUrl,
    timeout: Duration,
) -> PollReport {
    let fetch = |path: String| async move {
        etho_http::fetch_json::<Value>(client, &base.join(&path), MAX_ANSWER_BYTES, timeout).await
    };
    let id_doc = match fetch("id".into()).await {
        Ok(v) => v,
        Err(e) => {
            return PollReport::Unreachable {
                refused: e.is_refused(),
                error: fetch_problem("/id", &e),
            }
        }
    };
    let id = match parse_id_answer(&id_doc) {
        Ok(id) => id,
        Err(AnswerError::Rejected(reason)) => return PollReport::Rejected { id: None, reason },
        Err(e) => {
            return PollReport::Unreachable {
                refused: false,
                error: format!("/id: {e}"),
            }
        }
    };
    let data = match fetch(format!("data/{id}")).await {
        Ok(v) => match validate_info(&id, &v) {
            Ok(d) => d,
            Err(AnswerError::Rejected(reason)) => {
                return PollReport::Rejected {
                    id: Some(id),
                    reason,
                }
            }
            Err(e) => {
                return PollReport::IdOnly {
                    id,
                    error: format!("/data: {e}"),
                }
            }
        },
        Err(e) => {
            return PollReport::IdOnly {
                id,
                error: fetch_problem("/data", &e),
            }
        }
    };
    let databases = fetch(format!("data/databases/{id}"))
        .await
        .ok()
        .as_ref()
        .and_then(parse_databases);
    PollReport::Answered {
        id,
        data,
        databases,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn id_answers() {
        assert_eq!(parse_id_answer(&json!({"id": ID})), Ok(ID.to_string()));
        for bad in [
            json!({"id": "../../../../etc/passwd"}),
            json!({"id": ID.to_uppercase()}),
            json!({"id": 12}),
            json!({"id": null}),
            json!({"id": format!("{ID}0")}),
        ] {
            assert!(
                matches!(
                    parse_id_answer(&bad),
                    Err(AnswerError::Rejected(Rejection::BadId(_)))
                ),
                "{bad}"
            );
        }
        for malformed in [json!([ID]), json!("id"), json!({}), json!(null)] {
            assert!(
                matches!(parse_id_answer(&malformed), Err(AnswerError::Malformed(_))),
                "{malformed}"
            );
        }
        let tb = json!({"error": "Traceback (most recent call last):\n  File x\nKeyError: 'id'\n"});
        assert_eq!(
            parse_id_answer(&tb),
            Err(AnswerError::DeviceError("\"KeyError: 'id'\"".into()))
        );
    }

    #[test]
    fn info_answers() {
        let good = json!({"id": ID, "name": "ETHOSCOPE_001", "status": "running",
                          "ip": "6.6.6.6", "last_seen": 0, "time": 1.5, "error": null});
        let d = validate_info(ID, &good).unwrap();
        assert_eq!(d.name, "ETHOSCOPE_001");
        assert_eq!(d.status, "running");
        // The device cannot choose the address or the node's own fields.
        assert!(d.fields.get("ip").is_none() && d.fields.get("last_seen").is_none());
        assert_eq!(d.fields["time"], 1.5);

        fn with_field(doc: &Value, k: &str, v: Value) -> Value {
            let mut g = doc.clone();
            g[k] = v;
            g
        }
        let with = |k: &str, v: Value| with_field(&good, k, v);
        // Nor relay what the node does not know, or a known field over its cap.
        let padded = with("padding", json!("x".repeat(3_900_000)));
        let padded = with_field(&padded, "backup_filename", json!("y".repeat(1000)));
        let d = validate_info(ID, &padded).unwrap();
        assert!(d.fields.get("padding").is_none() && d.fields.get("backup_filename").is_none());
        assert!(serde_json::to_vec(&d.fields).unwrap().len() < 200);
        for hostile in [
            "../../etc",
            "ETHOSCOPE_001'; DROP TABLE x; --",
            "a/b",
            "",
            "ETHOSCOPE 1",
        ] {
            assert!(
                matches!(
                    validate_info(ID, &with("name", json!(hostile))),
                    Err(AnswerError::Rejected(Rejection::BadName(_)))
                ),
                "{hostile}"
            );
        }
        assert!(matches!(
            validate_info(ID, &with("name", json!({"x": 1}))),
            Err(AnswerError::Rejected(Rejection::BadName(_)))
        ));
        let mut nameless = good.clone();
        nameless.as_object_mut().unwrap().remove("name");
        assert!(matches!(
            validate_info(ID, &nameless),
            Err(AnswerError::Rejected(Rejection::BadName(_)))
        ));
        assert!(matches!(
            validate_info(ID, &with("id", json!("ffffffffffffffffffffffffffffffff"))),
            Err(AnswerError::Rejected(Rejection::IdMismatch { .. }))
        ));
        assert!(matches!(
            validate_info(ID, &with("id", json!(7))),
            Err(AnswerError::Rejected(Rejection::IdMismatch { .. }))
        ));
        // Odd statuses are kept out of the status field (which the daemons filter on).
        for odd in [
            json!(5),
            json!("RUNNING"),
            json!("x".repeat(100)),
            json!("a b"),
        ] {
            assert_eq!(
                validate_info(ID, &with("status", odd.clone()))
                    .unwrap()
                    .status,
                "unknown",
                "{odd}"
            );
        }
        assert!(matches!(
            validate_info(ID, &json!({"error": "Traceback ...\nWrongMachineID\n"})),
            Err(AnswerError::DeviceError(_))
        ));
        assert!(matches!(
            validate_info(ID, &json!([1, 2])),
            Err(AnswerError::Malformed(_))
        ));
        // A device-side error next to a full document is just a field.
        assert!(validate_info(ID, &with("error", json!("camera failed"))).is_ok());
    }

    #[test]
    fn databases_answers() {
        let d = parse_databases(&json!({"SQLite": {"a.db": {}}, "MariaDB": {}})).unwrap();
        assert_eq!(d["SQLite"]["a.db"], json!({}));
        assert_eq!(
            parse_databases(&json!({"MariaDB": {"X_db": {"backup_filename": "f"}}})).unwrap()
                ["SQLite"],
            json!({})
        );
        for bad in [
            json!([]),
            json!({"SQLite": []}),
            json!({"MariaDB": "x"}),
            json!({"error": "Traceback"}),
            json!(null),
        ] {
            assert_eq!(parse_databases(&bad), None, "{bad}");
        }
    }

    fn t() -> Thresholds {
        Thresholds {
            refused_limit: 3,
            unreached_timeout: Duration::from_secs(60),
            busy_timeout: Duration::from_secs(600),
        }
    }

    #[test]
    fn answers_make_online_with_device_status() {
        let s = PollState::default().next(Outcome::Answered, 100.0, &t());
        assert_eq!(s.reach, Reach::Online);
        assert_eq!(s.last_seen, Some(100.0));
        // Reachable since the first answer of the streak; a failure ends the streak.
        let later = s.next(Outcome::Answered, 105.0, &t());
        assert_eq!(
            (later.last_seen, later.online_since),
            (Some(105.0), Some(100.0))
        );
        let busy = later.next(Outcome::IdOnly, 110.0, &t());
        assert_eq!(busy.online_since, None);
        let back = busy.next(Outcome::Answered, 115.0, &t());
        assert_eq!(back.online_since, Some(115.0));
        let gone = back.next(Outcome::Refused, 120.0, &t());
        assert_eq!((gone.online_since, gone.last_seen), (None, Some(115.0)));
        assert_eq!(s.status("running"), "running");
        assert_eq!(PollState::default().status("running"), "offline");
        assert_eq!(
            PollState::remembered(Some(5.0)).status("running"),
            "offline"
        );
    }

    #[test]
    fn refused_goes_unreached_then_offline() {
        let mut s = PollState::default().next(Outcome::Answered, 0.0, &t());
        s = s.next(Outcome::Refused, 5.0, &t());
        assert_eq!(s.reach, Reach::Unreached { since: 5.0 });
        assert_eq!(s.status("running"), "unreached");
        s = s.next(Outcome::Refused, 10.0, &t());
        assert_eq!(s.reach, Reach::Unreached { since: 5.0 });
        s = s.next(Outcome::Refused, 15.0, &t());
        assert_eq!(s.reach, Reach::Offline);
        assert_eq!(s.consecutive_errors, 3);
        assert_eq!(s.last_seen, Some(0.0));
        // Offline stays offline until it answers, then goes straight back online.
        s = s.next(Outcome::Failed, 20.0, &t());
        assert_eq!(s.reach, Reach::Offline);
        s = s.next(Outcome::Answered, 25.0, &t());
        assert_eq!(s.reach, Reach::Online);
        assert_eq!(s.consecutive_errors, 0);
    }

    #[test]
    fn timeouts_go_offline_after_the_unreached_timeout() {
        let mut s = PollState::default().next(Outcome::Answered, 0.0, &t());
        for i in 1..=12 {
            s = s.next(Outcome::Failed, f64::from(i) * 5.0, &t());
        }
        // 5 s .. 60 s: first failure at 5 s, 55 s later still unreached.
        assert_eq!(s.reach, Reach::Unreached { since: 5.0 });
        s = s.next(Outcome::Failed, 65.0, &t());
        assert_eq!(s.reach, Reach::Offline);
        // Refusals interleaved with timeouts do not add up to the refused limit.
        let mut s = PollState::default().next(Outcome::Answered, 0.0, &t());
        for (i, o) in [
            Outcome::Refused,
            Outcome::Failed,
            Outcome::Refused,
            Outcome::Failed,
        ]
        .into_iter()
        .enumerate()
        {
            s = s.next(o, i as f64, &t());
        }
        assert_eq!(s.reach, Reach::Unreached { since: 0.0 });
    }

    #[test]
    fn busy_then_offline_after_busy_timeout() {
        let mut s = PollState::default().next(Outcome::Answered, 0.0, &t());
        s = s.next(Outcome::IdOnly, 5.0, &t());
        assert_eq!(s.reach, Reach::Busy { since: 5.0 });
        assert_eq!(s.status("running"), "busy");
        s = s.next(Outcome::IdOnly, 300.0, &t());
        assert_eq!(s.reach, Reach::Busy { since: 5.0 });
        s = s.next(Outcome::IdOnly, 605.0, &t());
        assert_eq!(s.reach, Reach::Offline);
        // A busy device that stops answering at all is unreached from then on.
        let s =
            PollState::default()
                .next(Outcome::IdOnly, 0.0, &t())
                .next(Outcome::Failed, 5.0, &t());
        assert_eq!(s.reach, Reach::Unreached { since: 5.0 });
    }

    #[test]
    fn offline_devices_are_polled_less_often() {
        let i = Duration::from_secs(5);
        assert_eq!(
            PollState::default()
                .next(Outcome::Answered, 0.0, &t())
                .next_poll_in(i),
            i
        );
        assert_eq!(
            PollState::remembered(None).next_poll_in(i),
            Duration::from_secs(30)
        );
        assert_eq!(
            PollState::remembered(None).next_poll_in(Duration::from_secs(100)),
            Duration::from_secs(100)
        );
    }

    #[test]
    fn node_status_words() {
        for (status, word, notable) in [
            (NodeStatus::Device("running".into()), "running", false),
            (NodeStatus::Device("stopped".into()), "stopped", false),
            (NodeStatus::Device("recording".into()), "recording", true),
            (NodeStatus::Busy, "busy", true),
            (NodeStatus::Unreached, "unreached", true),
            (NodeStatus::Offline, "offline", true),
        ] {
            assert_eq!(status.as_str(), word);
            assert_eq!(serde_json::to_value(&status).unwrap(), json!(word));
            assert_eq!(status.is_notable(), notable, "{word}");
        }
    }

    #[test]
    fn shown_truncates() {
        assert_eq!(shown("ab"), "\"ab\"");
        let long = shown(&"x".repeat(500));
        assert!(long.chars().count() < 90 && long.contains('…'));
    }
}
