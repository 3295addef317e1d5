//! Application Default Credentials, found as Google's client libraries find them, for the
//! calls to Cloud KMS.
//!
//! 1. `GOOGLE_APPLICATION_CREDENTIALS` names a service account key file (the JSON that IAM's
//!    console downloads): an assertion signed with its key (RS256, `kid` its
//!    `private_key_id`, `iss` its `client_email`, `aud` and the endpoint its `token_uri`,
//!    `scope` Cloud KMS's, an hour long) is traded for an access token with the JWT bearer
//!    grant (RFC 7523).
//! 2. Otherwise the metadata server of the machine (Compute Engine, GKE, Cloud Run) at
//!    `GCE_METADATA_HOST` (`metadata.google.internal` when unset) hands out a token of the
//!    attached service account, asked with `Metadata-Flavor: Google`, which the answer must
//!    carry too.
//!
//! A token is kept until a minute before it expires, and fetched once for all the callers that
//! need one at the same time. The key file's private key and every token stay in
//! [`SecretString`]s; errors name the setting and what to do, never a secret.

use grantkeeper_core::master::{MasterKeyError, SettingProblem};
use grantkeeper_core::{ExposeSecret, SecretString, SharedClock};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use time::OffsetDateTime;

/// The scope Cloud KMS's calls need.
pub const KMS_SCOPE: &str = "https://www.googleapis.com/auth/cloudkms";
/// The metadata server's host when `GCE_METADATA_HOST` is not set.
pub const METADATA_HOST: &str = "metadata.google.internal";
/// A token this close to its expiry is fetched again.
const EARLY: Duration = Duration::from_secs(60);
/// An assertion's life: Google's maximum.
const ASSERTION_SECS: i64 = 3600;

/// A service account key file, as IAM's console downloads it.
#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: String,
    client_email: Option<String>,
    private_key_id: Option<String>,
    private_key: Option<SecretString>,
    token_uri: Option<String>,
}

/// A service account's key, read from its key file.
pub struct ServiceAccount {
    email: String,
    key_id: String,
    private_key: SecretString,
    token_uri: String,
    /// Where it was read, for messages.
    path: PathBuf,
    /// The setting that named the file, for messages.
    setting: &'static str,
}

