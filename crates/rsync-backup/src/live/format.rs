//! What the bytes of a database, its WAL and its rollback journal say (pure, no SQLite).
//!
//! The consistency rules in [`super::decide`] only need a few facts that SQLite writes at fixed
//! places, documented in SQLite's file format page:
//!
//! - the database header: the magic string, the page size and bytes 18–19 (1 = rollback journal,
//!   2 = WAL);
//! - the WAL header: magic, page size, checkpoint sequence and the two salts. SQLite rewrites the
//!   WAL from its start after a complete checkpoint ("reset"), with salt-1 incremented and a new
//!   random salt-2, so equal salts mean "no reset in between";
//! - the WAL frames: each carries the header's salts and a checksum chained over every earlier
//!   frame, so a reader (SQLite's recovery, and [`scan_wal`]) knows exactly which frames belong
//!   to the current generation. A frame right after the valid ones that carries salt-1 + 1 was
//!   written by a newer generation, i.e. the WAL was reset while it was being read;
//! - a rollback journal is "hot" (rolled back by the next opener) only if it starts with the
//!   journal magic; TRUNCATE and PERSIST modes empty or zero it after a commit.

use std::io::{self, Read};

/// First 16 bytes of every SQLite 3 database.
pub const DB_MAGIC: &[u8; 16] = b"SQLite format 3\0";
/// First 8 bytes of a rollback journal that can be played back.
pub const JOURNAL_MAGIC: [u8; 8] = [0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7];
const WAL_MAGIC_LE: u32 = 0x377f_0682;
const WAL_MAGIC_BE: u32 = 0x377f_0683;
const WAL_HEADER: usize = 32;
const FRAME_HEADER: usize = 24;

/// How a database file says it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DbMode {
    /// Bytes 18–19 are 2: write-ahead log.
    Wal,
    /// Bytes 18–19 are 1: a rollback journal (DELETE, TRUNCATE, PERSIST, MEMORY or OFF).
    Rollback,
}

/// The facts of a database header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbHeader {
    /// Page size in bytes.
    pub page_size: u32,
    /// Journal kind.
    pub mode: DbMode,
}

/// Reads the first 100 bytes of a database. `None` when they are not an SQLite 3 header.
pub fn parse_db_header(head: &[u8]) -> Option<DbHeader> {
    if head.len() < 100 || &head[..16] != DB_MAGIC {
        return None;
    }
    let raw = u32::from(u16::from_be_bytes([head[16], head[17]]));
    // 1 stands for 65536.
    let page_size = if raw == 1 { 65_536 } else { raw };
    if !(512..=65_536).contains(&page_size) || !page_size.is_power_of_two() {
        return None;
    }
    let mode = match (head[18], head[19]) {
        (2, 2) => DbMode::Wal,
        (1, 1) => DbMode::Rollback,
        // Mixed or unknown versions: SQLite opens such a file read-only at best.
        _ => return None,
    };
    Some(DbHeader { page_size, mode })
}

/// Identity of one WAL generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WalSalts {
    /// Salt-1 (incremented by every reset).
    pub salt1: u32,
    /// Salt-2 (random per reset).
    pub salt2: u32,
}

/// What a WAL file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalInfo {
    /// The generation.
    pub salts: WalSalts,
    /// Checkpoint sequence number from the header.
    pub checkpoint_seq: u32,
    /// Page size the WAL was written for.
    pub page_size: u32,
    /// Frames up to and including the last valid commit frame: what recovery keeps.
    pub committed_frames: u32,
    /// A frame of the next generation follows the valid ones: the WAL was reset while it was
    /// being read, and frames of this generation may be missing.
    pub newer_generation: bool,
}

/// A WAL file, as far as a reader is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalState {
    /// No WAL file.
    Absent,
    /// A file without a valid header (empty, truncated or garbage): SQLite ignores it.
    Empty,
    /// A valid header (possibly with no committed frame yet).
    Valid(WalInfo),
}

impl WalState {
    /// The generation, for a valid WAL.
    pub fn salts(&self) -> Option<WalSalts> {
        match self {
            WalState::Valid(w) => Some(w.salts),
            _ => None,
        }
    }

    /// Whether recovery would apply any frame.
    pub fn has_commits(&self) -> bool {
        matches!(self, WalState::Valid(w) if w.committed_frames > 0)
    }
}

struct Checksum {
    big_endian: bool,
    s0: u32,
    s1: u32,
}

