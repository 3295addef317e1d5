//! How the provider's failures are classified, and that no message carries a secret.

use super::support::{Env, Secrets, http_client};
use grantkeeper_core::{ExposeSecret, ManualClock, SecretString, SharedClock};
use grantkeeper_provider::{IdTokenError, Provider, ProviderError, ProviderSettings};
use serde_json::json;
use std::time::Duration;
use url::Url;

/// Sets `fault` on the token endpoint and refreshes once.
async fn refresh_under(env: &Env, fault: serde_json::Value) -> ProviderError {
    let provider = env.provider();
    let t = env.sign_in(&provider, "faults@example.com").await;
    env.faults(json!({ "token": fault })).await;
    let err = provider
        .refresh(t.refresh_token.as_ref().unwrap())
        .await
        .unwrap_err();
    env.faults(json!({})).await;
    let mut secrets = Secrets::default();
    secrets.add_response(&t);
    secrets.assert_absent(&err);
    err
}

#[tokio::test]
async fn transient_failures_of_the_token_endpoint() {
    let env = Env::start().await;

    let err = refresh_under(&env, json!({"status": 503})).await;
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

    let err = refresh_under(&env, json!({"status": 503, "retry_after_secs": 30})).await;
    assert_eq!(err.retry_after(), Some(Duration::from_secs(30)));

    let err = refresh_under(&env, json!({"status": 500, "body": "garbage"})).await;
    assert!(
        matches!(
            err,
            ProviderError::Unavailable {
                status: Some(500),
                ..
            }
        ),
        "{err:?}"
    );

    let err = refresh_under(&env, json!({"status": 429, "retry_after_secs": 7})).await;
    assert_eq!(
        err,
        ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(7))
        }
    );
    assert!(err.is_transient());

    let err = refresh_under(&env, json!({"status": 403, "body": "html"})).await;
    assert!(matches!(err, ProviderError::RateLimited { .. }), "{err:?}");
    assert!(err.is_transient());

    let err = refresh_under(&env, json!({"status": 408, "body": "empty"})).await;
    assert!(
        matches!(
            err,
            ProviderError::Unavailable {
                status: Some(408),
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn answers_outside_the_protocol() {
    let env = Env::start().await;
    for (fault, what) in [
        (json!({"status": 200, "body": "garbage"}), "non-JSON"),
        (json!({"status": 200, "body": "html"}), "HTML"),
        (json!({"status": 200, "body": "empty"}), "empty"),
        (json!({"status": 400, "body": "garbage"}), "non-JSON"),
    ] {
        let err = refresh_under(&env, fault.clone()).await;
        assert!(
            matches!(err, ProviderError::Protocol { ref detail } if detail.contains(what)),
            "{fault}: {err:?}"
        );
        assert!(!err.is_transient());
    }
}

#[tokio::test]
async fn the_operators_mistakes() {
    let env = Env::start().await;

    let wrong_secret =
        env.provider_with(|s| s.client_secret = SecretString::from("not-the-secret"));
    let code = env.web_code("op@example.com").await;
    let err = wrong_secret
        .exchange_code(&code, "postmessage")
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::InvalidClient { .. }),
        "{err:?}"
    );
    assert!(!err.is_transient());
    let mut secrets = Secrets::default();
    secrets.add(&code);
    secrets.add(&SecretString::from("not-the-secret"));
    secrets.add(&env.emulator.web_client().client_secret);
    secrets.assert_absent(&err);

    let unknown = env.provider_with(|s| s.client_id = "nobody.apps.googleusercontent.com".into());
    let code = env.web_code("op@example.com").await;
    let err = unknown
        .exchange_code(&code, "postmessage")
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::InvalidClient { .. }),
        "{err:?}"
    );

    let no_secret = env.provider_with(|s| s.client_secret = SecretString::from(""));
    let code = env.web_code("op@example.com").await;
    let err = no_secret
        .exchange_code(&code, "postmessage")
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ProviderError::InvalidRequest {
            description: "client_secret is missing.".into()
        }
    );
    secrets.add(&code);
    secrets.assert_absent(&err);
}

