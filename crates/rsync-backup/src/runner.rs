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
//!
//! A progress watchdog ([`Limits::stall`]) ends a run that received nothing for that long. rsync's
//! own `--timeout` does not: with the device frozen mid-file (SIGSTOP, a wedged SD card), the
//! keepalives between the node's rsync processes reset it, and the job held a worker until the
//! job timeout. Activity is any output line except a progress redraw that shows no new byte.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
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
    /// Nothing was received for the stall limit; the process group was killed.
    Stalled(Duration),
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

/// When a run must end however it is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The job's wall-clock deadline.
    pub deadline: Instant,
    /// The longest time without a byte received (the progress watchdog); `None`: no watchdog.
    pub stall: Option<Duration>,
}

impl Limits {
    /// A deadline only.
    pub fn deadline(deadline: Instant) -> Limits {
        Limits {
            deadline,
            stall: None,
        }
    }
}

/// Keeps no itemized line.
pub fn keep_none(_: &Itemized) -> bool {
    false
}

/// Runs `program args…` to completion, the deadline, a stall or cancellation. `on_update` is
/// called with the transfer state whenever a line changed something visible; itemized lines for
/// which `keep` is true are returned.
pub async fn run_rsync(
    program: &Path,
    args: &[OsString],
    limits: Limits,
    cancel: &CancellationToken,
    keep: &(dyn Fn(&Itemized) -> bool + Send + Sync),
    on_update: impl FnMut(&TransferState),
) -> std::io::Result<RunResult> {
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let guard = GroupGuard::new(child.id().unwrap_or(0));
    let mut output = Output::new(keep, on_update);
    let end = match pump(&mut child, &mut output, limits, cancel).await? {
        Pumped::Exited(status) => run_end(status),
        Pumped::Stopped(end) => {
            stop_group(&guard, &mut child, end).await;
            end
        }
    };
    // Whatever is left of the group (a straggling ssh) goes with the run.
    guard.finish();
    Ok(output.finish(end, started.elapsed()))
}

/// How [`pump`] returned.
enum Pumped {
    /// rsync exited, and its pipes are drained (or [`DRAIN_AFTER_EXIT`] passed).
    Exited(std::process::ExitStatus),
    /// The deadline passed or the job was cancelled while rsync ran.
    Stopped(RunEnd),
}

/// Reads both pipes into `output` until rsync exited and its pipes are drained, the deadline
/// passes, nothing arrives for the stall limit or `cancel` fires. Both pipes are read at once: a
/// child blocked on a full stderr pipe would never finish its stdout.
async fn pump(
    child: &mut Child,
    output: &mut Output<'_, impl FnMut(&TransferState)>,
    limits: Limits,
    cancel: &CancellationToken,
) -> std::io::Result<Pumped> {
    let deadline = limits.deadline;
    let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
    let mut out_buf = vec![0u8; 16 * 1024];
    let mut err_buf = vec![0u8; 4 * 1024];
    let mut exit: Option<(std::process::ExitStatus, tokio::time::Instant)> = None;
    let deadline_tokio = tokio::time::Instant::from_std(deadline);
    loop {
        if let Some((status, drain_until)) = exit {
            let drained = stdout.is_none() && stderr.is_none();
            if drained || tokio::time::Instant::now() >= drain_until {
                return Ok(Pumped::Exited(status));
            }
        }
        tokio::select! {
            n = read_some(&mut stdout, &mut out_buf) => match n {
                Some(n) => output.stdout(&out_buf[..n]),
                None => {
                    output.stdout_closed();
                    stdout = None;
                }
            },
            n = read_some(&mut stderr, &mut err_buf) => match n {
                Some(n) => output.stderr(&err_buf[..n]),
                None => {
                    output.stderr_closed();
                    stderr = None;
                }
            },
            status = child.wait(), if exit.is_none() => {
                exit = Some((status?, tokio::time::Instant::now() + DRAIN_AFTER_EXIT));
            },
            _ = tokio::time::sleep_until(exit.map_or(deadline_tokio, |(_, until)| until)), if exit.is_some() => {},
            _ = cancel.cancelled(), if exit.is_none() => {
                return Ok(Pumped::Stopped(cancelled_end(deadline, Instant::now())));
            },
            _ = tokio::time::sleep_until(deadline_tokio), if exit.is_none() => {
                return Ok(Pumped::Stopped(RunEnd::TimedOut));
            },
            _ = stall_timer(limits.stall, output.last_activity), if exit.is_none() => {
                if let Some(stall) = limits.stall {
                    return Ok(Pumped::Stopped(RunEnd::Stalled(stall)));
                }
            },
        }
    }
}

