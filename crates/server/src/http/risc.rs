//! `POST /risc`: the push endpoint of Cross-Account Protection (RFC 8935 delivery of RFC 8417
//! security event tokens).
//!
//! The body is the compact token. 202 when it verified (a redelivery included); 400 with
//! RFC 8935's body `{"err": "...", "description": "..."}` when it did not, which tells the
//! provider not to deliver it again. Failures on our side keep the contract's error body: 413
//! for a body over [`BODY_LIMIT`], 503 when the keys or the store are unavailable (the
//! provider delivers again later).

use crate::app::App;
use crate::error::ApiError;
use crate::http::extract::read_body;
use crate::ops::{self, EventError};
use axum::body::Body;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use grantkeeper_core::SecretString;
use serde::Serialize;

/// Largest accepted body; Google's tokens are about a kilobyte.
pub const BODY_LIMIT: usize = 16 * 1024;

/// Content types a token may come as; none at all is accepted too.
const CONTENT_TYPES: [&str; 3] = ["application/secevent+jwt", "application/jwt", "text/plain"];

pub fn routes() -> Router<App> {
    Router::new().route("/risc", post(receive))
}

/// The error body of RFC 8935 §2.4.
#[derive(Serialize)]
struct Rfc8935Error<'a> {
    err: &'a str,
    description: String,
}

fn refused(err: &str, description: impl Into<String>) -> Response {
    let description = description.into();
    tracing::warn!(err, %description, "refused a security event token");
    (
        StatusCode::BAD_REQUEST,
        Json(Rfc8935Error { err, description }),
    )
        .into_response()
}

async fn receive(State(app): State<App>, headers: HeaderMap, body: Body) -> Response {
    if let Some(ct) = headers.get(CONTENT_TYPE) {
        let essence = ct
            .to_str()
            .ok()
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase());
        if !essence.is_some_and(|e| CONTENT_TYPES.contains(&e.as_str())) {
            return refused(
                "invalid_request",
                "send the security event token as application/secevent+jwt",
            );
        }
    }
    let body = match read_body(body, BODY_LIMIT).await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return refused("jwtParse", "the body is not text");
    };
    let token = text.trim();
    if token.is_empty() {
        return refused(
            "invalid_request",
            "the body is empty: send the security event token",
        );
    }
    match ops::receive_security_event(&app, &SecretString::from(token.to_owned())).await {
        Ok(_) => StatusCode::ACCEPTED.into_response(),
        Err(EventError::Rejected(e)) => {
            refused(e.rfc8935_code().unwrap_or("invalid_request"), e.to_string())
        }
        Err(failed) => ApiError::from(failed).into_response(),
    }
}
