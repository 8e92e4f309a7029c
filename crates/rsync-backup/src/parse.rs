//! Pure parsing of rsync's output, tested on captured output.
//!
//! The engine runs rsync with `--out-format='%i %l %n'` (itemized changes, length, name),
//! `--info=progress2` (whole-transfer progress, redrawn with `\r`), `-v` (so unsafe symlinks the
//! device offered are reported) and `--stats`. Upstream split lines on `\n` only in spirit and
//! counted every line containing a `/` as a file, including directories, progress redraws and
//! error footers (reference §1.6); here a line is classified exactly once:
//!
//! - [`LineSplitter`] cuts the byte stream on `\r` and `\n`;
//! - [`parse_line`] turns one line into an [`OutputLine`];
//! - [`TransferState`] accumulates them into what `progress` shows;
//! - [`classify_exit`] and [`error_summary`] turn the exit code and stderr into an outcome.

use std::sync::OnceLock;

use regex::Regex;

/// Cuts a byte stream into lines on `\r` and `\n`, dropping empty lines. Invalid UTF-8 (rsync
/// prints raw bytes of odd file names) is replaced, as these lines are only shown, never used as
/// paths.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

/// Longest line kept; rsync's lines are short, so anything longer is junk and is cut.
const MAX_LINE: usize = 16 * 1024;

impl LineSplitter {
    /// Feeds a chunk; returns the lines it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &b in chunk {
            if b == b'\n' || b == b'\r' {
                self.take_line(&mut lines);
            } else if self.pending.len() < MAX_LINE {
                self.pending.push(b);
            }
        }
        lines
    }

    /// The last, unterminated line, if any.
    pub fn finish(&mut self) -> Option<String> {
        let mut lines = Vec::new();
        self.take_line(&mut lines);
        lines.pop()
    }

    fn take_line(&mut self, lines: &mut Vec<String>) {
        let line = String::from_utf8_lossy(&self.pending);
        let trimmed = line.trim();
        if !trimmed.is_empty() {
            lines.push(trimmed.to_string());
        }
        self.pending.clear();
    }
}

/// An itemized change (`%i %l %n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Itemized {
    /// The 11-character change string, e.g. `>f+++++++++`.
    pub changes: String,
    /// File length in bytes.
    pub length: u64,
    /// Path relative to the transfer root; directories end with `/`.
    pub name: String,
}

impl Itemized {
    /// A regular file whose data was received.
    pub fn is_received_file(&self) -> bool {
        self.changes.starts_with(">f")
    }

    /// A directory entry.
    pub fn is_dir(&self) -> bool {
        self.changes.as_bytes().get(1) == Some(&b'd')
    }
}

/// One `--info=progress2` redraw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressLine {
    /// Bytes transferred so far in this run.
    pub bytes: u64,
    /// Percent of the (known part of the) file list done.
    pub percent: u8,
    /// Current speed as rsync prints it, e.g. `12.34MB/s`.
    pub speed: String,
    /// Remaining (or, on the final line, elapsed) time `h:mm:ss`.
    pub time: String,
    /// Files transferred so far (`xfr#N`), on lines printed at the end of a file.
    pub files: Option<u64>,
    /// Entries still to check and total entries (`to-chk=`/`ir-chk=`).
    pub to_check: Option<(u64, u64)>,
    /// True while the file list is still being received (`ir-chk`): the percentage covers only
    /// the part known so far.
    pub incomplete_list: bool,
}

/// Totals from `--stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    /// `Number of regular files transferred: N`.
    FilesTransferred(u64),
    /// `Total transferred file size: N bytes`.
    TransferredSize(u64),
    /// `Total file size: N bytes` (the device's whole tree).
    TotalSize(u64),
    /// `Number of files: N (reg: R, ...)`: regular files in the device's tree.
    RegularFiles(u64),
}

