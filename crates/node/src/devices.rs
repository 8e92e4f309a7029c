//! Device endpoints: `GET /devices` (what both backup daemons read), `POST /device/add`, and the
//! node's view of devices it could not use.
//!
//! - `GET /devices`: a map keyed by machine id; each value is the device's own `/data/<id>`
//!   fields plus `databases` (its `/data/databases/<id>`) and the node's `ip`, `port`, `status`,
//!   `last_seen` (epoch seconds), `consecutive_errors` and `poll_error`.
//! - `POST /device/add`: a comma-separated list of IPs (`IP` or `IP:PORT`), sent as the raw body,
//!   a form field `ip`, or JSON (a string, a list, or an object with `ip`/`ips`/`ip_list`);
//!   answers `{"added": [...], "problems": [...], "messages": [...]}`.
//! - `GET /devices/rejected`: devices refused because they lie about their id or name.
//! - `GET /devices/pending`: addresses that never answered with a valid identity.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value};

use crate::registry::AddResult;
use crate::AppState;

/// Largest `POST /device/add` body.
const ADD_BODY_LIMIT: usize = 64 * 1024;

/// Routes of this module, merged into [`crate::app`].
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/devices", get(devices_list))
        .route("/devices/rejected", get(devices_rejected))
        .route("/devices/pending", get(devices_pending))
        .route(
            "/device/add",
            post(device_add).layer(DefaultBodyLimit::max(ADD_BODY_LIMIT)),
        )
}

async fn devices_list(State(state): State<AppState>) -> Json<Map<String, Value>> {
    Json(state.devices.devices())
}

async fn devices_rejected(State(state): State<AppState>) -> Json<Map<String, Value>> {
    Json(state.devices.rejected())
}

async fn devices_pending(State(state): State<AppState>) -> Json<Map<String, Value>> {
    Json(state.devices.pending())
}

/// The address list of a `POST /device/add` body, whatever form it came in.
pub fn add_body_list(content_type: Option<&str>, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let is_form = content_type.is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if is_form || (text.contains('=') && !text.starts_with(['{', '[', '"'])) {
        return text
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| matches!(*k, "ip" | "ips" | "ip_list" | "ip_address"))
            .map(|(_, v)| form_decode(v))
            .collect::<Vec<_>>()
            .join(",");
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v) => json_list(&v),
        Err(_) => text.to_string(),
    }
}

fn json_list(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(json_list).collect::<Vec<_>>().join(","),
        Value::Object(obj) => ["ip", "ips", "ip_list", "ip_address"]
            .iter()
            .filter_map(|k| obj.get(*k))
            .map(json_list)
            .collect::<Vec<_>>()
            .join(","),
        // Numbers, booleans, null: reported as problems by the parser.
        other => other.to_string(),
    }
}

fn form_decode(v: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn device_add(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Json<AddResult> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let list = add_body_list(content_type, &body);
    Json(state.devices.add_list(&list))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_bodies() {
        assert_eq!(
            add_body_list(None, b"127.0.0.1,127.0.0.2"),
            "127.0.0.1,127.0.0.2"
        );
        assert_eq!(
            add_body_list(
                Some("application/json"),
                br#"{"ip": "127.0.0.1, 127.0.0.2"}"#
            ),
            "127.0.0.1, 127.0.0.2"
        );
        assert_eq!(
            add_body_list(None, br#"{"ip_list": ["127.0.0.1", "127.0.0.2:9001"]}"#),
            "127.0.0.1,127.0.0.2:9001"
        );
        assert_eq!(add_body_list(None, br#""127.0.0.1""#), "127.0.0.1");
        assert_eq!(
            add_body_list(
                Some("application/x-www-form-urlencoded"),
                b"ip=127.0.0.1%2C127.0.0.2&other=x"
            ),
            "127.0.0.1,127.0.0.2"
        );
        assert_eq!(add_body_list(None, b"ip=127.0.0.1%2"), "127.0.0.1%2");
        assert_eq!(add_body_list(None, b"\xff\xfe"), "\u{fffd}\u{fffd}");
        assert_eq!(add_body_list(None, br#"{"ip": 5}"#), "5");
    }
}
