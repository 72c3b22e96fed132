//! The operator's page: static assets embedded in the binary (the machine
//! may have no internet, and nothing is fetched from elsewhere), served with
//! their content types and a Content-Security-Policy that allows only this
//! listener's own script, style and `/api/status`.

/// `default-src 'none'`, then only what the page uses, from this origin;
/// no inline script or style, no framing, no form posts.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static str,
}

pub const INDEX: Asset = Asset {
    content_type: "text/html; charset=utf-8",
    body: include_str!("page/index.html"),
};

pub const SCRIPT: Asset = Asset {
    content_type: "text/javascript; charset=utf-8",
    body: include_str!("page/page.js"),
};

pub const STYLE: Asset = Asset {
    content_type: "text/css; charset=utf-8",
    body: include_str!("page/page.css"),
};
