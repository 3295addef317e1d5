//! Google's OAuth error answers (`{"error", "error_description"}`), the Drive API's error
//! envelope, and the control API's own error body, each mapped to HTTP in one place.

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

/// Where Google's API front end puts the credentials it checks.
const AUTH_REALM: &str = "Bearer realm=\"https://accounts.google.com/\"";

/// An error answer of the Drive API, in Google's API envelope:
/// `{"error": {"code", "message", "errors": [{"message", "domain", "reason", "location"?,
/// "locationType"?}], "status"?, "details"?}}`. Boxed, as it travels through every `Result`
/// of the Drive handlers.
#[derive(Debug)]
pub(crate) struct DriveError(Box<DriveErrorParts>);

#[derive(Debug)]
struct DriveErrorParts {
    status: StatusCode,
    message: Cow<'static, str>,
    /// `errors[0].message` when it differs from the top-level message.
    item_message: Option<&'static str>,
    domain: &'static str,
    reason: &'static str,
    /// `(location, locationType)`.
    location: Option<(&'static str, &'static str)>,
    /// The gRPC status name newer answers carry.
    grpc: Option<&'static str>,
    /// The `google.rpc.ErrorInfo` reason of the authentication layer's answers.
    info: Option<&'static str>,
    /// The RPC the request was routed to, named in `details[0].metadata.method`.
    method: Option<&'static str>,
    /// The `error` of the `WWW-Authenticate` challenge, `None` for a bare challenge.
    challenge: Option<Option<&'static str>>,
    retry_after_secs: Option<u64>,
}

impl DriveError {
    pub(crate) fn new(
        status: StatusCode,
        reason: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        DriveError(Box::new(DriveErrorParts {
            status,
            message: message.into(),
            item_message: None,
            domain: "global",
            reason,
            location: None,
            grpc: None,
            info: None,
            method: None,
            challenge: None,
            retry_after_secs: None,
        }))
    }

    fn at(mut self, location: &'static str, kind: &'static str) -> Self {
        self.0.location = Some((location, kind));
        self
    }

    /// No `Authorization` header.
    pub(crate) fn login_required() -> Self {
        let mut e = Self::new(StatusCode::UNAUTHORIZED, "required", "Login Required.")
            .at("Authorization", "header");
        e.0.grpc = Some("UNAUTHENTICATED");
        e.0.info = Some("CREDENTIALS_MISSING");
        e.0.challenge = Some(None);
        e
    }

    /// An access token that is expired, revoked or was never issued.
    pub(crate) fn invalid_credentials(expired: bool) -> Self {
        let mut e = Self::new(StatusCode::UNAUTHORIZED, "authError", "Invalid Credentials")
            .at("Authorization", "header");
        e.0.grpc = Some("UNAUTHENTICATED");
        // Google's reason for a token it never issued is not known; only expiry is named.
        e.0.info = expired.then_some("ACCESS_TOKEN_EXPIRED");
        e.0.challenge = Some(Some("invalid_token"));
        e
    }

    /// A token without any scope that reaches the call.
    pub(crate) fn insufficient_permissions() -> Self {
        let mut e = Self::new(
            StatusCode::FORBIDDEN,
            "insufficientPermissions",
            "Request had insufficient authentication scopes.",
        );
        e.0.item_message = Some("Insufficient Permission");
        e.0.grpc = Some("PERMISSION_DENIED");
        e.0.info = Some("ACCESS_TOKEN_SCOPE_INSUFFICIENT");
        e.0.challenge = Some(Some("insufficient_scope"));
        e
    }

