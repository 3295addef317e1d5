//! Sign-in and session endpoints for browsers and mobile apps: `/authcode` reads the code in
//! any of its body shapes and calls [`ops::sign_in`]; the others act on the session cookie.

use crate::app::App;
use crate::error::{ApiError, ErrorBody};
use crate::http::answers;
use crate::http::cookies::{clear_session_cookie, session_cookie, session_secret};
use crate::http::extract::{gate, read_body, session_user};
use crate::ops::{self, Platform, SignInRequest, UserError};
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::header::{CONTENT_TYPE, SET_COOKIE};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use grantkeeper_core::SecretString;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

/// Largest accepted `/authcode` body; Google's codes are at most 256 bytes.
const BODY_LIMIT: usize = 8 * 1024;
/// Largest accepted code.
const CODE_LIMIT: usize = 4 * 1024;

/// The routes' part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(authcode, me, logout, disconnect))]
pub(super) struct Api;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/authcode", post(authcode))
        .route("/me", get(me))
        .route("/logout", post(logout))
        .route("/disconnect", post(disconnect))
}

#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
struct PlatformQuery {
    /// Which client the code is from (its redirect URI differs); overrides the body's.
    #[param(schema_with = platform_schema)]
    platform: Option<String>,
    /// Incremental authorization for a signed-in user: the code must be this account's; a
    /// code of another Google account answers 403 `forbidden` and nothing is recorded.
    sub: Option<String>,
}

/// The code as Android and iOS apps post it.
#[derive(Deserialize, ToSchema)]
#[schema(as = CodeForm)]
struct CodeForm {
    /// The code (Android's name for it).
    #[serde(rename = "authCode")]
    auth_code: Option<String>,
    /// The code (either name does).
    code: Option<String>,
    #[schema(schema_with = platform_schema)]
    platform: Option<String>,
}

/// The code as JSON.
#[derive(Deserialize, ToSchema)]
#[schema(as = CodeJson)]
struct CodeJson {
    /// The one-time authorization code.
    #[schema(required = true)]
    code: Option<String>,
    /// Without it, the code counts as a mobile app's.
    #[schema(schema_with = platform_schema)]
    platform: Option<String>,
}

fn platform_schema() -> utoipa::openapi::Object {
    super::openapi::string_enum(&["web", "android", "ios"])
}

enum BodyKind {
    Raw,
    Form,
    Json,
}

fn body_kind(headers: &HeaderMap) -> Result<BodyKind, ApiError> {
    let ct = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    match ct.as_deref() {
        Some("application/octet-stream" | "text/plain") => Ok(BodyKind::Raw),
        Some("application/x-www-form-urlencoded") => Ok(BodyKind::Form),
        Some("application/json") => Ok(BodyKind::Json),
        _ => Err(ApiError::UnsupportedMediaType(
            "send the code as application/octet-stream or text/plain (web), \
             application/x-www-form-urlencoded (authCode= or code=), or application/json"
                .to_owned(),
        )),
    }
}

/// Finds the code and platform in any of the accepted body shapes.
fn parse_authcode(
    kind: BodyKind,
    body: &[u8],
    query_platform: Option<String>,
) -> Result<(SecretString, Platform), ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::InvalidRequest("the body is not UTF-8".to_owned()))?;
    let (code, body_platform, default) = match kind {
        BodyKind::Raw => (Some(text.to_owned()), None, Platform::Web),
        BodyKind::Form => {
            let f: CodeForm = serde_urlencoded::from_str(text)
                .map_err(|_| ApiError::InvalidRequest("the form body is malformed".to_owned()))?;
            (f.auth_code.or(f.code), f.platform, Platform::Android)
        }
        BodyKind::Json => {
            let j: CodeJson = serde_json::from_str(text).map_err(|e| {
                ApiError::InvalidRequest(format!(
                    "the JSON body is malformed (line {}, column {}); send {{\"code\": \"...\"}}",
                    e.line(),
                    e.column()
                ))
            })?;
            (j.code, j.platform, Platform::Android)
        }
    };
    let platform = match query_platform.or(body_platform) {
        Some(p) => p.parse()?,
        None => default,
    };
    let code = code.map(|c| c.trim().to_owned()).unwrap_or_default();
    if code.is_empty() {
        return Err(ApiError::InvalidRequest(
            "the authorization code is missing".to_owned(),
        ));
    }
    if code.len() > CODE_LIMIT {
        return Err(ApiError::PayloadTooLarge { limit: CODE_LIMIT });
    }
    if !code.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::InvalidRequest(
            "the authorization code has characters no code contains".to_owned(),
        ));
    }
    Ok((SecretString::from(code), platform))
}

