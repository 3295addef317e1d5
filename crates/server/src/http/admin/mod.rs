//! The admin console at `/admin`: server-rendered pages for operators, no script required.
//!
//! Operators sign in with an API key that has `users:read` ([`auth`]); the console then lists
//! and searches users with their grant states ([`users`]), shows one user's grant, history and
//! audit trail, revokes a grant when the key also has `users:write`, charts what the
//! instances did ([`activity`], drawn by [`charts`]), and shows the jobs' progress and
//! failures ([`jobs`]). Every page is HTML built by [`html`],
//! which escapes every value it did not write itself.
//!
//! Owns: the console's session cookie and CSRF tokens, its pages and their security headers.
//! Leaves to others: what a revocation does (the broker), what is recorded (store, audit),
//! and the JSON API, whose OpenAPI document does not describe these pages.

mod activity;
mod auth;
mod charts;
mod html;
mod jobs;
mod users;

use crate::app::App;
use crate::error::ApiError;
use axum::Router;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use grantkeeper_store::StoreError;
use html::esc;

/// No frames, forms only to this server; its one script from this server; styles inline;
/// images only as profile pictures (https) or inline.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src 'self' data: https:; form-action 'self'; frame-ancestors 'none'";

/// The console's script: times in the reader's locale (the pages work without it).
const SCRIPT: &str = include_str!("../../../assets/console.js");

pub fn routes() -> Router<App> {
    Router::new()
        .route("/admin", get(users::users))
        .route("/admin/", get(to_console))
        .route("/admin/users", get(users::users))
        .route("/admin/users/{sub}", get(users::user))
        .route("/admin/users/{sub}/revoke", post(users::revoke))
        .route("/admin/activity", get(activity::activity))
        .route("/admin/jobs", get(jobs::jobs))
        .route("/admin/jobs/{id}", get(jobs::job))
        .route("/admin/console.js", get(script))
        // The address bar may show these after a form; opening them again leads back in.
        .route("/admin/login", get(to_console).post(auth::login))
        .route("/admin/logout", get(to_console).post(auth::logout))
        .route("/admin/{*rest}", any(not_found))
        .layer(axum::middleware::map_response(security_headers))
}

/// Headers of every console answer, errors and redirects included: nothing cached (pages show
/// personal data and CSRF tokens), never framed, no referrer (URLs name users).
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Not `no-referrer`: under it browsers send `Origin: null` with the console's own forms,
    // which the origin check must refuse.
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}

/// An HTML answer.
fn html_response(status: StatusCode, body: String) -> Response {
    (status, [(CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

/// `303 See Other` to a path of the console (after a form, or to the sign-in page).
fn see_other(path: &str) -> Response {
    match HeaderValue::from_str(path) {
        Ok(location) => (StatusCode::SEE_OTHER, [(LOCATION, location)]).into_response(),
        Err(_) => (StatusCode::SEE_OTHER, [(LOCATION, "/admin")]).into_response(),
    }
}

async fn script() -> Response {
    (
        [
            (CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (CACHE_CONTROL, "no-cache"),
        ],
        SCRIPT,
    )
        .into_response()
}

async fn to_console() -> Response {
    see_other("/admin")
}

async fn not_found() -> PageError {
    ApiError::NotFound("There is no such page in the console.".to_owned()).into()
}

/// A failure shown as an HTML page: the status and error code of design.md, and a message
/// that says what happened and what to do.
pub struct PageError {
    error: ApiError,
    message: String,
}

impl PageError {
    /// A form without its CSRF token, or with one that is not this session's.
    fn csrf() -> PageError {
        PageError {
            error: ApiError::Csrf,
            message: "The form's security token was missing or did not match this console \
                      session, so nothing was changed. Go back, reload the page and try again."
                .to_owned(),
        }
    }

    fn origin() -> PageError {
        PageError {
            error: ApiError::OriginNotAllowed,
            message: "The form was sent from another site, so nothing was changed. Use the \
                      console's own pages."
                .to_owned(),
        }
    }
}

impl From<ApiError> for PageError {
    fn from(error: ApiError) -> Self {
        let message = match &error {
            ApiError::Internal(_) => {
                "grantkeeper could not complete the request; the error is in its log.".to_owned()
            }
            other => other.to_string(),
        };
        PageError { error, message }
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        ApiError::from(e).into()
    }
}

/// A person's name for a status.
fn status_title(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "Bad request",
        401 => "Not signed in",
        403 => "Refused",
        404 => "Not found",
        413 => "Too large",
        415 => "Not a form",
        502 | 503 => "Upstream unavailable",
        _ => "Error",
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let code = self.error.code();
        // The API error's own answer logs it once and carries its status and Retry-After;
        // only the body becomes a page.
        let mut response = self.error.into_response();
        let status = response.status();
        let body = format!(
            r#"<h1>{title}</h1>
<div class="alert error" role="alert" id="error" data-code="{code}"><p>{message}</p><p class="muted">Error code: <code>{code}</code> (HTTP {status})</p></div>
<p><a href="/admin">Back to the console</a></p>"#,
            title = esc(status_title(status)),
            code = esc(code),
            message = esc(&self.message),
            status = status.as_u16(),
        );
        let page = html::page(status_title(status), None, &body);
        *response.body_mut() = axum::body::Body::from(page);
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        response
            .headers_mut()
            .remove(axum::http::header::CONTENT_LENGTH);
        response
    }
}
