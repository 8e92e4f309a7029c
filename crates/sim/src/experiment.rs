//! Experiments: when a device starts and stops, and what an experiment is called.
//!
//! A real ethoscope names each experiment after its start time in UTC
//! (`YYYY-MM-DD_HH-MM-SS_<machine_id>.db`); the backup daemons build their paths from that name,
//! so the simulator reproduces it exactly. [`Schedule`] is a pure function of elapsed time, and
//! [`next_action`] decides what a device must do from its state and the plan, so both are tested
//! without clocks or sleeps.

use std::time::Duration;

/// `YYYY-MM-DD_HH-MM-SS` in UTC for an epoch second, as `tracking.py` formats experiment times.
pub fn utc_stamp(epoch_secs: i64) -> String {
    etho_devicekit::schema::format_date_time(epoch_secs)
}

/// The experiment file name a device announces: `YYYY-MM-DD_HH-MM-SS_<machine_id>.db` (UTC).
pub fn backup_filename(epoch_secs: i64, machine_id: &str) -> String {
    format!("{}_{machine_id}.db", utc_stamp(epoch_secs))
}

/// One experiment of one device.
#[derive(Debug, Clone, PartialEq)]
pub struct Experiment {
    /// Start, epoch seconds (whole: the file name has one-second resolution).
    pub started: i64,
    /// End, epoch seconds, once stopped.
    pub stopped: Option<i64>,
    /// `YYYY-MM-DD_HH-MM-SS` of `started` (UTC): the experiment's folder name.
    pub stamp: String,
    /// `<stamp>_<machine_id>.db`.
    pub backup_filename: String,
    /// Who started it (`experimental_info.name`).
    pub user: String,
    /// Where (`experimental_info.location`).
    pub location: String,
    /// Run id as newer firmware reports it.
    pub run_id: String,
}

impl Experiment {
    /// A new experiment of `machine_id` starting at `started`.
    pub fn new(started: i64, machine_id: &str, user: &str, location: &str) -> Experiment {
        Experiment {
            started,
            stopped: None,
            stamp: utc_stamp(started),
            backup_filename: backup_filename(started, machine_id),
            user: user.to_string(),
            location: location.to_string(),
            run_id: format!("{:x}{}", started, &machine_id[..machine_id.len().min(8)]),
        }
    }
}

/// The start second of a new experiment: now, but strictly after the previous start, so two
/// experiments of one device never share a file name.
pub fn next_start_second(now_secs: i64, previous_start: Option<i64>) -> i64 {
    match previous_start {
        Some(prev) if now_secs <= prev => prev + 1,
        _ => now_secs,
    }
}

/// When a device runs experiments, relative to the moment the simulator started it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Time before the first experiment starts (staggers a fleet).
    pub start_delay: Duration,
    /// Length of each experiment; `None`: the first experiment runs until the device is told to
    /// stop.
    pub run_for: Option<Duration>,
    /// Time a device stays stopped between two experiments.
    pub pause_for: Duration,
}

impl Default for Schedule {
    /// Start at once, run 10 minutes, pause 30 s.
    fn default() -> Schedule {
        Schedule {
            start_delay: Duration::ZERO,
            run_for: Some(Duration::from_secs(600)),
            pause_for: Duration::from_secs(30),
        }
    }
}

/// What the schedule wants a device to be doing at some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planned {
    /// Before the first experiment.
    Idle,
    /// Running experiment number `index` (0-based).
    Running {
        /// Which experiment of the schedule.
        index: u64,
    },
    /// Stopped after experiment `index`, before the next one.
    Pausing {
        /// The experiment that just ended.
        index: u64,
    },
}

impl Schedule {
    /// The plan at `elapsed` time since the device started.
    pub fn at(&self, elapsed: Duration) -> Planned {
        let Some(since_first) = elapsed.checked_sub(self.start_delay) else {
            return Planned::Idle;
        };
        let Some(run) = self.run_for else {
            return Planned::Running { index: 0 };
        };
        let period = run + self.pause_for;
        if period.is_zero() {
            return Planned::Running { index: 0 };
        }
        let index = (since_first.as_nanos() / period.as_nanos()) as u64;
        let within = since_first.as_nanos() % period.as_nanos();
        if within < run.as_nanos() {
            Planned::Running { index }
        } else {
            Planned::Pausing { index }
        }
    }
}