/// Where the access tokens come from.
pub enum Credentials {
    ServiceAccount(Box<ServiceAccount>),
    /// The metadata server at `http://{host}`.
    Metadata {
        host: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

fn refused(setting: &str, problem: impl Into<String>, fix: impl Into<String>) -> MasterKeyError {
    MasterKeyError::Refused(SettingProblem::new(setting, problem, fix))
}

fn unavailable(
    setting: &str,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> MasterKeyError {
    MasterKeyError::Unavailable(SettingProblem::new(setting, problem, fix))
}

impl Credentials {
    /// Application Default Credentials from the environment, read through `var` (the process's
    /// environment in production; a map in tests).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Credentials, MasterKeyError> {
        if let Some(path) = var("GOOGLE_APPLICATION_CREDENTIALS").filter(|p| !p.is_empty()) {
            return Self::key_file(Path::new(&path), "GOOGLE_APPLICATION_CREDENTIALS");
        }
        let host = var("GCE_METADATA_HOST")
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| METADATA_HOST.to_owned());
        if host.contains('/') || host.contains('@') {
            return Err(refused(
                "GCE_METADATA_HOST",
                "the metadata server's host must be HOST or HOST:PORT",
                "set it to a host and port, such as 169.254.169.254:80, or unset it",
            ));
        }
        Ok(Credentials::Metadata { host })
    }

    /// The service account key file at `path`, named by `setting` in messages.
    pub fn key_file(path: &Path, setting: &'static str) -> Result<Credentials, MasterKeyError> {
        let text = std::fs::read(path).map_err(|e| {
            refused(
                setting,
                format!("cannot read the service account key file {}: {e}", path.display()),
                "point it at the JSON key file of the service account (IAM > Service accounts > Keys)",
            )
        })?;
        let file: KeyFile = serde_json::from_slice(&text).map_err(|_| {
            refused(
                setting,
                format!("{} is not a service account key file", path.display()),
                "use the JSON key file exactly as IAM's console downloads it",
            )
        })?;
        if file.kind != "service_account" {
            return Err(refused(
                setting,
                format!(
                    "{} holds credentials of type {:?}, not a service account's",
                    path.display(),
                    file.kind.chars().take(40).collect::<String>()
                ),
                "create a key for a service account and use its JSON key file",
            ));
        }
        let (Some(email), Some(key_id), Some(private_key)) =
            (file.client_email, file.private_key_id, file.private_key)
        else {
            return Err(refused(
                setting,
                format!(
                    "{} lacks client_email, private_key_id or private_key",
                    path.display()
                ),
                "use the JSON key file exactly as IAM's console downloads it",
            ));
        };
        let token_uri = file
            .token_uri
            .unwrap_or_else(|| "https://oauth2.googleapis.com/token".to_owned());
        if url::Url::parse(&token_uri).is_err() {
            return Err(refused(
                setting,
                format!("the token_uri of {} is not a URL", path.display()),
                "use the JSON key file exactly as IAM's console downloads it",
            ));
        }
        Ok(Credentials::ServiceAccount(Box::new(ServiceAccount {
            email,
            key_id,
            private_key,
            token_uri,
            path: path.to_owned(),
            setting,
        })))
    }

    /// What these credentials are, for people.
    pub fn describe(&self) -> String {
        match self {
            Credentials::ServiceAccount(sa) => format!(
                "service account {} (key file {})",
                sa.email,
                sa.path.display()
            ),
            Credentials::Metadata { host } => {
                format!("the service account of the metadata server at {host}")
            }
        }
    }

    /// The setting that chose these credentials.
    pub(crate) fn setting(&self) -> &'static str {
        match self {
            Credentials::ServiceAccount(sa) => sa.setting,
            Credentials::Metadata { .. } => "GCE_METADATA_HOST",
        }
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: SecretString,
    expires_in: Option<i64>,
}

#[derive(Deserialize)]
struct OAuthErrorAnswer {
    error: Option<String>,
    error_description: Option<String>,
}

struct Held {
    token: SecretString,
    expires_at: OffsetDateTime,
}

/// Access tokens for Cloud KMS's calls, from [`Credentials`].
pub struct TokenSource {
    credentials: Credentials,
    http: reqwest::Client,
    clock: SharedClock,
    /// The token held; the lock also makes concurrent callers wait for one fetch.
    held: tokio::sync::Mutex<Option<Held>>,
}

impl TokenSource {
    pub fn new(credentials: Credentials, http: reqwest::Client, clock: SharedClock) -> Self {
        TokenSource {
            credentials,
            http,
            clock,
            held: tokio::sync::Mutex::new(None),
        }
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// A token valid for at least a minute more.
    pub async fn token(&self) -> Result<SecretString, MasterKeyError> {
        let mut held = self.held.lock().await;
        let now = self.clock.now();
        if let Some(h) = held.as_ref()
            && h.expires_at - now > EARLY
        {
            return Ok(h.token.clone());
        }
        let (token, lifetime) = match &self.credentials {
            Credentials::ServiceAccount(sa) => self.grant(sa, now).await?,
            Credentials::Metadata { host } => self.metadata(host).await?,
        };
        *held = Some(Held {
            token: token.clone(),
            expires_at: now + time::Duration::seconds(lifetime),
        });
        Ok(token)
    }

    /// Forgets the token held (Cloud KMS refused it as expired or revoked).
    pub async fn forget(&self) {
        *self.held.lock().await = None;
    }

    /// The email of the account the tokens are for, for messages; the metadata server is asked
    /// (best effort).
    pub async fn account(&self) -> String {
        match &self.credentials {
            Credentials::ServiceAccount(sa) => sa.email.clone(),
            Credentials::Metadata { host } => {
                let url = format!(
                    "http://{host}/computeMetadata/v1/instance/service-accounts/default/email"
                );
                let asked = self
                    .http
                    .get(url)
                    .header("Metadata-Flavor", "Google")
                    .send()
                    .await;
                match asked {
                    Ok(res) if res.status().is_success() && from_metadata_server(&res) => res
                        .text()
                        .await
                        .ok()
                        .filter(|e| e.contains('@') && e.len() < 200)
                        .unwrap_or_else(|| "of this machine".to_owned()),
                    _ => "of this machine".to_owned(),
                }
            }
        }
    }

    /// The JWT bearer grant at the key file's `token_uri`.
    async fn grant(
        &self,
        sa: &ServiceAccount,
        now: OffsetDateTime,
    ) -> Result<(SecretString, i64), MasterKeyError> {
        let setting = sa.setting;
        let key =
            jsonwebtoken::EncodingKey::from_rsa_pem(sa.private_key.expose_secret().as_bytes())
                .map_err(|_| {
                    refused(
                        setting,
                        format!(
                            "the private_key of {} is not an RSA key in PEM",
                            sa.path.display()
                        ),
                        "use the JSON key file exactly as IAM's console downloads it",
                    )
                })?;
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(sa.key_id.clone());
        let iat = now.unix_timestamp();
        let claims = Claims {
            iss: &sa.email,
            scope: KMS_SCOPE,
            aud: &sa.token_uri,
            iat,
            exp: iat + ASSERTION_SECS,
        };
        let assertion =
            SecretString::from(jsonwebtoken::encode(&header, &claims, &key).map_err(|_| {
                refused(
                    setting,
                    format!("the key of {} cannot sign", sa.path.display()),
                    "use the JSON key file exactly as IAM's console downloads it",
                )
            })?);
        let sent = self
            .http
            .post(&sa.token_uri)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.expose_secret()),
            ])
            .send()
            .await
            .map_err(|e| {
                unavailable(
                    setting,
                    format!(
                        "the token endpoint {} did not answer: {}",
                        sa.token_uri,
                        plain(&e)
                    ),
                    "check that this machine reaches it",
                )
            })?;
        let status = sent.status();
        let body = sent.bytes().await.map_err(|e| {
            unavailable(
                setting,
                format!("the token endpoint's answer broke off: {}", plain(&e)),
                "try again",
            )
        })?;
        if status.is_success() {
            return token_from(&body, setting);
        }
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(unavailable(
                setting,
                format!("the token endpoint answered HTTP {}", status.as_u16()),
                "try again later",
            ));
        }
        let answer: Option<OAuthErrorAnswer> = serde_json::from_slice(&body).ok();
        let (error, description) = answer
            .map(|a| {
                (
                    a.error.unwrap_or_default(),
                    a.error_description.unwrap_or_default(),
                )
            })
            .unwrap_or_default();
        Err(refused(
            setting,
            format!(
                "the token endpoint refused service account {}: {} {}",
                sa.email,
                short(&error),
                short(&description)
            )
            .trim_end()
            .to_owned(),
            "the key may be deleted or disabled: create a new key for the service account and \
             use its key file",
        ))
    }

    /// A token from the metadata server.
    async fn metadata(&self, host: &str) -> Result<(SecretString, i64), MasterKeyError> {
        let setting = self.credentials.setting();
        let url = format!(
            "http://{host}/computeMetadata/v1/instance/service-accounts/default/token?scopes={KMS_SCOPE}"
        );
        let fix = "run on Google Cloud with a service account attached (or set \
                   GCE_METADATA_HOST to the metadata server), or set \
                   GOOGLE_APPLICATION_CREDENTIALS to a service account key file";
        let sent = self
            .http
            .get(url)
            .header("Metadata-Flavor", "Google")
            .send()
            .await
            .map_err(|e| {
                unavailable(
                    setting,
                    format!(
                        "no credentials: GOOGLE_APPLICATION_CREDENTIALS is not set and the \
                         metadata server at {host} did not answer ({})",
                        plain(&e)
                    ),
                    fix,
                )
            })?;
        let status = sent.status();
        if !from_metadata_server(&sent) {
            return Err(refused(
                setting,
                format!(
                    "{host} answered without Metadata-Flavor: Google; it is not a metadata server"
                ),
                fix,
            ));
        }
        let body = sent.bytes().await.map_err(|e| {
            unavailable(
                setting,
                format!("the metadata server's answer broke off: {}", plain(&e)),
                "try again",
            )
        })?;
        if status.is_success() {
            return token_from(&body, setting);
        }
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(unavailable(
                setting,
                format!("the metadata server answered HTTP {}", status.as_u16()),
                "try again later",
            ));
        }
        Err(refused(
            setting,
            format!(
                "the metadata server refused a token (HTTP {}): is a service account attached?",
                status.as_u16()
            ),
            fix,
        ))
    }
}

