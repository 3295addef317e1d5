//! Cross-Account Protection (reference §6): verifying the security event tokens (SETs, RFC
//! 8417, in Google's RISC profile) that the provider pushes, and reading them into a typed
//! [`SecurityEvent`].
//!
//! The provider publishes a RISC configuration at `{issuer}/.well-known/risc-configuration`
//! (`issuer`, with the trailing slash Google's has, and a `jwks_uri`; Google has been seen to
//! point it at its ID-token keys, the emulator at a key of its own). It is fetched once (a
//! failed fetch is not tried again within the JWKS refetch cooldown), and its JWKS is cached
//! as the ID-token keys are: `max-age`, one refetch on an unknown `kid` per cooldown, one
//! fetch at a time, stale keys kept through a short outage.
//!
//! What a token must be: RS256 by a key of that JWKS; `iss` the configuration's issuer
//! (ignoring a trailing slash; also without its scheme when Google's quirks are on); `aud`
//! one of our client ids (the web client or an authorized party); `iat` no more than
//! [`MAX_FUTURE_SKEW`] ahead and no more than [`MAX_EVENT_AGE`] behind our clock; a `jti`;
//! and an `events` claim holding exactly one event. `exp` is not checked: events are history,
//! and Google's own samples ignore it.
//!
//! Leaves to others: remembering `jti`s and acting on events (the server and the store), and
//! HTTP routes. Nothing here logs or returns the token, or the token prefix an event carries.

use crate::discovery::{same_issuer, trim_slash};
use crate::error::{Call, IdTokenError, ProviderError, classify, echo};
use crate::http::{Answer, send};
use crate::jws::{Header, decode_signed, parse_header};
use crate::keystore::{JwksDocument, JwksKey, JwksSource, KeyStore, KeyStoreStats, Lookup};
use crate::settings::ProviderSettings;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use grantkeeper_core::{ExposeSecret, SecretString, SharedClock};
use reqwest::header::{ACCEPT, AGE, CACHE_CONTROL};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::OnceCell;
use url::Url;

/// Event types of the RISC namespace.
pub const RISC_EVENT_PREFIX: &str = "https://schemas.openid.net/secevent/risc/event-type/";
/// Event types of the OAuth namespace: Google's two token events live here, not under RISC.
pub const OAUTH_EVENT_PREFIX: &str = "https://schemas.openid.net/secevent/oauth/event-type/";

/// Oldest `iat` accepted. Google retries a failed delivery for a limited time; an event older
/// than this is not a redelivery but a replay, and the server keeps `jti`s this long.
pub const MAX_EVENT_AGE: Duration = Duration::from_secs(30 * 86_400);
/// How far ahead of our clock an `iat` may be (the most skew allowed on ID tokens).
pub const MAX_FUTURE_SKEW: Duration = crate::settings::MAX_LEEWAY;

/// Longest `jti`, `sub` or email accepted; longer ones are not Google's.
const MAX_ID: usize = 256;
/// Characters of a `token-revoked` prefix that identify a token (reference §6.3).
pub const TOKEN_PREFIX_CHARS: usize = 16;

/// The provider's RISC configuration, as far as a receiver needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiscConfiguration {
    /// As published; Google's and the emulator's end with a slash.
    pub issuer: String,
    pub jwks_uri: Url,
    #[serde(default)]
    pub delivery_methods_supported: Vec<String>,
}

/// A verified security event token.
#[derive(Clone, Debug)]
pub struct SecurityEvent {
    /// The token's unique id: a redelivery carries the same one.
    pub jti: String,
    /// `iat`, Unix seconds.
    pub issued_at: i64,
    /// The client id of ours the token was addressed to.
    pub audience: String,
    /// The event type's URI, as sent (for logs; [`Event::name`] is its short form).
    pub event_type: String,
    pub event: Event,
}

/// What happened, with the subject it happened to (reference §6.2).
#[derive(Clone, Debug)]
pub enum Event {
    /// The user's sessions at Google were ended: end ours.
    SessionsRevoked(Subject),
    /// Every token the user gave this app was revoked (the user removed its access).
    TokensRevoked(Subject),
    /// One token was revoked.
    TokenRevoked(RevokedToken),
    AccountDisabled {
        subject: Subject,
        reason: Option<DisabledReason>,
    },
    AccountEnabled(Subject),
    /// The account was deleted.
    AccountPurged(Subject),
    AccountCredentialChangeRequired(Subject),
    /// A test event the receiver's operator asked for; `state` is their own string, capped.
    Verification {
        state: Option<String>,
    },
    /// An event type this receiver does not act on.
    Unknown,
}

impl Event {
    /// The short name of the event type (`sessions-revoked`, ..., `unknown`).
    pub fn name(&self) -> &'static str {
        match self {
            Event::SessionsRevoked(_) => "sessions-revoked",
            Event::TokensRevoked(_) => "tokens-revoked",
            Event::TokenRevoked(_) => "token-revoked",
            Event::AccountDisabled { .. } => "account-disabled",
            Event::AccountEnabled(_) => "account-enabled",
            Event::AccountPurged(_) => "account-purged",
            Event::AccountCredentialChangeRequired(_) => "account-credential-change-required",
            Event::Verification { .. } => "verification",
            Event::Unknown => "unknown",
        }
    }
}

