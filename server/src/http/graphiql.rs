//! GraphiQL at /graphiql: a page and its assets, all embedded in the binary, so the page works
//! without internet and shows exactly the versions Settle was built with.
//!
//! The assets are GraphiQL's and React's production builds as published on npm, committed under
//! server/assets/graphiql/ with the script that fetched them (fetch.sh) and their SHA-256 sums.
//! Their URLs carry their versions, so they can be cached for a year: a new version is a new URL.
//! The page itself is never cached for long, so a new Settle serves its new page at once.

use poem::http::header;
use poem::web::Path;
use poem::{Response, handler};

/// One embedded file.
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

/// The files served under /graphiql/assets/.
pub const ASSETS: [Asset; 4] = [
    Asset {
        name: "graphiql-3.9.0.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/graphiql/graphiql-3.9.0.min.js"),
    },
    Asset {
        name: "graphiql-3.9.0.min.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../assets/graphiql/graphiql-3.9.0.min.css"),
    },
    Asset {
        name: "react-18.3.1.production.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/graphiql/react-18.3.1.production.min.js"),
    },
    Asset {
        name: "react-dom-18.3.1.production.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/graphiql/react-dom-18.3.1.production.min.js"),
    },
];

const PAGE: &str = include_str!("../../assets/graphiql/index.html");

#[handler]
pub fn page() -> Response {
    Response::builder()
        .content_type("text/html; charset=utf-8")
        // Revalidated every time: the page names the asset versions of the running Settle.
        .header(header::CACHE_CONTROL, "no-cache")
        .body(PAGE)
}

/// An asset by name; another name is the router's 404 with its usual body.
#[handler]
pub fn asset(Path(name): Path<String>) -> poem::Result<Response> {
    match ASSETS.iter().find(|asset| asset.name == name) {
        Some(asset) => Ok(Response::builder()
            .content_type(asset.content_type)
            // The name holds the version, so the content under a name never changes.
            .header(header::CACHE_CONTROL, "public, max-age=31536000, immutable")
            .header("x-content-type-options", "nosniff")
            .body(asset.bytes)),
        None => Err(poem::error::NotFoundError.into()),
    }
}
