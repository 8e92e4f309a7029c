#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The mirror engine against a real mariadbd: equality after every kind of run and fault.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use etho_mysql_backup::schema::CopyMode;
use etho_mysql_backup::{Mirror, MirrorError, MirrorProgress};
use mysql_async::prelude::Queryable;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn initial_mirror_equals_source_then_new_rows_and_null_metadata_stay_exact() {
    let spec = spec();
    let (server, mut exp) = start_with(spec.clone(), 1500).await;
    let results = tempfile::tempdir().unwrap();
    let mirror = Mirror::new(config(&server, results.path()));
    let dev = device(ID, NAME, &spec.backup_filename());
    let cancel = CancellationToken::new();

    let report = mirror.run(&dev, &cancel, &no_progress()).await.unwrap();
    let path = mirror_path(results.path(), &spec);
    assert_eq!(report.path, path.canonicalize().unwrap());
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
    assert_eq!(report.rows_copied, 4 * 1500 + 1 + 15 + 3 + 5);
    assert!(!report.data_duplication);
    assert_eq!(report.percent, 100.0);
    let counts = assert_mirror_equals(&server, &spec.db_name(), &path, &[]).await;
    assert_eq!(counts["IMG_SNAPSHOTS"], 15, "BLOBs included");
    assert_eq!(counts["METADATA"], 13);
    assert_dam_dump_matches(&path);

    // New rows on the device are picked up, and only those are copied.
    exp.append_frames(700).await.unwrap();
    let report = mirror.run(&dev, &cancel, &no_progress()).await.unwrap();
    assert_eq!(report.tables["ROI_1"].copied, 700);
    assert_eq!(report.tables["ROI_1"].local_rows, 2200);
    assert_mirror_equals(&server, &spec.db_name(), &path, &[]).await;
    assert_dam_dump_matches(&path);

    // METADATA has ('sqlite_source_path', NULL): it stays exactly once over more runs, and a
    // cycle with nothing new does not even touch the file.
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    for _ in 0..3 {
        let report = mirror.run(&dev, &cancel, &no_progress()).await.unwrap();
        assert_eq!(report.rows_copied, 0);
        assert!(!report.data_duplication);
        assert!(report.mismatches.is_empty());
    }
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
    let db = rusqlite::Connection::open(&path).unwrap();
    let nulls: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM METADATA WHERE field = 'sqlite_source_path' AND value IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(nulls, 1);
    drop(db);

    // The device ends the experiment (a keyless row appears) and rewrites VAR_MAP: both follow.
    exp.finish(START + 600).await.unwrap();
    exp.conn()
        .query_drop("DELETE FROM VAR_MAP WHERE var_name = 'phi'")
        .await
        .unwrap();
    let report = mirror.run(&dev, &cancel, &no_progress()).await.unwrap();
    assert_eq!(report.tables["METADATA"].local_rows, 14);
    assert_eq!(report.tables["VAR_MAP"].local_rows, 7);
    assert_mirror_equals(&server, &spec.db_name(), &path, &[]).await;

    // A fresh engine (daemon restart: no remembered counts) verifies from scratch.
    let report = Mirror::new(config(&server, results.path()))
        .run(&dev, &cancel, &no_progress())
        .await
        .unwrap();
    assert!(report.mismatches.is_empty());
    assert_eq!(report.tables["ROI_4"].remote_rows, 2200);
}

#[tokio::test]
async fn duplicate_metadata_on_the_device_is_reported_as_data_duplication() {
    let spec = spec();
    let (server, mut exp) = start_with(spec.clone(), 10).await;
    exp.conn()
        .query_drop("INSERT INTO METADATA VALUES ('machine_name', 'ETHOSCOPE_001')")
        .await
        .unwrap();
    let results = tempfile::tempdir().unwrap();
    let dev = device(ID, NAME, &spec.backup_filename());
    let report = Mirror::new(config(&server, results.path()))
        .run(&dev, &CancellationToken::new(), &no_progress())
        .await
        .unwrap();
    assert!(report.data_duplication);
    assert_eq!(report.tables["METADATA"].local_rows, 14, "multiset kept");
}

