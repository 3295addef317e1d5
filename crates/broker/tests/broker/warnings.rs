//! Warnings an operator must act on, inferred from how the provider answers: refresh tokens
//! dying after the Testing publishing status's 7 days, refresh tokens dying early (the
//! 100-tokens-per-user cap), and grantkeeper's own client credentials refused.

use super::harness::{Code, Env, captured_logs};
use grantkeeper_broker::{BrokerError, BrokerSettings, TokenRequest};
use grantkeeper_core::metrics::{Warning, series};
use grantkeeper_core::{GrantState, Metrics, SecretString};
use serde_json::json;

const DAY: i64 = 86_400;

fn warnings_sample(page: &str, kind: &str) -> Option<f64> {
    let name = format!("grantkeeper_warnings_total{{kind=\"{kind}\"}}");
    page.lines().find_map(|line| {
        let (sample, value) = line.rsplit_once(' ')?;
        (sample == name).then(|| value.parse().unwrap())
    })
}

fn counted(metrics: &Metrics) -> Vec<u64> {
    Warning::ALL
        .iter()
        .map(|w| metrics.warning_count(*w))
        .collect()
}

/// Series and counts of the warning activity drained from `metrics`.
fn warning_activity(metrics: &Metrics) -> Vec<(&'static str, u64)> {
    metrics
        .take_activity()
        .into_iter()
        .filter(|p| p.series.starts_with("warning_"))
        .map(|p| (p.series, p.count))
        .collect()
}

#[tokio::test]
async fn a_refresh_token_dying_after_seven_days_is_reported_as_the_testing_expiry() {
    let env = Env::start().await;
    env.settings(json!({"testing_mode": true})).await;
    let sub = env.sign_in("tester@example.com").await;
    let metrics = Metrics::new(env.shared_clock());
    let broker = env.broker_with(BrokerSettings {
        metrics: metrics.clone(),
        ..BrokerSettings::default()
    });
    // Healthy for six days: refreshes succeed and nothing is reported.
    env.advance(6 * DAY);
    broker
        .access_token(&sub, &TokenRequest::default())
        .await
        .unwrap();
    assert_eq!(counted(&metrics), [0, 0, 0]);

    env.advance(DAY + 3600);
    let reason = match broker.access_token(&sub, &TokenRequest::default()).await {
        Err(BrokerError::Revoked { reason }) => reason,
        other => panic!("{other:?}"),
    };
    assert!(reason.starts_with("invalid_grant at refresh: "), "{reason}");
    assert!(reason.contains("7.0 days old"), "{reason}");
    assert!(reason.contains("Testing publishing status"), "{reason}");
    let grant = env.grant(&sub).await;
    assert_eq!(grant.state, GrantState::Revoked);
    assert_eq!(grant.reason.as_deref(), Some(reason.as_str()));

    assert_eq!(counted(&metrics), [1, 0, 0]);
    let page = metrics.encode(&[]);
    assert_eq!(
        warnings_sample(&page, "testing_expiry"),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        warning_activity(&metrics),
        [(series::WARNING_TESTING_EXPIRY, 1)]
    );
    let logs = captured_logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("warning=\"testing_expiry\"")
                && l.contains(&sub)
                && l.contains("Publish the app")),
        "no testing_expiry warning logged for {sub}"
    );

    // A dead grant is answered from the store: no second warning.
    assert!(matches!(
        broker.access_token(&sub, &TokenRequest::default()).await,
        Err(BrokerError::Revoked { .. })
    ));
    assert_eq!(counted(&metrics), [1, 0, 0]);
}

#[tokio::test]
async fn identity_only_grants_do_not_expire_in_testing_and_warn_of_nothing() {
    let env = Env::start().await;
    env.settings(json!({"testing_mode": true})).await;
    let sub = env
        .sign_in_with(Code {
            scope: "openid email profile",
            ..Code::web("basic@example.com")
        })
        .await;
    let metrics = Metrics::new(env.shared_clock());
    let broker = env.broker_with(BrokerSettings {
        metrics: metrics.clone(),
        ..BrokerSettings::default()
    });
    env.advance(8 * DAY);
    broker
        .access_token(&sub, &TokenRequest::default())
        .await
        .unwrap();
    assert_eq!(env.grant(&sub).await.state, GrantState::Active);
    assert_eq!(counted(&metrics), [0, 0, 0]);
}