/// Whom an event is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// The account's `sub` (subject type `iss-sub`, or `id_token_claims` naming one), of our
    /// provider.
    Sub(String),
    /// The account's email (subject type `id_token_claims` or `email` without a `sub`).
    Email(String),
}

/// Why an account was disabled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DisabledReason {
    /// Google believes the account was taken over.
    Hijacking,
    /// The account was disabled as one of many made in bulk.
    BulkAccount,
    Other(String),
}

/// The token a `token-revoked` event names.
#[derive(Clone, Debug)]
pub struct RevokedToken {
    /// `refresh_token` in Google's events; an access token cannot be found by a receiver that
    /// keeps only refresh tokens' fingerprints.
    pub token_type: String,
    pub identifier: TokenIdentifier,
}

/// How a revoked token is named, never by value.
#[derive(Clone)]
pub enum TokenIdentifier {
    /// `token_identifier_alg: prefix`: the first [`TOKEN_PREFIX_CHARS`] characters of the
    /// token (a piece of a secret, so kept as one).
    Prefix(SecretString),
    /// `token_identifier_alg: hash_base64_sha512_sha512`: SHA-512(SHA-512(token)), here in
    /// padded standard base64 whatever base64 alphabet and padding the event used.
    Sha512Sha512(String),
}

impl fmt::Debug for TokenIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenIdentifier::Prefix(_) => f.write_str("Prefix(<redacted>)"),
            TokenIdentifier::Sha512Sha512(hash) => {
                f.debug_tuple("Sha512Sha512").field(hash).finish()
            }
        }
    }
}

/// Why a security event token was refused. Every variant but
/// [`SecurityEventError::KeysUnavailable`] is a property of the token; descriptions never
/// quote it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecurityEventError {
    /// Not a compact JWS with a JSON header and payload.
    #[error("the security event token cannot be parsed: {0}")]
    Parse(String),
    /// Not RS256, a `kid` the provider does not publish, or a signature that does not verify.
    #[error("the security event token is not signed by a key of the provider: {0}")]
    Key(String),
    #[error("the security event token comes from another issuer")]
    Issuer,
    #[error("the security event token is meant for another audience")]
    Audience,
    /// Signed and addressed to us, but not a security event as the profile defines it.
    #[error("{0}")]
    Invalid(String),
    /// The RISC configuration or its keys could not be fetched: nothing is known against the
    /// token yet, and a redelivery may verify.
    #[error("the provider's security event keys are unavailable: {0}")]
    KeysUnavailable(String),
}

impl SecurityEventError {
    /// The RFC 8935 `err` code of a refusal (`None` for [`SecurityEventError::KeysUnavailable`],
    /// which is not the token's fault).
    pub fn rfc8935_code(&self) -> Option<&'static str> {
        match self {
            Self::Parse(_) => Some("jwtParse"),
            Self::Key(_) => Some("invalid_key"),
            Self::Issuer => Some("invalid_issuer"),
            Self::Audience => Some("invalid_audience"),
            Self::Invalid(_) => Some("invalid_request"),
            Self::KeysUnavailable(_) => None,
        }
    }

    /// True when the same token may verify later.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::KeysUnavailable(_))
    }
}

/// Verifies the provider's security event tokens. Cheap to clone; clones share the RISC
/// configuration and its keys. Does no I/O until the first token arrives.
#[derive(Clone)]
pub struct SecurityEventVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ProviderSettings,
    http: reqwest::Client,
    clock: SharedClock,
    /// Fetched on first use; a failed fetch leaves it empty for a later token to retry.
    configuration: OnceCell<Arc<RiscConfiguration>>,
    /// The last failed fetch of the configuration (Unix seconds) and its error: within the
    /// JWKS refetch cooldown it is answered again instead of fetching, so that tokens pushed
    /// by anyone cannot make us hammer the provider while it has no configuration to give.
    configuration_failure: Mutex<Option<(i64, ProviderError)>>,
    keys: KeyStore,
}

impl fmt::Debug for SecurityEventVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecurityEventVerifier")
            .field("issuer", &self.inner.settings.issuer.as_str())
            .finish_non_exhaustive()
    }
}

impl SecurityEventVerifier {
    /// `settings` are the provider client's: the issuer, our client ids, Google's quirks and
    /// the JWKS refetch cooldown. `http` should be the provider client's (timeouts, no
    /// redirects).
    pub fn new(settings: ProviderSettings, http: reqwest::Client, clock: SharedClock) -> Self {
        let keys = KeyStore::new(clock.clone(), settings.jwks_refetch_cooldown);
        Self {
            inner: Arc::new(Inner {
                settings,
                http,
                clock,
                configuration: OnceCell::new(),
                configuration_failure: Mutex::new(None),
                keys,
            }),
        }
    }

    /// The provider's RISC configuration, fetched once.
    pub async fn configuration(&self) -> Result<Arc<RiscConfiguration>, ProviderError> {
        self.inner.configuration().await
    }

