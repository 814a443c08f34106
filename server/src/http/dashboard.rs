//! The dashboard at /dashboard: a read-only page for a practice's takings, receivables, credit
//! and live money changes, and its assets, all embedded in the binary so it works without
//! internet. The page is an ordinary client of the public API (POST /graphql with the token the
//! user pastes in, the WebSocket at /graphql for the live feed); nothing here knows the ledger.
//!
//! The chart library is Chart.js's published UMD build, committed under server/assets/dashboard/
//! with the script that fetched it (fetch.sh) and its SHA-256 sum; its name carries its version,
//! so it is cached for a year like GraphiQL's assets. The page's own script and style change with
//! Settle under the same names, so they, like the page, are revalidated every time.

use poem::http::header;
use poem::web::Path;
use poem::{Response, handler};

use super::graphiql::Asset;

/// Files whose content never changes under their name.
const VERSIONED_ASSETS: [Asset; 1] = [Asset {
    name: "chart-4.6.1.umd.min.js",
    content_type: "text/javascript; charset=utf-8",
    bytes: include_bytes!("../../assets/dashboard/chart-4.6.1.umd.min.js"),
}];

/// The page's own files: they change with each Settle under the same name.
const OWN_ASSETS: [Asset; 2] = [
    Asset {
        name: "dashboard.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/dashboard/dashboard.js"),
    },
    Asset {
        name: "dashboard.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../assets/dashboard/dashboard.css"),
    },
];

const PAGE: &str = include_str!("../../assets/dashboard/index.html");

#[handler]
pub fn page() -> Response {
    Response::builder()
        .content_type("text/html; charset=utf-8")
        // Revalidated every time: the page names the asset versions of the running Settle.
        .header(header::CACHE_CONTROL, "no-cache")
        // The token lives in this page's session storage: no other site may frame it.
        .header("x-frame-options", "DENY")
        .body(PAGE)
}

/// An asset by name; another name is the router's 404 with its usual body.
#[handler]
pub fn asset(Path(name): Path<String>) -> poem::Result<Response> {
    let (asset, cache_control) = if let Some(asset) = VERSIONED_ASSETS.iter().find(|asset| asset.name == name) {
        // The name holds the version, so the content under a name never changes.
        (asset, "public, max-age=31536000, immutable")
    } else if let Some(asset) = OWN_ASSETS.iter().find(|asset| asset.name == name) {
        (asset, "no-cache")
    } else {
        return Err(poem::error::NotFoundError.into());
    };
    Ok(Response::builder()
        .content_type(asset.content_type)
        .header(header::CACHE_CONTROL, cache_control)
        .header("x-content-type-options", "nosniff")
        .body(asset.bytes))
}
