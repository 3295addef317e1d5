//! ID-token verification: every cause of refusal, produced by the emulator's tampering.

use super::support::{Env, Secrets};
use grantkeeper_core::SecretString;
use grantkeeper_provider::IdTokenError;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn every_tampering_is_refused_for_its_own_reason() {
    let env = Env::start().await;
    let provider = env.provider();
    // Keys are in hand before tampering starts, so unknown_kid is judged against them.
    let good = env.id_token(&provider, "tamper@example.com").await;
    provider.verify_id_token(&good).await.unwrap();

    let cases = [
        ("bad_signature", IdTokenError::BadSignature),
        (
            "alg_none",
            IdTokenError::UnsupportedAlgorithm("none".into()),
        ),
        ("hs256", IdTokenError::UnsupportedAlgorithm("HS256".into())),
        ("wrong_aud", IdTokenError::WrongAudience),
        ("extra_aud", IdTokenError::WrongAudience),
        ("wrong_iss", IdTokenError::WrongIssuer),
        ("no_sub", IdTokenError::MissingSubject),
        ("expired", IdTokenError::Expired),
        ("iat_future", IdTokenError::IssuedInFuture),
        ("unknown_kid", IdTokenError::UnknownKey),
        ("azp_unauthorized", IdTokenError::UnauthorizedParty),
    ];
    let mut secrets = Secrets::default();
    for (tamper, want) in cases {
        env.faults(json!({"id_token": {"tamper": tamper}})).await;
        let t = env.sign_in(&provider, "tamper@example.com").await;
        let id_token = t
            .id_token
            .clone()
            .unwrap_or_else(|| panic!("{tamper}: no id_token"));
        let got = provider.verify_id_token(&id_token).await.unwrap_err();
        assert_eq!(got, want, "{tamper}");
        assert!(!got.is_transient(), "{tamper}");
        secrets.add_response(&t);
        secrets.assert_absent(&got);
    }

    env.faults(json!({"id_token": {"tamper": "missing"}})).await;
    let t = env.sign_in(&provider, "tamper@example.com").await;
    assert!(t.id_token.is_none());

    env.faults(json!({})).await;
    let good = env.id_token(&provider, "tamper@example.com").await;
    provider.verify_id_token(&good).await.unwrap();
}

#[tokio::test]
async fn malformed_tokens() {
    let env = Env::start().await;
    let provider = env.provider();
    let good = env.id_token(&provider, "shape@example.com").await;
    let good = grantkeeper_core::ExposeSecret::expose_secret(&good).to_owned();
    let parts: Vec<&str> = good.split('.').collect();
    let cases = [
        String::new(),
        "not-a-jwt".to_owned(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{good}.extra"),
        format!("%%%.{}.{}", parts[1], parts[2]),
        // A valid header over a payload that is not JSON: the signature no longer matches.
        format!("{}.bm90IGpzb24.{}", parts[0], parts[2]),
    ];
    for (i, token) in cases.iter().enumerate() {
        let err = provider
            .verify_id_token(&SecretString::from(token.as_str()))
            .await
            .unwrap_err();
        assert!(
            matches!(err, IdTokenError::Malformed | IdTokenError::BadSignature),
            "case {i}: {err:?}"
        );
        assert!(!err.to_string().contains(&good));
    }
    assert_eq!(
        provider
            .verify_id_token(&SecretString::from("not-a-jwt"))
            .await
            .unwrap_err(),
        IdTokenError::Malformed
    );
}

#[tokio::test]
async fn a_lifetime_above_the_cap_is_refused() {
    let env = Env::start().await;
    // The emulator issues tokens for an hour, like Google.
    let provider = env.provider_with(|s| s.max_id_token_lifetime = Duration::from_secs(1800));
    let id_token = env.id_token(&provider, "long@example.com").await;
    assert_eq!(
        provider.verify_id_token(&id_token).await.unwrap_err(),
        IdTokenError::LifetimeTooLong
    );
}

#[tokio::test]
async fn expiry_follows_our_clock_with_leeway() {
    let env = Env::start().await;
    let provider = env.provider();
    let id_token = env.id_token(&provider, "time@example.com").await;
    let claims = provider.verify_id_token(&id_token).await.unwrap();
    let lifetime = claims.exp - claims.iat;

    // Just past exp but inside the 60 s leeway: still good.
    env.advance(lifetime + 30);
    provider.verify_id_token(&id_token).await.unwrap();
    env.advance(60);
    assert_eq!(
        provider.verify_id_token(&id_token).await.unwrap_err(),
        IdTokenError::Expired
    );
}

#[tokio::test]
async fn both_issuer_spellings_with_quirks_only_the_url_without() {
    let env = Env::start().await;
    let quirky = env.provider_with(|s| s.google_quirks = true);
    let strict = env.provider_with(|s| s.google_quirks = false);

    let url_iss = env.id_token(&quirky, "iss@example.com").await;
    let claims = quirky.verify_id_token(&url_iss).await.unwrap();
    assert!(claims.iss.starts_with("http://"), "{}", claims.iss);
    strict.verify_id_token(&url_iss).await.unwrap();

    env.emulator_settings(json!({"id_token_iss": "bare"})).await;
    let bare_iss = env.id_token(&quirky, "iss@example.com").await;
    let claims = quirky.verify_id_token(&bare_iss).await.unwrap();
    assert!(claims.iss.starts_with("127.0.0.1:"), "{}", claims.iss);
    assert_eq!(
        strict.verify_id_token(&bare_iss).await.unwrap_err(),
        IdTokenError::WrongIssuer
    );
}

#[tokio::test]
async fn verification_without_keys_is_transient() {
    let env = Env::start().await;
    let provider = env.provider();
    let id_token = env.id_token(&provider, "nokeys@example.com").await;
    env.faults(json!({"certs": {"status": 503}})).await;
    let err = provider.verify_id_token(&id_token).await.unwrap_err();
    assert!(matches!(err, IdTokenError::KeysUnavailable(_)), "{err:?}");
    assert!(err.is_transient());
    // The next call tries again.
    env.faults(json!({})).await;
    provider.verify_id_token(&id_token).await.unwrap();
    assert_eq!(provider.key_store_stats().fetches, 2);
    assert_eq!(provider.key_store_stats().failed_fetches, 1);
}
