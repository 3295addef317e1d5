//! Browser and app sessions: a random secret in an HttpOnly cookie, its SHA-256 in the store.
//! The store keeps at most [`grantkeeper_store::MAX_SESSIONS_PER_USER`] live ones per user (the
//! oldest go when a sign-in opens another); [`purge_every`] deletes the expired ones, of users
//! and of operators, every `server.session_purge_interval`.

use crate::app::App;
use crate::error::ApiError;
use crate::workers::{StopSignal, stopped};
use aws_lc_rs::digest;
use axum::http::HeaderMap;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use grantkeeper_broker::RevocationOutcome;
use grantkeeper_core::{SecretString, SharedClock};
use grantkeeper_store::{SessionRecord, SharedStore, Store};
use secrecy::ExposeSecret;
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior, interval_at};

pub const COOKIE_NAME: &str = "gk_session";

/// The first purge comes this soon after start at the latest, so that a server restarted more
/// often than its interval still purges.
const FIRST_PURGE_WITHIN: Duration = Duration::from_secs(60);

/// Deletes expired sessions every `every` (times read from the injected clock), in the
/// background ([`crate::workers`]), until told to stop.
pub(crate) async fn purge_every(
    store: SharedStore,
    clock: SharedClock,
    every: Duration,
    mut stop: StopSignal,
) {
    let mut ticks = interval_at(Instant::now() + every.min(FIRST_PURGE_WITHIN), every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stopped(&mut stop) => return,
        }
        purge_expired(store.as_ref(), clock.now()).await;
    }
}

/// One pass: sessions of users and of operators expired at `now`. A failure is logged and the
/// next pass tries again.
async fn purge_expired(store: &dyn Store, now: time::OffsetDateTime) {
    match store.purge_expired_sessions(now).await {
        Ok(0) => {}
        Ok(purged) => tracing::debug!(purged, "deleted expired sessions"),
        Err(e) => {
            tracing::warn!(error = %e, "deleting expired sessions failed; trying again later")
        }
    }
    match store.purge_expired_admin_sessions(now).await {
        Ok(0) => {}
        Ok(purged) => tracing::debug!(purged, "deleted expired console sessions"),
        Err(e) => {
            tracing::warn!(error = %e, "deleting expired console sessions failed; trying again later")
        }
    }
}

fn hash(secret: &str) -> String {
    hex::encode(digest::digest(&digest::SHA256, secret.as_bytes()).as_ref())
}

/// The value of the request's cookie `name`, if any.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    CookieJar::from_headers(headers)
        .get(name)
        .map(|c| c.value().to_owned())
}

/// A `Set-Cookie` value: HttpOnly, on `path`, with `same_site`, for `max_age` seconds (0 removes
/// the cookie), and Secure unless the server runs without TLS (`dev`).
pub(crate) fn set_cookie(
    name: &'static str,
    value: &str,
    path: &'static str,
    same_site: SameSite,
    max_age: u64,
    secure: bool,
) -> String {
    Cookie::build((name, value.to_owned()))
        .path(path)
        .http_only(true)
        .same_site(same_site)
        .max_age(time::Duration::seconds(
            i64::try_from(max_age).unwrap_or(i64::MAX),
        ))
        .secure(secure)
        .build()
        .to_string()
}

/// The session secret named by the request's cookie, if any.
pub fn cookie_secret(headers: &HeaderMap) -> Option<SecretString> {
    cookie(headers, COOKIE_NAME).map(SecretString::from)
}

impl App {
    /// Starts a session for `sub`; returns the `Set-Cookie` value.
    pub async fn start_session(&self, sub: &str) -> Result<String, ApiError> {
        let (session, cookie) = self.new_session();
        self.store()
            .create_session(SessionRecord {
                sub: sub.to_owned(),
                ..session
            })
            .await?;
        Ok(cookie)
    }

    /// A new session (its `sub` still to be filled in) and the `Set-Cookie` value that carries
    /// its secret; nothing is stored yet.
    pub(crate) fn new_session(&self) -> (SessionRecord, String) {
        let secret = grantkeeper_core::random::token::<32>();
        let now = self.clock().now();
        let ttl = self.settings().session_ttl;
        let session = SessionRecord {
            id_hash: hash(&secret),
            sub: String::new(),
            created_at: now,
            expires_at: now + ttl,
        };
        (session, self.cookie(&secret, ttl.as_secs()))
    }

