//! [`ServiceUrl`]: where a daemon, the node or a device answers.
//!
//! Users name services loosely, as upstream's flags did: `localhost`, `127.0.0.1:8090`,
//! `http://node/backup/`, even the endpoint itself (`http://127.0.0.1:8090/status`). One parser
//! turns all of these into a base URL and the URL of the service's endpoint, and refuses what the
//! clients cannot or must not use: other schemes (the services are plain HTTP on the node or the
//! lab LAN), credentials, a query or fragment, a missing host.

use std::fmt;
use std::net::IpAddr;

use reqwest::Url;

/// What a URL points at; decides the endpoint and how errors name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A backup daemon; its endpoint is `/status`.
    Daemon,
    /// The node, as the daemons see it; its endpoint is `/devices`.
    Node,
    /// A device's API (`/id`, `/data/<id>`, ...); no single endpoint.
    Device,
}

impl Role {
    /// The endpoint path below the base (`""` for a device).
    pub const fn endpoint(self) -> &'static str {
        match self {
            Role::Daemon => "status",
            Role::Node => "devices",
            Role::Device => "",
        }
    }

    /// How errors name the service.
    pub const fn noun(self) -> &'static str {
        match self {
            Role::Daemon => "daemon",
            Role::Node => "node",
            Role::Device => "device",
        }
    }
}

/// A validated service address: a base URL (ending in `/`) and its endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUrl {
    role: Role,
    base: Url,
    endpoint: Url,
}

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {} URL {input:?}: {reason}", role.noun())]
pub struct UrlError {
    role: Role,
    input: String,
    reason: String,
}

impl ServiceUrl {
    /// Parses `HOST`, `HOST:PORT` or `http://HOST[:PORT][/PREFIX]` for a service of `role`. A
    /// path that already ends with the role's endpoint names the same service.
    pub fn parse(input: &str, role: Role) -> Result<ServiceUrl, UrlError> {
        let err = |reason: &str| UrlError {
            role,
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let text = input.trim();
        let text = if text.contains("://") {
            text.to_string()
        } else {
            format!("http://{text}")
        };
        let mut base = Url::parse(&text).map_err(|e| err(&e.to_string()))?;
        if base.scheme() != "http" {
            return Err(err("only http:// is supported"));
        }
        if base.host_str().is_none_or(str::is_empty) {
            return Err(err("no host"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(err("a query or fragment is not allowed"));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(err("credentials are not allowed"));
        }
        let path = base.path().trim_end_matches('/').to_string();
        let endpoint = role.endpoint();
        let path = match path.strip_suffix(&format!("/{endpoint}")) {
            Some(prefix) if !endpoint.is_empty() => prefix.to_string(),
            _ => path,
        };
        base.set_path(&format!("{path}/"));
        let endpoint = base.join(endpoint).map_err(|e| err(&e.to_string()))?;
        Ok(ServiceUrl {
            role,
            base,
            endpoint,
        })
    }

    /// A daemon's base URL (see [`ServiceUrl::parse`]).
    pub fn daemon(input: &str) -> Result<ServiceUrl, UrlError> {
        ServiceUrl::parse(input, Role::Daemon)
    }

    /// The node's base URL (see [`ServiceUrl::parse`]).
    pub fn node(input: &str) -> Result<ServiceUrl, UrlError> {
        ServiceUrl::parse(input, Role::Node)
    }

    /// A device's API at `ip:port` (IPv6 in brackets).
    pub fn device(ip: IpAddr, port: u16) -> ServiceUrl {
        let text = match ip {
            IpAddr::V4(v4) => format!("http://{v4}:{port}/"),
            IpAddr::V6(v6) => format!("http://[{v6}]:{port}/"),
        };
        let base = Url::parse(&text).expect("an IP address and a port form a valid URL");
        ServiceUrl {
            role: Role::Device,
            endpoint: base.clone(),
            base,
        }
    }

    /// What the URL points at.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The base URL (always ends with `/`).
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The role's endpoint: `<base>status` for a daemon, `<base>devices` for the node, the base
    /// itself for a device.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// `<base><path>` for a path made of checked segments (a device's `data/<id>`).
    pub fn join(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!(
            "{}{}",
            self.base.path(),
            path.trim_start_matches('/')
        ));
        url
    }
}

impl fmt::Display for ServiceUrl {
    /// The base without its trailing `/` (`http://127.0.0.1:8090`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.base.as_str().trim_end_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_url_forms() {
        let cases = [
            ("http://127.0.0.1:8090", "http://127.0.0.1:8090/status"),
            ("http://127.0.0.1:8090/", "http://127.0.0.1:8090/status"),
            ("127.0.0.1:8093", "http://127.0.0.1:8093/status"),
            ("localhost", "http://localhost/status"),
            ("http://node/backup", "http://node/backup/status"),
            ("http://node/backup/", "http://node/backup/status"),
            (
                "http://127.0.0.1:8090/status",
                "http://127.0.0.1:8090/status",
            ),
        ];
        for (input, status) in cases {
            let url = ServiceUrl::daemon(input).unwrap();
            assert_eq!(url.endpoint().as_str(), status, "{input}");
        }
        assert_eq!(
            ServiceUrl::daemon("http://127.0.0.1:8090/")
                .unwrap()
                .to_string(),
            "http://127.0.0.1:8090"
        );
    }

    #[test]
    fn daemon_url_rejects() {
        for input in [
            "https://127.0.0.1:8090",
            "ftp://x",
            "http://",
            "http://a/?q=1",
            "http://u:p@127.0.0.1/",
            "http://127.0.0.1:99999",
            "",
        ] {
            let err = ServiceUrl::daemon(input).unwrap_err();
            assert!(
                err.to_string().contains("invalid daemon URL"),
                "{input}: {err}"
            );
        }
    }

    /// The forms the daemons' `-i/--server` took (upstream: a host; ours: also `host:port` or a
    /// URL, which may name `/devices` itself).
    #[test]
    fn node_url_forms() {
        let devices = |s: &str| ServiceUrl::node(s).unwrap().endpoint().to_string();
        assert_eq!(devices("localhost"), "http://localhost/devices");
        assert_eq!(devices("127.0.0.1:8080"), "http://127.0.0.1:8080/devices");
        assert_eq!(
            devices("http://127.0.0.1:8080/"),
            "http://127.0.0.1:8080/devices"
        );
        assert_eq!(devices("http://h/devices"), "http://h/devices");
        let err = ServiceUrl::node("https://node").unwrap_err().to_string();
        assert!(err.contains("invalid node URL"), "{err}");
    }

    #[test]
    fn device_urls() {
        let v4 = ServiceUrl::device("127.0.0.10".parse().unwrap(), 9000);
        assert_eq!(v4.to_string(), "http://127.0.0.10:9000");
        assert_eq!(
            v4.join("data/0123456789abcdef0123456789abcdef").as_str(),
            "http://127.0.0.10:9000/data/0123456789abcdef0123456789abcdef"
        );
        assert_eq!(v4.join("/id").as_str(), "http://127.0.0.10:9000/id");
        let v6 = ServiceUrl::device("::1".parse().unwrap(), 9001);
        assert_eq!(v6.join("id").as_str(), "http://[::1]:9001/id");
        assert_eq!(v6.role(), Role::Device);
    }
}
