//! Signing in to the console with an API key, its sessions, and the checks of every form.
//!
//! A session is a random secret in the `gk_admin` cookie (HttpOnly, SameSite=Strict, Path
//! /admin) whose SHA-256 the store keeps for [`SESSION_TTL`], beside the key it was opened
//! with. Every request reads the session together with that key, so revoking the key ends the
//! session at once.
//!
//! Forms carry a hidden `csrf` field. Signed in, it is HMAC-SHA256(session secret,
//! [`CSRF_CONTEXT`]) in hex: nothing to store, and only the holder of the cookie can know it.
//! The sign-in form has no session yet, so it is a double submit: a random value both in the
//! `gk_admin_csrf` cookie and in the field. Both are compared in constant time. Every POST is
//! also refused when its `Origin` names another site.

use super::html::{self, Section, Shell, esc};
use super::{PageError, html_response, see_other};
use crate::apikeys::{KeyScope, hash_key};
use crate::app::App;
use crate::config::normalise_origin;
use crate::error::ApiError;
use crate::http::extract::read_body;
use aws_lc_rs::{constant_time, hmac};
use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, HOST, ORIGIN, SET_COOKIE};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum_extra::extract::cookie::SameSite;
use grantkeeper_core::{ExposeSecret, SecretString};
use grantkeeper_store::AdminSessionRecord;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// The session cookie.
pub const SESSION_COOKIE: &str = "gk_admin";
/// The sign-in form's double-submit cookie.
pub const LOGIN_CSRF_COOKIE: &str = "gk_admin_csrf";
/// How long a console session lasts: a working day.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// What the CSRF token of a session signs.
pub const CSRF_CONTEXT: &[u8] = b"grantkeeper/admin-csrf";
/// Largest form body accepted (a key, a token, a few fields).
const FORM_LIMIT: usize = 16 * 1024;
/// The capability the console needs.
const READ: KeyScope = KeyScope::UsersRead;

/// A signed-in operator, as the console knows them for one request.
pub struct Operator {
    pub key_id: String,
    pub key_name: String,
    /// The key may revoke grants (`users:write`).
    pub can_write: bool,
    /// The token every form of this session carries.
    pub csrf: String,
    secret: SecretString,
}

impl Operator {
    pub fn shell(&self, section: Section) -> Shell<'_> {
        Shell {
            section,
            key_id: &self.key_id,
            key_name: &self.key_name,
            csrf: &self.csrf,
        }
    }

    /// Checks a form's `csrf` field against this session.
    pub fn check_csrf(&self, token: Option<&str>) -> Result<(), PageError> {
        let tag = token
            .and_then(|t| hex::decode(t).ok())
            .ok_or_else(PageError::csrf)?;
        hmac::verify(&csrf_key(&self.secret), CSRF_CONTEXT, &tag).map_err(|_| PageError::csrf())
    }
}

/// Who is asking.
pub enum Signed {
    In(Operator),
    /// Not signed in; with a notice when a session cookie came but its session has ended.
    Out(Option<&'static str>),
}

fn csrf_key(secret: &SecretString) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret.expose_secret().as_bytes())
}

/// The CSRF token of the session whose secret this is.
pub fn csrf_token(secret: &SecretString) -> String {
    hex::encode(hmac::sign(&csrf_key(secret), CSRF_CONTEXT).as_ref())
}

pub use crate::http::cookies::cookie;

/// A `Set-Cookie` value for the console: HttpOnly, SameSite=Strict, Path=/admin, and Secure
/// unless the server runs without TLS (`dev`).
fn set_cookie(app: &App, name: &'static str, value: &str, max_age: u64) -> HeaderValue {
    let text = crate::http::cookies::set_cookie(
        name,
        value,
        "/admin",
        SameSite::Strict,
        max_age,
        app.settings().secure_cookies,
    );
    // Names and values are ours: base64url, hex or empty.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn session_hash(secret: &str) -> String {
    hash_key(secret)
}

/// Reads the request's console session, with the key it was opened with as it is now.
pub async fn signed(app: &App, headers: &HeaderMap) -> Result<Signed, PageError> {
    let Some(secret) = cookie(headers, SESSION_COOKIE).filter(|s| !s.is_empty()) else {
        return Ok(Signed::Out(None));
    };
    let secret = SecretString::from(secret);
    let id_hash = session_hash(secret.expose_secret());
    let now = app.clock().now();
    let Some((_, key)) = app.store().admin_session(&id_hash, now).await? else {
        return Ok(Signed::Out(Some(
            "Your console session has ended. Sign in again.",
        )));
    };
    let has = |scope: KeyScope| key.scopes.iter().any(|s| s == scope.as_str());
    if key.revoked_at.is_some() || !has(READ) {
        // The session is of no use any more; take it out of the way at once.
        app.store().delete_admin_session(&id_hash).await?;
        tracing::info!(key_id = %key.id, "console session ended: its API key was revoked");
        return Ok(Signed::Out(Some(
            "The API key of your console session was revoked, so the session has ended. \
             Sign in with another key.",
        )));
    }
    Ok(Signed::In(Operator {
        can_write: has(KeyScope::UsersWrite),
        csrf: csrf_token(&secret),
        key_id: key.id,
        key_name: key.name,
        secret,
    }))
}

