use super::*;
use crate::entry::NEVER_ANSWERED;
use crate::poller::{DeviceData, Rejection};
use serde_json::json;

const ID: &str = "0123456789abcdef0123456789abcdef";

fn registry() -> DeviceRegistry {
    DeviceRegistry::new(
        DiscoveryConfig {
            persist: false,
            ..DiscoveryConfig::default()
        },
        Path::new("/nonexistent"),
    )
    .unwrap()
}

fn answered(status: &str) -> PollReport {
    answered_as(ID, status)
}

fn answered_as(id: &str, status: &str) -> PollReport {
    let fields = json!({"time": 1.0, "backup_filename": format!("2025-07-10_10-00-00_{id}.db")});
    PollReport::Answered {
        id: id.into(),
        data: DeviceData {
            name: "ETHOSCOPE_001".into(),
            status: status.into(),
            fields: fields.as_object().unwrap().clone(),
        },
        databases: Some(
            json!({"SQLite": {}, "MariaDB": {}})
                .as_object()
                .unwrap()
                .clone(),
        ),
    }
}

fn refused() -> PollReport {
    PollReport::Unreachable {
        refused: true,
        error: "/id: connection refused".into(),
    }
}

fn target(s: &str) -> Target {
    Target::parse(s, false).unwrap()
}

/// Applies a report to a known address (its current poll loop).
fn feed(r: &DeviceRegistry, t: &Target, report: PollReport, now: f64) -> Applied {
    let generation = lock(&r.inner).entries[t].generation;
    let ip = t.host.parse().ok();
    r.apply(t, generation, ip, report, now).unwrap()
}

fn add(r: &DeviceRegistry, s: &str) -> Target {
    let t = target(s);
    r.add_target(t.clone(), Source::Manual).unwrap();
    t
}