/// Google's metadata server marks its answers; anything else at that address is not one.
fn from_metadata_server(res: &reqwest::Response) -> bool {
    res.headers()
        .get("metadata-flavor")
        .and_then(|v| v.to_str().ok())
        == Some("Google")
}

fn token_from(body: &[u8], setting: &str) -> Result<(SecretString, i64), MasterKeyError> {
    let answer: TokenAnswer = serde_json::from_slice(body).map_err(|_| {
        unavailable(
            setting,
            "the token answer is not the JSON of an access token",
            "try again later",
        )
    })?;
    if answer.access_token.expose_secret().is_empty() {
        return Err(unavailable(
            setting,
            "the token answer holds no token",
            "try again later",
        ));
    }
    Ok((
        answer.access_token,
        answer.expires_in.unwrap_or(3600).clamp(60, 86_400),
    ))
}

/// An HTTP client error without the URL's query (which may carry nothing secret here, but
/// the habit is kept) and without the chain's noise.
pub(crate) fn plain(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "bad answer"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut last = None;
    while let Some(s) = source {
        last = Some(s.to_string());
        source = s.source();
    }
    match last {
        Some(cause) => format!("{kind}: {}", short(&cause)),
        None => kind.to_owned(),
    }
}

/// At most 200 characters of text from outside, for a message.
pub(crate) fn short(text: &str) -> String {
    text.chars().take(200).collect()
}