#[tokio::test]
async fn a_garbled_code_is_invalid_grant() {
    let env = Env::start().await;
    let provider = env.provider();
    let code = SecretString::from("4/0AgarbledGARBLEDgarbled");
    let err = provider
        .exchange_code(&code, "postmessage")
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::InvalidGrant { ref error, .. } if error == "invalid_grant"),
        "{err:?}"
    );
    let mut secrets = Secrets::default();
    secrets.add(&code);
    secrets.assert_absent(&err);

    // An empty code is sent as such (and refused by the provider, not by us).
    let err = provider
        .exchange_code(&SecretString::from(""), "postmessage")
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err:?}");
}

#[tokio::test]
async fn revocation_failures() {
    let env = Env::start().await;
    let provider = env.provider();
    let t = env.sign_in(&provider, "rev@example.com").await;
    let refresh_token = t.refresh_token.clone().unwrap();
    env.faults(json!({"revoke": {"status": 503, "retry_after_secs": 2}}))
        .await;
    let err = provider.revoke(&refresh_token).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
    env.faults(json!({"revoke": {"status": 403, "body": "html"}}))
        .await;
    let err = provider.revoke(&refresh_token).await.unwrap_err();
    assert!(matches!(err, ProviderError::RateLimited { .. }), "{err:?}");
    let mut secrets = Secrets::default();
    secrets.add_response(&t);
    secrets.assert_absent(&err);
    env.faults(json!({})).await;
    provider.revoke(&refresh_token).await.unwrap();
}

#[tokio::test]
async fn an_unreachable_provider_is_transient() {
    // Bind, learn the port, close: nothing listens there any more.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let clock: SharedClock = ManualClock::new();
    let provider = Provider::new(
        ProviderSettings::new(
            Url::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
            "web".into(),
            SecretString::from("secret-value-123"),
        ),
        http_client(),
        clock,
    );
    let err = provider
        .refresh(&SecretString::from("1//refresh-token-value"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::Unavailable { status: None, .. }),
        "{err:?}"
    );
    assert!(err.is_transient());
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("refresh-token-value") && !shown.contains("secret-value-123"));

    let err = provider
        .verify_id_token(&SecretString::from(
            // {"alg":"RS256","kid":"k"} . {} . sig
            "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ.e30.c2ln",
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, IdTokenError::KeysUnavailable(_)), "{err:?}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn every_error_message_is_free_of_secrets() {
    let env = Env::start().await;
    let provider = env.provider();
    let t = env.sign_in(&provider, "quiet@example.com").await;
    let mut secrets = Secrets::default();
    secrets.add_response(&t);
    secrets.add(&env.emulator.web_client().client_secret);

    let errors = [
        ProviderError::InvalidGrant {
            error: "invalid_grant".into(),
            description: "Bad Request".into(),
        },
        ProviderError::InvalidClient {
            description: "Unauthorized".into(),
        },
        ProviderError::InvalidRequest {
            description: "client_secret is missing.".into(),
        },
        ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(1)),
        },
        ProviderError::Unavailable {
            status: Some(503),
            detail: "x".into(),
            retry_after: None,
        },
        ProviderError::Protocol { detail: "x".into() },
    ];
    for e in &errors {
        secrets.assert_absent(e);
    }
    secrets.assert_absent_debug(&t);
    secrets.assert_absent_debug(&provider);
    secrets.assert_absent_debug(provider.settings());

    // What the provider itself produces while handling those tokens.
    let id_token = t.id_token.clone().unwrap();
    let tampered = SecretString::from(format!("{}x", id_token.expose_secret()));
    let err = provider.verify_id_token(&tampered).await.unwrap_err();
    secrets.assert_absent(&err);
    let err = provider
        .exchange_code(&t.access_token, "postmessage")
        .await
        .unwrap_err();
    secrets.assert_absent(&err);
    let err = provider.refresh(&t.access_token).await.unwrap_err();
    secrets.assert_absent(&err);
}