#[tokio::test]
async fn rollover_gives_two_files_each_equal_to_its_source() {
    let first = spec();
    let (server, mut exp) = start_with(first.clone(), 300).await;
    let results = tempfile::tempdir().unwrap();
    let mirror = Mirror::new(config(&server, results.path()));
    let cancel = CancellationToken::new();
    // The node still announces the old file name: the device's METADATA wins.
    let dev = device(ID, NAME, &first.backup_filename());
    mirror.run(&dev, &cancel, &no_progress()).await.unwrap();
    let first_path = mirror_path(results.path(), &first);
    let first_counts = assert_mirror_equals(&server, &first.db_name(), &first_path, &[]).await;

    let mut second = first.clone();
    second.start_time += 7200;
    second.seed = 2;
    exp.rollover(second.clone()).await.unwrap();
    exp.append_frames(120).await.unwrap();
    let report = mirror.run(&dev, &cancel, &no_progress()).await.unwrap();
    let second_path = mirror_path(results.path(), &second);
    assert_eq!(report.backup_filename, second.backup_filename());
    assert_ne!(first_path, second_path);
    assert_mirror_equals(&server, &second.db_name(), &second_path, &[]).await;

    // The old file kept exactly what it had.
    let db = rusqlite::Connection::open(&first_path).unwrap();
    for (table, n) in &first_counts {
        let local: i64 = db
            .query_row(&format!("SELECT COUNT(*) FROM \"{table}\""), [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(local as usize, *n, "{table} in the old experiment's file");
    }
    let files = files_under(results.path());
    assert_eq!(
        files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "db"))
            .count(),
        2
    );
}

#[tokio::test]
async fn not_ready_is_a_warning_and_writes_nothing() {
    let spec = spec();
    let (server, _exp) = start_with(spec.clone(), 0).await;
    let results = tempfile::tempdir().unwrap();
    let dev = device(ID, NAME, &spec.backup_filename());
    let err = Mirror::new(config(&server, results.path()))
        .run(&dev, &CancellationToken::new(), &no_progress())
        .await
        .unwrap_err();
    assert!(matches!(err, MirrorError::NotReady { .. }), "{err}");
    assert!(err.is_warning());
    assert!(err.to_string().contains("VAR_MAP"), "{err}");
    assert!(files_under(results.path()).is_empty());
}

#[tokio::test]
async fn mariadbd_killed_mid_copy_is_an_error_and_the_next_run_completes_equal() {
    let mut spec = spec();
    spec.n_rois = 3;
    let (mut server, exp) = start_with(spec.clone(), 12_000).await;
    drop(exp);
    let results = tempfile::tempdir().unwrap();
    let mut cfg = config(&server, results.path());
    cfg.chunk_rows = 2_000;
    cfg.commit_rows = 3_000;
    let mirror = Mirror::new(cfg);
    let dev = device(ID, NAME, &spec.backup_filename());
    let pid = server.pid().unwrap() as i32;
    let killed = Arc::new(AtomicBool::new(false));
    let k = killed.clone();
    // Kill the server when the copy reaches the second ROI table.
    let on_progress = move |p: &MirrorProgress| {
        if p.table == "ROI_2" && !k.swap(true, Ordering::SeqCst) {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
        }
    };
    let err = mirror
        .run(&dev, &CancellationToken::new(), &on_progress)
        .await
        .unwrap_err();
    assert!(killed.load(Ordering::SeqCst));
    assert!(matches!(err, MirrorError::Remote { .. }), "{err}");
    let path = mirror_path(results.path(), &spec);
    {
        let db = rusqlite::Connection::open(&path).unwrap();
        let check: String = db
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let roi1: i64 = db
            .query_row("SELECT COUNT(*) FROM ROI_1", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            roi1, 12_000,
            "the table finished before the kill is committed"
        );
        let roi3: i64 = db
            .query_row("SELECT COUNT(*) FROM ROI_3", [], |r| r.get(0))
            .unwrap();
        assert_eq!(roi3, 0);
    }

    server.restart().await.unwrap();
    let report = mirror
        .run(&dev, &CancellationToken::new(), &no_progress())
        .await
        .unwrap();
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
    assert_eq!(report.tables["ROI_1"].copied, 0);
    assert_mirror_equals(&server, &spec.db_name(), &path, &[]).await;
    assert_dam_dump_matches(&path);
}

