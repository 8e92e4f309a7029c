//! The rsync command line for one tree of one device (pure: tested without running anything).
//!
//! Why each flag is there:
//!
//! - `-rlpt`: recurse, symlinks as symlinks, permissions and times; no owner, group or devices
//!   (files are owned by the node's user, and special files are never created).
//! - `--safe-links`: symlinks pointing out of the device's tree (absolute or `../` escapes) are
//!   not copied, so nothing in the archive points at `/etc` or at another device.
//! - `--chmod` ([`chmod_spec`]): no set-id bits and no group or world write from a device, and
//!   the daemon's `--umask` (default 027) applied to what `-p` would copy, so a device cannot make
//!   an archive file writable by others (or readable by everyone when the operator says not);
//!   the archive stays readable by us.
//! - excludes: the hidden `.cache/` directories (upstream unpickled a cache file from there) and
//!   SQLite's `-shm` (an index SQLite rebuilds). A database's `-wal` and `-journal` *are* copied,
//!   into staging only: the newest committed rows of a WAL database live in its `-wal`
//!   ([`crate::live`] folds them into a self-contained copy; the archive never holds a companion).
//! - the destination is a *staging* directory under the state dir with `--compare-dest` pointing
//!   at the device's archive directory, then at its stub directory ([`crate::live::store`]):
//!   unchanged files are skipped, changed ones use the archive copy as delta basis, and only new
//!   or changed files land in staging, from where they are verified and renamed into the archive
//!   ([`crate::promote`]).
//! - `-ii` on the results tree: unchanged files are itemized too, so the engine knows which
//!   databases and companions the device still has.
//! - re-read passes ([`reread_args`]): `--files-from` with just a few databases and their
//!   companions, `--ignore-times` (every file is read again, whatever its size and mtime; the
//!   engine compares the content with the previous read itself) with the previous read as delta
//!   basis, `--ignore-missing-args` (a companion that does not exist is not an error). Not `-c`:
//!   the sender checksums while it builds the file list, and reports a file appended to in the
//!   meantime (a live WAL) as vanished.
//! - `--temp-dir` and an absolute `--partial-dir`, both under the state dir: rsync's in-flight
//!   and interrupted files never appear in the archive; `--partial` keeps an interrupted file so
//!   the next cycle resumes it.
//! - `--timeout` (I/O stall), `--contimeout` (daemon connect), `--bwlimit` as configured.
//! - `--out-format='%i %l %n' --info=progress2 --stats -v`: what [`crate::parse`] reads.
//! - ssh: `BatchMode=yes` (never prompt), `ConnectTimeout`, `ServerAliveInterval=30`, host keys
//!   pinned in our own known-hosts file with `StrictHostKeyChecking=accept-new` (upstream used
//!   `StrictHostKeyChecking=no` and `/dev/null`), and only the configured key. Keys are pinned
//!   per machine id (`HostKeyAlias=<machine id>`), not per address: another machine answering
//!   with a device's id from any address fails verification, and a device whose address changes
//!   keeps its key. (An `rsync://` daemon has no host key: there, only the node's one address per
//!   machine id stands between a device's archive and an impostor.)

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::config::RsyncBackupConfig;
use crate::source::Transport;

/// Directories of one transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferPaths {
    /// rsync source, ending in `/`.
    pub source: String,
    /// How the source is reached.
    pub transport: Transport,
    /// Where changed files land (absolute).
    pub staging: PathBuf,
    /// The device's archive directory, the comparison basis (absolute).
    pub archive: PathBuf,
    /// The device's stub directory, the second comparison basis (absolute).
    pub stubs: Option<PathBuf>,
    /// Itemize unchanged files too (`-ii`).
    pub itemize_unchanged: bool,
    /// rsync's partial files (absolute).
    pub partial: PathBuf,
    /// rsync's temporary files (absolute).
    pub temp: PathBuf,
    /// The name the device's ssh host key is pinned under (its machine id).
    pub host_key_alias: Option<String>,
}

