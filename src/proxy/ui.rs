//! The web page at `/ui`: the activity, the records, the keys and the catalog, for people.
//!
//! Plain HTML, a little JavaScript of its own and uPlot (vendored with its licence, in
//! `ui/vendor/`) for the plots, all embedded in the binary: it works air-gapped. Every asset
//! goes with a strict `Content-Security-Policy` (scripts and styles from the gateway only, no
//! inline script, no frames, no form posting elsewhere). The page holds the key it is signed
//! in with for the browser session only (`sessionStorage`) and calls the gateway's own APIs
//! with it; what a client key may not do is not shown.

use axum::routing::{get, MethodRouter};
use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::Response;
use http_body_util::Full;

/// The policy every asset goes with.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded asset: its path under `/ui`, media type and bytes.
struct Asset {
    path: &'static str,
    media: &'static str,
    bytes: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/ui",
        media: "text/html; charset=utf-8",
        bytes: include_bytes!("ui/index.html"),
    },
    Asset {
        path: "/ui/app.js",
        media: "text/javascript; charset=utf-8",
        bytes: include_bytes!("ui/app.js"),
    },
    Asset {
        path: "/ui/app.css",
        media: "text/css; charset=utf-8",
        bytes: include_bytes!("ui/app.css"),
    },
    Asset {
        path: "/ui/uplot.js",
        media: "text/javascript; charset=utf-8",
        bytes: include_bytes!("ui/vendor/uplot.min.js"),
    },
    Asset {
        path: "/ui/uplot.css",
        media: "text/css; charset=utf-8",
        bytes: include_bytes!("ui/vendor/uplot.min.css"),
    },
    Asset {
        path: "/ui/LICENSE-uplot.txt",
        media: "text/plain; charset=utf-8",
        bytes: include_bytes!("ui/vendor/LICENSE-uplot"),
    },
];

fn serve(asset: &'static Asset) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from_static(asset.bytes)));
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(asset.media));
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

/// The page's routes: `/ui` (and `/ui/`) and its assets.
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter)> {
    let mut out: Vec<(&'static str, MethodRouter)> = Vec::new();
    for asset in ASSETS {
        out.push((asset.path, get(move || async move { serve(asset) })));
    }
    out.push(("/ui/", get(|| async { serve(&ASSETS[0]) })));
    out
}
