//! Service accounts, as Google Cloud's callers of Cloud KMS are: a key file such as IAM's
//! console downloads, the signed-JWT grant at the token endpoint that trades an assertion
//! signed with that key for an access token, and the metadata server of a Compute Engine
//! instance, whose default service account hands out tokens to code running there.
//!
//! Like Google, the emulator keeps each key's public half only (under `DIR/emulator/`, so that
//! key files it wrote stay usable after a restart) and hashes of the access tokens it issued.

use crate::Inner;
use crate::error::{OAuthError, json};
use crate::keys::SigningKey;
use crate::util::{self, Hash, b64url_decode, lock, write_private};
use aws_lc_rs::signature;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

/// The grant type of RFC 7523's JWT bearer assertions.
pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Google's ceiling on an assertion's life (`exp - iat`), and its service-account tokens' life.
const MAX_ASSERTION_SECS: i64 = 3600;
/// Clock skew tolerated on `iat`.
const SKEW_SECS: i64 = 300;
/// What Cloud KMS accepts a token for (either scope).
pub(crate) const KMS_SCOPES: [&str; 2] = [
    "https://www.googleapis.com/auth/cloudkms",
    "https://www.googleapis.com/auth/cloud-platform",
];
/// Scopes of the metadata server's tokens: the instance's default access scope.
const INSTANCE_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

#[derive(Clone, Serialize, Deserialize)]
struct Account {
    /// The key file's `private_key_id`, also the `kid` of the assertions it signs.
    key_id: String,
    /// RFC 8017 `RSAPublicKey` DER, standard base64.
    public_key: String,
}

#[derive(Default, Serialize, Deserialize)]
struct Saved {
    accounts: BTreeMap<String, Account>,
}

/// An access token issued to a service account.
#[derive(Clone)]
pub(crate) struct Caller {
    pub(crate) email: String,
    pub(crate) scopes: BTreeSet<String>,
    expires_at: i64,
}

/// The project's service accounts and the tokens issued to them.
#[derive(Default)]
pub(crate) struct Accounts {
    saved: Saved,
    tokens: HashMap<Hash, Caller>,
    file: Option<PathBuf>,
    /// Tokens issued, by either grant (for the control API's stats).
    pub(crate) issued: u64,
}

impl Accounts {
    pub(crate) fn open(dir: Option<&std::path::Path>) -> anyhow::Result<Accounts> {
        let file = dir.map(|d| d.join("service_accounts.json"));
        let saved = match &file {
            Some(f) if f.exists() => serde_json::from_slice(&std::fs::read(f)?)?,
            _ => Saved::default(),
        };
        Ok(Accounts {
            saved,
            file,
            ..Accounts::default()
        })
    }

    fn save(&self) -> anyhow::Result<()> {
        if let Some(f) = &self.file {
            write_private(f, &serde_json::to_vec_pretty(&self.saved)?)?;
        }
        Ok(())
    }

    /// The caller a bearer token was issued to, while it is valid.
    pub(crate) fn caller(&self, token: &str, now: i64) -> Option<Caller> {
        self.tokens
            .get(&util::sha256(token.as_bytes()))
            .filter(|c| c.expires_at > now)
            .cloned()
    }

    fn issue(&mut self, email: &str, scopes: BTreeSet<String>, now: i64) -> (String, i64) {
        // Expired tokens go as new ones come, so the map stays as large as the live tokens.
        self.tokens.retain(|_, c| c.expires_at > now);
        let token = format!("ya29.c.{}", grantkeeper_core::random::token::<96>());
        self.tokens.insert(
            util::sha256(token.as_bytes()),
            Caller {
                email: email.to_owned(),
                scopes,
                expires_at: now + MAX_ASSERTION_SECS,
            },
        );
        self.issued += 1;
        (token, MAX_ASSERTION_SECS - 1)
    }
}

/// The email of the instance's default service account, as Compute Engine names it.
pub(crate) fn instance_account(project_id: &str) -> String {
    format!("{project_id}-compute@developer.gserviceaccount.com")
}

