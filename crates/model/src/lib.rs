//! Basic types and pure logic used by every etho-backup component.
//!
//! This crate is the leaf of the workspace: serde types and functions, no I/O, no async runtime.
//!
//! - [`device`]: a device entry as the node's `GET /devices` reports it ([`device::DeviceInfo`]),
//!   validation of untrusted device fields, and backup eligibility.
//! - [`status`]: the per-device backup status both daemons publish on `GET /status`
//!   ([`status::DeviceStatus`], [`status::Progress`], [`status::ProgressStatus`]).
//! - [`merge`]: the node's unified `GET /backup/status` document, built from the two daemons' raw
//!   documents by the pure [`merge::unify`] function.
//! - [`size`]: upstream's human size format (`"267.9 GB"`).
//!
//! What it does not do: fetch, persist or serve anything. Those live in `etho-daemon` and
//! `etho-node`.
#![deny(missing_docs)]

pub mod device;
pub mod merge;
pub mod size;
pub mod status;

/// Current time as whole seconds since the Unix epoch, the unit every status document uses.
///
/// This is the one place the model reads the clock; everything else takes time as an argument.
pub fn now_epoch() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
