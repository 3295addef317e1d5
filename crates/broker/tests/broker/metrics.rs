//! What the broker counts when given metrics: refreshes by outcome with their time (and as
//! activity), and whether the in-memory cache answered a demand.

use super::harness::Env;
use grantkeeper_broker::{BrokerError, BrokerSettings, TokenRequest};
use grantkeeper_core::Metrics;
use grantkeeper_core::metrics::series;
use serde_json::json;

fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines().find_map(|line| {
        let (sample, value) = line.rsplit_once(' ')?;
        (sample == name).then(|| value.parse().unwrap())
    })
}

#[tokio::test]
async fn refreshes_are_counted_by_outcome_and_demands_by_cache_hit() {
    let env = Env::start().await;
    let sub = env.sign_in("counted@example.com").await;
    let dead = env.sign_in("dead@example.com").await;
    let metrics = Metrics::new(env.shared_clock());
    let broker = env.broker_with(BrokerSettings {
        metrics: metrics.clone(),
        ..BrokerSettings::default()
    });
    let any = TokenRequest::default();

    // From the store (a miss), then from the cache (a hit).
    broker.access_token(&sub, &any).await.unwrap();
    broker.access_token(&sub, &any).await.unwrap();
    // The held token has expired: a miss, and a refresh that succeeds.
    env.advance(3700);
    broker.access_token(&sub, &any).await.unwrap();
    assert_eq!(env.refreshes().await, 1);
    // A refresh the provider answers with 503.
    env.faults(json!({"token": {"status": 503}})).await;
    let err = broker.refresh_now(&sub).await.unwrap_err();
    assert!(matches!(err, BrokerError::Unavailable { .. }), "{err:?}");
    env.faults(json!({})).await;
    // A refresh of a grant Google revoked.
    env.revoke_at_google("dead@example.com").await;
    let err = broker.refresh_now(&dead).await.unwrap_err();
    assert!(matches!(err, BrokerError::Revoked { .. }), "{err:?}");

    let page = metrics.encode(&[]);
    for (name, expected) in [
        ("grantkeeper_refreshes_total{outcome=\"ok\"}", 1.0),
        ("grantkeeper_refreshes_total{outcome=\"unavailable\"}", 1.0),
        (
            "grantkeeper_refreshes_total{outcome=\"invalid_grant\"}",
            1.0,
        ),
        ("grantkeeper_refresh_duration_seconds_count", 3.0),
        ("grantkeeper_token_cache_hits_total", 1.0),
        ("grantkeeper_token_cache_misses_total", 2.0),
    ] {
        assert_eq!(sample(&page, name), Some(expected), "{name} in\n{page}");
    }
    for who in [&sub, &dead] {
        assert!(!page.contains(who.as_str()), "{who} is on the page");
    }

    let activity = metrics.take_activity();
    let count = |s: &str| -> u64 {
        activity
            .iter()
            .filter(|p| p.series == s)
            .map(|p| p.count)
            .sum()
    };
    assert_eq!(count(series::REFRESH), 1);
    assert_eq!(count(series::REFRESH_FAILED), 2);
    assert_eq!(
        count(series::TOKEN),
        0,
        "hand-outs are the server's to count"
    );
}
