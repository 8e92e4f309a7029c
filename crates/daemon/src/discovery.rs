//! The node's device list, as the backup daemons see it.
//!
//! Both daemons ask the node (`GET http://<server>/devices`, upstream's `-i/--server`, default
//! `localhost` i.e. port 80) instead of talking to devices. The answer is untrusted: a node error
//! answer (`{"error": "<traceback>"}` with HTTP 200, which crashed upstream's discovery), a
//! non-object, an oversized body or invalid entries all become clear errors or rejected entries,
//! never a panic. The fetch itself is [`etho_http::fetch_json`].

use std::time::Duration;

use etho_http::{FetchError, ServiceUrl, UrlError};
use etho_model::device::{parse_device_map, DeviceInfo, DeviceMapError};

/// Largest `/devices` body accepted: the most our node can produce
/// ([`etho_model::device::MAX_DEVICE_MAP_BYTES`], 2048 devices of at most 24 KiB each).
pub const MAX_BODY: usize = etho_model::device::MAX_DEVICE_MAP_BYTES;

/// What one successful discovery returned.
#[derive(Debug, Clone, Default)]
pub struct Discovered {
    /// Valid device entries.
    pub devices: Vec<DeviceInfo>,
    /// Entries that failed validation, as `"<key>: <problem>"`.
    pub rejected: Vec<String>,
}

/// Why the node's device list could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// Nothing usable came back: refused, timed out, network failure.
    #[error("cannot reach the node at {url}")]
    Unreachable {
        /// The `/devices` URL asked.
        url: String,
        /// What went wrong.
        #[source]
        source: FetchError,
    },
    /// The node answered, but not with a JSON document of acceptable size.
    #[error("unusable answer from the node at {url}")]
    BadAnswer {
        /// The `/devices` URL asked.
        url: String,
        /// What was wrong with it.
        #[source]
        source: FetchError,
    },
    /// The JSON is not a device map (an array, the node's own error answer, ...).
    #[error("the node at {url} sent no device list")]
    NotADeviceMap {
        /// The `/devices` URL asked.
        url: String,
        /// What it sent instead.
        #[source]
        source: DeviceMapError,
    },
}

/// Client for the node's `GET /devices`.
#[derive(Debug, Clone)]
pub struct NodeClient {
    url: ServiceUrl,
    http: reqwest::Client,
    timeout: Duration,
}

/// Why a [`NodeClient`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum NodeClientError {
    /// The node address is not usable.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    Client(#[from] reqwest::Error),
}

impl NodeClient {
    /// A client for `server` (upstream's `-i`: `host`, `host:port` or an `http://` URL) with the
    /// given whole-request timeout.
    pub fn new(server: &str, timeout: Duration) -> Result<NodeClient, NodeClientError> {
        Ok(NodeClient {
            url: ServiceUrl::node(server)?,
            http: etho_http::client(timeout)?,
            timeout,
        })
    }

    /// The URL asked.
    pub fn url(&self) -> &str {
        self.url.endpoint().as_str()
    }

    /// Fetches and validates the device list.
    pub async fn fetch(&self) -> Result<Discovered, DiscoveryError> {
        let url = || self.url().to_string();
        let doc: serde_json::Value =
            etho_http::fetch_json(&self.http, self.url.endpoint(), MAX_BODY, self.timeout)
                .await
                .map_err(|source| match source {
                    FetchError::Refused(_) | FetchError::Timeout(_) | FetchError::Network(_) => {
                        DiscoveryError::Unreachable { url: url(), source }
                    }
                    FetchError::Status(_) | FetchError::TooLarge(_) | FetchError::Json(_) => {
                        DiscoveryError::BadAnswer { url: url(), source }
                    }
                })?;
        let (devices, rejected) = parse_device_map(&doc)
            .map_err(|source| DiscoveryError::NotADeviceMap { url: url(), source })?;
        Ok(Discovered { devices, rejected })
    }
}
