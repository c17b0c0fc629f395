//! The web dashboard (issue 16): the logins that let a browser in (`session`), and the
//! page and its assets, compiled into the binary (no CDN, no separate web server: it
//! must work on a machine with no internet access). The routes are in `http::dashboard`.

pub mod session;

pub use session::{Dashboard, Grant, Refusal};

/// The page, its script and its style, as served.
const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// The page for `org`, its links rooted at `base` (the dashboard's path). Org names are
/// `[a-z0-9_-]` (Chef's rule), so they need no escaping; checked anyway.
pub fn index(org: &str, base: &str) -> Option<String> {
    let safe = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-/".contains(&b))
    };
    (safe(org) && safe(base)).then(|| INDEX.replace("__BASE__", base).replace("__ORG__", org))
}

/// An asset by file name, with its content type.
pub fn asset(name: &str) -> Option<(&'static str, &'static str)> {
    match name {
        "app.js" => Some((APP_JS, "text/javascript; charset=utf-8")),
        "app.css" => Some((APP_CSS, "text/css; charset=utf-8")),
        _ => None,
    }
}
