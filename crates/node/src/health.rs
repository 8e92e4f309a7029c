//! The node's side of each device's `health` (see [`etho_model::health`]): what it remembers
//! between refreshes of `GET /backup/status`, and the annotation of the merged entries.
//!
//! The decision is the pure [`etho_model::health::assess`]; this module only feeds it:
//!
//! - each daemon's last usable entries are kept ([`DaemonMemory`]), so while a daemon does not
//!   answer its devices' exposure keeps growing from the copy it last described, and the reasons
//!   say since when it is silent (the seed's blocks still say `not_available`);
//! - the registry's polling view of every device ([`crate::registry::DeviceRegistry::sightings`])
//!   says whether it answers, since when, and what it last reported doing.
//!
//! Nothing here does I/O; the caller runs it on the refresh's blocking thread.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use etho_model::health::{assess, Context, Side, SideFacts, Sighting, Thresholds};
use etho_model::merge::{ServiceReport, UnifiedDevice};

/// One daemon's entries as last received, and whether it answers.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct DaemonMemory {
    entries: HashMap<String, SideFacts>,
    interval_s: Option<f64>,
    down_since: Option<f64>,
}

impl DaemonMemory {
    /// Takes in one refresh's report at `now`: a usable document replaces the entries, anything
    /// else (down, an error document) keeps them and marks the daemon silent since the first
    /// such refresh.
    pub fn absorb(&mut self, report: &ServiceReport, now: f64) {
        match report.devices() {
            Some(devices) => {
                self.entries = devices
                    .iter()
                    .filter_map(|(id, e)| Some((id.clone(), SideFacts::from_entry(e.as_object()?))))
                    .collect();
                self.interval_s = self.entries.values().find_map(|e| e.interval_s);
                self.down_since = None;
            }
            None => {
                self.down_since.get_or_insert(now);
            }
        }
    }

    /// The daemon as [`assess`] sees it for device `id`.
    pub fn side(&self, id: &str) -> Side {
        Side {
            entry: self.entries.get(id).cloned(),
            down_since: self.down_since,
            interval_s: self.interval_s,
        }
    }
}

/// The thresholds and both daemons' memories.
#[derive(Debug)]
pub struct HealthView {
    thresholds: Thresholds,
    memory: Mutex<(DaemonMemory, DaemonMemory)>,
}

impl HealthView {
    /// A view with nothing remembered yet.
    pub fn new(thresholds: Thresholds) -> HealthView {
        HealthView {
            thresholds,
            memory: Mutex::new(Default::default()),
        }
    }

    /// Remembers this refresh's reports and sets `health` on every merged entry.
    pub fn annotate(
        &self,
        mysql: &ServiceReport,
        rsync: &ServiceReport,
        unified: &mut BTreeMap<String, UnifiedDevice>,
        sightings: &HashMap<String, Sighting>,
        now: f64,
    ) {
        let mut memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        memory.0.absorb(mysql, now);
        memory.1.absorb(rsync, now);
        for (id, device) in unified.iter_mut() {
            let ctx = Context {
                name: &device.name,
                device: sightings.get(id),
                now,
                thresholds: &self.thresholds,
            };
            let health = assess(&memory.0.side(id), &memory.1.side(id), &ctx);
            device.health = Some(health);
        }
    }

