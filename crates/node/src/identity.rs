//! Who may speak for a machine id, and which addresses the node keeps: the registry's decisions,
//! as pure functions of what the polls saw (table-tested, no clock, no network).
//!
//! A machine id is whatever an address answers on `/id`; anyone on the lab LAN can answer with
//! another device's id. Upstream kept the most recently seen answer, so a second address claiming
//! device A's id took over A's entry, and rsync replaced A's archived files with the impostor's.
//! Here ([`judge`]):
//!
//! - an id is *bound* to the address that first answered with it (persisted with the device);
//! - a second live address claiming a bound id is a *conflict*: the id is listed with the status
//!   `conflict`, which both backup daemons skip, so nothing is copied under that id from either
//!   address until the conflict resolves;
//! - it resolves by itself when one side stops claiming: the bound address going `offline` or
//!   answering with another id (a DHCP move) moves the binding to the other one; the other one
//!   going `offline` leaves the binding as it was. An operator can also confirm the right address
//!   (`POST /device/<id>/confirm`); other addresses claiming a confirmed id are rejected.
//!
//! What the node cannot see is an ssh host key: the rsync daemon pins those per machine id
//! (`HostKeyAlias`), so over ssh an impostor that wins the binding (the real device is off) still
//! fails host-key verification. Over `rsync://` nothing proves identity beyond this binding.
//!
//! Addresses come from the network too (`POST /device/add`, mDNS), so the registry also decides
//! which to forget: [`expired`] (manual and mDNS addresses silent for `--forget-after`) and
//! [`evict`] (when full, the oldest address that never answered as an ethoscope makes room).

use crate::target::{Source, Target};

/// What one address last showed about the machine id it claims.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Seen {
    /// Its last poll answered `/id` with the id.
    Claims,
    /// Known from the registry file; not polled since the node started.
    NotPolledYet,
    /// It claimed the id, then stopped answering; `gone` once the poll state machine gave up on
    /// it (`offline`).
    Silent {
        /// Offline: no longer counts as claiming.
        gone: bool,
    },
}

impl Seen {
    /// Still counts as claiming (a transient silence does not release an id).
    pub fn live(self) -> bool {
        !matches!(self, Seen::Silent { gone: true })
    }
}

/// One address whose last identity was the id being judged.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimant {
    /// The address.
    pub target: Target,
    /// What it showed.
    pub seen: Seen,
    /// When it started claiming the id (epoch seconds), to bind the first one.
    pub since: f64,
}

/// An id's address, as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The address the id belongs to.
    pub target: Target,
    /// An operator confirmed it: other claimants are impostors.
    pub confirmed: bool,
}

/// Who speaks for an id.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Nothing claims it and nothing is bound.
    Unclaimed,
    /// One address holds it (possibly offline).
    Held {
        /// The address.
        binding: Binding,
        /// The binding moved here from this address (a DHCP move): persist the new one.
        moved_from: Option<Target>,
        /// Live addresses that claim a confirmed id: rejected.
        impostors: Vec<Target>,
    },
    /// More than one live address claims it: not backed up until resolved.
    Conflict {
        /// The address the id is bound to.
        bound: Target,
        /// The other live claimants.
        others: Vec<Target>,
    },
}

/// Judges an id from its binding and the addresses whose last identity was this id.
pub fn judge(binding: Option<&Binding>, claimants: &[Claimant]) -> Verdict {
    let mut live: Vec<&Claimant> = claimants.iter().filter(|c| c.seen.live()).collect();
    live.sort_by(|a, b| a.since.total_cmp(&b.since).then(a.target.cmp(&b.target)));
    let binding = match binding {
        Some(b) => b.clone(),
        // The first address that answered with it.
        None => match live.first() {
            Some(first) => Binding {
                target: first.target.clone(),
                confirmed: false,
            },
            None => return Verdict::Unclaimed,
        },
    };
    let bound_live = live.iter().any(|c| c.target == binding.target);
    let others: Vec<Target> = live
        .iter()
        .filter(|c| c.target != binding.target)
        .map(|c| c.target.clone())
        .collect();
    match (bound_live, others.len()) {
        (_, 0) => Verdict::Held {
            binding,
            moved_from: None,
            impostors: Vec::new(),
        },
        (true, _) if binding.confirmed => Verdict::Held {
            binding,
            moved_from: None,
            impostors: others,
        },
        (false, 1) => Verdict::Held {
            moved_from: Some(binding.target),
            binding: Binding {
                target: others[0].clone(),
                confirmed: false,
            },
            impostors: Vec::new(),
        },
        _ => Verdict::Conflict {
            bound: binding.target,
            others,
        },
    }
}

