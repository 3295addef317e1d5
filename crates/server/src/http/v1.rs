//! The API for the app's other services (`Authorization: Bearer <api key>`): users, fresh
//! access tokens, and Google API calls made as a user. Every hand-out, proxied call and
//! deletion is audited.

use crate::apikeys::KeyScope;
use crate::app::App;
use crate::error::ApiError;
use crate::http::answers;
use crate::http::extract::{Path, api_key, read_body};
use crate::http::proxy;
use crate::ops;
use axum::Router;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use grantkeeper_broker::TokenRequest;
use grantkeeper_core::Scopes;
use serde::Deserialize;
use std::time::Duration;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/users", get(list_users))
        .route("/v1/users/{sub}", get(get_user).delete(delete_user))
        .route("/v1/users/{sub}/token", post(token))
        .route("/v1/users/{sub}/google/{*path}", proxy_methods())
}

/// The proxy's route: the methods of Google's APIs ([`proxy::METHODS`]); any other answers 405
/// with `Allow` (the router's method fallback), before the caller's key is looked at.
fn proxy_methods() -> MethodRouter<App> {
    proxy::METHODS
        .iter()
        .filter_map(|m| MethodFilter::try_from(m.clone()).ok())
        .fold(MethodRouter::new(), |route, filter| {
            route.on(filter, proxy_call)
        })
}

#[derive(Deserialize, Default)]
struct PageQuery {
    cursor: Option<String>,
    limit: Option<String>,
}

const MAX_PAGE: u32 = 500;

async fn list_users(
    State(app): State<App>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    api_key(&app, &headers, KeyScope::UsersRead).await?;
    let q: PageQuery = serde_urlencoded::from_str(query.as_deref().unwrap_or_default())
        .map_err(|_| ApiError::InvalidRequest("the query string is malformed".to_owned()))?;
    let limit = match q.limit.as_deref() {
        None | Some("") => 100,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| ApiError::InvalidRequest(format!("limit must be 1 to {MAX_PAGE}")))?,
    };
    let after = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(
            URL_SAFE_NO_PAD
                .decode(c)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    ApiError::InvalidRequest("the cursor is not one this API gave".to_owned())
                })?,
        ),
    };
    let page = ops::users::list(&app, after.as_deref(), limit).await?;
    Ok(answers::user_page(&page))
}

async fn get_user(
    State(app): State<App>,
    headers: HeaderMap,
    Path(sub): Path<String>,
) -> Result<Response, ApiError> {
    api_key(&app, &headers, KeyScope::UsersRead).await?;
    let (user, grant) = ops::users::get(&app, &sub).await?;
    Ok(answers::user(&user, &grant))
}

async fn delete_user(
    State(app): State<App>,
    headers: HeaderMap,
    Path(sub): Path<String>,
) -> Result<Response, ApiError> {
    let caller = api_key(&app, &headers, KeyScope::UsersWrite).await?;
    ops::delete_user(&app, &sub, &caller).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    scopes: Option<Vec<String>>,
    min_ttl: Option<u64>,
}

/// Largest `min_ttl` accepted: Google's tokens live an hour.
const MAX_MIN_TTL: u64 = 3600;

async fn token(
    State(app): State<App>,
    Path(sub): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    // The hot path of the API: the request is borrowed, not copied, and the answer is written
    // into one buffer sized for it.
    let caller = api_key(&app, request.headers(), KeyScope::Token).await?;
    let bytes = read_body(request.into_body(), 16 * 1024).await?;
    let request = token_request(&bytes)?;
    let token = ops::hand_out(&app, &caller, &sub, &request).await?;
    Ok(answers::token(&token))
}

/// The hand-out's body: empty, or `{"scopes": [...], "min_ttl": seconds}`.
fn token_request(bytes: &[u8]) -> Result<TokenRequest, ApiError> {
    let req: TokenBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        TokenBody::default()
    } else {
        serde_json::from_slice(bytes).map_err(|e| {
            ApiError::InvalidRequest(format!(
                "the body must be JSON like {{\"scopes\": [\"...\"], \"min_ttl\": 300}} ({})",
                match e.classify() {
                    serde_json::error::Category::Data => "unexpected field or type",
                    _ => "malformed JSON",
                }
            ))
        })?
    };
    if req.min_ttl.is_some_and(|t| t > MAX_MIN_TTL) {
        return Err(ApiError::InvalidRequest(format!(
            "min_ttl must be 0 to {MAX_MIN_TTL} seconds"
        )));
    }
    Ok(TokenRequest {
        scopes: req.scopes.as_ref().map(Scopes::from_iter),
        min_ttl: req.min_ttl.map(Duration::from_secs),
    })
}

async fn proxy_call(
    State(app): State<App>,
    Path((sub, _)): Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    let caller = api_key(&app, request.headers(), KeyScope::Proxy).await?;
    let detail = format!(
        "{} {}",
        request.method(),
        proxy::upstream_path(request.uri().path()).unwrap_or("?")
    );
    let result = proxy::forward(&app, &sub, request).await;
    let outcome = match &result {
        Ok(r) => r.status().as_u16().to_string(),
        Err(e) => e.code().to_owned(),
    };
    app.audit()
        .record(caller.key_id(), Some(&sub), "proxy", detail, &outcome)
        .await;
    result
}
