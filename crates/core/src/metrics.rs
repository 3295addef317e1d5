//! What the process counts: Prometheus metrics for `GET /metrics`, and per-minute activity for
//! the store (the admin console's charts).
//!
//! The parts record through small typed methods ([`Metrics::sign_in`], [`Metrics::refresh`],
//! ...) and never see Prometheus. Every label value comes from a fixed, small vocabulary: a
//! value outside it is recorded as `other`, so that no user id, email, token or URL path can
//! ever become a label, and the number of series stays bounded whatever callers pass.
//!
//! Activity is kept in memory as (minute, series) -> count, total and largest duration, and
//! drained by [`Metrics::take_activity`] into the store by the server; a failed write is
//! given back with [`Metrics::restore_activity`]. The minute comes from the [`Clock`](crate::Clock), so
//! tests move time instead of waiting for it. Memory is bounded: past
//! [`MAX_ACTIVITY_ENTRIES`] entries (a day and more of a store that refuses every write) the
//! oldest minutes are dropped, with a warning and the `grantkeeper_activity_dropped` counter.
//!
//! A [`Metrics::disabled`] handle records nothing; it is what a provider or broker built
//! without metrics holds.

use crate::clock::SharedClock;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry, Unit};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use time::OffsetDateTime;

/// The `Content-Type` of what [`Metrics::encode`] renders (OpenMetrics text, which Prometheus
/// scrapes natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric's name starts with this and an underscore.
pub const PREFIX: &str = "grantkeeper";

/// Most (minute, series) entries of activity held in memory between two successful flushes.
pub const MAX_ACTIVITY_ENTRIES: usize = 10_000;

/// Upper bounds of the duration histograms, in seconds: 1 ms to 10 s.
const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The label value recorded for anything outside a vocabulary.
const OTHER: &str = "other";

/// Outcomes of calls to the provider's token and JWKS endpoints: `ok`, or the kind of
/// `ProviderError` (`error` for answers outside the protocol).
pub const PROVIDER_OUTCOMES: &[&str] = &[
    "ok",
    "invalid_grant",
    "invalid_client",
    "invalid_request",
    "rate_limited",
    "unavailable",
    "error",
];

/// Outcomes of an ID-token verification: `ok`, or why it failed.
pub const VERIFY_OUTCOMES: &[&str] = &[
    "ok",
    "malformed",
    "unsupported_algorithm",
    "unknown_key",
    "bad_signature",
    "wrong_issuer",
    "wrong_audience",
    "unauthorized_party",
    "expired",
    "issued_in_future",
    "lifetime_too_long",
    "missing_subject",
    "keys_unavailable",
];

/// Outcomes of a sign-in: `ok`, or the error code of the HTTP contract it was answered with.
pub const SIGN_IN_OUTCOMES: &[&str] = &[
    "ok",
    "invalid_request",
    "code_rejected",
    "id_token_invalid",
    "forbidden",
    "rate_limited",
    "upstream_error",
    "upstream_unavailable",
    "internal_error",
];

/// Platforms a sign-in comes from.
pub const PLATFORMS: &[&str] = &["web", "android", "ios"];

/// Classes of a proxied call's answer: the upstream status class, or `error` when no
/// upstream answer was passed on (no token could be had, the API could not be reached).
pub const STATUS_CLASSES: &[&str] = &["1xx", "2xx", "3xx", "4xx", "5xx", "error"];

/// Something an operator must act on, which grantkeeper can only infer from how the provider
/// answered. Counted in `grantkeeper_warnings{kind}` and in the activity series
/// [`Warning::series`], so that the admin console shows them across every instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Warning {
    /// A refresh token died about 7 days after it was issued: the OAuth consent screen is
    /// in the Testing publishing status, whose refresh tokens live 7 days.
    TestingExpiry,
    /// A refresh token died well before any expiry: revoked at Google (the user removed the
    /// app's access or changed a password, or an administrator acted), or pushed out by more
    /// than 100 refresh tokens issued for the user and the client (the oldest die silently).
    /// Google answers both alike, so which it was is not known.
    TokenDiedEarly,
    /// The provider refused grantkeeper's client credentials: the client secret was reset or
    /// the client deleted.
    InvalidClient,
}

impl Warning {
    /// Every warning, in the order the console lists them.
    pub const ALL: [Warning; 3] = [
        Warning::TestingExpiry,
        Warning::TokenDiedEarly,
        Warning::InvalidClient,
    ];