/// A configuration that cannot be turned into a safe command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// A path that rsync's `-e` splitting could not carry.
    #[error("{what} path {path:?} cannot be passed to ssh through rsync -e (contains a quote or control character)")]
    UnquotablePath {
        /// Which path.
        what: &'static str,
        /// The path.
        path: String,
    },
    /// A bandwidth limit rsync would not understand.
    #[error("invalid --bwlimit {0:?}: expected a number with an optional K, M or G suffix")]
    BadBwlimit(String),
    /// A host key alias that is not a plain name (machine ids are 32 hex characters).
    #[error("host key alias {0:?} is not a plain name")]
    BadAlias(String),
}

/// Checks a `--bwlimit` value: digits, optionally a fraction, optionally one unit letter.
pub fn check_bwlimit(value: &str) -> Result<(), CommandError> {
    let body = value.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G', 'b', 'B']);
    let unit_len = value.len() - body.len();
    let ok = !body.is_empty()
        && unit_len <= 1
        && body.chars().all(|c| c.is_ascii_digit() || c == '.')
        && body.chars().filter(|&c| c == '.').count() <= 1
        && body.chars().next().is_some_and(|c| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(CommandError::BadBwlimit(value.to_string()))
    }
}

fn quote_for_rsync_e(what: &'static str, path: &Path) -> Result<String, CommandError> {
    let s = path.to_string_lossy().into_owned();
    if s.contains(['\'', '"', '\\']) || s.chars().any(char::is_control) {
        return Err(CommandError::UnquotablePath { what, path: s });
    }
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+=@%,:".contains(c))
    {
        Ok(s)
    } else {
        // rsync splits -e on whitespace but honours quotes.
        Ok(format!("'{s}'"))
    }
}

/// The `-e` value for ssh sources; with `host_key_alias`, the host key is looked up and pinned
/// under that name instead of the address.
pub fn ssh_command(
    config: &RsyncBackupConfig,
    host_key_alias: Option<&str>,
) -> Result<String, CommandError> {
    let ssh = &config.ssh;
    let mut parts = vec![quote_for_rsync_e("ssh program", Path::new(&ssh.program))?];
    if let Some(port) = ssh.port {
        parts.push(format!("-p {port}"));
    }
    parts.push(format!("-i {}", quote_for_rsync_e("ssh key", &ssh.key)?));
    parts.push("-o IdentitiesOnly=yes".to_string());
    parts.push("-o BatchMode=yes".to_string());
    parts.push(format!(
        "-o ConnectTimeout={}",
        config.connect_timeout.as_secs().max(1)
    ));
    parts.push("-o ServerAliveInterval=30".to_string());
    parts.push("-o StrictHostKeyChecking=accept-new".to_string());
    if let Some(alias) = host_key_alias {
        if alias.is_empty()
            || !alias
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(CommandError::BadAlias(alias.to_string()));
        }
        parts.push(format!("-o HostKeyAlias={alias}"));
    }
    parts.push(format!(
        "-o UserKnownHostsFile={}",
        quote_for_rsync_e("known hosts", &ssh.known_hosts)?
    ));
    Ok(parts.join(" "))
}

fn dir_arg(flag: &str, path: &Path) -> OsString {
    let mut s = OsString::from(flag);
    s.push("=");
    s.push(path.as_os_str());
    s
}

/// The `--chmod` value for a daemon with this umask: set-uid, set-gid and sticky bits off, group
/// and world write always off, the umask's bits off, and owner read/write (search on
/// directories) on.
pub fn chmod_spec(umask: u32) -> String {
    let mask = umask | 0o022;
    let mut parts = vec!["ugo-st".to_string()];
    for (class, shift) in [('u', 6), ('g', 3), ('o', 0)] {
        let bits = (mask >> shift) & 0o7;
        if bits != 0 {
            let letters: String = [(4, 'r'), (2, 'w'), (1, 'x')]
                .iter()
                .filter(|(bit, _)| bits & bit != 0)
                .map(|(_, l)| *l)
                .collect();
            parts.push(format!("{class}-{letters}"));
        }
    }
    parts.push("u+rwX".to_string());
    format!("--chmod={}", parts.join(","))
}

