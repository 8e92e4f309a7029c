//! Device endpoints: `GET /devices` (what both backup daemons read), `POST /device/add`, and the
//! node's view of devices it could not use.
//!
//! - `GET /devices`: a map keyed by machine id; each value is the device's own `/data/<id>`
//!   fields plus `databases` (its `/data/databases/<id>`) and the node's `ip`, `port`, `status`,
//!   `last_seen` (epoch seconds), `consecutive_errors` and `poll_error`.
//! - `POST /device/add`: a comma-separated list of IPs (`IP` or `IP:PORT`), sent as the raw body,
//!   a form field `ip`, or JSON (a string, a list, or an object with `ip`/`ips`/`ip_list`);
//!   answers `{"added": [...], "problems": [...], "messages": [...]}`.
//! - `DELETE /device/<address>`: stops polling an address and forgets it (and the device bound
//!   to it).
//! - `POST /device/<id>/confirm` (body or query `address=HOST:PORT`): an operator settles a
//!   conflict over a machine id; needs `--admin-token`.
//! - `GET /devices/rejected`: devices refused because they lie about their id or name, and the
//!   addresses of a machine id in conflict.
//! - `GET /devices/pending`: addresses that never answered with a valid identity.
//!
//! The node listens on the lab LAN and any web page a user opens can send it a "simple" POST, so
//! every request that changes the registry ([`guard`]) is refused with 403 when it carries an
//! `Origin` or `Referer` that is not the node itself (upstream's own page posts from the same
//! origin and keeps working; scripts send neither), and, when the node was started with
//! `--admin-token`, needs `Authorization: Bearer <token>`.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::registry::AddResult;
use crate::target::Target;
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
        .route("/device/{address}", delete(device_delete))
        .route(
            "/device/{id}/confirm",
            post(device_confirm).layer(DefaultBodyLimit::max(ADD_BODY_LIMIT)),
        )
}

/// Why a request that changes the registry was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `Origin` or `Referer` names another site (403).
    CrossOrigin(String),
    /// The admin token is missing or wrong (401).
    Token,
    /// The action needs `--admin-token`, which the node was not given (403).
    NoToken,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, text) = match self {
            Refusal::CrossOrigin(what) => (
                StatusCode::FORBIDDEN,
                format!("cross-origin request refused ({what} is not this node)"),
            ),
            Refusal::Token => (
                StatusCode::UNAUTHORIZED,
                "missing or wrong admin token (Authorization: Bearer <token>)".to_string(),
            ),
            Refusal::NoToken => (
                StatusCode::FORBIDDEN,
                "this needs the node to be started with --admin-token".to_string(),
            ),
        };
        (status, Json(json!({ "error": text }))).into_response()
    }
}

/// The authority (`host[:port]`, lower case, without the default port 80) of an `http://` URL or
/// of a `Host` header.
fn authority(text: &str) -> Option<String> {
    let rest = match text.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some(_) => return None,
        None => text,
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let auth = rest[..end].to_ascii_lowercase();
    let auth = auth.strip_suffix(":80").unwrap_or(&auth).to_string();
    (!auth.is_empty() && !auth.contains('@')).then_some(auth)
}

/// `Some(what)` when the request's `Origin` or `Referer` is present and names another origin
/// than the node's own `Host`. A browser sends `Origin` on every cross-site POST (`null` from
/// sandboxed pages and some redirects, also refused).
pub fn cross_origin(headers: &HeaderMap) -> Option<String> {
    let own = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(authority);
    for name in [header::ORIGIN, header::REFERER] {
        let Some(value) = headers.get(&name) else {
            continue;
        };
        let text = String::from_utf8_lossy(value.as_bytes());
        let theirs = authority(&text);
        if theirs.is_none() || theirs != own {
            let shown: String = text.chars().take(80).collect();
            return Some(format!("{name} {shown:?}"));
        }
    }
    None
}

/// True when `headers` carry `Authorization: Bearer <token>` (compared in constant time).
fn has_token(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The checks of a request that changes the registry: same origin, and the admin token when
/// the node has one (or always, with `token_required`).
pub fn guard(
    headers: &HeaderMap,
    token: Option<&str>,
    token_required: bool,
) -> Result<(), Refusal> {
    if let Some(what) = cross_origin(headers) {
        return Err(Refusal::CrossOrigin(what));
    }
    match token {
        Some(token) if !has_token(headers, token) => Err(Refusal::Token),
        None if token_required => Err(Refusal::NoToken),
        _ => Ok(()),
    }
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
) -> Result<Json<AddResult>, Refusal> {
    guard(
        &headers,
        state.config.admin_token.as_ref().map(|t| t.0.as_str()),
        false,
    )?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let list = add_body_list(content_type, &body);
    Ok(Json(state.devices.add_list(&list)))
}

fn error(status: StatusCode, text: String) -> Response {
    (status, Json(json!({ "error": text }))).into_response()
}

async fn device_delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(address): Path<String>,
) -> Response {
    if let Err(refusal) = guard(
        &headers,
        state.config.admin_token.as_ref().map(|t| t.0.as_str()),
        false,
    ) {
        return refusal.into_response();
    }
    let target = match Target::parse(&address, true) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match state.devices.remove(&target).await {
        Some(removed) => Json(removed).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("{target} is not known")),
    }
}

