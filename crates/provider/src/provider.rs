//! The provider client: discovery, token endpoint, revocation, ID-token verification.

use crate::claims::{ClaimRules, IdTokenClaims, RawClaims, check_claims};
use crate::discovery::{Discovery, same_issuer};
use crate::error::{Call, IdTokenError, OAuthError, ProviderError, classify};
use crate::http::{Answer, send};
use crate::jws::{decode_signed, parse_header};
use crate::keystore::{JwksDocument, JwksSource, KeyStore, KeyStoreStats, Lookup};
use crate::settings::ProviderSettings;
use crate::token::{TokenResponse, parse_success};
use grantkeeper_core::metrics::Warning;
use grantkeeper_core::{ExposeSecret, Metrics, SecretString, SharedClock, Stopwatch};
use reqwest::header::{ACCEPT, AGE, CACHE_CONTROL};
use std::fmt;
use std::sync::Arc;
use tokio::sync::OnceCell;
use url::Url;

/// grantkeeper's client of one OpenID Connect provider. Cheap to clone; clones share the
/// discovery document and the key cache.
#[derive(Clone)]
pub struct Provider {
    inner: Arc<Inner>,
    /// Where code exchanges, ID-token verifications and JWKS fetches are counted.
    metrics: Metrics,
}

struct Inner {
    settings: ProviderSettings,
    http: reqwest::Client,
    clock: SharedClock,
    /// Fetched on first use; a failed fetch leaves it empty for the next call to retry.
    discovery: OnceCell<Arc<Discovery>>,
    keys: KeyStore,
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("issuer", &self.inner.settings.issuer.as_str())
            .field("client_id", &self.inner.settings.client_id)
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// Does no I/O: discovery and keys are fetched when first needed.
    ///
    /// `http` should have timeouts and must not follow redirects (a token endpoint that
    /// redirects is answered with [`ProviderError::Protocol`]).
    pub fn new(settings: ProviderSettings, http: reqwest::Client, clock: SharedClock) -> Self {
        let keys = KeyStore::new(clock.clone(), settings.jwks_refetch_cooldown);
        Self {
            inner: Arc::new(Inner {
                settings,
                http,
                clock,
                discovery: OnceCell::new(),
                keys,
            }),
            metrics: Metrics::disabled(),
        }
    }

    /// This provider (sharing its discovery document and keys) counting its code exchanges,
    /// ID-token verifications and JWKS fetches in `metrics`.
    pub fn with_metrics(self, metrics: Metrics) -> Self {
        Self { metrics, ..self }
    }

    pub fn settings(&self) -> &ProviderSettings {
        &self.inner.settings
    }

    /// The provider's discovery document, fetched once.
    pub async fn discovery(&self) -> Result<Arc<Discovery>, ProviderError> {
        self.inner.discovery().await
    }

