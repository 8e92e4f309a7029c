//! What the node keeps of a device's answers: the fields the reference lists, each with a shape
//! and a cap.
//!
//! A device's `/data/<id>` answer is relayed on `GET /devices`, which both backup daemons read in
//! one capped fetch. Relayed whole, nine devices padding a field to just under the answer cap made
//! `/devices` larger than the daemons accept, and nothing was backed up for anyone. So the node
//! keeps only the fields upstream's firmware sends (and the daemons, the dashboard and upstream's
//! tools read), each checked against a [`Shape`]: strings, numbers and flags of the right kind,
//! objects with their known keys, maps with a bounded number of entries. A value of the wrong kind
//! or over its cap is dropped, never cut: a shortened file name or path would look valid and lie.
//!
//! The shapes bound the serialized size: [`worst_case`] computes it, and a test keeps the device's
//! fields plus the node's own below [`etho_model::device::MAX_DEVICE_ENTRY_BYTES`], so 2048 devices
//! fit in what a daemon accepts.

use serde_json::{Map, Value};

/// What a field may hold. `null` is accepted for every shape (firmware sends `null` for unknown
/// values).
#[derive(Debug)]
pub enum Shape {
    /// A string whose JSON form (quotes and escapes included) is at most this many bytes.
    Text(usize),
    /// A finite number.
    Number,
    /// `true` or `false`.
    Flag,
    /// A string as [`Shape::Text`], a number or a flag (fields whose type varies by firmware).
    Scalar(usize),
    /// An object with these keys (others are dropped).
    Object(&'static [(&'static str, Shape)]),
    /// An object with free keys: the first `entries` entries whose key's JSON form is at most
    /// `key` bytes and whose value fits `value`.
    Map {
        /// Most entries kept.
        entries: usize,
        /// Longest key (JSON form).
        key: usize,
        /// Shape of each value.
        value: &'static Shape,
    },
    /// Any JSON value whose serialized form is at most this many bytes (free-form fields such as
    /// `experimental_info`, whose keys the firmware does not fix).
    Json(usize),
}

/// Longest JSON form of a number (`-1.7976931348623157e308`).
const NUMBER_BYTES: usize = 24;

/// An experiment file name (`YYYY-MM-DD_HH-MM-SS_<id>.db`, 55 bytes, quoted).
const FILE_NAME: Shape = Shape::Text(128);
/// A path on the device.
const PATH: Shape = Shape::Text(256);
/// A short word (status, writer type, version).
const WORD: Shape = Shape::Text(64);

/// Row counts per table: `ROI_1`…`ROI_20` and a few others on a real device.
const TABLE_COUNTS: Shape = Shape::Map {
    entries: 32,
    key: 34,
    value: &Shape::Number,
};

/// `/data/databases/<id>` → `databases`: what upstream's newer daemons and ours read (whether
/// each kind has an entry, and its `backup_filename`).
pub const DATABASES: Shape = Shape::Object(&[
    (
        "SQLite",
        Shape::Map {
            entries: 8,
            key: 130,
            value: &Shape::Object(&[
                ("backup_filename", FILE_NAME),
                ("date", Shape::Number),
                ("db_status", Shape::Text(32)),
                ("filesize", Shape::Number),
                ("file_exists", Shape::Flag),
            ]),
        },
    ),
    (
        "MariaDB",
        Shape::Map {
            entries: 2,
            key: 66,
            value: &Shape::Object(&[
                ("backup_filename", FILE_NAME),
                ("date", Shape::Number),
                ("db_status", Shape::Text(32)),
                ("db_size_bytes", Shape::Number),
                ("version", WORD),
                ("table_counts", TABLE_COUNTS),
            ]),
        },
    ),
]);

