//! One file out of the archive: found without following links, read from one consistent version,
//! with `Range`, `ETag`/`If-None-Match` and the right `Content-Type`.
//!
//! - An rsync copy is opened (`O_NOFOLLOW`) and streamed from that descriptor. The daemon replaces
//!   files by rename, so the descriptor keeps the version it opened, whatever happens meanwhile.
//! - A MySQL mirror database (`<name>.lock` beside it) is first copied into a private snapshot
//!   under a read transaction ([`super::sqlite::snapshot`]); the snapshot's name is unlinked at
//!   once and the open descriptor streamed, so nothing is left behind.
//!
//! The response decision (`304`, `200`, `206`, `416`) is the pure [`plan_response`].

use std::fs::File;
use std::io;
use std::path::Path;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::fsx::{self, EntryKind, ExperimentDir, Fingerprint};
use super::index::{Root, Roots};
use super::names::{FileRef, Name};
use super::sqlite;

/// Read size of a download stream.
const CHUNK: usize = 1024 * 1024;

/// How to answer a request for a representation of `len` bytes with entity tag `etag`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// `304 Not Modified`.
    NotModified,
    /// `200` with the whole body.
    Full,
    /// `206` with bytes `start..=end`.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
    /// `416 Range Not Satisfiable`.
    Unsatisfiable,
}

/// Whether an `If-None-Match` value lists `etag` (or `*`); weak comparison, as RFC 9110 asks.
pub fn etag_matches(list: &str, etag: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

/// RFC 9110 conditional and range handling for a single-range server. A `Range` that is not one
/// valid `bytes=` range, or an `If-Range` that is not our current tag, gets the full body (the
/// RFC lets a server ignore `Range`).
pub fn plan_response(
    if_none_match: Option<&str>,
    range: Option<&str>,
    if_range: Option<&str>,
    etag: &str,
    len: u64,
) -> Plan {
    if if_none_match.is_some_and(|v| etag_matches(v, etag)) {
        return Plan::NotModified;
    }
    let Some(range) = range else {
        return Plan::Full;
    };
    if if_range.is_some_and(|v| v.trim() != etag) {
        return Plan::Full;
    }
    let Some(spec) = range.trim().strip_prefix("bytes=") else {
        return Plan::Full;
    };
    if spec.contains(',') {
        return Plan::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Plan::Full;
    };
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match number(suffix) {
            Some(0) => Plan::Unsatisfiable,
            Some(_) if len == 0 => Plan::Unsatisfiable,
            Some(n) => Plan::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            },
            None => Plan::Full,
        },
        (a, "") => match number(a) {
            Some(a) if a >= len => Plan::Unsatisfiable,
            Some(a) => Plan::Partial {
                start: a,
                end: len - 1,
            },
            None => Plan::Full,
        },
        (a, b) => match (number(a), number(b)) {
            (Some(a), Some(b)) if a > b => Plan::Full,
            (Some(a), Some(_)) if a >= len => Plan::Unsatisfiable,
            (Some(a), Some(b)) => Plan::Partial {
                start: a,
                end: b.min(len - 1),
            },
            _ => Plan::Full,
        },
    }
}

