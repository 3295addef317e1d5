//! Single flight, transient failures, backoff.

use super::harness::{Env, email};
use grantkeeper_broker::{BrokerError, BrokerSettings, TokenRequest};
use grantkeeper_core::{ExposeSecret, GrantState};
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_demands_on_an_expired_grant_cause_one_refresh() {
    let env = Env::start().await;
    let sub = env.sign_in("crowd@example.com").await;
    let broker = env.broker();
    env.advance(3700);
    // A slow token endpoint keeps the refresh in flight while the crowd arrives.
    env.faults(json!({"token": {"latency_ms": 300}})).await;

    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(200));
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let broker = broker.clone();
        let sub = sub.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            broker.access_token(&sub, &TokenRequest::default()).await
        }));
    }
    let mut tokens = HashSet::new();
    for t in tasks {
        tokens.insert(t.await.unwrap().unwrap().token.expose_secret().to_owned());
    }
    assert_eq!(tokens.len(), 1, "everybody shares the one refresh");
    assert_eq!(env.refreshes().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transient_failures_never_revoke_and_failing_grants_recover() {
    let env = Env::start().await;
    let mut subs = Vec::new();
    for n in 0..20 {
        subs.push(env.sign_in(&email(n)).await);
    }
    let broker = env.broker_with(BrokerSettings {
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..BrokerSettings::default()
    });
    env.advance(3700);
    env.faults(json!({"token": {"status": 503, "error_rate": 0.3, "latency_ms": 5}}))
        .await;

    let mut tasks = Vec::new();
    for caller in 0..50 {
        let broker = broker.clone();
        let subs = subs.clone();
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for k in 0..6 {
                let sub = &subs[(caller * 7 + k * 3) % subs.len()];
                answers.push(broker.access_token(sub, &TokenRequest::default()).await);
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            answers
        }));
    }
    let (mut ok, mut unavailable) = (0, 0);
    for t in tasks {
        for answer in t.await.unwrap() {
            match answer {
                Ok(token) => {
                    assert!(!token.token.expose_secret().is_empty());
                    ok += 1;
                }
                Err(BrokerError::Unavailable { retry_after, .. }) => {
                    assert!(retry_after <= Duration::from_millis(200), "{retry_after:?}");
                    unavailable += 1;
                }
                Err(other) => panic!("only tokens or Unavailable, not {other:?}"),
            }
        }
    }
    assert_eq!(ok + unavailable, 300);
    assert!(
        ok > 0 && unavailable > 0,
        "{ok} ok, {unavailable} unavailable"
    );

    let mut were_failing = 0;
    for sub in &subs {
        let grant = env.grant(sub).await;
        assert_ne!(grant.state, GrantState::Revoked);
        assert!(grant.refresh_token.is_some());
        if env
            .events(sub)
            .await
            .iter()
            .any(|e| e.to == GrantState::Failing)
        {
            were_failing += 1;
        }
    }
    assert!(were_failing > 0, "some grants went through failing");

    // The provider recovers; once the backoff is over every grant is usable and active again.
    env.faults(json!({})).await;
    env.advance(1);
    for sub in &subs {
        broker
            .access_token(sub, &TokenRequest::default())
            .await
            .unwrap();
        let grant = env.grant(sub).await;
        assert_eq!(grant.state, GrantState::Active, "{sub}");
        assert!(grant.last_error.is_none());
        let events = env.events(sub).await;
        if events.iter().any(|e| e.to == GrantState::Failing) {
            let last = events.last().unwrap();
            assert_eq!(
                (last.from, last.to),
                (Some(GrantState::Failing), GrantState::Active)
            );
        }
    }
}

#[tokio::test]
async fn retry_after_is_honoured_by_the_backoff() {
    let env = Env::start().await;
    let sub = env.sign_in("later@example.com").await;
    let broker = env.broker();
    env.advance(3700);
    env.faults(json!({"token": {"status": 503, "error_rate": 1.0, "retry_after_secs": 120}}))
        .await;

    match broker.access_token(&sub, &TokenRequest::default()).await {
        Err(BrokerError::Unavailable {
            retry_after,
            detail,
        }) => {
            assert_eq!(retry_after, Duration::from_secs(120));
            assert!(detail.contains("503"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    let grant = env.grant(&sub).await;
    assert_eq!(grant.state, GrantState::Failing);
    assert!(grant.last_error.as_deref().unwrap().contains("503"));
    let requests = env.token_requests().await;

    // While backing off: no upstream call, and the answer says how long is left.
    env.advance(100);
    for demand in 0..3 {
        let answer = if demand == 0 {
            broker.refresh_now(&sub).await
        } else {
            broker
                .access_token(&sub, &TokenRequest::default())
                .await
                .map(|t| (*t).clone())
        };
        match answer {
            Err(BrokerError::Unavailable { retry_after, .. }) => {
                assert!(
                    retry_after <= Duration::from_secs(20)
                        && retry_after >= Duration::from_secs(15),
                    "{retry_after:?}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(env.token_requests().await, requests);

    // After it, the provider is asked again; success makes the grant active.
    env.faults(json!({})).await;
    env.advance(21);
    broker
        .access_token(&sub, &TokenRequest::default())
        .await
        .unwrap();
    assert_eq!(env.token_requests().await, requests + 1);
    let grant = env.grant(&sub).await;
    assert_eq!(grant.state, GrantState::Active);
    assert!(grant.last_error.is_none());
}

#[tokio::test]
async fn the_default_margin_keeps_answering_an_unexpired_token_during_an_outage() {
    let env = Env::start().await;
    let sub = env.sign_in("margin@example.com").await;
    let broker = env.broker();
    let grant = env.grant(&sub).await;
    let held = env.open_access(&grant).unwrap();
    // 100 s left: inside the default margin, so the broker tries to refresh.
    env.advance(env.persisted_left(&grant) - 100);
    env.faults(json!({"token": {"status": 503, "error_rate": 1.0}}))
        .await;

    let t = broker
        .access_token(&sub, &TokenRequest::default())
        .await
        .unwrap();
    assert_eq!(t.token.expose_secret(), held);
    assert_eq!(env.grant(&sub).await.state, GrantState::Failing);
    // An explicit demand is not met by it.
    let explicit = TokenRequest {
        scopes: None,
        min_ttl: Some(Duration::from_secs(200)),
    };
    assert!(matches!(
        broker.access_token(&sub, &explicit).await,
        Err(BrokerError::Unavailable { .. })
    ));
    // Once it has expired, nothing is answered.
    env.advance(101);
    assert!(matches!(
        broker.access_token(&sub, &TokenRequest::default()).await,
        Err(BrokerError::Unavailable { .. })
    ));
}
