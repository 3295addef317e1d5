//! The token, revocation, userinfo and tokeninfo endpoints, and the ID tokens they hand out.

use crate::error::{OAuthError, json, token_json};
use crate::jwt;
use crate::settings::{Endpoint, IssStyle, Settings, Tamper};
use crate::state::{Exchange, Fresh, Issued};
use crate::users::Profile;
use crate::util::{self, lock, read};
use crate::{Inner, TokenKind};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use grantkeeper_core::Scopes;
use grantkeeper_core::random::token as random_token;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

const CODE_PREFIX: &str = "4/0A";
/// 48 random bytes: 64 base64url characters after the prefix.
const CODE_RANDOM_LEN: usize = 64;

/// A new authorization code, shaped like Google's (`4/0A…`).
pub(crate) fn new_code() -> String {
    format!("{CODE_PREFIX}{}", random_token::<48>())
}

/// True when `code` could have been minted here; anything else is "Malformed auth code.".
fn is_code_shaped(code: &str) -> bool {
    code.strip_prefix(CODE_PREFIX).is_some_and(|rest| {
        rest.len() == CODE_RANDOM_LEN
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

fn new_access_token() -> String {
    format!("ya29.a0{}", random_token::<96>())
}

fn new_refresh_token() -> String {
    format!("1//0{}", random_token::<64>())
}

/// A form body as a map; the first occurrence of a parameter wins.
pub(crate) fn parse_form(body: &[u8]) -> Option<HashMap<String, String>> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).ok()?;
    let mut map = HashMap::with_capacity(pairs.len());
    for (k, v) in pairs {
        map.entry(k).or_insert(v);
    }
    Some(map)
}

/// `client_secret_basic` credentials, each part form-urlencoded as RFC 6749 §2.3.1 says.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(rest.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| -> String {
        url::form_urlencoded::parse(format!("v={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}

/// Authenticates the calling client; its id when it may use the token endpoint.
fn authenticate(
    inner: &Inner,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<String, OAuthError> {
    let (id, secret) = match basic_credentials(headers) {
        Some((id, secret)) => (Some(id), Some(secret)),
        None => (
            form.get("client_id").cloned(),
            form.get("client_secret").cloned(),
        ),
    };
    let Some(id) = id.filter(|i| !i.is_empty()) else {
        return Err(OAuthError::bad(
            "invalid_request",
            "Could not determine client ID from request.",
        ));
    };
    let clients = read(&inner.clients);
    let Some(client) = clients.get(&id) else {
        return Err(OAuthError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "The OAuth client was not found.",
        ));
    };
    if let Some(expected) = &client.secret {
        use grantkeeper_core::ExposeSecret;
        let Some(given) = secret.filter(|s| !s.is_empty()) else {
            return Err(OAuthError::bad(
                "invalid_request",
                "client_secret is missing.",
            ));
        };
        if aws_lc_rs::constant_time::verify_slices_are_equal(
            given.as_bytes(),
            expected.expose_secret().as_bytes(),
        )
        .is_err()
        {
            return Err(OAuthError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "Unauthorized",
            ));
        }
    }
    Ok(id)
}

/// `POST /token`.
pub(crate) async fn token(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    inner.token_requests.fetch_add(1, Ordering::Relaxed);
    if let Some(fault) = inner.gate(Endpoint::Token).await {
        return fault;
    }
    match token_grant(&inner, &headers, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn token_grant(
    inner: &Inner,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, OAuthError> {
    let form = parse_form(body).ok_or_else(|| OAuthError::bad("invalid_request", "Bad Request"))?;
    let grant_type = form.get("grant_type").map(String::as_str);
    match grant_type {
        None | Some("") => {
            return Err(OAuthError::bad(
                "invalid_request",
                "Missing required parameter: grant_type",
            ));
        }
        Some("authorization_code" | "refresh_token") => {}
        // A service account's signed assertion: no client authenticates.
        Some(crate::iam::JWT_BEARER) => return crate::iam::jwt_grant(inner, &form),
        Some(other) => {
            return Err(OAuthError::bad(
                "unsupported_grant_type",
                format!(
                    "Invalid grant_type: {}",
                    other.chars().take(64).collect::<String>()
                ),
            ));
        }
    }
    let client = authenticate(inner, headers, &form)?;
    let settings = inner.settings();
    let now = inner.now(&settings);
    let access = new_access_token();
    if grant_type == Some("authorization_code") {
        let code = form.get("code").filter(|c| !c.is_empty()).ok_or_else(|| {
            OAuthError::bad("invalid_request", "Missing required parameter: code")
        })?;
        if !is_code_shaped(code) {
            return Err(OAuthError::invalid_grant("Malformed auth code."));
        }
        let refresh = new_refresh_token();
        let fresh = Fresh {
            access: util::sha256(access.as_bytes()),
            refresh: util::sha256(refresh.as_bytes()),
        };
        let req = Exchange {
            client: &client,
            code: &util::sha256(code.as_bytes()),
            redirect_uri: form.get("redirect_uri").map(String::as_str),
            verifier: form.get("code_verifier").map(String::as_str),
        };
        let issued = lock(&inner.state).exchange(&req, &fresh, now, &settings)?;
        let refresh = issued.refresh_issued.then_some(refresh);
        let with_id = issued.scopes.has_identity();
        answer(inner, &issued, access, refresh, with_id, now, &settings).await
    } else {
        let token = form
            .get("refresh_token")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                OAuthError::bad(
                    "invalid_request",
                    "Missing required parameter: refresh_token",
                )
            })?;
        if !token.starts_with("1//") {
            return Err(OAuthError::invalid_grant("Bad Request"));
        }
        let requested = form.get("scope").map(|s| Scopes::parse(s));
        let issued = lock(&inner.state).refresh(
            &client,
            &util::sha256(token.as_bytes()),
            requested,
            &util::sha256(access.as_bytes()),
            now,
            &settings,
        )?;
        let with_id = issued.scopes.contains(grantkeeper_core::scopes::OPENID);
        answer(inner, &issued, access, None, with_id, now, &settings).await
    }
}

/// The token endpoint's success answer.
async fn answer(
    inner: &Inner,
    issued: &Issued,
    access: String,
    refresh: Option<String>,
    with_id_token: bool,
    now: i64,
    settings: &Settings,
) -> Result<Response, OAuthError> {
    let mut body = json!({
        "access_token": access,
        "expires_in": (settings.access_token_ttl_secs - 1).max(0),
        "scope": issued.scopes.to_string(),
        "token_type": "Bearer",
    });
    inner.record(&issued.email, TokenKind::Access, &access);
    if let Some(r) = &refresh {
        inner.record(&issued.email, TokenKind::Refresh, r);
        if let Some(o) = body.as_object_mut() {
            o.insert("refresh_token".into(), r.clone().into());
        }
    }
    if with_id_token {
        let id_token = id_token(inner, issued, &access, now, settings)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "cannot sign an ID token");
                OAuthError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_failure",
                    "Backend Error",
                )
            })?;
        if let Some(t) = id_token {
            inner.record(&issued.email, TokenKind::Id, &t);
            if let Some(o) = body.as_object_mut() {
                o.insert("id_token".into(), t.into());
            }
        }
    }
    Ok(token_json(StatusCode::OK, &body))
}

