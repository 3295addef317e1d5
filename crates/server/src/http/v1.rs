//! The API for the app's other services (`Authorization: Bearer <api key>`): users, fresh
//! access tokens, and Google API calls made as a user. Every hand-out, proxied call and
//! deletion is audited.

use crate::apikeys::KeyScope;
use crate::app::App;
use crate::error::{ApiError, ErrorBody};
use crate::http::answers;
use crate::http::extract::{Path, api_key, read_body};
use crate::http::openapi::{KeyErrors, NoSuchUser, scope};
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
use utoipa::{IntoParams, ToSchema};

/// The routes' part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list_users, get_user, delete_user, token, proxy_call))]
pub(super) struct Api;

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

#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
struct PageQuery {
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Users a page (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    limit: Option<String>,
}

const MAX_PAGE: u32 = 500;

/// Users with their grant status, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/users",
    operation_id = "list_users",
    tag = "users",
    summary = "Users with their grant status, a page at a time (scope users:read)",
    security(("apiKey" = ["users:read"])),
    params(PageQuery),
    responses(
        (status = 200, description = "A page", body = answers::UserPageJson),
        KeyErrors<scope::UsersRead>,
        (status = 400, description = "`invalid_request`: a limit out of range, or a cursor this API did not give", body = ErrorBody),
    )
)]
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

/// One user and their grant.
#[utoipa::path(
    get,
    path = "/v1/users/{sub}",
    operation_id = "get_user",
    tag = "users",
    summary = "One user and their grant (scope users:read)",
    security(("apiKey" = ["users:read"])),
    params(("sub" = String, Path, description = "The user's Google ID (`sub`)")),
    responses(
        (status = 200, description = "The user", body = answers::UserWithGrant),
        KeyErrors<scope::UsersRead>,
        NoSuchUser,
    )
)]
async fn get_user(
    State(app): State<App>,
    headers: HeaderMap,
    Path(sub): Path<String>,
) -> Result<Response, ApiError> {
    api_key(&app, &headers, KeyScope::UsersRead).await?;
    let (user, grant) = ops::users::get(&app, &sub).await?;
    Ok(answers::user(&user, &grant))
}

/// Revokes the grant at Google, then deletes the user.
#[utoipa::path(
    delete,
    path = "/v1/users/{sub}",
    operation_id = "delete_user",
    tag = "users",
    summary = "Revoke the grant at Google, then delete the user and everything held for them (scope users:write)",
    description = "If Google cannot be reached, the user is deleted here at once and the revocation at Google is retried.",
    security(("apiKey" = ["users:write"])),
    params(("sub" = String, Path, description = "The user's Google ID (`sub`)")),
    responses(
        (status = 204, description = "Deleted"),
        KeyErrors<scope::UsersWrite>,
        NoSuchUser,
    )
)]
async fn delete_user(
    State(app): State<App>,
    headers: HeaderMap,
    Path(sub): Path<String>,
) -> Result<Response, ApiError> {
    let caller = api_key(&app, &headers, KeyScope::UsersWrite).await?;
    ops::delete_user(&app, &sub, &caller).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// What the token must be. Unknown fields are refused.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TokenRequest)]
struct TokenBody {
    /// Scopes the token must carry, all granted by the user (default: every scope granted).
    scopes: Option<Vec<String>>,
    /// Seconds the token must stay valid at least: 0 is any unexpired token; absent, the
    /// configured `broker.min_ttl`.
    #[schema(maximum = 3600)]
    min_ttl: Option<u64>,
}

/// Largest `min_ttl` accepted: Google's tokens live an hour.
const MAX_MIN_TTL: u64 = 3600;

/// A fresh access token for the user.
#[utoipa::path(
    post,
    path = "/v1/users/{sub}/token",
    operation_id = "hand_out",
    tag = "users",
    summary = "A fresh access token for the user (scope token)",
    description = "Answers the held token when it stays valid for at least min_ttl seconds (0: any unexpired token; absent: the configured default), else refreshes once for all concurrent callers, across instances. Answered with Cache-Control: no-store.",
    security(("apiKey" = ["token"])),
    params(("sub" = String, Path, description = "The user's Google ID (`sub`)")),
    request_body(content = Option<TokenBody>, description = "Optional: an empty body takes the defaults"),
    responses(
        (status = 200, description = "A token (Cache-Control: no-store)", body = answers::AccessTokenJson),
        KeyErrors<scope::Token>,
        NoSuchUser,
        (status = 400, description = "`invalid_request`: malformed JSON, a field of the wrong type or unknown, min_ttl over 3600", body = ErrorBody),
        (status = 403, description = "`forbidden`: the key lacks scope `token`; `scope_not_granted`: a scope the user did not grant", body = ErrorBody),
        (status = 409, description = "`grant_revoked`: the grant is revoked or needs consent: the user must sign in again", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: a body over 16 KiB", body = ErrorBody),
        (status = 502, description = "`upstream_error`: Google refused grantkeeper's request", body = ErrorBody),
        (status = 503, description = "`upstream_unavailable`: Google or the store is unavailable (Retry-After)", body = ErrorBody),
    )
)]
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

/// A Google API call made as the user.
#[utoipa::path(
    method(get, head, post, put, patch, delete),
    path = "/v1/users/{sub}/google/{path}",
    tag = "users",
    summary = "Call {api_base}/{path} as the user (scope proxy)",
    description = "GET, HEAD, POST, PUT, PATCH or DELETE (others: 405 invalid_request with Allow, before the key is looked at). The query and the body pass through; of the caller's headers only content negotiation, conditional requests, ranges and Google's upload headers do (design.md lists them), and Authorization is the user's access token. Google's answer comes back with its status, headers (less hop-by-hop ones and Set-Cookie) and body. A 401 from the API is retried once after a refresh (bodies up to 1 MiB), except within broker.rejection_cooldown of such a refresh, when the 401 is passed back.",
    security(("apiKey" = ["proxy"])),
    params(
        ("sub" = String, Path, description = "The user's Google ID (`sub`)"),
        ("path" = String, Path, description = "The API path under api_base, e.g. drive/v3/files"),
    ),
    responses(
        (status = "default", description = "The API's answer, as Google gave it"),
        KeyErrors<scope::Proxy>,
        NoSuchUser,
        (status = 401, description = "`unauthorized`: no API key, or not one of ours (Google's own 401s pass through)", body = ErrorBody),
        (status = 403, description = "`forbidden`: the key lacks scope `proxy`; `scope_not_granted`", body = ErrorBody),
        (status = 405, description = "`invalid_request`: a method Google's APIs do not use (Allow)", body = ErrorBody),
        (status = 409, description = "`grant_revoked`: the user must sign in again", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: a body over `limits.proxy_body_limit`", body = ErrorBody),
        (status = 502, description = "`upstream_error`: no answer from the API", body = ErrorBody),
        (status = 503, description = "`upstream_unavailable`: Google or the store unavailable, or the call over `limits.request_timeout` (Retry-After)", body = ErrorBody),
    )
)]
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
