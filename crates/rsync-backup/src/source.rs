//! The `--source` template: where a device's data directory is, as an rsync source.
//!
//! The default, `ethoscope@{ip}:/ethoscope_data`, is an ssh pull as on a real node. The daemon
//! form `rsync://host:port/module` (or `host::module`) is what the simulated fleet and the tests
//! serve, and a plain local path works for data mounted on the node. Only the validated device
//! fields `{ip}`, `{id}` and `{name}` can be substituted, so nothing a device reports can smuggle
//! rsync options or path components into the command line.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use etho_model::device::DeviceInfo;

use crate::config::Kind;

/// upstream's fixed source, now a default.
pub const DEFAULT_SOURCE: &str = "ethoscope@{ip}:/ethoscope_data";

/// How rsync reaches the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `[user@]host:path`: rsync over ssh (`-e ssh …`).
    Ssh,
    /// `rsync://host[:port]/module…` or `host::module…`: an rsync daemon.
    Daemon,
    /// A path on this machine.
    Local,
}

/// A validated source template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceTemplate {
    template: String,
    transport: Transport,
}

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// Empty template.
    #[error("the source template is empty")]
    Empty,
    /// A `{...}` other than `{ip}`, `{id}`, `{name}`, or an unbalanced brace.
    #[error("the source template {template:?} has an unknown or unbalanced placeholder {found:?} (allowed: {{ip}}, {{id}}, {{name}})")]
    Placeholder {
        /// The template.
        template: String,
        /// The offending text.
        found: String,
    },
    /// Starts with `-` (would be read as an rsync option) or holds control characters.
    #[error("the source template {0:?} would not be read as a path by rsync")]
    Unsafe(String),
}

impl FromStr for SourceTemplate {
    type Err = TemplateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(TemplateError::Empty);
        }
        if s.starts_with('-') || s.chars().any(char::is_control) {
            return Err(TemplateError::Unsafe(s.to_string()));
        }
        let mut rest = s;
        while let Some(open) = rest.find(['{', '}']) {
            if rest[open..].starts_with('}') {
                return Err(placeholder_error(s, "}"));
            }
            let after = &rest[open..];
            let close = after.find('}').ok_or_else(|| placeholder_error(s, after))?;
            let name = &after[..=close];
            if !matches!(name, "{ip}" | "{id}" | "{name}") {
                return Err(placeholder_error(s, name));
            }
            rest = &after[close + 1..];
        }
        Ok(SourceTemplate {
            template: s.to_string(),
            transport: transport_of(s),
        })
    }
}

fn placeholder_error(template: &str, found: &str) -> TemplateError {
    TemplateError::Placeholder {
        template: template.to_string(),
        found: found.chars().take(20).collect(),
    }
}

fn transport_of(s: &str) -> Transport {
    if s.starts_with("rsync://") {
        return Transport::Daemon;
    }
    // rsync's own rule: a colon before the first slash makes it remote; `::` means a daemon.
    let head = s.split('/').next().unwrap_or("");
    // `[v6]` hosts contain colons inside the brackets.
    let head_outside_brackets = match (head.find('['), head.rfind(']')) {
        (Some(a), Some(b)) if a < b => format!("{}{}", &head[..a], &head[b + 1..]),
        _ => head.to_string(),
    };
    if head_outside_brackets.contains("::") {
        Transport::Daemon
    } else if head_outside_brackets.contains(':') {
        Transport::Ssh
    } else {
        Transport::Local
    }
}

impl Default for SourceTemplate {
    fn default() -> Self {
        SourceTemplate {
            template: DEFAULT_SOURCE.to_string(),
            transport: Transport::Ssh,
        }
    }
}

impl fmt::Display for SourceTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.template)
    }
}

impl SourceTemplate {
    /// How rsync reaches devices with this template.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The device's data directory as an rsync source (no trailing slash). An IPv6 `{ip}` is
    /// written in brackets, as both ssh-style and `rsync://` sources need.
    pub fn expand(&self, device: &DeviceInfo) -> String {
        let ip = match device.ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        self.template
            .replace("{ip}", &ip)
            .replace("{id}", &device.id)
            .replace("{name}", &device.name)
    }

