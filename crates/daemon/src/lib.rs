//! What both backup daemons share: everything except the copy itself.
//!
//! A backup daemon is an [`Engine`] (the MySQL mirror or the rsync pull) driven by a [`Daemon`]:
//!
//! - [`discovery`]: asks the node for its device list (`GET http://<server>/devices`) and turns
//!   the untrusted answer into validated [`etho_model::device::DeviceInfo`]s.
//! - [`scheduler`]: cycles every `interval` (measured from cycle start), at most `max_jobs` jobs at
//!   once, never two jobs for one device, and a wall-clock timeout per job that cancels the job's
//!   token and, after a short grace, aborts it. The scheduler alone owns that timeout; engines
//!   see it as [`JobContext::deadline`].
//! - [`status`]: the per-device status table served on `GET /status`, persisted in SQLite under
//!   the state directory so counts and outcomes survive a restart.
//! - [`oneshot`]: the `-e/--ethoscope` mode: resolve targets through the node, back each up once,
//!   and return per-target outcomes (progress goes to a channel; the binary draws it).
//! - [`history`]: the last 200 runs of every device, in SQLite (`GET /history/<device_id>`).
//! - [`metrics`]: counters, histograms and gauges for `GET /metrics` (Prometheus text format).
//! - [`observe`]: the routes every daemon serves besides its engine's (`/metrics`, `/history`).
//! - [`server`]: serving a daemon's axum router until shutdown, with a request timeout and a body
//!   limit.
//! - [`config`]: reading (never rewriting) upstream's `ethoscope.conf`.
//!
//! What it does not do: copy data. Engines do, and they own their `GET /status` document shape.

pub mod config;
pub mod discovery;
pub mod engine;
pub mod history;
pub mod metrics;
pub mod observe;
pub mod oneshot;
pub mod scheduler;
pub mod server;
pub mod status;

pub use engine::{ArchiveBytes, Copied, Engine, JobContext, JobOutcome};
pub use oneshot::{OneShotEvent, OneShotReport, TargetOutcome};
pub use scheduler::{CycleReport, Daemon, DaemonConfig, SchedulerConfig};
pub use server::serve;
pub use status::{DiscoverySource, ServiceInfo, StatusTable};
