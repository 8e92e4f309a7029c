//! Property test of the poller's validation: whatever a device answers on `/id`, `/data/<id>` and
//! `/data/databases/<id>` (random JSON, mutated real answers, or raw bytes as the capped fetch
//! hands them over), validating it never panics, never keeps an invalid identity, and never keeps
//! more than the caps ([`etho_node::fields`]).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use etho_model::device::{is_valid_device_name, is_valid_machine_id};
use etho_node::fields::{object_worst_case, worst_case, DATABASES, DATA_FIELDS};
use etho_node::poller::{parse_databases, parse_id_answer, validate_info};
use proptest::prelude::*;
use serde_json::{Map, Value};

const ID: &str = "400c6373839f11ec5edfc384f5d734e5";

/// A real device's answers, from upstream HEAD's node as recorded.
fn recorded() -> (Value, Value) {
    let text = include_str!("../../model/tests/fixtures/head-node-devices.json");
    let doc: Value = serde_json::from_str(text).unwrap();
    let mut data = doc[ID].clone();
    let databases = data["databases"].take();
    (data, databases)
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::from),
        (0usize..6000).prop_map(|n| Value::from("x".repeat(n))),
        Just(Value::from(ID)),
        Just(Value::from("ETHOSCOPE_001")),
        Just(Value::from("../../ETHOSCOPE_666'; DROP DATABASE mysql; --")),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Keys a device might send: the known ones, the node's own, and anything.
fn key() -> impl Strategy<Value = String> {
    let known: Vec<String> = DATA_FIELDS
        .iter()
        .map(|(k, _)| k.to_string())
        .chain(
            [
                "id",
                "name",
                "status",
                "ip",
                "port",
                "last_seen",
                "databases",
                "SQLite",
                "MariaDB",
                "backup_filename",
                "table_counts",
                "error",
                "conflict",
                "backup_path",
            ]
            .map(String::from),
        )
        .collect();
    prop_oneof![prop::sample::select(known), ".{0,20}"]
}

/// A recorded answer with some keys replaced by random values.
fn mutated(base: Value) -> impl Strategy<Value = Value> {
    prop::collection::vec((key(), any_json()), 0..6).prop_map(move |changes| {
        let mut doc = base.clone();
        if let Some(obj) = doc.as_object_mut() {
            for (k, v) in changes {
                obj.insert(k, v);
            }
        }
        doc
    })
}

/// Bytes of a recorded answer with some bytes changed, removed or cut off.
fn mangled_bytes(base: Value) -> impl Strategy<Value = Vec<u8>> {
    let bytes = serde_json::to_vec(&base).unwrap();
    let len = bytes.len();
    (prop::collection::vec((0..len, any::<u8>()), 0..8), 0..=len).prop_map(move |(flips, cut)| {
        let mut b = bytes.clone();
        for (i, byte) in flips {
            b[i] = byte;
        }
        b.truncate(cut.max(1));
        b
    })
}

fn size(v: &impl serde::Serialize) -> usize {
    serde_json::to_vec(v).unwrap().len()
}

/// Every key kept is one the node knows.
fn only_known_keys(fields: &Map<String, Value>) -> bool {
    fields
        .keys()
        .all(|k| DATA_FIELDS.iter().any(|(known, _)| known == k))
}

/// The checks every answer must pass, whatever it is.
fn check_answers(id_doc: &Value, data: &Value, databases: &Value) -> Result<(), TestCaseError> {
    if let Ok(id) = parse_id_answer(id_doc) {
        prop_assert!(is_valid_machine_id(&id), "{id:?}");
    }
    if let Ok(d) = validate_info(ID, data) {
        prop_assert!(is_valid_device_name(&d.name));
        prop_assert!(d.status.len() <= 32);
        prop_assert!(
            only_known_keys(&d.fields),
            "{:?}",
            d.fields.keys().collect::<Vec<_>>()
        );
        prop_assert!(size(&d.fields) <= object_worst_case(DATA_FIELDS));
    }
    if let Some(db) = parse_databases(databases) {
        prop_assert!(size(&db) <= worst_case(&DATABASES), "{}", size(&db));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_json_answers(id_doc in any_json(), data in any_json(), databases in any_json()) {
        check_answers(&id_doc, &data, &databases)?;
    }

    #[test]
    fn mutated_real_answers(
        data in mutated(recorded().0),
        databases in mutated(recorded().1),
        id in prop_oneof![Just(Value::from(ID)), any_json()],
    ) {
        let id_doc = serde_json::json!({"id": id});
        check_answers(&id_doc, &data, &databases)?;
    }

    #[test]
    fn mangled_raw_bytes(data in mangled_bytes(recorded().0), databases in mangled_bytes(recorded().1)) {
        // What the capped fetch does with a body: parse it, or fail (no panic either way).
        let data: Value = serde_json::from_slice(&data).unwrap_or(Value::Null);
        let databases: Value = serde_json::from_slice(&databases).unwrap_or(Value::Null);
        check_answers(&data, &data, &databases)?;
    }
}

/// The recorded answers themselves pass and keep what the daemons and the page read.
#[test]
fn recorded_answers_are_kept() {
    let (data, databases) = recorded();
    let d = validate_info(ID, &data).unwrap();
    assert_eq!(d.name, "ETHOSCOPE_001");
    for key in [
        "experimental_info",
        "database_info",
        "latest_cache",
        "monitor_info",
        "version",
    ] {
        assert!(d.fields.contains_key(key), "{key} dropped");
    }
    assert_eq!(
        d.fields["latest_cache"]["result_writer_type"],
        "MySQLResultWriter"
    );
    let db = parse_databases(&databases).unwrap();
    assert_eq!(
        db["MariaDB"]["ETHOSCOPE_001_db"]["backup_filename"],
        data["latest_cache"]["backup_filename"]
    );
}
