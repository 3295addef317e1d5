//! Liveness and readiness for load balancers and orchestrators, and the OpenAPI document.

use crate::app::App;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

/// The routes' part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(healthz, readyz, openapi))]
pub(super) struct Api;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
}

/// Serves the OpenAPI document, made once ([`super::openapi::DOCUMENT`]).
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "operations",
    summary = "This document",
    responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json", body = Object))
)]
async fn openapi() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "application/json")],
        super::openapi::DOCUMENT.as_str(),
    )
}

/// `GET /healthz`'s answer.
#[derive(Serialize, ToSchema)]
#[schema(as = Health)]
struct HealthJson {
    /// Always `ok`.
    status: &'static str,
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    summary = "The process is up",
    responses((status = 200, description = "Up", body = HealthJson))
)]
async fn healthz() -> Json<HealthJson> {
    Json(HealthJson { status: "ok" })
}

/// `GET /readyz`'s answer when ready.
#[derive(Serialize, ToSchema)]
#[schema(as = Ready)]
struct ReadyJson {
    /// `ready`.
    status: &'static str,
    /// The store's backend: `sqlite` or `postgres`.
    store: &'static str,
}

/// `GET /readyz`'s answer when not ready.
#[derive(Serialize, ToSchema)]
#[schema(as = NotReady)]
struct NotReadyJson {
    /// `not_ready`.
    status: &'static str,
    /// The store answered.
    store_ok: bool,
    /// The vault has a data key to seal with.
    vault_ok: bool,
}

/// Ready when the store answers and the vault has a key to seal with.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    summary = "The store and the vault are usable",
    responses(
        (status = 200, description = "Ready", body = ReadyJson),
        (status = 503, description = "Not ready", body = NotReadyJson),
    )
)]
async fn readyz(State(app): State<App>) -> Response {
    let store = app.store().ping().await;
    let vault = app.vault().active().is_some();
    match (store, vault) {
        (Ok(()), true) => Json(ReadyJson {
            status: "ready",
            store: app.store().backend(),
        })
        .into_response(),
        (store, vault) => {
            if let Err(e) = &store {
                tracing::warn!(error = %e, "readiness: store unavailable");
            }
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(NotReadyJson {
                    status: "not_ready",
                    store_ok: store.is_ok(),
                    vault_ok: vault,
                }),
            )
                .into_response()
        }
    }
}
