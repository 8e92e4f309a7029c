//! Where a mirror goes, and the checks that keep device-supplied names from choosing any other
//! place.
//!
//! Layout (upstream §3.2):
//! `{results}/{machine_id}/{NAME}/{YYYY-MM-DD_HH-MM-SS}/{YYYY-MM-DD_HH-MM-SS}_{machine_id}.db`, with
//! the `.txt` DAM sidecar and the `.db.lock` next to it. The file name comes from the device's own
//! `METADATA.backup_filename`. Upstream joined device-supplied strings into paths unchecked (bug
//! B2: `..` or absolute components could make the root daemon write anywhere); here the file name
//! must match the firmware's exact pattern with the device's own id, NAME must be a plain name,
//! and directories are created one component at a time, refusing symlinks, so the final path
//! cannot leave the results directory.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use regex::Regex;

use crate::error::{MirrorError, TargetError};

fn filename_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^(\d{4}-\d{2}-\d{2})_(\d{2}-\d{2}-\d{2})_([0-9a-f]{32})\.db$")
            .expect("static regex")
    })
}

fn name_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^[A-Za-z0-9_-]{1,64}$").expect("static regex"))
}

/// The validated location of one experiment's mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The experiment file name, e.g. `2025-07-10_10-00-00_<id>.db`.
    pub file_name: String,
    /// `YYYY-MM-DD_HH-MM-SS` (the experiment directory).
    pub date_time: String,
    /// Path of the directory, relative to the results directory.
    pub relative_dir: PathBuf,
}

impl Target {
    /// Path of the `.db`, relative to the results directory.
    pub fn relative_db(&self) -> PathBuf {
        self.relative_dir.join(&self.file_name)
    }
}

/// Checks a device-supplied experiment file name and device name and builds the relative target.
/// `machine_id` is the device's validated id; the file name must carry exactly that id.
pub fn plan_target(
    backup_filename: &str,
    machine_id: &str,
    device_name: &str,
) -> Result<Target, MirrorError> {
    let shown: String = backup_filename.chars().take(120).collect();
    let caps = filename_re()
        .captures(backup_filename)
        .ok_or_else(|| TargetError::FileName(shown.clone()))?;
    let (date, time, id) = (&caps[1], &caps[2], &caps[3]);
    if id != machine_id {
        return Err(TargetError::ForeignMachine {
            shown,
            named: id.to_string(),
            machine_id: machine_id.to_string(),
        }
        .into());
    }
    if !name_re().is_match(device_name) {
        let shown: String = device_name.chars().take(80).collect();
        return Err(TargetError::DeviceName(shown).into());
    }
    if !name_re().is_match(machine_id) {
        return Err(TargetError::MachineId(machine_id.to_string()).into());
    }
    let date_time = format!("{date}_{time}");
    Ok(Target {
        file_name: backup_filename.to_string(),
        relative_dir: Path::new(machine_id).join(device_name).join(&date_time),
        date_time,
    })
}

/// Creates `root/relative` one component at a time without following symlinks, and returns the
/// absolute directory. `root` itself is created if missing (it is configured, not device-given).
/// Every component of `relative` must be a normal name.
pub fn create_dir_under(root: &Path, relative: &Path) -> Result<PathBuf, MirrorError> {
    let io = |what: &'static str, p: &Path, source: std::io::Error| TargetError::Io {
        what,
        path: p.to_path_buf(),
        source,
    };
    fs::create_dir_all(root).map_err(|e| io("cannot create results directory", root, e))?;
    let root = fs::canonicalize(root).map_err(|e| io("cannot resolve", root, e))?;
    let mut dir = root.clone();
    for comp in relative.components() {
        let std::path::Component::Normal(name) = comp else {
            return Err(TargetError::Component {
                component: format!("{comp:?}"),
                relative: relative.to_path_buf(),
            }
            .into());
        };
        dir.push(name);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => return Err(TargetError::NotADirectory(dir).into()),
            Err(e) if e.kind() == ErrorKind::NotFound => match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    let m = fs::symlink_metadata(&dir).map_err(|e| io("cannot stat", &dir, e))?;
                    if !m.file_type().is_dir() {
                        return Err(TargetError::AppearedNotADirectory(dir).into());
                    }
                }
                Err(e) => return Err(io("cannot create", &dir, e).into()),
            },
            Err(e) => return Err(io("cannot stat", &dir, e).into()),
        }
    }
    // Belt and braces: the result must still be inside the root.
    let real = fs::canonicalize(&dir).map_err(|e| io("cannot resolve", &dir, e))?;
    if !real.starts_with(&root) {
        return Err(TargetError::Outside(dir).into());
    }
    Ok(real)
}