#[tokio::test]
async fn cancel_stops_the_copy_and_keeps_committed_rows() {
    let mut spec = spec();
    spec.n_rois = 2;
    let (server, _exp) = start_with(spec.clone(), 20_000).await;
    let results = tempfile::tempdir().unwrap();
    let mut cfg = config(&server, results.path());
    cfg.chunk_rows = 1_000;
    cfg.commit_rows = 1_000;
    let mirror = Mirror::new(cfg);
    let dev = device(ID, NAME, &spec.backup_filename());
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    let on_progress = move |p: &MirrorProgress| {
        if p.table == "ROI_2" {
            c.cancel();
        }
    };
    let err = mirror.run(&dev, &cancel, &on_progress).await.unwrap_err();
    let MirrorError::Cancelled { rows_copied } = err else {
        panic!("{err}")
    };
    assert!(rows_copied >= 20_000, "ROI_1 was committed: {rows_copied}");
    let path = mirror_path(results.path(), &spec);
    let db = rusqlite::Connection::open(&path).unwrap();
    let roi2: i64 = db
        .query_row("SELECT COUNT(*) FROM ROI_2", [], |r| r.get(0))
        .unwrap();
    assert!(roi2 < 20_000);
    drop(db);
    // The lock is released: the next run completes.
    mirror
        .run(&dev, &CancellationToken::new(), &no_progress())
        .await
        .unwrap();
    assert_mirror_equals(&server, &spec.db_name(), &path, &[]).await;
}

#[tokio::test]
async fn a_file_locked_by_another_job_is_refused() {
    let spec = spec();
    let (server, _exp) = start_with(spec.clone(), 10).await;
    let results = tempfile::tempdir().unwrap();
    let mirror = Mirror::new(config(&server, results.path()));
    let dev = device(ID, NAME, &spec.backup_filename());
    mirror
        .run(&dev, &CancellationToken::new(), &no_progress())
        .await
        .unwrap();
    let path = mirror_path(results.path(), &spec);
    let lock = std::fs::File::options()
        .write(true)
        .open(format!("{}.lock", path.display()))
        .unwrap();
    let held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
    let err = mirror
        .run(&dev, &CancellationToken::new(), &no_progress())
        .await
        .unwrap_err();
    assert!(matches!(err, MirrorError::Locked(_)), "{err}");
    drop(held);
    mirror
        .run(&dev, &CancellationToken::new(), &no_progress())
        .await
        .unwrap();
}

#[tokio::test]
async fn remote_max_id_below_the_mirror_is_an_error_not_a_skip() {
    let spec = spec();
    let (server, mut exp) = start_with(spec.clone(), 100).await;
    let results = tempfile::tempdir().unwrap();
    let mirror = Mirror::new(config(&server, results.path()));
    let dev = device(ID, NAME, &spec.backup_filename());
    mirror
        .run(&dev, &CancellationToken::new(), &no_progress())
        .await
        .unwrap();
    exp.conn()
        .query_drop("DELETE FROM ROI_2 WHERE id > 50")
        .await
        .unwrap();
    let err = mirror
        .run(&dev, &CancellationToken::new(), &no_progress())
        .await
        .unwrap_err();
    assert!(matches!(err, MirrorError::Inconsistent(_)), "{err}");
    assert!(
        err.to_string().contains("ROI_2 (device 50, mirror 100)"),
        "{err}"
    );
}