    /// Exchanges an authorization code. `redirect_uri` is sent as given, also when empty
    /// (native codes) or `postmessage` (web popup codes). Not retried: a code is single use.
    pub async fn exchange_code(
        &self,
        code: &SecretString,
        redirect_uri: &str,
    ) -> Result<TokenResponse, ProviderError> {
        let s = &self.inner.settings;
        let started = Stopwatch::start();
        let answer = self
            .inner
            .token_call(
                Call::Code,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", code.expose_secret()),
                    ("redirect_uri", redirect_uri),
                    ("client_id", &s.client_id),
                    ("client_secret", s.client_secret.expose_secret()),
                ],
            )
            .await;
        let outcome = answer
            .as_ref()
            .map_or_else(ProviderError::outcome, |_| "ok");
        self.metrics.exchange(outcome, started.elapsed());
        self.observe(Call::Code, &answer);
        answer
    }

    /// Counts and logs what an answer tells the operator: `invalid_client` means grantkeeper's
    /// own credentials were refused, whichever call it came from.
    fn observe<T>(&self, call: Call, answer: &Result<T, ProviderError>) {
        if let Err(ProviderError::InvalidClient { description }) = answer {
            self.metrics.warning(Warning::InvalidClient);
            tracing::error!(
                call = call.name(),
                client_id = %self.inner.settings.client_id,
                error = %description,
                warning = Warning::InvalidClient.kind(),
                "{}",
                Warning::InvalidClient.advice()
            );
        }
    }

    /// Mints a new access token. The answer normally has no refresh token: keep the old one.
    pub async fn refresh(
        &self,
        refresh_token: &SecretString,
    ) -> Result<TokenResponse, ProviderError> {
        let s = &self.inner.settings;
        let answer = self
            .inner
            .token_call(
                Call::Refresh,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh_token.expose_secret()),
                    ("client_id", &s.client_id),
                    ("client_secret", s.client_secret.expose_secret()),
                ],
            )
            .await;
        self.observe(Call::Refresh, &answer);
        answer
    }

    /// Revokes a token and with it the whole grant. A token the provider no longer knows
    /// (`400 invalid_token`) is already gone, which is what the caller wanted.
    pub async fn revoke(&self, token: &SecretString) -> Result<(), ProviderError> {
        let discovery = self.discovery().await?;
        let Some(endpoint) = discovery.revocation_endpoint.as_ref() else {
            return Err(ProviderError::protocol(
                "the provider publishes no revocation_endpoint",
            ));
        };
        let request = self
            .inner
            .http
            .post(endpoint.clone())
            .header(ACCEPT, "application/json")
            .form(&[("token", token.expose_secret())]);
        let answer = send(request).await?;
        if answer.is_success() {
            return Ok(());
        }
        if answer.status == 400
            && OAuthError::parse(&answer.body).is_some_and(|e| e.error == "invalid_token")
        {
            return Ok(());
        }
        let refused = Err(classify(
            Call::Revoke,
            answer.status,
            answer.retry_after(),
            &answer.body,
        ));
        self.observe(Call::Revoke, &refused);
        refused
    }

    /// Verifies an ID token: RS256 signature by a published key, then `iss`, `aud`, `azp`,
    /// `exp`, `iat`, lifetime and `sub` against our clock.
    pub async fn verify_id_token(
        &self,
        id_token: &SecretString,
    ) -> Result<IdTokenClaims, IdTokenError> {
        let started = Stopwatch::start();
        let verified = self.verify(id_token).await;
        let outcome = verified
            .as_ref()
            .map_or_else(IdTokenError::outcome, |_| "ok");
        self.metrics.verify(outcome, started.elapsed());
        verified
    }

    async fn verify(&self, id_token: &SecretString) -> Result<IdTokenClaims, IdTokenError> {
        let token = id_token.expose_secret();
        let header = parse_header(token)?;
        let key = match self.inner.keys.key(&header.kid, &self.jwks()).await {
            Lookup::Key(key) => key,
            Lookup::Unknown => return Err(IdTokenError::UnknownKey),
            Lookup::Unavailable(e) => return Err(IdTokenError::KeysUnavailable(e.to_string())),
        };
        let raw: RawClaims = decode_signed(token, &key)?;

        // Keys were found, so discovery is in hand; this does no I/O.
        let discovery = self
            .discovery()
            .await
            .map_err(|e| IdTokenError::KeysUnavailable(e.to_string()))?;
        let s = &self.inner.settings;
        let rules = ClaimRules {
            issuer: discovery.issuer_url_form(),
            bare_issuer: s.google_quirks.then(|| discovery.issuer_bare_form()),
            client_id: &s.client_id,
            authorized_parties: &s.authorized_parties,
            leeway_secs: secs(s.effective_leeway()),
            max_lifetime_secs: secs(s.max_id_token_lifetime),
        };
        check_claims(raw, &rules, self.inner.clock.unix())
    }

    /// Fetches discovery and makes sure signing keys are held (fetching them when none are
    /// or they are past max-age), for readiness probes and `grantkeeper check`. Stale keys
    /// still inside their grace period count as usable.
    pub async fn check(&self) -> Result<(), ProviderError> {
        self.discovery().await?;
        self.inner.keys.ensure_loaded(&self.jwks()).await
    }

    /// The JWKS source the key cache fetches through, counting each fetch.
    fn jwks(&self) -> Jwks<'_> {
        Jwks {
            inner: &self.inner,
            metrics: &self.metrics,
        }
    }

    /// Counters of the JWKS cache.
    pub fn key_store_stats(&self) -> KeyStoreStats {
        self.inner.keys.stats()
    }
}

fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl Inner {
    async fn discovery(&self) -> Result<Arc<Discovery>, ProviderError> {
        self.discovery
            .get_or_try_init(|| self.fetch_discovery())
            .await
            .cloned()
    }

    async fn fetch_discovery(&self) -> Result<Arc<Discovery>, ProviderError> {
        let url = self
            .settings
            .discovery_url()
            .map_err(ProviderError::protocol)?;
        let answer = self.get_json(url, Call::Discovery).await?;
        let discovery: Discovery = serde_json::from_slice(&answer.body).map_err(|e| {
            ProviderError::protocol(crate::error::echo(&format!(
                "the discovery document is unreadable: {e}"
            )))
        })?;
        if !same_issuer(&self.settings.issuer, &discovery.issuer) {
            return Err(ProviderError::protocol(crate::error::echo(&format!(
                "the discovery document names issuer {:?}, not the configured {}",
                discovery.issuer, self.settings.issuer
            ))));
        }
        tracing::debug!(issuer = %discovery.issuer, "fetched the discovery document");
        Ok(Arc::new(discovery))
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

    async fn token_call(
        &self,
        call: Call,
        form: &[(&str, &str)],
    ) -> Result<TokenResponse, ProviderError> {
        let discovery = self.discovery().await?;
        let sent_at = self.clock.now();
        let request = self
            .http
            .post(discovery.token_endpoint.clone())
            .header(ACCEPT, "application/json")
            .form(form);
        let answer = send(request).await?;
        if answer.is_success() {
            parse_success(call, answer.status, &answer.body, sent_at)
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

/// The provider's JWKS over HTTP (discovery's `jwks_uri`), as the key cache sees it.
struct Jwks<'a> {
    inner: &'a Inner,
    metrics: &'a Metrics,
}

impl JwksSource for Jwks<'_> {
    async fn fetch_jwks(&self) -> Result<JwksDocument, ProviderError> {
        let fetched = self.inner.fetch_jwks().await;
        let outcome = fetched
            .as_ref()
            .map_or_else(ProviderError::outcome, |_| "ok");
        self.metrics.jwks_fetch(outcome);
        fetched
    }
}

impl Inner {
    async fn fetch_jwks(&self) -> Result<JwksDocument, ProviderError> {
        let discovery = self.discovery().await?;
        let answer = self
            .get_json(discovery.jwks_uri.clone(), Call::Jwks)
            .await?;
        Ok(JwksDocument {
            cache_control: answer.header(CACHE_CONTROL).map(str::to_owned),
            age: answer.header(AGE).map(str::to_owned),
            body: answer.body.to_vec(),
        })
    }
}
