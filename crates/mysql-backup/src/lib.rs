//! Incremental MariaDB → SQLite mirror of each device's experiment database, and the daemon
//! around it (upstream's `backup_tool.py`, port 8090).
//!
//! Every cycle the daemon asks the node for devices and, for each device reporting a MariaDB
//! database, mirrors `<NAME>_db` into one SQLite file per experiment:
//! `{results}/{machine_id}/{NAME}/{date_time}/{date_time}_{machine_id}.db` (+ the `.txt` DAM dump).
//!
//! - [`mirror`]: one job ([`mirror::Mirror::run`], [`mirror::mirror_device`]) returning a verified
//!   [`mirror::MirrorReport`] or a [`MirrorError`]. Rows are streamed from the device and written by
//!   a dedicated SQLite thread ([`local`]), so memory stays flat whatever the table size.
//! - [`plan`]: the job's decisions as pure functions ([`plan::CopyPlan`], [`plan::Chunks`],
//!   [`plan::verify`]): ranges to copy, refused regressions, reused counts, chunk bounds, verdict.
//! - [`target`]: the file name comes from the device's `METADATA.backup_filename`, validated so a
//!   device cannot write outside the results directory or into another device's tree.
//! - [`schema`] and [`convert`]: identifier checks, the reference type mapping, value conversion.
//! - [`sidecar`]: the DAM `.txt` dump, derived from the mirror so it never duplicates lines.
//! - [`engine`]: [`MysqlEngine`], the `etho_daemon::Engine` the shared scheduler drives.
//! - [`http`]: `GET /status` and `GET /`.
//!
//! What it does not do: schedule, discover or persist status (`etho-daemon` does), or back up
//! SQLite devices and videos (`etho-rsync-backup` does).

pub mod config;
pub mod convert;
pub mod engine;
pub mod error;
pub mod http;
pub mod local;
pub mod mirror;
pub mod plan;
pub mod schema;
pub mod sidecar;
pub mod target;

pub use config::MirrorConfig;
pub use engine::MysqlEngine;
pub use error::{MirrorError, TargetError};
pub use mirror::{mirror_device, Mirror, MirrorProgress, MirrorReport};
