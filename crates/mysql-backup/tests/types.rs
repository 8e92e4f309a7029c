#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The mirror against a real mariadbd with the column types and ids a device could hold beyond
//! the ethoscope schema: each value mirrored exactly, or its table reported by name, and never a
//! panic that stops the other tables.

mod common;

use common::*;
use etho_mysql_backup::Mirror;
use mysql_async::prelude::Queryable;
use rusqlite::types::Value as Lite;
use tokio_util::sync::CancellationToken;

/// Defect 5: one `BIGINT UNSIGNED` id above 2^63 made every job of the device panic in the row
/// conversion of `MAX(id)`, and no table was copied. Now that table is left out by name and
/// every other table equals the source.
#[tokio::test]
async fn out_of_range_ids_skip_their_table_by_name_and_the_rest_is_copied() {
    let spec = spec();
    let (server, mut exp) = start_with(spec.clone(), 300).await;
    exp.conn()
        .query_drop(
            "CREATE TABLE BIG_IDS (id BIGINT UNSIGNED PRIMARY KEY, v INT);
             INSERT INTO BIG_IDS VALUES (1, 1), (18446744073709551615, 2);
             CREATE TABLE NEG_IDS (id INT PRIMARY KEY, v INT);
             INSERT INTO NEG_IDS VALUES (-3, 1), (5, 2);
             CREATE TABLE FINE_UNSIGNED (id BIGINT UNSIGNED PRIMARY KEY, v BIGINT UNSIGNED);
             INSERT INTO FINE_UNSIGNED VALUES (1, 18446744073709551615), (9223372036854775807, 0);",
        )
        .await
        .unwrap();
    let results = tempfile::tempdir().unwrap();
    let mirror = Mirror::new(config(&server, results.path()));
    let dev = device(ID, NAME, &spec.backup_filename());
    let cancel = CancellationToken::new();
    for run in 0..2 {
        let report = mirror.run(&dev, &cancel, &no_progress()).await.unwrap();
        let skipped: Vec<(&str, &str)> = report
            .skipped
            .iter()
            .map(|s| (s.table.as_str(), s.reason.as_str()))
            .collect();
        assert_eq!(skipped.len(), 2, "run {run}: {skipped:?}");
        assert_eq!(skipped[0].0, "BIG_IDS");
        assert!(
            skipped[0].1.contains("18446744073709551615"),
            "{}",
            skipped[0].1
        );
        assert_eq!(skipped[1].0, "NEG_IDS");
        assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
        let path = mirror_path(results.path(), &spec);
        let counts = assert_mirror_equals_except(
            &server,
            &spec.db_name(),
            &path,
            &["BIG_IDS", "NEG_IDS"],
            &["FINE_UNSIGNED"],
        )
        .await;
        assert_eq!(counts["ROI_1"], 300, "run {run}");
        // An unsigned value above SQLite's range in another column is kept as its exact digits.
        let db = rusqlite::Connection::open(&path).unwrap();
        let rows: Vec<(i64, Lite)> = db
            .prepare("SELECT id, v FROM FINE_UNSIGNED ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(
            rows,
            [
                (1, Lite::Blob(b"18446744073709551615".to_vec())),
                (i64::MAX, Lite::Integer(0))
            ]
        );
    }
}

/// ENUM, SET, BIT, DECIMAL(65,30), JSON, zero dates, TIME, BINARY with NUL bytes and POINT:
/// each mirrored exactly (by its column type, not by what the protocol sent).
#[tokio::test]
async fn unusual_column_types_are_mirrored_exactly() {
    let spec = spec();
    let (server, mut exp) = start_with(spec.clone(), 20).await;
    let conn = exp.conn();
    conn.query_drop("SET SESSION sql_mode = ''").await.unwrap();
    conn.query_drop(
        "CREATE TABLE ODD_TYPES (
             id INT PRIMARY KEY AUTO_INCREMENT, e ENUM('on','off'), s SET('a','b','c'),
             b1 BIT(1), b12 BIT(12), d DECIMAL(65,30), small DECIMAL(10,2), j JSON,
             zd DATE, zdt DATETIME, t TIME(3), bin BINARY(4), pt POINT);
         INSERT INTO ODD_TYPES (e, s, b1, b12, d, small, j, zd, zdt, t, bin, pt) VALUES
             ('off', 'a,c', b'1', b'111111111111',
              '-12345678901234567890123456789012345.123456789012345678901234567890', 12.50,
              '{\"k\": [1, 2]}', '0000-00-00', '0000-00-00 00:00:00', '-26:03:04.500',
              'a\\0b', POINT(1.5, -2)),
             (NULL, '', b'0', b'000000000001', 0, NULL, 'null', '2025-07-10',
              '2025-07-10 09:05:01', '838:59:59', NULL, NULL);",
    )
    .await
    .unwrap();
    let point: Vec<u8> = conn
        .query_first("SELECT pt FROM ODD_TYPES WHERE id = 1")
        .await
        .unwrap()
        .unwrap();
    let results = tempfile::tempdir().unwrap();
    let report = Mirror::new(config(&server, results.path()))
        .run(
            &device(ID, NAME, &spec.backup_filename()),
            &CancellationToken::new(),
            &no_progress(),
        )
        .await
        .unwrap();
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
    assert_eq!(report.tables["ODD_TYPES"].local_rows, 2);
    let path = mirror_path(results.path(), &spec);
    assert_mirror_equals_except(&server, &spec.db_name(), &path, &[], &["ODD_TYPES"]).await;
    let db = rusqlite::Connection::open(&path).unwrap();
    let row = |id: i64| -> Vec<Lite> {
        db.query_row(
            "SELECT e, s, b1, b12, d, small, j, zd, zdt, t, bin, pt FROM ODD_TYPES WHERE id = ?1",
            [id],
            |r| (0..12).map(|i| r.get(i)).collect(),
        )
        .unwrap()
    };
    let text = |s: &str| Lite::Text(s.into());
    assert_eq!(
        row(1),
        [
            text("off"),
            text("a,c"),
            Lite::Integer(1),
            Lite::Integer(4095),
            text("-12345678901234567890123456789012345.123456789012345678901234567890"),
            Lite::Real(12.5),
            text("{\"k\": [1, 2]}"),
            text("0000-00-00"),
            text("0000-00-00 00:00:00"),
            text("-26:03:04.500000"),
            Lite::Blob(vec![b'a', 0, b'b', 0]),
            Lite::Blob(point),
        ]
    );
    assert_eq!(
        row(2),
        [
            Lite::Null,
            text(""),
            Lite::Integer(0),
            Lite::Integer(1),
            text("0.000000000000000000000000000000"),
            Lite::Null,
            text("null"),
            text("2025-07-10"),
            text("2025-07-10 09:05:01"),
            text("838:59:59"),
            Lite::Null,
            Lite::Null,
        ]
    );
}