/// The `urn:ietf:params:oauth:grant-type:jwt-bearer` grant at `/token`: an RS256 assertion
/// signed with a service account's key (`iss` the account, `aud` this token endpoint, `scope`,
/// `iat` and `exp` at most an hour apart) for an access token.
pub(crate) fn jwt_grant(
    inner: &Inner,
    form: &HashMap<String, String>,
) -> Result<Response, OAuthError> {
    let assertion = form
        .get("assertion")
        .filter(|a| !a.is_empty())
        .ok_or_else(|| {
            OAuthError::bad("invalid_request", "Missing required parameter: assertion")
        })?;
    let settings = inner.settings();
    let now = inner.now(&settings);
    let (email, scopes) = {
        let accounts = lock(&inner.accounts);
        verify_assertion(inner, &accounts.saved, assertion, now)?
    };
    let (token, expires_in) = lock(&inner.accounts).issue(&email, scopes, now);
    Ok(crate::error::token_json(
        StatusCode::OK,
        &json!({"access_token": token, "expires_in": expires_in, "token_type": "Bearer"}),
    ))
}

fn invalid_grant(description: &'static str) -> OAuthError {
    OAuthError::invalid_grant(description)
}

/// The account and scopes of a valid assertion.
fn verify_assertion(
    inner: &Inner,
    saved: &Saved,
    assertion: &str,
    now: i64,
) -> Result<(String, BTreeSet<String>), OAuthError> {
    let mut parts = assertion.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid_grant("Invalid JWT: Malformed."));
    };
    let decode =
        |part: &str| -> Option<Value> { serde_json::from_slice(&b64url_decode(part)?).ok() };
    let (Some(header), Some(claims)) = (decode(h), decode(c)) else {
        return Err(invalid_grant("Invalid JWT: Malformed."));
    };
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(invalid_grant("Invalid JWT Signature."));
    }
    let email = claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid_grant("Invalid JWT: No issuer."))?;
    let account = saved
        .accounts
        .get(email)
        .ok_or_else(|| invalid_grant("Invalid grant: account not found"))?;
    if let Some(kid) = header.get("kid").and_then(Value::as_str)
        && kid != account.key_id
    {
        return Err(invalid_grant("Invalid JWT Signature."));
    }
    let public = STANDARD
        .decode(&account.public_key)
        .map_err(|_| invalid_grant("Invalid JWT Signature."))?;
    let sig = b64url_decode(s).ok_or_else(|| invalid_grant("Invalid JWT Signature."))?;
    let signed = assertion.get(..h.len() + 1 + c.len()).unwrap_or_default();
    signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &public)
        .verify(signed.as_bytes(), &sig)
        .map_err(|_| invalid_grant("Invalid JWT Signature."))?;
    let audience = claims
        .get("aud")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if audience != inner.url("/token") && audience != inner.url("/o/oauth2/token") {
        return Err(invalid_grant(
            "Invalid JWT: Failed audience check. The right audience is the token endpoint.",
        ));
    }
    let iat = claims.get("iat").and_then(Value::as_i64);
    let exp = claims.get("exp").and_then(Value::as_i64);
    let timely = match (iat, exp) {
        (Some(iat), Some(exp)) => {
            exp > iat && exp - iat <= MAX_ASSERTION_SECS && iat <= now + SKEW_SECS && exp > now
        }
        _ => false,
    };
    if !timely {
        return Err(invalid_grant(
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable \
             timeframe. Check your iat and exp values in the JWT claim.",
        ));
    }
    let scopes: BTreeSet<String> = claims
        .get("scope")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .split_ascii_whitespace()
        .map(str::to_owned)
        .collect();
    if scopes.is_empty() {
        return Err(OAuthError::bad(
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        ));
    }
    Ok((email.to_owned(), scopes))
}

/// The metadata server's rule: every request names its flavour, or is refused as a browser's
/// might be (a page cannot set this header across origins).
fn flavoured(headers: &HeaderMap) -> bool {
    headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) == Some("Google")
}

fn flavourless() -> Response {
    metadata_answer(
        (
            StatusCode::FORBIDDEN,
            "Missing required header: Metadata-Flavor\n",
        )
            .into_response(),
    )
}