    fn cookie(&self, value: &str, max_age: u64) -> String {
        set_cookie(
            COOKIE_NAME,
            value,
            "/",
            SameSite::Lax,
            max_age,
            self.settings().secure_cookies,
        )
    }

    /// A `Set-Cookie` value that removes the session cookie.
    pub fn clear_cookie(&self) -> String {
        self.cookie("", 0)
    }

    /// The signed-in user's `sub`, or 401.
    pub async fn session_user(&self, headers: &HeaderMap) -> Result<(String, String), ApiError> {
        let secret = cookie_secret(headers)
            .ok_or_else(|| ApiError::Unauthorized("not signed in".to_owned()))?;
        let id_hash = hash(secret.expose_secret());
        let session = self
            .store()
            .session(&id_hash, self.clock().now())
            .await?
            .ok_or_else(|| {
                ApiError::Unauthorized("the session has ended; sign in again".to_owned())
            })?;
        Ok((session.sub, id_hash))
    }

    /// The user asked to disconnect: revoke the grant at Google (its refresh token, or the
    /// access token when no refresh token is held), mark it revoked with its tokens dropped,
    /// and end every session of the user. The user asked to leave, so that is honoured here at
    /// once even when Google cannot be reached: the grant is revoked here and its revocation at
    /// Google queued and retried until it gets through ([`RevocationOutcome::Queued`], audited
    /// as `queued`).
    pub async fn disconnect(&self, sub: &str) -> Result<RevocationOutcome, ApiError> {
        let result = self
            .broker()
            .revoke_or_queue(sub, "disconnected by the user")
            .await
            .map_err(ApiError::from);
        let outcome = match &result {
            Ok(RevocationOutcome::Revoked) => "ok",
            Ok(RevocationOutcome::Queued) => "queued",
            Err(e) => e.code(),
        };
        self.audit()
            .record("session", Some(sub), "disconnect", String::new(), outcome)
            .await;
        let revoked = result?;
        self.store().delete_user_sessions(sub).await?;
        match revoked {
            RevocationOutcome::Revoked => tracing::info!(%sub, "user disconnected"),
            RevocationOutcome::Queued => tracing::warn!(
                %sub,
                outcome = "queued",
                "user disconnected here; Google could not revoke the grant, so its revocation there is queued and retried"
            ),
        }
        Ok(revoked)
    }

    /// Ends the session named by the request's cookie, if any.
    pub async fn end_session(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if let Some(secret) = cookie_secret(headers) {
            self.store()
                .delete_session(&hash(secret.expose_secret()))
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use axum::http::header::COOKIE;

    #[test]
    fn finds_the_session_cookie_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_static("a=1; gk_session=abc ; b=2"),
        );
        assert_eq!(cookie_secret(&h).unwrap().expose_secret(), "abc");
        let mut none = HeaderMap::new();
        none.append(COOKIE, HeaderValue::from_static("gk_sessionx=1"));
        assert!(cookie_secret(&none).is_none());
    }

    #[test]
    fn set_cookie_values_carry_their_attributes() {
        let dev = set_cookie(COOKIE_NAME, "abc", "/", SameSite::Lax, 60, false);
        let parsed = Cookie::parse(dev.clone()).unwrap();
        assert_eq!((parsed.name(), parsed.value()), (COOKIE_NAME, "abc"));
        assert_eq!(parsed.path(), Some("/"));
        assert_eq!(parsed.http_only(), Some(true));
        assert_eq!(parsed.same_site(), Some(SameSite::Lax));
        assert_eq!(parsed.max_age(), Some(time::Duration::seconds(60)));
        assert!(!dev.contains("Secure"), "{dev}");
        let served = set_cookie("gk_admin", "", "/admin", SameSite::Strict, 0, true);
        for attribute in [
            "gk_admin=;",
            "Path=/admin",
            "SameSite=Strict",
            "Max-Age=0",
            "Secure",
        ] {
            assert!(served.contains(attribute), "{served}");
        }
    }
}
