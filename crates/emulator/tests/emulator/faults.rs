//! Injected faults and spoiled ID tokens (reference §2.7, §10.11).

use super::helpers::*;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

#[tokio::test]
async fn error_rate_faults_are_deterministic_and_counted() {
    let t = TestEmu::start().await;
    let a = t.sign_in("alice@example.com", "openid").await;
    let rt = a.str("refresh_token").to_owned();
    t.faults(json!({"token": {"error_rate": 0.5, "status": 503}}))
        .await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(t.refresh(&rt).await.status.as_u16());
    }
    assert_eq!(statuses, vec![200, 503, 200, 503, 200, 503]);
    let stats = t.stats().await;
    assert_eq!(stats["refreshes"], 3);
    assert_eq!(stats["token_requests"], 7);
    let f = t.get("/_emulator/faults").await;
    assert_eq!(f.body["token"]["error_rate"], 0.5);
    // {} clears every fault.
    t.faults(json!({})).await;
    assert_eq!(t.get("/_emulator/faults").await.body, json!({}));
    assert_eq!(t.refresh(&rt).await.status, 200);
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let t = TestEmu::start().await;
    let a = t.sign_in("alice@example.com", "openid").await;
    t.faults(json!({"token": {"status": 429, "retry_after_secs": 7}}))
        .await;
    let r = t.refresh(a.str("refresh_token")).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("7"));
    assert_eq!(
        r.body,
        json!({"error": "rate_limit_exceeded", "error_description": "Rate Limit Exceeded"})
    );
    let s = t
        .put_json("/_emulator/faults", json!({"token": {"error_rate": 2.0}}))
        .await;
    assert_eq!(s.status, 400);
}

#[tokio::test]
async fn html_garbage_and_empty_bodies() {
    let t = TestEmu::start().await;
    let a = t.sign_in("alice@example.com", "openid").await;
    let rt = a.str("refresh_token");

    t.faults(json!({"token": {"body": "html"}})).await;
    let r = t.refresh(rt).await;
    assert_eq!(r.status, 403);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.text.contains("<html"));

    t.faults(json!({"token": {"body": "garbage"}})).await;
    let r = t.refresh(rt).await;
    assert_eq!(r.status, 200);
    assert!(
        serde_json::from_str::<Value>(&r.text).is_err(),
        "{}",
        r.text
    );

    t.faults(json!({"token": {"status": 502, "body": "empty"}}))
        .await;
    let r = t.refresh(rt).await;
    assert_eq!(r.status, 502);
    assert!(r.text.is_empty());
}

#[tokio::test]
async fn latency_delays_answers_without_failing_them() {
    let t = TestEmu::start().await;
    let a = t.sign_in("alice@example.com", "openid").await;
    t.faults(json!({"token": {"latency_ms": 50}})).await;
    let started = grantkeeper_core::Stopwatch::start();
    let r = t.refresh(a.str("refresh_token")).await;
    // A lower bound only: the emulator sleeps at least this long before answering.
    assert!(started.elapsed() >= std::time::Duration::from_millis(50));
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn faults_reach_certs_discovery_userinfo_tokeninfo_and_revoke() {
    let t = TestEmu::start().await;
    let a = t.sign_in("alice@example.com", "openid email").await;
    t.faults(json!({
        "certs": {"status": 500},
        "discovery": {"status": 503},
        "userinfo": {"status": 503},
        "tokeninfo": {"status": 429},
        "revoke": {"status": 503},
    }))
    .await;
    assert_eq!(t.get("/oauth2/v3/certs").await.status, 500);
    assert_eq!(t.get("/oauth2/v1/certs").await.status, 500);
    assert_eq!(t.get("/.well-known/openid-configuration").await.status, 503);
    assert_eq!(t.userinfo(a.str("access_token")).await.status, 503);
    let ti = t
        .get(&format!(
            "/tokeninfo?access_token={}",
            a.str("access_token")
        ))
        .await;
    assert_eq!(ti.status, 429);
    assert!(ti.header("retry-after").is_some());
    let r = t
        .post_form("/revoke", &[("token", a.str("access_token"))])
        .await;
    assert_eq!(r.status, 503);
    // The failed revocation changed nothing.
    t.faults(json!({})).await;
    assert_eq!(t.refresh(a.str("refresh_token")).await.status, 200);
}

/// Exchanges a fresh code with the given tampering active; the token answer.
async fn spoiled(t: &TestEmu, tamper: &str) -> Value {
    t.faults(json!({"id_token": {"tamper": tamper, "count": 1}}))
        .await;
    let code = t.popup_code("alice@example.com", "openid email").await;
    let a = t.exchange(&code, "postmessage").await;
    assert_eq!(a.status, 200, "{}", a.text);
    a.body
}

fn verifies(token: &str, jwks: &jsonwebtoken::jwk::JwkSet, aud: &str, iss: &str) -> bool {
    let Ok(header) = jsonwebtoken::decode_header(token) else {
        return false;
    };
    let Some(jwk) = header.kid.as_deref().and_then(|k| jwks.find(k)) else {
        return false;
    };
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&[aud]);
    v.set_issuer(&[iss]);
    v.leeway = 0;
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &v).is_ok()
}

