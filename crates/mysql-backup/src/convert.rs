//! MariaDB values (binary protocol) to SQLite values, by the mirrored column's type
//! ([`ValueKind`]).
//!
//! Chosen to store what upstream's Python stack stored (mysql-connector values bound by the
//! `sqlite3` module) where that was exact: integers as INTEGER, `FLOAT` columns as the decimal the
//! server shows (so `23.1` stays `23.1`, not `23.100000381...`), text as TEXT, `BLOB`s as BLOB,
//! dates as `YYYY-MM-DD[ HH:MM:SS[.ffffff]]` text. Where it was not: a `BIT` is its number (the
//! protocol sends big-endian bytes), a `BINARY`/`VARBINARY` or geometry value is bytes (NUL bytes
//! included; as text it would be cut or mangled), a `DECIMAL` is its exact text, and an unsigned
//! integer above SQLite's range is its exact decimal digits, as a BLOB so that no column affinity
//! turns them into an approximate REAL. Nothing here can fail or panic: a value
//! of an unexpected kind is kept as faithfully as its variant allows.

use mysql_async::Value as My;
use rusqlite::types::Value as Lite;

use crate::schema::{Column, ValueKind};

/// Converts one value for `column`.
pub fn to_sqlite(value: My, column: &Column) -> Lite {
    match (column.kind, value) {
        (_, My::NULL) => Lite::Null,
        (ValueKind::Bit, My::Bytes(b)) => unsigned(bits(&b)),
        (ValueKind::Integer, My::Bytes(b)) => {
            match std::str::from_utf8(&b).map(str::parse::<i64>) {
                Ok(Ok(i)) => Lite::Integer(i),
                _ => text_or_bytes(b),
            }
        }
        (ValueKind::Bytes, My::Bytes(b)) => Lite::Blob(b),
        (_, My::Bytes(b)) => text_or_bytes(b),
        (_, My::Int(i)) => Lite::Integer(i),
        (_, My::UInt(u)) => unsigned(u),
        (_, My::Float(f)) => Lite::Real(f32_as_shown(f)),
        (_, My::Double(d)) => Lite::Real(d),
        (kind, My::Date(y, mo, d, h, mi, s, us)) => {
            if kind == ValueKind::Date && h == 0 && mi == 0 && s == 0 && us == 0 {
                Lite::Text(format!("{y:04}-{mo:02}-{d:02}"))
            } else if us == 0 {
                Lite::Text(format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}"))
            } else {
                Lite::Text(format!(
                    "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}"
                ))
            }
        }
        (_, My::Time(neg, days, h, mi, s, us)) => {
            let hours = u64::from(days) * 24 + u64::from(h);
            let sign = if neg { "-" } else { "" };
            if us == 0 {
                Lite::Text(format!("{sign}{hours:02}:{mi:02}:{s:02}"))
            } else {
                Lite::Text(format!("{sign}{hours:02}:{mi:02}:{s:02}.{us:06}"))
            }
        }
    }
}

/// An unsigned integer: INTEGER when SQLite can hold it, else its exact decimal digits as a BLOB
/// (as TEXT, an INTEGER column would turn them into an approximate REAL).
fn unsigned(u: u64) -> Lite {
    match i64::try_from(u) {
        Ok(i) => Lite::Integer(i),
        Err(_) => Lite::Blob(u.to_string().into_bytes()),
    }
}

/// A `BIT(n)` value: up to 8 big-endian bytes.
fn bits(b: &[u8]) -> u64 {
    b.iter()
        .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte))
}

/// UTF-8 as text, anything else kept byte for byte.
fn text_or_bytes(b: Vec<u8>) -> Lite {
    match String::from_utf8(b) {
        Ok(s) => Lite::Text(s),
        Err(e) => Lite::Blob(e.into_bytes()),
    }
}

/// The shortest decimal that reads back as `f`, as a double (what a text-protocol client sees).
fn f32_as_shown(f: f32) -> f64 {
    if !f.is_finite() {
        return f64::from(f);
    }
    format!("{f}").parse().unwrap_or(f64::from(f))
}

