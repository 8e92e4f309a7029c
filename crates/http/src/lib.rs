//! HTTP plumbing shared by the node and the backup daemons.
//!
//! Three clients talk HTTP inside etho-backup: the daemons ask the node for its device list, the
//! node polls devices, and the node asks both daemons for their status. They all go through one
//! place, so the rules hold everywhere: never follow a redirect, never use an environment proxy,
//! cap every body, bound every exchange in time.
//!
//! - [`fetch`]: [`client`] builds the client; [`fetch_bytes`] and [`fetch_json`] do one capped,
//!   time-bounded `GET` and fail with a [`FetchError`] that keeps its cause.
//! - [`url`]: [`ServiceUrl`], the one way a user-given address (`HOST`, `HOST:PORT`, `http://…`)
//!   becomes the URL of a daemon's `/status`, the node's `/devices` or a device's API.
//! - [`server`]: [`serve`] runs an axum router with a request timeout and a body limit
//!   ([`ServerLimits`]), so a graceful shutdown never waits on a slow client.
//!
//! What it does not do: know any document. Callers parse what they fetch.
#![deny(missing_docs)]

pub mod fetch;
pub mod server;
pub mod url;

pub use fetch::{client, fetch_bytes, fetch_json, FetchError};
pub use server::{serve, with_limits, ServerLimits};
pub use url::{Role, ServiceUrl, UrlError};