#[test]
fn add_list_answers_like_upstream() {
    let r = registry();
    let res = r.add_list("127.0.0.10, 127.0.0.11:9001,not-an-ip,,0.0.0.0");
    assert_eq!(res.added, vec!["127.0.0.10", "127.0.0.11:9001"]);
    assert_eq!(res.problems, vec!["not-an-ip", "0.0.0.0"]);
    assert_eq!(res.messages.len(), 2);
    // Unresolved targets are pending, not devices.
    assert!(r.devices().is_empty());
    assert_eq!(r.pending().len(), 2);
    assert_eq!(
        serde_json::to_string(&r.pending()["127.0.0.10:9000"]).unwrap(),
        format!(r#"{{"id":null,"status":"offline","poll_error":"{NEVER_ANSWERED}"}}"#)
    );
    let many = vec!["127.0.0.1"; MAX_ADD + 2].join(",");
    assert_eq!(r.add_list(&many).problems.len(), 2);
    assert!(r.add_list("").messages[0].contains("no address"));
}

/// `/devices/pending` says the same of a closed port, a silent one and another HTTP server; it
/// gives details only once an address answered as an ethoscope.
#[test]
fn pending_does_not_tell_closed_from_listening() {
    let r = registry();
    let failures = [
        refused(),
        PollReport::Unreachable {
            refused: false,
            error: "/id: no answer within 3s".into(),
        },
        PollReport::Unreachable {
            refused: false,
            error: "/id: HTTP 404 Not Found".into(),
        },
    ];
    let targets: Vec<Target> = (0..3)
        .map(|i| add(&r, &format!("127.0.0.{}", 20 + i)))
        .collect();
    for round in 0..4 {
        for (t, report) in targets.iter().zip(&failures) {
            feed(&r, t, report.clone(), f64::from(round) * 5.0);
        }
        let pending = r.pending();
        let shown: Vec<&Value> = targets.iter().map(|t| &pending[&t.to_string()]).collect();
        assert!(
            shown.windows(2).all(|w| w[0] == w[1]),
            "round {round}: {shown:?}"
        );
        assert_eq!(shown[0]["poll_error"], NEVER_ANSWERED);
    }
    // A device that answered /id once (busy) keeps its details.
    let busy = add(&r, "127.0.0.30");
    let id_only = PollReport::IdOnly {
        id: ID.into(),
        error: "/data: no answer within 3s".into(),
    };
    feed(&r, &busy, id_only, 1.0);
    let entry = &r.pending()["127.0.0.30:9000"];
    assert_eq!(entry["id"], ID);
    assert_eq!(entry["status"], "busy");
}

#[test]
fn a_full_registry_evicts_the_oldest_junk_then_refuses() {
    let r = registry();
    let ports = (1..=u16::MAX).take(MAX_TARGETS);
    for port in ports {
        let t = Target::ip("127.0.0.10".parse().unwrap(), port);
        assert_eq!(r.add_target(t, Source::Manual), Ok(()));
    }
    assert_eq!(r.pending().len(), MAX_TARGETS);
    let res = r.add_list("127.0.0.11, 127.0.0.10:2");
    assert_eq!(res.added, vec!["127.0.0.11", "127.0.0.10:2"]);
    assert_eq!(r.pending().len(), MAX_TARGETS);
    assert!(
        !r.pending().contains_key("127.0.0.10:1"),
        "the oldest address that never answered made room"
    );
    // Configured addresses and devices are never evicted: a registry full of them refuses.
    let r = registry();
    for port in (1..=u16::MAX).take(MAX_TARGETS) {
        let t = Target::ip("127.0.0.10".parse().unwrap(), port);
        r.add_target(t, Source::Flag).unwrap();
    }
    let res = r.add_list("127.0.0.11");
    assert_eq!(res.problems, vec!["127.0.0.11"]);
    assert!(
        res.messages[0].contains("already polls"),
        "{:?}",
        res.messages
    );
}

#[test]
fn devices_map_shape_and_statuses() {
    let r = registry();
    let t = target("127.0.0.10");
    r.add_target(t.clone(), Source::Flag).unwrap();
    let applied = feed(&r, &t, answered("running"), 100.0);
    assert_eq!(applied.delay, Duration::from_secs(5));
    assert!(applied.device.is_some(), "a new device is persisted");
    let map = r.devices();
    let d = &map[ID];
    assert_eq!(d["name"], "ETHOSCOPE_001");
    assert_eq!(d["ip"], "127.0.0.10");
    assert_eq!(d["port"], 9000);
    assert_eq!(d["status"], "running");
    assert_eq!(d["last_seen"], 100.0);
    assert_eq!(d["time"], 1.0);
    assert_eq!(d["databases"]["MariaDB"], json!({}));
    assert!(
        d.get("backup_path").is_none(),
        "no results folder configured"
    );
    // The daemons' parser accepts it.
    let (devs, problems) = etho_model::device::parse_device_map(&Value::Object(map)).unwrap();
    assert_eq!((devs.len(), problems.len()), (1, 0));

    // Same status a second later: nothing to persist.
    assert!(feed(&r, &t, answered("running"), 101.0).device.is_none());
    let w = feed(&r, &t, refused(), 105.0).device;
    assert_eq!(w.unwrap().status, "unreached");
    assert_eq!(r.devices()[ID]["status"], "unreached");
    assert_eq!(r.devices()[ID]["poll_error"], "/id: connection refused");
    feed(&r, &t, refused(), 110.0);
    let applied = feed(&r, &t, refused(), 115.0);
    assert_eq!(applied.device.unwrap().status, "offline");
    assert_eq!(applied.delay, Duration::from_secs(30));
    let d = &r.devices()[ID];
    assert_eq!(d["status"], "offline");
    // Last good answer kept, with when it was seen.
    assert_eq!(d["last_seen"], 101.0);
    assert_eq!(d["name"], "ETHOSCOPE_001");
    // Busy: /id answers, /data does not.
    feed(&r, &t, answered("stopped"), 120.0);
    let id_only = PollReport::IdOnly {
        id: ID.into(),
        error: "/data: no answer within 3s".into(),
    };
    feed(&r, &t, id_only, 125.0);
    assert_eq!(r.devices()[ID]["status"], "busy");
}

#[test]
fn entries_carry_upstreams_backup_path() {
    let r = DeviceRegistry::new(
        DiscoveryConfig {
            persist: false,
            results_dir: Some(PathBuf::from("/data/results")),
            ..DiscoveryConfig::default()
        },
        Path::new("/nonexistent"),
    )
    .unwrap();
    let t = add(&r, "127.0.0.10");
    feed(&r, &t, answered("running"), 1.0);
    assert_eq!(
        r.devices()[ID]["backup_path"],
        format!("/data/results/{ID}/ETHOSCOPE_001/2025-07-10_10-00-00/2025-07-10_10-00-00_{ID}.db")
    );
}

#[test]
fn hostile_devices_are_flagged_not_listed() {
    let r = registry();
    let t = add(&r, "127.0.0.66");
    feed(&r, &t, answered("running"), 1.0);
    assert_eq!(r.devices().len(), 1);
    let rejected = PollReport::Rejected {
        id: Some(ID.into()),
        reason: Rejection::BadName("\"../../x\"".into()),
    };
    let w = feed(&r, &t, rejected, 2.0).device;
    assert!(w.is_none());
    assert!(r.devices().is_empty());
    let rej = r.rejected();
    assert_eq!(
        serde_json::to_string(&rej).unwrap(),
        format!(
            r#"{{"127.0.0.66:9000":{{"ip":"127.0.0.66","port":9000,"id":"{ID}","status":"rejected","reason":"device reports an invalid name \"../../x\"","last_seen":2.0}}}}"#
        ),
        "the wire shape the page reads"
    );
    // Becoming valid again lists it again.
    feed(&r, &t, answered("running"), 3.0);
    assert_eq!(r.devices().len(), 1);
    assert!(r.rejected().is_empty());
}

/// Defect 1: a second address answering with A's id used to take A's entry over.
#[test]
fn an_impostor_makes_a_conflict_not_a_takeover() {
    let r = registry();
    let a = add(&r, "127.0.0.10");
    let b = add(&r, "127.0.0.20");
    feed(&r, &a, answered("running"), 1.0);
    let w = feed(&r, &b, answered("running"), 2.0).device;
    assert!(
        w.is_none(),
        "the impostor's address is never saved for the id"
    );
    let d = &r.devices()[ID];
    assert_eq!(d["status"], CONFLICT_STATUS);
    assert_eq!(d["ip"], "127.0.0.10", "the entry stays the bound device's");
    assert_eq!(
        d["conflict"]["addresses"],
        json!(["127.0.0.10:9000", "127.0.0.20:9000"])
    );
    // The daemons skip it.
    let (devs, _) = etho_model::device::parse_device_map(&Value::Object(r.devices())).unwrap();
    assert!(devs[0].backup_eligibility().is_err());
    let rej = r.rejected();
    for t in ["127.0.0.10:9000", "127.0.0.20:9000"] {
        assert_eq!(rej[t]["status"], CONFLICT_STATUS, "{t}");
        assert!(rej[t]["reason"].as_str().unwrap().contains("claimed by"));
    }
    // Newer answers from the impostor do not change that.
    feed(&r, &b, answered("running"), 10.0);
    assert_eq!(r.devices()[ID]["status"], CONFLICT_STATUS);
    // The impostor goes away: resolved for the bound address.
    for now in [11.0, 12.0, 13.0] {
        feed(&r, &b, refused(), now);
    }
    let d = &r.devices()[ID];
    assert_eq!(
        (d["status"].as_str(), d["ip"].as_str()),
        (Some("running"), Some("127.0.0.10"))
    );
    assert!(d.get("conflict").is_none());
    assert!(r.rejected().is_empty());
}

/// The health reads the conflict: a conflicted id is not backed up, and its reason says why.
#[test]
fn a_conflict_reaches_the_sighting() {
    let r = registry();
    let a = add(&r, "127.0.0.10");
    let b = add(&r, "127.0.0.20");
    feed(&r, &a, answered("running"), 1.0);
    assert_eq!(r.sightings()[ID].conflict, None);
    feed(&r, &b, answered("running"), 2.0);
    let s = &r.sightings()[ID];
    let reason = s.conflict.as_deref().unwrap();
    assert!(
        reason.contains("claimed by 127.0.0.10:9000 and 127.0.0.20:9000")
            && reason.contains("nothing is backed up"),
        "{reason}"
    );
    // Its own last word is still what the bound address reported.
    assert_eq!(s.reported.as_deref(), Some("running"));
}

/// The polling view the health reads: since when the device answers, what it last said it
/// was doing and since when, kept while it does not answer.
#[test]
fn sightings_follow_polls() {
    use etho_model::health::Link;
    let r = registry();
    let t = add(&r, "127.0.0.10");
    assert!(r.sightings().is_empty());
    feed(&r, &t, answered("running"), 100.0);
    feed(&r, &t, answered("running"), 105.0);
    let s = &r.sightings()[ID];
    assert_eq!(s.link, Link::Online { since: 100.0 });
    assert_eq!(
        (s.reported.as_deref(), s.activity_since, s.device_time),
        (Some("running"), Some(100.0), Some(1.0))
    );
    assert_eq!(s.mariadb, etho_model::device::DatabaseReport::Absent);
    feed(&r, &t, answered("stopped"), 110.0);
    assert_eq!(r.sightings()[ID].activity_since, Some(110.0));
    feed(&r, &t, refused(), 115.0);
    let s = &r.sightings()[ID];
    assert_eq!(s.link, Link::Unreached { since: 115.0 });
    assert_eq!(
        (s.reported.as_deref(), s.activity_since),
        (Some("stopped"), Some(110.0))
    );
    // Busy devices are not reachable for the health either.
    let busy = PollReport::IdOnly {
        id: ID.into(),
        error: "/data: no answer within 3s".into(),
    };
    feed(&r, &t, busy, 120.0);
    assert_eq!(r.sightings()[ID].link, Link::Busy { since: 120.0 });
}

#[test]
fn a_device_that_moves_is_followed() {
    let r = registry();
    let a = add(&r, "127.0.0.10");
    let b = add(&r, "127.0.0.20");
    feed(&r, &a, answered("running"), 1.0);
    // The old address goes quiet; the device answers from a new one: a conflict until the old
    // address is given up (offline), then the id moves.
    feed(&r, &a, refused(), 5.0);
    feed(&r, &b, answered("running"), 6.0);
    assert_eq!(r.devices()[ID]["status"], CONFLICT_STATUS);
    feed(&r, &a, refused(), 10.0);
    let applied = feed(&r, &a, refused(), 15.0);
    assert!(applied.device.is_none());
    assert_eq!(r.devices()[ID]["ip"], "127.0.0.20");
    assert_eq!(r.devices()[ID]["status"], "running");
    let w = feed(&r, &b, answered("running"), 20.0).device.unwrap();
    assert_eq!(w.target, b, "the new address is saved for the id");
    // DHCP gave the old address to another device: that is no conflict either.
    let c = add(&r, "127.0.0.30");
    let other = "ffffffffffffffffffffffffffffffff";
    feed(&r, &c, answered("running"), 21.0);
    feed(&r, &c, answered_as(other, "running"), 22.0);
    let m = r.devices();
    assert_eq!(
        (m[ID]["status"].as_str(), m[other]["status"].as_str()),
        (Some("running"), Some("running"))
    );
}

#[tokio::test]
async fn an_operator_confirms_the_right_address() {
    let r = registry();
    let a = add(&r, "127.0.0.10");
    let b = add(&r, "127.0.0.20");
    feed(&r, &a, answered("running"), 1.0);
    feed(&r, &b, answered("running"), 2.0);
    assert_eq!(r.devices()[ID]["status"], CONFLICT_STATUS);
    let stranger = target("127.0.0.30");
    assert!(matches!(
        r.confirm(ID, &stranger).await,
        Err(ConfirmError::NotAClaimant { .. })
    ));
    r.confirm(ID, &b).await.unwrap();
    let d = &r.devices()[ID];
    assert_eq!(
        (d["status"].as_str(), d["ip"].as_str()),
        (Some("running"), Some("127.0.0.20"))
    );
    let rej = r.rejected();
    assert_eq!(rej.len(), 1);
    assert_eq!(rej["127.0.0.10:9000"]["status"], "rejected");
    assert!(rej["127.0.0.10:9000"]["reason"]
        .as_str()
        .unwrap()
        .contains("an operator confirmed at 127.0.0.20:9000"));
    let w = feed(&r, &b, answered("running"), 3.0).device;
    assert!(w.as_ref().is_none_or(|w| w.confirmed), "{w:?}");
}

#[tokio::test]
async fn silent_addresses_are_forgotten_and_can_be_removed() {
    let r = registry();
    let junk = add(&r, "127.0.0.40");
    let device = add(&r, "127.0.0.41");
    let flag = target("127.0.0.42");
    r.add_target(flag.clone(), Source::Flag).unwrap();
    let week = DEFAULT_FORGET_AFTER.as_secs_f64();
    let start = now_f64();
    feed(&r, &device, answered("running"), start + week / 2.0);
    r.sweep(start + week + 1.0).await;
    let left: Vec<String> = lock(&r.inner)
        .entries
        .keys()
        .map(Target::to_string)
        .collect();
    assert_eq!(left, ["127.0.0.41:9000", "127.0.0.42:9000"]);
    r.sweep(start + 2.0 * week).await;
    let left: Vec<String> = lock(&r.inner)
        .entries
        .keys()
        .map(Target::to_string)
        .collect();
    assert_eq!(
        left,
        ["127.0.0.42:9000"],
        "the device went silent a week ago too"
    );
    assert!(r.devices().is_empty() && lock(&r.inner).bindings.is_empty());
    let _ = junk;
    // DELETE /device/<address>.
    let removed = r.remove(&flag).await.unwrap();
    assert_eq!(removed.removed, "127.0.0.42:9000");
    assert!(r.remove(&flag).await.is_none());
    let t = add(&r, "127.0.0.43");
    feed(&r, &t, answered("running"), now_f64());
    let removed = r.remove(&t).await.unwrap();
    assert_eq!(removed.device.as_deref(), Some(ID));
    assert!(r.devices().is_empty());
    // A poll that was in flight when its address was removed is dropped.
    assert!(r.apply(&t, 1, None, answered("running"), 1.0).is_none());
}

#[tokio::test]
async fn registry_persists_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let config = DiscoveryConfig {
        poll_interval: Duration::from_secs(3600),
        device_timeout: Duration::from_millis(200),
        ..DiscoveryConfig::default()
    };
    let (a, b) = (target("127.0.0.10:1"), target("127.0.0.12:1"));
    {
        let r = Arc::new(DeviceRegistry::new(config.clone(), dir.path()).unwrap());
        let guard = r.start();
        assert!(
            !dir.path().join("devices.sqlite").exists(),
            "no file before there is something to keep"
        );
        r.add_target(a.clone(), Source::Flag).unwrap();
        r.add_target(b.clone(), Source::Flag).unwrap();
        feed(&r, &a, answered("running"), 50.0).device.unwrap();
        feed(&r, &b, answered("running"), 51.0);
        r.confirm(ID, &b).await.unwrap();
        r.add_list("127.0.0.11:1");
        r.flush().await;
        let n: i64 = lock(&r.store)
            .get(None)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM targets", [], |row| row.get(0))
            .unwrap();
        assert_eq!(n, 1, "the manual address is saved");
        guard.stop();
    }
    let r = Arc::new(DeviceRegistry::new(config, dir.path()).unwrap());
    let _guard = r.start();
    let d = &r.devices()[ID];
    assert_eq!(d["status"], "offline");
    assert_eq!(d["name"], "ETHOSCOPE_001");
    assert_eq!(d["last_seen"], 51.0);
    assert_eq!(d["ip"], "127.0.0.12", "the confirmed binding survives");
    assert_eq!(
        lock(&r.inner).bindings[ID],
        Binding {
            target: b,
            confirmed: true
        }
    );
    assert!(r.pending().contains_key("127.0.0.11:1"));
    // A restarted node still knows the device was running when last heard.
    let s = &r.sightings()[ID];
    assert_eq!(
        s.link,
        etho_model::health::Link::Offline {
            last_seen: Some(51.0)
        }
    );
    assert_eq!(
        (s.reported.as_deref(), s.activity_since),
        (Some("running"), Some(51.0))
    );
}

