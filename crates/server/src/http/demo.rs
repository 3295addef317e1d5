//! The demo page's offline calls: the signed-in user's Drive appDataFolder as the server reads
//! it on the offline path (through the broker, as any app service would), files added and
//! deleted the same way, and the offline job run for that user now. Served with the page.

use crate::app::App;
use crate::error::ApiError;
use crate::http::extract::Path;
use crate::http::extract::{gate, read_body, session_user};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use grantkeeper_broker::TokenRequest;
use grantkeeper_core::scopes::DRIVE_APPDATA;
use grantkeeper_core::{ExposeSecret, Scopes};
use serde::Deserialize;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/demo/files", get(list_files).post(add_file))
        .route("/demo/files/{id}", delete(delete_file))
        .route("/demo/offline-job", post(offline_job))
}

const LIST: &str =
    "drive/v3/files?spaces=appDataFolder&fields=files(id,name,modifiedTime,size)&pageSize=100";

/// Calls a Google API as `sub` through the broker; answers the API's status and JSON. A 401
/// (the token was revoked or expired early) is retried once after a refresh, as the proxy does;
/// a grant found revoked then surfaces as `grant_revoked`.
async fn call(
    app: &App,
    sub: &str,
    method: Method,
    path_and_query: &str,
    body: Option<(String, Vec<u8>)>,
) -> Result<(u16, Value), ApiError> {
    let token = app
        .broker()
        .access_token(
            sub,
            &TokenRequest {
                scopes: Some(Scopes::parse(DRIVE_APPDATA)),
                min_ttl: None,
            },
        )
        .await?;
    let base = app.settings().api_base.as_str().trim_end_matches('/');
    let url = format!("{base}/{path_and_query}");
    let send = |token: &grantkeeper_core::SecretString| {
        let mut req = app
            .api_http()
            .request(method.clone(), &url)
            .bearer_auth(token.expose_secret());
        if let Some((content_type, bytes)) = &body {
            req = req
                .header("content-type", content_type.as_str())
                .body(bytes.clone());
        }
        async move {
            req.send().await.map_err(|_| ApiError::UpstreamUnavailable {
                message: "the Drive API did not answer".to_owned(),
                retry_after: None,
            })
        }
    };
    let mut response = send(&token.token).await?;
    if response.status() == reqwest::StatusCode::UNAUTHORIZED
        && let Some(fresh) = app
            .broker()
            .refresh_after_rejection(sub, &token.token)
            .await?
    {
        response = send(&fresh.token).await?;
    }
    let status = response.status().as_u16();
    let value = response.json::<Value>().await.unwrap_or(Value::Null);
    Ok((status, value))
}

/// [`call`], recorded in the audit as `label` with Drive's status, or with the error code when
/// no answer came (a grant found revoked is the row an operator looks for first).
async fn audited_call(
    app: &App,
    sub: &str,
    method: Method,
    path_and_query: &str,
    label: &str,
    body: Option<(String, Vec<u8>)>,
) -> Result<(u16, Value), ApiError> {
    let result = call(app, sub, method, path_and_query, body).await;
    let outcome = match &result {
        Ok((status, _)) => status.to_string(),
        Err(e) => e.code().to_owned(),
    };
    app.audit()
        .record("session", Some(sub), "proxy", label.to_owned(), &outcome)
        .await;
    result
}

/// A Drive file id as Drive makes them: letters, digits, `-` and `_`.
fn valid_file_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

async fn delete_file(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    gate(&app, &headers)?;
    let sub = session_user(&app, &headers).await?;
    if !valid_file_id(&id) {
        return Err(ApiError::InvalidRequest(
            "a file id has letters, digits, '-' and '_' only".to_owned(),
        ));
    }
    let (status, result) = audited_call(
        &app,
        &sub,
        Method::DELETE,
        &format!("drive/v3/files/{id}"),
        "DELETE drive/v3/files",
        None,
    )
    .await?;
    if status == 404 {
        return Err(ApiError::NotFound(
            "no such file in the app folder".to_owned(),
        ));
    }
    Ok(Json(json!({"status": status, "result": result})).into_response())
}

async fn list_files(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    let sub = session_user(&app, &headers).await?;
    let (status, files) =
        audited_call(&app, &sub, Method::GET, LIST, "GET drive/v3/files", None).await?;
    Ok(Json(json!({"status": status, "result": files})).into_response())
}

#[derive(Deserialize)]
struct NewFile {
    name: String,
    content: String,
}

async fn add_file(
    State(app): State<App>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    gate(&app, &headers)?;
    let sub = session_user(&app, &headers).await?;
    let bytes = read_body(body, 64 * 1024).await?;
    let file: NewFile = serde_json::from_slice(&bytes).map_err(|_| {
        ApiError::InvalidRequest("send {\"name\": \"...\", \"content\": \"...\"}".to_owned())
    })?;
    if file.name.trim().is_empty() || file.name.len() > 200 {
        return Err(ApiError::InvalidRequest(
            "the name must be 1 to 200 characters".to_owned(),
        ));
    }
    let boundary = format!("gk{}", grantkeeper_core::random::token::<12>());
    let metadata =
        json!({"name": file.name, "parents": ["appDataFolder"], "mimeType": "text/plain"});
    let multipart = format!(
        "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{metadata}\r\n\
         --{boundary}\r\nContent-Type: text/plain\r\n\r\n{}\r\n--{boundary}--\r\n",
        file.content
    );
    let (status, created) = audited_call(
        &app,
        &sub,
        Method::POST,
        "upload/drive/v3/files?uploadType=multipart",
        "POST upload/drive/v3/files",
        Some((
            format!("multipart/related; boundary={boundary}"),
            multipart.into_bytes(),
        )),
    )
    .await?;
    Ok(Json(json!({"status": status, "result": created})).into_response())
}

/// What a nightly job does for one user: refresh the grant upstream, then read their files.
async fn offline_job(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    gate(&app, &headers)?;
    let sub = session_user(&app, &headers).await?;
    let run = async {
        let token = app.broker().refresh_now(&sub).await?;
        let (status, files) = call(&app, &sub, Method::GET, LIST, None).await?;
        Ok::<_, ApiError>((token, status, files))
    };
    let result = run.await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.code(),
    };
    app.audit()
        .record(
            "session",
            Some(&sub),
            "offline_job",
            "refresh + list appDataFolder".to_owned(),
            outcome,
        )
        .await;
    let (token, status, files) = result?;
    let count = files
        .get("files")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    Ok(Json(json!({
        "refreshed": true,
        "expires_at": token.expires_at.format(&Rfc3339).unwrap_or_default(),
        "drive_status": status,
        "files": count,
    }))
    .into_response())
}
