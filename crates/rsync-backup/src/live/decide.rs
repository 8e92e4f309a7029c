//! When a copied database (with its WAL or journal) is one consistent state of the device's file
//! (pure: observations in, verdict out; table-tested).
//!
//! rsync reads a database and then its `-wal` / `-journal` (names sort that way), while the device
//! may write. The rules, for one database and the reads made of it:
//!
//! - **WAL mode, same generation.** The database file is only written by checkpoints, and every
//!   page a checkpoint writes is a frame of the current WAL; the WAL only grows until a reset.
//!   So if the WAL read after the database carries the same salts as a WAL read *before* the
//!   database read started (the one the last good copy was built from, or an earlier pass of
//!   this cycle), no reset happened in between, and database + WAL recover to the newest commit
//!   in the WAL: the copy is consistent even if a checkpoint tore the database file. A WAL torn
//!   at its end is fine (recovery stops at the last valid commit); a WAL that shows frames of the
//!   *next* generation was reset while it was read and is not used.
//! - **Database unchanged, same generation.** When rsync skipped the database (size and mtime as
//!   at the last good copy) and the WAL generation is the one the last good copy was built from,
//!   the last good copy plus this WAL is the device's state (re-applying frames already applied
//!   is idempotent: frames are page images).
//! - **Anything else** (rollback journal or `journal_mode=OFF`, a first copy, a new WAL
//!   generation, a WAL that appeared or vanished, a changed journal): the files are read again
//!   with checksums. If the database's content equals the previous read and its companions did
//!   not change either, nothing was written between the two reads, so that content is a state
//!   the device had (with a hot journal: a crash state, which SQLite rolls back). Otherwise read
//!   again, a bounded number of times, then keep the last good copy and say why.
//!
//! mtimes alone never prove consistency: a device's clock ticks coarsely, and a write in the same
//! tick as an observed mtime is invisible to it. They are only used to skip work whose result
//! the rules above re-check.

use std::fmt;

use super::format::{DbMode, WalSalts, WalState};

/// Most rsync reads of one database per cycle (the first pass and the re-reads).
pub const MAX_PASSES: u32 = 5;

/// What one pass saw of the database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbView {
    /// Not on the device.
    Missing,
    /// The copy is not an SQLite database (a truncated or replaced file, or rsync copied the
    /// placeholder of an unchanged file because only its permissions changed).
    NotADatabase,
    /// First pass: rsync skipped it, unchanged since the last good copy by size and mtime.
    Skipped,
    /// Later passes: its content equals the previous read's.
    Same(DbMode),
    /// New content was read.
    Received(DbMode),
}

/// What one pass saw of the rollback journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalView {
    /// None, or one SQLite would not play back (empty, zeroed header).
    Cold,
    /// A hot journal; `same` when its bytes equal the previous read's (first pass: the journal
    /// the last good copy was built with).
    Hot {
        /// Unchanged since the previous read.
        same: bool,
    },
}

impl JournalView {
    fn is_hot(self) -> bool {
        matches!(self, JournalView::Hot { .. })
    }
}

/// One pass's observations of one database and its companions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassView {
    /// The database file.
    pub db: DbView,
    /// The WAL read after it.
    pub wal: WalState,
    /// First pass only: the WAL's bytes equal those the last good copy was built with.
    pub wal_same_as_kept: bool,
    /// The rollback journal read after it.
    pub journal: JournalView,
    /// rsync reported one of the files as vanished: listed, then gone or changing when read.
    pub vanished: bool,
}

/// What the last good copy was built from (kept in the state directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastGood {
    /// How the device wrote the database.
    pub mode: DbMode,
    /// The WAL generation it included, if it had a WAL.
    pub wal: Option<WalSalts>,
    /// Whether a hot journal was rolled back to build it.
    pub hot_journal: bool,
}

/// Where the database pages of a consistent copy come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// The database file read in the accepted pass.
    Read,
    /// The last good copy in the archive (the device's file is unchanged).
    LastGood,
}

