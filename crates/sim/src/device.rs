//! One simulated device at run time: its shared state, its online/offline switch and the HTTP
//! server that comes and goes with it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{DeviceSpec, Fault, HOSTILE_NAME};
use crate::state::{self, DeviceState, Reported};

/// Switches a test or the demo flips at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Control {
    /// The device is unplugged: HTTP and rsync are down.
    pub offline: bool,
    /// The device stops its experiment and starts no new one (data at rest, for exact
    /// comparisons).
    pub held: bool,
    /// `/id` answers but `/data/...` does not (as [`Fault::Busy`]).
    pub busy: bool,
}

/// A running simulated device, shared by its tasks.
#[derive(Debug)]
pub struct SimDevice {
    spec: DeviceSpec,
    root: PathBuf,
    http_addr: SocketAddr,
    mariadb_version: Option<String>,
    state: Mutex<DeviceState>,
    control: watch::Sender<Control>,
    /// Cancelled when the device goes offline or the fleet stops; replaced on coming back.
    online: Mutex<CancellationToken>,
    shutdown: CancellationToken,
    /// Seconds added to the clock the device reports (`current_timestamp`): a device whose
    /// clock is wrong, for `doctor`'s clock check.
    clock_offset: Mutex<f64>,
}

/// Current time as fractional epoch seconds.
pub fn now_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep serving it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SimDevice {
    /// A device whose data root is `root` and whose HTTP API will listen on `http_addr`.
    pub fn new(
        spec: DeviceSpec,
        root: PathBuf,
        http_addr: SocketAddr,
        mariadb_version: Option<String>,
        shutdown: CancellationToken,
    ) -> SimDevice {
        let (control, _) = watch::channel(Control {
            offline: spec.has_fault(Fault::Offline),
            held: false,
            busy: spec.has_fault(Fault::Busy),
        });
        SimDevice {
            spec,
            root,
            http_addr,
            mariadb_version,
            state: Mutex::new(DeviceState::default()),
            control,
            online: Mutex::new(CancellationToken::new()),
            shutdown,
            clock_offset: Mutex::new(0.0),
        }
    }

    /// The configuration it was started with.
    pub fn spec(&self) -> &DeviceSpec {
        &self.spec
    }

    /// Machine id.
    pub fn id(&self) -> &str {
        &self.spec.identity.id
    }

    /// Real name (`ETHOSCOPE_NNN`), whatever the device reports.
    pub fn name(&self) -> &str {
        &self.spec.identity.name
    }

    /// The device's data root (its `/ethoscope_data`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where its HTTP API listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// MariaDB server version, for MariaDB trackers.
    pub fn mariadb_version(&self) -> Option<&str> {
        self.mariadb_version.as_deref()
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> DeviceState {
        lock(&self.state).clone()
    }

    /// Runs `f` on the state under its lock (keep it short: handlers wait on it).
    pub fn with_state<R>(&self, f: impl FnOnce(&mut DeviceState) -> R) -> R {
        f(&mut lock(&self.state))
    }

    fn reported(&self) -> Reported<'_> {
        Reported {
            id: self.id(),
            name: if self.spec.has_fault(Fault::HostileName) {
                HOSTILE_NAME
            } else {
                self.name()
            },
            storage_name: self.name(),
            role: self.spec.role,
            mariadb_version: self.mariadb_version(),
        }
    }

    /// `GET /data/<id>` document.
    pub fn info(&self) -> Value {
        let now = now_f64() + *lock(&self.clock_offset);
        let st = lock(&self.state);
        state::info_json(&self.reported(), &st, now)
    }

    /// Makes the device's reported clock run `seconds` ahead (negative: behind) of this machine's.
    pub fn set_clock_offset(&self, seconds: f64) {
        *lock(&self.clock_offset) = seconds;
    }

    /// `GET /data/databases/<id>` document.
    pub fn databases(&self) -> Value {
        let st = lock(&self.state);
        state::databases_json(&self.reported(), &st)
    }

    /// Waits out the slow-answer fault, if any (ends early when the device goes down).
    pub async fn answer_delay(&self) {
        if let Some(d) = self.spec.slow_delay() {
            let token = self.online_token();
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = token.cancelled() => {}
            }
        }
    }

    /// Does not answer while busy (ends when the device stops being busy or goes down, so
    /// servers can shut down).
    pub async fn hang(&self) {
        let token = self.online_token();
        let mut control = self.subscribe();
        loop {
            if !control.borrow_and_update().busy {
                return;
            }
            tokio::select! {
                r = control.changed() => if r.is_err() { return },
                _ = token.cancelled() => return,
            }
        }
    }

    fn online_token(&self) -> CancellationToken {
        lock(&self.online).clone()
    }

    /// The switches now.
    pub fn control(&self) -> Control {
        *self.control.borrow()
    }

    /// Watches the switches.
    pub fn subscribe(&self) -> watch::Receiver<Control> {
        self.control.subscribe()
    }

    /// Unplugs (`true`) or replugs the device.
    pub fn set_offline(&self, offline: bool) {
        self.control.send_modify(|c| c.offline = offline);
    }

    /// Makes `/data/...` hang (`true`) or answer again.
    pub fn set_busy(&self, busy: bool) {
        self.control.send_modify(|c| c.busy = busy);
    }

    /// Holds the device stopped (`true`) or lets its schedule run again.
    pub fn set_held(&self, held: bool) {
        self.control.send_modify(|c| c.held = held);
    }

    /// The fleet-wide stop signal.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Serves the HTTP API whenever the device is online, until the fleet stops. `first` is the
    /// listener bound at start-up (so the fleet is reachable as soon as `start` returns).
    pub(crate) async fn run_http(self: Arc<Self>, mut first: Option<TcpListener>) {
        let mut control = self.subscribe();
        loop {
            // Wait until online.
            loop {
                if self.shutdown.is_cancelled() {
                    return;
                }
                if !control.borrow_and_update().offline {
                    break;
                }
                first = None; // an unplugged device does not keep its socket
                tokio::select! {
                    r = control.changed() => if r.is_err() { return },
                    _ = self.shutdown.cancelled() => return,
                }
            }
            let listener = match first.take() {
                Some(l) => l,
                None => match bind_retrying(self.http_addr, &self.shutdown).await {
                    Some(l) => l,
                    None => return,
                },
            };
            let token = CancellationToken::new();
            *lock(&self.online) = token.clone();
            tracing::debug!(device = %self.name(), addr = %self.http_addr, "device HTTP API up");
            let stop = token.clone();
            let mut watch_offline = self.subscribe();
            let shutdown = self.shutdown.clone();
            let switch = async move {
                loop {
                    if watch_offline.borrow_and_update().offline {
                        break;
                    }
                    tokio::select! {
                        r = watch_offline.changed() => if r.is_err() { break },
                        _ = shutdown.cancelled() => break,
                    }
                }
                stop.cancel();
            };
            let stopped = token.clone();
            let serve = etho_http::serve(
                listener,
                crate::api::router(self.clone()),
                DEVICE_SERVER_LIMITS,
                async move { stopped.cancelled().await },
            );
            let (served, ()) = tokio::join!(serve, switch);
            if let Err(err) = served {
                tracing::warn!(device = %self.name(), "device HTTP server failed: {err}");
            }
            tracing::debug!(device = %self.name(), "device HTTP API down");
        }
    }
}

/// A simulated device bounds its requests like every other server here; the timeout is long
/// enough for a `slow:MS` fault to be slow rather than cut short (the node gives up after 3 s).
const DEVICE_SERVER_LIMITS: etho_http::ServerLimits = etho_http::ServerLimits {
    request_timeout: Duration::from_secs(60),
    body_limit: 64 * 1024,
};

/// Binds `addr`, retrying for a while (a just-closed socket can linger briefly).
async fn bind_retrying(addr: SocketAddr, shutdown: &CancellationToken) -> Option<TcpListener> {
    let mut delay = Duration::from_millis(50);
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return Some(l),
            Err(err) => {
                tracing::warn!("cannot listen on {addr} yet: {err}; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return None,
                }
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}