/// Fires once `stall` passed since `last_activity` (never without a stall limit).
async fn stall_timer(stall: Option<Duration>, last_activity: Instant) {
    match stall {
        Some(stall) => tokio::time::sleep_until((last_activity + stall).into()).await,
        None => std::future::pending().await,
    }
}

/// Whether an output line shows the transfer moving: anything but a progress redraw whose byte
/// count did not grow (`bytes_before` is the count before the line).
fn is_activity(line: &OutputLine, bytes_before: u64) -> bool {
    match line {
        OutputLine::Progress(p) => p.bytes > bytes_before,
        _ => true,
    }
}

/// What a cancellation means: the scheduler cancels a job at its deadline, and that is a
/// timeout, not a stop.
fn cancelled_end(deadline: Instant, now: Instant) -> RunEnd {
    if now >= deadline {
        RunEnd::TimedOut
    } else {
        RunEnd::Cancelled
    }
}

/// How long a stopped rsync gets between SIGTERM and SIGKILL: a cancelled job (the daemon shuts
/// down) gets at most a second.
fn term_grace(end: RunEnd) -> Duration {
    if end == RunEnd::Cancelled {
        TERM_GRACE.min(Duration::from_secs(1))
    } else {
        TERM_GRACE
    }
}

/// Stops the process group: SIGTERM first, so rsync moves the file it was receiving into the
/// partial dir and the next cycle resumes it, then SIGKILL after [`term_grace`].
async fn stop_group(guard: &GroupGuard, child: &mut Child, end: RunEnd) {
    guard.signal(Signal::SIGTERM);
    if tokio::time::timeout(term_grace(end), child.wait())
        .await
        .is_err()
    {
        guard.signal(Signal::SIGKILL);
        let _ = child.wait().await;
    }
}

/// How an exited rsync ended.
fn run_end(status: std::process::ExitStatus) -> RunEnd {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => RunEnd::Exited(code),
        (None, Some(sig)) => RunEnd::Signalled(sig),
        (None, None) => RunEnd::Signalled(0),
    }
}

/// What a run read so far: rsync's output parsed into the transfer state, the kept itemized
/// lines, the stderr tail.
struct Output<'k, F> {
    state: TransferState,
    /// When the last sign of progress arrived (see [`is_activity`]).
    last_activity: Instant,
    items: Vec<Itemized>,
    keep: &'k (dyn Fn(&Itemized) -> bool + Send + Sync),
    on_update: F,
    out_split: LineSplitter,
    err_split: LineSplitter,
    err_tail: Vec<String>,
}

impl<'k, F: FnMut(&TransferState)> Output<'k, F> {
    fn new(keep: &'k (dyn Fn(&Itemized) -> bool + Send + Sync), on_update: F) -> Self {
        Output {
            state: TransferState::default(),
            last_activity: Instant::now(),
            items: Vec::new(),
            keep,
            on_update,
            out_split: LineSplitter::default(),
            err_split: LineSplitter::default(),
            err_tail: Vec::new(),
        }
    }

    fn stdout(&mut self, chunk: &[u8]) {
        for line in self.out_split.push(chunk) {
            tracing::trace!("rsync: {line}");
            self.stdout_line(&line, true);
        }
    }

    /// The last, unterminated line (no update: the run is ending).
    fn stdout_closed(&mut self) {
        if let Some(line) = self.out_split.finish() {
            self.stdout_line(&line, false);
        }
    }

    fn stdout_line(&mut self, line: &str, notify: bool) {
        let parsed = parse_line(line);
        if is_activity(&parsed, self.state.bytes_transferred) {
            self.last_activity = Instant::now();
        }
        if self.state.apply(&parsed) && notify {
            (self.on_update)(&self.state);
        }
        if let OutputLine::Item(item) = parsed {
            if self.items.len() < MAX_ITEMS && (self.keep)(&item) {
                self.items.push(item);
            }
        }
    }

    fn stderr(&mut self, chunk: &[u8]) {
        for line in self.err_split.push(chunk) {
            self.stderr_line(line);
        }
    }