    /// Counters of the RISC key cache.
    pub fn key_store_stats(&self) -> KeyStoreStats {
        self.inner.keys.stats()
    }

    /// Verifies a security event token (the body of a push, as received) and reads its event.
    pub async fn verify(&self, set: &SecretString) -> Result<SecurityEvent, SecurityEventError> {
        let token = set.expose_secret();
        let header = read_header(token)?;
        let configuration = self
            .configuration()
            .await
            .map_err(|e| SecurityEventError::KeysUnavailable(e.to_string()))?;
        let key = signing_key(self.inner.keys.key(&header.kid, &*self.inner).await)?;
        let rules = SetRules::new(&configuration.issuer, &self.inner.settings);
        verify_signed(token, &key, &rules, self.inner.clock.unix())
    }
}

/// The header of a security event token: RS256 and a `kid`, read before any key is looked up.
pub(crate) fn read_header(token: &str) -> Result<Header, SecurityEventError> {
    parse_header(token).map_err(|e| match e {
        IdTokenError::UnsupportedAlgorithm(alg) => SecurityEventError::Key(format!(
            "alg {alg:?} is not accepted: security events are signed with RS256"
        )),
        _ => SecurityEventError::Parse(
            "expected a compact JWS whose header is JSON naming alg and kid".to_owned(),
        ),
    })
}

/// The key a lookup in the RISC key cache found, or why there is none.
pub(crate) fn signing_key(lookup: Lookup) -> Result<Arc<JwksKey>, SecurityEventError> {
    match lookup {
        Lookup::Key(key) => Ok(key),
        Lookup::Unknown => Err(SecurityEventError::Key(
            "its kid is not among the keys of the provider's RISC configuration".to_owned(),
        )),
        Lookup::Unavailable(e) => Err(SecurityEventError::KeysUnavailable(e.to_string())),
    }
}

/// Checks the token's signature with `key`, then every claim against `rules` at `now`.
pub(crate) fn verify_signed(
    token: &str,
    key: &JwksKey,
    rules: &SetRules<'_>,
    now: i64,
) -> Result<SecurityEvent, SecurityEventError> {
    let raw = decode_signed::<RawSet>(token, key).map_err(|e| match e {
        IdTokenError::BadSignature => {
            SecurityEventError::Key("the signature does not verify".to_owned())
        }
        _ => SecurityEventError::Parse("the payload is not a JSON object in base64url".to_owned()),
    })?;
    check_set(raw, rules, now)
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// `{issuer}/.well-known/risc-configuration`, keeping any path the issuer has.
pub(crate) fn configuration_url(issuer: &Url) -> Result<Url, String> {
    let mut url = issuer.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|()| format!("issuer {issuer} cannot carry a path"))?
        .pop_if_empty()
        .extend([".well-known", "risc-configuration"]);
    Ok(url)
}

impl Inner {
    async fn configuration(&self) -> Result<Arc<RiscConfiguration>, ProviderError> {
        if let Some(configuration) = self.configuration.get() {
            return Ok(configuration.clone());
        }
        let cooldown = secs(self.settings.jwks_refetch_cooldown);
        if let Some((at, e)) = self.failure().as_ref()
            && self.clock.unix().saturating_sub(*at) < cooldown
        {
            return Err(e.clone());
        }
        let fetched = self
            .configuration
            .get_or_try_init(|| self.fetch_configuration())
            .await
            .cloned();
        if let Err(e) = &fetched {
            tracing::warn!(error = %e, "fetching the RISC configuration failed");
            *self.failure() = Some((self.clock.unix(), e.clone()));
        }
        fetched
    }

    fn failure(&self) -> MutexGuard<'_, Option<(i64, ProviderError)>> {
        // A plain store of a value: a panic elsewhere cannot leave it half-written.
        self.configuration_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    async fn fetch_configuration(&self) -> Result<Arc<RiscConfiguration>, ProviderError> {
        let url = configuration_url(&self.settings.issuer).map_err(ProviderError::protocol)?;
        let answer = self.get_json(url, Call::Discovery).await?;
        let configuration: RiscConfiguration =
            serde_json::from_slice(&answer.body).map_err(|e| {
                ProviderError::protocol(echo(&format!("the RISC configuration is unreadable: {e}")))
            })?;
        if !same_issuer(&self.settings.issuer, &configuration.issuer) {
            return Err(ProviderError::protocol(echo(&format!(
                "the RISC configuration names issuer {:?}, not the configured {}",
                configuration.issuer, self.settings.issuer
            ))));
        }
        tracing::debug!(issuer = %configuration.issuer, jwks_uri = %configuration.jwks_uri, "fetched the RISC configuration");
        Ok(Arc::new(configuration))
    }

    async fn get_json(&self, url: Url, call: Call) -> Result<Answer, ProviderError> {
        let answer = send(self.http.get(url).header(ACCEPT, "application/json")).await?;
        if answer.is_success() {
            Ok(answer)
        } else {
            Err(classify(
                call,
                answer.status,
                answer.retry_after(),
                &answer.body,
            ))
        }
    }
}