/// Why a read is not (yet) a consistent copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unproven {
    /// No last good copy is known to compare with.
    FirstCopy,
    /// The copy is not an SQLite database.
    NotADatabase,
    /// Written with a rollback journal or none: a second read must show the same content.
    NeedsSecondRead,
    /// The database changed between two reads.
    DatabaseChanged,
    /// The WAL started a new generation (a checkpoint completed and the WAL was reset).
    WalReset,
    /// The WAL appeared or disappeared.
    WalAppearedOrVanished,
    /// The rollback journal changed, appeared or vanished.
    JournalChanged,
    /// rsync reported a file vanished while it was read.
    Vanished,
}

impl fmt::Display for Unproven {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unproven::FirstCopy => "no earlier copy to compare with",
            Unproven::NotADatabase => "the copy is not an SQLite database",
            Unproven::NeedsSecondRead => "it is written in place and needs a second identical read",
            Unproven::DatabaseChanged => "the database changed while it was copied",
            Unproven::WalReset => "the WAL was checkpointed and reset while it was copied",
            Unproven::WalAppearedOrVanished => "its WAL appeared or vanished while it was copied",
            Unproven::JournalChanged => "its rollback journal changed while it was copied",
            Unproven::Vanished => "a file of it vanished or changed while rsync read it",
        })
    }
}

/// What to do with one database after a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing changed since the last good copy.
    Unchanged,
    /// The database is gone from the device; the archive keeps its copy.
    Missing,
    /// A consistent state: build the self-contained copy from it.
    Build(Base),
    /// Not proven consistent: read the files again.
    Reread(Unproven),
    /// Still not proven after [`MAX_PASSES`] reads: keep the last good copy.
    GiveUp(Unproven),
}

fn generation_matches(wal: &WalState, reference: Option<WalSalts>) -> bool {
    match (wal, reference) {
        (WalState::Valid(w), Some(r)) => w.salts == r && !w.newer_generation,
        _ => false,
    }
}

/// The verdict after the first pass, against the last good copy (if any).
pub fn first_pass(view: &PassView, last: Option<&LastGood>) -> Verdict {
    if view.vanished && view.db != DbView::Missing {
        return Verdict::Reread(Unproven::Vanished);
    }
    match view.db {
        DbView::Missing => Verdict::Missing,
        DbView::NotADatabase => Verdict::Reread(Unproven::NotADatabase),
        DbView::Skipped => match last {
            None => Verdict::Reread(Unproven::FirstCopy),
            Some(last) => unchanged_file(view, last),
        },
        DbView::Received(mode) | DbView::Same(mode) => {
            let reference = last.and_then(|l| l.wal);
            if mode == DbMode::Wal
                && !view.journal.is_hot()
                && generation_matches(&view.wal, reference)
            {
                Verdict::Build(Base::Read)
            } else if last.is_none() {
                Verdict::Reread(Unproven::FirstCopy)
            } else if mode == DbMode::Wal && view.journal.is_hot() {
                Verdict::Reread(Unproven::JournalChanged)
            } else if mode == DbMode::Wal && view.wal.salts().is_some() {
                Verdict::Reread(Unproven::WalReset)
            } else {
                Verdict::Reread(Unproven::NeedsSecondRead)
            }
        }
    }
}

/// The device's database file is unchanged since the last good copy: decide from its companions.
fn unchanged_file(view: &PassView, last: &LastGood) -> Verdict {
    let journal_same = match (view.journal, last.hot_journal) {
        (JournalView::Cold, false) => true,
        (JournalView::Hot { same }, true) => same,
        _ => false,
    };
    if !journal_same {
        return Verdict::Reread(Unproven::JournalChanged);
    }
    match (last.mode, &view.wal, last.wal) {
        (DbMode::Wal, WalState::Valid(_), Some(_)) => {
            if !generation_matches(&view.wal, last.wal) {
                Verdict::Reread(Unproven::WalReset)
            } else if view.wal_same_as_kept {
                Verdict::Unchanged
            } else {
                Verdict::Build(Base::LastGood)
            }
        }
        (_, WalState::Absent | WalState::Empty, None) => Verdict::Unchanged,
        _ => Verdict::Reread(Unproven::WalAppearedOrVanished),
    }
}

