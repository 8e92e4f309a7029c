#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The private mariadbd launcher and the MariaDB experiment writer against a real server.

use std::net::{IpAddr, Ipv4Addr};

use etho_devicekit::mariadb::{MariaDb, MariaDbBuilder};
use etho_devicekit::schema::ExperimentSpec;
use etho_devicekit::writer_mariadb::MariaDbExperiment;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

const ID: &str = "0123456789abcdef0123456789abcdef";

#[tokio::test]
async fn node_account_is_read_only_and_server_survives_kill_restart() {
    let mut server = MariaDb::start().await.unwrap();
    let port = server.port();
    let mut spec = ExperimentSpec::new(ID, "ETHOSCOPE_001", 1_752_141_600);
    spec.n_rois = 3;
    let mut exp = MariaDbExperiment::create(server.admin_opts(None), spec.clone())
        .await
        .unwrap();
    exp.append_frames(500).await.unwrap();
    let counts = exp.table_counts().await.unwrap();
    assert_eq!(counts["ROI_1"], 500);
    assert_eq!(counts["VAR_MAP"], 8);
    assert_eq!(counts["METADATA"], 13);
    drop(exp);

    let mut node = Conn::new(server.node_opts(Some("ETHOSCOPE_001_db")))
        .await
        .unwrap();
    let name: Option<String> = node
        .query_first("SELECT value FROM METADATA WHERE field = 'backup_filename'")
        .await
        .unwrap();
    assert_eq!(name.unwrap(), spec.backup_filename());
    let denied = node.query_drop("DELETE FROM ROI_1").await;
    assert!(denied.is_err(), "node must not be able to write");
    drop(node);

    // Killed like a crash, restarted on the same data and port: committed rows are there.
    server.kill().unwrap();
    assert!(!server.is_running());
    assert!(Conn::new(server.node_opts(None)).await.is_err());
    server.restart().await.unwrap();
    assert_eq!(server.port(), port);
    let mut node = Conn::new(server.node_opts(Some("ETHOSCOPE_001_db")))
        .await
        .unwrap();
    let n: Option<u64> = node
        .query_first("SELECT COUNT(*) FROM ROI_1")
        .await
        .unwrap();
    assert_eq!(n, Some(500));
}

#[tokio::test]
async fn refuses_unspecified_bind_and_binds_several_loopback_addresses() {
    let err = MariaDbBuilder::new()
        .bind_addresses([IpAddr::V4(Ipv4Addr::UNSPECIFIED)])
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unspecified"), "{err}");

    let second = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7));
    let server = MariaDbBuilder::new()
        .bind_addresses([IpAddr::V4(Ipv4Addr::LOCALHOST), second])
        .start()
        .await
        .unwrap();
    let opts = mysql_async::OptsBuilder::from_opts(server.node_opts(None))
        .ip_or_hostname(second.to_string());
    let mut conn = Conn::new(opts).await.unwrap();
    let one: Option<u8> = conn.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
}

#[tokio::test]
async fn rollover_restarts_ids_with_a_new_file_name() {
    let server = MariaDb::start().await.unwrap();
    let mut spec = ExperimentSpec::new(ID, "ETHOSCOPE_002", 1_752_141_600);
    spec.n_rois = 2;
    let mut exp = MariaDbExperiment::create(server.admin_opts(None), spec.clone())
        .await
        .unwrap();
    exp.append_frames(100).await.unwrap();
    let mut next = spec.clone();
    next.start_time += 3600;
    next.seed = 9;
    exp.rollover(next.clone()).await.unwrap();
    let counts = exp.table_counts().await.unwrap();
    assert_eq!(
        counts.get("ROI_1"),
        None,
        "ROI tables appear with the first frame"
    );
    assert_eq!(counts["VAR_MAP"], 0, "not ready before the first frame");
    exp.append_frames(10).await.unwrap();
    let max: Option<i64> = exp
        .conn()
        .query_first("SELECT MAX(id) FROM ROI_1")
        .await
        .unwrap();
    assert_eq!(max, Some(10));
    let name: Option<String> = exp
        .conn()
        .query_first("SELECT value FROM METADATA WHERE field = 'backup_filename'")
        .await
        .unwrap();
    assert_eq!(name.unwrap(), next.backup_filename());
    assert_ne!(spec.backup_filename(), next.backup_filename());
}
