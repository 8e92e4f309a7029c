//! The health rules as a table: every rule, its order, and what feeds it.

use super::*;
use serde_json::json;

/// 2025-07-10 11:00:00 UTC.
const NOW: f64 = 1_752_145_200.0;
/// Started 2025-07-10 10:00:00 UTC, an hour before `NOW`.
const EXP: &str = "2025-07-10_10-00-00_0123456789abcdef0123456789abcdef.db";
/// The day before.
const OLD_EXP: &str = "2025-07-09_10-00-00_0123456789abcdef0123456789abcdef.db";
const INTERVAL: f64 = 20.0;

fn ago(s: f64) -> f64 {
    NOW - s
}

/// A daemon entry that copied up to `newest` seconds ago and last succeeded `success` ago.
fn entry(newest: Option<f64>, success: Option<f64>) -> SideFacts {
    SideFacts {
        last_success: success.map(ago),
        last_success_started: success.map(|s| ago(s + 2.0)),
        interval_s: Some(INTERVAL),
        newest_copied_at: newest.map(ago),
        experiment: Some(EXP.into()),
        outcome: Some(ProgressStatus::Success),
        message: Some("Backup completed".into()),
        status: Some("running".into()),
        ..SideFacts::default()
    }
}

fn side(e: SideFacts) -> Side {
    Side {
        entry: Some(e),
        down_since: None,
        interval_s: Some(INTERVAL),
    }
}

fn none() -> Side {
    Side {
        interval_s: Some(INTERVAL),
        ..Side::default()
    }
}

/// A MariaDB tracker that has answered for two hours and runs `EXP`.
fn tracker() -> Sighting {
    Sighting {
        link: Link::Online { since: ago(7200.0) },
        reported: Some("running".into()),
        activity_since: Some(ago(3600.0)),
        device_time: Some(ago(3600.0)),
        experiment: Some(EXP.into()),
        mariadb: DatabaseReport::Present,
        sqlite: DatabaseReport::Absent,
        conflict: None,
    }
}

fn stopped(stop: f64, seen: f64) -> Sighting {
    Sighting {
        reported: Some("stopped".into()),
        device_time: Some(ago(stop)),
        activity_since: Some(ago(seen)),
        ..tracker()
    }
}

struct Case {
    what: &'static str,
    mysql: Side,
    rsync: Side,
    device: Option<Sighting>,
    thresholds: Thresholds,
    state: HealthState,
    exposure: Option<f64>,
}

fn case(what: &'static str, mysql: Side, device: Option<Sighting>) -> Case {
    Case {
        what,
        mysql,
        rsync: none(),
        device,
        thresholds: Thresholds::default(),
        state: HealthState::Safe,
        exposure: None,
    }
}

impl Case {
    fn expect(mut self, state: HealthState, exposure: Option<f64>) -> Case {
        self.state = state;
        self.exposure = exposure;
        self
    }
    fn rsync(mut self, rsync: Side) -> Case {
        self.rsync = rsync;
        self
    }
    fn thresholds(mut self, t: Thresholds) -> Case {
        self.thresholds = t;
        self
    }
}

fn run(c: &Case) -> Health {
    assess(
        &c.mysql,
        &c.rsync,
        &Context {
            name: "ETHOSCOPE_001",
            device: c.device.as_ref(),
            now: NOW,
            thresholds: &c.thresholds,
        },
    )
}