/// A classified line of rsync's stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputLine {
    /// A change rsync made (file received, directory created, link created, ...).
    Item(Itemized),
    /// A progress redraw.
    Progress(ProgressLine),
    /// A `--stats` total.
    Stat(Stat),
    /// The device offered a symlink pointing outside its tree, and rsync left it out.
    UnsafeSymlink(String),
    /// A device entry that is neither file, directory nor symlink, left out.
    NonRegular(String),
    /// Anything else (headers, summary lines, messages).
    Other(String),
}

fn item_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^([<>ch.][fdLDS][.+ ?a-zA-Z]{9}) ([0-9][0-9,]*) (.+)$").expect("valid regex")
    })
}

fn progress_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"^([0-9][0-9,.]*)\s+([0-9]{1,3})%\s+(\S+/s)\s+([0-9]+:[0-9]{2}:[0-9]{2})(?:\s+\(xfr#([0-9]+),\s*(ir|to)-chk=([0-9]+)/([0-9]+)\))?$",
        )
        .expect("valid regex")
    })
}

fn number(s: &str) -> Option<u64> {
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn quoted(line: &str) -> String {
    line.split('"').nth(1).unwrap_or(line).to_string()
}

/// Undoes rsync's escaping of file names in its output: with `LC_ALL=C` every byte that is not
/// printable ASCII is written as `\#ooo` (octal). Names that are not UTF-8 come out lossy (and
/// then match no file, which the engine reports rather than guesses).
pub fn unescape_name(printed: &str) -> String {
    let b = printed.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 2..i + 5)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], b.get(i + 1), octal) {
            (b'\\', Some(b'#'), Some(d)) => {
                let v = u32::from(d[0] - b'0') * 64
                    + u32::from(d[1] - b'0') * 8
                    + u32::from(d[2] - b'0');
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 5;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Classifies one line (already split and trimmed) of rsync's stdout.
pub fn parse_line(line: &str) -> OutputLine {
    if let Some(c) = item_re().captures(line) {
        if let Some(length) = number(&c[2]) {
            return OutputLine::Item(Itemized {
                changes: c[1].to_string(),
                length,
                name: unescape_name(&c[3]),
            });
        }
    }
    if let Some(c) = progress_re().captures(line) {
        let to_check = match (c.get(7), c.get(8)) {
            (Some(a), Some(b)) => number(a.as_str()).zip(number(b.as_str())),
            _ => None,
        };
        return OutputLine::Progress(ProgressLine {
            bytes: number(&c[1]).unwrap_or(0),
            percent: c[2].parse::<u8>().unwrap_or(0).min(100),
            speed: c[3].to_string(),
            time: c[4].to_string(),
            files: c.get(5).and_then(|m| number(m.as_str())),
            to_check,
            incomplete_list: c.get(6).is_some_and(|m| m.as_str() == "ir"),
        });
    }
    let stat = |prefix: &str| line.strip_prefix(prefix).map(str::trim);
    if let Some(v) = stat("Number of regular files transferred:") {
        if let Some(n) = number(v) {
            return OutputLine::Stat(Stat::FilesTransferred(n));
        }
    }
    if let Some(v) = stat("Total transferred file size:") {
        if let Some(n) = number(v) {
            return OutputLine::Stat(Stat::TransferredSize(n));
        }
    }
    if let Some(v) = stat("Total file size:") {
        if let Some(n) = number(v) {
            return OutputLine::Stat(Stat::TotalSize(n));
        }
    }
    if let Some(v) = stat("Number of files:") {
        // `9 (reg: 3, dir: 3, link: 3)`; a tree of only directories has no `reg:`.
        let reg = v
            .split_once("reg:")
            .map(|(_, r)| r.split([',', ')']).next().unwrap_or(""))
            .and_then(number)
            .unwrap_or(0);
        return OutputLine::Stat(Stat::RegularFiles(reg));
    }
    if line.starts_with("ignoring unsafe symlink") {
        return OutputLine::UnsafeSymlink(quoted(line));
    }
    if line.starts_with("skipping non-regular file") {
        return OutputLine::NonRegular(quoted(line));
    }
    OutputLine::Other(line.to_string())
}

/// What a run has done so far, as shown in `progress` while it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransferState {
    /// Regular files received.
    pub files_transferred: u64,
    /// Bytes of file data received, from the progress lines (or the stats at the end).
    pub bytes_transferred: u64,
    /// Overall percent from the last progress line.
    pub percent: u8,
    /// Speed from the last progress line.
    pub speed: String,
    /// Time column of the last progress line.
    pub time: String,
    /// The file being received (the last itemized regular file).
    pub current_file: Option<String>,
    /// Directories created.
    pub dirs_created: u64,
    /// Symlinks created.
    pub links_created: u64,
    /// Symlinks the device offered that point out of its tree (not copied).
    pub unsafe_symlinks: Vec<String>,
    /// Special files the device offered (not copied).
    pub non_regular: Vec<String>,
    /// Regular files in the device's tree (`--stats`).
    pub source_files: Option<u64>,
    /// Size of the device's tree (`--stats`).
    pub source_bytes: Option<u64>,
    /// Whether the file list was complete at the last progress line.
    pub list_complete: bool,
}

/// Most names kept in the lists of skipped entries (a hostile tree could hold millions).
const MAX_NAMES: usize = 20;

impl TransferState {
    /// Applies one classified line. Returns true when something visible changed (a new file or
    /// a progress redraw), so callers can decide when to publish.
    pub fn apply(&mut self, line: &OutputLine) -> bool {
        match line {
            OutputLine::Item(item) => {
                if item.is_received_file() {
                    self.files_transferred += 1;
                    self.current_file = Some(item.name.clone());
                    return true;
                }
                if item.changes.starts_with("cd") {
                    self.dirs_created += 1;
                } else if item.changes.starts_with("cL") {
                    self.links_created += 1;
                }
                false
            }
            OutputLine::Progress(p) => {
                self.bytes_transferred = p.bytes;
                self.percent = p.percent;
                self.speed = p.speed.clone();
                self.time = p.time.clone();
                self.list_complete = p.to_check.is_some() && !p.incomplete_list;
                if let Some(n) = p.files {
                    // rsync's own count also covers files of other runs' partial dirs; keep the
                    // larger, they agree when nothing odd happens.
                    self.files_transferred = self.files_transferred.max(n);
                }
                true
            }
            OutputLine::Stat(s) => {
                match *s {
                    Stat::FilesTransferred(n) => self.files_transferred = n,
                    Stat::TransferredSize(n) => self.bytes_transferred = n,
                    Stat::TotalSize(n) => self.source_bytes = Some(n),
                    Stat::RegularFiles(n) => self.source_files = Some(n),
                }
                false
            }
            OutputLine::UnsafeSymlink(name) => {
                if self.unsafe_symlinks.len() < MAX_NAMES {
                    self.unsafe_symlinks.push(name.clone());
                }
                false
            }
            OutputLine::NonRegular(name) => {
                if self.non_regular.len() < MAX_NAMES {
                    self.non_regular.push(name.clone());
                }
                false
            }
            OutputLine::Other(_) => false,
        }
    }
}

/// How rsync ended, from its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitClass {
    /// 0.
    Success,
    /// 24: some source files vanished while the transfer ran (a device rotating files). Everything
    /// else was copied: a success with a warning.
    Vanished,
    /// Anything else.
    Failed(i32),
}

