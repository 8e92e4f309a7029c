//! Where a device's API is: `HOST[:PORT]` targets, as flags, `POST /device/add` and mDNS give
//! them, checked before the node polls them.
//!
//! Addresses come from the network (`POST /device/add` is open to the lab LAN), so only device
//! addresses are accepted: no unspecified, multicast or broadcast address, no port 0, and host
//! names only where an operator typed them (`--device`).

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::poller::shown;

/// The device API port of an ethoscope (`device_server.py -p 9000`).
pub const DEVICE_PORT: u16 = 9000;

/// Where a device's API is: a host (IP or name) and a port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    /// IP literal or host name.
    pub host: String,
    /// Device API port.
    pub port: u16,
}

/// Why an address is not a target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Nothing given.
    #[error("empty address")]
    Empty,
    /// Unspecified, multicast or broadcast.
    #[error("{0} is not a device address")]
    NotADevice(IpAddr),
    /// Port 0.
    #[error("port 0 is not a device port")]
    PortZero,
    /// A port that is not a number from 1 to 65535 (shown shortened).
    #[error("invalid port {0}")]
    BadPort(String),
    /// Not an IP where only IPs are allowed (shown shortened).
    #[error("{0} is not an IP address")]
    NotAnIp(String),
    /// Not a plain host name (shown shortened).
    #[error("{0} is not a host name")]
    NotAHostName(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

fn usable_ip(ip: IpAddr) -> Result<IpAddr, TargetError> {
    if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::from([255, 255, 255, 255]) {
        Err(TargetError::NotADevice(ip))
    } else {
        Ok(ip)
    }
}

fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && !s.starts_with(['-', '.'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

impl Target {
    /// An IP target.
    pub fn ip(ip: IpAddr, port: u16) -> Target {
        Target {
            host: ip.to_string(),
            port,
        }
    }

    /// Parses `HOST[:PORT]`, `IP`, `IP:PORT` or `[IPv6]:PORT`. Host names are allowed only when
    /// `allow_names` (flags may name `ethoscope007.local`; the HTTP endpoint takes IPs only).
    pub fn parse(input: &str, allow_names: bool) -> Result<Target, TargetError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(TargetError::Empty);
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Target::ip(usable_ip(ip)?, DEVICE_PORT));
        }
        if let Ok(sa) = s.parse::<SocketAddr>() {
            if sa.port() == 0 {
                return Err(TargetError::PortZero);
            }
            return Ok(Target::ip(usable_ip(sa.ip())?, sa.port()));
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => {
                let port = p
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| TargetError::BadPort(shown(p)))?;
                (h, port)
            }
            None => (s, DEVICE_PORT),
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Target::ip(usable_ip(ip)?, port));
        }
        if !allow_names {
            return Err(TargetError::NotAnIp(shown(s)));
        }
        if !is_host_name(host) {
            return Err(TargetError::NotAHostName(shown(host)));
        }
        Ok(Target {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// Where a target came from (persisted, so restarts keep manual additions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `--device` flag.
    Flag,
    /// `POST /device/add`.
    Manual,
    /// mDNS.
    Mdns,
    /// Known from an earlier run.
    Known,
}

impl Source {
    /// The word stored in the registry database.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Manual => "manual",
            Source::Mdns => "mdns",
            Source::Known => "known",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert_eq!(
            Target::parse("127.0.0.10", false),
            Ok(Target::ip("127.0.0.10".parse().unwrap(), 9000))
        );
        assert_eq!(
            Target::parse(" 127.0.0.10:9001 ", false),
            Ok(Target::ip("127.0.0.10".parse().unwrap(), 9001))
        );
        assert_eq!(
            Target::parse("[::1]:9001", false).unwrap().to_string(),
            "[::1]:9001"
        );
        assert_eq!(
            Target::parse("Ethoscope007.local", true),
            Ok(Target {
                host: "ethoscope007.local".into(),
                port: 9000
            })
        );
        assert!(Target::parse("ethoscope007.local", false).is_err());
        for bad in [
            "",
            "0.0.0.0",
            "224.0.0.251",
            "255.255.255.255",
            "127.0.0.1:0",
            "127.0.0.1:99999",
            "host:port",
            "a b",
            "../etc",
            "-rf",
            "x;rm",
        ] {
            assert!(Target::parse(bad, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn refusals_say_why() {
        let cases = [
            ("", "empty address"),
            ("0.0.0.0", "0.0.0.0 is not a device address"),
            ("127.0.0.1:0", "port 0 is not a device port"),
            ("host:port", "invalid port \"port\""),
            (
                "ethoscope007.local",
                "\"ethoscope007.local\" is not an IP address",
            ),
        ];
        for (input, message) in cases {
            let err = Target::parse(input, false).unwrap_err();
            assert_eq!(err.to_string(), message, "{input}");
        }
        assert_eq!(
            Target::parse("a b", true).unwrap_err(),
            TargetError::NotAHostName("\"a b\"".into())
        );
        for (source, word) in [
            (Source::Flag, "flag"),
            (Source::Manual, "manual"),
            (Source::Mdns, "mdns"),
            (Source::Known, "known"),
        ] {
            assert_eq!(source.as_str(), word);
            assert_eq!(serde_json::to_value(source).unwrap(), word);
        }
    }
}