/// The verdict after pass `pass` (2 or more), read with checksums against `previous`.
pub fn later_pass(pass: u32, previous: &PassView, view: &PassView) -> Verdict {
    let verdict = match view.db {
        _ if view.vanished => Err(Unproven::Vanished),
        DbView::Missing => return Verdict::Missing,
        DbView::NotADatabase | DbView::Skipped => Err(Unproven::NotADatabase),
        DbView::Same(mode) | DbView::Received(mode) => {
            consistent_pair(previous, view, mode, matches!(view.db, DbView::Same(_)))
        }
    };
    match verdict {
        Ok(base) => Verdict::Build(base),
        Err(why) if pass < MAX_PASSES => Verdict::Reread(why),
        Err(why) => Verdict::GiveUp(why),
    }
}

fn consistent_pair(
    previous: &PassView,
    view: &PassView,
    mode: DbMode,
    db_same: bool,
) -> Result<Base, Unproven> {
    let journal_stable = match (previous.journal, view.journal) {
        (JournalView::Cold, JournalView::Cold) => true,
        (JournalView::Hot { .. }, JournalView::Hot { same }) => same,
        _ => false,
    };
    if mode == DbMode::Wal
        && !view.journal.is_hot()
        && generation_matches(&view.wal, previous.wal.salts())
    {
        return Ok(Base::Read);
    }
    let wal_stable = match (previous.wal.salts(), view.wal.salts()) {
        (None, None) => true,
        (Some(_), Some(_)) => generation_matches(&view.wal, previous.wal.salts()),
        _ => false,
    };
    if db_same && wal_stable && journal_stable {
        return Ok(Base::Read);
    }
    Err(if !wal_stable {
        if previous.wal.salts().is_some() && view.wal.salts().is_some() {
            Unproven::WalReset
        } else {
            Unproven::WalAppearedOrVanished
        }
    } else if !journal_stable {
        Unproven::JournalChanged
    } else {
        Unproven::DatabaseChanged
    })
}

#[cfg(test)]
mod tests {
    use super::super::format::WalInfo;
    use super::*;

    const G1: WalSalts = WalSalts {
        salt1: 1,
        salt2: 77,
    };
    const G2: WalSalts = WalSalts {
        salt1: 2,
        salt2: 13,
    };

    fn wal(salts: WalSalts, newer: bool) -> WalState {
        WalState::Valid(WalInfo {
            salts,
            checkpoint_seq: 0,
            page_size: 4096,
            committed_frames: 3,
            newer_generation: newer,
        })
    }

    fn view(db: DbView, wal: WalState, journal: JournalView) -> PassView {
        PassView {
            db,
            wal,
            wal_same_as_kept: false,
            journal,
            vanished: false,
        }
    }

    const WAL: DbMode = DbMode::Wal;
    const RB: DbMode = DbMode::Rollback;
    const COLD: JournalView = JournalView::Cold;
    const HOT_SAME: JournalView = JournalView::Hot { same: true };
    const HOT_NEW: JournalView = JournalView::Hot { same: false };
    const NO_WAL: WalState = WalState::Absent;

    fn last(mode: DbMode, wal: Option<WalSalts>, hot: bool) -> LastGood {
        LastGood {
            mode,
            wal,
            hot_journal: hot,
        }
    }

