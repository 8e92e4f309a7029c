//! A device as the node's `GET /devices` reports it, and the rules that decide whether a backup
//! daemon may touch it.
//!
//! Everything in a device entry comes from the device itself (or from the node relaying it), so it
//! is untrusted: [`DeviceInfo::from_entry`] validates the fields that end up in paths, SQL
//! identifiers or command lines (`id`, `name`, `ip`) and keeps the whole raw object for the fields
//! an engine reads later (`databases`, legacy `database_info`, ...).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Device statuses for which no backup is attempted.
///
/// Upstream only skipped `offline` and `not_in_use`, so unreachable devices tied up the workers for
/// 45 s connect timeouts each (reference bug A13 / §8.18). `conflict` is the node's word for a
/// machine id that two live addresses claim: nothing is copied under that id from either address
/// until the conflict is resolved, so an impostor cannot replace a device's archive.
pub const SKIPPED_STATUSES: [&str; 6] = [
    "offline",
    "not_in_use",
    "unreached",
    "busy",
    "blacklisted",
    CONFLICT_STATUS,
];

/// The node's status for a machine id claimed by two live addresses (see [`SKIPPED_STATUSES`]).
pub const CONFLICT_STATUS: &str = "conflict";

/// Most devices (and device addresses) one node keeps: a lab has dozens.
pub const MAX_DEVICES: usize = 2048;

/// Largest `GET /devices` entry our node produces for one device: it keeps only the fields it
/// knows, each capped, so one device cannot crowd out the others.
pub const MAX_DEVICE_ENTRY_BYTES: usize = 24 * 1024;

/// Largest `GET /devices` body a backup daemon accepts: the node's worst case ([`MAX_DEVICES`]
/// entries of [`MAX_DEVICE_ENTRY_BYTES`]) plus room for keys and separators.
pub const MAX_DEVICE_MAP_BYTES: usize = MAX_DEVICES * MAX_DEVICE_ENTRY_BYTES + 1024 * 1024;

/// The placeholder name a freshly flashed device carries; never backed up.
pub const PLACEHOLDER_NAME: &str = "ETHOSCOPE_000";

/// True for a 32-character lower-case hexadecimal machine id.
pub fn is_valid_machine_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// True for a name that is safe as one path component and inside a MariaDB database name:
/// 1 to 64 characters of `A-Z a-z 0-9 _ -`, not starting with `-`.
///
/// Real devices are called `ETHOSCOPE_001`; anything with `/`, `.`, spaces or quotes is refused.
pub fn is_valid_device_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Why a `/devices` entry could not be used at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceProblem {
    /// The entry is not a JSON object.
    NotAnObject,
    /// `id` is missing, not a string, not 32 lower-case hex characters, or differs from its map key.
    BadId(String),
    /// `name` is missing or not a plain name.
    BadName(String),
    /// `ip` is missing or not an IP address.
    BadIp(String),
}

impl std::fmt::Display for DeviceProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceProblem::NotAnObject => write!(f, "device entry is not a JSON object"),
            DeviceProblem::BadId(s) => write!(f, "invalid device id {s:?}"),
            DeviceProblem::BadName(s) => write!(f, "invalid device name {s:?}"),
            DeviceProblem::BadIp(s) => write!(f, "invalid device ip {s:?}"),
        }
    }
}

impl std::error::Error for DeviceProblem {}

/// Why a backup daemon does not attempt a (valid) device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ineligible {
    /// The node reports a status in [`SKIPPED_STATUSES`].
    Status(String),
    /// The device still carries [`PLACEHOLDER_NAME`].
    PlaceholderName,
    /// The device reports no MariaDB database (the MySQL mirror has nothing to copy).
    NoMariaDb,
    /// The node does not know the device's databases yet (upstream's node in its first seconds).
    WaitingForDatabases,
    /// An engine's own reason, in its words.
    Engine(String),
}