    fn stderr_closed(&mut self) {
        if let Some(line) = self.err_split.finish() {
            self.stderr_line(line);
        }
    }

    fn stderr_line(&mut self, line: String) {
        tracing::debug!("rsync stderr: {line}");
        self.last_activity = Instant::now();
        self.err_tail.push(line);
        if self.err_tail.len() > STDERR_TAIL {
            self.err_tail.remove(0);
        }
    }

    fn finish(self, end: RunEnd, elapsed: Duration) -> RunResult {
        RunResult {
            end,
            state: self.state,
            stderr: self.err_tail,
            elapsed,
            items: self.items,
        }
    }
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

    /// Runs `sh -c script`, keeping no itemized line.
    async fn run_sh(script: &str, deadline: Instant, cancel: &CancellationToken) -> RunResult {
        run_sh_limits(script, Limits::deadline(deadline), cancel).await
    }

    async fn run_sh_limits(script: &str, limits: Limits, cancel: &CancellationToken) -> RunResult {
        run_rsync(
            Path::new("/bin/sh"),
            &sh(script),
            limits,
            cancel,
            &keep_none,
            |_| {},
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn reads_both_pipes_and_exit_code() {
        let cancel = CancellationToken::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut updates = 0;
        let r = run_rsync(
            Path::new("/bin/sh"),
            &sh("printf '>f+++++++++ 5 a.txt\\r 5 100%%  1.00kB/s 0:00:00 (xfr#1, to-chk=0/2)\\n'; echo 'rsync: boom' >&2; exit 23"),
            Limits::deadline(deadline),
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
        let r = run_sh(
            &script,
            Instant::now() + Duration::from_millis(500),
            &cancel,
        )
        .await;
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
        let r = run_sh("exec sleep 300", Instant::now(), &cancel).await;
        assert_eq!(r.end, RunEnd::TimedOut);
    }

    #[test]
    fn stop_decisions() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        assert_eq!(cancelled_end(later, now), RunEnd::Cancelled);
        assert_eq!(cancelled_end(now, now), RunEnd::TimedOut);
        assert_eq!(cancelled_end(now, later), RunEnd::TimedOut);
        assert_eq!(term_grace(RunEnd::Cancelled), Duration::from_secs(1));
        assert_eq!(term_grace(RunEnd::TimedOut), TERM_GRACE);
    }

    #[tokio::test]
    async fn cancel_stops_promptly() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let started = Instant::now();
        let r = run_sh(
            "exec sleep 300",
            Instant::now() + Duration::from_secs(300),
            &cancel,
        )
        .await;
        assert_eq!(r.end, RunEnd::Cancelled);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// A run that receives nothing for the stall limit is stopped; one that keeps receiving
    /// bytes is not, and progress redraws without new bytes do not count.
    #[tokio::test]
    async fn the_watchdog_stops_a_stalled_run_only() {
        let cancel = CancellationToken::new();
        let limits = Limits {
            deadline: Instant::now() + Duration::from_secs(60),
            stall: Some(Duration::from_millis(600)),
        };
        let started = Instant::now();
        // Progress redraws with the same byte count, forever: stalled.
        let r = run_sh_limits(
            "while :; do printf '      1,000  10%%  1.00kB/s    0:00:09  \\r'; sleep 0.1; done",
            limits,
            &cancel,
        )
        .await;
        assert_eq!(r.end, RunEnd::Stalled(Duration::from_millis(600)));
        assert!(started.elapsed() < Duration::from_secs(5));
        // Growing bytes every 0.2 s for 2 s: never stalled.
        let r = run_sh_limits(
            "i=0; while [ $i -lt 10 ]; do i=$((i+1)); printf \"   ${i}000  10%%  1.00kB/s    0:00:09  \\r\"; sleep 0.2; done",
            limits,
            &cancel,
        )
        .await;
        assert_eq!(r.end, RunEnd::Exited(0));
    }

    #[test]
    fn activity_table() {
        let progress = |bytes| {
            OutputLine::Progress(crate::parse::ProgressLine {
                bytes,
                percent: 10,
                speed: "1.00kB/s".into(),
                time: "0:00:09".into(),
                files: None,
                to_check: None,
                incomplete_list: false,
            })
        };
        assert!(is_activity(&progress(10), 5));
        assert!(!is_activity(&progress(5), 5));
        assert!(is_activity(
            &OutputLine::Other("receiving incremental file list".into()),
            5
        ));
    }
}