    #[test]
    fn first_pass_table() {
        use Verdict::*;
        let wal_last = last(WAL, Some(G1), false);
        let closed_last = last(WAL, None, false);
        let rb_last = last(RB, None, false);
        let hot_last = last(RB, None, true);
        let mut same_bytes = view(DbView::Skipped, wal(G1, false), COLD);
        same_bytes.wal_same_as_kept = true;
        let rows: Vec<(&str, PassView, Option<LastGood>, Verdict)> = vec![
            (
                "gone from the device",
                view(DbView::Missing, NO_WAL, COLD),
                Some(wal_last),
                Missing,
            ),
            (
                "placeholder copied",
                view(DbView::NotADatabase, NO_WAL, COLD),
                Some(rb_last),
                Reread(Unproven::NotADatabase),
            ),
            (
                "first sight of a WAL db",
                view(DbView::Received(WAL), wal(G1, false), COLD),
                None,
                Reread(Unproven::FirstCopy),
            ),
            (
                "first sight, unchanged file",
                view(DbView::Skipped, NO_WAL, COLD),
                None,
                Reread(Unproven::FirstCopy),
            ),
            (
                "db rewritten, same generation",
                view(DbView::Received(WAL), wal(G1, false), COLD),
                Some(wal_last),
                Build(Base::Read),
            ),
            (
                "db rewritten, new generation",
                view(DbView::Received(WAL), wal(G2, false), COLD),
                Some(wal_last),
                Reread(Unproven::WalReset),
            ),
            (
                "reset while the WAL was read",
                view(DbView::Received(WAL), wal(G1, true), COLD),
                Some(wal_last),
                Reread(Unproven::WalReset),
            ),
            (
                "closed cleanly: db rewritten, no WAL",
                view(DbView::Received(WAL), NO_WAL, COLD),
                Some(wal_last),
                Reread(Unproven::NeedsSecondRead),
            ),
            (
                "OFF-mode db rewritten",
                view(DbView::Received(RB), NO_WAL, COLD),
                Some(rb_last),
                Reread(Unproven::NeedsSecondRead),
            ),
            (
                "WAL grew, db untouched",
                view(DbView::Skipped, wal(G1, false), COLD),
                Some(wal_last),
                Build(Base::LastGood),
            ),
            ("nothing changed", same_bytes, Some(wal_last), Unchanged),
            (
                "WAL reset, db untouched",
                view(DbView::Skipped, wal(G2, false), COLD),
                Some(wal_last),
                Reread(Unproven::WalReset),
            ),
            (
                "WAL vanished, db untouched",
                view(DbView::Skipped, NO_WAL, COLD),
                Some(wal_last),
                Reread(Unproven::WalAppearedOrVanished),
            ),
            (
                "WAL appeared, db untouched",
                view(DbView::Skipped, wal(G1, false), COLD),
                Some(closed_last),
                Reread(Unproven::WalAppearedOrVanished),
            ),
            (
                "closed db at rest",
                view(DbView::Skipped, NO_WAL, COLD),
                Some(closed_last),
                Unchanged,
            ),
            (
                "closed db, empty WAL file",
                view(DbView::Skipped, WalState::Empty, COLD),
                Some(closed_last),
                Unchanged,
            ),
            (
                "rollback db at rest",
                view(DbView::Skipped, NO_WAL, COLD),
                Some(rb_last),
                Unchanged,
            ),
            (
                "journal appeared",
                view(DbView::Skipped, NO_WAL, HOT_NEW),
                Some(rb_last),
                Reread(Unproven::JournalChanged),
            ),
            (
                "crashed writer's journal, unchanged",
                view(DbView::Skipped, NO_WAL, HOT_SAME),
                Some(hot_last),
                Unchanged,
            ),
            (
                "crashed writer's journal, changed",
                view(DbView::Skipped, NO_WAL, HOT_NEW),
                Some(hot_last),
                Reread(Unproven::JournalChanged),
            ),
            (
                "journal gone",
                view(DbView::Skipped, NO_WAL, COLD),
                Some(hot_last),
                Reread(Unproven::JournalChanged),
            ),
            (
                "WAL db with a hot journal",
                view(DbView::Received(WAL), wal(G1, false), HOT_NEW),
                Some(wal_last),
                Reread(Unproven::JournalChanged),
            ),
        ];
        for (what, v, l, want) in rows {
            assert_eq!(first_pass(&v, l.as_ref()), want, "{what}");
        }
        let mut gone_wal = view(DbView::Received(WAL), NO_WAL, COLD);
        gone_wal.vanished = true;
        assert_eq!(
            first_pass(&gone_wal, Some(&wal_last)),
            Reread(Unproven::Vanished)
        );
    }