/// How long an address has been around and when it last answered as an ethoscope.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Age {
    /// Where it came from.
    pub source: Source,
    /// When it was added (epoch seconds).
    pub added: f64,
    /// Its last valid `/id` answer (epoch seconds), if any ever.
    pub last_answer: Option<f64>,
}

/// True when an address is to be forgotten: it did not come from `--device` and has not answered
/// as an ethoscope for `forget_after` seconds (counted from when it was added if it never did).
pub fn expired(age: &Age, now: f64, forget_after: f64) -> bool {
    age.source != Source::Flag && now - age.last_answer.unwrap_or(age.added) >= forget_after
}

/// The address a full registry gives up to make room: of the addresses that never answered as an
/// ethoscope (and did not come from `--device`), the one added first. `None`: every address is a
/// device or configured, and the new one is refused.
pub fn evict<'a>(addresses: impl IntoIterator<Item = (&'a Target, Age)>) -> Option<&'a Target> {
    addresses
        .into_iter()
        .filter(|(_, age)| age.last_answer.is_none() && age.source != Source::Flag)
        .min_by(|(ta, a), (tb, b)| a.added.total_cmp(&b.added).then(ta.cmp(tb)))
        .map(|(t, _)| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u8) -> Target {
        Target::ip(std::net::IpAddr::from([127, 0, 0, n]), 9000)
    }

    fn c(n: u8, seen: Seen, since: f64) -> Claimant {
        Claimant {
            target: t(n),
            seen,
            since,
        }
    }

    fn b(n: u8, confirmed: bool) -> Binding {
        Binding {
            target: t(n),
            confirmed,
        }
    }

    fn held(n: u8) -> Verdict {
        Verdict::Held {
            binding: b(n, false),
            moved_from: None,
            impostors: vec![],
        }
    }

    const CLAIMS: Seen = Seen::Claims;
    const SILENT: Seen = Seen::Silent { gone: false };
    const GONE: Seen = Seen::Silent { gone: true };
    const NEW: Seen = Seen::NotPolledYet;

    #[test]
    fn claims_truth_table() {
        let moved = |to: u8, from: u8| Verdict::Held {
            binding: b(to, false),
            moved_from: Some(t(from)),
            impostors: vec![],
        };
        let conflict = |bound: u8, others: &[u8]| Verdict::Conflict {
            bound: t(bound),
            others: others.iter().map(|n| t(*n)).collect(),
        };
        let cases: Vec<(&str, Option<Binding>, Vec<Claimant>, Verdict)> = vec![
            ("nobody", None, vec![], Verdict::Unclaimed),
            ("first answer binds", None, vec![c(1, CLAIMS, 5.0)], held(1)),
            (
                "two at once: the first to answer is bound",
                None,
                vec![c(2, CLAIMS, 6.0), c(1, CLAIMS, 5.0)],
                conflict(1, &[2]),
            ),
            (
                "bound and alone",
                Some(b(1, false)),
                vec![c(1, CLAIMS, 0.0)],
                held(1),
            ),
            (
                "bound device offline, nobody else: stays bound",
                Some(b(1, false)),
                vec![c(1, GONE, 0.0)],
                held(1),
            ),
            (
                "impostor while the device answers",
                Some(b(1, false)),
                vec![c(1, CLAIMS, 0.0), c(2, CLAIMS, 9.0)],
                conflict(1, &[2]),
            ),
            (
                "impostor while the device is briefly silent",
                Some(b(1, false)),
                vec![c(1, SILENT, 0.0), c(2, CLAIMS, 9.0)],
                conflict(1, &[2]),
            ),
            (
                "impostor before the known device was polled after a restart",
                Some(b(1, false)),
                vec![c(1, NEW, 0.0), c(2, CLAIMS, 9.0)],
                conflict(1, &[2]),
            ),
            (
                "DHCP move: the old address went offline",
                Some(b(1, false)),
                vec![c(1, GONE, 0.0), c(2, CLAIMS, 9.0)],
                moved(2, 1),
            ),
            (
                "DHCP move: the old address now answers with another id",
                Some(b(1, false)),
                vec![c(2, CLAIMS, 9.0)],
                moved(2, 1),
            ),
            (
                "the impostor went offline: resolved for the bound address",
                Some(b(1, false)),
                vec![c(1, CLAIMS, 0.0), c(2, GONE, 9.0)],
                held(1),
            ),
            (
                "old address gone but two new claimants",
                Some(b(1, false)),
                vec![c(1, GONE, 0.0), c(2, CLAIMS, 9.0), c(3, CLAIMS, 8.0)],
                conflict(1, &[3, 2]),
            ),
            (
                "the old device comes back after the move: conflict again",
                Some(b(2, false)),
                vec![c(1, CLAIMS, 20.0), c(2, CLAIMS, 9.0)],
                conflict(2, &[1]),
            ),
            (
                "confirmed by the operator: the others are impostors",
                Some(b(1, true)),
                vec![c(1, CLAIMS, 0.0), c(2, CLAIMS, 9.0)],
                Verdict::Held {
                    binding: b(1, true),
                    moved_from: None,
                    impostors: vec![t(2)],
                },
            ),
            (
                "confirmed, but the confirmed address went offline: moves",
                Some(b(1, true)),
                vec![c(1, GONE, 0.0), c(2, CLAIMS, 9.0)],
                moved(2, 1),
            ),
        ];
        for (what, binding, claimants, want) in cases {
            assert_eq!(judge(binding.as_ref(), &claimants), want, "{what}");
        }
    }

    #[test]
    fn expiry_truth_table() {
        let age = |source, added, last_answer| Age {
            source,
            added,
            last_answer,
        };
        let week = 7.0 * 86_400.0;
        let now = 10.0 * 86_400.0;
        for (what, a, want) in [
            (
                "junk added 10 days ago",
                age(Source::Manual, 0.0, None),
                true,
            ),
            (
                "junk added a day ago",
                age(Source::Manual, now - 86_400.0, None),
                false,
            ),
            (
                "device silent 8 days",
                age(Source::Mdns, 0.0, Some(now - 8.0 * 86_400.0)),
                true,
            ),
            (
                "device seen an hour ago",
                age(Source::Mdns, 0.0, Some(now - 3600.0)),
                false,
            ),
            (
                "known from the file, silent a week",
                age(Source::Known, 0.0, Some(now - week)),
                true,
            ),
            (
                "--device never expires",
                age(Source::Flag, 0.0, None),
                false,
            ),
        ] {
            assert_eq!(expired(&a, now, week), want, "{what}");
        }
    }

    #[test]
    fn eviction_picks_the_oldest_junk() {
        let age = |source, added, last_answer| Age {
            source,
            added,
            last_answer,
        };
        let (t1, t2, t3, t4) = (t(1), t(2), t(3), t(4));
        let all = [
            (&t1, age(Source::Flag, 0.0, None)),
            (&t2, age(Source::Manual, 1.0, Some(1.0))),
            (&t3, age(Source::Manual, 3.0, None)),
            (&t4, age(Source::Mdns, 2.0, None)),
        ];
        assert_eq!(evict(all), Some(&t4));
        assert_eq!(evict(all[..3].iter().copied()), Some(&t3));
        assert_eq!(
            evict(all[..2].iter().copied()),
            None,
            "devices are never evicted"
        );
    }
}
