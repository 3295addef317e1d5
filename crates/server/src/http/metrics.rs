//! `GET /metrics`: the process's Prometheus metrics as OpenMetrics text, unauthenticated like
//! `/healthz` (labels never carry a user, a token or a path). The grants-by-state gauge is
//! read from the store at each scrape; when the store does not answer, the page is served
//! without it rather than not at all, since metrics matter most then.

use crate::app::App;
use axum::Router;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::get;
use grantkeeper_core::metrics::CONTENT_TYPE as OPENMETRICS;

/// The route's part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(metrics))]
pub(super) struct Api;

pub fn routes() -> Router<App> {
    Router::new().route("/metrics", get(metrics))
}

/// The metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics (OpenMetrics text); no user, token or path appears in a label",
    responses(
        (status = 200, description = "The metrics", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String),
    )
)]
async fn metrics(State(app): State<App>) -> impl IntoResponse {
    let grants = match app.store().count_grants_by_state().await {
        Ok(counts) => counts,
        Err(e) => {
            tracing::warn!(error = %e, "metrics: the grant counts could not be read");
            Vec::new()
        }
    };
    let grants: Vec<(&str, u64)> = grants
        .iter()
        .map(|(state, count)| (state.as_str(), *count))
        .collect();
    (
        [(CONTENT_TYPE, OPENMETRICS), (CACHE_CONTROL, "no-store")],
        app.metrics().encode(&grants),
    )
}