    /// Each daemon's `last_success` of device `id` (MySQL, rsync), as last received: the
    /// metrics' per-kind timestamps, kept while a daemon is silent as its entries are.
    pub fn last_success(&self, id: &str) -> [Option<f64>; 2] {
        let memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        [&memory.0, &memory.1].map(|m| m.entries.get(id).and_then(|e| e.last_success))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etho_model::health::{HealthState, Link};
    use etho_model::merge::{unify, DaemonDocument};
    use serde_json::{json, Value};

    const ID: &str = "0123456789abcdef0123456789abcdef";
    const EXP: &str = "2025-07-10_10-00-00_0123456789abcdef0123456789abcdef.db";

    fn report(v: Value) -> ServiceReport {
        ServiceReport::Available(DaemonDocument::from_map(v.as_object().unwrap().clone()))
    }

    fn mysql(newest: f64, success: f64) -> Value {
        json!({ID: {"name": "ETHOSCOPE_001", "status": "running",
                    "progress": {"status": "success", "message": "ok"},
                    "last_success": success, "last_success_started": success - 1.0,
                    "interval_s": 10.0, "newest_copied_at": newest, "experiment": EXP}})
    }

    fn rsync() -> Value {
        json!({"devices": {ID: {"name": "ETHOSCOPE_001", "status": "running",
                                "progress": {"status": "success"}, "interval_s": 10.0,
                                "last_success": 1000.0}}})
    }

    fn running() -> HashMap<String, Sighting> {
        let s = Sighting {
            link: Link::Online { since: 0.0 },
            reported: Some("running".into()),
            activity_since: Some(0.0),
            device_time: Some(0.0),
            experiment: Some(EXP.into()),
            mariadb: etho_model::device::DatabaseReport::Present,
            sqlite: etho_model::device::DatabaseReport::Absent,
            conflict: None,
        };
        HashMap::from([(ID.to_string(), s)])
    }

    /// While the MySQL daemon is down its last entry keeps the exposure growing; once it answers
    /// again its new entry counts.
    #[test]
    fn a_silent_daemon_keeps_its_last_entry() {
        let view = HealthView::new(Thresholds {
            at_risk_after: 3600.0,
            lag_warn: Some(30.0),
        });
        let round = |m: &ServiceReport, r: &ServiceReport, now: f64| {
            let mut unified = unify(m, r);
            view.annotate(m, r, &mut unified, &running(), now);
            unified.remove(ID).unwrap().health.unwrap()
        };
        let h = round(&report(mysql(995.0, 998.0)), &report(rsync()), 1000.0);
        assert_eq!((h.state, h.exposure_s), (HealthState::Safe, Some(5.0)));
        let down = ServiceReport::Unavailable;
        let h = round(&down, &report(rsync()), 1020.0);
        assert_eq!((h.state, h.exposure_s), (HealthState::Safe, Some(25.0)));
        let h = round(&down, &report(rsync()), 1060.0);
        assert_eq!(h.exposure_s, Some(65.0));
        assert_eq!(h.state, HealthState::Stale, "3 intervals without a success");
        assert_eq!(
            h.reasons[1],
            "the mysql-backup service has not answered for 40 s; its last report is shown"
        );
        // An error document is a silent daemon too.
        let err = report(json!({"error": "Backup wrapper not initialized"}));
        assert_eq!(round(&err, &report(rsync()), 1061.0).exposure_s, Some(66.0));
        let h = round(&report(mysql(1065.0, 1066.0)), &report(rsync()), 1070.0);
        assert_eq!((h.state, h.exposure_s), (HealthState::Safe, Some(5.0)));
        assert!(h.reasons.is_empty(), "{:?}", h.reasons);
    }

    #[test]
    fn memory_follows_the_reports() {
        let mut m = DaemonMemory::default();
        m.absorb(&report(mysql(1.0, 2.0)), 10.0);
        assert_eq!(m.side(ID).entry.unwrap().newest_copied_at, Some(1.0));
        assert_eq!(
            (m.side(ID).interval_s, m.side(ID).down_since),
            (Some(10.0), None)
        );
        m.absorb(&ServiceReport::Unavailable, 11.0);
        m.absorb(&ServiceReport::Unavailable, 12.0);
        assert_eq!(m.side(ID).down_since, Some(11.0));
        assert!(m.side(ID).entry.is_some());
        m.absorb(&report(json!({})), 13.0);
        assert_eq!(
            m.side(ID),
            Side::default(),
            "the device is gone from the daemon"
        );
    }
}
