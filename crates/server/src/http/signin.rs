//! Sign-in and session endpoints for browsers and mobile apps.

use crate::app::App;
use crate::config::normalise_origin;
use crate::error::ApiError;
use crate::signin::Platform;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::header::{CONTENT_TYPE, ORIGIN, SET_COOKIE};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use grantkeeper_core::SecretString;
use grantkeeper_store::{GrantRecord, UserRecord};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;

/// Largest accepted `/authcode` body; Google's codes are at most 256 bytes.
const BODY_LIMIT: usize = 8 * 1024;
/// Largest accepted code.
const CODE_LIMIT: usize = 4 * 1024;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/authcode", post(authcode))
        .route("/me", get(me))
        .route("/logout", post(logout))
        .route("/disconnect", post(disconnect))
}

/// The user object of the HTTP contract.
#[derive(Serialize)]
pub struct UserJson {
    sub: String,
    email: Option<String>,
    email_verified: bool,
    name: Option<String>,
    picture: Option<String>,
    given_name: Option<String>,
    family_name: Option<String>,
    locale: Option<String>,
}

impl From<&UserRecord> for UserJson {
    fn from(u: &UserRecord) -> Self {
        let p = &u.profile;
        UserJson {
            sub: p.sub.clone(),
            email: p.email.clone(),
            email_verified: p.email_verified,
            name: p.name.clone(),
            picture: p.picture.clone(),
            given_name: p.given_name.clone(),
            family_name: p.family_name.clone(),
            locale: p.locale.clone(),
        }
    }
}

#[derive(Serialize)]
pub struct GrantJson {
    state: &'static str,
    scopes: Vec<String>,
    updated_at: String,
    reason: Option<String>,
    last_refresh_at: Option<String>,
}

impl From<&GrantRecord> for GrantJson {
    fn from(g: &GrantRecord) -> Self {
        GrantJson {
            state: g.state.as_str(),
            scopes: g.scopes.to_vec(),
            updated_at: rfc3339(g.updated_at),
            reason: g.reason.clone(),
            last_refresh_at: g.last_refresh_at.map(rfc3339),
        }
    }
}

#[derive(Serialize)]
struct SignInJson {
    user: UserJson,
    granted_scopes: Vec<String>,
    offline_access: bool,
    needs_consent: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    grant: Option<GrantJson>,
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn answer(user: &UserRecord, grant: &GrantRecord, with_grant: bool) -> SignInJson {
    SignInJson {
        user: user.into(),
        granted_scopes: grant.scopes.to_vec(),
        offline_access: !grant.needs_consent(),
        needs_consent: grant.needs_consent(),
        grant: with_grant.then(|| grant.into()),
    }
}

/// The cross-site request checks of a state-changing browser call: a custom header that a
/// cross-site form cannot send, and, when the browser names one, an allowed origin.
pub(crate) fn gate(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let xrw = headers
        .get("x-requested-with")
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    if xrw.is_empty() {
        return Err(ApiError::Csrf);
    }
    if let Some(origin) = headers.get(ORIGIN) {
        let allowed = origin
            .to_str()
            .ok()
            .and_then(normalise_origin)
            .is_some_and(|o| app.settings().allowed_origins.contains(&o));
        if !allowed {
            return Err(ApiError::OriginNotAllowed);
        }
    }
    Ok(())
}

#[derive(Deserialize, Default)]
struct PlatformQuery {
    platform: Option<String>,
    /// Incremental authorization for a signed-in user: the code must be this account's.
    sub: Option<String>,
}

#[derive(Deserialize)]
struct CodeForm {
    #[serde(rename = "authCode")]
    auth_code: Option<String>,
    code: Option<String>,
    platform: Option<String>,
}

#[derive(Deserialize)]
struct CodeJson {
    code: Option<String>,
    platform: Option<String>,
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

/// Reads the whole body up to `limit` bytes.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge { limit })
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
    let expected = query.sub.as_deref().filter(|s| !s.is_empty());
    // The session is written in the sign-in's transaction: one commit for both.
    let (outcome, cookie) = app.sign_in_with_session(&code, platform, expected).await?;
    let sub = &outcome.user.profile.sub;
    let detail = format!("{} {}", platform.as_str(), outcome.grant.scopes);
    let result = if outcome.grant.needs_consent() {
        "needs_consent"
    } else {
        "ok"
    };
    app.audit()
        .record("session", Some(sub), "sign_in", detail, result)
        .await;
    let mut response = Json(answer(&outcome.user, &outcome.grant, false)).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(SET_COOKIE, v);
    }
    Ok(response)
}

async fn me(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (sub, _) = app.session_user(&headers).await?;
    let (user, grant) =
        app.store().user(&sub).await?.ok_or_else(|| {
            ApiError::Unauthorized("the session's user no longer exists".to_owned())
        })?;
    Ok(Json(answer(&user, &grant, true)).into_response())
}

async fn logout(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    gate(&app, &headers)?;
    app.end_session(&headers).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&app.clear_cookie()) {
        response.headers_mut().insert(SET_COOKIE, v);
    }
    Ok(response)
}

/// Revokes the user's grant at Google, deletes the tokens held and every session of the user.
async fn disconnect(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    gate(&app, &headers)?;
    let (sub, _) = app.session_user(&headers).await?;
    let outcome = app.disconnect(&sub).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&app.clear_cookie()) {
        response.headers_mut().insert(SET_COOKIE, v);
    }
    // `revoked`, or `queued` when Google could not be reached and the revocation is retried.
    response.headers_mut().insert(
        "grantkeeper-revocation",
        HeaderValue::from_static(outcome.as_str()),
    );
    Ok(response)
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