    /// The `kind` label value.
    pub fn kind(self) -> &'static str {
        match self {
            Warning::TestingExpiry => "testing_expiry",
            Warning::TokenDiedEarly => "token_died_early",
            Warning::InvalidClient => "invalid_client",
        }
    }

    /// The activity series it is counted in.
    pub fn series(self) -> &'static str {
        match self {
            Warning::TestingExpiry => series::WARNING_TESTING_EXPIRY,
            Warning::TokenDiedEarly => series::WARNING_TOKEN_DIED_EARLY,
            Warning::InvalidClient => series::WARNING_INVALID_CLIENT,
        }
    }

    /// A short title for people.
    pub fn title(self) -> &'static str {
        match self {
            Warning::TestingExpiry => "Refresh tokens expiring after 7 days",
            Warning::TokenDiedEarly => "Refresh tokens revoked or dying early",
            Warning::InvalidClient => "Client credentials rejected",
        }
    }

    /// The likeliest cause, in a few words (a grant's reason quotes it). Where Google's answer
    /// leaves the cause unknown, the likeliest comes first.
    pub fn likely_cause(self) -> &'static str {
        match self {
            Warning::TestingExpiry => "the 7-day expiry of apps in the Testing publishing status",
            Warning::TokenDiedEarly => {
                "revoked at Google (by the user, a password change or an administrator), or \
                 pushed out by more than 100 refresh tokens issued for this user and client"
            }
            Warning::InvalidClient => "grantkeeper's client credentials were refused",
        }
    }

    /// What the operator should check or do, in one or two sentences.
    pub fn advice(self) -> &'static str {
        match self {
            Warning::TestingExpiry => {
                "Google expires refresh tokens 7 days after consent while the OAuth consent \
                screen is in the Testing publishing status. Publish the app (In production) in \
                the Google Cloud console; affected users must sign in again."
            }
            Warning::TokenDiedEarly => {
                "Google answers alike for a revoked refresh token and one that died: most often \
                the user removed the app's access or changed a password, and must sign in again. \
                When many die, suspect the cap: Google keeps at most 100 refresh tokens per user \
                and OAuth client and silently invalidates the oldest, so do not force \
                prompt=consent on every sign-in, and do not let other systems exchange codes for \
                this client."
            }
            Warning::InvalidClient => {
                "Google rejected grantkeeper's client id or secret (invalid_client): the secret \
                was reset or the client deleted. Update provider.client_secret (or the \
                client_secret.json) and restart; grants are left untouched meanwhile."
            }
        }
    }
}

/// Kind label values of `grantkeeper_warnings`.
const WARNING_KINDS: &[&str] = &["testing_expiry", "token_died_early", "invalid_client"];

/// The names of the activity series, as the store keeps them.
pub mod series {
    /// A sign-in that was verified and recorded.
    pub const SIGN_IN: &str = "sign_in";
    /// A sign-in that failed (code refused, ID token invalid, upstream or store failure).
    pub const SIGN_IN_FAILED: &str = "sign_in_failed";
    /// An access token handed out to an app service.
    pub const TOKEN: &str = "token";
    /// A refresh at the token endpoint that succeeded (timed).
    pub const REFRESH: &str = "refresh";
    /// A refresh at the token endpoint that failed (timed).
    pub const REFRESH_FAILED: &str = "refresh_failed";
    /// A call proxied to the Google API (timed).
    pub const PROXY: &str = "proxy";
    /// [`Warning::TestingExpiry`](super::Warning::TestingExpiry) (not timed).
    pub const WARNING_TESTING_EXPIRY: &str = "warning_testing_expiry";
    /// [`Warning::TokenDiedEarly`](super::Warning::TokenDiedEarly) (not timed).
    pub const WARNING_TOKEN_DIED_EARLY: &str = "warning_token_died_early";
    /// [`Warning::InvalidClient`](super::Warning::InvalidClient) (not timed).
    pub const WARNING_INVALID_CLIENT: &str = "warning_invalid_client";
    /// Every series of activity charts, in the order a chart lists them (warnings apart).
    pub const ALL: [&str; 6] = [
        SIGN_IN,
        SIGN_IN_FAILED,
        TOKEN,
        REFRESH,
        REFRESH_FAILED,
        PROXY,
    ];
}