pub(crate) fn issuer(inner: &Inner, settings: &Settings) -> String {
    match settings.id_token_iss {
        IssStyle::Url => inner.base.clone(),
        IssStyle::Bare => inner
            .base
            .split_once("://")
            .map_or_else(|| inner.base.clone(), |(_, rest)| rest.to_owned()),
    }
}

/// `base64url(left half of SHA-256(access_token))`.
fn at_hash(access: &str) -> String {
    let d = util::sha256(access.as_bytes());
    util::b64url(d.get(..16).unwrap_or_default())
}

/// The ID token for `issued`, signed with the current key, unless the fault configuration asks
/// for a spoiled one (or none at all).
async fn id_token(
    inner: &Inner,
    issued: &Issued,
    access: &str,
    now: i64,
    settings: &Settings,
) -> anyhow::Result<Option<String>> {
    let profile = Profile::for_email(&issued.email, &inner.base);
    let mut claims = Map::new();
    claims.insert("iss".into(), issuer(inner, settings).into());
    claims.insert("azp".into(), issued.azp.to_string().into());
    claims.insert("aud".into(), issued.client.to_string().into());
    claims.insert("sub".into(), profile.sub.clone().into());
    if issued.scopes.contains(grantkeeper_core::scopes::EMAIL) {
        claims.insert("email".into(), profile.email.clone().into());
        claims.insert("email_verified".into(), true.into());
    }
    claims.insert("at_hash".into(), at_hash(access).into());
    if let Some(n) = &issued.nonce {
        claims.insert("nonce".into(), n.clone().into());
    }
    if issued.scopes.contains(grantkeeper_core::scopes::PROFILE) {
        claims.insert("name".into(), profile.name.clone().into());
        claims.insert("picture".into(), profile.picture.clone().into());
        claims.insert("given_name".into(), profile.given_name.clone().into());
        claims.insert("family_name".into(), profile.family_name.clone().into());
    }
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), (now + 3600).into());

    let tamper = lock(&inner.faults).take_tamper();
    let key = read(&inner.keys)
        .current()
        .ok_or_else(|| anyhow::anyhow!("no signing key"))?;
    let foreign_client =
        "000000000000-notthisproject0000000000000000000.apps.googleusercontent.com";
    let token = match tamper {
        None => jwt::sign_rs256(&key, "JWT", &Value::Object(claims))?,
        Some(Tamper::Missing) => return Ok(None),
        Some(Tamper::BadSignature) => {
            jwt::flip_signature(&jwt::sign_rs256(&key, "JWT", &Value::Object(claims))?)
        }
        Some(Tamper::AlgNone) => jwt::unsigned(&Value::Object(claims)),
        Some(Tamper::Hs256) => jwt::hs256_with_public_key(&key, &Value::Object(claims)),
        Some(Tamper::UnknownKid) => {
            let rogue = inner.rogue_key().await?;
            jwt::sign_rs256(&rogue, "JWT", &Value::Object(claims))?
        }
        Some(t) => {
            match t {
                Tamper::WrongAud => {
                    claims.insert("aud".into(), foreign_client.into());
                }
                Tamper::ExtraAud => {
                    claims.insert(
                        "aud".into(),
                        json!([issued.client.to_string(), foreign_client]),
                    );
                }
                Tamper::WrongIss => {
                    claims.insert("iss".into(), "https://accounts.example.net".into());
                }
                Tamper::NoSub => {
                    claims.remove("sub");
                }
                Tamper::Expired => {
                    claims.insert("iat".into(), (now - 7200).into());
                    claims.insert("exp".into(), (now - 3600).into());
                }
                Tamper::IatFuture => {
                    claims.insert("iat".into(), (now + 3600).into());
                    claims.insert("exp".into(), (now + 7200).into());
                }
                Tamper::AzpUnauthorized => {
                    claims.insert("azp".into(), foreign_client.into());
                }
                Tamper::BadSignature
                | Tamper::AlgNone
                | Tamper::Hs256
                | Tamper::UnknownKid
                | Tamper::Missing => {}
            }
            jwt::sign_rs256(&key, "JWT", &Value::Object(claims))?
        }
    };
    Ok(Some(token))
}

