//! What a provider given metrics counts: code exchanges and ID-token verifications by outcome
//! with their time, and JWKS fetches.

use super::support::Env;
use grantkeeper_core::Metrics;

fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines().find_map(|line| {
        let (sample, value) = line.rsplit_once(' ')?;
        (sample == name).then(|| value.parse().unwrap())
    })
}

#[tokio::test]
async fn exchanges_verifications_and_key_fetches_are_counted() {
    let env = Env::start().await;
    let metrics = Metrics::new(env.clock.clone());
    let provider = env.provider().with_metrics(metrics.clone());
    // A provider without metrics, sharing nothing with it, counts nowhere.
    let plain = env.provider();

    let code = env.web_code("counted@example.com").await;
    let tokens = provider.exchange_code(&code, "postmessage").await.unwrap();
    // Single use: the second exchange is refused.
    provider
        .exchange_code(&code, "postmessage")
        .await
        .unwrap_err();
    let id_token = tokens.id_token.unwrap();
    provider.verify_id_token(&id_token).await.unwrap();
    plain.verify_id_token(&id_token).await.unwrap();
    // Two hours on, the same ID token has expired.
    env.advance(7200);
    provider.verify_id_token(&id_token).await.unwrap_err();

    let page = metrics.encode(&[]);
    for (name, expected) in [
        ("grantkeeper_code_exchanges_total{outcome=\"ok\"}", 1.0),
        (
            "grantkeeper_code_exchanges_total{outcome=\"invalid_grant\"}",
            1.0,
        ),
        ("grantkeeper_exchange_duration_seconds_count", 2.0),
        (
            "grantkeeper_id_token_verifications_total{outcome=\"ok\"}",
            1.0,
        ),
        (
            "grantkeeper_id_token_verifications_total{outcome=\"expired\"}",
            1.0,
        ),
        ("grantkeeper_id_token_verify_duration_seconds_count", 2.0),
    ] {
        assert_eq!(sample(&page, name), Some(expected), "{name} in\n{page}");
    }
    // The first verification fetched the keys; two hours on they were stale and fetched again.
    assert_eq!(
        sample(&page, "grantkeeper_jwks_fetches_total{outcome=\"ok\"}"),
        Some(provider.key_store_stats().fetches as f64),
        "{page}"
    );
    assert!(!page.contains("counted@example.com"));
    // Exchanges are not activity; refreshes (the broker's) and sign-ins (the server's) are.
    assert_eq!(metrics.take_activity(), []);
}
