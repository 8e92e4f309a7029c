//! `GET /archive/<id>/<name>/<date>.zip`: one experiment folder (results and videos) as a zip
//! built while it is sent, never written to disk.
//!
//! The `zip` crate writes synchronously, so the archive is written on a blocking thread into a
//! [`ChannelWriter`]: chunks go through a bounded channel to the response body, and a slow client
//! slows the writer down instead of filling memory. Entries are named
//! `<id>/<name>/<date>/<file>`, so unzipping into a folder gives the layout scopr and ethoscopy
//! read. Every entry is one consistent version: files are read from descriptors opened without
//! following links, and mirror databases from a snapshot ([`super::download::open_snapshot`]).
//! Databases and text are deflated (fast level), videos stored as they are.
//!
//! If a file cannot be read halfway, the stream ends with an error: the client sees a broken
//! transfer, never a zip that silently lacks a file.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use zip::write::SimpleFileOptions;
use zip::CompressionMethod;

use super::download::{is_db, open_snapshot};
use super::fsx::{self, EntryKind, ExperimentDir};
use super::index::{Root, Roots};
use super::names::{ExperimentRef, Name};

/// Bytes per chunk sent to the client.
const CHUNK: usize = 256 * 1024;

/// Files at least this big get zip64 headers (their size may not fit 32 bits once compressed
/// data descriptors are written).
const LARGE: u64 = 0xF000_0000;

/// A `Write` that sends full chunks through a bounded channel, blocking while it is full.
pub struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: BytesMut,
}

impl ChannelWriter {
    /// A writer feeding `tx`.
    pub fn new(tx: mpsc::Sender<io::Result<Bytes>>) -> ChannelWriter {
        ChannelWriter {
            tx,
            buf: BytesMut::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// One file to put into the zip.
pub struct Member {
    /// Its root.
    pub root: Root,
    /// Its experiment directory, opened.
    pub dir: Arc<ExperimentDir>,
    /// Its name.
    pub name: Name,
}

/// The files of an experiment in both roots, in name order (results first; a videos file with
/// the name of a results file is left out). Empty when the experiment does not exist.
pub fn members(roots: &Roots, exp: &ExperimentRef) -> Vec<Member> {
    let mut out: Vec<Member> = Vec::new();
    for root in [Root::Results, Root::Videos] {
        let Ok(dir) = ExperimentDir::open(roots.path(root), exp) else {
            continue;
        };
        let Ok(list) = fsx::list(&dir.fd) else {
            continue;
        };
        let dir = Arc::new(dir);
        let mut names: Vec<Name> = list
            .into_iter()
            .filter(|(_, kind)| *kind == EntryKind::File)
            .filter_map(|(name, _)| Name::file(&name))
            .filter(|name| !out.iter().any(|m| m.name == *name))
            .collect();
        names.sort();
        out.extend(names.into_iter().map(|name| Member {
            root,
            dir: Arc::clone(&dir),
            name,
        }));
    }
    out
}

fn options_for(name: &Name, len: u64, mtime: i64) -> SimpleFileOptions {
    let compress = [".db", ".txt", ".csv", ".json"]
        .iter()
        .any(|ext| name.as_str().ends_with(ext));
    let mut options = SimpleFileOptions::default()
        .unix_permissions(0o644)
        .large_file(len >= LARGE);
    options = if compress {
        options
            .compression_method(CompressionMethod::Deflated)
            .compression_level(Some(1))
    } else {
        options.compression_method(CompressionMethod::Stored)
    };
    if let Some(time) = chrono::DateTime::from_timestamp(mtime, 0)
        .and_then(|t| zip::DateTime::try_from(t.naive_utc()).ok())
    {
        options = options.last_modified_time(time);
    }
    options
}

/// Writes the zip of `members` into `out`. Runs on a blocking thread.
/// `snapshot_permit` is called (and its result held) around each mirror snapshot.
pub fn write<P>(
    exp: &ExperimentRef,
    members: Vec<Member>,
    tmp: &Path,
    snapshot_permit: &dyn Fn() -> Option<P>,
    out: ChannelWriter,
) -> io::Result<()> {
    let mut zip = zip::ZipWriter::new_stream(out);
    for m in members {
        let mirror =
            m.root == Root::Results && is_db(&m.name) && fsx::has_mirror_lock(&m.dir.fd, &m.name);
        let opened = if mirror {
            let _permit = snapshot_permit();
            open_snapshot(&m.dir, &m.name, tmp)?
        } else {
            let (file, fp) = fsx::open_file(&m.dir.fd, &m.name)?;
            super::download::Opened {
                file,
                len: fp.size,
                etag: String::new(),
                mtime: fp.mtime(),
            }
        };
        let entry = format!("{}/{}", exp.path(), m.name);
        zip.start_file(entry, options_for(&m.name, opened.len, opened.mtime))
            .map_err(io::Error::other)?;
        let copied = io::copy(&mut (&opened.file).take(opened.len), &mut zip)?;
        if copied != opened.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{}: shrank while it was read", m.name),
            ));
        }
    }
    let mut out = zip.finish().map_err(io::Error::other)?.into_inner();
    out.flush()
}