    /// Listing spaces the token's scopes do not reach.
    pub(crate) fn spaces_denied() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "insufficientScopes",
            "The granted scopes do not give access to all of the requested spaces.",
        )
    }

    /// Using the Application Data folder without `drive.appdata`.
    pub(crate) fn app_data_denied() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "insufficientScopes",
            "The granted scopes do not allow use of the Application Data folder.",
        )
    }

    pub(crate) fn not_found(file_id: &str) -> Self {
        let id: String = file_id.chars().take(128).collect();
        Self::new(
            StatusCode::NOT_FOUND,
            "notFound",
            format!("File not found: {id}."),
        )
        .at("fileId", "parameter")
    }

    /// A parameter Google would not accept, e.g. a malformed `q`.
    pub(crate) fn invalid_value(parameter: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", "Invalid Value").at(parameter, "parameter")
    }

    pub(crate) fn invalid_fields(message: String) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalidParameter", message).at("fields", "parameter")
    }

    pub(crate) fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "badRequest", message)
    }

    pub(crate) fn parse_error() -> Self {
        Self::new(StatusCode::BAD_REQUEST, "parseError", "Parse Error")
    }

    pub(crate) fn not_writable(message: &'static str) -> Self {
        Self::new(StatusCode::FORBIDDEN, "fieldNotWritable", message)
    }

    pub(crate) fn forbidden(reason: &'static str, message: &'static str) -> Self {
        Self::new(StatusCode::FORBIDDEN, reason, message)
    }

    /// Content beyond what simple and multipart uploads take.
    pub(crate) fn too_large(max_bytes: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "uploadTooLarge",
            format!(
                "Media larger than {max_bytes} bytes is not supported by simple and multipart \
                 uploads. Use a resumable upload."
            ),
        )
    }

    /// The answer of an injected fault, chosen by status as Drive's documentation lists them.
    pub(crate) fn fault(status: StatusCode, retry_after_secs: Option<u64>) -> Self {
        if status == StatusCode::UNAUTHORIZED {
            // What Google answers a token it no longer takes.
            return Self::invalid_credentials(false);
        }
        let (reason, domain, message, grpc) = match status.as_u16() {
            429 => (
                "rateLimitExceeded",
                "usageLimits",
                "Rate Limit Exceeded",
                "RESOURCE_EXHAUSTED",
            ),
            403 => (
                "userRateLimitExceeded",
                "usageLimits",
                "User Rate Limit Exceeded",
                "PERMISSION_DENIED",
            ),
            500 => ("backendError", "global", "Backend Error", "INTERNAL"),
            502 => ("badGateway", "global", "Bad Gateway", "UNAVAILABLE"),
            503 => (
                "backendError",
                "global",
                "Service Unavailable",
                "UNAVAILABLE",
            ),
            504 => (
                "gatewayTimeout",
                "global",
                "Gateway Timeout",
                "DEADLINE_EXCEEDED",
            ),
            400..=499 => ("badRequest", "global", "Bad Request", "INVALID_ARGUMENT"),
            _ => ("backendError", "global", "Backend Error", "UNKNOWN"),
        };
        let mut e = Self::new(status, reason, message);
        e.0.domain = domain;
        e.0.grpc = Some(grpc);
        e.0.retry_after_secs = retry_after_secs;
        e
    }

    pub(crate) fn internal() -> Self {
        Self::fault(StatusCode::INTERNAL_SERVER_ERROR, None)
    }

    pub(crate) fn for_method(mut self, method: &'static str) -> Self {
        self.0.method = Some(method);
        self
    }

    pub(crate) fn body(&self) -> serde_json::Value {
        let mut item = serde_json::json!({
            "message": self.0.item_message.map_or_else(|| self.0.message.to_string(), str::to_owned),
            "domain": self.0.domain,
            "reason": self.0.reason,
        });
        if let (Some((location, kind)), Some(o)) = (self.0.location, item.as_object_mut()) {
            o.insert("location".into(), location.into());
            o.insert("locationType".into(), kind.into());
        }
        let mut error = serde_json::json!({
            "code": self.0.status.as_u16(),
            "message": self.0.message,
            "errors": [item],
        });
        if let Some(o) = error.as_object_mut() {
            if let Some(g) = self.0.grpc {
                o.insert("status".into(), g.into());
            }
            if let Some(info) = self.0.info {
                let mut metadata = serde_json::json!({"service": "drive.googleapis.com"});
                if let (Some(m), Some(md)) = (self.0.method, metadata.as_object_mut()) {
                    md.insert("method".into(), m.into());
                }
                o.insert(
                    "details".into(),
                    serde_json::json!([{
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": info,
                        "domain": "googleapis.com",
                        "metadata": metadata,
                    }]),
                );
            }
        }
        serde_json::json!({ "error": error })
    }
}

impl IntoResponse for DriveError {
    fn into_response(self) -> Response {
        let mut res = json(self.0.status, &self.body());
        let h = res.headers_mut();
        if let Some(challenge) = self.0.challenge {
            let value = match challenge {
                None => AUTH_REALM.to_owned(),
                Some(error) => format!("{AUTH_REALM}, error=\"{error}\""),
            };
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(header::WWW_AUTHENTICATE, v);
            }
        }
        if let Some(secs) = self.0.retry_after_secs
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            h.insert(header::RETRY_AFTER, v);
        }
        res
    }
}
