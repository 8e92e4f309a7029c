//! Running one rsync process: its own process group, both pipes read at once, and a sure kill.
//!
//! rsync over ssh is a tree of processes (rsync, its forked receiver, ssh). Upstream killed none
//! of them, so a hung transfer outlived its job and a restart orphaned them (reference §8.23,
//! §8.26). Here rsync leads a new process group and every way out of [`run_rsync`] ends that
//! group: normal exit (stragglers such as ssh), cancellation and the wall-clock deadline (SIGTERM
//! so rsync can keep its partial file, then SIGKILL after a grace period), and dropping the
//! future (SIGKILL from [`GroupGuard`]'s `Drop`). A daemon that is itself SIGKILLed cannot kill
//! anything, and its rsync would go on writing into the staging directory next to the one a
//! restarted daemon starts; [`kill_strays`] ends such leftovers before a new run.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::parse::{parse_line, Itemized, LineSplitter, OutputLine, TransferState};

/// stderr lines kept for the error message.
const STDERR_TAIL: usize = 40;

/// Most itemized lines kept from one run (a hostile tree could list millions of files).
pub const MAX_ITEMS: usize = 200_000;

/// How long rsync gets after SIGTERM to save its partial file before SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(3);

/// How long to keep reading pipes after rsync exited (a straggling ssh may hold them open).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// rsync exited with this code.
    Exited(i32),
    /// rsync was killed by a signal we did not send.
    Signalled(i32),
    /// The wall-clock deadline passed; the process group was killed.
    TimedOut,
    /// The job was cancelled; the process group was killed.
    Cancelled,
}

/// What one rsync run did.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// How it ended.
    pub end: RunEnd,
    /// What it transferred (parsed from stdout).
    pub state: TransferState,
    /// The last stderr lines.
    pub stderr: Vec<String>,
    /// Wall-clock duration.
    pub elapsed: Duration,
    /// The itemized lines the caller asked to keep (at most [`MAX_ITEMS`]).
    pub items: Vec<Itemized>,
}