#[tokio::test]
async fn a_refresh_token_killed_by_the_per_user_cap_is_reported_as_dying_early() {
    let env = Env::start().await;
    // Google keeps 100 refresh tokens per user and client; 2 here, so that a few consents
    // elsewhere (another system exchanging codes for the same client) push out ours.
    env.settings(json!({"refresh_token_cap": 2})).await;
    let sub = env.sign_in("capped@example.com").await;
    for _ in 0..2 {
        let code = env
            .mint_code(&Code {
                prompt: Some("consent"),
                ..Code::web("capped@example.com")
            })
            .await;
        env.provider
            .exchange_code(&SecretString::from(code), "postmessage")
            .await
            .unwrap();
    }
    let metrics = Metrics::new(env.shared_clock());
    let broker = env.broker_with(BrokerSettings {
        metrics: metrics.clone(),
        ..BrokerSettings::default()
    });
    env.advance(2 * DAY);
    let reason = match broker.access_token(&sub, &TokenRequest::default()).await {
        Err(BrokerError::Revoked { reason }) => reason,
        other => panic!("{other:?}"),
    };
    // Google's answer does not say why: a revocation first, the cap second.
    assert!(reason.contains("2.0 days old"), "{reason}");
    assert!(
        reason.contains("likely revoked at Google (by the user, a password change or an administrator), or pushed out by more than 100 refresh tokens"),
        "{reason}"
    );
    assert_eq!(counted(&metrics), [0, 1, 0]);
    assert_eq!(
        warnings_sample(&metrics.encode(&[]), "token_died_early"),
        Some(1.0)
    );
    assert_eq!(
        warning_activity(&metrics),
        [(series::WARNING_TOKEN_DIED_EARLY, 1)]
    );
    assert!(
        captured_logs()
            .lines()
            .any(|l| l.contains("warning=\"token_died_early\"")
                && l.contains(&sub)
                && l.contains("prompt=consent")),
        "no token_died_early warning logged for {sub}"
    );
}

#[tokio::test]
async fn a_refresh_token_dying_after_months_warns_of_nothing_in_particular() {
    let env = Env::start().await;
    let sub = env.sign_in("old@example.com").await;
    let metrics = Metrics::new(env.shared_clock());
    let broker = env.broker_with(BrokerSettings {
        metrics: metrics.clone(),
        ..BrokerSettings::default()
    });
    env.advance(40 * DAY);
    broker
        .access_token(&sub, &TokenRequest::default())
        .await
        .unwrap();
    env.revoke_at_google("old@example.com").await;
    env.advance(3700);
    assert!(matches!(
        broker.access_token(&sub, &TokenRequest::default()).await,
        Err(BrokerError::Revoked { .. })
    ));
    assert_eq!(counted(&metrics), [0, 0, 0]);
}

#[tokio::test]
async fn refused_client_credentials_are_reported_once_per_refusal_and_leave_the_grant() {
    let env = Env::start().await;
    let sub = env.sign_in("creds@example.com").await;
    let metrics = Metrics::new(env.shared_clock());
    let wrong = env
        .provider_with_secret("not-the-client-secret")
        .with_metrics(metrics.clone());
    let broker = env.broker_for(
        wrong.clone(),
        BrokerSettings {
            metrics: metrics.clone(),
            ..BrokerSettings::default()
        },
    );
    env.advance(3700);
    let err = broker.refresh_now(&sub).await.unwrap_err();
    assert!(matches!(err, BrokerError::Misconfigured { .. }), "{err:?}");
    assert_eq!(env.grant(&sub).await.state, GrantState::Active);
    assert_eq!(counted(&metrics), [0, 0, 1]);

    // A code exchange with the same credentials is refused and counted too.
    let code = env.mint_code(&Code::web("creds@example.com")).await;
    assert!(
        wrong
            .exchange_code(&SecretString::from(code), "postmessage")
            .await
            .is_err()
    );
    assert_eq!(counted(&metrics), [0, 0, 2]);
    assert_eq!(
        warnings_sample(&metrics.encode(&[]), "invalid_client"),
        Some(2.0)
    );
    let logs = captured_logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("warning=\"invalid_client\"")
                && l.contains("call=\"refresh\"")
                && l.contains("provider.client_secret")),
        "no invalid_client warning logged"
    );
    assert!(!logs.contains("not-the-client-secret"));
}
