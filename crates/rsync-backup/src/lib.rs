//! The rsync backup daemon's engine: pulls each device's own results and videos trees with the
//! real `rsync`, and reports truthful per-device sizes (port 8093).
//!
//! Upstream merged every device's whole data tree into one node directory, shipped torn copies
//! of live SQLite files, trusted any host key and reported the whole archive as every device's
//! size. Here a device can only write below its own `<machine_id>` directory, databases are
//! verified before they replace a good copy, host keys are pinned, and sizes are per device.
//!
//! - [`RsyncEngine`] ([`engine`]) implements [`etho_daemon::Engine`]: one job per device, driven
//!   by the shared scheduler in `etho-daemon`, configured by [`RsyncBackupConfig`].
//! - [`command`] builds the rsync command line, [`runner`] runs it in its own process group,
//!   [`parse`] reads its output (pure, tested on captured output).
//! - [`live`] turns each database rsync brought (with its `-wal` or `-journal`) into a checked,
//!   self-contained copy, re-reading it until the copy is provably consistent.
//! - [`promote`] moves staged files into the archive.
//! - [`sizes`] keeps the per-device size index (job deltas plus a periodic parallel rescan).
//! - [`api`] serves `GET /status` and `GET /` from memory.
//! - [`wire`] holds the daemon's JSON documents as serialisable structs.
//!
//! What it does not do: discover devices, schedule, persist status (`etho-daemon`), install
//! ssh keys on devices (the node), or delete anything from the archive.

pub mod api;
pub mod command;
pub mod config;
pub mod engine;
pub mod live;
pub mod parse;
pub mod promote;
pub mod runner;
pub mod sizes;
pub mod source;
pub mod wire;

pub use config::{Kind, RsyncBackupConfig, SshConfig};
pub use engine::{EngineError, RsyncEngine};
pub use source::{SourceTemplate, Transport};
