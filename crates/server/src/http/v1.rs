//! The API for the app's other services (`Authorization: Bearer <api key>`): users, fresh
//! access tokens, and Google API calls made as a user. Every hand-out, proxied call and
//! deletion is audited.

use crate::apikeys::{Caller, KeyScope};
use crate::app::App;
use crate::error::ApiError;
use crate::http::extract::Path;
use crate::http::proxy;
use crate::http::signin::{GrantJson, UserJson, read_body};
use axum::extract::{RawQuery, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use grantkeeper_broker::{RevocationOutcome, TokenRequest};
use grantkeeper_core::{ExposeSecret, Scopes};
use grantkeeper_store::{GrantRecord, UserRecord};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use time::format_description::well_known::Rfc3339;

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

#[derive(Serialize)]
struct UserWithGrant {
    user: UserJson,
    grant: GrantJson,
}

/// A user and their grant as `GET /v1/users/{sub}` answers them (also each element of a
/// `GET /v1/users` page), for other front ends of the same data (the command line's `--json`).
pub fn user_answer(user: &UserRecord, grant: &GrantRecord) -> serde_json::Value {
    serde_json::to_value(UserWithGrant {
        user: user.into(),
        grant: grant.into(),
    })
    .unwrap_or_default()
}

#[derive(Serialize)]
struct UserPageJson {
    users: Vec<UserWithGrant>,
    next_cursor: Option<String>,
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
    app.authorize(&headers, KeyScope::UsersRead).await?;
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
    let page = app.store().list_users(after.as_deref(), limit).await?;
    Ok(Json(UserPageJson {
        users: page
            .users
            .iter()
            .map(|(u, g)| UserWithGrant {
                user: u.into(),
                grant: g.into(),
            })
            .collect(),
        next_cursor: page.next.map(|s| URL_SAFE_NO_PAD.encode(s)),
    })
    .into_response())
}

async fn get_user(
    State(app): State<App>,
    headers: HeaderMap,
    Path(sub): Path<String>,
) -> Result<Response, ApiError> {
    app.authorize(&headers, KeyScope::UsersRead).await?;
    let (user, grant) = app
        .store()
        .user(&sub)
        .await?
        .ok_or_else(|| ApiError::NotFound("no user with this sub".to_owned()))?;
    Ok(Json(UserWithGrant {
        user: (&user).into(),
        grant: (&grant).into(),
    })
    .into_response())
}

async fn delete_user(
    State(app): State<App>,
    headers: HeaderMap,
    Path(sub): Path<String>,
) -> Result<Response, ApiError> {
    let caller = app.authorize(&headers, KeyScope::UsersWrite).await?;
    let result = app
        .delete_user(&sub, &format!("deleted by API key {}", caller.key_id()))
        .await;
    let outcome = match &result {
        Ok(RevocationOutcome::Revoked) => "ok",
        Ok(RevocationOutcome::Queued) => "queued",
        Err(e) => e.code(),
    };
    app.audit()
        .record(
            caller.key_id(),
            Some(&sub),
            "delete_user",
            String::new(),
            outcome,
        )
        .await;
    result?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

impl App {
    /// Revokes the user's grant at Google, then deletes the user with everything held for them.
    /// When Google cannot be reached the user is deleted here all the same, and the grant's
    /// revocation at Google is queued and retried until it gets through
    /// ([`RevocationOutcome::Queued`]).
    pub async fn delete_user(
        &self,
        sub: &str,
        reason: &str,
    ) -> Result<RevocationOutcome, ApiError> {
        let revoked = self.broker().revoke_or_queue(sub, reason).await?;
        self.broker().forget(sub);
        if !self.store().delete_user(sub).await? {
            return Err(ApiError::NotFound("no user with this sub".to_owned()));
        }
        match revoked {
            RevocationOutcome::Revoked => tracing::info!(%sub, "user deleted"),
            RevocationOutcome::Queued => tracing::warn!(
                %sub,
                outcome = "queued",
                "user deleted here; Google could not revoke the grant, so its revocation there is queued and retried"
            ),
        }
        Ok(revoked)
    }
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
    let caller = app.authorize(request.headers(), KeyScope::Token).await?;
    let bytes = read_body(request.into_body(), 16 * 1024).await?;
    let req: TokenBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        TokenBody::default()
    } else {
        serde_json::from_slice(&bytes).map_err(|e| {
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
    let request = TokenRequest {
        scopes: req.scopes.as_ref().map(Scopes::from_iter),
        min_ttl: req.min_ttl.map(Duration::from_secs),
    };
    let detail = request
        .scopes
        .as_ref()
        .map(|s| s.to_string())
        .unwrap_or_default();
    let result = app
        .broker()
        .access_token(&sub, &request)
        .await
        .map_err(ApiError::from);
    audit(&app, &caller, &sub, "token", detail, &result).await;
    let token = result?;
    app.metrics().token_handout();
    let expires_at = token.expires_at.format(&Rfc3339).unwrap_or_default();
    let json = token_json(token.token.expose_secret(), &expires_at, &token.scopes);
    Ok((
        [
            (CACHE_CONTROL, "no-store"),
            (CONTENT_TYPE, "application/json"),
        ],
        json,
    )
        .into_response())
}

/// `{"access_token": ..., "expires_at": ..., "scopes": [...]}`, written straight into one
/// buffer: the hand-out is the API's hot path, and its three fields need no serializer.
fn token_json(access_token: &str, expires_at: &str, scopes: &Scopes) -> Vec<u8> {
    let scope_bytes: usize = scopes.iter().map(|s| s.len() + 3).sum();
    let mut out = Vec::with_capacity(access_token.len() + expires_at.len() + scope_bytes + 64);
    out.extend_from_slice(b"{\"access_token\":");
    json_string(&mut out, access_token);
    out.extend_from_slice(b",\"expires_at\":");
    json_string(&mut out, expires_at);
    out.extend_from_slice(b",\"scopes\":[");
    for (i, scope) in scopes.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_string(&mut out, scope);
    }
    out.extend_from_slice(b"]}");
    out
}

/// `s` as a JSON string (RFC 8259 section 7): quote, backslash and control characters escaped,
/// everything else as it is (UTF-8 stays UTF-8).
#[allow(
    clippy::indexing_slicing,
    reason = "a nibble (b >> 4, b & 0xf) always indexes within the 16 hex digits"
)]
fn json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut unicode = *b"\\u0000";
    out.push(b'"');
    // Tokens, times and scopes need no escape: one pass without branches (so it vectorizes)
    // says so, and the string is copied whole.
    let clean = s.bytes().fold(true, |clean, b| {
        clean & (b >= 0x20) & (b != b'"') & (b != b'\\')
    });
    if clean {
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    let mut plain = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        let escaped: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => {
                unicode[4] = HEX[usize::from(b >> 4)];
                unicode[5] = HEX[usize::from(b & 0xf)];
                &unicode
            }
            _ => continue,
        };
        out.extend_from_slice(s.as_bytes().get(plain..i).unwrap_or_default());
        out.extend_from_slice(escaped);
        plain = i + 1;
    }
    out.extend_from_slice(s.as_bytes().get(plain..).unwrap_or_default());
    out.push(b'"');
}

