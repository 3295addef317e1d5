//! What handlers take from a request before they call an operation, each refused with the
//! contract's error body: the caller's API key with its scope ([`api_key`]), the signed-in user
//! of a session cookie ([`session_user`]), the cross-site request checks of browser calls
//! ([`gate`]), the body up to a limit ([`read_body`]) and path parameters ([`Path`]).
//!
//! axum's own extractors answer plain text: a path parameter that is not UTF-8 once
//! percent-decoded (`/v1/users/%ff`) would be a `text/plain` 400. Here it is `invalid_request`
//! (the JSON body of the API, or the console's HTML page).

use super::admin::PageError;
use crate::apikeys::KeyScope;
use crate::app::App;
use crate::config::normalise_origin;
use crate::error::ApiError;
use crate::http::cookies::session_secret;
use crate::ops::{self, Caller};
use axum::body::{Body, HttpBody};
use axum::extract::FromRequestParts;
use axum::extract::rejection::PathRejection;
use axum::http::header::{AUTHORIZATION, ORIGIN};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use serde::de::DeserializeOwned;

/// The app service calling `/v1` (`Authorization: Bearer <api key>`), if its key may do
/// `needed`; the call is counted against the key's rate limit (`limits.v1_per_second`).
pub async fn api_key(app: &App, headers: &HeaderMap, needed: KeyScope) -> Result<Caller, ApiError> {
    let missing = || {
        ApiError::Unauthorized(
            "send an API key as `Authorization: Bearer <key>` (see `grantkeeper api-keys create`)"
                .to_owned(),
        )
    };
    let value = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(missing)?;
    let (scheme, secret) = value.split_once(' ').ok_or_else(missing)?;
    let secret = secret.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || secret.is_empty() {
        return Err(missing());
    }
    let caller = ops::authenticate(app, secret, needed).await?;
    app.limits().check_key(caller.key_id())?;
    Ok(caller)
}

/// The `sub` of the user signed in with the request's session cookie, or 401.
pub async fn session_user(app: &App, headers: &HeaderMap) -> Result<String, ApiError> {
    let secret = session_secret(headers)
        .ok_or_else(|| ApiError::Unauthorized("not signed in".to_owned()))?;
    Ok(ops::sessions::user_of(app, &secret).await?)
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

/// Reads the whole body up to `limit` bytes.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    // A body known to be empty (most hand-outs) needs no collecting.
    if body.size_hint().exact() == Some(0) {
        return Ok(bytes::Bytes::new());
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge { limit })
}

/// The route's path parameters; refused with the API's JSON error body.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(path_error)
    }
}

/// The route's path parameters; refused with the console's HTML error page.
pub struct PagePath<T>(pub T);

impl<T, S> FromRequestParts<S> for PagePath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, PageError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| PagePath(value))
            .map_err(PageError::from)
    }
}

fn path_error(rejection: PathRejection) -> ApiError {
    match rejection {
        PathRejection::FailedToDeserializePathParams(_) => ApiError::InvalidRequest(
            "a path parameter is not valid: percent-decoded, it must be UTF-8 text".to_owned(),
        ),
        // The route has no such parameter: a mistake of ours, not the caller's.
        other => ApiError::Internal(format!("path parameters: {other}")),
    }
}