/// The way in for the fuzz targets, which cannot name this private module:
/// [`crate::fuzzing::parse_authcode`].
impl crate::fuzzing::AuthcodeBody {
    pub fn parse(
        self,
        body: &[u8],
        query_platform: Option<String>,
    ) -> Result<(SecretString, Platform), ApiError> {
        let kind = match self {
            Self::Raw => BodyKind::Raw,
            Self::Form => BodyKind::Form,
            Self::Json => BodyKind::Json,
        };
        parse_authcode(kind, body, query_platform)
    }
}

/// Signs in with a one-time authorization code.
#[utoipa::path(
    post,
    path = "/authcode",
    tag = "sign-in",
    summary = "Sign in with a one-time authorization code",
    description = "A raw code (web: exchanged with redirect_uri postmessage), a form with authCode= or code= (Android, iOS: empty redirect_uri), or JSON {code, platform}. A form or JSON without platform counts as mobile, a raw body as web. The ID token is verified before anything is written; a later code without a refresh token never erases the one held.",
    params(
        ("X-Requested-With" = String, Header, description = "Any value; a cross-site form cannot send it"),
        PlatformQuery,
    ),
    request_body(
        description = "The code, in the shape of the client's platform (at most 8 KiB)",
        content(
            (String = "application/octet-stream"),
            (String = "text/plain"),
            (CodeForm = "application/x-www-form-urlencoded"),
            (CodeJson = "application/json"),
        )
    ),
    responses(
        (status = 200, description = "Signed in; sets the session cookie (HttpOnly, SameSite=Lax, Secure unless dev)", body = answers::SignInJson),
        (status = 400, description = "`invalid_request`: no code, a malformed body, an unknown platform; `code_rejected`: Google refused the code (used, expired, or another client's)", body = ErrorBody),
        (status = 401, description = "`id_token_invalid`: the ID token did not verify", body = ErrorBody),
        (status = 403, description = "`csrf`: no X-Requested-With; `origin_not_allowed`: an Origin not in server.allowed_origins; `forbidden`: a code of another account than `sub`, or an account blocked by a security event", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many sign-ins from this address (Retry-After)", body = ErrorBody),
        (status = 502, description = "`upstream_error`: Google answered unexpectedly", body = ErrorBody),
        (status = 503, description = "`upstream_unavailable`: Google, its keys or the store are unavailable (Retry-After)", body = ErrorBody),
    )
)]
async fn authcode(
    State(app): State<App>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    extensions: Extensions,
    body: Body,
) -> Result<Response, ApiError> {
    // First, so that every attempt counts, refused ones too, and costs nothing once over.
    app.limits().check_sign_in(&headers, &extensions)?;
    gate(&app, &headers)?;
    let query: PlatformQuery = match query {
        Some(q) => serde_urlencoded::from_str(&q)
            .map_err(|_| ApiError::InvalidRequest("the query string is malformed".to_owned()))?,
        None => PlatformQuery::default(),
    };
    let kind = body_kind(&headers)?;
    let body = read_body(body, BODY_LIMIT).await?;
    let (code, platform) = parse_authcode(kind, &body, query.platform)?;
    let expected_sub = query.sub.as_deref().filter(|s| !s.is_empty());
    let signed_in = ops::sign_in(
        &app,
        SignInRequest {
            code: &code,
            platform,
            expected_sub,
        },
    )
    .await?;
    let mut response = Json(answers::sign_in_answer(
        &signed_in.user,
        &signed_in.grant,
        false,
    ))
    .into_response();
    set_cookie(&mut response, &session_cookie(&app, &signed_in.session));
    Ok(response)
}

/// The signed-in user and their grant.
#[utoipa::path(
    get,
    path = "/me",
    tag = "sign-in",
    summary = "The signed-in user and their grant",
    security(("session" = [])),
    responses(
        (status = 200, description = "The user, with `grant`", body = answers::SignInJson),
        (status = 401, description = "`unauthorized`: not signed in, or the session ended", body = ErrorBody),
    )
)]
async fn me(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    let sub = session_user(&app, &headers).await?;
    let (user, grant) = ops::users::get(&app, &sub).await.map_err(|e| match e {
        UserError::NotFound => {
            ApiError::Unauthorized("the session's user no longer exists".to_owned())
        }
        other => other.into(),
    })?;
    Ok(Json(answers::sign_in_answer(&user, &grant, true)).into_response())
}

