//! Google's OAuth error answers (`{"error", "error_description"}`) and the control API's own
//! error body, each mapped to HTTP in one place.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::borrow::Cow;

/// An error answer of the token, revocation and tokeninfo endpoints.
#[derive(Debug)]
pub(crate) struct OAuthError {
    pub(crate) status: StatusCode,
    pub(crate) error: &'static str,
    pub(crate) description: Cow<'static, str>,
}

impl OAuthError {
    pub(crate) fn new(
        status: StatusCode,
        error: &'static str,
        description: impl Into<Cow<'static, str>>,
    ) -> Self {
        OAuthError {
            status,
            error,
            description: description.into(),
        }
    }

    pub(crate) fn bad(error: &'static str, description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, description)
    }

    pub(crate) fn invalid_grant(description: &'static str) -> Self {
        Self::bad("invalid_grant", description)
    }

    pub(crate) fn expired_or_revoked() -> Self {
        Self::invalid_grant("Token has been expired or revoked.")
    }

    pub(crate) fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": self.error, "error_description": self.description})
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        token_json(self.status, &self.body())
    }
}

/// A JSON answer with the headers Google's token endpoint sends on success and error alike.
pub(crate) fn token_json(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut res = (status, body.to_string()).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, max-age=0, must-revalidate"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    res
}

/// A plain JSON answer.
pub(crate) fn json(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut res = (status, body.to_string()).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    res
}

/// An error of the control API, in grantkeeper's `{"error", "message"}` shape.
#[derive(Debug)]
pub(crate) struct ControlError {
    pub(crate) status: StatusCode,
    pub(crate) error: &'static str,
    pub(crate) message: String,
}

impl ControlError {
    pub(crate) fn bad(message: impl Into<String>) -> Self {
        ControlError {
            status: StatusCode::BAD_REQUEST,
            error: "invalid_request",
            message: message.into(),
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        ControlError {
            status: StatusCode::NOT_FOUND,
            error: "not_found",
            message: message.into(),
        }
    }

    pub(crate) fn internal(err: &anyhow::Error) -> Self {
        tracing::error!(error = %err, "emulator control call failed");
        ControlError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "internal",
            message: "the emulator could not complete this call; see its log".into(),
        }
    }
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        json(
            self.status,
            &serde_json::json!({"error": self.error, "message": self.message}),
        )
    }
}