/// The `/data/<id>` fields the node relays (upstream's firmware, July and newer; the reference's
/// list). `id`, `name` and `status` are checked on their own and set by the node.
pub const DATA_FIELDS: &[(&str, Shape)] = &[
    ("time", Shape::Number),
    ("error", Shape::Text(512)),
    ("log_file", PATH),
    ("dbg_img", PATH),
    ("last_drawn_img", PATH),
    ("db_name", Shape::Text(72)),
    (
        "monitor_info",
        Shape::Object(&[
            ("last_positions", Shape::Json(2048)),
            ("last_time_stamp", Shape::Number),
            ("fps", Shape::Number),
        ]),
    ),
    ("experimental_info", Shape::Json(2048)),
    (
        "database_info",
        Shape::Object(&[
            ("db_name", Shape::Text(72)),
            ("db_size_bytes", Shape::Number),
            ("table_counts", TABLE_COUNTS),
            ("last_db_update", Shape::Number),
            ("db_status", Shape::Text(32)),
            ("db_version", WORD),
            ("active_type", Shape::Text(32)),
            ("mariadb", Shape::Json(256)),
            ("sqlite", Shape::Json(256)),
        ]),
    ),
    ("version", Shape::Object(&[("id", WORD), ("date", WORD)])),
    ("used_space", Shape::Scalar(16)),
    ("previous_date_time", Shape::Scalar(40)),
    ("previous_backup_filename", FILE_NAME),
    ("previous_user", WORD),
    ("previous_location", WORD),
    ("result_writer_type", WORD),
    ("sqlite_source_path", PATH),
    ("cache_file", PATH),
    ("backup_filename", FILE_NAME),
    ("interactor", Shape::Json(512)),
    ("CPU_temp", Shape::Number),
    ("underpowered", Shape::Flag),
    ("current_timestamp", Shape::Number),
    ("response_time", Shape::Scalar(16)),
    (
        "light_schedule",
        Shape::Object(&[
            ("hardware", Shape::Flag),
            ("active", Shape::Flag),
            ("led_on", Shape::Flag),
            ("lights_on", Shape::Text(16)),
            ("lights_off", Shape::Text(16)),
        ]),
    ),
    // Upstream HEAD's node (read with --devices-from) keeps the newest experiment here.
    (
        "latest_cache",
        Shape::Object(&[
            ("backup_filename", FILE_NAME),
            ("cache_file", PATH),
            ("result_writer_type", WORD),
            ("sqlite_source_path", PATH),
        ]),
    ),
];

/// The fields of `obj` that [`DATA_FIELDS`] knows, each checked; everything else is dropped.
pub fn keep_known(obj: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, shape) in DATA_FIELDS {
        if let Some(v) = obj.get(*key).and_then(|v| check(v, shape)) {
            out.insert((*key).to_string(), v);
        }
    }
    out
}

/// `value` as `shape` keeps it, or `None` when it does not fit.
pub fn check(value: &Value, shape: &Shape) -> Option<Value> {
    if value.is_null() {
        return Some(Value::Null);
    }
    match (shape, value) {
        (Shape::Text(max), Value::String(s)) | (Shape::Scalar(max), Value::String(s)) => {
            (json_len(s) <= *max).then(|| value.clone())
        }
        (Shape::Number | Shape::Scalar(_), Value::Number(n)) => n
            .as_f64()
            .is_some_and(f64::is_finite)
            .then(|| value.clone()),
        (Shape::Flag | Shape::Scalar(_), Value::Bool(_)) => Some(value.clone()),
        (Shape::Object(fields), Value::Object(obj)) => {
            let mut out = Map::new();
            for (key, shape) in *fields {
                if let Some(v) = obj.get(*key).and_then(|v| check(v, shape)) {
                    out.insert((*key).to_string(), v);
                }
            }
            Some(Value::Object(out))
        }
        (
            Shape::Map {
                entries,
                key,
                value: inner,
            },
            Value::Object(obj),
        ) => {
            let out: Map<String, Value> = obj
                .iter()
                .filter(|(k, _)| json_len(k) <= *key)
                .filter_map(|(k, v)| Some((k.clone(), check(v, inner)?)))
                .take(*entries)
                .collect();
            Some(Value::Object(out))
        }
        (Shape::Json(max), _) => {
            let len = serde_json::to_vec(value).map(|v| v.len()).ok()?;
            (len <= *max).then(|| value.clone())
        }
        _ => None,
    }
}

/// Length of a string's JSON form, quotes and escapes included (as `serde_json` writes it).
pub fn json_len(s: &str) -> usize {
    2 + s
        .chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{08}' | '\u{0c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        })
        .sum::<usize>()
}

/// The longest JSON form a value of `shape` can have once [`check`] kept it.
pub fn worst_case(shape: &Shape) -> usize {
    match shape {
        Shape::Text(max) => *max,
        Shape::Number => NUMBER_BYTES,
        Shape::Flag => "false".len(),
        Shape::Scalar(max) => (*max).max(NUMBER_BYTES),
        Shape::Json(max) => *max,
        Shape::Object(fields) => object_worst_case(fields),
        Shape::Map {
            entries,
            key,
            value,
        } => 2 + entries * (key + 2 + worst_case(value).max(4)),
    }
}