impl std::fmt::Display for Ineligible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ineligible::Status(status) => write!(f, "device status is {status}"),
            Ineligible::PlaceholderName => {
                write!(f, "{PLACEHOLDER_NAME} is the unconfigured placeholder name")
            }
            Ineligible::NoMariaDb => write!(f, "the device reports no MariaDB database"),
            Ineligible::WaitingForDatabases => f.write_str(WAITING_FOR_DATABASES),
            Ineligible::Engine(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for Ineligible {}

/// Why a whole `GET /devices` answer could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceMapError {
    /// The answer is JSON, but not an object (the JSON type is named).
    NotAnObject(&'static str),
    /// The node answered `{"error": ...}` (upstream's traceback answer), shortened.
    NodeError(String),
}

impl std::fmt::Display for DeviceMapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceMapError::NotAnObject(kind) => {
                write!(f, "node answered a JSON {kind} instead of an object")
            }
            DeviceMapError::NodeError(text) => write!(f, "node reported an error: {text}"),
        }
    }
}

impl std::error::Error for DeviceMapError {}

/// A validated device entry from the node's `GET /devices` map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// 32-hex machine id (validated).
    pub id: String,
    /// Device name, e.g. `ETHOSCOPE_001` (validated: a plain name).
    pub name: String,
    /// Address of the device (validated IP; upstream's `basename(ip)` quirk is not needed).
    pub ip: IpAddr,
    /// Device run status as the node reports it (`running`, `stopped`, `offline`, ...); may be empty.
    pub status: String,
    /// The whole entry as received, for engine-specific fields.
    pub raw: Map<String, Value>,
}

fn str_field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str)
}

/// Display form of a possibly missing or non-string field, for error messages.
fn shown(v: Option<&Value>) -> String {
    match v {
        None => "<missing>".to_string(),
        Some(Value::String(s)) => s.chars().take(80).collect(),
        Some(other) => other.to_string().chars().take(80).collect(),
    }
}

impl DeviceInfo {
    /// Validates one entry of the node's `/devices` map. `key` is the map key; when it is not
    /// empty it must equal the entry's `id`.
    pub fn from_entry(key: &str, entry: &Value) -> Result<DeviceInfo, DeviceProblem> {
        let obj = entry.as_object().ok_or(DeviceProblem::NotAnObject)?;
        let id = str_field(obj, "id").unwrap_or(key);
        if !is_valid_machine_id(id) || (!key.is_empty() && key != id) {
            return Err(DeviceProblem::BadId(shown(
                obj.get("id").or(Some(&Value::String(key.to_string()))),
            )));
        }
        let name = str_field(obj, "name")
            .filter(|n| is_valid_device_name(n))
            .ok_or_else(|| DeviceProblem::BadName(shown(obj.get("name"))))?;
        let ip = str_field(obj, "ip")
            .and_then(|s| s.trim().parse::<IpAddr>().ok())
            .ok_or_else(|| DeviceProblem::BadIp(shown(obj.get("ip"))))?;
        let status = str_field(obj, "status").unwrap_or("").to_string();
        Ok(DeviceInfo {
            id: id.to_string(),
            name: name.to_string(),
            ip,
            status,
            raw: obj.clone(),
        })
    }

    /// Whether a backup daemon should attempt this device at all (status and name rules shared by
    /// both daemons). `Err` says why not, for logs and one-shot mode.
    pub fn backup_eligibility(&self) -> Result<(), Ineligible> {
        if SKIPPED_STATUSES.contains(&self.status.as_str()) {
            return Err(Ineligible::Status(self.status.clone()));
        }
        if self.name == PLACEHOLDER_NAME {
            return Err(Ineligible::PlaceholderName);
        }
        Ok(())
    }

    /// What the entry says about a MariaDB experiment database ([`EntryFields::mariadb_report`]).
    pub fn mariadb_report(&self) -> DatabaseReport {
        self.fields().mariadb_report()
    }

    /// What the entry says about SQLite result databases ([`EntryFields::sqlite_report`]).
    pub fn sqlite_report(&self) -> DatabaseReport {
        self.fields().sqlite_report()
    }

    /// The device reports a MariaDB experiment database ([`DeviceInfo::mariadb_report`]).
    pub fn has_mariadb(&self) -> bool {
        self.mariadb_report() == DatabaseReport::Present
    }

    /// The device reports SQLite result databases ([`DeviceInfo::sqlite_report`]).
    pub fn has_sqlite(&self) -> bool {
        self.sqlite_report() == DatabaseReport::Present
    }

    /// The experiment file name the device announces ([`EntryFields::announced_filename`]).
    pub fn announced_mariadb_filename(&self) -> Option<&str> {
        self.fields().announced_filename()
    }

