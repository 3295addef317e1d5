//! Revocation, userinfo and tokeninfo (reference §1.3, §1.4, §5, §10.8).

use super::helpers::*;
use serde_json::json;

#[tokio::test]
async fn revoking_a_refresh_token_kills_the_whole_grant() {
    let t = TestEmu::start().await;
    let a = t
        .sign_in(
            "alice@example.com",
            &format!("openid email {DRIVE_APPDATA}"),
        )
        .await;
    let rt = a.str("refresh_token");
    let refreshed = t.refresh(rt).await;
    let code = t
        .code(json!({"email": "alice@example.com", "scope": "openid email", "prompt": "consent"}))
        .await;
    let second_rt = t
        .exchange(&code, "postmessage")
        .await
        .str("refresh_token")
        .to_owned();
    let bob = t.sign_in("bob@example.com", "openid email").await;

    let r = t.post_form("/revoke", &[("token", rt)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!({}));

    t.refresh(rt).await.assert_error(
        400,
        "invalid_grant",
        Some("Token has been expired or revoked."),
    );
    t.refresh(&second_rt).await.assert_error(
        400,
        "invalid_grant",
        Some("Token has been expired or revoked."),
    );
    assert_eq!(t.userinfo(a.str("access_token")).await.status, 401);
    assert_eq!(t.userinfo(refreshed.str("access_token")).await.status, 401);
    // Other users keep theirs.
    assert_eq!(t.refresh(bob.str("refresh_token")).await.status, 200);

    let again = t.post_form("/revoke", &[("token", rt)]).await;
    assert_eq!(again.status, 400);
    assert_eq!(
        again.body,
        json!({"error": "invalid_token", "error_description": "Token expired or revoked"})
    );
    let unknown = t.post_form("/revoke", &[("token", "ya29.unknown")]).await;
    assert_eq!(unknown.status, 400);
}

#[tokio::test]
async fn revoking_an_access_token_in_the_query_revokes_its_refresh_token() {
    let t = TestEmu::start().await;
    let a = t.sign_in("alice@example.com", "openid email").await;
    let res = t
        .http
        .post(t.url("/revoke"))
        .query(&[("token", a.str("access_token"))])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    t.refresh(a.str("refresh_token"))
        .await
        .assert_error(400, "invalid_grant", None);
}

#[tokio::test]
async fn revoking_a_user_revokes_every_grant_of_theirs() {
    let t = TestEmu::start().await;
    let other = t
        .post_json("/_emulator/clients", json!({"type": "web"}))
        .await;
    let (oid, osecret) = (
        other.str("client_id").to_owned(),
        other.str("client_secret").to_owned(),
    );
    let a = t.sign_in("alice@example.com", "openid").await;
    let code = t
        .code(json!({"email": "alice@example.com", "scope": "openid", "client_id": oid}))
        .await;
    let b = t
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("client_id", &oid),
                ("client_secret", &osecret),
                ("redirect_uri", "postmessage"),
            ],
        )
        .await;
    let bob = t.sign_in("bob@example.com", "openid").await;

    let r = t
        .post_json("/_emulator/users/alice@example.com/revoke", json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["revoked_grants"], 2);
    t.refresh(a.str("refresh_token"))
        .await
        .assert_error(400, "invalid_grant", None);
    t.post_form(
        "/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", b.str("refresh_token")),
            ("client_id", &oid),
            ("client_secret", &osecret),
        ],
    )
    .await
    .assert_error(400, "invalid_grant", None);
    assert_eq!(t.refresh(bob.str("refresh_token")).await.status, 200);
}

#[tokio::test]
async fn userinfo_answers_claims_of_the_granted_scopes() {
    let t = TestEmu::start().await;
    let full = t
        .sign_in("alice.smith@example.com", "openid email profile")
        .await;
    let u = t.userinfo(full.str("access_token")).await;
    assert_eq!(u.status, 200);
    assert_eq!(u.body["email"], "alice.smith@example.com");
    assert_eq!(u.body["email_verified"], true);
    assert_eq!(u.body["name"], "Alice Smith");
    let claims = t.verify_id_token(full.str("id_token")).await;
    assert_eq!(u.body["sub"], claims["sub"]);

    let narrow = t.sign_in("bob@example.com", "openid").await;
    let u = t.userinfo(narrow.str("access_token")).await;
    assert_eq!(u.status, 200);
    assert!(u.body.get("email").is_none());
    assert!(u.body.get("name").is_none());

    let bad = t.userinfo("ya29.bogus").await;
    assert_eq!(bad.status, 401);
    assert!(
        bad.header("www-authenticate")
            .unwrap()
            .starts_with("Bearer ")
    );
    assert_eq!(
        bad.body,
        json!({"error": "invalid_request", "error_description": "Invalid Credentials"})
    );
    let none = t.get("/oauth2/v3/userinfo").await;
    assert_eq!(none.status, 401);
}

#[tokio::test]
async fn tokeninfo_answers_strings() {
    let t = TestEmu::start().await;
    let a = t
        .sign_in(
            "alice@example.com",
            &format!("openid email {DRIVE_APPDATA}"),
        )
        .await;
    let info = t
        .get(&format!(
            "/tokeninfo?access_token={}",
            a.str("access_token")
        ))
        .await;
    assert_eq!(info.status, 200, "{}", info.text);
    assert_eq!(info.body["aud"], t.web_id);
    assert_eq!(info.body["azp"], t.web_id);
    assert_eq!(info.body["email"], "alice@example.com");
    assert_eq!(info.body["email_verified"], "true");
    assert_eq!(info.body["access_type"], "offline");
    assert!(info.body["exp"].is_string());
    let expires_in: i64 = info.str("expires_in").parse().unwrap();
    assert!((3500..=3600).contains(&expires_in));
    assert_eq!(
        scope_set(info.str("scope")),
        sorted(&["openid", EMAIL, DRIVE_APPDATA])
    );

    let id = t
        .post_form("/tokeninfo", &[("id_token", a.str("id_token"))])
        .await;
    assert_eq!(id.status, 200, "{}", id.text);
    for v in id.body.as_object().unwrap().values() {
        assert!(v.is_string(), "{v}");
    }
    assert_eq!(id.body["alg"], "RS256");
    assert_eq!(id.body["typ"], "JWT");
    assert_eq!(id.body["email_verified"], "true");
    assert_eq!(id.body["aud"], t.web_id);
    let iat: i64 = id.str("iat").parse().unwrap();
    assert!((iat - now()).abs() < 60);

    for bad in [
        "/tokeninfo?access_token=ya29.nope",
        "/tokeninfo?id_token=a.b.c",
        "/tokeninfo",
    ] {
        let r = t.get(bad).await;
        assert_eq!(r.status, 400);
        assert_eq!(
            r.body,
            json!({"error": "invalid_token", "error_description": "Invalid Value"})
        );
    }
}
