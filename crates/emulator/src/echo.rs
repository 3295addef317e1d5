//! `/_emulator/echo/{path}` (with the control API only, for tests): an API that answers what
//! it received, as a test needs to see what a proxy in front of Google's APIs passes on. Like
//! every Google API it takes any method and wants a live access token the emulator issued
//! (Google's 401 otherwise); it answers `{"method", "path", "query", "headers": {name: [value,
//! ...]}}`, the headers as they arrived, less `Authorization` (the user's token).

use crate::Inner;
use crate::drive::bearer;
use crate::error::json;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use std::sync::Arc;

pub(crate) async fn echo(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = bearer(&inner, &headers) {
        return e.into_response();
    }
    let mut received = Map::new();
    for name in headers.keys().filter(|n| *n != header::AUTHORIZATION) {
        let values = headers
            .get_all(name)
            .iter()
            .map(|v| Value::from(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        received.insert(name.as_str().to_owned(), Value::Array(values));
    }
    json(
        StatusCode::OK,
        &json!({
            "method": method.as_str(),
            "path": uri.path(),
            "query": uri.query(),
            "headers": received,
        }),
    )
}
