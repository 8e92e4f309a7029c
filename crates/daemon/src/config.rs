//! Upstream's node configuration file, read only.
//!
//! `/etc/ethoscope/ethoscope.conf` is JSON; the daemons only need `folders.results.path` and
//! `folders.video.path`. Upstream's configuration class rewrote (and migrated) the file whenever it
//! was constructed; we never write it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;

/// Upstream's default configuration directory.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/ethoscope";
/// Upstream's default results folder.
pub const DEFAULT_RESULTS: &str = "/ethoscope_data/results";
/// Upstream's default videos folder.
pub const DEFAULT_VIDEOS: &str = "/ethoscope_data/videos";

/// The folders the backup daemons write to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folders {
    /// `folders.results.path`.
    pub results: PathBuf,
    /// `folders.video.path`.
    pub videos: PathBuf,
}

impl Default for Folders {
    fn default() -> Self {
        Folders {
            results: DEFAULT_RESULTS.into(),
            videos: DEFAULT_VIDEOS.into(),
        }
    }
}

/// Creates `dir` (and its parents) and makes it private (0700), also when it existed with a
/// wider mode: a daemon's state (status table, staging, partial files, pinned host keys) is
/// nobody else's to read, whatever the operator's umask.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Reads `<config_dir>/ethoscope.conf`. With `None`, the default directory is used when the file
/// exists there and upstream's defaults otherwise. An explicitly given directory must hold a
/// readable file; invalid JSON is an error either way.
pub fn load_folders(config_dir: Option<&Path>) -> anyhow::Result<Folders> {
    let (path, required) = match config_dir {
        Some(dir) => (dir.join("ethoscope.conf"), true),
        None => (Path::new(DEFAULT_CONFIG_DIR).join("ethoscope.conf"), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if !required && err.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Folders::default());
        }
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    };
    let doc: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    let folder = |name: &str, default: &str| -> PathBuf {
        doc.get("folders")
            .and_then(|f| f.get(name))
            .and_then(|f| f.get("path"))
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
            .map_or_else(|| PathBuf::from(default), PathBuf::from)
    };
    Ok(Folders {
        results: folder("results", DEFAULT_RESULTS),
        videos: folder("video", DEFAULT_VIDEOS),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_directories_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("a/state");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
        private_dir(&state).unwrap();
        let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        private_dir(&dir.path().join("b")).unwrap();
        let mode = std::fs::metadata(dir.path().join("b"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn reads_folders_and_never_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ethoscope.conf");
        let text = r#"{"folders": {"results": {"path": "/data/r"}, "video": {"path": "/data/v"}}}"#;
        std::fs::write(&path, text).unwrap();
        let f = load_folders(Some(dir.path())).unwrap();
        assert_eq!(f.results, PathBuf::from("/data/r"));
        assert_eq!(f.videos, PathBuf::from("/data/v"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn missing_keys_fall_back_and_bad_json_fails() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ethoscope.conf"), r#"{"folders": {}}"#).unwrap();
        assert_eq!(load_folders(Some(dir.path())).unwrap(), Folders::default());
        std::fs::write(dir.path().join("ethoscope.conf"), "{not json").unwrap();
        assert!(load_folders(Some(dir.path())).is_err());
        let empty = tempfile::tempdir().unwrap();
        assert!(load_folders(Some(empty.path())).is_err());
    }
}