    /// The source of one of the device's trees: `<base>/<kind>/<id>/`. The trailing slash makes
    /// rsync copy the directory's contents into the destination (the device's own directory).
    pub fn subtree(&self, device: &DeviceInfo, kind: Kind) -> String {
        format!("{}{}/{}/", self.base(device), kind.as_str(), device.id)
    }

    /// The device's data directory as a transfer root, ending in `/` (or `host:` for the remote
    /// home directory). Re-read passes list paths below it: an rsync daemon does not find files
    /// listed with `--files-from` below a subdirectory of its module.
    pub fn base(&self, device: &DeviceInfo) -> String {
        let base = self.expand(device);
        if base.ends_with(':') {
            // `host:` is the remote home directory; keep it relative.
            base
        } else {
            format!("{}/", base.trim_end_matches('/'))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn device(ip: &str) -> DeviceInfo {
        DeviceInfo::from_entry(
            ID,
            &json!({"id": ID, "name": "ETHOSCOPE_001", "ip": ip, "status": "running"}),
        )
        .unwrap()
    }

    #[test]
    fn default_is_ssh_to_ethoscope_data() {
        let t = SourceTemplate::default();
        assert_eq!(t.transport(), Transport::Ssh);
        assert_eq!(
            t.subtree(&device("10.0.0.5"), Kind::Results),
            format!("ethoscope@10.0.0.5:/ethoscope_data/results/{ID}/")
        );
        assert_eq!(t, DEFAULT_SOURCE.parse().unwrap());
    }

    #[test]
    fn daemon_forms() {
        let t: SourceTemplate = "rsync://{ip}:8873/ethoscope_data/".parse().unwrap();
        assert_eq!(t.transport(), Transport::Daemon);
        assert_eq!(
            t.subtree(&device("127.0.0.3"), Kind::Videos),
            format!("rsync://127.0.0.3:8873/ethoscope_data/videos/{ID}/")
        );
        let t: SourceTemplate = "{ip}::ethoscope_data".parse().unwrap();
        assert_eq!(t.transport(), Transport::Daemon);
        assert_eq!(t.base(&device("127.0.0.3")), "127.0.0.3::ethoscope_data/");
        let t: SourceTemplate = "rsync://{ip}/data".parse().unwrap();
        assert_eq!(
            t.subtree(&device("::1"), Kind::Results),
            format!("rsync://[::1]/data/results/{ID}/")
        );
    }

    #[test]
    fn ssh_local_and_name_id_placeholders() {
        let t: SourceTemplate = "root@{ip}:/srv/{name}".parse().unwrap();
        assert_eq!(t.transport(), Transport::Ssh);
        assert_eq!(
            t.subtree(&device("127.0.0.2"), Kind::Results),
            format!("root@127.0.0.2:/srv/ETHOSCOPE_001/results/{ID}/")
        );
        let t: SourceTemplate = "/mnt/devices/{id}".parse().unwrap();
        assert_eq!(t.transport(), Transport::Local);
        assert_eq!(
            t.subtree(&device("127.0.0.2"), Kind::Videos),
            format!("/mnt/devices/{ID}/videos/{ID}/")
        );
        let t: SourceTemplate = "[fe80::1]:/data".parse().unwrap();
        assert_eq!(t.transport(), Transport::Ssh);
        let t: SourceTemplate = "ethoscope@{ip}:".parse().unwrap();
        assert_eq!(
            t.subtree(&device("127.0.0.2"), Kind::Results),
            format!("ethoscope@127.0.0.2:results/{ID}/")
        );
    }

    #[test]
    fn refuses_bad_templates() {
        for bad in [
            "",
            "-e sh",
            "x@{host}:/d",
            "x@{ip:/d",
            "x@ip}:/d",
            "a\nb",
            "{IP}:/d",
        ] {
            assert!(bad.parse::<SourceTemplate>().is_err(), "{bad:?}");
        }
    }
}