/// What a device must do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start experiment `index` of the schedule (stopping the current one first, if any).
    Start {
        /// Which experiment of the schedule.
        index: u64,
    },
    /// Stop the running experiment.
    Stop,
}

/// Decides the next action. `running` is the schedule index of the experiment running now, if
/// any; `held` means the device was told to stop and stay stopped (tests compare data at rest).
pub fn next_action(running: Option<u64>, planned: Planned, held: bool) -> Option<Action> {
    match (running, planned) {
        (Some(_), _) if held => Some(Action::Stop),
        (_, _) if held => None,
        (Some(cur), Planned::Running { index }) if cur == index => None,
        (_, Planned::Running { index }) => Some(Action::Start { index }),
        (Some(_), Planned::Idle | Planned::Pausing { .. }) => Some(Action::Stop),
        (None, Planned::Idle | Planned::Pausing { .. }) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn file_names_are_utc() {
        // 2025-07-10 09:40:41 UTC.
        assert_eq!(utc_stamp(1_752_140_441), "2025-07-10_09-40-41");
        assert_eq!(
            backup_filename(1_752_140_441, ID),
            format!("2025-07-10_09-40-41_{ID}.db")
        );
        assert_eq!(utc_stamp(0), "1970-01-01_00-00-00");
        let e = Experiment::new(1_752_140_441, ID, "alice", "Incubator_1");
        assert_eq!(e.stamp, "2025-07-10_09-40-41");
        assert!(e.backup_filename.starts_with(&e.stamp));
    }

    #[test]
    fn start_seconds_never_repeat() {
        assert_eq!(next_start_second(100, None), 100);
        assert_eq!(next_start_second(100, Some(99)), 100);
        assert_eq!(next_start_second(100, Some(100)), 101);
        assert_eq!(next_start_second(100, Some(105)), 106);
    }

    #[test]
    fn schedule_phases() {
        let s = Schedule {
            start_delay: Duration::from_secs(2),
            run_for: Some(Duration::from_secs(10)),
            pause_for: Duration::from_secs(5),
        };
        let at = |secs: f64| s.at(Duration::from_secs_f64(secs));
        assert_eq!(at(0.0), Planned::Idle);
        assert_eq!(at(1.9), Planned::Idle);
        assert_eq!(at(2.0), Planned::Running { index: 0 });
        assert_eq!(at(11.9), Planned::Running { index: 0 });
        assert_eq!(at(12.0), Planned::Pausing { index: 0 });
        assert_eq!(at(16.9), Planned::Pausing { index: 0 });
        assert_eq!(at(17.0), Planned::Running { index: 1 });
        assert_eq!(at(2.0 + 15.0 * 7.0 + 3.0), Planned::Running { index: 7 });

        let forever = Schedule {
            run_for: None,
            ..s.clone()
        };
        assert_eq!(
            forever.at(Duration::from_secs(100_000)),
            Planned::Running { index: 0 }
        );
        let no_pause = Schedule {
            start_delay: Duration::ZERO,
            run_for: Some(Duration::from_secs(3)),
            pause_for: Duration::ZERO,
        };
        assert_eq!(
            no_pause.at(Duration::from_secs(3)),
            Planned::Running { index: 1 }
        );
    }

    #[test]
    fn actions() {
        use Planned::*;
        assert_eq!(next_action(None, Idle, false), None);
        assert_eq!(
            next_action(None, Running { index: 0 }, false),
            Some(Action::Start { index: 0 })
        );
        assert_eq!(next_action(Some(0), Running { index: 0 }, false), None);
        // The schedule moved on to the next experiment: a new one starts (rollover).
        assert_eq!(
            next_action(Some(0), Running { index: 1 }, false),
            Some(Action::Start { index: 1 })
        );
        assert_eq!(
            next_action(Some(0), Pausing { index: 0 }, false),
            Some(Action::Stop)
        );
        assert_eq!(next_action(None, Pausing { index: 0 }, false), None);
        // Held devices stop and stay stopped whatever the plan says.
        assert_eq!(
            next_action(Some(3), Running { index: 3 }, true),
            Some(Action::Stop)
        );
        assert_eq!(next_action(None, Running { index: 4 }, true), None);
    }
}
