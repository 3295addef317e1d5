//! Refresh tokens: when they are issued, that they never rotate, the cap, testing-mode and
//! idle expiry, scope subsets, client binding (reference §2.5, §2.6, §3.3, §10.3-§10.5).

use super::helpers::*;
use serde_json::json;

#[tokio::test]
async fn refresh_token_only_at_first_offline_consent_or_prompt_consent() {
    let t = TestEmu::start().await;
    let scope = format!("openid email {DRIVE_APPDATA}");
    let first = t.sign_in("alice@example.com", &scope).await;
    let rt = first.str("refresh_token").to_owned();

    // A later sign-in of the same user to the same client: access token only.
    let second = t.sign_in("alice@example.com", &scope).await;
    assert!(
        second.body.get("refresh_token").is_none(),
        "{}",
        second.text
    );
    assert!(second.body.get("id_token").is_some());

    // prompt=consent forces a new one; the old one keeps working.
    let code = t
        .code(json!({"email": "alice@example.com", "scope": scope, "prompt": "consent"}))
        .await;
    let forced = t.exchange(&code, "postmessage").await;
    let rt2 = forced.str("refresh_token").to_owned();
    assert_ne!(rt, rt2);
    assert_eq!(t.refresh(&rt).await.status, 200);

    // Online access (redirect mode without access_type=offline): never one.
    let uri = "http://127.0.0.1:1/cb";
    let code = t
        .code(json!({"email": "dave@example.com", "scope": scope, "redirect_uri": uri}))
        .await;
    assert!(
        t.exchange(&code, uri)
            .await
            .body
            .get("refresh_token")
            .is_none()
    );
    let code = t
        .code(json!({"email": "dave@example.com", "scope": scope, "redirect_uri": uri, "access_type": "offline"}))
        .await;
    assert!(
        t.exchange(&code, uri)
            .await
            .body
            .get("refresh_token")
            .is_some()
    );

    // Another user gets their own first one.
    assert!(
        t.sign_in("bob@example.com", &scope)
            .await
            .body
            .get("refresh_token")
            .is_some()
    );

    // After the grant is revoked, the next offline consent yields a new refresh token.
    let r = t.post_form("/revoke", &[("token", &rt)]).await;
    assert_eq!(r.status, 200);
    let again = t.sign_in("alice@example.com", &scope).await;
    assert!(again.body.get("refresh_token").is_some(), "{}", again.text);
}

#[tokio::test]
async fn refresh_never_rotates_and_returns_an_id_token_with_openid() {
    let t = TestEmu::start().await;
    let first = t
        .sign_in(
            "alice@example.com",
            &format!("openid email {DRIVE_APPDATA}"),
        )
        .await;
    let rt = first.str("refresh_token");
    for _ in 0..3 {
        let r = t.refresh(rt).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(r.body.get("refresh_token").is_none());
        assert_eq!(r.body["expires_in"], 3599);
        assert_eq!(r.body["token_type"], "Bearer");
        assert_eq!(
            r.header("cache-control"),
            Some("no-cache, no-store, max-age=0, must-revalidate")
        );
        assert_eq!(
            scope_set(r.str("scope")),
            sorted(&["openid", EMAIL, DRIVE_APPDATA])
        );
        assert_ne!(r.str("access_token"), first.str("access_token"));
        let claims = t.verify_id_token(r.str("id_token")).await;
        assert_eq!(claims["email"], "alice@example.com");
        // The old access token stays valid after a refresh.
        assert_eq!(t.userinfo(first.str("access_token")).await.status, 200);
    }
    // email without openid: no ID token on refresh.
    let e = t.sign_in("bob@example.com", "email").await;
    let r = t.refresh(e.str("refresh_token")).await;
    assert!(r.body.get("id_token").is_none());
}

#[tokio::test]
async fn refresh_may_ask_for_a_subset_of_the_grant() {
    let t = TestEmu::start().await;
    let a = t
        .sign_in(
            "alice@example.com",
            &format!("openid email {DRIVE_APPDATA}"),
        )
        .await;
    let rt = a.str("refresh_token");
    let form = |scope: &'static str| {
        vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", rt.to_owned()),
            ("client_id", t.web_id.clone()),
            ("client_secret", t.web_secret.clone()),
            ("scope", scope.to_owned()),
        ]
    };
    let res = t
        .http
        .post(t.url("/token"))
        .form(&form(DRIVE_APPDATA))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["scope"], DRIVE_APPDATA);
    assert!(body.get("id_token").is_none());
    let res = t
        .http
        .post(t.url("/token"))
        .form(&form("https://www.googleapis.com/auth/drive"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "invalid_scope");
}

#[tokio::test]
async fn a_refresh_token_belongs_to_its_client() {
    let t = TestEmu::start().await;
    let a = t.sign_in("alice@example.com", "openid").await;
    let other = t
        .post_json("/_emulator/clients", json!({"type": "web"}))
        .await;
    t.post_form(
        "/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", a.str("refresh_token")),
            ("client_id", other.str("client_id")),
            ("client_secret", other.str("client_secret")),
        ],
    )
    .await
    .assert_error(400, "unauthorized_client", None);
    t.refresh("1//0notatoken").await.assert_error(
        400,
        "invalid_grant",
        Some("Token has been expired or revoked."),
    );
}

/// Issues `n` refresh tokens to alice via prompt=consent (no identity scope: no RSA work).
async fn issue(t: &TestEmu, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let code = t
            .code(
                json!({"email": "alice@example.com", "scope": DRIVE_APPDATA, "prompt": "consent"}),
            )
            .await;
        let a = t.exchange(&code, "postmessage").await;
        out.push(a.str("refresh_token").to_owned());
    }
    out
}

