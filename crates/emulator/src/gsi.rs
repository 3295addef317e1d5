//! `GET /gsi/client`: the emulator's Google Identity Services script, the code model of
//! `google.accounts.oauth2` pointed at this emulator's consent page. Apps load it where they
//! would load `https://accounts.google.com/gsi/client`.
//!
//! The script itself lives in `gsi/client.js`; this module fills in the emulator's
//! authorization endpoint (with the base URL's path prefix) and origin when serving it.

use crate::Inner;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The script, with [`SETTINGS_SLOT`] where the emulator's settings go.
const SCRIPT: &str = include_str!("gsi/client.js");
const SETTINGS_SLOT: &str = "__GRANTKEEPER_EMULATOR_SETTINGS__";

/// `GET /gsi/client`.
pub(crate) async fn client(State(inner): State<Arc<Inner>>) -> Response {
    let mut res = script(&inner).into_response();
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    res
}

fn script(inner: &Inner) -> String {
    let settings = serde_json::json!({
        "authEndpoint": inner.url("/o/oauth2/v2/auth"),
        "origin": inner.base_origin,
    });
    SCRIPT.replacen(SETTINGS_SLOT, &js_literal(&settings), 1)
}

/// JSON as an ES2017 expression: U+2028 and U+2029 end a string literal before ES2019.
fn js_literal(value: &serde_json::Value) -> String {
    value
        .to_string()
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_has_one_settings_slot() {
        assert_eq!(SCRIPT.matches(SETTINGS_SLOT).count(), 1);
    }

    #[test]
    fn line_separators_are_escaped() {
        let v = serde_json::json!({"a": "x\u{2028}y\u{2029}"});
        assert_eq!(js_literal(&v), r#"{"a":"x\u2028y\u2029"}"#);
    }
}