/// Refuses a form sent from another site: when the browser names the origin, it must be the
/// server's (its public URL, or the host the request was sent to).
pub fn check_origin(app: &App, headers: &HeaderMap) -> Result<(), PageError> {
    let Some(origin) = headers.get(ORIGIN) else {
        return Ok(());
    };
    let Some(origin) = origin.to_str().ok().and_then(normalise_origin) else {
        return Err(PageError::origin());
    };
    let public = app
        .settings()
        .public_url
        .as_ref()
        .map(|u| u.origin().ascii_serialization());
    if public.as_deref() == Some(origin.as_str()) {
        return Ok(());
    }
    let host = headers.get(HOST).and_then(|h| h.to_str().ok());
    let authority = origin.split_once("://").map(|(_, rest)| rest);
    match (host, authority) {
        (Some(host), Some(authority)) if normalise_host(host) == authority => Ok(()),
        _ => Err(PageError::origin()),
    }
}

/// A Host header as an origin writes it: lower case, without the scheme's default port.
fn normalise_host(host: &str) -> String {
    normalise_origin(&format!("http://{host}"))
        .and_then(|o| o.strip_prefix("http://").map(str::to_owned))
        .unwrap_or_default()
}

/// Reads a form body (`application/x-www-form-urlencoded`, at most [`FORM_LIMIT`] bytes).
pub async fn read_form<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
) -> Result<T, PageError> {
    let is_form = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(ApiError::UnsupportedMediaType(
            "The console accepts its own forms only (application/x-www-form-urlencoded)."
                .to_owned(),
        )
        .into());
    }
    let bytes = read_body(body, FORM_LIMIT).await?;
    serde_urlencoded::from_bytes(&bytes)
        .map_err(|_| ApiError::InvalidRequest("The form could not be read.".to_owned()).into())
}

