//! The node's unified `GET /backup/status` document and the pure merge that builds it.
//!
//! The node asks both backup daemons for their `GET /status` and answers
//! `{"mysql_backup": <doc>, "rsync_backup": <doc>, "unified_devices": {<id>: UnifiedDevice}}`:
//!
//! - each daemon's JSON object goes through byte for byte ([`DaemonDocument`] keeps the text it
//!   was parsed from, so numbers such as `0.13999999999999999` are not re-printed as `0.14`, and
//!   clients of the old proxy read `mysql_backup` unchanged), or, when the daemon could not be
//!   used, the fixed error object of [`Service::unavailable_document`];
//! - `unified_devices` is [`unify`]: one entry per device id known to either *usable* daemon,
//!   sorted by id so the reply is deterministic (upstream iterated a Python set).
//!
//! Daemon documents are foreign input, so the merge accepts what upstream accepted and never
//! fails: the MySQL side is a flat `{id: entry}` map and the rsync side `{"devices": {...}}`, but
//! each side accepts either shape; entries that are not objects are ignored; a document with an
//! `"error"` key is a daemon reporting its own failure and contributes no devices. Values found in
//! a device entry are copied as they are; only missing keys get defaults.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::status::ProgressStatus;

/// The two backup daemons the node merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// The MariaDB mirror daemon (upstream port 8090).
    MysqlBackup,
    /// The rsync results/videos daemon (upstream port 8093).
    RsyncBackup,
}

impl Service {
    /// The key of this daemon's document in the unified reply (`"mysql_backup"`).
    pub const fn key(self) -> &'static str {
        match self {
            Service::MysqlBackup => "mysql_backup",
            Service::RsyncBackup => "rsync_backup",
        }
    }

    /// The seed's message for a daemon that could not be used.
    pub const fn unavailable_message(self) -> &'static str {
        match self {
            Service::MysqlBackup => "MySQL backup service unavailable",
            Service::RsyncBackup => "Rsync backup service unavailable",
        }
    }

    /// Exactly `{"error": "<message>", "service": "<key>"}`, in that key order.
    pub fn unavailable_document(self) -> Map<String, Value> {
        let mut doc = Map::new();
        doc.insert("error".into(), Value::from(self.unavailable_message()));
        doc.insert("service".into(), Value::from(self.key()));
        doc
    }
}

/// A daemon's JSON object: the exact text it sent, and the object parsed from it.
#[derive(Debug, Clone)]
pub struct DaemonDocument {
    raw: Box<RawValue>,
    map: Map<String, Value>,
}

/// Why a daemon's reply body is not a document.
#[derive(Debug)]
pub enum DocumentError {
    /// Not JSON.
    Json(serde_json::Error),
    /// JSON, but not an object (the JSON type is named).
    NotAnObject(&'static str),
}

impl std::fmt::Display for DocumentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DocumentError::Json(_) => f.write_str("body is not JSON"),
            DocumentError::NotAnObject(kind) => write!(f, "body is a JSON {kind}, not an object"),
        }
    }
}

impl std::error::Error for DocumentError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DocumentError::Json(e) => Some(e),
            DocumentError::NotAnObject(_) => None,
        }
    }
}

impl DaemonDocument {
    /// Parses a reply body; only a JSON object is a document. The text is kept as sent
    /// (surrounding whitespace aside).
    pub fn parse(body: &[u8]) -> Result<DaemonDocument, DocumentError> {
        let raw: Box<RawValue> = serde_json::from_slice(body).map_err(DocumentError::Json)?;
        match serde_json::from_str::<Value>(raw.get()).map_err(DocumentError::Json)? {
            Value::Object(map) => Ok(DaemonDocument { raw, map }),
            other => Err(DocumentError::NotAnObject(crate::device::json_kind(&other))),
        }
    }

    /// A document from an object built in memory (its text is the object's serialization).
    pub fn from_map(map: Map<String, Value>) -> DaemonDocument {
        let text = serde_json::to_string(&map).unwrap_or_else(|_| "{}".to_string());
        let raw = RawValue::from_string(text).unwrap_or_else(|_| empty_raw_object());
        DaemonDocument { raw, map }
    }

    /// The parsed object.
    pub fn map(&self) -> &Map<String, Value> {
        &self.map
    }

    /// The text as received.
    pub fn raw(&self) -> &RawValue {
        &self.raw
    }

    fn into_raw(self) -> Box<RawValue> {
        self.raw
    }
}

impl PartialEq for DaemonDocument {
    /// Equal texts (the parsed objects then agree too).
    fn eq(&self, other: &DaemonDocument) -> bool {
        self.raw.get() == other.raw.get()
    }
}

