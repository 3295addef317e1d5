//! Dead grants, races that look like dead grants, grantkeeper's own misconfiguration, and
//! revocation on request.

use super::harness::{Code, Env, captured_logs};
use grantkeeper_broker::{BrokerError, TokenRequest};
use grantkeeper_core::{ExposeSecret, GrantState, SecretString, fingerprint};
use serde_json::json;

#[tokio::test]
async fn a_grant_revoked_at_the_provider_is_marked_revoked_once() {
    let env = Env::start().await;
    let sub = env.sign_in("gone@example.com").await;
    let broker = env.broker();
    // Cached first, so that forgetting it is part of what is tested.
    broker
        .access_token(&sub, &TokenRequest::default())
        .await
        .unwrap();
    env.revoke_at_google("gone@example.com").await;
    env.advance(3700);

    match broker.access_token(&sub, &TokenRequest::default()).await {
        Err(BrokerError::Revoked { reason }) => {
            assert!(reason.starts_with("invalid_grant at refresh: "), "{reason}");
            assert!(reason.contains("expired or revoked"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let grant = env.grant(&sub).await;
    assert_eq!(grant.state, GrantState::Revoked);
    assert!(grant.refresh_token.is_none());
    assert!(grant.access_token.is_none());
    assert!(
        grant
            .reason
            .as_deref()
            .unwrap()
            .starts_with("invalid_grant")
    );
    let last = env.events(&sub).await.pop().unwrap();
    assert_eq!(
        (last.from, last.to),
        (Some(GrantState::Active), GrantState::Revoked)
    );
    assert!(last.reason.starts_with("invalid_grant at refresh"));

    // From now on the store answers: no upstream call.
    let requests = env.token_requests().await;
    for _ in 0..3 {
        assert!(matches!(
            broker.access_token(&sub, &TokenRequest::default()).await,
            Err(BrokerError::Revoked { .. })
        ));
    }
    assert!(matches!(
        broker.refresh_now(&sub).await,
        Err(BrokerError::Revoked { .. })
    ));
    assert_eq!(env.token_requests().await, requests);
    // One event for the one change.
    let revocations = env
        .events(&sub)
        .await
        .iter()
        .filter(|e| e.to == GrantState::Revoked)
        .count();
    assert_eq!(revocations, 1);
}

#[tokio::test]
async fn invalid_grant_for_a_replaced_refresh_token_is_a_race_not_a_revocation() {
    let env = Env::start().await;
    // One live refresh token per user: a new consent kills the old token.
    env.settings(json!({"refresh_token_cap": 1})).await;
    let sub = env.sign_in("race@example.com").await;
    let stale = env.grant(&sub).await;

    // Another instance (or a sign-in with consent) replaces the refresh token meanwhile.
    env.sign_in_with(Code {
        prompt: Some("consent"),
        ..Code::web("race@example.com")
    })
    .await;
    let replaced = env.grant(&sub).await;
    assert_ne!(
        replaced.refresh_token.as_ref().unwrap().fingerprint,
        stale.refresh_token.as_ref().unwrap().fingerprint
    );
    // The old token is really dead at the provider.
    let issued = env.issued_refresh_tokens("race@example.com").await;
    assert_eq!(issued.len(), 2);
    let dead = env
        .provider
        .refresh(&SecretString::from(issued[0].clone()))
        .await
        .unwrap_err();
    assert!(matches!(
        dead,
        grantkeeper_provider::ProviderError::InvalidGrant { .. }
    ));

    let broker = env.broker();
    let before = env.refreshes().await;
    let t = broker.refresh_from_snapshot(stale).await.unwrap();
    assert!(!t.token.expose_secret().is_empty());
    assert_eq!(env.refreshes().await, before + 1);
    let grant = env.grant(&sub).await;
    assert_eq!(grant.state, GrantState::Active);
    assert_eq!(
        grant.refresh_token.unwrap().fingerprint,
        fingerprint(&SecretString::from(issued[1].clone()))
    );
    assert!(
        env.events(&sub)
            .await
            .iter()
            .all(|e| e.to != GrantState::Revoked)
    );
    assert_eq!(
        env.open_access(&env.grant(&sub).await).unwrap(),
        t.token.expose_secret()
    );
}

#[tokio::test]
async fn rejected_client_credentials_are_misconfiguration_and_leave_the_grant_alone() {
    let env = Env::start().await;
    let sub = env.sign_in("client@example.com").await;
    let broker = env.broker_for(
        env.provider_with_secret("not-the-secret"),
        Default::default(),
    );
    env.advance(3700);
    let before = env.grant(&sub).await;

    let mut tasks = Vec::new();
    for _ in 0..10 {
        let broker = broker.clone();
        let sub = sub.clone();
        tasks.push(tokio::spawn(async move {
            broker.access_token(&sub, &TokenRequest::default()).await
        }));
    }
    for t in tasks {
        match t.await.unwrap() {
            Err(BrokerError::Misconfigured { detail }) => {
                assert!(detail.contains("client credentials"), "{detail}");
                assert!(!detail.contains("not-the-secret"));
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(env.grant(&sub).await, before);
    // Logged once as an error by the provider, with the operator's advice, and tied to the
    // grant by the broker.
    let logs = captured_logs();
    assert!(logs.contains("Google rejected grantkeeper's client id or secret (invalid_client)"));
    assert!(logs.contains("refresh refused for grantkeeper's client credentials"));

    // With the right credentials the same grant works.
    env.broker()
        .access_token(&sub, &TokenRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn revoke_grant_revokes_at_the_provider_and_marks_the_grant() {
    let env = Env::start().await;
    let sub = env.sign_in("bye@example.com").await;
    let broker = env.broker();
    let token = broker
        .access_token(&sub, &TokenRequest::default())
        .await
        .unwrap();

    // A transient failure of the revocation endpoint changes nothing.
    env.faults(json!({"revoke": {"status": 503, "error_rate": 1.0}}))
        .await;
    let before = env.grant(&sub).await;
    assert!(matches!(
        broker.revoke_grant(&sub, "disconnect").await,
        Err(BrokerError::Unavailable { .. })
    ));
    assert_eq!(env.grant(&sub).await, before);
    assert_eq!(env.stats().await["revocations"], 0);
    env.faults(json!({})).await;

    broker.revoke_grant(&sub, "disconnect").await.unwrap();
    assert_eq!(env.stats().await["revocations"], 1);
    let grant = env.grant(&sub).await;
    assert_eq!(grant.state, GrantState::Revoked);
    assert_eq!(grant.reason.as_deref(), Some("disconnect"));
    assert!(grant.refresh_token.is_none() && grant.access_token.is_none());
    let last = env.events(&sub).await.pop().unwrap();
    assert_eq!(last.to, GrantState::Revoked);
    assert_eq!(last.reason, "disconnect");

    // The cache was forgotten, and the provider no longer honours the refresh token.
    assert!(matches!(
        broker.access_token(&sub, &TokenRequest::default()).await,
        Err(BrokerError::Revoked { .. })
    ));
    let rt = env.issued_refresh_tokens("bye@example.com").await;
    assert!(matches!(
        env.provider
            .refresh(&SecretString::from(rt[0].clone()))
            .await,
        Err(grantkeeper_provider::ProviderError::InvalidGrant { .. })
    ));
    drop(token);

    // Revoking again: nothing left to revoke upstream, still fine.
    broker.revoke_grant(&sub, "again").await.unwrap();
    assert_eq!(env.stats().await["revocations"], 1);
}

#[tokio::test]
async fn a_rejected_token_is_replaced_once() {
    let env = Env::start().await;
    let sub = env.sign_in("reject@example.com").await;
    let broker = env.broker();
    let held = broker
        .access_token(&sub, &TokenRequest::default())
        .await
        .unwrap();
    assert_eq!(env.refreshes().await, 0);

    let newer = broker
        .refresh_after_rejection(&sub, &held.token)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(newer.token.expose_secret(), held.token.expose_secret());
    assert_eq!(env.refreshes().await, 1);
    // A second caller that was refused the same old token gets the newer one, no refresh.
    let again = broker
        .refresh_after_rejection(&sub, &held.token)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.token.expose_secret(), newer.token.expose_secret());
    // So does another instance, from the store.
    let other = env
        .broker()
        .refresh_after_rejection(&sub, &held.token)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(other.token.expose_secret(), newer.token.expose_secret());
    assert_eq!(env.refreshes().await, 1);
    // The hand-out now answers the newer one.
    let t = broker
        .access_token(&sub, &TokenRequest::default())
        .await
        .unwrap();
    assert_eq!(t.token.expose_secret(), newer.token.expose_secret());

    // The API refuses the newer token too, within the cooldown of the refresh its 401 caused:
    // no refresh, and the caller passes the API's answer on.
    let cooling = broker
        .refresh_after_rejection(&sub, &newer.token)
        .await
        .unwrap();
    assert!(cooling.is_none());
    assert_eq!(env.refreshes().await, 1);
    env.advance(29);
    assert!(
        broker
            .refresh_after_rejection(&sub, &newer.token)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(env.refreshes().await, 1);
    // Once it is over, a 401 is worth one refresh again.
    env.advance(2);
    let third = broker
        .refresh_after_rejection(&sub, &newer.token)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(third.token.expose_secret(), newer.token.expose_secret());
    assert_eq!(env.refreshes().await, 2);
}

#[tokio::test]
async fn no_token_reaches_the_logs() {
    let env = Env::start().await;
    let email = "secret-keeper@example.com";
    let sub = env.sign_in(email).await;
    let broker = env.broker();
    broker.refresh_now(&sub).await.unwrap();
    env.faults(json!({"token": {"status": 503, "error_rate": 1.0}}))
        .await;
    let _ = broker.refresh_now(&sub).await;
    env.faults(json!({})).await;
    env.advance(600);
    let t = broker.refresh_now(&sub).await.unwrap();
    let _ = broker.refresh_after_rejection(&sub, &t.token).await;
    assert!(!format!("{t:?}").contains(t.token.expose_secret()));
    broker.revoke_grant(&sub, "test").await.unwrap();

    let logs = captured_logs();
    assert!(logs.contains(&sub), "the logs name the user");
    let tokens = env.issued_tokens(email).await;
    assert!(tokens.len() >= 5, "{}", tokens.len());
    for token in tokens {
        assert!(!logs.contains(&token), "a token was logged");
    }
}

#[tokio::test]
async fn a_refresh_that_lost_the_fence_uses_the_winner_s_token_or_writes_its_own() {
    let env = Env::start().await;
    let sub = env.sign_in("fence@example.com").await;
    let broker = env.broker();
    let other_instance = env.broker();

    // Another instance refreshed after this one read the grant: its token is used.
    let stale = env.grant(&sub).await;
    let winner = other_instance.refresh_now(&sub).await.unwrap();
    let t = broker.refresh_from_snapshot(stale).await.unwrap();
    assert_eq!(env.refreshes().await, 2);
    assert_eq!(t.token.expose_secret(), winner.token.expose_secret());
    assert_eq!(
        env.open_access(&env.grant(&sub).await).unwrap(),
        winner.token.expose_secret()
    );

    // A write that left the token alone (an operator marking the grant failing): this
    // refresh's token is written over the newer version, and the grant is active again.
    let stale = env.grant(&sub).await;
    env.store
        .update_grant_state(
            &sub,
            None,
            grantkeeper_store::StateUpdate {
                state: GrantState::Failing,
                reason: "test".into(),
                error: Some("test".into()),
                drop_tokens: false,
                at: env.now(),
            },
        )
        .await
        .unwrap();
    let t = broker.refresh_from_snapshot(stale).await.unwrap();
    assert_ne!(t.token.expose_secret(), winner.token.expose_secret());
    let grant = env.grant(&sub).await;
    assert_eq!(env.open_access(&grant).unwrap(), t.token.expose_secret());
    assert_eq!(grant.state, GrantState::Active);
}