/// Refuses a file path that exists as anything but a regular file (a symlink planted next to the
/// mirror must not redirect the write).
pub fn check_regular_or_missing(path: &Path) -> Result<(), MirrorError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => Ok(()),
        Ok(_) => Err(TargetError::NotARegularFile(path.to_path_buf()).into()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(source) => Err(TargetError::Io {
            what: "cannot stat",
            path: path.to_path_buf(),
            source,
        }
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn accepts_the_firmware_name() {
        let f = format!("2025-07-10_10-00-00_{ID}.db");
        let t = plan_target(&f, ID, "ETHOSCOPE_001").unwrap();
        assert_eq!(t.date_time, "2025-07-10_10-00-00");
        assert_eq!(
            t.relative_db(),
            PathBuf::from(format!("{ID}/ETHOSCOPE_001/2025-07-10_10-00-00/{f}"))
        );
    }

    #[test]
    fn refuses_hostile_names() {
        let other = "ffffffffffffffffffffffffffffffff";
        let good = format!("2025-07-10_10-00-00_{ID}.db");
        for bad in [
            format!("2025-07-10_10-00-00_{other}.db"),
            format!("../2025-07-10_10-00-00_{ID}.db"),
            format!("2025-07-10_10-00-00_{ID}.db/../../x.db"),
            format!("/etc/2025-07-10_10-00-00_{ID}.db"),
            format!("2025-07-10_10-00-00_{ID}.db.db"),
            format!("2025-07-10_10-00-00_{}.db", ID.to_uppercase()),
            "x.db".to_string(),
            String::new(),
        ] {
            let err = plan_target(&bad, ID, "ETHOSCOPE_001").unwrap_err();
            assert!(matches!(err, MirrorError::BadTarget(_)), "{bad}: {err}");
        }
        assert!(plan_target(&good, ID, "ETHOSCOPE_001").is_ok());
        for name in ["..", "../etc", "a/b", "", ".", "ETHOSCOPE 1", "x\0"] {
            assert!(plan_target(&good, ID, name).is_err(), "{name}");
        }
        let err = plan_target(&format!("2025-07-10_10-00-00_{other}.db"), ID, "E").unwrap_err();
        let text = etho_model::error_chain(&err);
        assert!(
            text.starts_with("refused to write the mirror: backup_filename"),
            "{text}"
        );
        assert!(text.contains(other), "{text}");
    }

    #[test]
    fn directories_never_follow_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("results");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        let dir = create_dir_under(&root, Path::new("a/b/c")).unwrap();
        assert!(dir.ends_with("results/a/b/c") && dir.is_dir());
        std::os::unix::fs::symlink(&outside, root.join("evil")).unwrap();
        assert!(create_dir_under(&root, Path::new("evil/x")).is_err());
        assert!(fs::read_dir(&outside).unwrap().next().is_none());
        assert!(create_dir_under(&root, Path::new("../x")).is_err());
        assert!(!tmp.path().join("x").exists());
        let file = dir.join("f.db");
        assert!(check_regular_or_missing(&file).is_ok());
        std::os::unix::fs::symlink(outside.join("target"), &file).unwrap();
        assert!(check_regular_or_missing(&file).is_err());
    }
}