fn empty_raw_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_string()).expect("{} is JSON")
}

/// One daemon's `GET /status` reply as the node received it.
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceReport {
    /// The daemon answered with a JSON object (kept byte for byte).
    Available(DaemonDocument),
    /// Down, refused, timed out, non-2xx, oversized, not JSON, or JSON that is not an object.
    Unavailable,
}

impl ServiceReport {
    /// Classifies a parsed reply body: an object is [`ServiceReport::Available`], anything else
    /// (array, string, number, null) is [`ServiceReport::Unavailable`].
    pub fn from_document(doc: Value) -> ServiceReport {
        match doc {
            Value::Object(map) => ServiceReport::Available(DaemonDocument::from_map(map)),
            _ => ServiceReport::Unavailable,
        }
    }

    /// The device entries this report contributes to the merge, whatever the input shape.
    ///
    /// `None` when the daemon is unavailable or its document carries an `"error"` key. A
    /// `"devices"` key selects the wrapped shape (and yields nothing when it is not an object);
    /// otherwise the document itself is the flat `{id: entry}` map. Non-object entries are
    /// skipped by the caller.
    pub fn devices(&self) -> Option<&Map<String, Value>> {
        let ServiceReport::Available(doc) = self else {
            return None;
        };
        let doc = doc.map();
        if doc.contains_key("error") {
            return None;
        }
        match doc.get("devices") {
            Some(Value::Object(devices)) => Some(devices),
            Some(_) => None,
            None => Some(doc),
        }
    }

    /// The document as it appears in the unified reply: verbatim, or the fixed error object.
    pub fn into_document(self, service: Service) -> Box<RawValue> {
        match self {
            ServiceReport::Available(doc) => doc.into_raw(),
            ServiceReport::Unavailable => {
                DaemonDocument::from_map(service.unavailable_document()).into_raw()
            }
        }
    }
}

/// `overall_status` of a unified device entry (the seed's four words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OverallStatus {
    /// Both daemons' last backup succeeded.
    Success,
    /// Exactly one daemon's last backup succeeded (whatever the other reports).
    Partial,
    /// Neither succeeded and at least one reports `error`.
    Error,
    /// Neither succeeded nor failed: absent, running, warning, info, no progress yet, ...
    Unknown,
}

impl OverallStatus {
    /// The wire word.
    pub const fn as_str(self) -> &'static str {
        match self {
            OverallStatus::Success => "success",
            OverallStatus::Partial => "partial",
            OverallStatus::Error => "error",
            OverallStatus::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for OverallStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One daemon's view of one device inside a [`UnifiedDevice`].
///
/// Every field except `available` is copied verbatim from the daemon's entry when the key is
/// present (whatever its JSON type), and defaulted when it is missing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceBlock {
    /// The device has an entry on this daemon.
    pub available: bool,
    /// The entry's `status` (device run status), or `"not_available"`.
    pub status: Value,
    /// The entry's `progress`, or `{}`.
    pub progress: Value,
    /// The entry's `synced`, or `{}`.
    pub synced: Value,
    /// The entry's `processing`, or `false`.
    pub processing: Value,
    /// The entry's `count`, or `0`.
    pub count: Value,
    /// The entry's `started`, or `null`.
    pub started: Value,
    /// The entry's `ended`, or `null`.
    pub ended: Value,
    /// rsync only: the entry's `metadata`, or `{}`. Never present in the MySQL block.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub metadata: Option<Value>,
}

impl ServiceBlock {
    /// The block for `entry` (`None`: the device is absent on that daemon).
    pub fn from_entry(service: Service, entry: Option<&Map<String, Value>>) -> ServiceBlock {
        let field =
            |key: &str, default: Value| entry.and_then(|e| e.get(key)).cloned().unwrap_or(default);
        ServiceBlock {
            available: entry.is_some(),
            status: field("status", Value::from("not_available")),
            progress: field("progress", Value::Object(Map::new())),
            synced: field("synced", Value::Object(Map::new())),
            processing: field("processing", Value::Bool(false)),
            count: field("count", Value::from(0)),
            started: field("started", Value::Null),
            ended: field("ended", Value::Null),
            metadata: match service {
                Service::MysqlBackup => None,
                Service::RsyncBackup => Some(field("metadata", Value::Object(Map::new()))),
            },
        }
    }
}

/// One entry of `unified_devices`: the seed's fields, in the seed's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnifiedDevice {
    /// MySQL name, else rsync name, else `DEVICE_` + the first 8 characters of the id.
    pub name: String,
    /// Device run status: MySQL's, else rsync's, else `"unknown"`.
    pub status: String,
    /// Combined backup outcome, see [`overall_status`].
    pub overall_status: OverallStatus,
    /// The MySQL daemon's view.
    pub mysql_backup: ServiceBlock,
    /// The rsync daemon's view.
    pub rsync_backup: ServiceBlock,
    /// How much of the device's data exists only on the device ([`crate::health::assess`]); set
    /// by the node after the merge, after the seed's fields.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub health: Option<crate::health::Health>,
}

