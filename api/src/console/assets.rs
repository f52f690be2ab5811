//! The console's files, embedded at compile time from `api/console/`.

use std::sync::LazyLock;

use sha2::{Digest, Sha256};

/// One embedded file, by its path under `api/console/`.
#[derive(Debug)]
pub(super) struct Asset {
    pub(super) path: &'static str,
    pub(super) bytes: &'static [u8],
}

impl Asset {
    pub(super) fn content_type(&self) -> &'static str {
        match self.path.rsplit_once('.').map(|(_, ext)| ext) {
            Some("js") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("svg") => "image/svg+xml",
            Some("png") => "image/png",
            Some("txt") => "text/plain; charset=utf-8",
            _ => "application/octet-stream",
        }
    }
}

macro_rules! embed {
    ($($path:literal),* $(,)?) => {
        &[$(Asset {
            path: $path,
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/console/", $path)),
        }),*]
    };
}

/// Every file the pages load. A file missing here is a 404 in the
/// browser, which the console's browser tests catch.
static ASSETS: &[Asset] = embed![
    "style.css",
    "favicon.svg",
    "js/main.js",
    "js/graphql.js",
    "js/queries.js",
    "js/session.js",
    "js/dom.js",
    "js/format.js",
    "js/pages/signin.js",
    "js/pages/desktops.js",
    "js/pages/snapshot.js",
    "js/pages/progress.js",
    "js/pages/lineage.js",
    "js/pages/history.js",
    "js/pages/admin.js",
    "js/graphiql.js",
    "vendor/graphiql/graphiql.min.js",
    "vendor/graphiql/graphiql.min.css",
    "vendor/graphiql/react.production.min.js",
    "vendor/graphiql/react-dom.production.min.js",
    "vendor/graphiql/LICENSES.txt",
];

/// The pages; `{{ASSETS}}` becomes the versioned asset path.
pub(super) const INDEX_HTML: &str = include_str!("../../console/index.html");
pub(super) const GRAPHIQL_HTML: &str = include_str!("../../console/graphiql.html");

pub(super) fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// The first 12 hex digits of a hash over every file: changes whenever
/// any file does, so cached copies never outlive their binary.
pub fn version() -> &'static str {
    static VERSION: LazyLock<String> = LazyLock::new(|| {
        let mut hash = Sha256::new();
        for asset in ASSETS {
            hash.update(asset.path.as_bytes());
            hash.update((asset.bytes.len() as u64).to_le_bytes());
            hash.update(asset.bytes);
        }
        hex::encode(&hash.finalize()[..6])
    });
    &VERSION
}
