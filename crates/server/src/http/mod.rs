//! The axum routers. Handlers are thin: they read the request (`extract`), call one operation
//! of [`crate::ops`], and write its answer (`answers`, `cookies`) or its error (mapped in
//! [`crate::error`]). Rules live in the operations, not here; what is only HTTP's stays here:
//! content types, cookies, the CSRF gate and rate limits.

mod admin;
mod answers;
mod cookies;
mod demo;
mod extract;
mod health;
pub mod jobs;
mod metrics;
pub(crate) mod openapi;
mod page;
pub mod proxy;
mod risc;
mod signin;
mod v1;

pub use answers::user_answer;

use crate::app::App;
use crate::error::ApiError;
use axum::Router;
use axum::body::Body;
use axum::extract::MatchedPath;
use axum::http::{Request, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::iter::once;
use std::time::Duration;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::sensitive_headers::{
    SetSensitiveRequestHeadersLayer, SetSensitiveResponseHeadersLayer,
};
use tower_http::trace::TraceLayer;

/// Every route of the server, with its middleware.
pub fn router(app: App) -> Router {
    let mut routes = Router::new()
        .merge(signin::routes())
        .merge(v1::routes())
        .merge(jobs::routes())
        .merge(health::routes())
        .merge(metrics::routes())
        .merge(risc::routes())
        .merge(admin::routes());
    let request_timeout = app.settings().limits.request_timeout;
    if app.demo_page() {
        routes = routes.merge(page::routes()).merge(demo::routes());
    }
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(app)
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal("a handler panicked".to_owned()).into_response()
        }))
        .layer(axum::middleware::from_fn(move |request, next| {
            answer_within(request_timeout, request, next)
        }))
        // The span names the route template, never the URI: query strings and path segments
        // may carry codes or user ids that do not belong in logs.
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<Body>| {
                let route = req
                    .extensions()
                    .get::<MatchedPath>()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_else(|| "unmatched".to_owned());
                tracing::info_span!("request", method = %req.method(), route = %route)
            }),
        )
        .layer(SetSensitiveResponseHeadersLayer::new(once(
            header::SET_COOKIE,
        )))
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
        ]))
}

/// `limits.request_timeout`: a request not answered in time gets the contract's 503, with
/// Retry-After, instead of an empty one; what it was doing is dropped.
async fn answer_within(limit: Duration, request: Request<Body>, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::UpstreamUnavailable {
            message: format!(
                "the request was not answered within {} s (limits.request_timeout); try again",
                limit.as_secs_f64()
            ),
            retry_after: Some(Duration::from_secs(1)),
        }
        .into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".to_owned())
}

async fn method_not_allowed() -> Response {
    let mut r =
        ApiError::InvalidRequest("method not allowed on this endpoint".to_owned()).into_response();
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
}
