//! Revocation that is honoured here at once: when the provider cannot revoke, the grant is
//! revoked here all the same and its token waits, sealed to its queue entry, for a retry.

use super::harness::{Env, captured_logs};
use grantkeeper_broker::{BrokerError, QUEUED_NOTE, RevocationOutcome, TokenRequest};
use grantkeeper_core::{Aad, ExposeSecret, GrantState};
use grantkeeper_store::RevocationTokenKind;
use serde_json::json;
use time::Duration;

#[tokio::test]
async fn a_reachable_provider_revokes_and_nothing_is_queued() {
    let env = Env::start().await;
    let sub = env.sign_in("fine@example.com").await;
    let broker = env.broker();
    assert_eq!(
        broker.revoke_or_queue(&sub, "disconnect").await.unwrap(),
        RevocationOutcome::Revoked
    );
    assert_eq!(env.stats().await["revocations"], 1);
    let grant = env.grant(&sub).await;
    assert_eq!(grant.state, GrantState::Revoked);
    assert_eq!(grant.reason.as_deref(), Some("disconnect"));
    assert!(grant.refresh_token.is_none() && grant.access_token.is_none());
    assert_eq!(env.store.count_revocations().await.unwrap(), 0);

    // Nothing left to revoke: revoked again, no upstream call.
    assert_eq!(
        broker.revoke_or_queue(&sub, "again").await.unwrap(),
        RevocationOutcome::Revoked
    );
    assert_eq!(env.stats().await["revocations"], 1);
    assert!(matches!(
        broker.revoke_or_queue("nobody", "test").await,
        Err(BrokerError::UnknownUser)
    ));
    assert_eq!(env.store.count_revocations().await.unwrap(), 0);
}

#[tokio::test]
async fn an_unreachable_provider_revokes_here_and_queues_the_token() {
    let env = Env::start().await;
    let email = "outage@example.com";
    let sub = env.sign_in(email).await;
    let broker = env.broker();
    broker
        .access_token(&sub, &TokenRequest::default())
        .await
        .unwrap();
    let held = env.issued_refresh_tokens(email).await;
    env.faults(json!({"revoke": {"status": 503, "error_rate": 1.0}}))
        .await;

    assert_eq!(
        broker.revoke_or_queue(&sub, "disconnected").await.unwrap(),
        RevocationOutcome::Queued
    );
    assert_eq!(env.stats().await["revocations"], 0);
    let grant = env.grant(&sub).await;
    assert_eq!(grant.state, GrantState::Revoked);
    assert_eq!(
        grant.reason.as_deref(),
        Some(format!("disconnected{QUEUED_NOTE}").as_str())
    );
    assert!(grant.refresh_token.is_none() && grant.access_token.is_none());
    let last = env.events(&sub).await.pop().unwrap();
    assert_eq!(
        (last.from, last.to),
        (Some(GrantState::Active), GrantState::Revoked)
    );
    // The cache was forgotten with the rest.
    assert!(matches!(
        broker.access_token(&sub, &TokenRequest::default()).await,
        Err(BrokerError::Revoked { .. })
    ));

    // Queued: not due at once, due within the first retry's wait.
    assert!(
        env.store
            .due_revocations(env.now(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let queued = env
        .store
        .due_revocations(env.now() + Duration::seconds(13), 10)
        .await
        .unwrap();
    assert_eq!(queued.len(), 1);
    let entry = &queued[0];
    assert!(entry.id.starts_with("rev_"), "{}", entry.id);
    assert_eq!(entry.sub, sub);
    assert_eq!(entry.token_kind, RevocationTokenKind::Refresh);
    assert_eq!(entry.attempts, 0);
    assert_eq!(entry.created_at, env.now().replace_nanosecond(0).unwrap());
    assert!(entry.next_attempt_at >= entry.created_at + Duration::seconds(10));
    assert!(
        entry.last_error.as_deref().unwrap().contains("503"),
        "{:?}",
        entry.last_error
    );
    // The queued token is the grant's refresh token, sealed to its entry.
    let opened = env
        .vault
        .get()
        .open_secret(&entry.token, Aad::pending_revocation(&entry.id))
        .unwrap();
    assert_eq!(opened.expose_secret(), held[0]);
    assert!(
        env.vault
            .get()
            .open_secret(&entry.token, Aad::refresh_token(&sub))
            .is_err()
    );
    assert!(
        !captured_logs().contains(&held[0]),
        "the queued token was logged"
    );

    // Revoking again finds nothing to revoke or queue.
    assert_eq!(
        broker.revoke_or_queue(&sub, "again").await.unwrap(),
        RevocationOutcome::Revoked
    );
    assert_eq!(env.store.count_revocations().await.unwrap(), 1);
}

#[tokio::test]
async fn a_refusal_is_queued_too_and_the_all_or_nothing_revocation_changes_nothing() {
    let env = Env::start().await;
    let one = env.sign_in("refused-one@example.com").await;
    let two = env.sign_in("refused-two@example.com").await;
    let broker = env.broker();
    // An answer outside the protocol: not transient, but the operator may fix it later.
    env.faults(json!({"revoke": {"status": 400, "body": "garbage", "error_rate": 1.0}}))
        .await;

    let before = env.grant(&one).await;
    assert!(matches!(
        broker.revoke_grant(&one, "all or nothing").await,
        Err(BrokerError::Misconfigured { .. })
    ));
    assert_eq!(env.grant(&one).await, before);
    env.faults(json!({"revoke": {"status": 503, "error_rate": 1.0}}))
        .await;
    assert!(matches!(
        broker.revoke_grant(&one, "all or nothing").await,
        Err(BrokerError::Unavailable { .. })
    ));
    assert_eq!(env.grant(&one).await, before);
    assert_eq!(env.store.count_revocations().await.unwrap(), 0);

    env.faults(json!({"revoke": {"status": 400, "body": "garbage", "error_rate": 1.0}}))
        .await;
    assert_eq!(
        broker.revoke_or_queue(&two, "disconnected").await.unwrap(),
        RevocationOutcome::Queued
    );
    assert_eq!(env.grant(&two).await.state, GrantState::Revoked);
    assert_eq!(env.store.count_revocations().await.unwrap(), 1);
    assert!(
        captured_logs().lines().any(|l| l.contains("ERROR")
            && l.contains(&two)
            && l.contains("queued the revocation")),
        "a refusal is logged as an error"
    );
}
