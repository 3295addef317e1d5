//! `GET /metrics` and the per-minute activity written to the store: what happened is counted
//! with the right labels, nobody is named, and the activity reaches the store (and survives a
//! store that refuses it for a while).

use super::harness::TestApp;
use grantkeeper_core::metrics::{CONTENT_TYPE, series};
use grantkeeper_core::{Metrics, SystemClock};
use grantkeeper_server::apikeys::KeyScope::{Proxy, Token};
use grantkeeper_server::metrics::{ActivityFlusher, KEEP_ACTIVITY};
use grantkeeper_store::{ActivityPoint, SharedStore};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;
use time::OffsetDateTime;

/// The value of the sample named exactly `sample` (name and labels), if the page has it.
fn sample(page: &str, sample: &str) -> Option<f64> {
    page.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == sample).then(|| value.parse().unwrap())
    })
}

#[track_caller]
fn assert_sample(page: &str, name: &str, expected: f64) {
    assert_eq!(sample(page, name), Some(expected), "{name} in\n{page}");
}

/// Sums a series over every minute of `points`: (count, total_ms, max_ms).
fn by_series(points: &[ActivityPoint]) -> BTreeMap<String, (u64, u64, u64)> {
    let mut sums = BTreeMap::new();
    for p in points {
        let s: &mut (u64, u64, u64) = sums.entry(p.series.clone()).or_default();
        s.0 += p.count;
        s.1 += p.total_ms;
        s.2 = s.2.max(p.max_ms);
    }
    sums
}