#[tokio::test]
async fn the_cap_silently_kills_the_oldest_refresh_token() {
    let t = TestEmu::start().await;
    t.settings(json!({"refresh_token_cap": 3})).await;
    let rts = issue(&t, 5).await;
    for dead in &rts[..2] {
        t.refresh(dead).await.assert_error(
            400,
            "invalid_grant",
            Some("Token has been expired or revoked."),
        );
    }
    for live in &rts[2..] {
        assert_eq!(t.refresh(live).await.status, 200);
    }
    // Other users are not affected.
    let bob = t.sign_in("bob@example.com", DRIVE_APPDATA).await;
    assert_eq!(t.refresh(bob.str("refresh_token")).await.status, 200);
}

#[tokio::test]
async fn the_default_cap_is_one_hundred() {
    let t = TestEmu::start().await;
    let rts = issue(&t, 101).await;
    t.refresh(&rts[0]).await.assert_error(
        400,
        "invalid_grant",
        Some("Token has been expired or revoked."),
    );
    assert_eq!(t.refresh(&rts[1]).await.status, 200);
    assert_eq!(t.refresh(&rts[100]).await.status, 200);
}

#[tokio::test]
async fn testing_mode_refresh_tokens_die_after_seven_days() {
    let t = TestEmu::start().await;
    t.settings(json!({"testing_mode": true})).await;
    let drive = t
        .sign_in("alice@example.com", &format!("openid {DRIVE_APPDATA}"))
        .await;
    let identity_only = t.sign_in("bob@example.com", "openid email profile").await;
    t.settings(json!({"clock_offset_secs": 6 * 86_400})).await;
    assert_eq!(t.refresh(drive.str("refresh_token")).await.status, 200);
    t.settings(json!({"clock_offset_secs": 7 * 86_400 + 60}))
        .await;
    t.refresh(drive.str("refresh_token")).await.assert_error(
        400,
        "invalid_grant",
        Some("Token has been expired or revoked."),
    );
    assert_eq!(
        t.refresh(identity_only.str("refresh_token")).await.status,
        200
    );
    // Out of testing mode, tokens live on.
    t.settings(json!({"testing_mode": false, "clock_offset_secs": 0}))
        .await;
    let prod = t.sign_in("carol@example.com", DRIVE_APPDATA).await;
    t.settings(json!({"clock_offset_secs": 30 * 86_400})).await;
    assert_eq!(t.refresh(prod.str("refresh_token")).await.status, 200);
}

#[tokio::test]
async fn refresh_tokens_unused_for_six_months_die() {
    let t = TestEmu::start().await;
    let used = t.sign_in("alice@example.com", DRIVE_APPDATA).await;
    let idle = t.sign_in("bob@example.com", DRIVE_APPDATA).await;
    t.clock.advance(time::Duration::days(100));
    assert_eq!(t.refresh(used.str("refresh_token")).await.status, 200);
    t.clock.advance(time::Duration::days(100));
    assert_eq!(t.refresh(used.str("refresh_token")).await.status, 200);
    t.refresh(idle.str("refresh_token")).await.assert_error(
        400,
        "invalid_grant",
        Some("Token has been expired or revoked."),
    );
}

#[tokio::test]
async fn access_tokens_live_for_their_ttl() {
    let t = TestEmu::start().await;
    t.settings(json!({"access_token_ttl_secs": 10})).await;
    let a = t.sign_in("alice@example.com", "openid email").await;
    assert_eq!(a.body["expires_in"], 9);
    assert_eq!(t.userinfo(a.str("access_token")).await.status, 200);
    t.clock.advance(time::Duration::seconds(11));
    assert_eq!(t.userinfo(a.str("access_token")).await.status, 401);
    let r = t.refresh(a.str("refresh_token")).await;
    assert_eq!(r.body["expires_in"], 9);
    assert_eq!(t.userinfo(r.str("access_token")).await.status, 200);
}

/// Google's token endpoint does not say why a refresh token stopped working: revoked by the
/// user or the app, expired after the Testing status's 7 days, pushed out by the cap or idle
/// for six months, the answer is one and the same (reference §2.7), and so is the emulator's.
#[tokio::test]
async fn a_revoked_refresh_token_answers_as_an_expired_one() {
    let t = TestEmu::start().await;
    t.settings(json!({"testing_mode": true, "refresh_token_cap": 1}))
        .await;
    let by_user = t.sign_in("user@example.com", DRIVE_APPDATA).await;
    let by_app = t.sign_in("app@example.com", DRIVE_APPDATA).await;
    let expired = t.sign_in("testing@example.com", DRIVE_APPDATA).await;
    let capped = t.sign_in("alice@example.com", DRIVE_APPDATA).await;
    issue(&t, 1).await;
    t.post_json("/_emulator/users/user@example.com/revoke", json!({}))
        .await;
    let r = t
        .post_form("/revoke", &[("token", by_app.str("refresh_token"))])
        .await;
    assert_eq!(r.status, 200);
    let by_user = t.refresh(by_user.str("refresh_token")).await;
    let by_app = t.refresh(by_app.str("refresh_token")).await;
    let capped = t.refresh(capped.str("refresh_token")).await;
    // Alive until the Testing status's 7 days are over.
    assert_eq!(t.refresh(expired.str("refresh_token")).await.status, 200);
    t.settings(json!({"clock_offset_secs": 8 * 86_400})).await;
    let expired = t.refresh(expired.str("refresh_token")).await;

    let answers = [by_user, by_app, expired, capped];
    for answer in &answers {
        answer.assert_error(
            400,
            "invalid_grant",
            Some("Token has been expired or revoked."),
        );
        assert_eq!(answer.body, answers[0].body);
        assert_eq!(
            answer.headers.get("content-type"),
            answers[0].headers.get("content-type")
        );
    }
}