#[tokio::test]
async fn id_token_tampering_spoils_tokens_the_verifier_must_reject() {
    let t = TestEmu::start().await;
    let jwks = t.jwks().await;
    let good = t.sign_in("alice@example.com", "openid email").await;
    let good_claims = t.verify_id_token(good.str("id_token")).await;

    for tamper in [
        "bad_signature",
        "alg_none",
        "hs256",
        "wrong_aud",
        "extra_aud",
        "wrong_iss",
        "no_sub",
        "expired",
        "iat_future",
        "unknown_kid",
        "azp_unauthorized",
    ] {
        let body = spoiled(&t, tamper).await;
        let token = body["id_token"].as_str().unwrap();
        let (header, claims) = peek(token);
        let strict = verifies(token, &jwks, &t.web_id, &t.base);
        match tamper {
            "bad_signature" => {
                assert!(!strict);
                assert_eq!(claims["sub"], good_claims["sub"]);
            }
            "alg_none" => {
                assert_eq!(header["alg"], "none");
                assert!(token.ends_with('.'));
            }
            "hs256" => assert_eq!(header["alg"], "HS256"),
            "wrong_aud" => {
                assert!(!strict);
                assert_ne!(claims["aud"], t.web_id);
            }
            "extra_aud" => {
                assert_eq!(claims["aud"].as_array().unwrap().len(), 2);
                assert_eq!(claims["aud"][0], t.web_id);
            }
            "wrong_iss" => {
                assert!(!strict);
                assert_ne!(claims["iss"], t.base);
            }
            "no_sub" => assert!(claims.get("sub").is_none()),
            "expired" => {
                assert!(!strict);
                assert!(claims["exp"].as_i64().unwrap() < now());
            }
            "iat_future" => assert!(claims["iat"].as_i64().unwrap() > now() + 600),
            "unknown_kid" => {
                assert!(!strict);
                assert!(jwks.find(header["kid"].as_str().unwrap()).is_none());
            }
            "azp_unauthorized" => {
                assert_ne!(claims["azp"], t.web_id);
                assert_ne!(claims["azp"], t.emu.android_client_id());
                assert!(
                    strict,
                    "signature, aud and iss are fine; only azp is foreign"
                );
            }
            _ => unreachable!(),
        }
        if !matches!(tamper, "alg_none" | "hs256") {
            assert_eq!(header["alg"], "RS256", "{tamper}");
        }
    }
    let missing = spoiled(&t, "missing").await;
    assert!(missing.get("id_token").is_none());
    assert!(missing.get("access_token").is_some());
    // count: 1 spoiled only one token.
    let after = t.sign_in("alice@example.com", "openid").await;
    t.verify_id_token(after.str("id_token")).await;

    // Without count, every token is spoiled until cleared.
    t.faults(json!({"id_token": {"tamper": "wrong_aud"}})).await;
    for _ in 0..2 {
        let a = t.sign_in("alice@example.com", "openid").await;
        assert_ne!(peek(a.str("id_token")).1["aud"], t.web_id);
    }
}
