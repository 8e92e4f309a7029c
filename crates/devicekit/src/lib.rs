//! What an ethoscope holds, rebuilt on this machine: its experiment database and the servers that
//! expose it.
//!
//! The backup daemons are tested and benchmarked against real servers, and the simulated fleet
//! serves real data, so this crate is a library rather than test-only code:
//!
//! - [`mariadb`]: [`mariadb::MariaDb`], a private `mariadbd` in its own data directory, listening on
//!   loopback only, with the device's read-only `node`/`node` account. It can be killed mid-test and
//!   restarted on the same data and port.
//! - [`schema`]: the ethoscope result schema ([`schema::ExperimentSpec`], [`schema::TableDef`]) with
//!   the exact MariaDB DDL the device firmware uses and the SQLite DDL of its SQLite writer.
//! - [`generator`]: deterministic, seeded experiment data (tracking rows, JPEG-sized snapshots,
//!   sensor readings, DAM activity), advanced in explicit steps.
//! - [`writer_mariadb`] and [`writer_sqlite`]: write that data into a MariaDB `<NAME>_db` or an
//!   SQLite file, incrementally (a running experiment) and with drop-and-recreate rollover.
//!
//! What it does not do: back anything up. The engines live in `etho-mysql-backup` and
//! `etho-rsync-backup`.

pub mod generator;
pub mod mariadb;
pub mod rsyncd;
pub mod schema;
pub mod writer_mariadb;
pub mod writer_sqlite;