    /// The raw entry's readers.
    pub fn fields(&self) -> EntryFields<'_> {
        EntryFields(&self.raw)
    }
}

/// Readers of a raw `/devices` entry's database fields, for code that holds the entry without a
/// validated [`DeviceInfo`] (the node reads its own entries this way).
#[derive(Debug, Clone, Copy)]
pub struct EntryFields<'a>(pub &'a Map<String, Value>);

impl<'a> EntryFields<'a> {
    /// What the entry says about a MariaDB experiment database (see [`DatabaseReport`]).
    ///
    /// Present: `databases.MariaDB` is a non-empty object, or (legacy firmware)
    /// `database_info.mariadb.exists` is true or `database_info.active_type` is `"mariadb"`.
    /// Absent: the node relayed the device's database list (`databases` is an object) and it has
    /// no MariaDB entry. Without a list, the writer type decides (top-level `result_writer_type`,
    /// else upstream HEAD's `latest_cache.result_writer_type`); with neither, it is unknown.
    ///
    /// The list wins over the writer type when both are there: a device announces its new
    /// experiment's database a little after it starts writing it, and connecting before the
    /// database exists is an error, not a backup.
    pub fn mariadb_report(&self) -> DatabaseReport {
        if non_empty_object(self.databases_of("MariaDB")) || legacy_flag(self.0, "mariadb") {
            return DatabaseReport::Present;
        }
        if self.has_database_list() {
            return DatabaseReport::Absent;
        }
        match self.writer_kind() {
            Some(WriterKind::MariaDb) => DatabaseReport::Present,
            Some(_) => DatabaseReport::Absent,
            None => DatabaseReport::Unknown,
        }
    }

    /// What the entry says about SQLite result databases (see [`DatabaseReport`]).
    ///
    /// Present: `databases.SQLite` is a non-empty object, or (legacy firmware)
    /// `database_info.sqlite.exists` / `active_type == "sqlite"`, or the writer type (top-level
    /// `result_writer_type`, else `latest_cache.result_writer_type`) names the SQLite writer.
    /// Absent: a database list without SQLite files, or a writer type naming another writer.
    /// Unknown: neither a list nor a writer type (upstream HEAD's node in its first seconds).
    pub fn sqlite_report(&self) -> DatabaseReport {
        if non_empty_object(self.databases_of("SQLite"))
            || legacy_flag(self.0, "sqlite")
            || self.writer_kind() == Some(WriterKind::Sqlite)
        {
            return DatabaseReport::Present;
        }
        if self.has_database_list() || self.writer_kind().is_some() {
            DatabaseReport::Absent
        } else {
            DatabaseReport::Unknown
        }
    }

    /// The experiment file name the device announces for its MariaDB database, if any: the first
    /// `databases.MariaDB.*.backup_filename`, else the top-level `backup_filename` (our node and
    /// upstream's July node), else `latest_cache.backup_filename` (upstream HEAD's node), else
    /// `experimental_info.current.backup_filename`, else the previous experiment's
    /// (`previous_backup_filename`, or HEAD's `experimental_info.previous.backup_filename`).
    /// Untrusted: callers validate it before use.
    pub fn announced_filename(&self) -> Option<&'a str> {
        let nested = |outer: &str, inner: &str, key: &str| -> Option<&'a str> {
            self.0.get(outer)?.get(inner)?.get(key)?.as_str()
        };
        self.databases_of("MariaDB")
            .and_then(Value::as_object)
            .and_then(|m| m.values().find_map(|e| e.get("backup_filename")?.as_str()))
            .or_else(|| str_field(self.0, "backup_filename"))
            .or_else(|| self.latest_cache("backup_filename"))
            .or_else(|| nested("experimental_info", "current", "backup_filename"))
            .or_else(|| str_field(self.0, "previous_backup_filename"))
            .or_else(|| nested("experimental_info", "previous", "backup_filename"))
    }

    /// `databases.<kind>` as relayed by the node.
    fn databases_of(&self, kind: &str) -> Option<&'a Value> {
        self.0.get("databases").and_then(|d| d.get(kind))
    }

    /// The node relayed the device's database list (`GET /data/databases/<id>`).
    fn has_database_list(&self) -> bool {
        self.0.get("databases").is_some_and(Value::is_object)
    }

    /// A string field of upstream HEAD's `latest_cache` object.
    fn latest_cache(&self, key: &str) -> Option<&'a str> {
        self.0.get("latest_cache")?.get(key)?.as_str()
    }

    /// The result writer the device names: top-level `result_writer_type` (the device's own
    /// field, relayed by our node and upstream's July node), else HEAD's
    /// `latest_cache.result_writer_type`. `None` when neither is a non-empty string.
    fn writer_kind(&self) -> Option<WriterKind> {
        let name = str_field(self.0, "result_writer_type")
            .filter(|s| !s.trim().is_empty())
            .or_else(|| self.latest_cache("result_writer_type"))
            .filter(|s| !s.trim().is_empty())?;
        let lower = name.to_ascii_lowercase();
        Some(if lower.contains("sqlite") {
            WriterKind::Sqlite
        } else if lower.contains("mysql") || lower.contains("mariadb") || name == "ResultWriter" {
            // Upstream's MySQL writer class is plain `ResultWriter` on older firmware.
            WriterKind::MariaDb
        } else {
            WriterKind::Other
        })
    }
}