/// Classifies an exit code.
pub fn classify_exit(code: i32) -> ExitClass {
    match code {
        0 => ExitClass::Success,
        24 => ExitClass::Vanished,
        other => ExitClass::Failed(other),
    }
}

/// rsync's meaning of an exit code (from its man page), for messages.
pub fn exit_meaning(code: i32) -> &'static str {
    match code {
        0 => "success",
        1 => "syntax or usage error",
        2 => "protocol incompatibility",
        3 => "errors selecting input/output files or directories",
        4 => "requested action not supported",
        5 => "error starting client-server protocol",
        6 => "daemon unable to append to log-file",
        10 => "error in socket I/O",
        11 => "error in file I/O",
        12 => "error in rsync protocol data stream",
        13 => "errors with program diagnostics",
        14 => "error in IPC code",
        20 => "received SIGUSR1 or SIGINT",
        21 => "some error returned by waitpid()",
        22 => "error allocating core memory buffers",
        23 => "partial transfer due to error",
        24 => "partial transfer due to vanished source files",
        25 => "the --max-delete limit stopped deletions",
        30 => "timeout in data send/receive",
        35 => "timeout waiting for daemon connection",
        255 => "ssh or connection failure",
        _ => "unknown error",
    }
}

/// rsync's own explanation from its stderr: the specific lines (`rsync: …`, `ssh: …`, `@ERROR`,
/// `Permission denied`, ...) first, the generic `rsync error: … (code N)` footer last, joined
/// with `; ` and limited to about 600 characters.
pub fn error_summary(stderr: &[String]) -> String {
    let mut specific: Vec<&str> = Vec::new();
    let mut footer: Vec<&str> = Vec::new();
    for line in stderr {
        let l = line.trim();
        if l.is_empty() {
            continue;
        }
        if l.starts_with("rsync error:") {
            footer.push(l);
        } else if !specific.contains(&l) {
            specific.push(l);
        }
    }
    let mut parts: Vec<&str> = specific.into_iter().take(4).collect();
    parts.extend(footer.into_iter().take(1));
    let mut text = parts.join("; ");
    if text.chars().count() > 600 {
        text = text.chars().take(597).collect::<String>() + "...";
    }
    text
}

