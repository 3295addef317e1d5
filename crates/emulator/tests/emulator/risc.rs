//! Cross-Account Protection: configuration, keys and delivered security event tokens
//! (reference §6, §10.10).

use super::helpers::*;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

type Inbox = Arc<Mutex<Vec<(String, String)>>>;

/// A receiver that records what it is sent and answers 202, as grantkeeper's will.
async fn receiver() -> (String, Inbox) {
    let inbox: Inbox = Arc::default();
    let kept = inbox.clone();
    let app = axum::Router::new().route(
        "/risc",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let kept = kept.clone();
            async move {
                let ct = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                kept.lock()
                    .unwrap()
                    .push((ct, String::from_utf8(body.to_vec()).unwrap()));
                StatusCode::ACCEPTED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/risc", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, inbox)
}

/// Verifies a SET as a receiver does: key by kid from the RISC jwks_uri, RS256, iss equal to
/// the configuration's issuer, aud the web client, no expiry check (events are historical).
async fn verify_set(t: &TestEmu, token: &str) -> Value {
    let config = t.get("/.well-known/risc-configuration").await.body;
    let issuer = config["issuer"].as_str().unwrap().to_owned();
    let jwks: JwkSet = t
        .http
        .get(config["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let jwk = jwks
        .find(&header.kid.unwrap())
        .expect("kid in the RISC jwks");
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&[&t.web_id]);
    v.set_issuer(&[&issuer]);
    v.validate_exp = false;
    v.required_spec_claims.clear();
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &v)
        .unwrap()
        .claims
}

#[tokio::test]
async fn risc_configuration_has_its_own_keys() {
    let t = TestEmu::start().await;
    let c = t.get("/.well-known/risc-configuration").await;
    assert_eq!(c.status, 200);
    assert_eq!(c.body["issuer"], format!("{}/", t.base));
    assert_eq!(c.body["jwks_uri"], t.url("/risc/jwks"));
    assert_eq!(
        c.body["delivery_methods_supported"],
        json!(["https://schemas.openid.net/secevent/risc/delivery-method/push"])
    );
    let risc = t.get("/risc/jwks").await.body;
    let oidc = t.get("/oauth2/v3/certs").await.body;
    assert_eq!(risc["keys"].as_array().unwrap().len(), 1);
    assert_ne!(risc["keys"][0]["kid"], oidc["keys"][0]["kid"]);
}

#[tokio::test]
async fn security_events_are_signed_and_delivered() {
    let t = TestEmu::start().await;
    let (url, inbox) = receiver().await;
    let signed_in = t.sign_in("alice@example.com", "openid email").await;
    let sub = t.verify_id_token(signed_in.str("id_token")).await["sub"].clone();

    let r = t
        .post_json(
            "/_emulator/risc",
            json!({"email": "alice@example.com", "event": "account-disabled", "reason": "hijacking", "receiver": url}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["receiver_status"], 202);
    let (ct, set) = inbox.lock().unwrap().pop().unwrap();
    assert_eq!(ct, "application/secevent+jwt");
    let claims = verify_set(&t, &set).await;
    assert!(claims["iss"].as_str().unwrap().ends_with('/'));
    assert_eq!(claims["aud"], t.web_id);
    assert_eq!(claims["jti"], r.body["jti"]);
    assert!((claims["iat"].as_i64().unwrap() - now()).abs() < 60);
    let event =
        &claims["events"]["https://schemas.openid.net/secevent/risc/event-type/account-disabled"];
    assert_eq!(event["reason"], "hijacking");
    assert_eq!(event["subject"]["subject_type"], "iss-sub");
    assert_eq!(event["subject"]["iss"], claims["iss"]);
    assert_eq!(event["subject"]["sub"], sub);

    // Token events live in the oauth namespace; the user's grants are gone at "Google" too.
    let r = t
        .post_json(
            "/_emulator/risc",
            json!({"email": "alice@example.com", "event": "tokens-revoked", "receiver": url}),
        )
        .await;
    assert_eq!(r.body["receiver_status"], 202);
    let (_, set) = inbox.lock().unwrap().pop().unwrap();
    let claims = verify_set(&t, &set).await;
    assert!(
        claims["events"]
            .get("https://schemas.openid.net/secevent/oauth/event-type/tokens-revoked")
            .is_some()
    );
    t.refresh(signed_in.str("refresh_token"))
        .await
        .assert_error(400, "invalid_grant", None);

    // The verification event carries the state instead of a subject.
    let r = t
        .post_json(
            "/_emulator/risc",
            json!({"event": "verification", "state": "ping-1", "receiver": url}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (_, set) = inbox.lock().unwrap().pop().unwrap();
    let claims = verify_set(&t, &set).await;
    assert_eq!(
        claims["events"]["https://schemas.openid.net/secevent/risc/event-type/verification"]["state"],
        "ping-1"
    );

    // The receiver's status is reported as it is; bad requests are refused.
    let r = t
        .post_json(
            "/_emulator/risc",
            json!({"email": "a@example.com", "event": "sessions-revoked", "receiver": format!("{url}/missing")}),
        )
        .await;
    assert_eq!(r.body["receiver_status"], 404);
    let r = t
        .post_json(
            "/_emulator/risc",
            json!({"email": "a@example.com", "event": "nope", "receiver": url}),
        )
        .await;
    assert_eq!(r.status, 400);
}

/// The control API never makes the emulator post signed events to a host of the caller's
/// choosing: alone, only to receivers on loopback; beside a deployment, only to its receiver.
#[tokio::test]
async fn security_events_go_only_to_the_deployments_receiver() {
    let t = TestEmu::start().await;
    let (own, inbox) = receiver().await;
    let (other, other_inbox) = receiver().await;
    let event = |receiver: Option<&str>| {
        let mut body = json!({"email": "alice@example.com", "event": "sessions-revoked"});
        if let Some(r) = receiver {
            body["receiver"] = json!(r);
        }
        body
    };
    for foreign in [
        "http://192.0.2.1/risc",
        "https://evil.example/risc",
        "http://localhost.evil.example/risc",
    ] {
        let r = t.post_json("/_emulator/risc", event(Some(foreign))).await;
        assert_eq!(r.status, 403, "{foreign}: {}", r.text);
        assert_eq!(r.body["error"], "forbidden", "{}", r.text);
    }
    let r = t.post_json("/_emulator/risc", event(None)).await;
    assert_eq!(r.status, 400, "{}", r.text);

    // Beside a deployment, its receiver is the only one, and the default.
    assert!(t.emu.deliver_security_events_only_to(own.parse().unwrap()));
    let r = t.post_json("/_emulator/risc", event(Some(&other))).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(other_inbox.lock().unwrap().is_empty());
    let r = t.post_json("/_emulator/risc", event(None)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["receiver_status"], 202);
    let r = t.post_json("/_emulator/risc", event(Some(&own))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(inbox.lock().unwrap().len(), 2);
    assert!(other_inbox.lock().unwrap().is_empty());
}