/// Flags of a tree's pass (then [`finish`]'s).
const COMMON: [&str; 10] = [
    "-rlpt",
    "-v",
    "--partial",
    "--safe-links",
    // Compare modification times to the nanosecond: by default rsync treats a file whose size
    // is unchanged and whose mtime is in the same second as already copied, so the last
    // write to a live database could stay unbacked forever.
    "--modify-window=-1",
    "--exclude=.cache/",
    "--exclude=*-shm",
    "--out-format=%i %l %n",
    "--info=progress2",
    "--stats",
];

fn with_slash(dir: &Path) -> OsString {
    let mut with_slash = dir.as_os_str().to_owned();
    with_slash.push("/");
    with_slash
}

/// Ends the argument list: `-- SOURCE DEST/` (everything after `--` is a path, whatever it
/// looks like).
fn source_and_dest(args: &mut Vec<OsString>, source: &str, dest: &Path) {
    args.push("--".into());
    args.push(source.into());
    args.push(with_slash(dest));
}

fn dir_slash(flag: &str, dir: &Path) -> OsString {
    let with_slash = with_slash(dir);
    dir_arg(flag, Path::new(&with_slash))
}

/// The full argument list of a tree's pass (without the program name).
pub fn rsync_args(
    config: &RsyncBackupConfig,
    paths: &TransferPaths,
) -> Result<Vec<OsString>, CommandError> {
    let mut args: Vec<OsString> = COMMON.iter().map(OsString::from).collect();
    if paths.itemize_unchanged {
        args.push("-ii".into());
    }
    args.push(dir_arg("--partial-dir", &paths.partial));
    args.push(dir_arg("--temp-dir", &paths.temp));
    args.push(dir_slash("--compare-dest", &paths.archive));
    if let Some(stubs) = &paths.stubs {
        args.push(dir_slash("--compare-dest", stubs));
    }
    let device = Device {
        source: &paths.source,
        transport: paths.transport,
        host_key_alias: paths.host_key_alias.as_deref(),
    };
    finish(config, device, &paths.staging, args)
}

/// A re-read pass of a few files of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RereadPaths {
    /// rsync source: the device's data directory, ending in `/` (or `host:`).
    pub source: String,
    /// How the source is reached.
    pub transport: Transport,
    /// NUL-separated paths relative to the source.
    pub list: PathBuf,
    /// The previous read of each file (checksum comparison basis).
    pub basis: PathBuf,
    /// Destination.
    pub dest: PathBuf,
    /// rsync's temporary files.
    pub temp: PathBuf,
    /// The name the device's ssh host key is pinned under (its machine id).
    pub host_key_alias: Option<String>,
}

/// The argument list of a re-read pass: only the listed files, all read again.
pub fn reread_args(
    config: &RsyncBackupConfig,
    paths: &RereadPaths,
) -> Result<Vec<OsString>, CommandError> {
    let mut args: Vec<OsString> = [
        "-lpt",
        "-v",
        "--ignore-times",
        "-ii",
        "--safe-links",
        "--modify-window=-1",
        "--from0",
        "--ignore-missing-args",
        "--out-format=%i %l %n",
        "--stats",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    args.push(dir_arg("--files-from", &paths.list));
    args.push(dir_arg("--temp-dir", &paths.temp));
    args.push(dir_slash("--compare-dest", &paths.basis));
    let device = Device {
        source: &paths.source,
        transport: paths.transport,
        host_key_alias: paths.host_key_alias.as_deref(),
    };
    finish(config, device, &paths.dest, args)
}

/// Where a pass reads from.
#[derive(Debug, Clone, Copy)]
struct Device<'a> {
    /// rsync source (`rsync://…/` or `host:path/`).
    source: &'a str,
    /// How it is reached.
    transport: Transport,
    /// The name its ssh host key is pinned under.
    host_key_alias: Option<&'a str>,
}

