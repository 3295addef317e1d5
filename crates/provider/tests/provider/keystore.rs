//! The JWKS cache: rotation, the unknown-kid cooldown, max-age, outages, one fetch at a time.

use super::support::Env;
use grantkeeper_provider::IdTokenError;
use serde_json::json;

#[tokio::test]
async fn a_rotated_key_is_picked_up_at_once() {
    let env = Env::start().await;
    let provider = env.provider();
    let before = env.id_token(&provider, "rot@example.com").await;
    provider.verify_id_token(&before).await.unwrap();
    assert_eq!(provider.key_store_stats().fetches, 1);

    // Within the cooldown of the initial fetch: that fetch does not count against it.
    env.rotate_keys().await;
    let after = env.id_token(&provider, "rot@example.com").await;
    provider.verify_id_token(&after).await.unwrap();
    assert_eq!(provider.key_store_stats().fetches, 2);
    // The old key stays published, so older tokens still verify, without another fetch.
    provider.verify_id_token(&before).await.unwrap();
    assert_eq!(provider.key_store_stats().fetches, 2);
}

#[tokio::test]
async fn unknown_kids_refetch_at_most_once_per_cooldown() {
    let env = Env::start().await;
    let provider = env.provider();
    let good = env.id_token(&provider, "kid@example.com").await;
    provider.verify_id_token(&good).await.unwrap();
    assert_eq!(provider.key_store_stats().fetches, 1);

    env.faults(json!({"id_token": {"tamper": "unknown_kid"}}))
        .await;
    let rogue = env.id_token(&provider, "kid@example.com").await;
    assert_eq!(
        provider.verify_id_token(&rogue).await.unwrap_err(),
        IdTokenError::UnknownKey
    );
    assert_eq!(
        provider.key_store_stats().fetches,
        2,
        "the first unknown kid refetches"
    );
    assert_eq!(
        provider.verify_id_token(&rogue).await.unwrap_err(),
        IdTokenError::UnknownKey
    );
    assert_eq!(
        provider.key_store_stats().fetches,
        2,
        "not again within the cooldown"
    );

    env.advance(61);
    assert_eq!(
        provider.verify_id_token(&rogue).await.unwrap_err(),
        IdTokenError::UnknownKey
    );
    assert_eq!(
        provider.key_store_stats().fetches,
        3,
        "again after the cooldown"
    );
    // Known keys keep verifying meanwhile.
    provider.verify_id_token(&good).await.unwrap();
    assert_eq!(provider.key_store_stats().fetches, 3);
}

#[tokio::test]
async fn max_age_is_honoured() {
    let env = Env::start().await;
    env.emulator_settings(json!({"jwks_max_age_secs": 120}))
        .await;
    let provider = env.provider();
    let id_token = env.id_token(&provider, "age@example.com").await;
    provider.verify_id_token(&id_token).await.unwrap();
    assert_eq!(provider.key_store_stats().fetches, 1);

    env.advance(60);
    provider.verify_id_token(&id_token).await.unwrap();
    assert_eq!(provider.key_store_stats().fetches, 1, "fresh for max-age");

    env.advance(61);
    provider.verify_id_token(&id_token).await.unwrap();
    assert_eq!(
        provider.key_store_stats().fetches,
        2,
        "refetched past max-age"
    );
    provider.verify_id_token(&id_token).await.unwrap();
    assert_eq!(provider.key_store_stats().fetches, 2);
}

#[tokio::test]
async fn a_jwks_outage_is_ridden_out_on_cached_keys() {
    let env = Env::start().await;
    env.emulator_settings(json!({"jwks_max_age_secs": 120}))
        .await;
    let provider = env.provider();
    let id_token = env.id_token(&provider, "outage@example.com").await;
    provider.verify_id_token(&id_token).await.unwrap();

    env.faults(json!({"certs": {"status": 503}})).await;
    env.advance(121);
    let fresh_token = env.id_token(&provider, "outage@example.com").await;
    provider.verify_id_token(&fresh_token).await.unwrap();
    let stats = provider.key_store_stats();
    assert_eq!((stats.fetches, stats.failed_fetches), (2, 1));
    // No new attempt on every sign-in while the outage lasts: the next waits a cooldown.
    provider.verify_id_token(&fresh_token).await.unwrap();
    assert_eq!(provider.key_store_stats().fetches, 2);
    provider.check().await.unwrap();

    env.advance(61);
    let later_token = env.id_token(&provider, "outage@example.com").await;
    provider.verify_id_token(&later_token).await.unwrap();
    assert_eq!(provider.key_store_stats().fetches, 3);

    // A day later the stale keys are no longer trusted.
    env.advance(86_400);
    let next_day = env.id_token(&provider, "outage@example.com").await;
    let err = provider.verify_id_token(&next_day).await.unwrap_err();
    assert!(matches!(err, IdTokenError::KeysUnavailable(_)), "{err:?}");
    assert!(provider.check().await.is_err());

    env.faults(json!({})).await;
    provider.verify_id_token(&next_day).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lookups_share_one_fetch() {
    let env = Env::start().await;
    let provider = env.provider();
    let id_token = env.id_token(&provider, "crowd@example.com").await;
    // Slow certs make the lookups overlap; the count holds whether they do or not.
    env.faults(json!({"certs": {"latency_ms": 200}})).await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let provider = provider.clone();
        let id_token = id_token.clone();
        tasks.push(tokio::spawn(async move {
            provider.verify_id_token(&id_token).await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(provider.key_store_stats().fetches, 1);
}