/// Approximate memory size of a converted value, for batch and transaction limits.
pub fn value_size(v: &Lite) -> usize {
    match v {
        Lite::Text(s) => s.len() + 8,
        Lite::Blob(b) => b.len() + 8,
        _ => 8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{sqlite_type, value_kind};

    fn col(mysql_type: &str) -> Column {
        Column {
            name: "c".into(),
            sql_type: sqlite_type(mysql_type),
            kind: value_kind(mysql_type),
        }
    }

    #[test]
    fn converts_by_column_type() {
        let cases: Vec<(&str, My, Lite)> = vec![
            ("int(11)", My::NULL, Lite::Null),
            ("int(11)", My::Int(-3), Lite::Integer(-3)),
            (
                "bigint(20) unsigned",
                My::UInt(u64::MAX),
                Lite::Blob(u64::MAX.to_string().into_bytes()),
            ),
            ("bigint(20) unsigned", My::UInt(7), Lite::Integer(7)),
            ("int(11)", My::Bytes(b"42".to_vec()), Lite::Integer(42)),
            ("float", My::Float(23.1), Lite::Real(23.1)),
            ("double", My::Double(0.1), Lite::Real(0.1)),
            (
                "decimal(10,2)",
                My::Bytes(b"12.50".to_vec()),
                Lite::Text("12.50".into()),
            ),
            (
                "decimal(65,30)",
                My::Bytes(
                    b"-12345678901234567890123456789012345.123456789012345678901234567890".to_vec(),
                ),
                Lite::Text(
                    "-12345678901234567890123456789012345.123456789012345678901234567890".into(),
                ),
            ),
            (
                "varchar(5)",
                My::Bytes(b"abc".to_vec()),
                Lite::Text("abc".into()),
            ),
            (
                "text",
                My::Bytes(vec![0xff, 0xd8]),
                Lite::Blob(vec![0xff, 0xd8]),
            ),
            (
                "enum('a','b')",
                My::Bytes(b"b".to_vec()),
                Lite::Text("b".into()),
            ),
            (
                "set('x','y')",
                My::Bytes(b"x,y".to_vec()),
                Lite::Text("x,y".into()),
            ),
            (
                "longtext",
                My::Bytes(br#"{"a": [1]}"#.to_vec()),
                Lite::Text(r#"{"a": [1]}"#.into()),
            ),
            (
                "blob",
                My::Bytes(b"abc".to_vec()),
                Lite::Blob(b"abc".to_vec()),
            ),
            (
                "binary(4)",
                My::Bytes(vec![b'a', 0, b'b', 0]),
                Lite::Blob(vec![b'a', 0, b'b', 0]),
            ),
            (
                "point",
                My::Bytes(vec![0, 0, 0, 0, 1, 1, 0]),
                Lite::Blob(vec![0, 0, 0, 0, 1, 1, 0]),
            ),
            ("bit(1)", My::Bytes(vec![1]), Lite::Integer(1)),
            ("bit(12)", My::Bytes(vec![0x0f, 0xff]), Lite::Integer(4095)),
            (
                "bit(64)",
                My::Bytes(vec![0xff; 8]),
                Lite::Blob(u64::MAX.to_string().into_bytes()),
            ),
            (
                "date",
                My::Date(2025, 7, 10, 0, 0, 0, 0),
                Lite::Text("2025-07-10".into()),
            ),
            (
                "date",
                My::Date(0, 0, 0, 0, 0, 0, 0),
                Lite::Text("0000-00-00".into()),
            ),
            (
                "datetime",
                My::Date(0, 0, 0, 0, 0, 0, 0),
                Lite::Text("0000-00-00 00:00:00".into()),
            ),
            (
                "datetime",
                My::Date(2025, 7, 10, 9, 5, 1, 0),
                Lite::Text("2025-07-10 09:05:01".into()),
            ),
            (
                "datetime(6)",
                My::Date(2025, 7, 10, 9, 5, 1, 20),
                Lite::Text("2025-07-10 09:05:01.000020".into()),
            ),
            (
                "time",
                My::Time(true, 1, 2, 3, 4, 0),
                Lite::Text("-26:03:04".into()),
            ),
            (
                "time(3)",
                My::Time(false, 34, 22, 59, 59, 500_000),
                Lite::Text("838:59:59.500000".into()),
            ),
        ];
        for (t, v, want) in cases {
            let shown = format!("{v:?}");
            assert_eq!(to_sqlite(v, &col(t)), want, "{t} {shown}");
        }
    }
}