/// The RISC configuration's JWKS over HTTP, as the key cache sees it.
impl JwksSource for Inner {
    async fn fetch_jwks(&self) -> Result<JwksDocument, ProviderError> {
        let configuration = self.configuration().await?;
        let answer = self
            .get_json(configuration.jwks_uri.clone(), Call::Jwks)
            .await?;
        Ok(JwksDocument {
            cache_control: answer.header(CACHE_CONTROL).map(str::to_owned),
            age: answer.header(AGE).map(str::to_owned),
            body: answer.body.to_vec(),
        })
    }
}

/// The payload as signed, before any rule is applied. Loose on purpose, so that a claim of the
/// wrong type is refused by the rule it breaks, with its own RFC 8935 code.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawSet {
    iss: Option<Value>,
    aud: Option<Value>,
    iat: Option<Value>,
    jti: Option<Value>,
    events: Option<Value>,
}

/// What a token must satisfy, drawn from the settings and the RISC configuration.
pub(crate) struct SetRules<'a> {
    /// The configuration's issuer, without a trailing slash.
    pub issuer: &'a str,
    /// The issuer without its scheme, accepted when Google's quirks are on.
    pub bare_issuer: Option<&'a str>,
    pub client_id: &'a str,
    pub authorized_parties: &'a [String],
    pub max_age_secs: i64,
    pub future_skew_secs: i64,
}

impl<'a> SetRules<'a> {
    /// The rules for tokens of the RISC configuration's `issuer`, addressed to the clients
    /// of `settings`.
    pub(crate) fn new(issuer: &'a str, settings: &'a ProviderSettings) -> Self {
        let issuer = trim_slash(issuer);
        let bare = issuer.split_once("://").map_or(issuer, |(_, rest)| rest);
        SetRules {
            issuer,
            bare_issuer: settings.google_quirks.then_some(bare),
            client_id: &settings.client_id,
            authorized_parties: &settings.authorized_parties,
            max_age_secs: secs(MAX_EVENT_AGE),
            future_skew_secs: secs(MAX_FUTURE_SKEW),
        }
    }
}

impl SetRules<'_> {
    fn issuer_ok(&self, iss: &str) -> bool {
        let iss = trim_slash(iss);
        iss == self.issuer || self.bare_issuer.is_some_and(|bare| iss == bare)
    }

    fn ours(&self, aud: &str) -> bool {
        aud == self.client_id || self.authorized_parties.iter().any(|p| p == aud)
    }
}

fn invalid(message: impl Into<String>) -> SecurityEventError {
    SecurityEventError::Invalid(message.into())
}

/// Applies the rules of reference §6.3–6.4 to a payload whose signature has been verified.
pub(crate) fn check_set(
    raw: RawSet,
    rules: &SetRules<'_>,
    now: i64,
) -> Result<SecurityEvent, SecurityEventError> {
    match raw.iss.as_ref().and_then(Value::as_str) {
        Some(iss) if rules.issuer_ok(iss) => {}
        _ => return Err(SecurityEventError::Issuer),
    }

    // One of our clients; an event addressed to several recipients is ours too.
    let audience = match &raw.aud {
        Some(Value::String(aud)) => Some(aud.as_str()).filter(|a| rules.ours(a)),
        Some(Value::Array(many)) => many
            .iter()
            .filter_map(Value::as_str)
            .find(|a| rules.ours(a)),
        _ => None,
    }
    .ok_or(SecurityEventError::Audience)?
    .to_owned();

    let iat = match &raw.iat {
        Some(Value::Number(n)) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && f.abs() < 1e15)
                // JWT dates are whole seconds in practice; the bound makes the cast exact.
                .map(|f| f.trunc() as i64)
        }),
        _ => None,
    }
    .ok_or_else(|| invalid("iat is missing or not a number"))?;
    if iat > now.saturating_add(rules.future_skew_secs) {
        return Err(invalid("iat is in the future"));
    }
    if iat < now.saturating_sub(rules.max_age_secs) {
        return Err(invalid(format!(
            "iat is more than {} days old",
            rules.max_age_secs / 86_400
        )));
    }

    let jti = match raw.jti {
        Some(Value::String(jti)) if is_id(&jti) => jti,
        _ => return Err(invalid("jti is missing or not a short printable string")),
    };

    let Some(Value::Object(events)) = raw.events else {
        return Err(invalid("events is missing or not an object"));
    };
    let mut entries = events.into_iter();
    let (event_type, body) = match (entries.next(), entries.next()) {
        (Some(only), None) => only,
        _ => return Err(invalid("events must hold exactly one event")),
    };
    let Value::Object(body) = body else {
        return Err(invalid("the event is not an object"));
    };
    let event = parse_event(&event_type, &body, rules)?;
    Ok(SecurityEvent {
        jti,
        issued_at: iat,
        audience,
        event_type: echo(&event_type),
        event,
    })
}

fn is_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID && s.chars().all(|c| !c.is_control())
}

