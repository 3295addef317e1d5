//! Hand-outs: cache, persisted tokens, min_ttl, jitter, the cap for short lifetimes, and the
//! answers that need no upstream call.

use super::harness::{Code, DRIVE_APPDATA, Env};
use grantkeeper_broker::{BrokerError, BrokerSettings, TokenRequest};
use grantkeeper_core::{ExposeSecret, GrantState, Scopes};
use serde_json::json;
use std::time::Duration;

fn min_ttl(secs: u64) -> TokenRequest {
    TokenRequest {
        scopes: None,
        min_ttl: Some(Duration::from_secs(secs)),
    }
}

#[tokio::test]
async fn cached_hand_outs_cause_no_upstream_call() {
    let env = Env::start().await;
    let sub = env.sign_in("cache@example.com").await;
    let broker = env.broker();
    // The sign-in token has expired: the first hand-out refreshes.
    env.advance(3700);
    let first = broker
        .access_token(&sub, &TokenRequest::default())
        .await
        .unwrap();
    assert_eq!(env.refreshes().await, 1);
    let requests = env.token_requests().await;
    for _ in 0..20 {
        let again = broker
            .access_token(&sub, &TokenRequest::default())
            .await
            .unwrap();
        assert_eq!(again.token.expose_secret(), first.token.expose_secret());
        assert_eq!(again.expires_at, first.expires_at);
    }
    assert_eq!(env.token_requests().await, requests);
    assert_eq!(env.refreshes().await, 1);

    // What was refreshed is persisted, sealed, with its expiry.
    let grant = env.grant(&sub).await;
    assert_eq!(
        env.open_access(&grant).unwrap(),
        first.token.expose_secret()
    );
    assert_eq!(grant.access_token.unwrap().expires_at, first.expires_at);
    assert_eq!(grant.state, GrantState::Active);
    assert!(grant.last_refresh_at.is_some());
    // The refreshed token covers what the grant covers.
    assert!(first.scopes.contains(DRIVE_APPDATA));
    assert!(first.scopes.contains("email"));
}

#[tokio::test]
async fn the_persisted_token_is_reused_after_a_restart() {
    let env = Env::start().await;
    let sub = env.sign_in("restart@example.com").await;
    let signed_in = env.open_access(&env.grant(&sub).await).unwrap();

    // The token of the sign-in is valid for an hour: no refresh needed.
    let broker = env.broker();
    let t = broker
        .access_token(&sub, &TokenRequest::default())
        .await
        .unwrap();
    assert_eq!(t.token.expose_secret(), signed_in);
    assert_eq!(env.refreshes().await, 0);

    let refreshed = broker.refresh_now(&sub).await.unwrap();
    assert_ne!(refreshed.token.expose_secret(), signed_in);
    assert_eq!(env.refreshes().await, 1);

    // A new process on the same store (a restart, or another instance) uses the stored one.
    let restarted = env.broker();
    let t = restarted
        .access_token(&sub, &TokenRequest::default())
        .await
        .unwrap();
    assert_eq!(t.token.expose_secret(), refreshed.token.expose_secret());
    assert_eq!(t.expires_at, refreshed.expires_at);
    assert_eq!(env.refreshes().await, 1);
}

#[tokio::test]
async fn an_explicit_min_ttl_is_honoured_exactly() {
    let env = Env::start().await;
    let sub = env.sign_in("ttl@example.com").await;
    let broker = env.broker();
    let grant = env.grant(&sub).await;
    let held = env.open_access(&grant).unwrap();
    let left = env.persisted_left(&grant);
    assert!(left > 3500 && left <= 3600, "{left}");

    // Satisfied by the held token.
    let t = broker.access_token(&sub, &min_ttl(3500)).await.unwrap();
    assert_eq!(t.token.expose_secret(), held);
    assert_eq!(env.refreshes().await, 0);

    // Longer than the held token lasts, and longer than the provider's lifetime: one refresh,
    // whose token is answered although it cannot last that long either.
    let t = broker.access_token(&sub, &min_ttl(7200)).await.unwrap();
    assert_ne!(t.token.expose_secret(), held);
    assert_eq!(env.refreshes().await, 1);
    let lifetime = (t.expires_at - env.now()).whole_seconds();
    assert!(lifetime > 3500 && lifetime <= 3600, "{lifetime}");
    // Honoured exactly: the next such demand refreshes again.
    let again = broker.access_token(&sub, &min_ttl(7200)).await.unwrap();
    assert_ne!(again.token.expose_secret(), t.token.expose_secret());
    assert_eq!(env.refreshes().await, 2);

    // Ten seconds before expiry: 0 takes any unexpired token, 30 s does not.
    let now_left = (again.expires_at - env.now()).whole_seconds();
    env.advance(now_left - 10);
    let zero = broker.access_token(&sub, &min_ttl(0)).await.unwrap();
    assert_eq!(zero.token.expose_secret(), again.token.expose_secret());
    assert_eq!(env.refreshes().await, 2);
    let thirty = broker.access_token(&sub, &min_ttl(30)).await.unwrap();
    assert_ne!(thirty.token.expose_secret(), again.token.expose_secret());
    assert_eq!(env.refreshes().await, 3);

    // Absurd values do not overflow anything.
    let huge = broker
        .access_token(&sub, &min_ttl(u64::MAX / 2))
        .await
        .unwrap();
    assert!(huge.expires_at > env.now());
}

