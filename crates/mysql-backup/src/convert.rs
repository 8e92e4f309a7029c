//! MariaDB values (binary protocol) to SQLite values, per the mirrored column's storage class.
//!
//! Chosen to store what upstream's Python stack stored (mysql-connector values bound by the
//! `sqlite3` module): integers as INTEGER, `FLOAT` columns as the decimal the server shows (so
//! `23.1` stays `23.1`, not `23.100000381...`), text as TEXT, `BLOB`s as BLOB, dates as
//! `YYYY-MM-DD[ HH:MM:SS[.ffffff]]` text.

use mysql_async::Value as My;
use rusqlite::types::Value as Lite;

use crate::schema::{Column, SqlType};

/// Converts one value for `column`.
pub fn to_sqlite(value: My, column: &Column) -> Lite {
    match value {
        My::NULL => Lite::Null,
        My::Int(i) => Lite::Integer(i),
        My::UInt(u) => match i64::try_from(u) {
            Ok(i) => Lite::Integer(i),
            Err(_) => Lite::Text(u.to_string()),
        },
        My::Float(f) => Lite::Real(f32_as_shown(f)),
        My::Double(d) => Lite::Real(d),
        My::Bytes(b) => bytes(b, column.sql_type),
        My::Date(y, mo, d, h, mi, s, us) => {
            if column.date_only && h == 0 && mi == 0 && s == 0 && us == 0 {
                Lite::Text(format!("{y:04}-{mo:02}-{d:02}"))
            } else if us == 0 {
                Lite::Text(format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}"))
            } else {
                Lite::Text(format!(
                    "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}"
                ))
            }
        }
        My::Time(neg, days, h, mi, s, us) => {
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

/// The shortest decimal that reads back as `f`, as a double (what a text-protocol client sees).
fn f32_as_shown(f: f32) -> f64 {
    if !f.is_finite() {
        return f64::from(f);
    }
    format!("{f}").parse().unwrap_or(f64::from(f))
}

fn bytes(b: Vec<u8>, sql_type: SqlType) -> Lite {
    match sql_type {
        SqlType::Blob => Lite::Blob(b),
        // Text columns (and DECIMAL, which the binary protocol sends as text): UTF-8 as text,
        // anything else (binary/varbinary content) kept byte for byte.
        _ => match String::from_utf8(b) {
            Ok(s) => Lite::Text(s),
            Err(e) => Lite::Blob(e.into_bytes()),
        },
    }
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

    fn col(sql_type: SqlType, date_only: bool) -> Column {
        Column {
            name: "c".into(),
            sql_type,
            date_only,
        }
    }

    #[test]
    fn converts_like_upstream() {
        let int = col(SqlType::Integer, false);
        let text = col(SqlType::Text, false);
        let blob = col(SqlType::Blob, false);
        let real = col(SqlType::Real, false);
        assert_eq!(to_sqlite(My::NULL, &int), Lite::Null);
        assert_eq!(to_sqlite(My::Int(-3), &int), Lite::Integer(-3));
        assert_eq!(
            to_sqlite(My::UInt(u64::MAX), &int),
            Lite::Text(u64::MAX.to_string())
        );
        assert_eq!(to_sqlite(My::Float(23.1), &real), Lite::Real(23.1));
        assert_eq!(to_sqlite(My::Double(0.1), &real), Lite::Real(0.1));
        assert_eq!(
            to_sqlite(My::Bytes(b"12.50".to_vec()), &real),
            Lite::Text("12.50".into())
        );
        assert_eq!(
            to_sqlite(My::Bytes(b"abc".to_vec()), &text),
            Lite::Text("abc".into())
        );
        assert_eq!(
            to_sqlite(My::Bytes(vec![0xff, 0xd8]), &text),
            Lite::Blob(vec![0xff, 0xd8])
        );
        assert_eq!(
            to_sqlite(My::Bytes(b"abc".to_vec()), &blob),
            Lite::Blob(b"abc".to_vec())
        );
        assert_eq!(
            to_sqlite(My::Date(2025, 7, 10, 0, 0, 0, 0), &col(SqlType::Text, true)),
            Lite::Text("2025-07-10".into())
        );
        assert_eq!(
            to_sqlite(My::Date(2025, 7, 10, 9, 5, 1, 0), &text),
            Lite::Text("2025-07-10 09:05:01".into())
        );
        assert_eq!(
            to_sqlite(My::Date(2025, 7, 10, 9, 5, 1, 20), &text),
            Lite::Text("2025-07-10 09:05:01.000020".into())
        );
        assert_eq!(
            to_sqlite(My::Time(true, 1, 2, 3, 4, 0), &text),
            Lite::Text("-26:03:04".into())
        );
    }
}