#[tokio::test]
async fn hostile_table_names_are_skipped_and_schema_changes_followed() {
    let spec = spec();
    let (server, mut exp) = start_with(spec.clone(), 50).await;
    exp.conn()
        .query_drop("CREATE TABLE `ROI_9``; DROP TABLE METADATA; --` (id INT PRIMARY KEY, t INT)")
        .await
        .unwrap();
    exp.conn()
        .query_drop("INSERT INTO `ROI_9``; DROP TABLE METADATA; --` VALUES (1, 2)")
        .await
        .unwrap();
    let results = tempfile::tempdir().unwrap();
    let mirror = Mirror::new(config(&server, results.path()));
    let dev = device(ID, NAME, &spec.backup_filename());
    let report = mirror
        .run(&dev, &CancellationToken::new(), &no_progress())
        .await
        .unwrap();
    assert_eq!(report.skipped.len(), 1);
    assert!(report.skipped[0].table.contains('`'));
    let path = mirror_path(results.path(), &spec);
    assert_mirror_equals(
        &server,
        &spec.db_name(),
        &path,
        &["ROI_9`; DROP TABLE METADATA; --"],
    )
    .await;

    // The device gains a column and a table: both appear, old rows keep NULL in the new column.
    exp.conn()
        .query_drop("ALTER TABLE ROI_1 ADD COLUMN label SMALLINT")
        .await
        .unwrap();
    exp.conn()
        .query_drop("INSERT INTO ROI_1 (t, x, label) VALUES (999999, 1, 7)")
        .await
        .unwrap();
    exp.conn()
        .query_drop("CREATE TABLE EXTRA_EVENTS (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, note TEXT, at DATETIME)")
        .await
        .unwrap();
    exp.conn()
        .query_drop(
            "INSERT INTO EXTRA_EVENTS (note, at) VALUES ('a', '2025-07-10 10:00:01'), (NULL, NULL)",
        )
        .await
        .unwrap();
    let report = mirror
        .run(&dev, &CancellationToken::new(), &no_progress())
        .await
        .unwrap();
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
    assert_eq!(report.tables["EXTRA_EVENTS"].mode, CopyMode::ById);
    let db = rusqlite::Connection::open(&path).unwrap();
    let at: String = db
        .query_row("SELECT at FROM EXTRA_EVENTS WHERE id = 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(at, "2025-07-10 10:00:01");
    let label: Option<i64> = db
        .query_row("SELECT label FROM ROI_1 WHERE t = 999999", [], |r| r.get(0))
        .unwrap();
    assert_eq!(label, Some(7));
}

#[tokio::test]
async fn hostile_file_names_and_device_names_write_nothing() {
    let spec = spec();
    let (server, mut exp) = start_with(spec.clone(), 20).await;
    let results = tempfile::tempdir().unwrap();
    let inside = results.path().join("results");
    let mirror = Mirror::new(config(&server, &inside));
    let cancel = CancellationToken::new();

    // A NAME with ../ (constructed directly: discovery already rejects it).
    let mut bad = device(ID, NAME, &spec.backup_filename());
    bad.name = "../../escape".into();
    let err = mirror.run(&bad, &cancel, &no_progress()).await.unwrap_err();
    assert!(matches!(err, MirrorError::BadTarget(_)), "{err}");

    // A file name carrying another machine's id.
    let foreign = format!("{}_{OTHER_ID}.db", spec.date_time());
    exp.conn()
        .exec_drop(
            "UPDATE METADATA SET value = ? WHERE field = 'backup_filename'",
            (foreign.clone(),),
        )
        .await
        .unwrap();
    let dev = device(ID, NAME, &spec.backup_filename());
    let err = mirror.run(&dev, &cancel, &no_progress()).await.unwrap_err();
    assert!(matches!(err, MirrorError::BadTarget(_)), "{err}");
    assert!(
        etho_model::error_chain(&err).contains(OTHER_ID),
        "{}",
        etho_model::error_chain(&err)
    );

    // A traversal in the file name.
    for hostile in [
        format!("../../../{}", spec.backup_filename()),
        format!("/tmp/{}", spec.backup_filename()),
        "2025-07-10_10-00-00_x.db".to_string(),
    ] {
        exp.conn()
            .exec_drop(
                "UPDATE METADATA SET value = ? WHERE field = 'backup_filename'",
                (hostile.clone(),),
            )
            .await
            .unwrap();
        let err = mirror.run(&dev, &cancel, &no_progress()).await.unwrap_err();
        assert!(matches!(err, MirrorError::BadTarget(_)), "{hostile}: {err}");
    }
    // Two different names: ambiguous, refused.
    exp.conn()
        .exec_drop(
            "INSERT INTO METADATA VALUES ('backup_filename', ?)",
            (spec.backup_filename(),),
        )
        .await
        .unwrap();
    let err = mirror.run(&dev, &cancel, &no_progress()).await.unwrap_err();
    let text = etho_model::error_chain(&err);
    assert!(text.contains("different"), "{text}");

    assert!(
        files_under(results.path()).is_empty(),
        "{:?}",
        files_under(results.path())
    );
}

#[tokio::test]
async fn unreachable_device_and_unknown_database_are_clear_errors() {
    let results = tempfile::tempdir().unwrap();
    let port = etho_devicekit::mariadb::free_port("127.0.0.1".parse().unwrap()).unwrap();
    let mut cfg = etho_mysql_backup::MirrorConfig::new(results.path());
    cfg.mysql_port = port;
    let dev = device(ID, NAME, &spec().backup_filename());
    let err = Mirror::new(cfg)
        .run(&dev, &CancellationToken::new(), &no_progress())
        .await
        .unwrap_err();
    assert!(matches!(err, MirrorError::Connect { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );

    let server = etho_devicekit::mariadb::MariaDb::start().await.unwrap();
    let err = Mirror::new(config(&server, results.path()))
        .run(&dev, &CancellationToken::new(), &no_progress())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ETHOSCOPE_001_db"), "{err}");
    assert!(files_under(results.path()).is_empty());
}

#[tokio::test]
async fn a_legacy_mirror_without_primary_key_is_rebuilt_with_it() {
    let spec = spec();
    let (server, _exp) = start_with(spec.clone(), 30).await;
    let results = tempfile::tempdir().unwrap();
    let path = mirror_path(results.path(), &spec);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    {
        // What an old upstream copier could leave: no key, a duplicated row, a different order.
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch(
            "CREATE TABLE ROI_1 (t INTEGER, id INTEGER, x INTEGER, y INTEGER, w INTEGER, h INTEGER, phi INTEGER, xy_dist_log10x1000 INTEGER, is_inferred INTEGER, has_interacted INTEGER);",
        )
        .unwrap();
    }
    let mut conn = mysql_async::Conn::new(server.node_opts(Some(&spec.db_name())))
        .await
        .unwrap();
    let rows: Vec<(i64, i64)> = conn
        .query("SELECT id, t FROM ROI_1 WHERE id <= 10")
        .await
        .unwrap();
    {
        let db = rusqlite::Connection::open(&path).unwrap();
        for (id, t) in &rows {
            db.execute("INSERT INTO ROI_1 (id, t) VALUES (?1, ?2)", (id, t))
                .unwrap();
        }
        db.execute("INSERT INTO ROI_1 (id, t) VALUES (3, 0)", [])
            .unwrap();
    }
    let dev = device(ID, NAME, &spec.backup_filename());
    let report = Mirror::new(config(&server, results.path()))
        .run(&dev, &CancellationToken::new(), &no_progress())
        .await
        .unwrap();
    assert_eq!(report.tables["ROI_1"].copied, 20);
    // Old rows keep their (partial) columns; every id exists once and new rows are complete.
    let db = rusqlite::Connection::open(&path).unwrap();
    let (n, distinct): (i64, i64) = db
        .query_row("SELECT COUNT(*), COUNT(DISTINCT id) FROM ROI_1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((n, distinct), (30, 30));
    let pk: i64 = db
        .query_row(
            "SELECT pk FROM pragma_table_info('ROI_1') WHERE name = 'id'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(pk, 1);
}

/// A mirror file left in WAL mode (by an older tool), with rows still in its -wal: the mirror
/// keeps those rows and turns the file back into a single-file rollback-journal database, so the
/// archive holds no -wal or -shm and read-only readers can open it.
#[tokio::test]
async fn a_mirror_left_in_wal_mode_becomes_a_single_file() {
    let spec = spec();
    let (server, _exp) = start_with(spec.clone(), 40).await;
    let results = tempfile::tempdir().unwrap();
    let path = mirror_path(results.path(), &spec);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let old_path = scratch.path().join("old.db");
    let old = rusqlite::Connection::open(&old_path).unwrap();
    old.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
         CREATE TABLE ROI_1 (id INTEGER PRIMARY KEY, t INTEGER, x INTEGER, y INTEGER, w INTEGER, h INTEGER, phi INTEGER, xy_dist_log10x1000 INTEGER, is_inferred INTEGER, has_interacted INTEGER);",
    )
    .unwrap();
    let mut conn = mysql_async::Conn::new(server.node_opts(Some(&spec.db_name())))
        .await
        .unwrap();
    let rows: Vec<mysql_async::Row> = conn
        .query("SELECT * FROM ROI_1 WHERE id <= 10")
        .await
        .unwrap();
    for row in rows {
        let values: Vec<Option<i64>> = (0..row.len()).map(|i| row.get(i).unwrap()).collect();
        old.execute(
            "INSERT INTO ROI_1 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            rusqlite::params_from_iter(values),
        )
        .unwrap();
    }
    // The old tool dies: what it leaves is the file and its -wal, the rows only in the -wal.
    let wal = std::path::PathBuf::from(format!("{}-wal", path.display()));
    std::fs::copy(&old_path, &path).unwrap();
    std::fs::copy(scratch.path().join("old.db-wal"), &wal).unwrap();
    drop(old);
    assert!(std::fs::metadata(&wal).unwrap().len() > 0);
    let dev = device(ID, NAME, &spec.backup_filename());
    let report = Mirror::new(config(&server, results.path()))
        .run(&dev, &CancellationToken::new(), &no_progress())
        .await
        .unwrap();
    assert_eq!(
        report.tables["ROI_1"].copied, 30,
        "the 10 rows in the -wal were kept"
    );
    let head = std::fs::read(&path).unwrap();
    assert_eq!((head[18], head[19]), (1, 1), "rollback journal, not WAL");
    for suffix in ["-wal", "-shm", "-journal"] {
        let companion = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        assert!(!companion.exists(), "{} left", companion.display());
    }
    assert_mirror_equals(&server, &spec.db_name(), &path, &[]).await;
}