#[test]
fn every_rule_in_order() {
    use HealthState::*;
    let down = |mut s: Side, since: f64| {
        s.down_since = Some(ago(since));
        s
    };
    let unreached = Sighting {
        link: Link::Unreached { since: ago(300.0) },
        ..tracker()
    };
    let offline = Sighting {
        link: Link::Offline {
            last_seen: Some(ago(900.0)),
        },
        ..tracker()
    };
    let just_back = Sighting {
        link: Link::Online { since: ago(50.0) },
        ..tracker()
    };
    let old_copy = SideFacts {
        experiment: Some(OLD_EXP.into()),
        ..entry(Some(86_000.0), Some(10.0))
    };
    let never_copied = SideFacts {
        experiment: None,
        ..entry(None, Some(10.0))
    };
    let mut recorder = Sighting {
        reported: Some("recording".into()),
        mariadb: DatabaseReport::Absent,
        ..tracker()
    };
    recorder.sqlite = DatabaseReport::Absent;
    let videos = SideFacts {
        video_files: 12,
        newest_copied_at: None,
        experiment: None,
        ..entry(None, Some(10.0))
    };
    let cases = [
        // unknown: no daemon has an entry, whatever else is known.
        case("no daemon knows it", none(), Some(tracker())).expect(Unknown, None),
        // at_risk comes first, even when the backup is also stale.
        case(
            "two hours only on the device and stale",
            side(entry(Some(7200.0), Some(7200.0))),
            Some(tracker()),
        )
        .expect(AtRisk, Some(7200.0)),
        case(
            "just above the at-risk threshold",
            side(entry(Some(3600.5), Some(30.0))),
            Some(tracker()),
        )
        .expect(AtRisk, Some(3600.5)),
        case(
            "exactly at the threshold is not above it",
            side(entry(Some(3600.0), Some(30.0))),
            Some(tracker()),
        )
        .expect(Lagging, Some(3600.0)),
        // stale before lagging.
        case(
            "no success for 10 min at a 20 s interval, 100 s exposed",
            side(entry(Some(100.0), Some(600.0))),
            Some(tracker()),
        )
        .expect(Stale, Some(100.0)),
        case(
            "just under three intervals is not stale",
            side(entry(Some(100.0), Some(59.0))),
            Some(tracker()),
        )
        .expect(Lagging, Some(100.0)),
        // stale counts only while the device answers.
        case(
            "unreachable: not stale, the exposure speaks",
            side(entry(Some(100.0), Some(600.0))),
            Some(unreached.clone()),
        )
        .expect(Lagging, Some(100.0)),
        case(
            "answering again for 50 s only: not stale yet",
            side(entry(Some(30.0), Some(600.0))),
            Some(just_back),
        )
        .expect(Safe, Some(30.0)),
        case(
            "never succeeded while answering for two hours",
            side(entry(None, None)),
            Some(tracker()),
        )
        .expect(Stale, Some(3600.0)),
        case(
            "a daemon that stopped answering keeps its last report, and goes stale",
            down(side(entry(Some(50.0), Some(400.0))), 350.0),
            Some(tracker()),
        )
        .expect(Stale, Some(50.0)),
        case(
            "the device's node view is unknown: never stale",
            side(entry(Some(30.0), Some(9000.0))),
            None,
        )
        .expect(Safe, Some(30.0)),
        // lagging: default threshold is 3 x the slowest interval, at least 60 s.
        case(
            "61 s exposed",
            side(entry(Some(61.0), Some(5.0))),
            Some(tracker()),
        )
        .expect(Lagging, Some(61.0)),
        case(
            "59 s exposed",
            side(entry(Some(59.0), Some(5.0))),
            Some(tracker()),
        )
        .expect(Safe, Some(59.0)),
        case(
            "a 100 s interval makes 300 s the default threshold",
            side(SideFacts {
                interval_s: Some(100.0),
                ..entry(Some(250.0), Some(5.0))
            }),
            Some(tracker()),
        )
        .expect(Safe, Some(250.0)),
        case(
            "--lag-warn 30",
            side(entry(Some(45.0), Some(5.0))),
            Some(tracker()),
        )
        .thresholds(Thresholds {
            at_risk_after: 3600.0,
            lag_warn: Some(30.0),
        })
        .expect(Lagging, Some(45.0)),
        case(
            "--at-risk-after 120",
            side(entry(Some(130.0), Some(5.0))),
            Some(tracker()),
        )
        .thresholds(Thresholds {
            at_risk_after: 120.0,
            lag_warn: None,
        })
        .expect(AtRisk, Some(130.0)),
        // idle: stopped and a job started after the node saw it stopped succeeded.
        case(
            "stopped, copied since",
            side(entry(Some(500.0), Some(10.0))),
            Some(stopped(500.0, 400.0)),
        )
        .expect(Idle, Some(0.0)),
        case(
            "stopped, last copy started before the stop was seen",
            side(entry(Some(700.0), Some(10.0))),
            Some(stopped(600.0, 5.0)),
        )
        .expect(Lagging, Some(100.0)),
        case(
            "stopped, not copied since, but the span is small",
            side(entry(Some(530.0), Some(10.0))),
            Some(stopped(500.0, 5.0)),
        )
        .expect(Safe, Some(30.0)),
        case(
            "stopped and stale beats idle",
            side(entry(Some(9000.0), Some(9000.0))),
            Some(stopped(9020.0, 9010.0)),
        )
        .expect(Stale, Some(0.0)),
        // The device keeps running while it does not answer: exposure keeps growing.
        case(
            "offline, last known running",
            side(entry(Some(1000.0), Some(950.0))),
            Some(offline.clone()),
        )
        .expect(Lagging, Some(1000.0)),
        case(
            "offline for hours, last known running",
            side(entry(Some(5000.0), Some(4990.0))),
            Some(offline),
        )
        .expect(AtRisk, Some(5000.0)),
        // Nothing of the current experiment on the node: it counts from its start.
        case(
            "the copy is of yesterday's experiment",
            side(old_copy),
            Some(tracker()),
        )
        .expect(Lagging, Some(3600.0)),
        case(
            "nothing copied yet, the experiment started an hour ago",
            side(never_copied),
            Some(tracker()),
        )
        .expect(Lagging, Some(3600.0)),
        // Unknown exposure.
        case(
            "a video recorder has no frames to measure",
            none(),
            Some(recorder.clone()),
        )
        .rsync(side(videos.clone()))
        .expect(Safe, None),
        case(
            "the node does not know the device and the daemons saw it offline",
            side(SideFacts {
                status: Some("offline".into()),
                ..entry(Some(100.0), Some(5.0))
            }),
            None,
        )
        .expect(Safe, None),
    ];
    for c in &cases {
        let h = run(c);
        assert_eq!((h.state, h.exposure_s), (c.state, c.exposure), "{}", c.what);
    }
}