fn parse_event(
    event_type: &str,
    body: &Map<String, Value>,
    rules: &SetRules<'_>,
) -> Result<Event, SecurityEventError> {
    if let Some(name) = event_type.strip_prefix(OAUTH_EVENT_PREFIX) {
        return match name {
            "tokens-revoked" => Ok(Event::TokensRevoked(subject(body, rules)?)),
            "token-revoked" => Ok(Event::TokenRevoked(revoked_token(body)?)),
            _ => Ok(Event::Unknown),
        };
    }
    let Some(name) = event_type.strip_prefix(RISC_EVENT_PREFIX) else {
        return Ok(Event::Unknown);
    };
    Ok(match name {
        "sessions-revoked" => Event::SessionsRevoked(subject(body, rules)?),
        "account-disabled" => Event::AccountDisabled {
            subject: subject(body, rules)?,
            reason: match body.get("reason") {
                None | Some(Value::Null) => None,
                Some(Value::String(r)) if r == "hijacking" => Some(DisabledReason::Hijacking),
                Some(Value::String(r)) if r == "bulk-account" => Some(DisabledReason::BulkAccount),
                Some(Value::String(r)) => Some(DisabledReason::Other(echo(r))),
                Some(_) => return Err(invalid("the account-disabled reason is not a string")),
            },
        },
        "account-enabled" => Event::AccountEnabled(subject(body, rules)?),
        "account-purged" => Event::AccountPurged(subject(body, rules)?),
        "account-credential-change-required" => {
            Event::AccountCredentialChangeRequired(subject(body, rules)?)
        }
        "verification" => Event::Verification {
            state: match body.get("state") {
                None | Some(Value::Null) => None,
                Some(Value::String(state)) => Some(echo(state)),
                Some(_) => return Err(invalid("the verification state is not a string")),
            },
        },
        _ => Event::Unknown,
    })
}

fn text<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    object.get(key).and_then(Value::as_str)
}

/// The account an event is about.
fn subject(body: &Map<String, Value>, rules: &SetRules<'_>) -> Result<Subject, SecurityEventError> {
    let Some(Value::Object(subject)) = body.get("subject") else {
        return Err(invalid("the event has no subject object"));
    };
    let sub = || -> Result<Subject, SecurityEventError> {
        let sub = text(subject, "sub")
            .filter(|s| is_id(s))
            .ok_or_else(|| invalid("the subject's sub is missing or not a short string"))?;
        // The sub of another issuer would name someone else.
        if let Some(iss) = subject.get("iss")
            && !iss.as_str().is_some_and(|iss| rules.issuer_ok(iss))
        {
            return Err(invalid("the subject's issuer is not the provider"));
        }
        Ok(Subject::Sub(sub.to_owned()))
    };
    let email = || -> Result<Subject, SecurityEventError> {
        text(subject, "email")
            .filter(|e| is_id(e) && e.contains('@'))
            .map(|e| Subject::Email(e.to_owned()))
            .ok_or_else(|| invalid("the subject's email is missing or not an address"))
    };
    match text(subject, "subject_type") {
        Some("iss-sub") => sub(),
        Some("id_token_claims") if subject.contains_key("sub") => sub(),
        Some("id_token_claims" | "email") => email(),
        Some(other) => Err(invalid(format!(
            "subject_type {:?} is not one this event takes",
            echo(other).chars().take(40).collect::<String>()
        ))),
        None => Err(invalid("the subject has no subject_type")),
    }
}

