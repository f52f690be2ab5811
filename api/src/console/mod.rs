//! The speaker console and GraphiQL, served by the API itself.
//!
//! The pages are plain ES modules (`api/console/`), embedded in the binary
//! by `assets`: nothing to build, nothing fetched from the internet, so
//! they work on an offline cluster. The console talks only to the public
//! GraphQL API, like any other client.
//!
//! URLs: `/console/` is the page (never cached, it names the asset
//! version); `/console/assets/<version>/<file>` are the embedded files
//! (cached for good: a new binary has a new version); GraphiQL is what a
//! browser gets on a plain `GET /graphql`.

mod assets;
pub mod documents;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

pub use self::assets::version;

/// What the console's page may load and connect to: only this origin.
/// (`connect-src 'self'` covers the WebSocket to the same host.)
const CONSOLE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'none'";

/// GraphiQL's editor sets inline styles and embeds its fonts as data URLs.
const GRAPHIQL_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     font-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The console's routes (no state: everything is in the binary).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(console_page))
        .route("/console/assets/{version}/{*path}", get(asset))
}

async fn console_page() -> Response {
    page(assets::INDEX_HTML, CONSOLE_POLICY)
}

/// GraphiQL, for a browser's plain `GET /graphql`.
pub fn graphiql_page() -> Response {
    page(assets::GRAPHIQL_HTML, GRAPHIQL_POLICY)
}

/// An HTML page naming the current asset version; revalidated each time.
fn page(template: &str, policy: &'static str) -> Response {
    let html = template.replace("{{ASSETS}}", &format!("/console/assets/{}", version()));
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        html,
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(policy),
    );
    security_headers(headers);
    response
}

async fn asset(Path((asked, path)): Path<(String, String)>) -> Response {
    // An old page asking for old assets gets a clear miss, not new files
    // under an old name (which a cache would then keep for good).
    let found = (asked == version()).then(|| assets::find(&path)).flatten();
    let Some(file) = found else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CACHE_CONTROL, "no-store")],
            "no such console file",
        )
            .into_response();
    };
    let mut response = (
        [
            (header::CONTENT_TYPE, file.content_type()),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        file.bytes,
    )
        .into_response();
    security_headers(response.headers_mut());
    response
}

fn security_headers(headers: &mut axum::http::HeaderMap) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}
