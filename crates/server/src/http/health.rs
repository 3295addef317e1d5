//! Liveness and readiness for load balancers and orchestrators.

use crate::app::App;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
}

/// The OpenAPI document of the HTTP contract.
pub const OPENAPI: &str = include_str!("../../assets/openapi.json");

async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the store answers and the vault has a key to seal with.
async fn readyz(State(app): State<App>) -> (StatusCode, Json<Value>) {
    let store = app.store().ping().await;
    let vault = app.vault().active().is_some();
    match (store, vault) {
        (Ok(()), true) => (
            StatusCode::OK,
            Json(json!({"status": "ready", "store": app.store().backend()})),
        ),
        (store, vault) => {
            if let Err(e) = &store {
                tracing::warn!(error = %e, "readiness: store unavailable");
            }
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "not_ready", "store_ok": store.is_ok(), "vault_ok": vault})),
            )
        }
    }
}
