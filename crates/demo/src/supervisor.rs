//! Child processes of the demo: started with their logs in files, waited for until they answer,
//! watched for exits, stopped gracefully.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reqwest::Url;
use tokio::process::{Child, Command};

use crate::services::ServiceSpec;

/// How long a service may take to answer after it started.
pub const READY_WITHIN: Duration = Duration::from_secs(30);
/// Pause between two readiness checks.
const READY_POLL: Duration = Duration::from_millis(100);
/// Lines of a log shown when its service fails.
const TAIL_LINES: usize = 10;

/// Why a service could not be started or kept running.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// Its log file could not be created, or the process not started.
    #[error("cannot start etho-backup {name}")]
    Spawn {
        /// The service.
        name: &'static str,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// Its readiness URL is not a URL (a bug in the wiring).
    #[error("etho-backup {name}: invalid readiness URL {url:?}")]
    BadUrl {
        /// The service.
        name: &'static str,
        /// The URL.
        url: String,
    },
    /// It exited before (or after) it answered.
    #[error(transparent)]
    Exited(#[from] Exited),
    /// It did not answer in time.
    #[error("etho-backup {name} did not answer on {url} within {} s", within.as_secs())]
    NotReady {
        /// The service.
        name: &'static str,
        /// Its readiness URL.
        url: String,
        /// The time it had.
        within: Duration,
    },
}

/// A service that exited, with the end of its log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("etho-backup {name} exited ({status}); last log lines:\n{log_tail}")]
pub struct Exited {
    /// The service.
    pub name: &'static str,
    /// How it ended.
    pub status: ExitStatus,
    /// The last lines of its log.
    pub log_tail: String,
}

struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn exited(&mut self) -> Option<Exited> {
        let status = self.child.try_wait().ok().flatten()?;
        Some(Exited {
            name: self.name,
            status,
            log_tail: log_tail(&self.log),
        })
    }

    /// SIGTERM, then SIGKILL after `grace`.
    async fn stop(mut self, grace: Duration) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The last [`TAIL_LINES`] lines of a log (empty when it cannot be read).
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// The demo's running services. Every child is killed if the supervisor is dropped without
/// [`Supervisor::stop_all`].
pub struct Supervisor {
    program: PathBuf,
    logs: PathBuf,
    ready_within: Duration,
    http: reqwest::Client,
    procs: Vec<Proc>,
}

impl Supervisor {
    /// Services are `program <args>`, each logging to `<logs>/<name>.log`.
    pub fn new(program: PathBuf, logs: PathBuf) -> Result<Supervisor, reqwest::Error> {
        Ok(Supervisor {
            program,
            logs,
            ready_within: READY_WITHIN,
            http: etho_http::client(Duration::from_secs(2))?,
            procs: Vec::new(),
        })
    }

    /// The same supervisor with another readiness limit.
    pub fn with_ready_within(mut self, limit: Duration) -> Supervisor {
        self.ready_within = limit;
        self
    }

    /// The services started so far.
    pub fn names(&self) -> Vec<&'static str> {
        self.procs.iter().map(|p| p.name).collect()
    }

    /// Starts a service and waits until its readiness URL answers 2xx; fails early, with the
    /// end of its log, if it exits first.
    pub async fn start(&mut self, spec: &ServiceSpec) -> Result<(), SuperviseError> {
        let name = spec.name;
        let url = Url::parse(&spec.ready_url).map_err(|_| SuperviseError::BadUrl {
            name,
            url: spec.ready_url.clone(),
        })?;
        let spawn_err = |source| SuperviseError::Spawn { name, source };
        let log = self.logs.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).map_err(spawn_err)?;
        let err = out.try_clone().map_err(spawn_err)?;
        let child = Command::new(&self.program)
            .args(&spec.args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn_err)?;
        self.procs.push(Proc { name, child, log });
        self.wait_ready(&url).await
    }

    async fn wait_ready(&mut self, url: &Url) -> Result<(), SuperviseError> {
        let deadline = Instant::now() + self.ready_within;
        let Some(proc) = self.procs.last_mut() else {
            return Ok(());
        };
        loop {
            if let Some(exited) = proc.exited() {
                return Err(exited.into());
            }
            let answer = etho_http::fetch_bytes(&self.http, url, 1 << 20, READY_POLL * 10).await;
            if answer.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(SuperviseError::NotReady {
                    name: proc.name,
                    url: url.to_string(),
                    within: self.ready_within,
                });
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// The first service found to have exited, if any.
    pub fn exited(&mut self) -> Option<Exited> {
        self.procs.iter_mut().find_map(Proc::exited)
    }

    /// Stops every service: SIGTERM, then SIGKILL after `grace` each.
    pub async fn stop_all(self, grace: Duration) {
        for p in self.procs {
            p.stop(grace).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An HTTP server on 127.0.0.1 answering 200 on every path, for the test's lifetime.
    async fn ready_server() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(|| async { "ok" });
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/healthz")
    }

    fn closed_url() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        format!("http://{addr}/healthz")
    }

    fn sh(name: &'static str, script: &str, ready_url: String) -> ServiceSpec {
        ServiceSpec {
            name,
            args: vec!["-c".into(), script.into()],
            ready_url,
        }
    }

    fn supervisor(logs: &Path) -> Supervisor {
        Supervisor::new(PathBuf::from("/bin/sh"), logs.to_path_buf()).unwrap()
    }

    #[tokio::test]
    async fn a_service_that_answers_is_started_and_stopped() {
        let logs = tempfile::tempdir().unwrap();
        let mut sup = supervisor(logs.path());
        let spec = sh("node", "echo started; exec sleep 60", ready_server().await);
        sup.start(&spec).await.unwrap();
        assert_eq!(sup.names(), ["node"]);
        assert_eq!(sup.exited(), None);
        let pid = sup.procs[0].child.id().unwrap();
        // The readiness probe is a separate server, so the shell may not have run `echo` yet.
        let log_path = logs.path().join("node.log");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .is_empty()
        {
            assert!(Instant::now() < deadline, "the service never wrote its log");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let started = Instant::now();
        sup.stop_all(Duration::from_secs(10)).await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "SIGTERM was enough"
        );
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok();
        assert!(!alive, "the child is gone");
        let log = std::fs::read_to_string(logs.path().join("node.log")).unwrap();
        assert_eq!(log, "started\n", "output goes to the service's log");
    }

    #[tokio::test]
    async fn a_service_that_exits_fails_the_start_with_its_log() {
        let logs = tempfile::tempdir().unwrap();
        let mut sup = supervisor(logs.path());
        let spec = sh("mysql-backup", "echo 'cannot listen'; exit 3", closed_url());
        let err = sup.start(&spec).await.unwrap_err();
        let SuperviseError::Exited(exited) = &err else {
            panic!("{err}")
        };
        assert_eq!(exited.name, "mysql-backup");
        assert_eq!(exited.status.code(), Some(3));
        assert_eq!(exited.log_tail, "cannot listen");
        assert!(
            err.to_string().contains("last log lines:\ncannot listen"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_silent_service_times_out_and_a_dead_one_is_noticed() {
        let logs = tempfile::tempdir().unwrap();
        let mut sup = supervisor(logs.path()).with_ready_within(Duration::from_millis(300));
        let err = sup
            .start(&sh("node", "exec sleep 60", closed_url()))
            .await
            .unwrap_err();
        assert!(
            matches!(err, SuperviseError::NotReady { name: "node", .. }),
            "{err}"
        );
        // A service that answered, then died, is reported by `exited`.
        let mut sup = supervisor(logs.path());
        let spec = sh("rsync-backup", "exec sleep 60", ready_server().await);
        sup.start(&spec).await.unwrap();
        let pid = sup.procs[0].child.id().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let _ = sup.procs[0].child.wait().await;
        let exited = sup.exited().expect("the death is noticed");
        assert_eq!(exited.name, "rsync-backup");
        sup.stop_all(Duration::from_secs(1)).await;
    }
}