/// `POST /revoke` (the token in the form body or the query string).
pub(crate) async fn revoke(
    State(inner): State<Arc<Inner>>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Some(fault) = inner.gate(Endpoint::Revoke).await {
        return fault;
    }
    let form = parse_form(&body).unwrap_or_default();
    let Some(token) = query
        .get("token")
        .or_else(|| form.get("token"))
        .filter(|t| !t.is_empty())
    else {
        return OAuthError::bad("invalid_request", "Missing required parameter: token")
            .into_response();
    };
    let settings = inner.settings();
    let now = inner.now(&settings);
    if lock(&inner.state).revoke_token(&util::sha256(token.as_bytes()), now) {
        json(StatusCode::OK, &json!({}))
    } else {
        json(
            StatusCode::BAD_REQUEST,
            &json!({"error": "invalid_token", "error_description": "Token expired or revoked"}),
        )
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// `GET /oauth2/v3/userinfo`.
pub(crate) async fn userinfo(
    State(inner): State<Arc<Inner>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(fault) = inner.gate(Endpoint::Userinfo).await {
        return fault;
    }
    let token = bearer(&headers).or_else(|| query.get("access_token").map(String::as_str));
    let settings = inner.settings();
    let now = inner.now(&settings);
    let view = token.and_then(|t| lock(&inner.state).access(&util::sha256(t.as_bytes()), now));
    let Some(view) = view.filter(|v| v.scopes.has_identity()) else {
        let mut res = json(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "invalid_request", "error_description": "Invalid Credentials"}),
        );
        let challenge = format!("Bearer realm=\"{}/\", error=\"invalid_token\"", inner.base);
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        return res;
    };
    let p = Profile::for_email(&view.email, &inner.base);
    let mut body = Map::new();
    body.insert("sub".into(), p.sub.into());
    if view.scopes.contains(grantkeeper_core::scopes::PROFILE) {
        body.insert("name".into(), p.name.into());
        body.insert("given_name".into(), p.given_name.into());
        body.insert("family_name".into(), p.family_name.into());
        body.insert("picture".into(), p.picture.into());
    }
    if view.scopes.contains(grantkeeper_core::scopes::EMAIL) {
        body.insert("email".into(), p.email.into());
        body.insert("email_verified".into(), true.into());
    }
    json(StatusCode::OK, &Value::Object(body))
}

