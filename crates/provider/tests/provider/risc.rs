//! Security event tokens as the emulator signs and pushes them, verified through the RISC
//! configuration it publishes.

use super::support::Env;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use grantkeeper_core::{Clock, ExposeSecret, SecretString, SharedClock};
use grantkeeper_provider::risc::{DisabledReason, Event, Subject};
use grantkeeper_provider::{SecurityEventError, SecurityEventVerifier};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

/// A receiver that keeps every body pushed to it and answers 202, as a valid receipt.
struct Capture {
    url: String,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl Capture {
    async fn start() -> Capture {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = bodies.clone();
        let app = axum::Router::new().route(
            "/risc",
            axum::routing::post(move |body: String| {
                let kept = kept.clone();
                async move {
                    kept.lock().unwrap().push(body);
                    axum::http::StatusCode::ACCEPTED
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/risc", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Capture { url, bodies }
    }
}

/// Has the emulator sign and push one event to `capture`; returns the token it pushed.
async fn emit(env: &Env, capture: &Capture, body: Value) -> SecretString {
    let mut body = body;
    body["receiver"] = json!(capture.url);
    let url = format!("{}/_emulator/risc", env.base.as_str().trim_end_matches('/'));
    let res = env.http.post(url).json(&body).send().await.unwrap();
    let answer: Value = res.json().await.unwrap();
    assert_eq!(answer["receiver_status"], 202, "{answer}");
    let set = capture.bodies.lock().unwrap().pop().unwrap();
    SecretString::from(set)
}

fn verifier(env: &Env) -> SecurityEventVerifier {
    let clock: SharedClock = env.clock.clone();
    SecurityEventVerifier::new(env.settings(), env.http.clone(), clock)
}

#[tokio::test]
async fn the_emulators_events_verify_under_an_issuer_with_a_path() {
    let env = Env::start_at("/_google").await;
    let capture = Capture::start().await;
    let verifier = verifier(&env);

    let configuration = verifier.configuration().await.unwrap();
    assert!(
        configuration.issuer.ends_with("/_google/"),
        "{configuration:?}"
    );
    assert!(
        configuration
            .jwks_uri
            .as_str()
            .ends_with("/_google/risc/jwks"),
        "{configuration:?}"
    );

    let set = emit(
        &env,
        &capture,
        json!({"email": "Risc@Example.com", "event": "account-disabled", "reason": "hijacking"}),
    )
    .await;
    let event = verifier.verify(&set).await.unwrap();
    assert_eq!(event.audience, env.web_client_id());
    assert!(!event.jti.is_empty());
    assert!((event.issued_at - env.clock.now().unix_timestamp()).abs() < 60);
    let Event::AccountDisabled {
        subject: Subject::Sub(sub),
        reason: Some(DisabledReason::Hijacking),
    } = &event.event
    else {
        panic!("{event:?}")
    };
    assert!(!sub.is_empty());

    // The same account's other events name the same sub, and keys are fetched once.
    let set = emit(
        &env,
        &capture,
        json!({"email": "risc@example.com", "event": "sessions-revoked"}),
    )
    .await;
    let again = verifier.verify(&set).await.unwrap();
    assert!(matches!(&again.event, Event::SessionsRevoked(Subject::Sub(s)) if s == sub));
    assert_ne!(again.jti, event.jti);
    assert_eq!(verifier.key_store_stats().fetches, 1);

    let set = emit(
        &env,
        &capture,
        json!({"event": "verification", "state": "checked by the operator"}),
    )
    .await;
    let check = verifier.verify(&set).await.unwrap();
    assert!(
        matches!(&check.event, Event::Verification { state: Some(s) } if s == "checked by the operator")
    );
}

#[tokio::test]
async fn a_flipped_signature_bit_is_refused() {
    let env = Env::start().await;
    let capture = Capture::start().await;
    let verifier = verifier(&env);
    let set = emit(
        &env,
        &capture,
        json!({"email": "flip@example.com", "event": "tokens-revoked"}),
    )
    .await;
    assert!(verifier.verify(&set).await.is_ok());

    let (input, signature) = set.expose_secret().rsplit_once('.').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
    bytes[20] ^= 0x01;
    let tampered = SecretString::from(format!("{input}.{}", URL_SAFE_NO_PAD.encode(bytes)));
    let err = verifier.verify(&tampered).await.unwrap_err();
    assert_eq!(err.rfc8935_code(), Some("invalid_key"), "{err:?}");
}

#[tokio::test]
async fn another_providers_event_has_an_unknown_key_and_refetches_once_per_cooldown() {
    let ours = Env::start().await;
    let theirs = Env::start().await;
    let capture = Capture::start().await;
    let verifier = verifier(&ours);
    let good = emit(
        &ours,
        &capture,
        json!({"email": "a@example.com", "event": "sessions-revoked"}),
    )
    .await;
    verifier.verify(&good).await.unwrap();
    ours.advance(120);

    let foreign = emit(
        &theirs,
        &capture,
        json!({"email": "a@example.com", "event": "sessions-revoked"}),
    )
    .await;
    let err = verifier.verify(&foreign).await.unwrap_err();
    assert_eq!(err.rfc8935_code(), Some("invalid_key"), "{err:?}");
    assert_eq!(
        verifier.key_store_stats().fetches,
        2,
        "one refetch for the unknown kid"
    );
    let err = verifier.verify(&foreign).await.unwrap_err();
    assert_eq!(err.rfc8935_code(), Some("invalid_key"));
    assert_eq!(
        verifier.key_store_stats().fetches,
        2,
        "none within the cooldown"
    );
}

#[tokio::test]
async fn events_are_history_until_they_are_too_old() {
    let env = Env::start().await;
    let capture = Capture::start().await;
    let verifier = verifier(&env);
    let set = emit(
        &env,
        &capture,
        json!({"email": "old@example.com", "event": "account-enabled"}),
    )
    .await;
    // A day later it still verifies (no exp is checked); a month later it is refused.
    env.advance(86_400);
    assert!(verifier.verify(&set).await.is_ok());
    env.advance(30 * 86_400);
    let err = verifier.verify(&set).await.unwrap_err();
    assert!(
        matches!(err, SecurityEventError::Invalid(ref m) if m.contains("iat")),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_unreachable_configuration_is_transient() {
    let env = Env::start().await;
    let capture = Capture::start().await;
    let set = emit(
        &env,
        &capture,
        json!({"email": "down@example.com", "event": "account-purged"}),
    )
    .await;
    // A verifier pointed at a port where nothing listens.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = url::Url::parse(&format!("http://{}", closed.local_addr().unwrap())).unwrap();
    drop(closed);
    let mut settings = env.settings();
    settings.issuer = issuer;
    let clock: SharedClock = env.clock.clone();
    let verifier = SecurityEventVerifier::new(settings, env.http.clone(), clock);
    let err = verifier.verify(&set).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(err.rfc8935_code(), None);
}

#[tokio::test]
async fn a_failed_configuration_fetch_is_not_retried_within_the_cooldown() {
    let env = Env::start().await;
    let capture = Capture::start().await;
    let set = emit(
        &env,
        &capture,
        json!({"email": "cool@example.com", "event": "sessions-revoked"}),
    )
    .await;
    // A provider that has no RISC configuration to give, counting the asks.
    let asked = Arc::new(Mutex::new(0u32));
    let counter = asked.clone();
    let app = axum::Router::new().route(
        "/.well-known/risc-configuration",
        axum::routing::get(move || {
            let counter = counter.clone();
            async move {
                *counter.lock().unwrap() += 1;
                axum::http::StatusCode::SERVICE_UNAVAILABLE
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = url::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut settings = env.settings();
    settings.issuer = issuer;
    let clock: SharedClock = env.clock.clone();
    let verifier = SecurityEventVerifier::new(settings, env.http.clone(), clock);

    for _ in 0..3 {
        let err = verifier.verify(&set).await.unwrap_err();
        assert!(err.is_transient(), "{err:?}");
    }
    assert_eq!(*asked.lock().unwrap(), 1);
    env.advance(61);
    assert!(verifier.verify(&set).await.unwrap_err().is_transient());
    assert_eq!(*asked.lock().unwrap(), 2);
}
