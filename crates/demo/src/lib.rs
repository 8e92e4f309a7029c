//! The demo's supervisor: the node and both backup daemons as child processes, wired together on
//! loopback, watched, and summarised one line per change.
//!
//! `etho-backup demo` runs exactly what a lab runs (the same binary's `node`, `mysql-backup` and
//! `rsync-backup` subcommands), so supervising them is process work that does not belong in the
//! binary's flag parsing:
//!
//! - [`services`]: the command lines of the three services for a [`services::Wiring`] (ports,
//!   directories, the simulated fleet's addresses), a pure function.
//! - [`supervisor`]: [`Supervisor`] starts each service with its log in a file, waits until it
//!   answers (failing early, with the log's last lines, if it exits), notices a service that
//!   dies, and stops them all (SIGTERM, then SIGKILL after a grace period).
//! - [`watch`]: [`Watcher`] turns successive `/devices` and `/backup/status` documents into one
//!   line per change; [`watch::run`] polls the node until shutdown or a service dies.
//!
//! What it does not do: simulate devices (`etho-sim`) or print (the binary prints the lines).

pub mod services;
pub mod supervisor;
pub mod watch;

pub use services::{ServiceSpec, Wiring};
pub use supervisor::{Exited, SuperviseError, Supervisor};
pub use watch::Watcher;