/// What the sign-in page says above its form.
#[derive(Clone, Copy)]
pub enum LoginNote<'a> {
    /// Why the last attempt failed, or why the session ended.
    Problem(&'a str),
    /// What just happened, as it should (the operator signed out).
    Done(&'a str),
}

/// What the sign-in page says after the operator signed out.
pub const SIGNED_OUT: &str = "You signed out of the console.";

/// The sign-in page, with its note. It (re)sets the double-submit cookie, keeping a value the
/// browser already holds so that two open tabs both work, and clears a dead session cookie
/// when asked.
pub fn login_page(
    app: &App,
    headers: &HeaderMap,
    status: StatusCode,
    note: Option<LoginNote<'_>>,
    clear_session: bool,
) -> Response {
    let token = cookie(headers, LOGIN_CSRF_COOKIE)
        .filter(|v| {
            (32..=128).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .unwrap_or_else(grantkeeper_core::random::token::<32>);
    let alert = match note {
        Some(LoginNote::Problem(m)) => format!(
            r#"<div class="alert error" role="alert" id="login-error"><p>{}</p></div>"#,
            esc(m)
        ),
        Some(LoginNote::Done(m)) => format!(
            r#"<div class="alert ok" role="status" id="login-note"><p>{}</p></div>"#,
            esc(m)
        ),
        None => String::new(),
    };
    let body = format!(
        r#"<div class="login">
<h1>Sign in</h1>
<p>Sign in with an API key that has the <code>users:read</code> capability (<code>grantkeeper api-keys create --scope users:read</code>). Revoking grants also needs <code>users:write</code>.</p>
{alert}<form method="post" action="/admin/login" id="login-form">
<input type="hidden" name="csrf" value="{token}">
<label for="api-key">API key</label>
<input id="api-key" name="api_key" type="password" autocomplete="off" spellcheck="false" required>
<button type="submit" id="login">Sign in</button>
</form>
</div>"#,
        token = esc(&token),
    );
    let mut response = html_response(status, html::page("Sign in", None, &body));
    let headers = response.headers_mut();
    headers.append(SET_COOKIE, set_cookie(app, LOGIN_CSRF_COOKIE, &token, 3600));
    if clear_session {
        headers.append(SET_COOKIE, set_cookie(app, SESSION_COOKIE, "", 0));
    }
    response
}

#[derive(Deserialize)]
pub struct LoginForm {
    api_key: Option<SecretString>,
    csrf: Option<String>,
}

/// `POST /admin/login`: checks the key, opens a session, and sends the browser to the users.
pub async fn login(
    State(app): State<App>,
    headers: HeaderMap,
    extensions: Extensions,
    body: Body,
) -> Result<Response, PageError> {
    // Each attempt guesses an API key: limited per client IP as `/authcode` is.
    if let Err(error) = app.limits().check_sign_in(&headers, &extensions) {
        let wait = match &error {
            ApiError::RateLimited { retry_after } => retry_after.as_secs().max(1),
            _ => 1,
        };
        return Err(PageError {
            error,
            message: format!(
                "Too many sign-in attempts from this address. Wait {wait} seconds and try again."
            ),
        });
    }
    check_origin(&app, &headers)?;
    let form: LoginForm = read_form(&headers, body).await?;
    let submitted = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    let field = form.csrf.unwrap_or_default();
    if submitted.is_empty()
        || constant_time::verify_slices_are_equal(submitted.as_bytes(), field.as_bytes()).is_err()
    {
        return Err(PageError::csrf());
    }
    let refuse = |message: &str| {
        Ok(login_page(
            &app,
            &headers,
            StatusCode::UNAUTHORIZED,
            Some(LoginNote::Problem(message)),
            false,
        ))
    };
    let Some(secret) = form
        .api_key
        .filter(|k| !k.expose_secret().trim().is_empty())
    else {
        return refuse("Enter an API key.");
    };
    let Some(key) = app
        .store()
        .api_key_by_hash(&hash_key(secret.expose_secret().trim()))
        .await?
        .filter(|k| k.revoked_at.is_none())
    else {
        tracing::info!("console sign-in refused: unknown or revoked API key");
        return refuse("That API key is unknown or revoked. Check it and try again.");
    };
    if !key.scopes.iter().any(|s| s == READ.as_str()) {
        tracing::info!(key_id = %key.id, "console sign-in refused: the key lacks users:read");
        return refuse(&format!(
            "The API key {} lacks the users:read capability, which the console needs. \
             Use a key created with --scope users:read.",
            key.id
        ));
    }

    let now = app.clock().now();
    // Sessions left to expire are cleared here, where one is made, rather than by a timer.
    if let Err(e) = app.store().purge_expired_admin_sessions(now).await {
        tracing::warn!(error = %e, "could not purge expired console sessions");
    }
    let session = grantkeeper_core::random::token::<32>();
    app.store()
        .create_admin_session(AdminSessionRecord {
            id_hash: session_hash(&session),
            key_id: key.id.clone(),
            created_at: now,
            expires_at: now + SESSION_TTL,
        })
        .await?;
    app.audit()
        .record(&key.id, None, "console_sign_in", String::new(), "ok")
        .await;
    tracing::info!(key_id = %key.id, "console session started");
    let mut response = see_other("/admin");
    let headers = response.headers_mut();
    headers.append(
        SET_COOKIE,
        set_cookie(&app, SESSION_COOKIE, &session, SESSION_TTL.as_secs()),
    );
    headers.append(SET_COOKIE, set_cookie(&app, LOGIN_CSRF_COOKIE, "", 0));
    Ok(response)
}

#[derive(Deserialize)]
pub struct CsrfForm {
    pub csrf: Option<String>,
}

/// `POST /admin/logout`: ends the session.
pub async fn logout(
    State(app): State<App>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, PageError> {
    check_origin(&app, &headers)?;
    let form: CsrfForm = read_form(&headers, body).await?;
    if let Signed::In(operator) = signed(&app, &headers).await? {
        operator.check_csrf(form.csrf.as_deref())?;
        app.store()
            .delete_admin_session(&session_hash(operator.secret.expose_secret()))
            .await?;
        tracing::info!(key_id = %operator.key_id, "console session ended by its operator");
    }
    // The sign-in page says it happened.
    let mut response = see_other("/admin?signed-out=1");
    response
        .headers_mut()
        .append(SET_COOKIE, set_cookie(&app, SESSION_COOKIE, "", 0));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use axum::http::header::COOKIE;

    #[test]
    fn csrf_tokens_are_the_hmac_of_the_session_secret() {
        let secret = SecretString::from("s3cret".to_owned());
        let token = csrf_token(&secret);
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"s3cret");
        assert_eq!(
            token,
            hex::encode(hmac::sign(&key, b"grantkeeper/admin-csrf").as_ref())
        );
        assert_eq!(token.len(), 64);
        let operator = Operator {
            key_id: "key_1".into(),
            key_name: "ops".into(),
            can_write: false,
            csrf: token.clone(),
            secret,
        };
        assert!(operator.check_csrf(Some(&token)).is_ok());
        let other = csrf_token(&SecretString::from("other".to_owned()));
        assert!(operator.check_csrf(Some(&other)).is_err());
        assert!(operator.check_csrf(None).is_err());
        assert!(operator.check_csrf(Some("")).is_err());
        assert!(operator.check_csrf(Some("zz")).is_err());
        assert!(operator.check_csrf(Some(&token[..63])).is_err());
    }

    #[test]
    fn finds_cookies_by_exact_name() {
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_static("gk_admin_csrf=abc; gk_admin=def ; gk_session=x"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("def"));
        assert_eq!(cookie(&h, LOGIN_CSRF_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "gk"), None);
    }

    #[test]
    fn hosts_are_compared_as_origins_write_them() {
        assert_eq!(normalise_host("Example.com:443"), "example.com:443");
        assert_eq!(normalise_host("example.com:80"), "example.com");
        assert_eq!(normalise_host("127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(normalise_host("bad host"), "");
    }
}