/// The longest JSON form of an object with these fields: braces, quoted keys, colons, commas and
/// values (a value may always be `null`, 4 bytes).
pub fn object_worst_case(fields: &[(&str, Shape)]) -> usize {
    2 + fields
        .iter()
        .map(|(k, shape)| json_len(k) + 2 + worst_case(shape).max(4))
        .sum::<usize>()
}

/// The largest value [`check`] keeps for `shape` (its [`worst_case`] size, give or take a
/// number's digits): for capacity tests.
pub fn largest(shape: &Shape) -> Value {
    let text = |max: usize| Value::from("x".repeat(max.saturating_sub(2)));
    match shape {
        Shape::Text(max) | Shape::Json(max) => text(*max),
        Shape::Scalar(max) => text(*max),
        Shape::Number => Value::from(-1.797_693_134_862_315_7e308),
        Shape::Flag => Value::from(false),
        Shape::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, s)| ((*k).to_string(), largest(s)))
                .collect(),
        ),
        Shape::Map {
            entries,
            key,
            value,
        } => Value::Object(
            (0..*entries)
                .map(|i| (format!("{i:0>width$}", width = key - 2), largest(value)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn known_fields_are_kept_and_others_dropped() {
        let answer = json!({
            "time": 1.5, "error": null, "name": "ETHOSCOPE_001", "status": "running",
            "padding": "x".repeat(100),
            "monitor_info": {"fps": 2.0, "last_positions": {}, "secret": 1},
            "version": {"id": "abc", "date": "2026"},
            "backup_filename": "2025-07-10_10-00-00_0123456789abcdef0123456789abcdef.db",
            "underpowered": "yes",
        });
        let kept = keep_known(answer.as_object().unwrap());
        assert_eq!(
            Value::Object(kept),
            json!({
                "time": 1.5, "error": null,
                "monitor_info": {"last_positions": {}, "fps": 2.0},
                "version": {"id": "abc", "date": "2026"},
                "backup_filename": "2025-07-10_10-00-00_0123456789abcdef0123456789abcdef.db",
            }),
            "unknown keys, wrong types and the node's own keys are not relayed"
        );
    }

    #[test]
    fn values_over_their_cap_are_dropped_not_cut() {
        let long = "a".repeat(300);
        assert_eq!(check(&json!(long), &PATH), None);
        assert_eq!(
            check(&json!("a".repeat(254)), &PATH),
            Some(json!("a".repeat(254)))
        );
        // Escapes count: 50 control characters are 300 bytes of JSON.
        assert_eq!(check(&json!("\u{1}".repeat(50)), &PATH), None);
        assert_eq!(
            check(&json!(f64::MAX), &Shape::Number),
            Some(json!(f64::MAX))
        );
        assert_eq!(check(&json!({"a": 1}), &Shape::Number), None);
        assert_eq!(check(&json!([1, 2]), &Shape::Json(5)), Some(json!([1, 2])));
        assert_eq!(check(&json!([1, 2, 3]), &Shape::Json(5)), None);
        let many: Map<String, Value> = (0..100).map(|i| (format!("ROI_{i}"), json!(i))).collect();
        let kept = check(&Value::Object(many), &TABLE_COUNTS).unwrap();
        assert_eq!(kept.as_object().unwrap().len(), 32);
        assert_eq!(kept["ROI_0"], 0, "the first entries are kept");
    }

    #[test]
    fn json_len_matches_serde() {
        for s in ["", "abc", "\"\\\n\t\u{1}\u{7f}é😀", &"\u{0}".repeat(10)] {
            assert_eq!(
                json_len(s),
                serde_json::to_string(s).unwrap().len(),
                "{s:?}"
            );
        }
    }

    #[test]
    fn the_largest_values_are_kept_and_as_large_as_computed() {
        for (key, shape) in DATA_FIELDS.iter().chain([("databases", DATABASES)].iter()) {
            let v = largest(shape);
            assert_eq!(check(&v, shape).as_ref(), Some(&v), "{key}");
            let len = serde_json::to_vec(&v).unwrap().len();
            assert!(
                len <= worst_case(shape) && len + 256 >= worst_case(shape),
                "{key}: {len}"
            );
        }
    }

    #[test]
    fn the_worst_entry_fits_the_budget() {
        let fields = object_worst_case(DATA_FIELDS);
        let databases = worst_case(&DATABASES);
        // The node's own keys (see the registry's entry): address, port, status, times, poll
        // error, conflict, backup path. Bounded there; 4 KiB is their budget.
        let node = 4 * 1024;
        let total = fields + databases + node;
        assert!(
            total <= etho_model::device::MAX_DEVICE_ENTRY_BYTES,
            "device fields {fields} + databases {databases} + node {node} = {total}"
        );
    }
}
