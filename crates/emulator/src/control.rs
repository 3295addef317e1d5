//! The control API under `/_emulator/`: what tests, benchmarks and demos use to drive the
//! emulator without a browser (mint codes, manage clients, revoke users, rotate keys, inject
//! faults, change settings, read stats, issued tokens and Drive files, emit RISC events).

use crate::clients::ClientKind;
use crate::error::{ControlError, json};
use crate::keys::SigningKey;
use crate::oauth::new_code;
use crate::settings::{FaultsConfig, SettingsPatch};
use crate::state::{NewCode, Pkce, PkceMethod};
use crate::users::normalise_email;
use crate::util::{self, lock, read, write};
use crate::{Inner, risc};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post, put};
use grantkeeper_core::{ExposeSecret, Scopes};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub(crate) fn router() -> Router<Arc<Inner>> {
    Router::new()
        .route("/codes", post(codes))
        .route("/clients", get(list_clients).post(create_client))
        .route("/clients/{client_id}", put(update_client))
        .route("/users/{email}/revoke", post(revoke_user))
        .route("/keys/rotate", post(rotate_keys))
        .route("/faults", get(get_faults).put(put_faults))
        .route("/settings", get(get_settings).put(put_settings))
        .route("/stats", get(stats))
        .route("/tokens", get(tokens))
        .route("/drive", get(crate::drive::control_files))
        .route("/risc", post(risc::emit))
        .route("/service-accounts", post(crate::iam::create_account))
        .route("/kms", get(crate::kms::overview))
        .route("/kms/keys", post(crate::kms::create_key))
        .route(
            "/kms/versions",
            post(crate::kms::add_version).put(crate::kms::set_version_state),
        )
        .route("/kms/denied", put(crate::kms::set_denied))
}

