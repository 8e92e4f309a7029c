//! A simulated ethoscope fleet that behaves like real devices, for the demo, end-to-end tests and
//! anyone trying the backup system without a lab.
//!
//! Each device has its own identity ([`identity`]: 32-hex machine id, `ETHOSCOPE_NNN`, its own
//! 127.0.0.x address), serves the firmware's HTTP API ([`api`]: `/id`, `/data/<id>`,
//! `/data/databases/<id>` in upstream's shapes, see [`state`]), runs experiments on a schedule
//! ([`experiment`]) and writes real data while running ([`driver`]): MariaDB trackers write
//! `<NAME>_db` with the firmware's schema (dropped and recreated per experiment), SQLite trackers
//! write `results/<id>/<NAME>/<stamp>/<stamp>_<id>.db`, recorders write video chunks. Every
//! device's data directory is served by a real `rsync --daemon` at
//! `rsync://<ip>:<port>/ethoscope_data`, and devices can be announced over mDNS ([`mdns`]).
//!
//! [`Fleet`] starts and steers it all from a [`config::FleetConfig`]: faults ([`config::Fault`]:
//! offline, slow, busy, hostile name or id, bad JSON), unplugging a device at run time, holding
//! experiments so data is at rest.
//!
//! What it does not do: write the schema itself (that is `etho-devicekit`, shared with the
//! backup daemons' tests) or back anything up.

pub mod api;
pub mod config;
pub mod device;
mod driver;
pub mod experiment;
pub mod fleet;
pub mod identity;
pub mod mdns;
pub mod state;

pub use config::{
    mariadbd_installed, DbKind, DeviceSpec, Fault, FleetConfig, MariaDbTarget, Rates, Role,
};
pub use device::SimDevice;
/// The SQLite journal mode a simulated device writes with (`--sqlite-journal`).
pub use etho_devicekit::writer_sqlite::SqliteJournal;
pub use fleet::{DeviceSummary, Fleet, MariaDbInfo};
