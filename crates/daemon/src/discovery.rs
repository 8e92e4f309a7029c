//! The node's device list, as the backup daemons see it.
//!
//! Both daemons ask the node (`GET http://<server>/devices`, upstream's `-i/--server`, default
//! `localhost` i.e. port 80) instead of talking to devices. The answer is untrusted: a node error
//! answer (`{"error": "<traceback>"}` with HTTP 200, which crashed upstream's discovery), a
//! non-object, an oversized body or invalid entries all become clear errors or rejected entries,
//! never a panic.

use std::time::Duration;

use etho_model::device::{parse_device_map, DeviceInfo};
use futures::StreamExt;

/// Largest `/devices` body accepted.
pub const MAX_BODY: usize = 32 * 1024 * 1024;

/// What one successful discovery returned.
#[derive(Debug, Clone, Default)]
pub struct Discovered {
    /// Valid device entries.
    pub devices: Vec<DeviceInfo>,
    /// Entries that failed validation, as `"<key>: <problem>"`.
    pub rejected: Vec<String>,
}

/// Client for the node's `GET /devices`.
#[derive(Debug, Clone)]
pub struct NodeClient {
    url: String,
    http: reqwest::Client,
}

/// Turns upstream's `-i` value (`host`, `host:port`, or a full `http://` URL) into the devices URL.
pub fn devices_url(server: &str) -> String {
    let server = server.trim().trim_end_matches('/');
    if server.starts_with("http://") || server.starts_with("https://") {
        if server.ends_with("/devices") {
            server.to_string()
        } else {
            format!("{server}/devices")
        }
    } else {
        format!("http://{server}/devices")
    }
}

impl NodeClient {
    /// A client for `server` with the given whole-request timeout.
    pub fn new(server: &str, timeout: Duration) -> anyhow::Result<NodeClient> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .no_proxy()
            .build()?;
        Ok(NodeClient {
            url: devices_url(server),
            http,
        })
    }

    /// The URL asked.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Fetches and validates the device list. `Err` is a one-line reason.
    pub async fn fetch(&self) -> Result<Discovered, String> {
        let url = &self.url;
        let resp = self
            .http
            .get(url)
            .header("Content-Type", "application/json")
            .send()
            .await
            .map_err(|e| format!("cannot reach the node at {url}: {}", error_chain(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("node at {url} answered HTTP {status}"));
        }
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                format!(
                    "error reading the node's answer from {url}: {}",
                    error_chain(&e)
                )
            })?;
            if body.len() + chunk.len() > MAX_BODY {
                return Err(format!(
                    "node answer from {url} exceeds {} MiB",
                    MAX_BODY >> 20
                ));
            }
            body.extend_from_slice(&chunk);
        }
        let doc: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("node at {url} answered invalid JSON: {e}"))?;
        let (devices, rejected) = parse_device_map(&doc)?;
        Ok(Discovered { devices, rejected })
    }
}

/// `err` and its sources joined with `": "`, for one-line messages.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut src = err.source();
    while let Some(e) = src {
        let msg = e.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        src = e.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_url_forms() {
        assert_eq!(devices_url("localhost"), "http://localhost/devices");
        assert_eq!(
            devices_url("127.0.0.1:8080"),
            "http://127.0.0.1:8080/devices"
        );
        assert_eq!(
            devices_url("http://127.0.0.1:8080/"),
            "http://127.0.0.1:8080/devices"
        );
        assert_eq!(devices_url("http://h/devices"), "http://h/devices");
    }
}