/// The token a `token-revoked` event names.
fn revoked_token(body: &Map<String, Value>) -> Result<RevokedToken, SecurityEventError> {
    let Some(Value::Object(subject)) = body.get("subject") else {
        return Err(invalid("the event has no subject object"));
    };
    if text(subject, "subject_type") != Some("oauth_token") {
        return Err(invalid("token-revoked takes an oauth_token subject"));
    }
    let token_type = text(subject, "token_type")
        .filter(|t| is_id(t))
        .map(echo)
        .ok_or_else(|| invalid("the subject's token_type is missing"))?;
    let token = text(subject, "token")
        .filter(|t| !t.is_empty() && t.len() <= 4096)
        .ok_or_else(|| invalid("the subject's token is missing"))?;
    let identifier = match text(subject, "token_identifier_alg") {
        Some("prefix") => TokenIdentifier::Prefix(SecretString::from(
            token.chars().take(TOKEN_PREFIX_CHARS).collect::<String>(),
        )),
        Some("hash_base64_sha512_sha512") => {
            let bytes = [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
                .iter()
                .find_map(|engine| engine.decode(token).ok())
                .filter(|b| b.len() == 64)
                .ok_or_else(|| invalid("the token hash is not base64 of 64 bytes"))?;
            TokenIdentifier::Sha512Sha512(STANDARD.encode(bytes))
        }
        _ => {
            return Err(invalid(
                "token_identifier_alg must be prefix or hash_base64_sha512_sha512",
            ));
        }
    };
    Ok(RevokedToken {
        token_type,
        identifier,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_750_000_000;
    const WEB: &str = "web.apps.googleusercontent.com";
    const ANDROID: &str = "android.apps.googleusercontent.com";
    const SUB: &str = "110169484474386276334";

    fn rules<'a>(parties: &'a [String], quirks: bool) -> SetRules<'a> {
        SetRules {
            issuer: "https://accounts.google.com",
            bare_issuer: quirks.then_some("accounts.google.com"),
            client_id: WEB,
            authorized_parties: parties,
            max_age_secs: secs(MAX_EVENT_AGE),
            future_skew_secs: secs(MAX_FUTURE_SKEW),
        }
    }

    fn iss_sub() -> Value {
        json!({"subject_type": "iss-sub", "iss": "https://accounts.google.com/", "sub": SUB})
    }

    /// Google's account-disabled example (reference §6.3).
    fn payload() -> Value {
        json!({
            "iss": "https://accounts.google.com/",
            "aud": WEB,
            "iat": NOW - 20,
            "jti": "756E69717565206964656E746966696572",
            "events": {
                "https://schemas.openid.net/secevent/risc/event-type/account-disabled": {
                    "subject": iss_sub(),
                    "reason": "hijacking"
                }
            }
        })
    }

    fn with(mut p: Value, key: &str, value: Value) -> Value {
        p[key] = value;
        p
    }

    fn without(mut p: Value, key: &str) -> Value {
        p.as_object_mut().unwrap().remove(key);
        p
    }

    fn event(uri: &str, body: Value) -> Value {
        with(payload(), "events", json!({ uri: body }))
    }

    fn check_with(p: Value, quirks: bool) -> Result<SecurityEvent, SecurityEventError> {
        let parties = vec![ANDROID.to_owned()];
        let raw: RawSet = serde_json::from_value(p).unwrap();
        check_set(raw, &rules(&parties, quirks), NOW)
    }

    fn check(p: Value) -> Result<SecurityEvent, SecurityEventError> {
        check_with(p, false)
    }

    fn code(p: Value) -> Option<&'static str> {
        check(p).err().and_then(|e| e.rfc8935_code())
    }

    #[test]
    fn googles_example_reads_into_a_typed_event() {
        let e = check(payload()).unwrap();
        assert_eq!(e.jti, "756E69717565206964656E746966696572");
        assert_eq!(e.issued_at, NOW - 20);
        assert_eq!(e.audience, WEB);
        assert_eq!(
            e.event_type,
            "https://schemas.openid.net/secevent/risc/event-type/account-disabled"
        );
        assert!(matches!(
            e.event,
            Event::AccountDisabled {
                subject: Subject::Sub(ref s),
                reason: Some(DisabledReason::Hijacking)
            } if s == SUB
        ));
        assert_eq!(e.event.name(), "account-disabled");
    }

    #[test]
    fn every_event_type_of_the_profile() {
        let risc = |name: &str| format!("{RISC_EVENT_PREFIX}{name}");
        let oauth = |name: &str| format!("{OAUTH_EVENT_PREFIX}{name}");
        let subject = json!({"subject": iss_sub()});
        let cases = [
            (risc("sessions-revoked"), "sessions-revoked"),
            (oauth("tokens-revoked"), "tokens-revoked"),
            (risc("account-enabled"), "account-enabled"),
            (risc("account-purged"), "account-purged"),
            (
                risc("account-credential-change-required"),
                "account-credential-change-required",
            ),
        ];
        for (uri, name) in cases {
            let e = check(event(&uri, subject.clone())).unwrap();
            assert_eq!(e.event.name(), name, "{uri}");
        }
        let e = check(event(&risc("account-disabled"), subject.clone())).unwrap();
        assert!(matches!(
            e.event,
            Event::AccountDisabled { reason: None, .. }
        ));
        let e = check(event(
            &risc("account-disabled"),
            json!({"subject": iss_sub(), "reason": "bulk-account"}),
        ))
        .unwrap();
        assert!(matches!(
            e.event,
            Event::AccountDisabled {
                reason: Some(DisabledReason::BulkAccount),
                ..
            }
        ));
        let e = check(event(&risc("verification"), json!({"state": "hello"}))).unwrap();
        assert!(matches!(e.event, Event::Verification { state: Some(ref s) } if s == "hello"));
        let e = check(event(&risc("verification"), json!({}))).unwrap();
        assert!(matches!(e.event, Event::Verification { state: None }));
    }

    #[test]
    fn token_events_live_in_the_oauth_namespace() {
        // The RISC spelling of a token event is not Google's: no action is taken on it.
        let e = check(event(
            &format!("{RISC_EVENT_PREFIX}tokens-revoked"),
            json!({"subject": iss_sub()}),
        ))
        .unwrap();
        assert!(matches!(e.event, Event::Unknown));
        let e = check(event("https://example.com/event/new", json!({}))).unwrap();
        assert!(matches!(e.event, Event::Unknown));
        assert_eq!(e.event.name(), "unknown");
    }

    fn token_revoked(alg: &str, token: &str) -> Value {
        event(
            &format!("{OAUTH_EVENT_PREFIX}token-revoked"),
            json!({"subject": {
                "subject_type": "oauth_token",
                "token_type": "refresh_token",
                "token_identifier_alg": alg,
                "token": token,
            }}),
        )
    }

    #[test]
    fn a_revoked_token_by_prefix_keeps_sixteen_characters_secret() {
        let e = check(token_revoked("prefix", "1//0abcdefghijklmnopqrstuvwxyz")).unwrap();
        let Event::TokenRevoked(t) = e.event else {
            panic!("{:?}", e.event)
        };
        assert_eq!(t.token_type, "refresh_token");
        let TokenIdentifier::Prefix(ref prefix) = t.identifier else {
            panic!("{:?}", t.identifier)
        };
        assert_eq!(prefix.expose_secret(), "1//0abcdefghijkl");
        let shown = format!("{t:?}");
        assert!(!shown.contains("abcdef"), "{shown}");
    }

    #[test]
    fn a_revoked_token_by_hash_is_normalised_to_padded_standard_base64() {
        let bytes: Vec<u8> = (0u8..64)
            .map(|b| b.wrapping_mul(37).wrapping_add(250))
            .collect();
        let want = STANDARD.encode(&bytes);
        for given in [
            STANDARD.encode(&bytes),
            STANDARD_NO_PAD.encode(&bytes),
            URL_SAFE.encode(&bytes),
            URL_SAFE_NO_PAD.encode(&bytes),
        ] {
            let e = check(token_revoked("hash_base64_sha512_sha512", &given)).unwrap();
            let Event::TokenRevoked(RevokedToken {
                identifier: TokenIdentifier::Sha512Sha512(hash),
                ..
            }) = e.event
            else {
                panic!("{:?}", e.event)
            };
            assert_eq!(hash, want, "{given}");
        }
        for bad in ["not base64!", &STANDARD.encode([1u8; 32])] {
            assert_eq!(
                code(token_revoked("hash_base64_sha512_sha512", bad)),
                Some("invalid_request")
            );
        }
        assert_eq!(code(token_revoked("plain", "x")), Some("invalid_request"));
        assert_eq!(code(token_revoked("prefix", "")), Some("invalid_request"));
        // token-revoked names a token, not an account.
        assert_eq!(
            code(event(
                &format!("{OAUTH_EVENT_PREFIX}token-revoked"),
                json!({"subject": iss_sub()})
            )),
            Some("invalid_request")
        );
    }

    #[test]
    fn subjects_by_sub_or_by_email() {
        let uri = format!("{RISC_EVENT_PREFIX}sessions-revoked");
        let subject_of = |subject: Value| {
            check(event(&uri, json!({ "subject": subject }))).map(|e| match e.event {
                Event::SessionsRevoked(s) => s,
                other => panic!("{other:?}"),
            })
        };
        assert_eq!(
            subject_of(json!({"subject_type": "id_token_claims", "email": "ada@example.com"})),
            Ok(Subject::Email("ada@example.com".into()))
        );
        assert_eq!(
            subject_of(json!({"subject_type": "email", "email": "ada@example.com"})),
            Ok(Subject::Email("ada@example.com".into()))
        );
        assert_eq!(
            subject_of(json!({"subject_type": "id_token_claims", "sub": SUB, "email": "a@b.c"})),
            Ok(Subject::Sub(SUB.into()))
        );
        // The subject's issuer in Google's other spelling is still Google.
        assert_eq!(
            subject_of(
                json!({"subject_type": "iss-sub", "iss": "https://accounts.google.com", "sub": SUB})
            ),
            Ok(Subject::Sub(SUB.into()))
        );
        for bad in [
            json!({"subject_type": "iss-sub", "iss": "https://evil.example.com/", "sub": SUB}),
            json!({"subject_type": "iss-sub", "iss": "https://accounts.google.com/"}),
            json!({"subject_type": "iss-sub", "sub": ""}),
            json!({"subject_type": "iss-sub", "sub": 42}),
            json!({"subject_type": "id_token_claims", "email": "not-an-address"}),
            json!({"subject_type": "phone", "phone_number": "+1"}),
            json!({"sub": SUB}),
            json!("iss-sub"),
        ] {
            assert!(
                matches!(subject_of(bad.clone()), Err(SecurityEventError::Invalid(_))),
                "{bad}"
            );
        }
        assert_eq!(code(event(&uri, json!({}))), Some("invalid_request"));
    }

    #[test]
    fn issuer_spellings() {
        for iss in [
            "https://accounts.google.com/",
            "https://accounts.google.com",
        ] {
            assert!(check(with(payload(), "iss", json!(iss))).is_ok(), "{iss}");
        }
        let bare = with(payload(), "iss", json!("accounts.google.com"));
        assert!(check_with(bare.clone(), true).is_ok());
        assert_eq!(check(bare).unwrap_err(), SecurityEventError::Issuer);
        for bad in [
            json!("https://evil.example.com/"),
            json!("https://accounts.google.com.evil.example/"),
            json!(["https://accounts.google.com/"]),
            json!(7),
        ] {
            assert_eq!(code(with(payload(), "iss", bad)), Some("invalid_issuer"));
        }
        assert_eq!(code(without(payload(), "iss")), Some("invalid_issuer"));
    }

    #[test]
    fn audience_is_one_of_our_clients() {
        let e = check(with(payload(), "aud", json!(ANDROID))).unwrap();
        assert_eq!(e.audience, ANDROID);
        let e = check(with(payload(), "aud", json!(["someone-else", WEB]))).unwrap();
        assert_eq!(e.audience, WEB);
        for bad in [
            json!("someone-else"),
            json!([]),
            json!(["x", "y"]),
            json!(1),
        ] {
            assert_eq!(code(with(payload(), "aud", bad)), Some("invalid_audience"));
        }
        assert_eq!(code(without(payload(), "aud")), Some("invalid_audience"));
    }

    #[test]
    fn iat_is_required_within_its_window_and_exp_is_ignored() {
        let at = |iat: Value| with(payload(), "iat", iat);
        let skew = secs(MAX_FUTURE_SKEW);
        let age = secs(MAX_EVENT_AGE);
        assert!(check(at(json!(NOW + skew))).is_ok());
        assert_eq!(code(at(json!(NOW + skew + 1))), Some("invalid_request"));
        assert!(check(at(json!(NOW - age))).is_ok());
        assert_eq!(code(at(json!(NOW - age - 1))), Some("invalid_request"));
        assert_eq!(check(at(json!(NOW as f64 + 0.5))).unwrap().issued_at, NOW);
        for bad in [json!("1750000000"), json!(null), json!(1e300)] {
            assert_eq!(code(at(bad.clone())), Some("invalid_request"), "{bad}");
        }
        assert_eq!(code(without(payload(), "iat")), Some("invalid_request"));
        // Events are history: a long-past exp changes nothing.
        assert!(check(with(payload(), "exp", json!(NOW - 86_400))).is_ok());
    }

    #[test]
    fn jti_and_events_shape() {
        assert_eq!(code(without(payload(), "jti")), Some("invalid_request"));
        for bad in [
            json!(""),
            json!(5),
            json!("x".repeat(MAX_ID + 1)),
            json!("a\nb"),
        ] {
            assert_eq!(code(with(payload(), "jti", bad)), Some("invalid_request"));
        }
        assert_eq!(code(without(payload(), "events")), Some("invalid_request"));
        for bad in [
            json!({}),
            json!([]),
            json!("x"),
            json!({
                format!("{RISC_EVENT_PREFIX}sessions-revoked"): {"subject": iss_sub()},
                format!("{RISC_EVENT_PREFIX}account-purged"): {"subject": iss_sub()},
            }),
            json!({ format!("{RISC_EVENT_PREFIX}sessions-revoked"): "subject" }),
        ] {
            assert_eq!(
                code(with(payload(), "events", bad.clone())),
                Some("invalid_request"),
                "{bad}"
            );
        }
    }

    #[test]
    fn issuer_and_audience_are_judged_first() {
        // A token that is wrong in several ways is refused for the most telling reason.
        let p = without(
            without(with(payload(), "iss", json!("https://x.example")), "jti"),
            "aud",
        );
        assert_eq!(code(p), Some("invalid_issuer"));
        let p = without(with(payload(), "aud", json!("x")), "jti");
        assert_eq!(code(p), Some("invalid_audience"));
    }

    #[test]
    fn error_codes_and_transience() {
        assert_eq!(
            SecurityEventError::Parse("x".into()).rfc8935_code(),
            Some("jwtParse")
        );
        assert_eq!(
            SecurityEventError::Key("x".into()).rfc8935_code(),
            Some("invalid_key")
        );
        let unavailable = SecurityEventError::KeysUnavailable("down".into());
        assert_eq!(unavailable.rfc8935_code(), None);
        assert!(unavailable.is_transient());
        assert!(!SecurityEventError::Issuer.is_transient());
    }

    #[test]
    fn configuration_url_keeps_the_issuer_path() {
        let cases = [
            (
                "https://accounts.google.com",
                "https://accounts.google.com/.well-known/risc-configuration",
            ),
            (
                "http://127.0.0.1:8080/_google/",
                "http://127.0.0.1:8080/_google/.well-known/risc-configuration",
            ),
        ];
        for (issuer, want) in cases {
            let url = configuration_url(&Url::parse(issuer).unwrap()).unwrap();
            assert_eq!(url.as_str(), want);
        }
    }

    #[test]
    fn configuration_reads_googles_and_the_emulators() {
        let google: RiscConfiguration = serde_json::from_value(json!({
            "issuer": "https://accounts.google.com/",
            "jwks_uri": "https://www.googleapis.com/oauth2/v3/certs",
            "delivery_methods_supported": [
                "https://schemas.openid.net/secevent/risc/delivery-method/push"
            ],
            "add_subject_endpoint": "https://risc.googleapis.com/v1beta/subjects:add",
            "remove_subject_endpoint": "https://risc.googleapis.com/v1beta/subjects:remove"
        }))
        .unwrap();
        assert!(same_issuer(
            &Url::parse("https://accounts.google.com").unwrap(),
            &google.issuer
        ));
        let emulator: RiscConfiguration = serde_json::from_value(json!({
            "issuer": "http://127.0.0.1:9/",
            "jwks_uri": "http://127.0.0.1:9/risc/jwks",
        }))
        .unwrap();
        assert!(emulator.delivery_methods_supported.is_empty());
    }
}