/// Ends the session.
#[utoipa::path(
    post,
    path = "/logout",
    tag = "sign-in",
    summary = "End the session",
    security(("session" = [])),
    params(("X-Requested-With" = String, Header, description = "Any value; a cross-site form cannot send it")),
    responses(
        (status = 204, description = "Signed out; clears the session cookie"),
        (status = 403, description = "`csrf` or `origin_not_allowed`", body = ErrorBody),
    )
)]
async fn logout(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    gate(&app, &headers)?;
    if let Some(secret) = session_secret(&headers) {
        ops::sessions::end(&app, &secret).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    set_cookie(&mut response, &clear_session_cookie(&app));
    Ok(response)
}

/// Revokes the user's grant at Google, deletes the tokens held and every session of the user.
#[utoipa::path(
    post,
    path = "/disconnect",
    tag = "sign-in",
    summary = "Revoke the grant at Google, delete the tokens held and end every session of the user",
    description = "If Google cannot be reached, done here at once and the revocation at Google is retried.",
    security(("session" = [])),
    params(("X-Requested-With" = String, Header, description = "Any value; a cross-site form cannot send it")),
    responses(
        (status = 204, description = "Disconnected; clears the session cookie", headers(
            ("Grantkeeper-Revocation" = String, description = "`revoked` at Google, or `queued` when Google could not be reached and the revocation is retried")
        )),
        (status = 401, description = "`unauthorized`: not signed in", body = ErrorBody),
        (status = 403, description = "`csrf` or `origin_not_allowed`", body = ErrorBody),
        (status = 503, description = "`upstream_unavailable`: the store is unavailable (Retry-After)", body = ErrorBody),
    )
)]
async fn disconnect(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    gate(&app, &headers)?;
    let sub = session_user(&app, &headers).await?;
    let outcome = ops::disconnect(&app, &sub).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    set_cookie(&mut response, &clear_session_cookie(&app));
    // `revoked`, or `queued` when Google could not be reached and the revocation is retried.
    response.headers_mut().insert(
        "grantkeeper-revocation",
        HeaderValue::from_static(outcome.as_str()),
    );
    Ok(response)
}

fn set_cookie(response: &mut Response, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        response.headers_mut().insert(SET_COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grantkeeper_core::ExposeSecret;

    fn parse(kind: BodyKind, body: &str, q: Option<&str>) -> Result<(String, Platform), ApiError> {
        parse_authcode(kind, body.as_bytes(), q.map(str::to_owned))
            .map(|(c, p)| (c.expose_secret().to_owned(), p))
    }

    #[test]
    fn body_shapes_and_platform_defaults() {
        assert_eq!(
            parse(BodyKind::Raw, "4/0Aabc\n", None).unwrap(),
            ("4/0Aabc".into(), Platform::Web)
        );
        assert_eq!(
            parse(BodyKind::Form, "authCode=4%2F0Ax", None).unwrap(),
            ("4/0Ax".into(), Platform::Android)
        );
        assert_eq!(
            parse(BodyKind::Form, "code=4%2F0Ax&platform=ios", None)
                .unwrap()
                .1,
            Platform::Ios
        );
        assert_eq!(
            parse(BodyKind::Json, r#"{"code":"4/x","platform":"web"}"#, None)
                .unwrap()
                .1,
            Platform::Web
        );
        assert_eq!(
            parse(BodyKind::Json, r#"{"code":"4/x"}"#, Some("ios"))
                .unwrap()
                .1,
            Platform::Ios
        );
        assert_eq!(
            parse(BodyKind::Raw, "4/x", Some("android")).unwrap().1,
            Platform::Android
        );
    }

    #[test]
    fn bad_bodies() {
        assert!(matches!(
            parse(BodyKind::Raw, "  ", None),
            Err(ApiError::InvalidRequest(_))
        ));
        assert!(matches!(
            parse(BodyKind::Form, "x=1", None),
            Err(ApiError::InvalidRequest(_))
        ));
        assert!(matches!(
            parse(BodyKind::Json, "{", None),
            Err(ApiError::InvalidRequest(_))
        ));
        assert!(matches!(
            parse(BodyKind::Json, r#"{"code":"a b"}"#, None),
            Err(ApiError::InvalidRequest(_))
        ));
        assert!(matches!(
            parse(BodyKind::Json, r#"{"code":"x","platform":"tv"}"#, None),
            Err(ApiError::InvalidRequest(_))
        ));
        let big = "a".repeat(CODE_LIMIT + 1);
        assert!(matches!(
            parse(BodyKind::Raw, &big, None),
            Err(ApiError::PayloadTooLarge { .. })
        ));
        assert!(matches!(
            parse_authcode(BodyKind::Raw, &[0xff, 0xfe], None),
            Err(ApiError::InvalidRequest(_))
        ));
    }
}