/// Sends SIGKILL to a process group when dropped, unless disarmed.
#[derive(Debug)]
pub struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    /// Guards the group led by `pid`.
    pub fn new(pid: u32) -> GroupGuard {
        GroupGuard {
            pgid: i32::try_from(pid).ok().map(Pid::from_raw),
        }
    }

    /// Sends `signal` to the whole group; a group that is already gone is fine.
    pub fn signal(&self, signal: Signal) {
        if let Some(pgid) = self.pgid {
            let _ = killpg(pgid, signal);
        }
    }

    /// Kills whatever is left of the group and stops guarding it.
    pub fn finish(mut self) {
        self.signal(Signal::SIGKILL);
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

/// Kills processes left over from a previous daemon instance that still write into `dest`:
/// every process (other than this one and its group) with an argument exactly equal to `dest`,
/// with its whole process group when it leads one (as [`run_rsync`] makes rsync do). The
/// scheduler never runs two jobs for one device, so anything found is an orphan. Returns the
/// pids signalled. Linux only (reads `/proc`); elsewhere it finds nothing.
pub fn kill_strays(dest: &std::ffi::OsStr) -> Vec<i32> {
    use std::os::unix::ffi::OsStrExt;
    let own = std::process::id() as i32;
    let own_group = nix::unistd::getpgrp().as_raw();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut killed = Vec::new();
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == own {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if !cmdline.split(|&b| b == 0).any(|arg| arg == dest.as_bytes()) {
            continue;
        }
        let pid = Pid::from_raw(pid);
        let group = nix::unistd::getpgid(Some(pid)).ok();
        tracing::warn!(
            "killing stray process {pid} still writing into {} (left by a previous run)",
            dest.to_string_lossy()
        );
        match group {
            Some(g) if g == pid && g.as_raw() != own_group => {
                let _ = killpg(g, Signal::SIGKILL);
            }
            _ => {
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            }
        }
        killed.push(pid.as_raw());
    }
    killed
}

/// Keeps no itemized line.
pub fn keep_none(_: &Itemized) -> bool {
    false
}

/// Runs `program args…` to completion, the deadline or cancellation. `on_update` is called with
/// the transfer state whenever a line changed something visible; itemized lines for which `keep`
/// is true are returned.
pub async fn run_rsync(
    program: &Path,
    args: &[OsString],
    deadline: Instant,
    cancel: &CancellationToken,
    keep: &(dyn Fn(&Itemized) -> bool + Send + Sync),
    mut on_update: impl FnMut(&TransferState),
) -> std::io::Result<RunResult> {
    let started = Instant::now();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let guard = GroupGuard::new(child.id().unwrap_or(0));
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();

    let mut state = TransferState::default();
    let mut items: Vec<Itemized> = Vec::new();
    let mut out_split = LineSplitter::default();
    let mut err_split = LineSplitter::default();
    let mut err_tail: Vec<String> = Vec::new();
    let push_err = |line: String, tail: &mut Vec<String>| {
        tracing::debug!("rsync stderr: {line}");
        tail.push(line);
        if tail.len() > STDERR_TAIL {
            tail.remove(0);
        }
    };
    let mut out_buf = vec![0u8; 16 * 1024];
    let mut err_buf = vec![0u8; 4 * 1024];
    let mut exit: Option<std::process::ExitStatus> = None;
    let mut stop: Option<RunEnd> = None;
    let mut drain_until: Option<tokio::time::Instant> = None;
    let deadline_tokio = tokio::time::Instant::from_std(deadline);

    while stdout.is_some() || stderr.is_some() || exit.is_none() {
        if let (Some(_), Some(until)) = (exit, drain_until) {
            if tokio::time::Instant::now() >= until {
                break;
            }
        }
        tokio::select! {
            n = read_some(&mut stdout, &mut out_buf) => match n {
                Some(n) => {
                    for line in out_split.push(&out_buf[..n]) {
                        tracing::trace!("rsync: {line}");
                        let parsed = parse_line(&line);
                        if state.apply(&parsed) {
                            on_update(&state);
                        }
                        if let OutputLine::Item(item) = parsed {
                            if items.len() < MAX_ITEMS && keep(&item) {
                                items.push(item);
                            }
                        }
                    }
                }
                None => {
                    if let Some(line) = out_split.finish() {
                        let parsed = parse_line(&line);
                        state.apply(&parsed);
                        if let OutputLine::Item(item) = parsed {
                            if items.len() < MAX_ITEMS && keep(&item) {
                                items.push(item);
                            }
                        }
                    }
                    stdout = None;
                }
            },
            n = read_some(&mut stderr, &mut err_buf) => match n {
                Some(n) => {
                    for line in err_split.push(&err_buf[..n]) {
                        push_err(line, &mut err_tail);
                    }
                }
                None => {
                    if let Some(line) = err_split.finish() {
                        push_err(line, &mut err_tail);
                    }
                    stderr = None;
                }
            },
            status = child.wait(), if exit.is_none() => {
                exit = Some(status?);
                drain_until = Some(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
            },
            _ = tokio::time::sleep_until(drain_until.unwrap_or(deadline_tokio)), if exit.is_some() => {
                break;
            },
            _ = cancel.cancelled(), if stop.is_none() && exit.is_none() => {
                // The scheduler cancels a job at its deadline: that is a timeout, not a stop.
                stop = Some(if Instant::now() >= deadline {
                    RunEnd::TimedOut
                } else {
                    RunEnd::Cancelled
                });
                break;
            },
            _ = tokio::time::sleep_until(deadline_tokio), if stop.is_none() && exit.is_none() => {
                stop = Some(RunEnd::TimedOut);
                break;
            },
        }
    }

    if let Some(end) = stop {
        // Ask politely first: rsync moves the file it was receiving into the partial dir, so the
        // next cycle resumes it.
        guard.signal(Signal::SIGTERM);
        let grace = if end == RunEnd::Cancelled {
            TERM_GRACE.min(Duration::from_secs(1))
        } else {
            TERM_GRACE
        };
        if tokio::time::timeout(grace, child.wait()).await.is_err() {
            guard.signal(Signal::SIGKILL);
            let _ = child.wait().await;
        }
        guard.finish();
        return Ok(RunResult {
            end,
            state,
            stderr: err_tail,
            elapsed: started.elapsed(),
            items,
        });
    }
    guard.finish();
    let status = match exit {
        Some(s) => s,
        None => child.wait().await?,
    };
    use std::os::unix::process::ExitStatusExt;
    let end = match (status.code(), status.signal()) {
        (Some(code), _) => RunEnd::Exited(code),
        (None, Some(sig)) => RunEnd::Signalled(sig),
        (None, None) => RunEnd::Signalled(0),
    };
    Ok(RunResult {
        end,
        state,
        stderr: err_tail,
        elapsed: started.elapsed(),
        items,
    })
}

/// Reads from an optional pipe; pends forever once the pipe is closed, so `select!` ignores it.
async fn read_some<R: tokio::io::AsyncRead + Unpin>(
    pipe: &mut Option<R>,
    buf: &mut [u8],
) -> Option<usize> {
    match pipe {
        Some(p) => match p.read(buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(n),
        },
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<OsString> {
        vec!["-c".into(), script.into()]
    }

    #[tokio::test]
    async fn reads_both_pipes_and_exit_code() {
        let cancel = CancellationToken::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut updates = 0;
        let r = run_rsync(
            Path::new("/bin/sh"),
            &sh("printf '>f+++++++++ 5 a.txt\\r 5 100%%  1.00kB/s 0:00:00 (xfr#1, to-chk=0/2)\\n'; echo 'rsync: boom' >&2; exit 23"),
            deadline,
            &cancel,
            &|i: &Itemized| i.is_received_file(),
            |_| updates += 1,
        )
        .await
        .unwrap();
        assert_eq!(r.end, RunEnd::Exited(23));
        assert_eq!(r.state.files_transferred, 1);
        assert_eq!(r.state.current_file.as_deref(), Some("a.txt"));
        assert_eq!(r.stderr, vec!["rsync: boom"]);
        assert_eq!(updates, 2);
        assert_eq!(r.items.len(), 1);
        assert_eq!(r.items[0].name, "a.txt");
    }

    #[tokio::test]
    async fn deadline_kills_the_whole_group() {
        let cancel = CancellationToken::new();
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        // A grandchild that ignores SIGTERM, like a wedged ssh.
        let script = format!(
            "sh -c 'trap \"\" TERM; echo $$ > {}; exec sleep 300' & wait",
            pidfile.display()
        );
        let started = Instant::now();
        let r = run_rsync(
            Path::new("/bin/sh"),
            &sh(&script),
            Instant::now() + Duration::from_millis(500),
            &cancel,
            &keep_none,
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(r.end, RunEnd::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(10));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild is gone (or a zombie about to be reaped by init).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit(')').next().unwrap_or("").trim().chars().next();
            if stat.is_empty() || state == Some('Z') {
                break;
            }
            assert!(Instant::now() < deadline, "grandchild {pid} survived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The scheduler cancels a job at its deadline: whichever the runner sees first, the run
    /// timed out.
    #[tokio::test]
    async fn cancel_at_the_deadline_is_a_timeout() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let r = run_rsync(
            Path::new("/bin/sh"),
            &sh("exec sleep 300"),
            Instant::now(),
            &cancel,
            &keep_none,
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(r.end, RunEnd::TimedOut);
    }

    #[tokio::test]
    async fn cancel_stops_promptly() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let started = Instant::now();
        let r = run_rsync(
            Path::new("/bin/sh"),
            &sh("exec sleep 300"),
            Instant::now() + Duration::from_secs(300),
            &cancel,
            &keep_none,
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(r.end, RunEnd::Cancelled);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