async fn stored_activity(store: &SharedStore, now: OffsetDateTime) -> Vec<ActivityPoint> {
    store
        .activity(
            now - time::Duration::hours(1),
            now + time::Duration::hours(1),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn metrics_count_sign_ins_hand_outs_refreshes_and_proxied_calls_naming_nobody() {
    let t = TestApp::start().await;
    let sub = t.signed_in("metrics@example.com").await;
    // A code Google refuses.
    t.authcode_web("4/not-a-code-anyone-issued")
        .await
        .assert_error(400, "code_rejected");
    // An Android sign-in without offline access: a grant that needs consent.
    let online = t.sign_in_online("online@example.com").await;
    assert_eq!(online.status, 200, "{}", online.text);
    let online_sub = online.body["user"]["sub"].as_str().unwrap().to_owned();
    // A user whose grant Google then revokes.
    let gone = t.signed_in("revoked@example.com").await;

    let key = t.api_key(&[Token, Proxy]).await;
    let token = format!("/v1/users/{sub}/token");
    // The token the sign-in brought (a cache miss, answered from the store), then the same
    // from the cache, then a refresh forced by asking for more life than it has left.
    for body in [None, None, Some(json!({"min_ttl": 3600}))] {
        let a = t.v1("POST", &token, Some(&key), body).await;
        assert_eq!(a.status, 200, "{}", a.text);
    }
    assert_eq!(t.stats().await["refreshes"], 1);
    // A proxied call, with the refreshed token from the cache.
    let r = t
        .http
        .get(format!(
            "{}/v1/users/{sub}/google/drive/v3/files?spaces=appDataFolder",
            t.url
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A refresh refused with invalid_grant.
    let revoked = t
        .emulator_call("POST", "users/revoked@example.com/revoke", None)
        .await;
    assert!(revoked.status < 300, "{}", revoked.text);
    t.v1(
        "POST",
        &format!("/v1/users/{gone}/token"),
        Some(&key),
        Some(json!({"min_ttl": 3600})),
    )
    .await
    .assert_error(409, "grant_revoked");

    // No credentials needed, as for /healthz.
    let a = t.get("/metrics", None).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.headers["content-type"], CONTENT_TYPE);
    let page = a.text.as_str();
    assert!(page.ends_with("# EOF\n"), "{page}");

    assert_sample(
        page,
        "grantkeeper_sign_ins_total{outcome=\"ok\",platform=\"web\"}",
        2.0,
    );
    assert_sample(
        page,
        "grantkeeper_sign_ins_total{outcome=\"ok\",platform=\"android\"}",
        1.0,
    );
    assert_sample(
        page,
        "grantkeeper_sign_ins_total{outcome=\"code_rejected\",platform=\"web\"}",
        1.0,
    );
    assert_sample(
        page,
        "grantkeeper_code_exchanges_total{outcome=\"ok\"}",
        3.0,
    );
    assert_sample(
        page,
        "grantkeeper_code_exchanges_total{outcome=\"invalid_grant\"}",
        1.0,
    );
    assert_sample(page, "grantkeeper_exchange_duration_seconds_count", 4.0);
    assert_sample(
        page,
        "grantkeeper_id_token_verifications_total{outcome=\"ok\"}",
        3.0,
    );
    assert_sample(
        page,
        "grantkeeper_id_token_verify_duration_seconds_count",
        3.0,
    );
    assert!(
        sample(page, "grantkeeper_jwks_fetches_total{outcome=\"ok\"}").is_some_and(|n| n >= 1.0),
        "{page}"
    );
    assert_sample(page, "grantkeeper_refreshes_total{outcome=\"ok\"}", 1.0);
    assert_sample(
        page,
        "grantkeeper_refreshes_total{outcome=\"invalid_grant\"}",
        1.0,
    );
    assert_sample(page, "grantkeeper_refresh_duration_seconds_count", 2.0);
    // Refused hand-outs are not hand-outs.
    assert_sample(page, "grantkeeper_token_handouts_total", 3.0);
    // Hits: the second hand-out and the proxied call. Misses: the first hand-out, the forced
    // refresh and the revoked user's demand.
    assert_sample(page, "grantkeeper_token_cache_hits_total", 2.0);
    assert_sample(page, "grantkeeper_token_cache_misses_total", 3.0);
    assert_sample(page, "grantkeeper_token_cache_hit_ratio", 0.4);
    assert_sample(
        page,
        "grantkeeper_proxy_duration_seconds_count{status_class=\"2xx\"}",
        1.0,
    );
    assert_sample(
        page,
        "grantkeeper_proxy_duration_seconds_bucket{le=\"+Inf\",status_class=\"2xx\"}",
        1.0,
    );
    assert_sample(page, "grantkeeper_grants{state=\"active\"}", 1.0);
    assert_sample(page, "grantkeeper_grants{state=\"failing\"}", 0.0);
    assert_sample(page, "grantkeeper_grants{state=\"needs_consent\"}", 1.0);
    assert_sample(page, "grantkeeper_grants{state=\"revoked\"}", 1.0);

    // Nobody is named: no sub, email, token, key or path.
    let mut secrets = vec![
        sub.clone(),
        online_sub,
        gone.clone(),
        key.clone(),
        "example.com".to_owned(),
        "drive".to_owned(),
        "appDataFolder".to_owned(),
    ];
    for email in [
        "metrics@example.com",
        "online@example.com",
        "revoked@example.com",
    ] {
        secrets.extend(t.issued_tokens(email).await);
    }
    for secret in &secrets {
        assert!(!page.contains(secret.as_str()), "{secret} is on the page");
    }

    // The activity reaches the store when flushed, and is not written twice.
    let written = t.app.flush_activity().await.unwrap();
    assert!(written >= 6, "{written} points");
    assert_eq!(t.app.flush_activity().await.unwrap(), 0);
    let now = t.app.clock().now();
    let points = stored_activity(t.app.store(), now).await;
    for p in &points {
        assert_eq!(p.minute.unix_timestamp() % 60, 0, "{p:?}");
        assert!(p.max_ms <= p.total_ms, "{p:?}");
    }
    let sums = by_series(&points);
    let counts: BTreeMap<&str, u64> = sums.iter().map(|(s, v)| (s.as_str(), v.0)).collect();
    assert_eq!(
        counts,
        BTreeMap::from([
            (series::SIGN_IN, 3),
            (series::SIGN_IN_FAILED, 1),
            (series::TOKEN, 3),
            (series::REFRESH, 1),
            (series::REFRESH_FAILED, 1),
            (series::PROXY, 1),
            // The revoked user's refresh token died minutes old.
            (series::WARNING_TOKEN_DIED_EARLY, 1),
        ]),
        "{points:?}"
    );
    // Untimed series carry no durations.
    assert_eq!(sums[series::TOKEN], (3, 0, 0));
    assert_eq!(sums[series::SIGN_IN], (3, 0, 0));
}

/// A store that refuses the activity for a while loses none of it; old activity is pruned.
#[tokio::test]
async fn activity_a_store_refused_is_written_by_a_later_flush_and_old_activity_is_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("gk.db").display());
    let store = grantkeeper_store::open(&url).await.unwrap();
    let clock = SystemClock::shared();
    let metrics = Metrics::new(clock.clone());
    let flusher = ActivityFlusher::new(store.clone(), metrics.clone(), clock.clone());

    metrics.token_handout();
    metrics.refresh("ok", Duration::from_millis(40));
    let raw = rusqlite::Connection::open(dir.path().join("gk.db")).unwrap();
    raw.busy_timeout(Duration::from_secs(5)).unwrap();
    raw.execute_batch("ALTER TABLE activity RENAME TO activity_away")
        .unwrap();
    assert!(flusher.flush().await.is_err());
    assert!(metrics.pending_activity() >= 2);
    // Counted while the store refused: added to what was kept.
    metrics.token_handout();
    raw.execute_batch("ALTER TABLE activity_away RENAME TO activity")
        .unwrap();
    assert!(flusher.flush().await.unwrap() >= 2);
    assert_eq!(metrics.pending_activity(), 0);
    let now = clock.now();
    let sums = by_series(&stored_activity(&store, now).await);
    assert_eq!(sums[series::TOKEN], (2, 0, 0));
    assert_eq!(sums[series::REFRESH], (1, 40, 40));

    // Older than the keeping time: pruned; younger: kept.
    let old = |age: Duration, series: &str| ActivityPoint {
        minute: now - age,
        series: series.to_owned(),
        count: 1,
        total_ms: 0,
        max_ms: 0,
    };
    let day = Duration::from_secs(86_400);
    store
        .add_activity(vec![
            old(KEEP_ACTIVITY + day, series::PROXY),
            old(KEEP_ACTIVITY - day, series::SIGN_IN),
        ])
        .await
        .unwrap();
    assert_eq!(flusher.prune().await.unwrap(), 1);
    let kept = store
        .activity(now - KEEP_ACTIVITY - day * 2, now + day)
        .await
        .unwrap();
    assert!(kept.iter().all(|p| p.series != series::PROXY), "{kept:?}");
    assert!(kept.iter().any(|p| p.series == series::SIGN_IN), "{kept:?}");
    drop(raw);
}
