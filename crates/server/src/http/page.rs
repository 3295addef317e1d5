//! The development page: sign in through the provider's consent popup and see what the server
//! recorded. Served by `grantkeeper dev` only.

use crate::app::App;
use crate::error::{ApiError, exchange_error};
use axum::Router;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

const PAGE: &str = include_str!("../../assets/dev.html");

pub fn routes() -> Router<App> {
    Router::new().route("/", get(page))
}

async fn page(State(app): State<App>) -> Result<Response, ApiError> {
    let discovery = app.provider().discovery().await.map_err(exchange_error)?;
    let config = json!({
        "client_id": app.settings().provider.client_id,
        "authorization_endpoint": discovery.authorization_endpoint,
        "scope": "openid email profile https://www.googleapis.com/auth/drive.appdata",
    });
    // `<` is escaped so that no value can close the script element.
    let config = config.to_string().replace('<', "\\u003c");
    let html = PAGE.replace("/*CONFIG*/null", &config);
    Ok((
        [
            (CACHE_CONTROL, "no-store"),
            (
                CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src * data:",
            ),
        ],
        Html(html),
    )
        .into_response())
}