/// The paths rsync reported as vanished (`file has vanished: "PATH"`), as it printed them:
/// listed in the file list, gone or changing when they were to be read.
pub fn vanished_files(stderr: &[String]) -> Vec<String> {
    stderr
        .iter()
        .filter_map(|l| l.split_once("file has vanished: \""))
        .filter_map(|(_, rest)| rest.rsplit_once('"').map(|(path, _)| path.to_string()))
        .collect()
}

/// True when stderr says the device has no such tree (`change_dir "…/<kind>/<id>" failed: No
/// such file or directory`), as opposed to a failed connection or transfer.
pub fn source_dir_missing(stderr: &[String], kind: &str, id: &str) -> bool {
    let needle = format!("{kind}/{id}");
    stderr.iter().any(|l| {
        l.contains("change_dir") && l.contains(&needle) && l.contains("No such file or directory")
    })
}

/// True when stderr says the node's disk is full (`write failed on "…": No space left on device
/// (28)`): the receiving side, not the device, ran out of space.
pub fn disk_full(stderr: &[String]) -> bool {
    stderr
        .iter()
        .any(|l| l.contains("No space left on device") && !l.contains("[sender]"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_lines() {
        let lines = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(disk_full(&lines(&[
            "rsync: [receiver] write failed on \"/state/tmp/results/x/.a.h264.Xy12ab\": No space left on device (28)",
            "rsync error: error in file IO (code 11) at receiver.c(381) [receiver=3.2.7]",
        ])));
        assert!(!disk_full(&lines(&[
            "rsync: [sender] read errors mapping \"a\": No space left on device (28)"
        ])));
        assert!(!disk_full(&lines(&[
            "rsync error: some files/attrs were not transferred (code 23)"
        ])));
    }

    /// Output of `rsync -rlpt -v --out-format='%i %l %n' --info=progress2 --stats` pulling a small
    /// tree with a 3 MB file, as captured (`\r` redraws included).
    const CAPTURED: &str = "receiving incremental file list\n\
>f+++++++++ 3 top.txt\n\
\r              3   0%    0.00kB/s    0:00:00  \r              3   0%    0.00kB/s    0:00:00 (xfr#1, to-chk=7/9)\n\
cd+++++++++ 4096 a/\n\
cL+++++++++ 1 a/blink\n\
ignoring unsafe symlink \"a/etclink\" -> \"/etc\"\n\
>f+++++++++ 3 a/we ird.txt\n\
\r              6   0%    2.93kB/s    0:00:00 (xfr#2, to-chk=2/9)\n\
cd+++++++++ 4096 a/b/\n\
>f+++++++++ 3000000 a/b/big.bin\n\
\r         32,768   1%   31.25MB/s    0:00:00  \r      3,000,006  99%    1.40GB/s    0:00:00 (xfr#3, to-chk=0/9)\n\
\n\
Number of files: 9 (reg: 3, dir: 3, link: 3)\n\
Number of created files: 6 (reg: 3, dir: 2, link: 1)\n\
Number of deleted files: 0\n\
Number of regular files transferred: 3\n\
Total file size: 3,000,021 bytes\n\
Total transferred file size: 3,000,006 bytes\n\
Literal data: 3,000,006 bytes\n\
\n\
sent 3,001,113 bytes  received 92 bytes  6,002,410.00 bytes/sec\n\
total size is 3,000,021  speedup is 1.00\n";

    fn lines(text: &str) -> Vec<String> {
        let mut s = LineSplitter::default();
        let mut out = s.push(text.as_bytes());
        out.extend(s.finish());
        out
    }

    #[test]
    fn splits_on_cr_and_lf_and_drops_empties() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"a\rb\r\nc"), vec!["a", "b"]);
        assert_eq!(s.push(b"d\n\n\r  \n"), vec!["cd"]);
        assert_eq!(s.finish(), None);
        assert_eq!(s.push(b"tail"), Vec::<String>::new());
        assert_eq!(s.finish().as_deref(), Some("tail"));
        // Invalid UTF-8 does not panic.
        assert_eq!(s.push(b"\xff\xfe x\n"), vec!["\u{fffd}\u{fffd} x"]);
    }

    #[test]
    fn captured_run_counts_files_not_dirs_or_redraws() {
        let mut st = TransferState::default();
        let mut kinds = (0, 0, 0, 0);
        for l in lines(CAPTURED) {
            let parsed = parse_line(&l);
            match &parsed {
                OutputLine::Item(_) => kinds.0 += 1,
                OutputLine::Progress(_) => kinds.1 += 1,
                OutputLine::Stat(_) => kinds.2 += 1,
                _ => kinds.3 += 1,
            }
            st.apply(&parsed);
        }
        assert_eq!(kinds.0, 6, "itemized lines");
        assert_eq!(kinds.1, 5, "progress redraws");
        assert_eq!(st.files_transferred, 3);
        assert_eq!(st.bytes_transferred, 3_000_006);
        assert_eq!(st.percent, 99);
        assert_eq!(st.speed, "1.40GB/s");
        assert_eq!(st.current_file.as_deref(), Some("a/b/big.bin"));
        assert_eq!(st.dirs_created, 2);
        assert_eq!(st.links_created, 1);
        assert_eq!(st.unsafe_symlinks, vec!["a/etclink"]);
        assert_eq!(st.source_files, Some(3));
        assert_eq!(st.source_bytes, Some(3_000_021));
        assert!(st.list_complete);
    }

    #[test]
    fn itemized_lines() {
        let item = |l: &str| match parse_line(l) {
            OutputLine::Item(i) => i,
            other => panic!("{l:?} -> {other:?}"),
        };
        let f = item(">f+++++++++ 3 a/we ird.txt");
        assert!(f.is_received_file() && !f.is_dir());
        assert_eq!((f.length, f.name.as_str()), (3, "a/we ird.txt"));
        let f = item(">f.st...... 1,234 x.db");
        assert_eq!(f.length, 1234);
        assert!(item("cd+++++++++ 4096 a/").is_dir());
        assert!(item(".d..t...... 4096 ./").is_dir());
        assert!(!item("cL+++++++++ 1 a/blink").is_received_file());
        // Not items: upstream's file-counting traps.
        for l in [
            "rsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1394) [sender=3.5.0]",
            "sent 3,051,150 bytes  received 105 bytes  6,102,510.00 bytes/sec",
            "total size is 3,050,003  speedup is 1.00",
            "abc123/ETHOSCOPE_001/",
        ] {
            assert!(matches!(parse_line(l), OutputLine::Other(_)), "{l}");
        }
    }

    #[test]
    fn progress_lines() {
        let p = match parse_line("32,768   1%   31.25MB/s    0:00:00") {
            OutputLine::Progress(p) => p,
            other => panic!("{other:?}"),
        };
        assert_eq!((p.bytes, p.percent, p.files), (32_768, 1, None));
        let p = match parse_line("1,048,576  45%  953.68MB/s    0:01:02 (xfr#12, ir-chk=1000/2345)")
        {
            OutputLine::Progress(p) => p,
            other => panic!("{other:?}"),
        };
        assert_eq!(p.files, Some(12));
        assert_eq!(p.to_check, Some((1000, 2345)));
        assert!(p.incomplete_list);
        assert_eq!(p.time, "0:01:02");
    }

    #[test]
    fn exit_codes() {
        assert_eq!(classify_exit(0), ExitClass::Success);
        assert_eq!(classify_exit(24), ExitClass::Vanished);
        assert_eq!(classify_exit(23), ExitClass::Failed(23));
        assert_eq!(exit_meaning(30), "timeout in data send/receive");
        assert_eq!(exit_meaning(77), "unknown error");
    }

    #[test]
    fn error_summary_keeps_rsyncs_words() {
        let err = vec![
            "rsync: [Receiver] failed to connect to 127.0.0.1 (127.0.0.1): Connection refused (111)".to_string(),
            "rsync error: error in socket IO (code 10) at clientserver.c(139) [Receiver=3.5.0]".to_string(),
        ];
        assert_eq!(
            error_summary(&err),
            "rsync: [Receiver] failed to connect to 127.0.0.1 (127.0.0.1): Connection refused (111); rsync error: error in socket IO (code 10) at clientserver.c(139) [Receiver=3.5.0]"
        );
        let long = vec!["x".repeat(2000)];
        assert!(error_summary(&long).len() <= 600);
        assert_eq!(error_summary(&[]), "");
    }

    #[test]
    fn escaped_names() {
        assert_eq!(unescape_name("a/m\\#303\\#266rk.db"), "a/mörk.db");
        assert_eq!(unescape_name("tab\\#011x"), "tab\tx");
        assert_eq!(unescape_name("plain/x.db-wal"), "plain/x.db-wal");
        assert_eq!(unescape_name("back\\#sl.txt"), "back\\#sl.txt");
        assert_eq!(unescape_name("bad\\#377"), "bad\u{fffd}");
        let item = match parse_line(">f+++++++++ 8192 a/m\\#303\\#266rk.db") {
            OutputLine::Item(i) => i,
            other => panic!("{other:?}"),
        };
        assert_eq!(item.name, "a/mörk.db");
    }

    #[test]
    fn vanished_paths() {
        let err = vec![
            "file has vanished: \"/results/0123/E/ts/x.db-wal\" (in ethoscope_data)".to_string(),
            "file has vanished: \"/data/results/0123/E/ts/we\"ird.db\"".to_string(),
            "rsync warning: some files vanished before they could be transferred (code 24) at main.c(1956) [generator=3.5.0]".to_string(),
        ];
        assert_eq!(
            vanished_files(&err),
            vec![
                "/results/0123/E/ts/x.db-wal",
                "/data/results/0123/E/ts/we\"ird.db"
            ]
        );
    }

    #[test]
    fn missing_source_dir() {
        let id = "0123456789abcdef0123456789abcdef";
        let err = vec![format!(
            "rsync: [sender] change_dir \"/videos/{id}\" (in ethoscope_data) failed: No such file or directory (2)"
        )];
        assert!(source_dir_missing(&err, "videos", id));
        assert!(!source_dir_missing(&err, "results", id));
    }
}
