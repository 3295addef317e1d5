//! Discovery, published keys, ID token shape and key rotation (reference §1.2, §4, §10.1, §10.7).

use super::helpers::*;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

#[tokio::test]
async fn discovery_lists_googles_fields_at_the_emulators_base() {
    let t = TestEmu::start().await;
    let a = t.get("/.well-known/openid-configuration").await;
    assert_eq!(a.status, 200);
    let d = &a.body;
    for field in [
        "issuer",
        "authorization_endpoint",
        "device_authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "revocation_endpoint",
        "jwks_uri",
        "response_types_supported",
        "response_modes_supported",
        "authorization_response_iss_parameter_supported",
        "subject_types_supported",
        "id_token_signing_alg_values_supported",
        "scopes_supported",
        "claims_supported",
        "token_endpoint_auth_methods_supported",
        "code_challenge_methods_supported",
        "grant_types_supported",
    ] {
        assert!(d.get(field).is_some(), "missing {field}");
    }
    assert_eq!(d["issuer"], t.base);
    assert_eq!(d["authorization_endpoint"], t.url("/o/oauth2/v2/auth"));
    assert_eq!(d["token_endpoint"], t.url("/token"));
    assert_eq!(d["revocation_endpoint"], t.url("/revoke"));
    assert_eq!(d["userinfo_endpoint"], t.url("/oauth2/v3/userinfo"));
    assert_eq!(d["jwks_uri"], t.url("/oauth2/v3/certs"));
    assert_eq!(d["id_token_signing_alg_values_supported"], json!(["RS256"]));
    assert_eq!(
        d["token_endpoint_auth_methods_supported"],
        json!(["client_secret_post", "client_secret_basic"])
    );
    assert_eq!(
        d["code_challenge_methods_supported"],
        json!(["plain", "S256"])
    );
}

#[tokio::test]
async fn nested_base_url_prefixes_every_endpoint() {
    let clock = grantkeeper_core::ManualClock::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/_google", listener.local_addr().unwrap());
    let emu = grantkeeper_emulator::Emulator::open(grantkeeper_emulator::EmulatorOptions {
        base_url: base.parse().unwrap(),
        data_dir: None,
        clock,
        control_api: true,
    })
    .await
    .unwrap();
    let app = axum::Router::new().nest("/_google", emu.router());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let d: Value = reqwest::get(format!("{base}/.well-known/openid-configuration"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["issuer"], base);
    assert_eq!(d["token_endpoint"], format!("{base}/token"));
    let secret = emu.client_secret_json();
    assert_eq!(secret["web"]["token_uri"], format!("{base}/token"));
    assert_eq!(secret["web"]["auth_uri"], format!("{base}/o/oauth2/auth"));
}

#[tokio::test]
async fn v1_and_v3_publish_the_same_keys_with_cache_headers() {
    let t = TestEmu::start().await;
    let v3 = t.get("/oauth2/v3/certs").await;
    let v1 = t.get("/oauth2/v1/certs").await;
    for a in [&v3, &v1] {
        assert_eq!(a.status, 200);
        assert_eq!(
            a.header("cache-control"),
            Some("public, max-age=21600, must-revalidate, no-transform")
        );
        let age: i64 = a.header("age").expect("Age header").parse().unwrap();
        assert!((0..21600).contains(&age));
        assert!(a.header("expires").is_some());
    }
    let keys = v3.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let jwk = &keys[0];
    assert_eq!(jwk["kty"], "RSA");
    assert_eq!(jwk["alg"], "RS256");
    assert_eq!(jwk["use"], "sig");
    assert_eq!(jwk["e"], "AQAB");
    let kid = jwk["kid"].as_str().unwrap();
    assert_eq!(kid.len(), 40);
    assert!(kid.chars().all(|c| c.is_ascii_hexdigit()));
    let certs = v1.body.as_object().unwrap();
    assert_eq!(certs.keys().collect::<Vec<_>>(), vec![kid]);
    let pem = certs[kid].as_str().unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));

    // One ID token verifies with the JWK (as Go and Java do) and with the PEM certificate
    // (as Node and Python do): the same key.
    let tokens = t.sign_in("alice@example.com", "openid email").await;
    let id_token = tokens.str("id_token");
    t.verify_id_token(id_token).await;
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&[&t.web_id]);
    let by_cert = jsonwebtoken::decode::<Value>(
        id_token,
        &DecodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        &v,
    );
    assert!(by_cert.is_ok(), "{by_cert:?}");

    t.settings(json!({"jwks_max_age_secs": 100})).await;
    let a = t.get("/oauth2/v3/certs").await;
    assert_eq!(
        a.header("cache-control"),
        Some("public, max-age=100, must-revalidate, no-transform")
    );
}

