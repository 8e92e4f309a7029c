//! The four-level archive layout as types: what a request may name, decided before any file is
//! touched.
//!
//! scopr and ethoscopy find experiments as `<machine_id>/<machine_name>/<YYYY-MM-DD_HH-MM-SS>/<file>`
//! below the results (and videos) root. Every archive URL names exactly those four parts, so a
//! request is parsed into [`ArchiveRequest`] by a pure function: each segment is percent-decoded
//! strictly and must then be a valid machine id, device name, experiment date or file name. Those
//! alphabets contain no `/`, no NUL and no leading `.`, so `..`, `%2e%2e`, `%2f`, absolute paths
//! and NUL can never reach the filesystem: they do not parse, and the handler answers 404.
//!
//! [`Name`] is the only type the filesystem layer ([`super::fsx`]) accepts as a path component.

use std::fmt;

use etho_model::device::{is_valid_device_name, is_valid_machine_id};

/// Longest file name served (bytes); ethoscope names are well below 100.
const MAX_FILE_NAME: usize = 200;

/// Suffixes of files that are never listed or served: SQLite's companions (meaningless without
/// their database and possibly mid-write), the mirror's lock, and temporary names of the daemons.
const HIDDEN_SUFFIXES: [&str; 6] = [
    "-wal",
    "-shm",
    "-journal",
    ".lock",
    ".part",
    ".etho-backup-tmp",
];

/// One validated path component: non-empty, no `/`, no NUL, not `.` or `..`, not hidden.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    /// The component as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A machine id: 32 lower-case hex characters.
    pub fn machine_id(text: &str) -> Option<Name> {
        is_valid_machine_id(text).then(|| Name(text.to_string()))
    }

    /// A device name: `A-Z a-z 0-9 _ -`, 1 to 64 characters, not starting with `-`.
    pub fn machine_name(text: &str) -> Option<Name> {
        is_valid_device_name(text).then(|| Name(text.to_string()))
    }

    /// An experiment folder: `YYYY-MM-DD_HH-MM-SS`.
    pub fn date(text: &str) -> Option<Name> {
        is_valid_date(text).then(|| Name(text.to_string()))
    }

    /// A file in an experiment folder (see [`is_valid_file_name`]).
    pub fn file(text: &str) -> Option<Name> {
        is_valid_file_name(text).then(|| Name(text.to_string()))
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `YYYY-MM-DD_HH-MM-SS` with digits where digits belong (upstream's experiment folder names).
pub fn is_valid_date(text: &str) -> bool {
    const SHAPE: &[u8; 19] = b"dddd-dd-dd_dd-dd-dd";
    text.len() == SHAPE.len()
        && text.bytes().zip(SHAPE.iter()).all(|(b, &s)| match s {
            b'd' => b.is_ascii_digit(),
            other => b == other,
        })
}

/// A file name as devices and daemons write them (`2025-07-10_10-00-00_<id>.db`,
/// `…__1280x960@25_00000.h264`, `metadata.txt`): 1 to 200 characters of `A-Z a-z 0-9 . _ - @ + , =`,
/// not starting with `.` or `-`, and not one of the hidden companions ([`HIDDEN_SUFFIXES`]).
pub fn is_valid_file_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_FILE_NAME
        && !text.starts_with(['.', '-'])
        && text.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b'+' | b',' | b'=')
        })
        && !is_companion(text)
}

/// A SQLite companion, the mirror's lock or a daemon's temporary file: never listed or served.
pub fn is_companion(name: &str) -> bool {
    HIDDEN_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// One experiment: `<machine_id>/<machine_name>/<date>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExperimentRef {
    /// The device's machine id.
    pub machine_id: Name,
    /// The device's name when the experiment ran.
    pub machine_name: Name,
    /// The experiment's start, `YYYY-MM-DD_HH-MM-SS`.
    pub date: Name,
}

impl ExperimentRef {
    /// From three raw (already decoded) components.
    pub fn parse(machine_id: &str, machine_name: &str, date: &str) -> Option<ExperimentRef> {
        Some(ExperimentRef {
            machine_id: Name::machine_id(machine_id)?,
            machine_name: Name::machine_name(machine_name)?,
            date: Name::date(date)?,
        })
    }

    /// `id/name/date`, the experiment's path below a root and in URLs.
    pub fn path(&self) -> String {
        format!("{}/{}/{}", self.machine_id, self.machine_name, self.date)
    }

    /// The three components, root first.
    pub fn components(&self) -> [&Name; 3] {
        [&self.machine_id, &self.machine_name, &self.date]
    }
}

/// One file of an experiment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileRef {
    /// Its experiment folder.
    pub experiment: ExperimentRef,
    /// Its name.
    pub file: Name,
}

impl FileRef {
    /// `id/name/date/file`, as scopr's `index.txt` and the download URL name it.
    pub fn path(&self) -> String {
        format!("{}/{}", self.experiment.path(), self.file)
    }
}

/// What a URL below `/archive/` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveRequest {
    /// `index.txt`: scopr's `path,last_point` index.
    IndexTxt,
    /// `<id>/<name>/<date>/<file>`: one file.
    File(FileRef),
    /// `<id>/<name>/<date>.zip`: one experiment folder as a zip.
    Zip(ExperimentRef),
}

