//! `/` and its assets: the built dashboard, or a built-in page saying how to build it.

use std::path::Path;

use axum::Router;
use axum::handler::HandlerWithoutStateExt;
use axum::http::{StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use tower_http::services::ServeDir;

/// The page served at `/` while the dashboard is not built.
const NOT_BUILT: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>clickpulse</title></head>
<body style="font-family: sans-serif; max-width: 42em; margin: 3em auto">
<h1>clickpulse</h1>
<p>The server is running, but the dashboard has not been built.</p>
<p>Build it with <code>cd dashboard &amp;&amp; npm ci &amp;&amp; npm run build</code>
(it lands in <code>dashboard/dist</code>), or point <code>server.dashboard_dir</code> at a built copy,
then reload this page.</p>
<p>Meanwhile: <a href="/api/streams">/api/streams</a> lists the streams,
<a href="/metrics">/metrics</a> has the metrics, and <code>/ws</code> and
<code>/sse/{stream}</code> serve live results (see <code>docs/protocol.md</code>).</p>
</body>
</html>
"#;

/// A router that serves the files of `dir` for every path; anything `dir` lacks (all of it,
/// when the dashboard is not built) falls back to [`not_built`]. Checked per request, so a
/// dashboard built while the server runs is served without a restart.
pub(crate) fn router<S: Clone + Send + Sync + 'static>(dir: &Path) -> Router<S> {
    Router::new().fallback_service(
        ServeDir::new(dir)
            .append_index_html_on_directories(true)
            .fallback(not_built.into_service()),
    )
}

/// The built-in page at `/` (and `/index.html`), 404 elsewhere.
async fn not_built(uri: Uri) -> Response {
    match uri.path() {
        "/" | "/index.html" => Html(NOT_BUILT).into_response(),
        path => (StatusCode::NOT_FOUND, format!("no such file: {path}\n")).into_response(),
    }
}