#[tokio::test]
async fn the_default_min_ttl_has_a_stable_bounded_jitter_per_grant() {
    let env = Env::start().await;
    let settings = BrokerSettings {
        min_ttl: Duration::from_secs(300),
        jitter: Duration::from_secs(60),
        ..BrokerSettings::default()
    };
    let broker = env.broker_with(settings.clone());
    let other_instance = env.broker_with(settings);
    let mut seen = std::collections::BTreeSet::new();
    for n in 0..40 {
        let sub = format!("1{n:020}");
        let d = broker.default_min_ttl(&sub);
        assert!(
            d >= Duration::from_secs(300) && d < Duration::from_secs(360),
            "{d:?}"
        );
        assert_eq!(broker.default_min_ttl(&sub), d);
        assert_eq!(other_instance.default_min_ttl(&sub), d);
        seen.insert(d);
    }
    assert!(seen.len() > 20, "the jitter spreads grants: {seen:?}");

    // Without jitter, the default is min_ttl itself.
    let plain = env.broker_with(BrokerSettings {
        jitter: Duration::ZERO,
        ..BrokerSettings::default()
    });
    assert_eq!(plain.default_min_ttl("x"), Duration::from_secs(300));

    // The hand-out uses it: a token lasting a little longer is answered, a little shorter
    // is refreshed.
    let sub = env.sign_in("jitter@example.com").await;
    let d = i64::try_from(broker.default_min_ttl(&sub).as_secs()).unwrap();
    let left = env.persisted_left(&env.grant(&sub).await);
    env.advance(left - d - 5);
    broker
        .access_token(&sub, &TokenRequest::default())
        .await
        .unwrap();
    assert_eq!(env.refreshes().await, 0);
    env.advance(10);
    broker
        .access_token(&sub, &TokenRequest::default())
        .await
        .unwrap();
    assert_eq!(env.refreshes().await, 1);
}

#[tokio::test]
async fn short_provider_lifetimes_cap_the_default_min_ttl() {
    let env = Env::start().await;
    env.settings(json!({"access_token_ttl_secs": 60})).await;
    let sub = env.sign_in("short@example.com").await;
    let broker = env.broker();

    // The 60 s token of the sign-in is shorter than the default margin: refreshed once.
    let first = broker
        .access_token(&sub, &TokenRequest::default())
        .await
        .unwrap();
    assert_eq!(env.refreshes().await, 1);
    // Now the broker knows tokens live 60 s: it asks for 30 s, not 300 s, and answers the
    // held token instead of refreshing on every call.
    // (The emulator, like Google, answers `expires_in` a second short of the lifetime.)
    let d = broker.default_min_ttl(&sub);
    assert!(
        d >= Duration::from_secs(29) && d <= Duration::from_secs(30),
        "{d:?}"
    );
    for _ in 0..10 {
        let t = broker
            .access_token(&sub, &TokenRequest::default())
            .await
            .unwrap();
        assert_eq!(t.token.expose_secret(), first.token.expose_secret());
    }
    assert_eq!(env.refreshes().await, 1);

    env.advance(35);
    let later = broker
        .access_token(&sub, &TokenRequest::default())
        .await
        .unwrap();
    assert_ne!(later.token.expose_secret(), first.token.expose_secret());
    assert_eq!(env.refreshes().await, 2);
}

#[tokio::test]
async fn scopes_not_granted_unknown_users_and_needs_consent_need_no_upstream_call() {
    let env = Env::start().await;
    let narrow = env
        .sign_in_with(Code {
            scope: "openid email",
            ..Code::web("narrow@example.com")
        })
        .await;
    let online = env
        .sign_in_with(Code {
            online_native: true,
            ..Code::web("online@example.com")
        })
        .await;
    assert_eq!(env.grant(&online).await.state, GrantState::NeedsConsent);
    let broker = env.broker();
    env.advance(3700);
    let requests = env.token_requests().await;

    let want_drive = TokenRequest {
        scopes: Some(Scopes::parse(&format!("email {DRIVE_APPDATA}"))),
        min_ttl: None,
    };
    match broker.access_token(&narrow, &want_drive).await {
        Err(BrokerError::ScopeNotGranted { missing }) => {
            assert_eq!(missing, Scopes::parse(DRIVE_APPDATA));
        }
        other => panic!("{other:?}"),
    }

    assert!(matches!(
        broker
            .access_token("nobody", &TokenRequest::default())
            .await,
        Err(BrokerError::UnknownUser)
    ));
    assert!(matches!(
        broker.refresh_now("nobody").await,
        Err(BrokerError::UnknownUser)
    ));
    assert!(matches!(
        broker.revoke_grant("nobody", "test").await,
        Err(BrokerError::UnknownUser)
    ));

    assert!(matches!(
        broker.access_token(&online, &TokenRequest::default()).await,
        Err(BrokerError::NeedsConsent)
    ));
    assert!(matches!(
        broker.refresh_now(&online).await,
        Err(BrokerError::NeedsConsent)
    ));
    assert_eq!(env.token_requests().await, requests);

    // Short identity scopes are normalised: "email" is granted.
    let t = broker
        .access_token(
            &narrow,
            &TokenRequest {
                scopes: Some(Scopes::parse("email openid")),
                min_ttl: None,
            },
        )
        .await
        .unwrap();
    assert!(t.scopes.contains("email"));
    assert!(!t.scopes.contains(DRIVE_APPDATA));
    // The cached token answers the same question without asking the store or the provider,
    // and still refuses what is not granted.
    assert!(matches!(
        broker.access_token(&narrow, &want_drive).await,
        Err(BrokerError::ScopeNotGranted { .. })
    ));
    assert_eq!(env.refreshes().await, 1);
}
