//! `GET /`: the node's dashboard, a static page embedded in the binary.
//!
//! The page (`web/` at the repository root) is plain HTML, CSS and ES modules with no build step, so
//! the files are compiled in as they are: a node is one binary with nothing to install next to it,
//! and the page can never be out of step with the server that answers its `fetch`es. The page polls
//! `GET /devices` and `GET /backup/status` itself; nothing here is dynamic.
//!
//! Every asset carries a strong `ETag` computed at compile time and `Cache-Control: no-cache`, so a
//! browser revalidates (a cheap `304`) and picks up a new binary's page at once. The HTML also
//! carries a strict `Content-Security-Policy` (same-origin scripts and styles only): device names
//! are untrusted, and the page never turns them into markup, but the policy is the second wall.

use axum::{
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};

use crate::AppState;

/// One embedded file.
struct Asset {
    /// Route path.
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// Quoted strong entity tag of `body`.
    etag: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Same-origin everything; `data:` images only for the empty favicon.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// 64-bit FNV-1a, evaluated at compile time: enough to tell two builds' files apart.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

/// `"` + 16 lowercase hex digits + `"`.
const fn etag_bytes(bytes: &[u8]) -> [u8; 18] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hash = fnv1a(bytes);
    let mut out = [b'"'; 18];
    let mut i = 0;
    while i < 16 {
        out[1 + i] = HEX[((hash >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

const fn etag_str(bytes: &'static [u8; 18]) -> &'static str {
    match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(_) => panic!("an ETag is ASCII hex"),
    }
}

/// Declares the embedded files: `asset!(route, file under web/, content type)`.
macro_rules! asset {
    ($path:literal, $file:literal, $content_type:expr) => {{
        const BODY: &[u8] = include_bytes!(concat!("../../../web/", $file));
        const TAG: [u8; 18] = etag_bytes(BODY);
        Asset {
            path: $path,
            content_type: $content_type,
            body: BODY,
            etag: etag_str(&TAG),
        }
    }};
}

static INDEX: Asset = asset!("/", "index.html", HTML);

static ASSETS: [Asset; 8] = [
    asset!("/app.js", "app.js", JAVASCRIPT),
    asset!("/backup-status.js", "backup-status.js", JAVASCRIPT),
    asset!("/devices.js", "devices.js", JAVASCRIPT),
    asset!("/style.css", "style.css", CSS),
    asset!("/index.html", "index.html", HTML),
    asset!("/archive.js", "archive.js", JAVASCRIPT),
    asset!("/history.js", "history.js", JAVASCRIPT),
    asset!("/dom.js", "dom.js", JAVASCRIPT),
];

/// Routes of this module, merged into [`crate::app`]: `GET /` and the page's files.
pub fn router() -> Router<AppState> {
    routes()
}

fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    std::iter::once(&INDEX)
        .chain(ASSETS.iter())
        .fold(Router::new(), |router, asset| {
            router.route(
                asset.path,
                get(move |headers: HeaderMap| async move { asset_get(asset, &headers) }),
            )
        })
}

/// Serves one embedded file, or `304 Not Modified` when the browser already has it.
fn asset_get(asset: &'static Asset, request_headers: &HeaderMap) -> Response {
    let etag = HeaderValue::from_static(asset.etag);
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, etag.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if asset.content_type == HTML {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    if if_none_match(request_headers, asset.etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    (headers, asset.body).into_response()
}

/// Whether `If-None-Match` lists `etag` (or `*`); weak tags compare equal, as RFC 9110 asks.
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{body::Body, http::Request};
    use tower::ServiceExt;

    async fn get_path(path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
        let mut request = Request::get(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = routes::<()>()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    fn content_type(headers: &HeaderMap) -> &str {
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    #[tokio::test]
    async fn root_serves_the_index_page() {
        let (status, headers, body) = get_path("/", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type(&headers), "text/html; charset=utf-8");
        assert_eq!(body.as_bytes(), include_bytes!("../../../web/index.html"));
        assert!(body.contains(r#"<script type="module" src="app.js"></script>"#));
        assert!(body.contains(r#"<table id="device-table">"#));
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }

    #[tokio::test]
    async fn modules_are_served_as_javascript() {
        for path in [
            "/backup-status.js",
            "/app.js",
            "/devices.js",
            "/archive.js",
            "/history.js",
        ] {
            let (status, headers, body) = get_path(path, &[]).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(
                content_type(&headers),
                "text/javascript; charset=utf-8",
                "{path}"
            );
            assert!(
                body.contains("export ") || body.contains("import "),
                "{path}"
            );
        }
        let (_, _, body) = get_path("/backup-status.js", &[]).await;
        for function in [
            "summarize",
            "unavailableState",
            "getBackupStatusClass",
            "getBackupStatusTitle",
        ] {
            assert!(
                body.contains(&format!("export function {function}(")),
                "{function}"
            );
        }
        let (status, headers, _) = get_path("/style.css", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type(&headers), "text/css; charset=utf-8");
    }

    /// Every file the page loads (`src=`/`href=` in the HTML, `from './x.js'` in the modules) is
    /// embedded, so adding a file to `web/` without listing it here fails a test, not a browser.
    #[tokio::test]
    async fn every_file_the_page_references_is_served() {
        let mut referenced = Vec::new();
        let index = std::str::from_utf8(INDEX.body).unwrap();
        for attribute in ["src=\"", "href=\""] {
            for part in index.split(attribute).skip(1) {
                let target = part.split('"').next().unwrap();
                if !target.starts_with("data:") {
                    referenced.push(target.to_string());
                }
            }
        }
        for asset in ASSETS.iter().filter(|a| a.content_type == JAVASCRIPT) {
            let text = std::str::from_utf8(asset.body).unwrap();
            for part in text.split("from './").skip(1) {
                referenced.push(part.split('\'').next().unwrap().to_string());
            }
        }
        assert!(referenced.iter().any(|r| r == "backup-status.js"));
        assert!(referenced.len() >= 4, "{referenced:?}");
        for target in referenced {
            let (status, _, _) = get_path(&format!("/{target}"), &[]).await;
            assert_eq!(
                status,
                StatusCode::OK,
                "{target} is referenced but not served"
            );
        }
    }

    #[tokio::test]
    async fn matching_etag_gives_not_modified() {
        let (_, headers, _) = get_path("/app.js", &[]).await;
        let etag = headers[header::ETAG].to_str().unwrap().to_string();
        assert_eq!(etag.len(), 18);
        assert!(etag.starts_with('"') && etag.ends_with('"'));
        let (status, _, body) = get_path("/app.js", &[("if-none-match", &etag)]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert!(body.is_empty());
        let weak_list = format!("\"other\", W/{etag}");
        let (status, _, _) = get_path("/app.js", &[("if-none-match", &weak_list)]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        let (status, _, body) = get_path("/app.js", &[("if-none-match", "\"stale\"")]).await;
        assert_eq!(status, StatusCode::OK);
        assert!(!body.is_empty());
    }

    #[test]
    fn etags_differ_between_files() {
        let mut tags: Vec<&str> = ASSETS.iter().map(|a| a.etag).collect();
        tags.sort_unstable();
        tags.dedup();
        // index.html is listed twice (`/` and `/index.html`), every other file once.
        assert_eq!(tags.len(), ASSETS.len());
        assert_eq!(INDEX.etag, ASSETS[4].etag);
    }

    #[tokio::test]
    async fn unknown_paths_are_not_found() {
        for path in [
            "/nope.js",
            "/web/app.js",
            "/test/backup-status.test.js",
            "/package.json",
        ] {
            let (status, _, _) = get_path(path, &[]).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        }
    }
}