/// What every pass ends with, in one place so that no pass can miss one: the archive's mode
/// policy ([`chmod_spec`]), the I/O timeout, how the device is reached, and `-- SOURCE DEST/`.
fn finish(
    config: &RsyncBackupConfig,
    device: Device<'_>,
    dest: &Path,
    mut args: Vec<OsString>,
) -> Result<Vec<OsString>, CommandError> {
    args.push(chmod_spec(config.umask).into());
    args.push(format!("--timeout={}", config.io_timeout.as_secs().max(1)).into());
    transport_args(config, device.transport, device.host_key_alias, &mut args)?;
    source_and_dest(&mut args, device.source, dest);
    Ok(args)
}

fn transport_args(
    config: &RsyncBackupConfig,
    transport: Transport,
    host_key_alias: Option<&str>,
    args: &mut Vec<OsString>,
) -> Result<(), CommandError> {
    if let Some(limit) = &config.bwlimit {
        check_bwlimit(limit)?;
        args.push(format!("--bwlimit={limit}").into());
    }
    match transport {
        Transport::Ssh => {
            args.push("-e".into());
            args.push(ssh_command(config, host_key_alias)?.into());
        }
        Transport::Daemon => {
            args.push(format!("--contimeout={}", config.connect_timeout.as_secs().max(1)).into());
            args.push("--no-motd".into());
        }
        Transport::Local => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config() -> RsyncBackupConfig {
        let mut c = RsyncBackupConfig::new(
            Path::new("/data/results"),
            Path::new("/data/videos"),
            Path::new("/var/lib/etho"),
        );
        c.io_timeout = Duration::from_secs(120);
        c
    }

    fn paths(transport: Transport) -> TransferPaths {
        TransferPaths {
            source: "ethoscope@10.0.0.5:/ethoscope_data/results/0123/".into(),
            transport,
            staging: "/var/lib/etho/staging/results/0123".into(),
            archive: "/data/results/0123".into(),
            stubs: Some("/var/lib/etho/stubs/results/0123".into()),
            itemize_unchanged: true,
            partial: "/var/lib/etho/partial/results/0123".into(),
            temp: "/var/lib/etho/tmp/results/0123".into(),
            host_key_alias: Some("0123456789abcdef0123456789abcdef".into()),
        }
    }

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn ssh_pull_command_line() {
        let mut c = config();
        c.bwlimit = Some("5M".into());
        let a = strings(&rsync_args(&c, &paths(Transport::Ssh)).unwrap());
        assert_eq!(a[0], "-rlpt");
        for must in [
            "--partial",
            "--safe-links",
            "--modify-window=-1",
            "--exclude=.cache/",
            "--exclude=*-shm",
            "-ii",
            "--timeout=120",
            "--bwlimit=5M",
            "--partial-dir=/var/lib/etho/partial/results/0123",
            "--temp-dir=/var/lib/etho/tmp/results/0123",
            "--compare-dest=/data/results/0123/",
            "--compare-dest=/var/lib/etho/stubs/results/0123/",
        ] {
            assert!(a.iter().any(|x| x == must), "missing {must} in {a:?}");
        }
        // The archive comes first: it is the delta basis of a changed file.
        let archive = a
            .iter()
            .position(|x| x == "--compare-dest=/data/results/0123/");
        let stubs = a
            .iter()
            .position(|x| x == "--compare-dest=/var/lib/etho/stubs/results/0123/");
        assert!(archive < stubs);
        // The WAL and the rollback journal are copied (into staging); -shm never.
        assert!(!a
            .iter()
            .any(|x| x.contains("*-wal") || x.contains("*-journal")));
        let e = a.iter().position(|x| x == "-e").unwrap();
        assert_eq!(
            a[e + 1],
            "ssh -i /etc/ethoscope/keys/id_rsa -o IdentitiesOnly=yes -o BatchMode=yes -o ConnectTimeout=10 -o ServerAliveInterval=30 -o StrictHostKeyChecking=accept-new -o HostKeyAlias=0123456789abcdef0123456789abcdef -o UserKnownHostsFile=/var/lib/etho/known_hosts"
        );
        assert!(!a.iter().any(|x| x.contains("StrictHostKeyChecking=no")));
        assert!(!a.iter().any(|x| x.contains("/dev/null")));
        assert!(!a
            .iter()
            .any(|x| x.starts_with("-a") || x == "-o" || x == "-g"));
        let n = a.len();
        assert_eq!(a[n - 3], "--");
        assert_eq!(a[n - 2], "ethoscope@10.0.0.5:/ethoscope_data/results/0123/");
        assert_eq!(a[n - 1], "/var/lib/etho/staging/results/0123/");
    }

    #[test]
    fn reread_pass_lists_files_and_compares_content() {
        let p = RereadPaths {
            source: "rsync://10.0.0.5/ethoscope_data/results/0123/".into(),
            transport: Transport::Daemon,
            list: "/s/live-work/pass-2.list".into(),
            basis: "/s/live-work/basis-2".into(),
            dest: "/s/live-work/pass-2".into(),
            temp: "/s/tmp".into(),
            host_key_alias: None,
        };
        let a = strings(&reread_args(&config(), &p).unwrap());
        for must in [
            "--ignore-times",
            "-ii",
            "--from0",
            "--ignore-missing-args",
            "--files-from=/s/live-work/pass-2.list",
            "--compare-dest=/s/live-work/basis-2/",
            "--contimeout=10",
        ] {
            assert!(a.iter().any(|x| x == must), "missing {must} in {a:?}");
        }
        assert!(!a.iter().any(|x| x == "-r" || x.starts_with("-r")));
        let n = a.len();
        assert_eq!(a[n - 1], "/s/live-work/pass-2/");
        assert_eq!(a[n - 3], "--");
    }

    #[test]
    fn chmod_follows_the_umask_and_never_allows_group_or_world_write() {
        for (umask, want) in [
            (0o027, "--chmod=ugo-st,g-w,o-rwx,u+rwX"),
            (0o022, "--chmod=ugo-st,g-w,o-w,u+rwX"),
            (0o002, "--chmod=ugo-st,g-w,o-w,u+rwX"),
            (0o077, "--chmod=ugo-st,g-rwx,o-rwx,u+rwX"),
            (0o000, "--chmod=ugo-st,g-w,o-w,u+rwX"),
        ] {
            assert_eq!(chmod_spec(umask), want, "{umask:o}");
        }
        let a = strings(&rsync_args(&config(), &paths(Transport::Daemon)).unwrap());
        assert!(
            a.iter().any(|x| x == "--chmod=ugo-st,g-w,o-rwx,u+rwX"),
            "{a:?}"
        );
    }

    #[test]
    fn daemon_pull_has_no_ssh_and_a_connect_timeout() {
        let a = strings(&rsync_args(&config(), &paths(Transport::Daemon)).unwrap());
        assert!(!a.iter().any(|x| x == "-e"));
        assert!(a.iter().any(|x| x == "--contimeout=10"));
    }

    #[test]
    fn ssh_port_and_quoted_paths() {
        let mut c = config();
        c.ssh.port = Some(2222);
        c.ssh.key = "/keys/my key".into();
        let e = ssh_command(&c, None).unwrap();
        assert!(e.starts_with("ssh -p 2222 -i '/keys/my key' "), "{e}");
        assert!(!e.contains("HostKeyAlias"));
        assert!(ssh_command(&c, Some("a b")).is_err());
        assert!(ssh_command(&c, Some("")).is_err());
        c.ssh.key = "/keys/it's".into();
        assert!(ssh_command(&c, None).is_err());
    }

    #[test]
    fn bwlimit_values() {
        for good in ["100", "5M", "1.5m", "2G", "800k"] {
            assert!(check_bwlimit(good).is_ok(), "{good}");
        }
        for bad in ["", "M", "5MM", "-1", "1;rm", "1.2.3", "5 M"] {
            assert!(check_bwlimit(bad).is_err(), "{bad}");
        }
    }
}