/// What one instance counted of one series during one minute, since the last drain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivityDelta {
    /// Start of the minute (UTC, a whole minute).
    pub minute: OffsetDateTime,
    /// One of the [`series`] constants.
    pub series: &'static str,
    pub count: u64,
    /// Sum and largest of the durations, in milliseconds (0 for series that are not timed).
    pub total_ms: u64,
    pub max_ms: u64,
}

type OneLabel = [(&'static str, &'static str); 1];
type TwoLabels = [(&'static str, &'static str); 2];
type HistogramFamily = Family<OneLabel, Histogram, fn() -> Histogram>;

/// The process's metrics. Cheap to clone: clones record into the same registry and activity.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    clock: SharedClock,
    registry: Registry,
    sign_ins: Family<TwoLabels, Counter>,
    exchanges: Family<OneLabel, Counter>,
    refreshes: Family<OneLabel, Counter>,
    verifications: Family<OneLabel, Counter>,
    exchange_duration: Histogram,
    refresh_duration: Histogram,
    verify_duration: Histogram,
    proxy_duration: HistogramFamily,
    handouts: Counter,
    cache_hits: Counter,
    cache_misses: Counter,
    jwks_fetches: Family<OneLabel, Counter>,
    warnings: Family<OneLabel, Counter>,
    activity_dropped: Counter,
    pending_revocations: Gauge,
    activity: Mutex<Activity>,
}

/// Count, total and largest duration (ms) of one (minute, series).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Tally {
    count: u64,
    total_ms: u64,
    max_ms: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.count = self.count.saturating_add(other.count);
        self.total_ms = self.total_ms.saturating_add(other.total_ms);
        self.max_ms = self.max_ms.max(other.max_ms);
    }
}

