//! Runs one full archive rescan (what the daemon does periodically) and prints per-root totals
//! and the time taken. Used by `bench/rsync.sh` to compare against `du -sb` on the same tree.
//!
//! Usage: `rescan <results_dir> <videos_dir>`

use std::path::PathBuf;
use std::time::Instant;

use etho_rsync_backup::sizes::{rescan, SizeIndex, TreeSize};
use etho_rsync_backup::Kind;

fn main() -> std::process::ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [results, videos] = args.as_slice() else {
        eprintln!("usage: rescan <results_dir> <videos_dir>");
        return std::process::ExitCode::from(2);
    };
    let index = SizeIndex::new();
    let started = Instant::now();
    let info = rescan(
        &index,
        &[
            (Kind::Results, results.as_path()),
            (Kind::Videos, videos.as_path()),
        ],
    );
    let took = started.elapsed();
    for e in &info.errors {
        eprintln!("{e}");
    }
    let total = index.totals();
    let sum = |t: &TreeSize| format!("{} files, {} bytes", t.files, t.bytes);
    println!(
        "{} device trees; results {}; videos {}; {:.3} s",
        info.trees,
        sum(&total.0),
        sum(&total.1),
        took.as_secs_f64()
    );
    if info.errors.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