/// `GET|POST /tokeninfo?access_token=|id_token=`: every value a string, as Google answers.
pub(crate) async fn tokeninfo(
    State(inner): State<Arc<Inner>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(fault) = inner.gate(Endpoint::Tokeninfo).await {
        return fault;
    }
    let form = parse_form(&body).unwrap_or_default();
    let param = |name: &str| {
        query
            .get(name)
            .or_else(|| form.get(name))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let settings = inner.settings();
    let now = inner.now(&settings);
    let answer = if let Some(id_token) = param("id_token") {
        id_token_info(&inner, &id_token, now)
    } else if let Some(access) =
        param("access_token").or_else(|| bearer(&headers).map(str::to_owned))
    {
        access_token_info(&inner, &access, now)
    } else {
        None
    };
    match answer {
        Some(v) => json(StatusCode::OK, &v),
        None => json(
            StatusCode::BAD_REQUEST,
            &json!({"error": "invalid_token", "error_description": "Invalid Value"}),
        ),
    }
}

fn access_token_info(inner: &Inner, token: &str, now: i64) -> Option<Value> {
    let view = lock(&inner.state).access(&util::sha256(token.as_bytes()), now)?;
    let p = Profile::for_email(&view.email, &inner.base);
    let mut out = Map::new();
    out.insert("azp".into(), view.azp.to_string().into());
    out.insert("aud".into(), view.client.to_string().into());
    out.insert("sub".into(), p.sub.into());
    out.insert("scope".into(), view.scopes.to_string().into());
    out.insert("exp".into(), view.exp.to_string().into());
    out.insert("expires_in".into(), (view.exp - now).to_string().into());
    if view.scopes.contains(grantkeeper_core::scopes::EMAIL) {
        out.insert("email".into(), p.email.into());
        out.insert("email_verified".into(), "true".into());
    }
    out.insert(
        "access_type".into(),
        if view.offline { "offline" } else { "online" }.into(),
    );
    Some(Value::Object(out))
}

fn id_token_info(inner: &Inner, token: &str, now: i64) -> Option<Value> {
    let keys = read(&inner.keys).published();
    let (header, claims) = jwt::verify(token, &keys)?;
    if claims
        .get("exp")
        .and_then(Value::as_i64)
        .is_none_or(|e| e <= now)
    {
        return None;
    }
    let mut out = Map::new();
    for (k, v) in claims.as_object()?.iter().chain(header.as_object()?.iter()) {
        let s = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        out.insert(k.clone(), s.into());
    }
    Some(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_one_shape() {
        let c = new_code();
        assert!(is_code_shaped(&c), "{c}");
        assert!(!is_code_shaped("garbage"));
        assert!(!is_code_shaped("4/0Ashort"));
        assert!(new_refresh_token().starts_with("1//"));
        assert!(new_access_token().starts_with("ya29."));
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let mut h = HeaderMap::new();
        let v = STANDARD.encode("my%20id:s%3Acret");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {v}")).unwrap(),
        );
        assert_eq!(
            basic_credentials(&h),
            Some(("my id".to_owned(), "s:cret".to_owned()))
        );
    }
}