/// What a device entry says about one kind of experiment database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseReport {
    /// The device reports one.
    Present,
    /// The device's database list, or its result writer, says there is none.
    Absent,
    /// The entry does not say: no database list and no writer type. Upstream HEAD's node shows a
    /// device like this for about ten seconds after adding it, before its first
    /// `/data/databases/<id>` answer; a backup daemon must not call that "nothing to copy".
    Unknown,
}

/// The outcome message for a device whose database list is not known yet.
pub const WAITING_FOR_DATABASES: &str = "waiting for the device's database list";

/// Which writer a `result_writer_type` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriterKind {
    MariaDb,
    Sqlite,
    Other,
}

fn non_empty_object(v: Option<&Value>) -> bool {
    v.and_then(Value::as_object).is_some_and(|m| !m.is_empty())
}

fn legacy_flag(raw: &Map<String, Value>, kind: &str) -> bool {
    let Some(info) = raw.get("database_info") else {
        return false;
    };
    info.get(kind)
        .and_then(|k| k.get("exists"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
        || info.get("active_type").and_then(Value::as_str) == Some(kind)
}

/// Parses a whole `GET /devices` answer. Returns the valid devices and one problem line per
/// rejected entry (`"<key>: <problem>"`). A non-object answer, or an object with an `"error"` key
/// (upstream's traceback answer), is an error.
pub fn parse_device_map(doc: &Value) -> Result<(Vec<DeviceInfo>, Vec<String>), DeviceMapError> {
    let map = doc
        .as_object()
        .ok_or_else(|| DeviceMapError::NotAnObject(json_kind(doc)))?;
    if let Some(err) = map.get("error") {
        return Err(DeviceMapError::NodeError(shown(Some(err))));
    }
    let mut devices = Vec::new();
    let mut problems = Vec::new();
    for (key, entry) in map {
        match DeviceInfo::from_entry(key, entry) {
            Ok(d) => devices.push(d),
            Err(p) => problems.push(format!("{}: {p}", shown(Some(&Value::String(key.clone()))))),
        }
    }
    Ok((devices, problems))
}

/// Short name of a JSON value's type, for error messages.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn entry(name: &str, status: &str) -> Value {
        json!({"id": ID, "name": name, "ip": "127.0.0.10", "status": status})
    }

    #[test]
    fn validates_ids() {
        assert!(is_valid_machine_id(ID));
        assert!(!is_valid_machine_id(&ID.to_uppercase()));
        assert!(!is_valid_machine_id(&ID[..31]));
        assert!(!is_valid_machine_id("../../etc/passwd0123456789abcdef"));
    }

    #[test]
    fn validates_names() {
        for good in ["ETHOSCOPE_001", "ethoscope-7", "A"] {
            assert!(is_valid_device_name(good), "{good}");
        }
        for bad in [
            "",
            "../x",
            "a/b",
            "a b",
            ".hidden",
            "-rf",
            "x`y",
            "ETHOSCOPE_001;",
            &"a".repeat(65),
        ] {
            assert!(!is_valid_device_name(bad), "{bad}");
        }
    }

    #[test]
    fn parses_good_entry_and_keeps_raw() {
        let mut e = entry("ETHOSCOPE_001", "running");
        e["databases"] =
            json!({"MariaDB": {"ETHOSCOPE_001_db": {"backup_filename": "x"}}, "SQLite": {}});
        let d = DeviceInfo::from_entry(ID, &e).unwrap();
        assert_eq!(d.name, "ETHOSCOPE_001");
        assert_eq!(d.ip.to_string(), "127.0.0.10");
        assert!(d.has_mariadb());
        assert!(!d.has_sqlite());
        assert_eq!(d.announced_mariadb_filename(), Some("x"));
        assert!(d.backup_eligibility().is_ok());
    }

    #[test]
    fn rejects_hostile_entries() {
        assert_eq!(
            DeviceInfo::from_entry(ID, &json!([1])),
            Err(DeviceProblem::NotAnObject)
        );
        assert!(matches!(
            DeviceInfo::from_entry(ID, &entry("../etc", "running")),
            Err(DeviceProblem::BadName(_))
        ));
        let mut e = entry("ETHOSCOPE_001", "running");
        e["ip"] = json!("10.0.0.1; rm -rf /");
        assert!(matches!(
            DeviceInfo::from_entry(ID, &e),
            Err(DeviceProblem::BadIp(_))
        ));
        let other = "ffffffffffffffffffffffffffffffff";
        assert!(matches!(
            DeviceInfo::from_entry(other, &entry("ETHOSCOPE_001", "running")),
            Err(DeviceProblem::BadId(_))
        ));
        e = entry("ETHOSCOPE_001", "running");
        e["name"] = json!(12);
        assert!(matches!(
            DeviceInfo::from_entry(ID, &e),
            Err(DeviceProblem::BadName(_))
        ));
    }

    #[test]
    fn eligibility_rules() {
        for s in SKIPPED_STATUSES {
            let d = DeviceInfo::from_entry(ID, &entry("ETHOSCOPE_001", s)).unwrap();
            assert!(d.backup_eligibility().is_err(), "{s}");
        }
        for s in ["running", "stopped", "recording", "", "initialising"] {
            let d = DeviceInfo::from_entry(ID, &entry("ETHOSCOPE_001", s)).unwrap();
            assert!(d.backup_eligibility().is_ok(), "{s}");
        }
        let d = DeviceInfo::from_entry(ID, &entry(PLACEHOLDER_NAME, "running")).unwrap();
        assert!(d.backup_eligibility().is_err());
        assert_eq!(
            d.backup_eligibility().unwrap_err().to_string(),
            "ETHOSCOPE_000 is the unconfigured placeholder name"
        );
        let d = DeviceInfo::from_entry(ID, &entry("ETHOSCOPE_001", "busy")).unwrap();
        assert_eq!(
            d.backup_eligibility(),
            Err(Ineligible::Status("busy".into()))
        );
        assert_eq!(
            Ineligible::Status("busy".into()).to_string(),
            "device status is busy"
        );
    }

    #[test]
    fn legacy_database_fields() {
        let mut e = entry("ETHOSCOPE_001", "running");
        e["database_info"] = json!({"mariadb": {"exists": true}});
        assert!(DeviceInfo::from_entry(ID, &e).unwrap().has_mariadb());
        e["database_info"] = json!({"active_type": "sqlite"});
        let d = DeviceInfo::from_entry(ID, &e).unwrap();
        assert!(d.has_sqlite() && !d.has_mariadb());
        e["database_info"] = json!(null);
        e["databases"] = json!(null);
        let d = DeviceInfo::from_entry(ID, &e).unwrap();
        assert!(!d.has_sqlite() && !d.has_mariadb());
    }

    #[test]
    fn device_map_parsing() {
        let doc = json!({ID: entry("ETHOSCOPE_001", "running"), "bad": 3});
        let (devs, problems) = parse_device_map(&doc).unwrap();
        assert_eq!(devs.len(), 1);
        assert_eq!(problems.len(), 1);
        assert!(parse_device_map(&json!({"error": "Traceback ..."}))
            .unwrap_err()
            .to_string()
            .contains("error"));
        assert!(parse_device_map(&json!([]))
            .unwrap_err()
            .to_string()
            .contains("array"));
    }
}