/// `Content-Type` by file name.
pub fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map_or("", |(_, e)| e);
    match ext.to_ascii_lowercase().as_str() {
        "db" => "application/vnd.sqlite3",
        "txt" => "text/plain; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "json" => "application/json",
        "h264" => "video/h264",
        "mp4" => "video/mp4",
        "avi" => "video/x-msvideo",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

/// An opened version of a file, ready to stream.
pub struct Opened {
    /// The open file (a snapshot's name is already unlinked).
    pub file: File,
    /// Its length.
    pub len: u64,
    /// Its entity tag.
    pub etag: String,
    /// Modification time of the version (epoch seconds).
    pub mtime: i64,
}

/// Opens `file` under `root`, as its kind requires. `NotFound` for anything absent or refused
/// (symlinks, special files), so a client learns nothing about what is there.
pub fn open_in_root(roots: &Roots, root: Root, file: &FileRef, tmp: &Path) -> io::Result<Opened> {
    let dir = ExperimentDir::open(roots.path(root), &file.experiment)?;
    let name = &file.file;
    if root == Root::Results && is_db(name) && fsx::has_mirror_lock(&dir.fd, name) {
        // Only a regular file goes to SQLite (which would resolve a link to refuse it).
        return match fsx::stat(&dir.fd, name.as_str())? {
            (EntryKind::File, _) => open_snapshot(&dir, name, tmp),
            _ => Err(io::ErrorKind::NotFound.into()),
        };
    }
    let (file, fp) = fsx::open_file(&dir.fd, name)?;
    Ok(Opened {
        file,
        len: fp.size,
        etag: fp.etag("f"),
        mtime: fp.mtime(),
    })
}

/// A `.db` name.
pub fn is_db(name: &Name) -> bool {
    name.as_str().ends_with(".db")
}

/// Snapshots a mirror database into an unlinked private file.
pub fn open_snapshot(dir: &ExperimentDir, name: &Name, tmp: &Path) -> io::Result<Opened> {
    let snap = tempfile::Builder::new()
        .prefix("download-")
        .suffix(".db")
        .tempfile_in(tmp)?;
    let fp: Fingerprint = sqlite::snapshot(dir, name, snap.path()).map_err(io::Error::other)?;
    let file = snap.reopen()?;
    drop(snap); // unlinks the name; the descriptor stays readable
    let len = file.metadata()?.len();
    Ok(Opened {
        file,
        len,
        etag: fp.etag("s"),
        mtime: fp.mtime(),
    })
}

/// Finds `file` in the results root, then the videos root.
pub fn open(roots: &Roots, file: &FileRef, tmp: &Path) -> io::Result<Opened> {
    match open_in_root(roots, Root::Results, file, tmp) {
        Ok(o) => Ok(o),
        Err(e) if is_absent(&e) => open_in_root(roots, Root::Videos, file, tmp),
        Err(e) => Err(e),
    }
}

/// Errors that mean "not there" (including refused symlinks and special files).
pub fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::ENOENT | nix::libc::ELOOP | nix::libc::ENOTDIR)
    ) || matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::InvalidInput
    )
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The response for an opened file.
pub fn respond(opened: Opened, name: &Name, request: &HeaderMap) -> Response {
    let plan = plan_response(
        header_str(request, header::IF_NONE_MATCH),
        header_str(request, header::RANGE),
        header_str(request, header::IF_RANGE),
        &opened.etag,
        opened.len,
    );
    let mut headers = HeaderMap::new();
    let value = |s: &str| HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""));
    headers.insert(header::ETAG, value(&opened.etag));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Some(time) = u64::try_from(opened.mtime)
        .ok()
        .map(|s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s))
    {
        headers.insert(header::LAST_MODIFIED, value(&httpdate::fmt_http_date(time)));
    }
    let (status, start, len) = match plan {
        Plan::NotModified => return (StatusCode::NOT_MODIFIED, headers).into_response(),
        Plan::Unsatisfiable => {
            headers.insert(
                header::CONTENT_RANGE,
                value(&format!("bytes */{}", opened.len)),
            );
            return (StatusCode::RANGE_NOT_SATISFIABLE, headers).into_response();
        }
        Plan::Full => (StatusCode::OK, 0, opened.len),
        Plan::Partial { start, end } => {
            headers.insert(
                header::CONTENT_RANGE,
                value(&format!("bytes {start}-{end}/{}", opened.len)),
            );
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
    };
    let disposition = if name.as_str().ends_with(".mp4") || name.as_str().ends_with(".txt") {
        "inline"
    } else {
        "attachment"
    };
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(name.as_str())),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        value(&format!("{disposition}; filename=\"{name}\"")),
    );
    headers.insert(header::CONTENT_LENGTH, value(&len.to_string()));
    (status, headers, body(opened.file, start, len)).into_response()
}