#[tokio::test]
async fn web_id_tokens_carry_googles_claims() {
    let t = TestEmu::start().await;
    let a = t
        .sign_in(
            "alice@example.com",
            &format!("openid email profile {DRIVE_APPDATA}"),
        )
        .await;
    let id_token = a.str("id_token");
    let (header, _) = peek(id_token);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "JWT");
    let claims = t.verify_id_token(id_token).await;
    assert_eq!(claims["iss"], t.base);
    assert_eq!(claims["aud"], t.web_id);
    assert_eq!(claims["azp"], t.web_id);
    let sub = claims["sub"].as_str().unwrap();
    assert_eq!(sub.len(), 21);
    assert!(sub.chars().all(|c| c.is_ascii_digit()));
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["name"], "Alice Example");
    assert_eq!(claims["given_name"], "Alice");
    assert_eq!(claims["family_name"], "Example");
    assert!(claims["picture"].as_str().unwrap().starts_with(&t.base));
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 3600);
    assert!((iat - now()).abs() < 60);
    // at_hash: base64url of the left half of SHA-256(access_token).
    let digest =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, a.str("access_token").as_bytes());
    use base64::Engine;
    let expected = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16]);
    assert_eq!(claims["at_hash"], expected);

    // sub is stable per email, across codes and emulator instances; other users differ.
    let again = t.sign_in("alice@example.com", "openid").await;
    let c2 = t.verify_id_token(again.str("id_token")).await;
    assert_eq!(c2["sub"], sub);
    assert!(
        c2.get("email").is_none(),
        "email claim needs the email scope"
    );
    let other = TestEmu::start().await;
    let c3 = other
        .verify_id_token(
            other
                .sign_in("alice@example.com", "openid")
                .await
                .str("id_token"),
        )
        .await;
    assert_eq!(c3["sub"], sub);
    let bob = t.sign_in("bob@example.com", "openid").await;
    assert_ne!(t.verify_id_token(bob.str("id_token")).await["sub"], sub);
}

#[tokio::test]
async fn native_codes_give_aud_web_and_azp_native() {
    let t = TestEmu::start().await;
    for (email, native) in [
        ("carol@example.com", t.emu.android_client_id()),
        ("dave@example.com", t.emu.ios_client_id()),
    ] {
        let code = t
            .code(json!({
                "email": email,
                "scope": format!("openid email {DRIVE_APPDATA}"),
                "azp": native,
                "redirect_uri": "",
            }))
            .await;
        let a = t.exchange(&code, "").await;
        assert_eq!(a.status, 200, "{}", a.text);
        assert!(a.body.get("refresh_token").is_some());
        let claims = t.verify_id_token(a.str("id_token")).await;
        assert_eq!(claims["aud"], t.web_id);
        assert_eq!(claims["azp"], native);
    }
    // Client ids look like Google's.
    for id in [
        t.web_id.clone(),
        t.emu.android_client_id(),
        t.emu.ios_client_id(),
    ] {
        let (num, rest) = id.split_once('-').unwrap();
        assert_eq!(num.len(), 12);
        assert!(num.chars().all(|c| c.is_ascii_digit()));
        let suffix = rest.strip_suffix(".apps.googleusercontent.com").unwrap();
        assert_eq!(suffix.len(), 32);
        assert!(
            suffix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
    }
    let secret = t.web_secret.strip_prefix("GOCSPX-").unwrap();
    assert_eq!(secret.len(), 28);
}

#[tokio::test]
async fn the_bare_issuer_spelling_can_be_chosen() {
    let t = TestEmu::start().await;
    t.settings(json!({"id_token_iss": "bare"})).await;
    let a = t.sign_in("alice@example.com", "openid").await;
    let bare = t.base.strip_prefix("http://").unwrap();
    let claims = verify_with_jwks(a.str("id_token"), &t.jwks().await, &t.web_id, &[bare]);
    assert_eq!(claims["iss"], bare);
}

#[tokio::test]
async fn rotation_signs_with_the_new_key_and_keeps_the_old_one_published() {
    let t = TestEmu::start().await;
    let before = t.sign_in("alice@example.com", "openid").await;
    let old_token = before.str("id_token").to_owned();
    let old_kid = peek(&old_token).0["kid"].as_str().unwrap().to_owned();

    let r = t.post_json("/_emulator/keys/rotate", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let new_kid = r.str("kid").to_owned();
    assert_ne!(new_kid, old_kid);
    assert_eq!(r.body["published"], json!([new_kid, old_kid]));

    let after = t.sign_in("alice@example.com", "openid").await;
    assert_eq!(peek(after.str("id_token")).0["kid"], new_kid);
    t.verify_id_token(after.str("id_token")).await;
    // The old key still verifies what it signed, on v3 and v1.
    t.verify_id_token(&old_token).await;
    let v1 = t.get("/oauth2/v1/certs").await;
    assert!(v1.body.get(&old_kid).is_some());
    assert!(v1.body.get(&new_kid).is_some());

    // At most three keys are published at once.
    for _ in 0..3 {
        t.post_json("/_emulator/keys/rotate", json!({})).await;
    }
    assert_eq!(t.jwks().await.keys.len(), 3);

    // A retired key leaves the set a day after its retirement.
    t.settings(json!({"clock_offset_secs": 2 * 86_400})).await;
    let jwks = t.jwks().await;
    assert_eq!(jwks.keys.len(), 1);
    assert!(jwks.find(&old_kid).is_none());
}