/// Parses the raw (still percent-encoded) path after `/archive/`. `None` for anything that is not
/// exactly one of the three shapes with valid components: the handler answers 404 to it without
/// touching the filesystem.
pub fn parse_request(raw: &str) -> Option<ArchiveRequest> {
    let segments = raw
        .split('/')
        .map(percent_decode)
        .collect::<Option<Vec<String>>>()?;
    match segments.as_slice() {
        [one] if one == "index.txt" => Some(ArchiveRequest::IndexTxt),
        [id, name, zip] => {
            let date = zip.strip_suffix(".zip")?;
            ExperimentRef::parse(id, name, date).map(ArchiveRequest::Zip)
        }
        [id, name, date, file] => Some(ArchiveRequest::File(FileRef {
            experiment: ExperimentRef::parse(id, name, date)?,
            file: Name::file(file)?,
        })),
        _ => None,
    }
}

/// Strict percent-decoding of one segment: every `%` must start a two-digit hex escape, and the
/// result must be UTF-8. (Validation afterwards refuses `/`, NUL and everything else unusual.)
pub fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let text = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(text, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn dates() {
        assert!(is_valid_date("2025-07-10_10-00-00"));
        for bad in [
            "2025-07-10_10-00-0",
            "2025-07-10_10-00-000",
            "2025-07-10 10-00-00",
            "2025/07/10_10-00-00",
            "..",
            "",
            "2025-07-10_10-00-0a",
        ] {
            assert!(!is_valid_date(bad), "{bad:?}");
        }
    }

    #[test]
    fn file_names() {
        for good in [
            "2025-07-10_10-00-00_0123456789abcdef0123456789abcdef.db",
            "2025-07-10_10-00-00_0123456789abcdef0123456789abcdef__1280x960@25_00000.h264",
            "metadata.txt",
            "a",
            "x.mp4",
        ] {
            assert!(is_valid_file_name(good), "{good:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "-rf",
            "a/b",
            "a\\b",
            "a\0b",
            "a b",
            "x.db-wal",
            "x.db-shm",
            "x.db-journal",
            "x.db.lock",
            "x.h264.part",
            "x.db.etho-backup-tmp",
            "é.db",
            &"a".repeat(201),
        ] {
            assert!(!is_valid_file_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn requests() {
        let exp = ExperimentRef::parse(ID, "ETHOSCOPE_001", "2025-07-10_10-00-00").unwrap();
        assert_eq!(parse_request("index.txt"), Some(ArchiveRequest::IndexTxt));
        assert_eq!(
            parse_request(&format!("{ID}/ETHOSCOPE_001/2025-07-10_10-00-00.zip")),
            Some(ArchiveRequest::Zip(exp.clone()))
        );
        let file = parse_request(&format!("{ID}/ETHOSCOPE_001/2025-07-10_10-00-00/x%40y.db"));
        assert_eq!(
            file,
            Some(ArchiveRequest::File(FileRef {
                experiment: exp,
                file: Name::file("x@y.db").unwrap(),
            }))
        );
    }

    /// Every traversal shape the issue names, and more: none parses.
    #[test]
    fn traversal_never_parses() {
        let n = "ETHOSCOPE_001";
        let d = "2025-07-10_10-00-00";
        for raw in [
            format!("{ID}/{n}/{d}/.."),
            format!("{ID}/{n}/{d}/%2e%2e"),
            format!("{ID}/{n}/{d}/%2E%2E"),
            format!("{ID}/{n}/{d}/..%2f..%2fetc%2fpasswd"),
            format!("{ID}/{n}/{d}/a%2fb"),
            format!("{ID}/{n}/{d}/a%2Fb"),
            format!("{ID}/{n}/{d}/a%00.db"),
            format!("{ID}/{n}/{d}/a%5cb"),
            format!("{ID}/{n}/../{d}/x.db"),
            format!("{ID}/../../{d}/x.db"),
            format!("../{n}/{d}/x.db"),
            "/etc/passwd".to_string(),
            format!("/{ID}/{n}/{d}/x.db"),
            format!("{ID}//{n}/{d}/x.db"),
            format!("{ID}/{n}/{d}/x.db/"),
            format!("{ID}/{n}/{d}/%"),
            format!("{ID}/{n}/{d}/%zz"),
            format!("{ID}/{n}/{d}/%c0%ae%c0%ae"),
            format!("{ID}/{n}/{d}/x.db%00"),
            format!("{ID}/{n}/%2e%2e.zip"),
            format!("{ID}/{n}/{d}/x.db-wal"),
            format!("{ID}/{n}/{d}/x.db.lock"),
            format!("{ID}/{n}/{d}"),
            format!("{ID}/{n}/{d}/a/b"),
            "index.txt/x".to_string(),
            format!("%2e%2e/{n}/{d}/x.db"),
            format!("{}/{n}/{d}/x.db", ID.to_uppercase()),
        ] {
            assert_eq!(parse_request(&raw), None, "{raw}");
        }
    }

    #[test]
    fn percent_decoding_is_strict() {
        assert_eq!(percent_decode("a%41"), Some("aA".into()));
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%+1"), None);
        assert_eq!(percent_decode("%ff"), None); // not UTF-8
    }
}