async fn proxy_call(
    State(app): State<App>,
    Path((sub, _)): Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    let caller = app.authorize(request.headers(), KeyScope::Proxy).await?;
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

async fn audit<T>(
    app: &App,
    caller: &Caller,
    sub: &str,
    action: &str,
    detail: String,
    result: &Result<T, ApiError>,
) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(e) => e.code(),
    };
    app.audit()
        .record(caller.key_id(), Some(sub), action, detail, outcome)
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn json_strings_round_trip_through_a_json_parser() {
        for s in [
            "",
            "ya29.a0AfB_byC-x_y",
            "say \"hi\"",
            "back\\slash",
            "tab\tnew\nline\rret",
            "\u{0}\u{1}\u{1f} \u{7f}",
            "caf\u{e9} \u{1f600} \u{2028}",
            "</script>",
        ] {
            let mut out = Vec::new();
            json_string(&mut out, s);
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, s, "{}", String::from_utf8_lossy(&out));
        }
        let mut out = Vec::new();
        json_string(&mut out, "\u{1}\"");
        assert_eq!(out, br#""\u0001\"""#);
    }

    #[test]
    fn the_token_answer_is_the_json_the_contract_gives() {
        let scopes = Scopes::from_iter(["openid", "https://www.googleapis.com/auth/drive.appdata"]);
        let out = token_json("ya29.tok\"en", "2026-12-03T17:00:00Z", &scopes);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({
                "access_token": "ya29.tok\"en",
                "expires_at": "2026-12-03T17:00:00Z",
                "scopes": ["https://www.googleapis.com/auth/drive.appdata", "openid"],
            })
        );
        let none: Value =
            serde_json::from_slice(&token_json("t", "x", &Scopes::from_iter::<[&str; 0]>([])))
                .unwrap();
        assert_eq!(
            none,
            json!({"access_token": "t", "expires_at": "x", "scopes": []})
        );
    }
}
