//! The web UI, served by `weft serve` at `/`: one page of plain HTML, CSS
//! and JavaScript (no build step, nothing from the network), embedded in the
//! binary. It only calls the JSON API, with the server's token when one is
//! set, so it shows nothing the token does not allow.

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const APP_CSS: &str = include_str!("ui/app.css");

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            ("content-type", content_type),
            ("cache-control", "no-cache"),
            ("x-content-type-options", "nosniff"),
            // The UI loads nothing from elsewhere, and may not be framed.
            (
                "content-security-policy",
                "default-src 'self'; frame-ancestors 'none'",
            ),
        ],
        body,
    )
}

/// The UI's routes.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
}