pub(crate) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ControlError> {
    serde_json::from_slice(body).map_err(|e| ControlError::bad(format!("bad JSON body: {e}")))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ScopeList {
    Joined(String),
    List(Vec<String>),
}

impl ScopeList {
    fn scopes(&self) -> Scopes {
        match self {
            ScopeList::Joined(s) => Scopes::parse(s),
            ScopeList::List(l) => Scopes::from_iter(l),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeRequest {
    email: String,
    client_id: Option<String>,
    scope: ScopeList,
    redirect_uri: Option<String>,
    access_type: Option<String>,
    prompt: Option<String>,
    azp: Option<String>,
    granted_scopes: Option<ScopeList>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    include_granted_scopes: Option<bool>,
    nonce: Option<String>,
}

/// `POST /_emulator/codes`: a code as if the user had consented, without a browser.
async fn codes(State(inner): State<Arc<Inner>>, body: Bytes) -> Result<Response, ControlError> {
    let req: CodeRequest = parse(&body)?;
    let email = normalise_email(&req.email)
        .ok_or_else(|| ControlError::bad("email is not an email address"))?;
    let (client, azp) = {
        let clients = read(&inner.clients);
        let client = req
            .client_id
            .clone()
            .unwrap_or_else(|| clients.web.to_string());
        if clients.get(&client).is_none() {
            return Err(ControlError::bad(
                "client_id is not a client of this emulator",
            ));
        }
        if let Some(azp) = &req.azp
            && !clients.is_native(azp)
        {
            return Err(ControlError::bad(
                "azp must be an Android or iOS client id of this emulator's project",
            ));
        }
        (client, req.azp.clone())
    };
    let requested = req.scope.scopes();
    if requested.is_empty() {
        return Err(ControlError::bad("scope is required"));
    }
    let scopes = match &req.granted_scopes {
        None => requested,
        Some(g) => {
            let g = g.scopes();
            if !requested.contains_all(&g) {
                return Err(ControlError::bad(
                    "granted_scopes must be a subset of scope",
                ));
            }
            g
        }
    };
    if scopes.is_empty() {
        return Err(ControlError::bad("at least one scope must be granted"));
    }
    let redirect = match req.redirect_uri.as_deref() {
        None if azp.is_some() => String::new(),
        None => "postmessage".to_owned(),
        Some(r) if r.starts_with("storagerelay://") => "postmessage".to_owned(),
        Some(r) => r.to_owned(),
    };
    let access_type = req.access_type.as_deref();
    if !matches!(access_type, None | Some("online" | "offline")) {
        return Err(ControlError::bad("access_type must be online or offline"));
    }
    // Popup codes (GIS) and native server auth codes are offline unless said otherwise;
    // redirect-mode codes follow access_type as Google's web-server flow does.
    let offline = match redirect.as_str() {
        "postmessage" => true,
        "" => access_type != Some("online"),
        _ => access_type == Some("offline"),
    };
    let pkce = match req.code_challenge.filter(|c| !c.is_empty()) {
        None => None,
        Some(challenge) => Some(Pkce {
            challenge,
            method: PkceMethod::parse(req.code_challenge_method.as_deref())
                .ok_or_else(|| ControlError::bad("code_challenge_method must be S256 or plain"))?,
        }),
    };
    let consent = req
        .prompt
        .as_deref()
        .is_some_and(|p| p.split_ascii_whitespace().any(|x| x == "consent"));
    let settings = inner.settings();
    let now = inner.now(&settings);
    let code = new_code();
    lock(&inner.state).mint_code(
        util::sha256(code.as_bytes()),
        NewCode {
            client,
            azp,
            email,
            scopes,
            redirect,
            offline,
            consent,
            include_granted: req.include_granted_scopes.unwrap_or(false),
            pkce,
            nonce: req.nonce,
        },
        now + settings.code_ttl_secs,
        now,
    );
    Ok(json(StatusCode::OK, &json!({"code": code})))
}

async fn list_clients(State(inner): State<Arc<Inner>>) -> Response {
    let clients = read(&inner.clients);
    let web = clients.web_client();
    let others: Vec<serde_json::Value> = clients.others().map(|c| c.to_json(true)).collect();
    json(
        StatusCode::OK,
        &json!({
            "project_id": clients.project_id,
            "web": {"client_id": web.client_id, "client_secret": web.client_secret.expose_secret()},
            "android": &*clients.android,
            "ios": &*clients.ios,
            "others": others,
        }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewClient {
    #[serde(rename = "type")]
    kind: ClientKind,
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    javascript_origins: Vec<String>,
}

/// `POST /_emulator/clients`: another client of the same project.
async fn create_client(
    State(inner): State<Arc<Inner>>,
    body: Bytes,
) -> Result<Response, ControlError> {
    let req: NewClient = parse(&body)?;
    let mut clients = write(&inner.clients);
    let client = clients
        .create(req.kind, req.redirect_uris, req.javascript_origins)
        .map_err(|e| ControlError::internal(&e))?;
    Ok(json(StatusCode::CREATED, &client.to_json(true)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientUpdate {
    redirect_uris: Option<Vec<String>>,
    javascript_origins: Option<Vec<String>>,
}

/// `PUT /_emulator/clients/{client_id}`: registers redirect URIs and JavaScript origins.
async fn update_client(
    State(inner): State<Arc<Inner>>,
    Path(client_id): Path<String>,
    body: Bytes,
) -> Result<Response, ControlError> {
    let req: ClientUpdate = parse(&body)?;
    let (answer, is_web) = {
        let mut clients = write(&inner.clients);
        let is_web = *clients.web == *client_id;
        let client = clients
            .update(&client_id, req.redirect_uris, req.javascript_origins)
            .map_err(|e| ControlError::internal(&e))?
            .ok_or_else(|| ControlError::not_found("no such client"))?;
        (client.to_json(true), is_web)
    };
    if is_web && let Some(dir) = &inner.data_dir {
        let file = serde_json::to_vec_pretty(&inner.client_secret_json())
            .map_err(|e| ControlError::internal(&e.into()))?;
        util::write_private(&dir.join("client_secret.json"), &file)
            .map_err(|e| ControlError::internal(&e.into()))?;
    }
    Ok(json(StatusCode::OK, &answer))
}

/// `POST /_emulator/users/{email}/revoke`: every grant of the user, as a password change.
async fn revoke_user(
    State(inner): State<Arc<Inner>>,
    Path(email): Path<String>,
) -> Result<Response, ControlError> {
    let email = normalise_email(&email).ok_or_else(|| ControlError::bad("not an email address"))?;
    let n = lock(&inner.state).revoke_user(&email);
    Ok(json(StatusCode::OK, &json!({"revoked_grants": n})))
}

/// `POST /_emulator/keys/rotate`.
async fn rotate_keys(State(inner): State<Arc<Inner>>) -> Result<Response, ControlError> {
    let key = tokio::task::spawn_blocking(SigningKey::generate)
        .await
        .map_err(|e| ControlError::internal(&e.into()))?
        .map_err(|e| ControlError::internal(&e))?;
    let settings = inner.settings();
    let now = time::OffsetDateTime::from_unix_timestamp(inner.now(&settings))
        .map_err(|e| ControlError::internal(&e.into()))?;
    let kid = key.kid.clone();
    let published = {
        let mut keys = write(&inner.keys);
        keys.install(key, now)
            .map_err(|e| ControlError::internal(&e))?;
        keys.kids()
    };
    Ok(json(
        StatusCode::OK,
        &json!({"kid": kid, "published": published}),
    ))
}

async fn get_faults(State(inner): State<Arc<Inner>>) -> Response {
    let config = lock(&inner.faults).config.clone();
    json(
        StatusCode::OK,
        &serde_json::to_value(config).unwrap_or_default(),
    )
}

/// `PUT /_emulator/faults`: replaces the whole fault configuration (`{}` clears it).
async fn put_faults(
    State(inner): State<Arc<Inner>>,
    body: Bytes,
) -> Result<Response, ControlError> {
    let config: FaultsConfig = parse(&body)?;
    config.validate().map_err(ControlError::bad)?;
    let answer = serde_json::to_value(&config).unwrap_or_default();
    lock(&inner.faults).set(config);
    Ok(json(StatusCode::OK, &answer))
}

async fn get_settings(State(inner): State<Arc<Inner>>) -> Response {
    json(
        StatusCode::OK,
        &serde_json::to_value(inner.settings()).unwrap_or_default(),
    )
}

/// `PUT /_emulator/settings`: a partial update; answers the whole settings object.
async fn put_settings(
    State(inner): State<Arc<Inner>>,
    body: Bytes,
) -> Result<Response, ControlError> {
    let patch: SettingsPatch = parse(&body)?;
    let settings = {
        let mut s = write(&inner.settings);
        s.apply(patch).map_err(ControlError::bad)?;
        s.clone()
    };
    Ok(json(
        StatusCode::OK,
        &serde_json::to_value(settings).unwrap_or_default(),
    ))
}

async fn stats(State(inner): State<Arc<Inner>>) -> Response {
    let s = lock(&inner.state).stats.clone();
    json(
        StatusCode::OK,
        &json!({
            "code_exchanges": s.code_exchanges,
            "refreshes": s.refreshes,
            "refresh_tokens_issued": s.refresh_tokens_issued,
            "revocations": s.revocations,
            "refreshes_by_email": s.refreshes_by_email,
            "refreshes_by_second": s.refreshes_by_second,
            "token_requests": inner.token_requests.load(Ordering::Relaxed),
            "drive_requests": inner.drive_requests.load(Ordering::Relaxed),
            "drive_requests_by_email": s.drive_requests_by_email,
            "kms_requests": inner.kms_requests.load(Ordering::Relaxed),
            "service_account_tokens": lock(&inner.accounts).issued,
        }),
    )
}

/// `GET /_emulator/tokens?email=`: what this process issued to the user (memory only).
async fn tokens(
    State(inner): State<Arc<Inner>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ControlError> {
    let email = q
        .get("email")
        .and_then(|e| normalise_email(e))
        .ok_or_else(|| ControlError::bad("email is required"))?;
    let issued = lock(&inner.issued);
    let expose = |l: &std::collections::VecDeque<grantkeeper_core::SecretString>| -> Vec<String> {
        l.iter().map(|t| t.expose_secret().to_owned()).collect()
    };
    let body = match issued.get(&email) {
        Some(log) => json!({
            "access_tokens": expose(&log.access),
            "refresh_tokens": expose(&log.refresh),
            "id_tokens": expose(&log.id),
        }),
        None => json!({"access_tokens": [], "refresh_tokens": [], "id_tokens": []}),
    };
    Ok(json(StatusCode::OK, &body))
}
