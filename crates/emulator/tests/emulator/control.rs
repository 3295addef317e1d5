//! The control API: clients, settings, stats and issued tokens.

use super::helpers::*;
use serde_json::json;

#[tokio::test]
async fn clients_are_listed_and_created() {
    let t = TestEmu::start().await;
    let c = t.get("/_emulator/clients").await;
    assert_eq!(c.status, 200);
    assert_eq!(c.body["web"]["client_id"], t.web_id);
    assert_eq!(c.body["web"]["client_secret"], t.web_secret);
    assert_eq!(c.body["android"], t.emu.android_client_id());
    assert_eq!(c.body["ios"], t.emu.ios_client_id());
    assert_eq!(c.body["others"], json!([]));

    let ios = t
        .post_json("/_emulator/clients", json!({"type": "ios"}))
        .await;
    assert_eq!(ios.status, 201);
    assert!(ios.body.get("client_secret").is_none());
    let web = t
        .post_json("/_emulator/clients", json!({"type": "web"}))
        .await;
    assert!(web.str("client_secret").starts_with("GOCSPX-"));
    // All clients share the project number.
    let project = t.web_id.split('-').next().unwrap();
    assert!(web.str("client_id").starts_with(project));
    let c = t.get("/_emulator/clients").await;
    assert_eq!(c.body["others"].as_array().unwrap().len(), 2);
    let bad = t
        .post_json("/_emulator/clients", json!({"type": "desktop"}))
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["error"], "invalid_request");
}

#[tokio::test]
async fn settings_take_partial_updates() {
    let t = TestEmu::start().await;
    let s = t.get("/_emulator/settings").await;
    assert_eq!(
        s.body,
        json!({
            "access_token_ttl_secs": 3600, "code_ttl_secs": 600, "jwks_max_age_secs": 21600,
            "refresh_token_cap": 100, "testing_mode": false, "id_token_iss": "url",
            "clock_offset_secs": 0,
        })
    );
    let s = t
        .put_json("/_emulator/settings", json!({"access_token_ttl_secs": 10}))
        .await;
    assert_eq!(s.body["access_token_ttl_secs"], 10);
    assert_eq!(s.body["code_ttl_secs"], 600);
    for bad in [
        json!({"unknown": 1}),
        json!({"refresh_token_cap": 0}),
        json!({"id_token_iss": "x"}),
    ] {
        assert_eq!(t.put_json("/_emulator/settings", bad).await.status, 400);
    }
    assert_eq!(
        t.get("/_emulator/settings").await.body["access_token_ttl_secs"],
        10
    );
}

#[tokio::test]
async fn stats_count_successful_operations() {
    let t = TestEmu::start().await;
    let a = t.sign_in("alice@example.com", "openid").await;
    let rt = a.str("refresh_token");
    t.refresh(rt).await;
    t.refresh(rt).await;
    t.sign_in("bob@example.com", "openid").await;
    t.refresh("1//0nope").await;
    t.exchange("garbage", "postmessage").await;
    t.post_form("/revoke", &[("token", rt)]).await;
    let s = t.stats().await;
    assert_eq!(s["code_exchanges"], 2);
    assert_eq!(s["refreshes"], 2);
    assert_eq!(s["refresh_tokens_issued"], 2);
    assert_eq!(s["revocations"], 1);
    assert_eq!(s["refreshes_by_email"], json!({"alice@example.com": 2}));
    assert_eq!(s["token_requests"], 6);
}

#[tokio::test]
async fn tokens_lists_what_a_user_was_issued() {
    let t = TestEmu::start().await;
    let a = t.sign_in("alice@example.com", "openid").await;
    let r = t.refresh(a.str("refresh_token")).await;
    t.sign_in("bob@example.com", "openid").await;
    let list = t.get("/_emulator/tokens?email=alice@example.com").await;
    assert_eq!(list.status, 200);
    assert_eq!(
        list.body["access_tokens"],
        json!([a.str("access_token"), r.str("access_token")])
    );
    assert_eq!(list.body["refresh_tokens"], json!([a.str("refresh_token")]));
    assert_eq!(
        list.body["id_tokens"],
        json!([a.str("id_token"), r.str("id_token")])
    );
    let nobody = t.get("/_emulator/tokens?email=zed@example.com").await;
    assert_eq!(nobody.body["access_tokens"], json!([]));
}

#[tokio::test]
async fn the_control_api_can_be_left_out() {
    let t = TestEmu::start_with(None, false).await;
    assert_eq!(t.get("/_emulator/stats").await.status, 404);
    assert_eq!(t.get("/.well-known/openid-configuration").await.status, 200);
}

#[tokio::test]
async fn client_secret_json_is_the_consoles_format() {
    let t = TestEmu::start().await;
    let j = t.emu.client_secret_json();
    let web = &j["web"];
    assert_eq!(web["client_id"], t.web_id);
    assert_eq!(web["client_secret"], t.web_secret);
    assert!(
        web["project_id"]
            .as_str()
            .unwrap()
            .starts_with("grantkeeper-emulator-")
    );
    assert_eq!(web["auth_uri"], t.url("/o/oauth2/auth"));
    assert_eq!(web["token_uri"], t.url("/token"));
    assert_eq!(
        web["auth_provider_x509_cert_url"],
        t.url("/oauth2/v1/certs")
    );
    assert_eq!(web["redirect_uris"], json!([t.url("/oauth2/callback")]));
    assert_eq!(web["javascript_origins"], json!([t.base]));
}
