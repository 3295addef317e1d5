//! Discovery documents and published keys: OpenID configuration, the JWK set and the v1 PEM
//! certificates with Google's cache headers, and the RISC configuration with its own keys.

use crate::Inner;
use crate::error::{ControlError, json};
use crate::keys::KeyRing;
use crate::settings::Endpoint;
use crate::util::{read, write};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::Arc;
use time::OffsetDateTime;
use time::macros::format_description;

/// The delivery method Google's RISC configuration advertises.
pub(crate) const RISC_PUSH: &str = "https://schemas.openid.net/secevent/risc/delivery-method/push";

/// `GET /.well-known/openid-configuration`.
pub(crate) async fn openid_configuration(State(inner): State<Arc<Inner>>) -> Response {
    if let Some(fault) = inner.gate(Endpoint::Discovery).await {
        return fault;
    }
    let doc = json!({
        "issuer": inner.base,
        "authorization_endpoint": inner.url("/o/oauth2/v2/auth"),
        "device_authorization_endpoint": inner.url("/device/code"),
        "token_endpoint": inner.url("/token"),
        "userinfo_endpoint": inner.url("/oauth2/v3/userinfo"),
        "revocation_endpoint": inner.url("/revoke"),
        "jwks_uri": inner.url("/oauth2/v3/certs"),
        "response_types_supported": [
            "code", "token", "id_token", "code token", "code id_token", "token id_token",
            "code token id_token", "none"
        ],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "authorization_response_iss_parameter_supported": true,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email", "profile"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "claims_supported": [
            "aud", "email", "email_verified", "exp", "family_name", "given_name", "iat", "iss",
            "name", "picture", "sub"
        ],
        "code_challenge_methods_supported": ["plain", "S256"],
        "grant_types_supported": [
            "authorization_code", "refresh_token",
            "urn:ietf:params:oauth:grant-type:device_code",
            "urn:ietf:params:oauth:grant-type:jwt-bearer"
        ],
    });
    json(StatusCode::OK, &doc)
}

/// A certs answer with Google's caching headers: `max-age`, and an `Age` counted from the
/// last change of the key set so that caches expire together with it.
fn certs_response(inner: &Inner, body: impl FnOnce(&KeyRing) -> serde_json::Value) -> Response {
    let settings = inner.settings();
    let now = inner.now(&settings);
    if read(&inner.keys).needs_expire(now) {
        write(&inner.keys).expire(now);
    }
    let (changed_at, body) = {
        let keys = read(&inner.keys);
        (keys.changed_at, body(&keys))
    };
    let max_age = settings.jwks_max_age_secs;
    let age = if max_age > 0 {
        (now - changed_at).max(0) % max_age
    } else {
        0
    };
    let mut res = json(StatusCode::OK, &body);
    let h = res.headers_mut();
    let cache = format!("public, max-age={max_age}, must-revalidate, no-transform");
    if let Ok(v) = HeaderValue::from_str(&cache) {
        h.insert(header::CACHE_CONTROL, v);
    }
    if let Ok(v) = HeaderValue::from_str(&age.to_string()) {
        h.insert(header::AGE, v);
    }
    if let Some(v) = http_date(now + max_age - age) {
        h.insert(header::EXPIRES, v);
    }
    res
}

fn http_date(unix: i64) -> Option<HeaderValue> {
    let t = OffsetDateTime::from_unix_timestamp(unix).ok()?;
    let s = t
        .format(format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        ))
        .ok()?;
    HeaderValue::from_str(&s).ok()
}

/// `GET /oauth2/v3/certs`.
pub(crate) async fn jwks(State(inner): State<Arc<Inner>>) -> Response {
    if let Some(fault) = inner.gate(Endpoint::Certs).await {
        return fault;
    }
    certs_response(&inner, KeyRing::jwks)
}

/// `GET /oauth2/v1/certs`.
pub(crate) async fn v1_certs(State(inner): State<Arc<Inner>>) -> Response {
    if let Some(fault) = inner.gate(Endpoint::Certs).await {
        return fault;
    }
    certs_response(&inner, KeyRing::v1_certs)
}

/// `GET /.well-known/risc-configuration`. The issuer carries the trailing slash Google's does.
pub(crate) async fn risc_configuration(State(inner): State<Arc<Inner>>) -> Response {
    json(
        StatusCode::OK,
        &json!({
            "issuer": format!("{}/", inner.base),
            "jwks_uri": inner.url("/risc/jwks"),
            "delivery_methods_supported": [RISC_PUSH],
        }),
    )
}

/// `GET /risc/jwks`: the key security event tokens are signed with.
pub(crate) async fn risc_jwks(State(inner): State<Arc<Inner>>) -> Response {
    match inner.risc_key().await {
        Ok(key) => json(StatusCode::OK, &json!({"keys": [key.jwk()]})),
        Err(e) => ControlError::internal(&e).into_response(),
    }
}

/// `GET /avatar/{sub}`: the picture every emulated account has.
pub(crate) async fn avatar(Path(sub): Path<String>) -> Response {
    let mut res = crate::users::avatar_svg(&sub).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("image/svg+xml"),
    );
    res
}