impl Checksum {
    fn add(&mut self, data: &[u8]) {
        for pair in data.chunks_exact(8) {
            let word = |b: &[u8]| {
                let a = [b[0], b[1], b[2], b[3]];
                if self.big_endian {
                    u32::from_be_bytes(a)
                } else {
                    u32::from_le_bytes(a)
                }
            };
            self.s0 = self.s0.wrapping_add(word(&pair[..4])).wrapping_add(self.s1);
            self.s1 = self.s1.wrapping_add(word(&pair[4..])).wrapping_add(self.s0);
        }
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads a whole WAL file from `r` and tells which frames recovery would keep. Reads frame by
/// frame, so memory stays at one page.
pub fn scan_wal(mut r: impl Read) -> io::Result<WalState> {
    let mut header = [0u8; WAL_HEADER];
    if !read_full(&mut r, &mut header)? {
        return Ok(WalState::Empty);
    }
    let magic = be32(&header, 0);
    if magic != WAL_MAGIC_LE && magic != WAL_MAGIC_BE {
        return Ok(WalState::Empty);
    }
    let page_size = be32(&header, 8);
    if !(512..=65_536).contains(&page_size) || !page_size.is_power_of_two() {
        return Ok(WalState::Empty);
    }
    let mut sum = Checksum {
        big_endian: magic == WAL_MAGIC_BE,
        s0: 0,
        s1: 0,
    };
    sum.add(&header[..24]);
    if (sum.s0, sum.s1) != (be32(&header, 24), be32(&header, 28)) {
        return Ok(WalState::Empty);
    }
    let salts = WalSalts {
        salt1: be32(&header, 16),
        salt2: be32(&header, 20),
    };
    let mut info = WalInfo {
        salts,
        checkpoint_seq: be32(&header, 12),
        page_size,
        committed_frames: 0,
        newer_generation: false,
    };
    let mut frame = vec![0u8; FRAME_HEADER + page_size as usize];
    let mut index = 0u32;
    loop {
        if !read_full(&mut r, &mut frame)? {
            break;
        }
        let (fs1, fs2) = (be32(&frame, 8), be32(&frame, 12));
        if fs1 != salts.salt1 || fs2 != salts.salt2 {
            info.newer_generation = fs1 == salts.salt1.wrapping_add(1);
            break;
        }
        sum.add(&frame[..8]);
        sum.add(&frame[FRAME_HEADER..]);
        if be32(&frame, 0) == 0 || (sum.s0, sum.s1) != (be32(&frame, 16), be32(&frame, 20)) {
            break;
        }
        index += 1;
        if be32(&frame, 4) != 0 {
            info.committed_frames = index;
        }
    }
    Ok(WalState::Valid(info))
}

/// Fills `buf` completely; false at end of input before that.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Whether a rollback journal's first bytes make it one SQLite would play back.
pub fn journal_is_hot(head: &[u8]) -> bool {
    head.len() >= JOURNAL_MAGIC.len() && head[..JOURNAL_MAGIC.len()] == JOURNAL_MAGIC
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WAL with `frames` frames of `page` bytes, commit flag on the frames listed in
    /// `commits`, checksummed like SQLite does (little-endian magic).
    fn wal(page: u32, salts: (u32, u32), frames: u32, commits: &[u32]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut h = Vec::new();
        h.extend(WAL_MAGIC_LE.to_be_bytes());
        h.extend(3_007_000u32.to_be_bytes());
        h.extend(page.to_be_bytes());
        h.extend(7u32.to_be_bytes());
        h.extend(salts.0.to_be_bytes());
        h.extend(salts.1.to_be_bytes());
        let mut sum = Checksum {
            big_endian: false,
            s0: 0,
            s1: 0,
        };
        sum.add(&h);
        h.extend(sum.s0.to_be_bytes());
        h.extend(sum.s1.to_be_bytes());
        out.extend(&h);
        for i in 1..=frames {
            let mut f = Vec::new();
            f.extend(i.to_be_bytes());
            let size: u32 = if commits.contains(&i) { i } else { 0 };
            f.extend(size.to_be_bytes());
            let data = vec![i as u8; page as usize];
            sum.add(&f);
            sum.add(&data);
            f.extend(salts.0.to_be_bytes());
            f.extend(salts.1.to_be_bytes());
            f.extend(sum.s0.to_be_bytes());
            f.extend(sum.s1.to_be_bytes());
            f.extend(data);
            out.extend(f);
        }
        out
    }

    fn scan(b: &[u8]) -> WalState {
        scan_wal(b).unwrap()
    }

    #[test]
    fn wal_frames_and_generations() {
        let w = wal(512, (10, 99), 3, &[1, 3]);
        let WalState::Valid(info) = scan(&w) else {
            panic!()
        };
        assert_eq!(
            info.salts,
            WalSalts {
                salt1: 10,
                salt2: 99
            }
        );
        assert_eq!((info.checkpoint_seq, info.page_size), (7, 512));
        assert_eq!(info.committed_frames, 3);
        assert!(!info.newer_generation);

        // A torn last frame: recovery keeps the commits before it.
        let cut = &w[..w.len() - 100];
        assert!(matches!(scan(cut), WalState::Valid(i) if i.committed_frames == 1));
        // A frame after an uncommitted one does not count.
        let w2 = wal(512, (10, 99), 3, &[1]);
        assert!(matches!(scan(&w2), WalState::Valid(i) if i.committed_frames == 1));
        // A broken checksum ends the valid frames.
        let mut bad = w.clone();
        let second_frame_data = 32 + (24 + 512) + 24 + 10;
        bad[second_frame_data] ^= 1;
        assert!(matches!(scan(&bad), WalState::Valid(i) if i.committed_frames == 1));

        // The next generation overwrote frames while the file was read: flagged.
        let next = wal(512, (11, 5), 2, &[1, 2]);
        let mut mixed = w.clone();
        let frame = 24 + 512;
        mixed[32 + frame..32 + 2 * frame].copy_from_slice(&next[32..32 + frame]);
        assert!(matches!(scan(&mixed), WalState::Valid(i)
            if i.committed_frames == 1 && i.newer_generation));
        // Stale frames of an older generation are not.
        let old = wal(512, (9, 5), 2, &[1, 2]);
        let mut stale = w.clone();
        stale[32 + frame..32 + 2 * frame].copy_from_slice(&old[32..32 + frame]);
        assert!(matches!(scan(&stale), WalState::Valid(i)
            if i.committed_frames == 1 && !i.newer_generation));

        for empty in [&b""[..], b"wal", &[0u8; 32], &w[..31]] {
            assert_eq!(scan(empty), WalState::Empty, "{empty:?}");
        }
        let mut bad_header = w.clone();
        bad_header[17] ^= 1;
        assert_eq!(scan(&bad_header), WalState::Empty);
    }

    /// The scanner agrees with SQLite itself about a real WAL (big or little endian, whatever
    /// this machine writes), and about its reset.
    #[test]
    fn real_wal_from_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
             CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);
             INSERT INTO t (v) VALUES (randomblob(3000));
             INSERT INTO t (v) VALUES (randomblob(3000));",
        )
        .unwrap();
        let wal_path = dir.path().join("x.db-wal");
        let first = scan(&std::fs::read(&wal_path).unwrap());
        let WalState::Valid(a) = first else { panic!() };
        assert!(a.committed_frames >= 3);
        c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .unwrap();
        c.execute("INSERT INTO t (v) VALUES (x'00')", []).unwrap();
        let WalState::Valid(b) = scan(&std::fs::read(&wal_path).unwrap()) else {
            panic!()
        };
        assert_eq!(b.salts.salt1, a.salts.salt1.wrapping_add(1), "reset");
        assert_eq!(b.checkpoint_seq, a.checkpoint_seq + 1);
        assert_eq!(b.committed_frames, 1);
        // Frames of the previous generation follow: older, so not flagged.
        assert!(!b.newer_generation);
        let head = std::fs::read(&db).unwrap();
        assert_eq!(
            parse_db_header(&head),
            Some(DbHeader {
                page_size: 4096,
                mode: DbMode::Wal
            })
        );
    }

    #[test]
    fn database_headers_and_journals() {
        let mut h = vec![0u8; 100];
        h[..16].copy_from_slice(DB_MAGIC);
        h[16..18].copy_from_slice(&4096u16.to_be_bytes());
        h[18] = 1;
        h[19] = 1;
        assert_eq!(
            parse_db_header(&h),
            Some(DbHeader {
                page_size: 4096,
                mode: DbMode::Rollback
            })
        );
        h[16..18].copy_from_slice(&1u16.to_be_bytes());
        h[18] = 2;
        h[19] = 2;
        assert_eq!(parse_db_header(&h).map(|d| d.page_size), Some(65_536));
        h[19] = 1;
        assert_eq!(parse_db_header(&h), None);
        assert_eq!(parse_db_header(&h[..50]), None);
        assert_eq!(parse_db_header(&[0u8; 100]), None);

        let mut j = JOURNAL_MAGIC.to_vec();
        j.extend([0u8; 20]);
        assert!(journal_is_hot(&j));
        assert!(!journal_is_hot(&[0u8; 28]));
        assert!(!journal_is_hot(b"j"));
    }
}
