//! The approvers' review page under `/ui` (being built: see issue #10).

use std::sync::Arc;

use axum::Router;

use super::HttpOptions;
use crate::Gateway;

/// Page settings taken from the HTTP edge's.
#[derive(Debug, Clone)]
pub struct Options {
    /// Mark the session cookie `Secure` (the gateway is reached over TLS).
    pub secure_cookies: bool,
}

impl Options {
    /// From the edge's options: `Secure` cookies when the public URL is
    /// `https://`.
    pub fn from_http(o: &HttpOptions) -> Self {
        Self {
            secure_cookies: o
                .public_url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://")),
        }
    }
}

/// The page's routes.
pub fn router(_gw: Arc<Gateway>, _options: Options) -> Router {
    Router::new()
}