/// `len` bytes from `start`, streamed: one blocking task reads large chunks with `pread` and
/// hands them over a small bounded channel, so a slow client holds at most a few chunks in memory
/// and a fast one is not slowed by a thread hand-off per small read.
fn body(file: File, start: u64, len: u64) -> Body {
    use std::os::unix::fs::FileExt;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<io::Result<bytes::Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut offset = start;
        let end = start + len;
        while offset < end {
            let want = usize::try_from(end - offset).map_or(CHUNK, |left| left.min(CHUNK));
            let mut buf = bytes::BytesMut::zeroed(want);
            let chunk = match file.read_at(&mut buf, offset) {
                Ok(0) => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank while it was sent",
                )),
                Ok(n) => {
                    buf.truncate(n);
                    offset += n as u64;
                    Ok(buf.freeze())
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let failed = chunk.is_err();
            if tx.blocking_send(chunk).is_err() || failed {
                return; // the client went away, or the error ends the body
            }
        }
    });
    Body::from_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_table() {
        let e = "\"f-1\"";
        let p = |inm: Option<&str>, range: Option<&str>, if_range: Option<&str>, len: u64| {
            plan_response(inm, range, if_range, e, len)
        };
        use Plan::*;
        assert_eq!(p(None, None, None, 10), Full);
        assert_eq!(p(Some(e), None, None, 10), NotModified);
        assert_eq!(p(Some("W/\"f-1\""), None, None, 10), NotModified);
        assert_eq!(
            p(Some("\"x\", \"f-1\""), Some("bytes=0-1"), None, 10),
            NotModified
        );
        assert_eq!(p(Some("*"), None, None, 10), NotModified);
        assert_eq!(p(Some("\"f-2\""), None, None, 10), Full);
        assert_eq!(
            p(None, Some("bytes=0-3"), None, 10),
            Partial { start: 0, end: 3 }
        );
        assert_eq!(
            p(None, Some("bytes=4-"), None, 10),
            Partial { start: 4, end: 9 }
        );
        assert_eq!(
            p(None, Some("bytes=-3"), None, 10),
            Partial { start: 7, end: 9 }
        );
        assert_eq!(
            p(None, Some("bytes=-30"), None, 10),
            Partial { start: 0, end: 9 }
        );
        assert_eq!(
            p(None, Some("bytes=5-100"), None, 10),
            Partial { start: 5, end: 9 }
        );
        assert_eq!(p(None, Some("bytes=10-"), None, 10), Unsatisfiable);
        assert_eq!(p(None, Some("bytes=10-12"), None, 10), Unsatisfiable);
        assert_eq!(p(None, Some("bytes=-0"), None, 10), Unsatisfiable);
        assert_eq!(p(None, Some("bytes=0-"), None, 0), Unsatisfiable);
        assert_eq!(p(None, Some("bytes=5-2"), None, 10), Full);
        assert_eq!(p(None, Some("bytes=0-1,4-5"), None, 10), Full);
        assert_eq!(p(None, Some("items=0-1"), None, 10), Full);
        assert_eq!(p(None, Some("bytes=a-b"), None, 10), Full);
        assert_eq!(p(None, Some("bytes=+1-2"), None, 10), Full);
        assert_eq!(
            p(None, Some("bytes=0-1"), Some(e), 10),
            Partial { start: 0, end: 1 }
        );
        assert_eq!(p(None, Some("bytes=0-1"), Some("\"old\""), 10), Full);
        assert_eq!(
            p(
                None,
                Some("bytes=0-1"),
                Some("Wed, 21 Oct 2015 07:28:00 GMT"),
                10
            ),
            Full
        );
    }

    #[test]
    fn content_types() {
        for (name, want) in [
            ("x.db", "application/vnd.sqlite3"),
            ("metadata.txt", "text/plain; charset=utf-8"),
            ("a_00001.h264", "video/h264"),
            ("clip.MP4", "video/mp4"),
            ("noext", "application/octet-stream"),
        ] {
            assert_eq!(content_type(name), want, "{name}");
        }
    }
}