    #[test]
    fn later_pass_table() {
        use Verdict::*;
        let rows: Vec<(&str, PassView, PassView, Verdict)> = vec![
            (
                "same WAL generation as the pass before",
                view(DbView::Received(RB), wal(G1, false), COLD),
                view(DbView::Received(WAL), wal(G1, false), COLD),
                Build(Base::Read),
            ),
            (
                "reset between the passes",
                view(DbView::Received(WAL), wal(G1, false), COLD),
                view(DbView::Received(WAL), wal(G2, false), COLD),
                Reread(Unproven::WalReset),
            ),
            (
                "reset again during the read",
                view(DbView::Received(WAL), wal(G1, false), COLD),
                view(DbView::Same(WAL), wal(G1, true), COLD),
                Reread(Unproven::WalReset),
            ),
            (
                "closed WAL db, identical twice",
                view(DbView::Received(WAL), NO_WAL, COLD),
                view(DbView::Same(WAL), NO_WAL, COLD),
                Build(Base::Read),
            ),
            (
                "OFF db identical twice",
                view(DbView::Received(RB), NO_WAL, COLD),
                view(DbView::Same(RB), NO_WAL, COLD),
                Build(Base::Read),
            ),
            (
                "OFF db changed again",
                view(DbView::Received(RB), NO_WAL, COLD),
                view(DbView::Received(RB), NO_WAL, COLD),
                Reread(Unproven::DatabaseChanged),
            ),
            (
                "stalled transaction, journal identical",
                view(DbView::Received(RB), NO_WAL, HOT_NEW),
                view(DbView::Same(RB), NO_WAL, HOT_SAME),
                Build(Base::Read),
            ),
            (
                "journal rewritten",
                view(DbView::Received(RB), NO_WAL, HOT_NEW),
                view(DbView::Same(RB), NO_WAL, HOT_NEW),
                Reread(Unproven::JournalChanged),
            ),
            (
                "commit between the passes",
                view(DbView::Received(RB), NO_WAL, HOT_NEW),
                view(DbView::Same(RB), NO_WAL, COLD),
                Reread(Unproven::JournalChanged),
            ),
            (
                "WAL appeared",
                view(DbView::Received(WAL), NO_WAL, COLD),
                view(DbView::Same(WAL), wal(G1, false), COLD),
                Reread(Unproven::WalAppearedOrVanished),
            ),
            (
                "vanished from the device",
                view(DbView::Received(RB), NO_WAL, COLD),
                view(DbView::Missing, NO_WAL, COLD),
                Missing,
            ),
            (
                "still a placeholder",
                view(DbView::NotADatabase, NO_WAL, COLD),
                view(DbView::NotADatabase, NO_WAL, COLD),
                Reread(Unproven::NotADatabase),
            ),
        ];
        for (what, prev, v, want) in rows {
            assert_eq!(later_pass(2, &prev, &v), want, "{what}");
        }
        // A WAL that rsync saw vanish is not an absent WAL: never built without it.
        let mut gone = view(DbView::Same(WAL), NO_WAL, COLD);
        gone.vanished = true;
        assert_eq!(
            later_pass(2, &view(DbView::Received(WAL), NO_WAL, COLD), &gone),
            Reread(Unproven::Vanished)
        );
        let changing = view(DbView::Received(RB), NO_WAL, COLD);
        assert_eq!(
            later_pass(MAX_PASSES, &changing, &changing),
            GiveUp(Unproven::DatabaseChanged)
        );
        assert_eq!(
            later_pass(MAX_PASSES - 1, &changing, &changing),
            Reread(Unproven::DatabaseChanged)
        );
    }
}