fn metadata_answer(mut res: Response) -> Response {
    res.headers_mut()
        .insert("metadata-flavor", HeaderValue::from_static("Google"));
    res
}

/// `GET /computeMetadata/v1/instance/service-accounts/{account}/token`: a token of the
/// instance's service account (`default` or its email).
pub(crate) async fn metadata_token(
    State(inner): State<Arc<Inner>>,
    Path(account): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if !flavoured(&headers) {
        return flavourless();
    }
    let email = instance_account(&util::read(&inner.clients).project_id);
    if account != "default" && account != email {
        return metadata_answer((StatusCode::NOT_FOUND, "Not Found\n").into_response());
    }
    let scopes: BTreeSet<String> = match q.get("scopes") {
        Some(list) => list.split(',').map(str::to_owned).collect(),
        None => BTreeSet::from([INSTANCE_SCOPE.to_owned()]),
    };
    let settings = inner.settings();
    let now = inner.now(&settings);
    let (token, expires_in) = lock(&inner.accounts).issue(&email, scopes, now);
    metadata_answer(json(
        StatusCode::OK,
        &json!({"access_token": token, "expires_in": expires_in, "token_type": "Bearer"}),
    ))
}

/// `GET /computeMetadata/v1/instance/service-accounts/{account}/email`.
pub(crate) async fn metadata_email(
    State(inner): State<Arc<Inner>>,
    Path(account): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !flavoured(&headers) {
        return flavourless();
    }
    let email = instance_account(&util::read(&inner.clients).project_id);
    if account != "default" && account != email {
        return metadata_answer((StatusCode::NOT_FOUND, "Not Found\n").into_response());
    }
    let mut res = (StatusCode::OK, email).into_response();
    res.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/text"),
    );
    metadata_answer(res)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAccount {
    /// The account's name before `@`; random when absent.
    name: Option<String>,
}

/// `POST /_emulator/service-accounts`: a service account with a new key, answered as the key
/// file IAM's console downloads (the private key is not kept).
pub(crate) async fn create_account(
    State(inner): State<Arc<Inner>>,
    body: axum::body::Bytes,
) -> Result<Response, crate::error::ControlError> {
    use crate::error::ControlError;
    let req: NewAccount = if body.is_empty() {
        NewAccount { name: None }
    } else {
        crate::control::parse(&body)?
    };
    let name = req
        .name
        .unwrap_or_else(|| format!("grantkeeper-{}", util::lower_alnum(6)));
    if name.is_empty()
        || name.len() > 30
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(ControlError::bad(
            "name must be 1 to 30 lowercase letters, digits or dashes",
        ));
    }
    let file = new_account(&inner, &name)
        .await
        .map_err(|e| ControlError::internal(&e))?;
    Ok(json(StatusCode::CREATED, &file))
}

impl crate::Emulator {
    /// A new service account of this project, as its key file (what `grantkeeper dev --kms`
    /// authenticates with).
    pub async fn create_service_account(&self, name: &str) -> anyhow::Result<Value> {
        new_account(&self.inner, name).await
    }
}

async fn new_account(inner: &Inner, name: &str) -> anyhow::Result<Value> {
    let key = tokio::task::spawn_blocking(SigningKey::generate).await??;
    let project_id = util::read(&inner.clients).project_id.clone();
    let email = format!("{name}@{project_id}.iam.gserviceaccount.com");
    let key_id = hex::encode(grantkeeper_core::random::bytes::<20>());
    {
        let mut accounts = lock(&inner.accounts);
        accounts.saved.accounts.insert(
            email.clone(),
            Account {
                key_id: key_id.clone(),
                public_key: STANDARD.encode(key.public_der()),
            },
        );
        accounts.save()?;
    }
    Ok(json!({
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": key_id,
            "private_key": key.pkcs8_pem(),
            "client_email": email,
            "client_id": util::digits(21),
            "auth_uri": inner.url("/o/oauth2/auth"),
            "token_uri": inner.url("/token"),
            "auth_provider_x509_cert_url": inner.url("/oauth2/v1/certs"),
            "universe_domain": "googleapis.com",
    }))
}
