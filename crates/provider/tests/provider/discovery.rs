//! Discovery, also under an issuer with a path.

use super::support::{Env, http_client};
use grantkeeper_core::{ManualClock, SecretString, SharedClock};
use grantkeeper_provider::{Provider, ProviderError, ProviderSettings};
use serde_json::json;
use url::Url;

#[tokio::test]
async fn discovery_under_an_issuer_with_a_path() {
    let env = Env::start_at("/_google").await;
    let provider = env.provider();
    let d = provider.discovery().await.unwrap();
    let base = env.base.as_str().trim_end_matches('/');
    assert!(base.ends_with("/_google"), "{base}");
    assert_eq!(d.issuer.trim_end_matches('/'), base);
    assert!(
        d.token_endpoint.as_str().starts_with(base),
        "{}",
        d.token_endpoint
    );
    assert!(d.jwks_uri.as_str().starts_with(base), "{}", d.jwks_uri);
    assert!(d.revocation_endpoint.is_some());
    assert!(d.userinfo_endpoint.is_some());
    assert_eq!(d.id_token_signing_alg_values_supported, ["RS256"]);

    // The whole sign-in works under that issuer: its tokens say so in `iss`.
    let id_token = env.id_token(&provider, "nested@example.com").await;
    let claims = provider.verify_id_token(&id_token).await.unwrap();
    assert_eq!(claims.iss.trim_end_matches('/'), base);
    assert_eq!(claims.email.as_deref(), Some("nested@example.com"));
}

#[tokio::test]
async fn discovery_is_fetched_once_and_a_failure_is_retried() {
    let env = Env::start().await;
    let provider = env.provider();
    env.faults(json!({"discovery": {"status": 503}})).await;
    let err = provider.discovery().await.unwrap_err();
    assert!(
        matches!(
            err,
            ProviderError::Unavailable {
                status: Some(503),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert!(provider.check().await.is_err());

    env.faults(json!({})).await;
    let first = provider.discovery().await.unwrap();
    // Cached: a discovery outage from now on no longer matters.
    env.faults(json!({"discovery": {"status": 503}})).await;
    let again = provider.discovery().await.unwrap();
    assert!(std::sync::Arc::ptr_eq(&first, &again));
}

#[tokio::test]
async fn a_document_for_another_issuer_is_refused() {
    let env = Env::start().await;
    // Same server, reached under another name: the document names 127.0.0.1, not localhost.
    let port = env.base.port().unwrap();
    let issuer = Url::parse(&format!("http://localhost:{port}")).unwrap();
    let web = env.emulator.web_client();
    let clock: SharedClock = ManualClock::new();
    let provider = Provider::new(
        ProviderSettings::new(issuer, web.client_id, web.client_secret),
        http_client(),
        clock,
    );
    let err = provider.discovery().await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Protocol { ref detail } if detail.contains("issuer")),
        "{err:?}"
    );
    let code = SecretString::from("4/never-sent");
    assert!(provider.exchange_code(&code, "postmessage").await.is_err());
}

#[tokio::test]
async fn check_fetches_discovery_and_keys() {
    let env = Env::start().await;
    let provider = env.provider();
    assert_eq!(
        provider.key_store_stats().fetches,
        0,
        "Provider::new does no I/O"
    );
    provider.check().await.unwrap();
    let stats = provider.key_store_stats();
    assert_eq!(stats.fetches, 1);
    assert!(stats.keys >= 1);
    // Fresh keys are not fetched again.
    provider.check().await.unwrap();
    assert_eq!(provider.key_store_stats().fetches, 1);

    let down = env.provider();
    env.faults(json!({"certs": {"status": 503}})).await;
    let err = down.check().await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
}