#[test]
fn expected_backups_come_from_the_node_else_from_the_daemons() {
    let sqlite = Sighting {
        mariadb: DatabaseReport::Absent,
        sqlite: DatabaseReport::Present,
        ..tracker()
    };
    let results = SideFacts {
        has_results: true,
        ..entry(Some(5.0), Some(5.0))
    };
    let both = SideFacts {
        video_files: 3,
        ..results.clone()
    };
    type Row = (&'static str, Side, Side, Option<Sighting>, Vec<BackupKind>);
    let rows: Vec<Row> = vec![
        (
            "MariaDB tracker",
            none(),
            none(),
            Some(tracker()),
            vec![BackupKind::Mysql],
        ),
        (
            "SQLite tracker with videos",
            none(),
            side(both.clone()),
            Some(sqlite.clone()),
            vec![BackupKind::Results, BackupKind::Videos],
        ),
        (
            "the node says no MariaDB: a leftover mirror entry does not count",
            side(entry(None, None)),
            side(results.clone()),
            Some(sqlite),
            vec![BackupKind::Results],
        ),
        (
            "unknown to the node: what the daemons hold",
            side(entry(None, None)),
            side(both),
            None,
            vec![BackupKind::Mysql, BackupKind::Results, BackupKind::Videos],
        ),
        (
            "the node does not know the databases yet",
            side(entry(None, None)),
            none(),
            Some(Sighting {
                mariadb: DatabaseReport::Unknown,
                sqlite: DatabaseReport::Unknown,
                ..tracker()
            }),
            vec![BackupKind::Mysql],
        ),
        (
            "a recorder with nothing copied yet",
            none(),
            none(),
            Some(Sighting {
                reported: Some("recording".into()),
                mariadb: DatabaseReport::Absent,
                sqlite: DatabaseReport::Absent,
                ..tracker()
            }),
            vec![BackupKind::Videos],
        ),
    ];
    for (what, m, r, d, want) in rows {
        assert_eq!(expected(d.as_ref(), &m, &r), want, "{what}");
    }
}

#[test]
fn reasons_name_the_device_and_quote_the_daemon() {
    let unplugged = Sighting {
        link: Link::Unreached { since: ago(120.0) },
        ..tracker()
    };
    let h = run(&case(
        "unplugged",
        side(entry(Some(2820.0), Some(2800.0))),
        Some(unplugged.clone()),
    )
    .thresholds(Thresholds {
        at_risk_after: 600.0,
        lag_warn: None,
    }));
    assert_eq!(h.state, HealthState::AtRisk);
    assert_eq!(
        h.reasons,
        ["the newest 47 min of data exist only on ETHOSCOPE_001 (unreachable for 2 min)"]
    );
    // Below the lag threshold the link is still worth a sentence.
    let h = run(&case(
        "unplugged, fresh",
        side(entry(Some(20.0), Some(10.0))),
        Some(unplugged),
    ));
    assert_eq!(
        h.reasons,
        ["ETHOSCOPE_001 is unreachable for 2 min while running an experiment: its new data cannot be copied"]
    );

    let failing = SideFacts {
        outcome: Some(ProgressStatus::Error),
        failures: 3,
        message: Some("rsync failed with code 5: @ERROR: access denied".into()),
        has_results: true,
        ..entry(Some(20.0), Some(400.0))
    };
    let sqlite = Sighting {
        mariadb: DatabaseReport::Absent,
        sqlite: DatabaseReport::Present,
        ..tracker()
    };
    let h = run(&case("failing", none(), Some(sqlite)).rsync(side(failing)));
    assert_eq!(h.state, HealthState::Stale);
    assert_eq!(h.expected, [BackupKind::Results]);
    assert_eq!(
        h.reasons,
        ["rsync-backup has failed 3 times (last success 6 min ago): rsync failed with code 5: @ERROR: access denied"]
    );

    let h = run(&case(
        "daemon down",
        Side {
            down_since: Some(ago(90.0)),
            ..side(entry(Some(20.0), Some(50.0)))
        },
        Some(tracker()),
    ));
    assert_eq!(h.state, HealthState::Safe);
    assert_eq!(
        h.reasons,
        ["the mysql-backup service has not answered for 1 min; its last report is shown"]
    );
    let h = run(&case(
        "healthy",
        side(entry(Some(20.0), Some(10.0))),
        Some(tracker()),
    ));
    assert!(h.reasons.is_empty(), "{:?}", h.reasons);
    assert_eq!(h.last_success, Some(ago(10.0)));
    assert_eq!(h.newest_copied_at, Some(ago(20.0)));

    // A conflicted id is not backed up: the conflict comes first, whatever else applies.
    let claimed = "machine id x is claimed by 127.0.0.10:9000 and 127.0.0.20:9000: nothing is \
                   backed up under this id until ...";
    let conflicted = Sighting {
        conflict: Some(claimed.into()),
        ..tracker()
    };
    let h = run(&case(
        "conflict",
        side(entry(Some(20.0), Some(10.0))),
        Some(conflicted.clone()),
    ));
    assert_eq!(h.reasons, [claimed]);
    let h = run(&case(
        "conflict, stale",
        side(entry(Some(400.0), Some(400.0))),
        Some(conflicted.clone()),
    ));
    assert_eq!(h.state, HealthState::Stale);
    assert_eq!(h.reasons[0], claimed);
    assert!(
        h.reasons[1..]
            .iter()
            .any(|r| r.starts_with("mysql-backup has not completed a backup")),
        "{:?}",
        h.reasons
    );
    let h = run(&case(
        "conflict, never reported",
        Side::default(),
        Some(conflicted),
    ));
    assert_eq!(h.state, HealthState::Unknown);
    assert_eq!(
        h.reasons,
        [claimed, "no backup service has reported this device yet"]
    );
}

#[test]
fn wire_shape() {
    let h = run(&case(
        "healthy",
        side(entry(Some(12.4), Some(10.0))),
        Some(tracker()),
    ));
    assert_eq!(
        serde_json::to_value(&h).unwrap(),
        json!({"state": "safe", "exposure_s": 12.4, "newest_copied_at": NOW - 12.4,
               "last_success": NOW - 10.0, "expected": ["mysql"], "reasons": []})
    );
    for (state, word) in [
        (HealthState::AtRisk, "at_risk"),
        (HealthState::Stale, "stale"),
        (HealthState::Lagging, "lagging"),
        (HealthState::Idle, "idle"),
        (HealthState::Safe, "safe"),
        (HealthState::Unknown, "unknown"),
    ] {
        assert_eq!(serde_json::to_value(state).unwrap(), json!(word));
        assert_eq!(state.as_str(), word);
    }
}

#[test]
fn side_facts_read_foreign_entries_defensively() {
    let e = json!({
        "last_success": 100, "last_success_started": "soon", "failures": -1,
        "interval_s": 0, "newest_copied_at": 99.5, "experiment": 7,
        "progress": {"status": "error", "message": "x".repeat(400)},
        "status": "running", "synced": {"results": {}, "videos": {"local_files": 4}}
    });
    let f = SideFacts::from_entry(e.as_object().unwrap());
    assert_eq!(f.last_success, Some(100.0));
    assert_eq!(f.last_success_started, None);
    assert_eq!(f.failures, 0);
    assert_eq!(f.interval_s, None, "an interval of 0 is no interval");
    assert_eq!(f.newest_copied_at, Some(99.5));
    assert_eq!(f.experiment, None);
    assert_eq!(f.outcome, Some(ProgressStatus::Error));
    assert_eq!(f.message.as_ref().unwrap().chars().count(), MAX_QUOTE + 1);
    assert!(f.has_results);
    assert_eq!(f.video_files, 4);
    assert_eq!(SideFacts::from_entry(&Map::new()), SideFacts::default());
}

#[test]
fn spans_read_like_the_dashboard() {
    for (s, text) in [
        (0.0, "0 s"),
        (59.9, "59 s"),
        (60.0, "1 min"),
        (2820.0, "47 min"),
        (3600.0, "1 h 00 min"),
        (11_100.0, "3 h 05 min"),
        (187_200.0, "2 d 4 h"),
        (-5.0, "0 s"),
        (f64::NAN, "0 s"),
    ] {
        assert_eq!(span(s), text, "{s}");
    }
}

#[test]
fn status_words() {
    for w in ["running", "recording", "stopping"] {
        assert_eq!(runs_experiment(w), Some(true), "{w}");
    }
    for w in ["stopped", "initialising", "streaming"] {
        assert_eq!(runs_experiment(w), Some(false), "{w}");
    }
    for w in ["offline", "unreached", "busy", "unknown", ""] {
        assert_eq!(runs_experiment(w), None, "{w}");
    }
}