/// The whole `GET /backup/status` reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnifiedStatus {
    /// The MySQL daemon's document byte for byte, or its unavailable error object.
    pub mysql_backup: Box<RawValue>,
    /// The rsync daemon's document byte for byte, or its unavailable error object.
    pub rsync_backup: Box<RawValue>,
    /// The merged per-device view, sorted by device id.
    pub unified_devices: BTreeMap<String, UnifiedDevice>,
}

impl PartialEq for UnifiedStatus {
    /// Same document texts and the same merged view.
    fn eq(&self, other: &UnifiedStatus) -> bool {
        self.mysql_backup.get() == other.mysql_backup.get()
            && self.rsync_backup.get() == other.rsync_backup.get()
            && self.unified_devices == other.unified_devices
    }
}

impl UnifiedStatus {
    /// Builds the reply from both daemons' reports, moving (not copying) their documents.
    pub fn from_reports(mysql: ServiceReport, rsync: ServiceReport) -> UnifiedStatus {
        let unified_devices = unify(&mysql, &rsync);
        UnifiedStatus {
            mysql_backup: mysql.into_document(Service::MysqlBackup),
            rsync_backup: rsync.into_document(Service::RsyncBackup),
            unified_devices,
        }
    }
}

/// Merges both daemons' device entries into one entry per device id.
///
/// Every id that has an object entry on a usable side ([`ServiceReport::devices`]) appears
/// exactly once; when both daemons are unusable the result is empty.
pub fn unify(mysql: &ServiceReport, rsync: &ServiceReport) -> BTreeMap<String, UnifiedDevice> {
    let mysql_devices = object_entries(mysql.devices());
    let rsync_devices = object_entries(rsync.devices());
    let ids: BTreeSet<&str> = mysql_devices
        .keys()
        .chain(rsync_devices.keys())
        .copied()
        .collect();
    ids.into_iter()
        .map(|id| {
            let m = mysql_devices.get(id).copied();
            let r = rsync_devices.get(id).copied();
            (id.to_string(), unify_device(id, m, r))
        })
        .collect()
}

/// The unified entry for one device id, given its entry on each side (`None`: absent there).
pub fn unify_device(
    id: &str,
    mysql: Option<&Map<String, Value>>,
    rsync: Option<&Map<String, Value>>,
) -> UnifiedDevice {
    let name = first_text("name", mysql, rsync)
        .map(str::to_string)
        .unwrap_or_else(|| format!("DEVICE_{}", id.chars().take(8).collect::<String>()));
    let status = first_text("status", mysql, rsync)
        .unwrap_or("unknown")
        .to_string();
    UnifiedDevice {
        name,
        status,
        overall_status: overall_status(mysql, rsync),
        mysql_backup: ServiceBlock::from_entry(Service::MysqlBackup, mysql),
        rsync_backup: ServiceBlock::from_entry(Service::RsyncBackup, rsync),
        health: None,
    }
}

/// The seed's truth table over both sides' `progress.status`.
///
/// A side is OK when it reports `success` or `completed` (what newer upstream daemons emit).
/// Both OK: `success`; exactly one: `partial`; otherwise `error` if either reports `error`;
/// otherwise `unknown`.
pub fn overall_status(
    mysql: Option<&Map<String, Value>>,
    rsync: Option<&Map<String, Value>>,
) -> OverallStatus {
    let m = progress_status(mysql);
    let r = progress_status(rsync);
    let ok = |s: &Option<ProgressStatus>| match s {
        Some(ProgressStatus::Success) => true,
        Some(ProgressStatus::Other(word)) => word == "completed",
        _ => false,
    };
    let failed = |s: &Option<ProgressStatus>| matches!(s, Some(ProgressStatus::Error));
    match (ok(&m), ok(&r)) {
        (true, true) => OverallStatus::Success,
        (true, false) | (false, true) => OverallStatus::Partial,
        (false, false) if failed(&m) || failed(&r) => OverallStatus::Error,
        (false, false) => OverallStatus::Unknown,
    }
}