/// `address=HOST:PORT` from a form body, a JSON body (`{"address": ...}`) or the query.
fn confirm_address(query: &Map<String, Value>, body: &[u8]) -> Option<String> {
    let from_body = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(obj)) => obj
            .get("address")
            .and_then(Value::as_str)
            .map(str::to_string),
        Ok(Value::String(s)) => Some(s),
        _ => String::from_utf8_lossy(body)
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "address")
            .map(|(_, v)| form_decode(v)),
    };
    from_body.or_else(|| query.get("address")?.as_str().map(str::to_string))
}

async fn device_confirm(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<Map<String, Value>>,
    body: Bytes,
) -> Response {
    if let Err(refusal) = guard(
        &headers,
        state.config.admin_token.as_ref().map(|t| t.0.as_str()),
        true,
    ) {
        return refusal.into_response();
    }
    let Some(address) = confirm_address(&query, &body) else {
        return error(StatusCode::BAD_REQUEST, "no address=HOST:PORT given".into());
    };
    let target = match Target::parse(&address, true) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match state.devices.confirm(&id, &target).await {
        Ok(()) => Json(json!({"confirmed": target.to_string(), "id": id})).into_response(),
        Err(e) => error(StatusCode::CONFLICT, e.to_string()),
    }
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

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn origin_rules() {
        let host = ("host", "192.168.1.2");
        for (what, h, refused) in [
            ("a script (no Origin, no Referer)", vec![host], false),
            (
                "the node's own page",
                vec![host, ("origin", "http://192.168.1.2")],
                false,
            ),
            (
                "its own page, default port spelled out",
                vec![("host", "192.168.1.2:80"), ("origin", "http://192.168.1.2")],
                false,
            ),
            (
                "its own page on another port",
                vec![
                    ("host", "node:8081"),
                    ("origin", "http://NODE:8081"),
                    ("referer", "http://node:8081/"),
                ],
                false,
            ),
            (
                "a form without Origin but with Referer",
                vec![host, ("referer", "http://192.168.1.2/#/devices")],
                false,
            ),
            (
                "another site",
                vec![host, ("origin", "http://evil.example")],
                true,
            ),
            (
                "another port on the node",
                vec![host, ("origin", "http://192.168.1.2:8080")],
                true,
            ),
            (
                "https look-alike",
                vec![host, ("origin", "https://192.168.1.2")],
                true,
            ),
            ("a sandboxed page", vec![host, ("origin", "null")], true),
            (
                "Referer from another site",
                vec![host, ("referer", "http://evil.example/x")],
                true,
            ),
            (
                "credentials trick",
                vec![host, ("origin", "http://192.168.1.2@evil.example")],
                true,
            ),
            (
                "same Origin, foreign Referer",
                vec![
                    host,
                    ("origin", "http://192.168.1.2"),
                    ("referer", "http://evil.example/"),
                ],
                true,
            ),
            (
                "no Host at all",
                vec![("origin", "http://192.168.1.2")],
                true,
            ),
        ] {
            assert_eq!(cross_origin(&headers(&h)).is_some(), refused, "{what}");
        }
    }

    #[test]
    fn token_rules() {
        let ok = headers(&[("authorization", "Bearer s3cret")]);
        let wrong = headers(&[("authorization", "Bearer s3creT")]);
        let none = HeaderMap::new();
        assert_eq!(guard(&none, None, false), Ok(()));
        assert_eq!(guard(&none, None, true), Err(Refusal::NoToken));
        assert_eq!(guard(&none, Some("s3cret"), false), Err(Refusal::Token));
        assert_eq!(guard(&wrong, Some("s3cret"), false), Err(Refusal::Token));
        assert_eq!(guard(&ok, Some("s3cret"), true), Ok(()));
        let cross = headers(&[
            ("authorization", "Bearer s3cret"),
            ("origin", "http://evil"),
        ]);
        assert!(matches!(
            guard(&cross, Some("s3cret"), false),
            Err(Refusal::CrossOrigin(_))
        ));
    }

    #[test]
    fn confirm_addresses() {
        let q = Map::new();
        assert_eq!(
            confirm_address(&q, b"address=127.0.0.1%3A9000").as_deref(),
            Some("127.0.0.1:9000")
        );
        assert_eq!(
            confirm_address(&q, br#"{"address": "127.0.0.1"}"#).as_deref(),
            Some("127.0.0.1")
        );
        let mut q = Map::new();
        q.insert("address".into(), json!("127.0.0.2"));
        assert_eq!(confirm_address(&q, b"").as_deref(), Some("127.0.0.2"));
        assert_eq!(confirm_address(&Map::new(), b"x=1"), None);
    }
}
