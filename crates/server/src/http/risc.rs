//! `POST /risc`: the push endpoint of Cross-Account Protection (RFC 8935 delivery of RFC 8417
//! security event tokens).
//!
//! The body is the compact token. 202 when it verified (a redelivery included); 400 with
//! RFC 8935's body `{"err": "...", "description": "..."}` when it did not, which tells the
//! provider not to deliver it again. Failures on our side keep the contract's error body: 413
//! for a body over [`BODY_LIMIT`], 503 when the keys or the store are unavailable (the
//! provider delivers again later).

use crate::app::App;
use crate::error::{ApiError, ErrorBody};
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

/// The route's part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(receive))]
pub(super) struct Api;

pub fn routes() -> Router<App> {
    Router::new().route("/risc", post(receive))
}

/// The error body of RFC 8935 §2.4.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = SetRefusal)]
struct Rfc8935Error<'a> {
    #[schema(schema_with = rfc8935_code_schema)]
    err: &'a str,
    /// For people.
    description: String,
}

fn rfc8935_code_schema() -> utoipa::openapi::Object {
    super::openapi::string_enum(&[
        "jwtParse",
        "invalid_key",
        "invalid_issuer",
        "invalid_audience",
        "invalid_request",
    ])
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

/// Receives a security event token.
#[utoipa::path(
    post,
    path = "/risc",
    tag = "operations",
    summary = "Cross-Account Protection: a security event token from Google (RFC 8417), acted on once per jti",
    description = "RFC 8935 push delivery. The token must be RS256 by a key of the JWKS that {issuer}/.well-known/risc-configuration names, for one of our client ids, with exactly one event. Refusals use RFC 8935's body, not the contract's error body: the client is Google's transmitter.",
    request_body(
        description = "The compact token (application/secevent+jwt, application/jwt, text/plain or no Content-Type; at most 16 KiB)",
        content(
            (String = "application/secevent+jwt"),
            (String = "application/jwt"),
            (String = "text/plain"),
        )
    ),
    responses(
        (status = 202, description = "Accepted (also a redelivery of a jti, which acts no more)"),
        (status = 400, description = "Not a valid token: RFC 8935's body; not delivered again", body = Rfc8935Error),
        (status = 413, description = "`payload_too_large`: over 16 KiB", body = ErrorBody),
        (status = 503, description = "`upstream_unavailable`: signing keys or store unavailable; delivered again later (Retry-After)", body = ErrorBody),
    )
)]
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