/// `entry.progress.status` when it is a string.
fn progress_status(entry: Option<&Map<String, Value>>) -> Option<ProgressStatus> {
    entry?
        .get("progress")?
        .get("status")?
        .as_str()
        .map(ProgressStatus::parse)
}

/// Only the object entries of a device map, by id.
fn object_entries(devices: Option<&Map<String, Value>>) -> BTreeMap<&str, &Map<String, Value>> {
    devices
        .into_iter()
        .flatten()
        .filter_map(|(id, entry)| entry.as_object().map(|e| (id.as_str(), e)))
        .collect()
}

/// The first non-empty string `key` of the MySQL entry, then the rsync entry.
///
/// Upstream used Python truthiness, so `""` falls through; values that are not strings cannot be a
/// name or status and fall through too.
fn first_text<'a>(
    key: &str,
    mysql: Option<&'a Map<String, Value>>,
    rsync: Option<&'a Map<String, Value>>,
) -> Option<&'a str> {
    [mysql, rsync]
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.get(key)?.as_str())
        .find(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "0043e1b367c544fb8adb6198eccf7805";

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    fn report(v: Value) -> ServiceReport {
        ServiceReport::from_document(v)
    }

    fn parsed(raw: &RawValue) -> Value {
        serde_json::from_str(raw.get()).unwrap()
    }

    /// A daemon's text goes through byte for byte: a float that a parse-and-print round trip
    /// would shorten (`0.13999999999999999` printed as `0.14` by a lossy parser), an exponent, a
    /// trailing `.0`, an escape and the daemon's own spacing all survive; the merged view reads
    /// the same float exactly.
    #[test]
    fn documents_pass_through_byte_for_byte() {
        let text = format!(
            r#"{{"{ID}": {{"name": "ETHOSCOPE_001", "progress": {{"status": "success", "duration_s": 0.13999999999999999, "big": 1e300, "one": 1.0, "esc": "é"}}}}}}"#
        );
        let doc = DaemonDocument::parse(
            format!(
                "  {text}
"
            )
            .as_bytes(),
        )
        .unwrap();
        let status =
            UnifiedStatus::from_reports(ServiceReport::Available(doc), ServiceReport::Unavailable);
        let out = serde_json::to_string(&status).unwrap();
        assert!(
            out.starts_with(&format!(r#"{{"mysql_backup":{text},"rsync_backup":"#)),
            "{out}"
        );
        let block = serde_json::to_string(&status.unified_devices[ID].mysql_backup).unwrap();
        assert!(
            block.contains(r#""duration_s":0.13999999999999999"#),
            "{block}"
        );
    }

    #[test]
    fn only_json_objects_are_documents() {
        assert!(matches!(
            DaemonDocument::parse(b"[1, 2]"),
            Err(DocumentError::NotAnObject("array"))
        ));
        assert!(matches!(
            DaemonDocument::parse(b"{\"a\": "),
            Err(DocumentError::Json(_))
        ));
        assert_eq!(
            DaemonDocument::parse(b"{\"a\": 1}").unwrap().map()["a"],
            json!(1)
        );
    }

    /// A daemon entry whose `progress` is described by `side`.
    fn side_entry(side: &str) -> Option<Map<String, Value>> {
        let progress = match side {
            "absent" => return None,
            "missing progress" => return Some(obj(json!({"name": "E", "status": "running"}))),
            word => json!({"status": word, "message": "m"}),
        };
        Some(obj(
            json!({"name": "E", "status": "running", "progress": progress}),
        ))
    }

    #[test]
    fn overall_status_full_truth_table() {
        let sides = [
            "absent",
            "success",
            "completed",
            "error",
            "warning",
            "info",
            "running",
            "missing progress",
        ];
        let is_ok = |s: &str| s == "success" || s == "completed";
        let mut checked = 0;
        for m in sides {
            for r in sides {
                let expected = match (is_ok(m), is_ok(r)) {
                    (true, true) => "success",
                    (true, false) | (false, true) => "partial",
                    _ if m == "error" || r == "error" => "error",
                    _ => "unknown",
                };
                let me = side_entry(m);
                let re = side_entry(r);
                let got = overall_status(me.as_ref(), re.as_ref());
                assert_eq!(got.as_str(), expected, "mysql={m} rsync={r}");
                // The same answer through the whole merge (when the device exists at all).
                if me.is_some() || re.is_some() {
                    let mut mdoc = Map::new();
                    let mut rdoc = Map::new();
                    if let Some(e) = me {
                        mdoc.insert(ID.into(), Value::Object(e));
                    }
                    if let Some(e) = re {
                        rdoc.insert(ID.into(), Value::Object(e));
                    }
                    let rdoc = obj(json!({ "devices": rdoc }));
                    let out = unify(
                        &ServiceReport::Available(DaemonDocument::from_map(mdoc)),
                        &ServiceReport::Available(DaemonDocument::from_map(rdoc)),
                    );
                    assert_eq!(out[ID].overall_status.as_str(), expected, "{m}/{r}");
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 64);
    }

    #[test]
    fn truth_table_spot_checks_against_literal_words() {
        // Independent of the generated table above: the seed's sentences, one by one.
        let e = |s: &str| side_entry(s);
        let os = |m: &str, r: &str| overall_status(e(m).as_ref(), e(r).as_ref());
        assert_eq!(os("success", "success"), OverallStatus::Success);
        assert_eq!(os("completed", "success"), OverallStatus::Success);
        assert_eq!(os("success", "error"), OverallStatus::Partial);
        assert_eq!(os("absent", "completed"), OverallStatus::Partial);
        assert_eq!(os("warning", "error"), OverallStatus::Error);
        assert_eq!(os("error", "absent"), OverallStatus::Error);
        assert_eq!(os("running", "info"), OverallStatus::Unknown);
        assert_eq!(os("absent", "absent"), OverallStatus::Unknown);
        assert_eq!(os("missing progress", "warning"), OverallStatus::Unknown);
        // Case and type matter: only the exact words count.
        let upper = obj(json!({"progress": {"status": "SUCCESS"}}));
        let numeric = obj(json!({"progress": {"status": 1}}));
        let not_obj = obj(json!({"progress": "success"}));
        assert_eq!(
            overall_status(Some(&upper), Some(&numeric)),
            OverallStatus::Unknown
        );
        assert_eq!(overall_status(Some(&not_obj), None), OverallStatus::Unknown);
    }

    #[test]
    fn name_and_status_fallbacks() {
        let m = obj(json!({"name": "ETHOSCOPE_001", "status": "running"}));
        let r = obj(json!({"name": "ETHOSCOPE_RS", "status": "stopped"}));
        let d = unify_device(ID, Some(&m), Some(&r));
        assert_eq!(
            (d.name.as_str(), d.status.as_str()),
            ("ETHOSCOPE_001", "running")
        );

        let d = unify_device(ID, None, Some(&r));
        assert_eq!(
            (d.name.as_str(), d.status.as_str()),
            ("ETHOSCOPE_RS", "stopped")
        );

        // Empty strings count as missing, on each field independently.
        let m_empty = obj(json!({"name": "", "status": "running"}));
        let r_nostatus = obj(json!({"name": "ETHOSCOPE_RS", "status": ""}));
        let d = unify_device(ID, Some(&m_empty), Some(&r_nostatus));
        assert_eq!(
            (d.name.as_str(), d.status.as_str()),
            ("ETHOSCOPE_RS", "running")
        );

        // Nothing usable anywhere: DEVICE_ + first 8 characters, "unknown".
        let junk = obj(json!({"name": null, "status": 7}));
        let d = unify_device(ID, Some(&junk), Some(&obj(json!({"name": ""}))));
        assert_eq!(
            (d.name.as_str(), d.status.as_str()),
            ("DEVICE_0043e1b3", "unknown")
        );
        // Characters, not bytes; short ids are used whole.
        assert_eq!(
            unify_device("ééééééééé", None, None).name,
            "DEVICE_éééééééé"
        );
        assert_eq!(unify_device("ab", None, None).name, "DEVICE_ab");
    }

    #[test]
    fn absent_side_gets_exact_defaults() {
        let d = unify_device(ID, None, None);
        assert_eq!(
            serde_json::to_value(&d.mysql_backup).unwrap(),
            json!({"available": false, "status": "not_available", "progress": {}, "synced": {},
                   "processing": false, "count": 0, "started": null, "ended": null})
        );
        assert_eq!(
            serde_json::to_value(&d.rsync_backup).unwrap(),
            json!({"available": false, "status": "not_available", "progress": {}, "synced": {},
                   "processing": false, "count": 0, "started": null, "ended": null,
                   "metadata": {}})
        );
    }

    #[test]
    fn present_side_copies_values_verbatim_and_defaults_missing_keys() {
        let m = obj(
            json!({"status": "", "count": "seven", "started": 5, "ended": null,
                           "progress": [1], "extra": true}),
        );
        let d = unify_device(ID, Some(&m), Some(&Map::new()));
        assert_eq!(
            serde_json::to_value(&d.mysql_backup).unwrap(),
            json!({"available": true, "status": "", "progress": [1], "synced": {},
                   "processing": false, "count": "seven", "started": 5, "ended": null})
        );
        // An empty object entry is still "present on that side".
        assert_eq!(
            serde_json::to_value(&d.rsync_backup).unwrap(),
            json!({"available": true, "status": "not_available", "progress": {}, "synced": {},
                   "processing": false, "count": 0, "started": null, "ended": null,
                   "metadata": {}})
        );
    }

    #[test]
    fn both_input_shapes_are_accepted_on_both_sides() {
        let entry = json!({"name": "ETHOSCOPE_001", "progress": {"status": "success"}});
        let flat = json!({ ID: entry.clone() });
        let wrapped = json!({"devices": { ID: entry }, "disk_usage_summary": {"results": {}}});
        for m in [&flat, &wrapped] {
            for r in [&flat, &wrapped] {
                let out = unify(&report(m.clone()), &report(r.clone()));
                assert_eq!(out.keys().collect::<Vec<_>>(), vec![ID], "{m} / {r}");
                assert_eq!(out[ID].overall_status, OverallStatus::Success);
                assert!(out[ID].mysql_backup.available && out[ID].rsync_backup.available);
            }
        }
        // A wrapper whose "devices" is not an object contributes nothing (its siblings are not
        // mistaken for devices).
        let bad = report(json!({"devices": [1], "disk_usage_summary": {"results": {}}}));
        assert!(unify(&bad, &ServiceReport::Unavailable).is_empty());
    }

    #[test]
    fn non_object_entries_and_error_documents_are_ignored() {
        let m = report(json!({ ID: {"name": "A"}, "b": 1, "c": "x", "d": null, "e": [] }));
        let out = unify(&m, &ServiceReport::Unavailable);
        assert_eq!(out.keys().collect::<Vec<_>>(), vec![ID]);

        let err = report(
            json!({"status": "initializing", "error": "Backup wrapper not initialized",
                                ID: {"name": "A"}}),
        );
        assert!(err.devices().is_none());
        assert!(unify(&err, &err).is_empty());
        // The error document itself still passes through verbatim.
        let status = UnifiedStatus::from_reports(err.clone(), ServiceReport::Unavailable);
        assert_eq!(
            parsed(&status.mysql_backup),
            json!({"status": "initializing",
            "error": "Backup wrapper not initialized", ID: {"name": "A"}})
        );
    }

    #[test]
    fn non_object_documents_are_unavailable() {
        for v in [
            json!([1, 2]),
            json!("x"),
            json!(1),
            json!(null),
            json!(true),
        ] {
            assert_eq!(report(v), ServiceReport::Unavailable);
        }
    }

    #[test]
    fn unavailable_documents_are_exact() {
        let both =
            UnifiedStatus::from_reports(ServiceReport::Unavailable, ServiceReport::Unavailable);
        assert_eq!(
            serde_json::to_string(&both).unwrap(),
            r#"{"mysql_backup":{"error":"MySQL backup service unavailable","service":"mysql_backup"},"rsync_backup":{"error":"Rsync backup service unavailable","service":"rsync_backup"},"unified_devices":{}}"#
        );
    }

    #[test]
    fn devices_are_sorted_by_id_and_documents_keep_key_order() {
        let m = report(json!({"zz": {"name": "Z"}, "aa": {"name": "A"}}));
        let r = report(json!({"devices": {"mm": {"name": "M"}, "aa": {}}, "b_key": 1, "a_key": 2}));
        let status = UnifiedStatus::from_reports(m, r);
        assert_eq!(
            status.unified_devices.keys().collect::<Vec<_>>(),
            vec!["aa", "mm", "zz"]
        );
        let text = serde_json::to_string(&status).unwrap();
        assert!(text.starts_with(r#"{"mysql_backup":{"zz":{"name":"Z"},"aa":{"name":"A"}},"rsync_backup":{"devices":{"mm":{"name":"M"},"aa":{}},"b_key":1,"a_key":2},"unified_devices":{"aa":"#), "{text}");
        // Entry key order is the seed's.
        let entry = serde_json::to_string(&status.unified_devices["mm"]).unwrap();
        assert!(
            entry.starts_with(r#"{"name":"M","status":"unknown","overall_status":"unknown","mysql_backup":{"available":false,"status":"not_available","progress":{}"#),
            "{entry}"
        );
        assert!(
            entry.ends_with(r#""ended":null,"metadata":{}}}"#),
            "{entry}"
        );
    }

    /// The seed's own example payloads (response format section), merged.
    #[test]
    fn seed_example_payloads() {
        let mysql = json!({
            "device_id": {
                "name": "ETHOSCOPE_XXX", "status": "stopped",
                "progress": {"status": "success", "message": "Status message"},
                "synced": {}, "processing": false, "count": 1,
                "started": 1752137404, "ended": 1752137404
            }
        });
        let rsync_synced = json!({
            "results": {"local_files": 766, "directory": "/ethoscope_data/results",
                        "disk_usage_bytes": 287646297933_u64, "disk_usage_human": "267.9 GB"},
            "videos": {"local_files": 12529, "directory": "/ethoscope_data/videos",
                       "disk_usage_bytes": 544649438682_u64, "disk_usage_human": "507.2 GB"}
        });
        let rsync = json!({
            "devices": {
                "device_id": {
                    "name": "ETHOSCOPE_XXX", "status": "stopped",
                    "progress": {"status": "success", "message": "Backup status message"},
                    "synced": rsync_synced.clone(),
                    "processing": false, "count": 818,
                    "started": 1752137339, "ended": 1752137340, "metadata": {}
                }
            },
            "disk_usage_summary": {
                "results": {"total_files": 29119, "total_size_bytes": 11215763841541_u64,
                            "total_size_human": "10.2 TB"},
                "videos": {"total_files": 476102, "total_size_bytes": 20696678673241_u64,
                           "total_size_human": "18.8 TB"}
            }
        });
        let status = UnifiedStatus::from_reports(report(mysql.clone()), report(rsync.clone()));
        let out = serde_json::to_value(&status).unwrap();
        assert_eq!(
            out,
            json!({
                "mysql_backup": mysql,
                "rsync_backup": rsync,
                "unified_devices": {
                    "device_id": {
                        "name": "ETHOSCOPE_XXX", "status": "stopped", "overall_status": "success",
                        "mysql_backup": {
                            "available": true, "status": "stopped",
                            "progress": {"status": "success", "message": "Status message"},
                            "synced": {}, "processing": false, "count": 1,
                            "started": 1752137404, "ended": 1752137404
                        },
                        "rsync_backup": {
                            "available": true, "status": "stopped",
                            "progress": {"status": "success", "message": "Backup status message"},
                            "synced": rsync_synced, "processing": false, "count": 818,
                            "started": 1752137339, "ended": 1752137340, "metadata": {}
                        }
                    }
                }
            })
        );
        // The seed's error example, word for word.
        let down =
            UnifiedStatus::from_reports(ServiceReport::Unavailable, ServiceReport::Unavailable);
        assert_eq!(
            serde_json::to_value(&down).unwrap(),
            json!({
                "mysql_backup": {"error": "MySQL backup service unavailable", "service": "mysql_backup"},
                "rsync_backup": {"error": "Rsync backup service unavailable", "service": "rsync_backup"},
                "unified_devices": {}
            })
        );
    }

    /// The reference's harness example: an SQLite-only device is `partial`, a MySQL-only device
    /// with a warning is `unknown` with an rsync block of defaults.
    #[test]
    fn reference_harness_example() {
        let mysql = json!({
            "a1": {"name": "ETHOSCOPE_001", "status": "running", "started": 100, "ended": 110,
                   "processing": false, "count": 5, "synced": {"tracking_db": {}},
                   "progress": {"status": "warning", "message": "no MariaDB"},
                   "data_duplication": false},
            "b2": {"name": "ETHOSCOPE_002", "status": "stopped",
                   "progress": {"status": "warning", "message": "no MariaDB"}}
        });
        let rsync = json!({"devices": {"a1": {"name": "ETHOSCOPE_001", "status": "running",
            "progress": {"status": "success", "message": "ok"}, "count": 2, "metadata": {}}}});
        let out = unify(&report(mysql), &report(rsync));
        assert_eq!(out["a1"].overall_status, OverallStatus::Partial);
        assert_eq!(out["a1"].mysql_backup.synced, json!({"tracking_db": {}}));
        assert_eq!(out["a1"].rsync_backup.count, json!(2));
        assert_eq!(out["b2"].overall_status, OverallStatus::Unknown);
        assert_eq!(out["b2"].name, "ETHOSCOPE_002");
        assert!(!out["b2"].rsync_backup.available);
        assert_eq!(out["b2"].rsync_backup.status, json!("not_available"));
    }

    #[test]
    fn unified_status_round_trips_through_serde() {
        let m = report(json!({ID: {"name": "A", "progress": {"status": "completed"}}}));
        let status = UnifiedStatus::from_reports(m, ServiceReport::Unavailable);
        let text = serde_json::to_string(&status).unwrap();
        let back: UnifiedStatus = serde_json::from_str(&text).unwrap();
        assert_eq!(back, status);
        assert_eq!(
            back.unified_devices[ID].overall_status,
            OverallStatus::Partial
        );
    }

    mod proptests {
        use super::*;
        use proptest::prelude::*;

        fn any_json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(Value::from),
                prop_oneof![
                    Just("success".to_string()),
                    Just("completed".to_string()),
                    Just("error".to_string()),
                    Just(String::new()),
                    ".{0,12}"
                ]
                .prop_map(Value::from),
            ];
            leaf.prop_recursive(3, 24, 5, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                    prop::collection::vec((key(), inner), 0..5)
                        .prop_map(|kv| Value::Object(kv.into_iter().collect())),
                ]
            })
        }

        /// Keys drawn from the words the merge looks at, a small id space (so both sides share
        /// ids) and arbitrary text.
        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                prop::sample::select(vec![
                    "name",
                    "status",
                    "progress",
                    "synced",
                    "processing",
                    "count",
                    "started",
                    "ended",
                    "metadata",
                    "devices",
                    "error",
                    "id1",
                    "id2",
                    "id3",
                ])
                .prop_map(str::to_string),
                ".{0,10}",
            ]
        }

        /// A device entry: mostly objects with the interesting keys, sometimes anything.
        fn entry() -> impl Strategy<Value = Value> {
            prop_oneof![
                3 => prop::collection::vec((key(), any_json()), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
                1 => any_json(),
            ]
        }

        /// A daemon document: flat, wrapped, with an error key, or any JSON at all.
        fn document() -> impl Strategy<Value = Value> {
            let devices = || {
                prop::collection::vec((key(), entry()), 0..8)
                    .prop_map(|kv| kv.into_iter().collect::<Map<String, Value>>())
            };
            prop_oneof![
                devices().prop_map(Value::Object),
                (devices(), any_json()).prop_map(|(d, s)| {
                    let mut m = Map::new();
                    m.insert("devices".into(), Value::Object(d));
                    m.insert("disk_usage_summary".into(), s);
                    Value::Object(m)
                }),
                (devices(), any_json()).prop_map(|(mut d, e)| {
                    d.insert("error".into(), e);
                    Value::Object(d)
                }),
                any_json(),
            ]
        }

        /// Ids with an object entry on a usable side, computed independently of `unify`.
        fn expected_ids(doc: &Value) -> BTreeSet<String> {
            let Some(map) = doc.as_object() else {
                return BTreeSet::new();
            };
            if map.contains_key("error") {
                return BTreeSet::new();
            }
            let devices = match map.get("devices") {
                Some(Value::Object(d)) => d,
                Some(_) => return BTreeSet::new(),
                None => map,
            };
            devices
                .iter()
                .filter(|(_, v)| v.is_object())
                .map(|(k, _)| k.clone())
                .collect()
        }

        proptest! {
            #[test]
            fn merge_never_panics_and_lists_every_id_once(m in document(), r in document()) {
                let m_ids = expected_ids(&m);
                let r_ids = expected_ids(&r);
                let status = UnifiedStatus::from_reports(report(m.clone()), report(r.clone()));
                let all: BTreeSet<String> = m_ids.union(&r_ids).cloned().collect();
                prop_assert_eq!(
                    status.unified_devices.keys().cloned().collect::<BTreeSet<_>>(),
                    all.clone()
                );
                // Exactly once on the wire too (a map cannot repeat keys; check the text).
                let text = serde_json::to_string(&status.unified_devices).unwrap();
                let back: Map<String, Value> = serde_json::from_str(&text).unwrap();
                prop_assert_eq!(back.len(), all.len());
                for (id, dev) in &status.unified_devices {
                    prop_assert_eq!(dev.mysql_backup.available, m_ids.contains(id));
                    prop_assert_eq!(dev.rsync_backup.available, r_ids.contains(id));
                    prop_assert!(!dev.name.is_empty() && !dev.status.is_empty());
                    prop_assert!(dev.rsync_backup.metadata.is_some());
                    prop_assert!(dev.mysql_backup.metadata.is_none());
                }
                // Documents pass through verbatim when they are objects.
                let unavailable = |s: Service| Value::Object(s.unavailable_document());
                match &m {
                    Value::Object(_) => prop_assert_eq!(parsed(&status.mysql_backup), m.clone()),
                    _ => prop_assert_eq!(parsed(&status.mysql_backup),
                                         unavailable(Service::MysqlBackup)),
                }
                match &r {
                    Value::Object(_) => prop_assert_eq!(parsed(&status.rsync_backup), r.clone()),
                    _ => prop_assert_eq!(parsed(&status.rsync_backup),
                                         unavailable(Service::RsyncBackup)),
                }
            }
        }
    }
}