/// (minute in Unix seconds, series) -> tally.
#[derive(Default)]
struct Activity {
    points: HashMap<(i64, &'static str), Tally, foldhash::fast::RandomState>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("enabled", &self.inner.is_some())
            .finish()
    }
}

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// `value` when it is one of `allowed`, else `other`: label values never come from outside.
fn label(value: &str, allowed: &[&'static str]) -> &'static str {
    allowed
        .iter()
        .find(|a| **a == value)
        .copied()
        .unwrap_or(OTHER)
}

fn millis(took: Duration) -> u64 {
    u64::try_from(took.as_millis()).unwrap_or(u64::MAX)
}

/// The start of the minute holding `at`, in Unix seconds.
fn minute_of(at: OffsetDateTime) -> i64 {
    minute_of_unix(at.unix_timestamp())
}

/// The minute (its first second since the epoch) that holds `secs`.
fn minute_of_unix(secs: i64) -> i64 {
    secs - secs.rem_euclid(60)
}

impl Inner {
    /// Every family, registered in the order the exposition lists them.
    fn register(clock: SharedClock, mut registry: Registry) -> Inner {
        let r = &mut registry;
        Inner {
            clock,
            sign_ins: register(
                r,
                "sign_ins",
                "Sign-ins by outcome (ok or the error code answered) and platform",
            ),
            exchanges: register(
                r,
                "code_exchanges",
                "Authorization codes exchanged at the token endpoint, by outcome",
            ),
            refreshes: register(
                r,
                "refreshes",
                "Refreshes at the token endpoint, by outcome",
            ),
            verifications: register(
                r,
                "id_token_verifications",
                "ID tokens verified, by outcome",
            ),
            exchange_duration: register_seconds(
                r,
                "exchange_duration",
                "Time of a code exchange at the token endpoint",
                histogram(),
            ),
            refresh_duration: register_seconds(
                r,
                "refresh_duration",
                "Time of a refresh at the token endpoint",
                histogram(),
            ),
            verify_duration: register_seconds(
                r,
                "id_token_verify_duration",
                "Time of an ID-token verification, a JWKS fetch it waited for included",
                histogram(),
            ),
            proxy_duration: register_seconds(
                r,
                "proxy_duration",
                "Time of a proxied Google API call until its answer's headers, by status class",
                Family::new_with_constructor(histogram as fn() -> Histogram),
            ),
            handouts: register(
                r,
                "token_handouts",
                "Access tokens handed out to app services",
            ),
            cache_hits: register(
                r,
                "token_cache_hits",
                "Access-token demands answered from the in-memory cache",
            ),
            cache_misses: register(
                r,
                "token_cache_misses",
                "Access-token demands the in-memory cache could not answer",
            ),
            jwks_fetches: register(
                r,
                "jwks_fetches",
                "Fetches of the provider's signing keys, by outcome",
            ),
            warnings: register(
                r,
                "warnings",
                "Problems an operator must act on, inferred from the provider's answers, by kind \
                 (testing_expiry, token_died_early, invalid_client)",
            ),
            activity_dropped: register(
                r,
                "activity_dropped",
                "Activity points dropped because the store refused them for too long",
            ),
            pending_revocations: register(
                r,
                "pending_revocations",
                "Revocations at the provider queued for a retry (the store's queue, as last read)",
            ),
            registry,
            activity: Mutex::new(Activity::default()),
        }
    }
}

/// Registers a metric that starts empty (a counter, a gauge, a family) and returns it.
fn register<M: Metric + Clone + Default>(registry: &mut Registry, name: &str, help: &str) -> M {
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

/// Registers a metric measured in seconds and returns it.
fn register_seconds<M: Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register_with_unit(name, help, Unit::Seconds, metric.clone());
    metric
}

impl Metrics {
    /// A registry with every family, recording activity by `clock`'s minutes.
    pub fn new(clock: SharedClock) -> Metrics {
        let inner = Inner::register(clock, Registry::with_prefix(PREFIX));
        // Every kind is exported from the start, at 0, so that an alert on its increase needs
        // no first occurrence.
        for kind in WARNING_KINDS {
            drop(inner.warnings.get_or_create(&[("kind", *kind)]));
        }
        Metrics {
            inner: Some(Arc::new(inner)),
        }
    }

    /// A handle that records nothing and renders nothing (also [`Metrics::default`]).
    pub fn disabled() -> Metrics {
        Metrics { inner: None }
    }

    /// False for [`Metrics::disabled`].
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// A sign-in finished: `outcome` is `ok` or the error code answered (see
    /// [`SIGN_IN_OUTCOMES`]), `platform` one of [`PLATFORMS`].
    pub fn sign_in(&self, outcome: &str, platform: &str) {
        let Some(m) = &self.inner else { return };
        let outcome = label(outcome, SIGN_IN_OUTCOMES);
        m.sign_ins
            .get_or_create(&[
                ("outcome", outcome),
                ("platform", label(platform, PLATFORMS)),
            ])
            .inc();
        let series = if outcome == "ok" {
            series::SIGN_IN
        } else {
            series::SIGN_IN_FAILED
        };
        m.record(series, None);
    }

    /// A code exchange at the token endpoint ended ([`PROVIDER_OUTCOMES`]) after `took`.
    pub fn exchange(&self, outcome: &str, took: Duration) {
        let Some(m) = &self.inner else { return };
        m.exchanges
            .get_or_create(&[("outcome", label(outcome, PROVIDER_OUTCOMES))])
            .inc();
        m.exchange_duration.observe(took.as_secs_f64());
    }

    /// A refresh at the token endpoint ended ([`PROVIDER_OUTCOMES`]) after `took`.
    pub fn refresh(&self, outcome: &str, took: Duration) {
        let Some(m) = &self.inner else { return };
        let outcome = label(outcome, PROVIDER_OUTCOMES);
        m.refreshes.get_or_create(&[("outcome", outcome)]).inc();
        m.refresh_duration.observe(took.as_secs_f64());
        let series = if outcome == "ok" {
            series::REFRESH
        } else {
            series::REFRESH_FAILED
        };
        m.record(series, Some(took));
    }

    /// An ID-token verification ended ([`VERIFY_OUTCOMES`]) after `took`.
    pub fn verify(&self, outcome: &str, took: Duration) {
        let Some(m) = &self.inner else { return };
        m.verifications
            .get_or_create(&[("outcome", label(outcome, VERIFY_OUTCOMES))])
            .inc();
        m.verify_duration.observe(took.as_secs_f64());
    }

    /// A proxied API call was answered ([`STATUS_CLASSES`]) after `took`.
    pub fn proxy(&self, status_class: &str, took: Duration) {
        let Some(m) = &self.inner else { return };
        m.proxy_duration
            .get_or_create(&[("status_class", label(status_class, STATUS_CLASSES))])
            .observe(took.as_secs_f64());
        m.record(series::PROXY, Some(took));
    }

    /// The status class of an HTTP status code, as [`Metrics::proxy`] takes it.
    pub fn status_class(status: u16) -> &'static str {
        match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            500..=599 => "5xx",
            _ => "error",
        }
    }

    /// An access token was handed out to an app service.
    pub fn token_handout(&self) {
        let Some(m) = &self.inner else { return };
        m.handouts.inc();
        m.record(series::TOKEN, None);
    }

    /// An access-token demand was (`hit`) or was not answered from the in-memory cache.
    pub fn cache(&self, hit: bool) {
        let Some(m) = &self.inner else { return };
        if hit {
            m.cache_hits.inc();
        } else {
            m.cache_misses.inc();
        }
    }

    /// A fetch of the provider's JWKS ended ([`PROVIDER_OUTCOMES`]).
    pub fn jwks_fetch(&self, outcome: &str) {
        let Some(m) = &self.inner else { return };
        m.jwks_fetches
            .get_or_create(&[("outcome", label(outcome, PROVIDER_OUTCOMES))])
            .inc();
    }

    /// grantkeeper inferred `warning` from a provider's answer (the caller logs it with the
    /// details; this only counts).
    pub fn warning(&self, warning: Warning) {
        let Some(m) = &self.inner else { return };
        m.warnings
            .get_or_create(&[("kind", label(warning.kind(), WARNING_KINDS))])
            .inc();
        m.record(warning.series(), None);
    }

    /// How many times `warning` was counted by this process.
    pub fn warning_count(&self, warning: Warning) -> u64 {
        self.inner.as_ref().map_or(0, |m| {
            m.warnings
                .get_or_create(&[("kind", label(warning.kind(), WARNING_KINDS))])
                .get()
        })
    }

    /// The revocation queue holds `count` entries (the retry task reads it from the store,
    /// which every instance shares, so each instance reports the same number).
    pub fn pending_revocations(&self, count: u64) {
        let Some(m) = &self.inner else { return };
        m.pending_revocations
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Everything, as OpenMetrics text ([`CONTENT_TYPE`]). `grants_by_state` fills the
    /// `grantkeeper_grants{state}` gauge (read from the store at scrape time); the cache hit
    /// ratio is computed now (0 before the first demand). Empty when disabled.
    pub fn encode(&self, grants_by_state: &[(&str, u64)]) -> String {
        let Some(m) = &self.inner else {
            return String::new();
        };
        // Values of this scrape live in a registry of their own, so that concurrent scrapes
        // never see each other's.
        let mut now = Registry::with_prefix(PREFIX);
        let grants = Family::<OneLabel, Gauge>::default();
        for (state, count) in grants_by_state {
            grants
                .get_or_create(&[("state", label(state, GRANT_STATES))])
                .set(i64::try_from(*count).unwrap_or(i64::MAX));
        }
        now.register("grants", "Grants by state", grants);
        let hits = m.cache_hits.get();
        let lookups = hits.saturating_add(m.cache_misses.get());
        let ratio = Gauge::<f64, AtomicU64>::default();
        if lookups > 0 {
            ratio.set(hits as f64 / lookups as f64);
        }
        now.register_with_unit(
            "token_cache_hit",
            "Share of access-token demands answered from the in-memory cache",
            Unit::Other("ratio".to_owned()),
            ratio,
        );

        let mut text = String::new();
        // Writing into a String cannot fail, and the names are fixed here (the tests encode
        // every family), so there is no error to report.
        let _ = encode_registry(&mut text, &m.registry)
            .and_then(|()| encode_registry(&mut text, &now))
            .and_then(|()| encode_eof(&mut text));
        text
    }

    /// Drains the activity counted since the last drain, ordered by minute then series.
    pub fn take_activity(&self) -> Vec<ActivityDelta> {
        let Some(m) = &self.inner else {
            return Vec::new();
        };
        let drained = std::mem::take(&mut m.activity().points);
        let mut points: Vec<ActivityDelta> = drained
            .into_iter()
            .filter_map(|((minute, series), t)| {
                Some(ActivityDelta {
                    minute: OffsetDateTime::from_unix_timestamp(minute).ok()?,
                    series,
                    count: t.count,
                    total_ms: t.total_ms,
                    max_ms: t.max_ms,
                })
            })
            .collect();
        points.sort_by(|a, b| (a.minute, a.series).cmp(&(b.minute, b.series)));
        points
    }

    /// Gives back points that [`Metrics::take_activity`] drained but could not be written,
    /// adding them to what was counted meanwhile.
    pub fn restore_activity(&self, points: Vec<ActivityDelta>) {
        let Some(m) = &self.inner else { return };
        let mut activity = m.activity();
        for p in points {
            let tally = Tally {
                count: p.count,
                total_ms: p.total_ms,
                max_ms: p.max_ms,
            };
            m.add(&mut activity, minute_of(p.minute), p.series, tally);
        }
    }

    /// How many (minute, series) entries are held in memory.
    pub fn pending_activity(&self) -> usize {
        self.inner.as_ref().map_or(0, |m| m.activity().points.len())
    }
}

/// Label values of `grantkeeper_grants`.
const GRANT_STATES: &[&str] = &["active", "failing", "needs_consent", "revoked"];

impl Inner {
    fn activity(&self) -> MutexGuard<'_, Activity> {
        // Every update is a few plain stores: a panic elsewhere cannot leave it half-written.
        self.activity.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, series: &'static str, took: Option<Duration>) {
        let ms = took.map_or(0, millis);
        let tally = Tally {
            count: 1,
            total_ms: ms,
            max_ms: ms,
        };
        let minute = minute_of_unix(self.clock.unix());
        let mut activity = self.activity();
        self.add(&mut activity, minute, series, tally);
    }

    /// Adds `tally` to its entry; a new entry beyond the cap first drops the oldest minute.
    fn add(&self, activity: &mut Activity, minute: i64, series: &'static str, tally: Tally) {
        let key = (minute, series);
        if !activity.points.contains_key(&key) && activity.points.len() >= MAX_ACTIVITY_ENTRIES {
            let oldest = activity.points.keys().map(|(m, _)| *m).min();
            if let Some(oldest) = oldest {
                let before = activity.points.len();
                activity.points.retain(|(m, _), _| *m != oldest);
                let dropped = before - activity.points.len();
                self.activity_dropped.inc_by(dropped as u64);
            }
        }
        activity.points.entry(key).or_default().add(tally);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    /// A clock set to a few seconds past the start of a minute, and that minute's start.
    fn clock_at_minute_start() -> (Arc<ManualClock>, OffsetDateTime) {
        let clock = ManualClock::new();
        let now = clock.now();
        let into_minute = now.unix_timestamp().rem_euclid(60);
        // To 5 s past the next minute's start: the test has 55 s before the minute turns.
        clock.advance(time::Duration::seconds(65 - into_minute));
        let start = OffsetDateTime::from_unix_timestamp(minute_of(clock.now())).unwrap();
        (clock, start)
    }

    fn delta(
        minute: OffsetDateTime,
        series: &'static str,
        count: u64,
        total: u64,
        max: u64,
    ) -> ActivityDelta {
        ActivityDelta {
            minute,
            series,
            count,
            total_ms: total,
            max_ms: max,
        }
    }

    #[test]
    fn activity_is_bucketed_by_the_clocks_minute_with_sums_and_maxima() {
        let (clock, start) = clock_at_minute_start();
        let metrics = Metrics::new(clock.clone());
        metrics.refresh("ok", Duration::from_millis(120));
        metrics.refresh("ok", Duration::from_millis(80));
        metrics.refresh("invalid_grant", Duration::from_millis(30));
        metrics.proxy("2xx", Duration::from_millis(7));
        metrics.token_handout();
        metrics.token_handout();
        metrics.sign_in("ok", "web");
        metrics.sign_in("code_rejected", "android");
        // Not activity: counted by Prometheus alone.
        metrics.exchange("ok", Duration::from_millis(5));
        metrics.cache(true);

        clock.advance(time::Duration::seconds(60));
        let next = start + time::Duration::minutes(1);
        metrics.token_handout();
        metrics.proxy("5xx", Duration::from_millis(300));

        let points = metrics.take_activity();
        assert_eq!(
            points,
            [
                delta(start, series::PROXY, 1, 7, 7),
                delta(start, series::REFRESH, 2, 200, 120),
                delta(start, series::REFRESH_FAILED, 1, 30, 30),
                delta(start, series::SIGN_IN, 1, 0, 0),
                delta(start, series::SIGN_IN_FAILED, 1, 0, 0),
                delta(start, series::TOKEN, 2, 0, 0),
                delta(next, series::PROXY, 1, 300, 300),
                delta(next, series::TOKEN, 1, 0, 0),
            ]
        );
        // Drained: the next drain starts from nothing.
        assert_eq!(metrics.take_activity(), []);
        assert_eq!(metrics.pending_activity(), 0);
    }

    #[test]
    fn restored_activity_adds_to_what_came_meanwhile() {
        let (clock, start) = clock_at_minute_start();
        let metrics = Metrics::new(clock);
        metrics.refresh("ok", Duration::from_millis(50));
        let failed_write = metrics.take_activity();
        metrics.refresh("ok", Duration::from_millis(20));
        metrics.restore_activity(failed_write);
        assert_eq!(
            metrics.take_activity(),
            [delta(start, series::REFRESH, 2, 70, 50)]
        );
    }

    #[test]
    fn activity_memory_is_bounded_and_drops_the_oldest_minutes_visibly() {
        let (clock, start) = clock_at_minute_start();
        let metrics = Metrics::new(clock);
        let minutes = i64::try_from(MAX_ACTIVITY_ENTRIES).unwrap();
        let old: Vec<ActivityDelta> = (0..minutes)
            .map(|n| {
                delta(
                    start - time::Duration::minutes(minutes - n),
                    series::TOKEN,
                    1,
                    0,
                    0,
                )
            })
            .collect();
        metrics.restore_activity(old);
        assert_eq!(metrics.pending_activity(), MAX_ACTIVITY_ENTRIES);
        metrics.token_handout();
        assert_eq!(metrics.pending_activity(), MAX_ACTIVITY_ENTRIES);
        let text = metrics.encode(&[]);
        assert!(
            text.contains("grantkeeper_activity_dropped_total 1\n"),
            "{text}"
        );
        let points = metrics.take_activity();
        assert_eq!(
            points.first().unwrap().minute,
            start - time::Duration::minutes(minutes - 1)
        );
        assert_eq!(
            points.last().unwrap(),
            &delta(start, series::TOKEN, 1, 0, 0)
        );
    }

    #[test]
    fn encoding_names_every_family_and_keeps_labels_to_their_vocabulary() {
        let (clock, _) = clock_at_minute_start();
        let metrics = Metrics::new(clock);
        metrics.sign_in("ok", "web");
        metrics.sign_in("ok", "web");
        metrics.sign_in("id_token_invalid", "ios");
        // Outside every vocabulary: recorded as "other", never as given.
        metrics.sign_in("user@example.com", "ya29.secret-token");
        metrics.exchange("ok", Duration::from_millis(3));
        metrics.refresh("rate_limited", Duration::from_millis(2));
        metrics.verify("ok", Duration::from_micros(40));
        metrics.proxy("2xx", Duration::from_millis(15));
        metrics.proxy("/drive/v3/files", Duration::from_millis(15));
        metrics.token_handout();
        metrics.cache(true);
        metrics.cache(true);
        metrics.cache(true);
        metrics.cache(false);
        metrics.jwks_fetch("ok");

        let text = metrics.encode(&[("active", 3), ("revoked", 1), ("1234567890", 9)]);
        for line in [
            "grantkeeper_sign_ins_total{outcome=\"ok\",platform=\"web\"} 2",
            "grantkeeper_sign_ins_total{outcome=\"id_token_invalid\",platform=\"ios\"} 1",
            "grantkeeper_sign_ins_total{outcome=\"other\",platform=\"other\"} 1",
            "grantkeeper_code_exchanges_total{outcome=\"ok\"} 1",
            "grantkeeper_refreshes_total{outcome=\"rate_limited\"} 1",
            "grantkeeper_id_token_verifications_total{outcome=\"ok\"} 1",
            "grantkeeper_exchange_duration_seconds_count 1",
            "grantkeeper_refresh_duration_seconds_count 1",
            "grantkeeper_id_token_verify_duration_seconds_count 1",
            "grantkeeper_proxy_duration_seconds_count{status_class=\"2xx\"} 1",
            "grantkeeper_proxy_duration_seconds_count{status_class=\"other\"} 1",
            "grantkeeper_proxy_duration_seconds_bucket{le=\"0.025\",status_class=\"2xx\"} 1",
            "grantkeeper_token_handouts_total 1",
            "grantkeeper_token_cache_hits_total 3",
            "grantkeeper_token_cache_misses_total 1",
            "grantkeeper_token_cache_hit_ratio 0.75",
            "grantkeeper_jwks_fetches_total{outcome=\"ok\"} 1",
            "grantkeeper_grants{state=\"active\"} 3",
            "grantkeeper_grants{state=\"revoked\"} 1",
            "grantkeeper_grants{state=\"other\"} 9",
            "# TYPE grantkeeper_exchange_duration_seconds histogram",
            "# UNIT grantkeeper_exchange_duration_seconds seconds",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        for secret in ["example.com", "ya29", "drive", "1234567890"] {
            assert!(!text.contains(secret), "{secret} leaked into\n{text}");
        }
    }

    #[test]
    fn the_ratio_is_zero_before_any_demand_and_disabled_metrics_record_nothing() {
        let (clock, _) = clock_at_minute_start();
        let metrics = Metrics::new(clock);
        let text = metrics.encode(&[]);
        assert!(
            text.lines()
                .any(|l| l == "grantkeeper_token_cache_hit_ratio 0.0"),
            "{text}"
        );

        let off = Metrics::disabled();
        assert!(!off.is_enabled());
        assert!(!Metrics::default().is_enabled());
        off.sign_in("ok", "web");
        off.token_handout();
        off.refresh("ok", Duration::from_millis(1));
        assert_eq!(off.take_activity(), []);
        assert_eq!(off.encode(&[("active", 1)]), "");
    }

    #[test]
    fn the_revocation_queue_is_a_gauge_of_its_last_reading() {
        let (clock, _) = clock_at_minute_start();
        let metrics = Metrics::new(clock);
        let text = metrics.encode(&[]);
        assert!(
            text.lines()
                .any(|l| l == "grantkeeper_pending_revocations 0"),
            "{text}"
        );
        metrics.pending_revocations(3);
        metrics.pending_revocations(2);
        let text = metrics.encode(&[]);
        assert!(
            text.lines()
                .any(|l| l == "grantkeeper_pending_revocations 2"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l == "# TYPE grantkeeper_pending_revocations gauge"),
            "{text}"
        );
        Metrics::disabled().pending_revocations(1);
    }

    #[test]
    fn status_classes() {
        assert_eq!(Metrics::status_class(200), "2xx");
        assert_eq!(Metrics::status_class(304), "3xx");
        assert_eq!(Metrics::status_class(404), "4xx");
        assert_eq!(Metrics::status_class(503), "5xx");
        assert_eq!(Metrics::status_class(99), "error");
    }

    #[test]
    fn warnings_are_counted_by_kind_and_as_activity() {
        let (clock, start) = clock_at_minute_start();
        let metrics = Metrics::new(clock);
        metrics.warning(Warning::TestingExpiry);
        metrics.warning(Warning::TestingExpiry);
        metrics.warning(Warning::InvalidClient);
        assert_eq!(metrics.warning_count(Warning::TestingExpiry), 2);
        assert_eq!(metrics.warning_count(Warning::TokenDiedEarly), 0);
        assert_eq!(metrics.warning_count(Warning::InvalidClient), 1);
        let page = metrics.encode(&[]);
        assert!(
            page.contains("grantkeeper_warnings_total{kind=\"testing_expiry\"} 2\n"),
            "{page}"
        );
        // Never seen, still exported.
        assert!(
            page.contains("grantkeeper_warnings_total{kind=\"token_died_early\"} 0\n"),
            "{page}"
        );
        assert!(
            page.contains("grantkeeper_warnings_total{kind=\"invalid_client\"} 1\n"),
            "{page}"
        );
        assert_eq!(
            metrics.take_activity(),
            [
                delta(start, series::WARNING_INVALID_CLIENT, 1, 0, 0),
                delta(start, series::WARNING_TESTING_EXPIRY, 2, 0, 0),
            ]
        );
        // Kinds and series are distinct, and every kind is a label value.
        for w in Warning::ALL {
            assert!(WARNING_KINDS.contains(&w.kind()));
            assert!(w.series().ends_with(w.kind()));
            assert!(!w.advice().is_empty() && !w.title().is_empty());
            // Shown in logs and the console as one line of prose.
            assert!(!w.advice().contains("  ") && !w.advice().contains('\n'));
            assert!(!w.likely_cause().is_empty());
        }
        assert!(Metrics::disabled().warning_count(Warning::InvalidClient) == 0);
    }
}