/// Defect 2: nine devices padding `/data` made `/devices` larger than the daemons accept. Each
/// entry is bounded now, and 2048 devices sending the largest answers the node keeps fit.
#[test]
fn devices_stays_small_with_the_largest_answers() {
    use crate::fields::{largest, DATABASES, DATA_FIELDS};
    use etho_model::device::{MAX_DEVICE_ENTRY_BYTES, MAX_DEVICE_MAP_BYTES};
    let r = DeviceRegistry::new(
        DiscoveryConfig {
            persist: false,
            results_dir: Some(PathBuf::from("/".to_string() + &"r".repeat(200))),
            ..DiscoveryConfig::default()
        },
        Path::new("/nonexistent"),
    )
    .unwrap();
    let mut answer = Map::new();
    for (k, shape) in DATA_FIELDS {
        answer.insert((*k).to_string(), largest(shape));
    }
    answer.insert("padding".into(), json!("p".repeat(3_900_000)));
    answer.insert("name".into(), json!("E".repeat(64)));
    answer.insert("status".into(), json!("s".repeat(32)));
    let mut answer = Value::Object(answer);
    let databases = largest(&DATABASES);
    for i in 0..MAX_TARGETS {
        let id = format!("{i:032x}");
        let t = Target::ip(IpAddr::from([127, 1, (i >> 8) as u8, i as u8]), 65535);
        r.add_target(t.clone(), Source::Manual).unwrap();
        answer["id"] = json!(id);
        let data = poller::validate_info(&id, &answer).unwrap();
        let report = PollReport::Answered {
            id,
            data,
            databases: poller::parse_databases(&databases),
        };
        feed(&r, &t, report, 1e12 + i as f64);
        // The longest poll error there is.
        let gen = lock(&r.inner).entries[&t].generation;
        let ip = Some(IpAddr::from([0xffff; 8]));
        let err = PollReport::Unreachable {
            refused: false,
            error: "e".repeat(10_000),
        };
        r.apply(&t, gen, ip, err, 1e12 + i as f64);
    }
    let map = r.devices();
    assert_eq!(map.len(), MAX_TARGETS);
    let largest_entry = map
        .values()
        .map(|v| serde_json::to_vec(v).unwrap().len())
        .max()
        .unwrap();
    assert!(
        largest_entry <= MAX_DEVICE_ENTRY_BYTES,
        "entry of {largest_entry} bytes"
    );
    let total = serde_json::to_vec(&map).unwrap().len();
    assert!(total <= MAX_DEVICE_MAP_BYTES, "/devices of {total} bytes");
    // The daemons parse it.
    let (devs, problems) = etho_model::device::parse_device_map(&Value::Object(map)).unwrap();
    assert_eq!((devs.len(), problems.len()), (MAX_TARGETS, 0));
}
