//! The control API: clients, settings, stats and issued tokens; and who may call it.

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

/// A request sent as a web page of another site could send it: `body` as `content_type` (None:
/// no Content-Type), with `headers` added.
async fn raw(
    t: &TestEmu,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut req = t
        .http
        .request(method.parse().unwrap(), t.url(path))
        .body(body.to_owned());
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    Answer::from(req.send().await.unwrap()).await
}

/// A cross-site page may send `text/plain` (or no Content-Type) without asking: the control API
/// takes only JSON bodies, so such a request changes nothing.
#[tokio::test]
async fn control_bodies_that_are_not_json_are_refused() {
    let t = TestEmu::start().await;
    let before = t.get("/_emulator/settings").await.body;
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let a = raw(
            &t,
            "PUT",
            "/_emulator/settings",
            content_type,
            &[],
            r#"{"access_token_ttl_secs": 10}"#,
        )
        .await;
        assert_eq!(a.status, 415, "{content_type:?}: {}", a.text);
        assert_eq!(a.body["error"], "unsupported_media_type", "{}", a.text);
        let minted = raw(
            &t,
            "POST",
            "/_emulator/codes",
            content_type,
            &[],
            r#"{"email": "victim@example.com", "scope": "openid email"}"#,
        )
        .await;
        assert_eq!(minted.status, 415, "{content_type:?}: {}", minted.text);
        assert!(minted.body.get("code").is_none(), "{}", minted.text);
    }
    assert_eq!(t.get("/_emulator/settings").await.body, before);
    // JSON (with a charset) is what the control API takes; a call without a body needs none.
    let a = raw(
        &t,
        "PUT",
        "/_emulator/settings",
        Some("application/json; charset=utf-8"),
        &[],
        r#"{"access_token_ttl_secs": 10}"#,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let rotated = raw(&t, "POST", "/_emulator/keys/rotate", None, &[], "").await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
}

/// A page of another origin is refused whatever it sends, JSON included; the emulator's own
/// origin (and a same-origin page of the host it was reached at) is served.
#[tokio::test]
async fn control_requests_from_a_foreign_origin_are_refused() {
    let t = TestEmu::start().await;
    let jwks_before = t.get("/oauth2/v3/certs").await.body;
    for origin in [
        "https://evil.example",
        "http://127.0.0.1:1",
        "null",
        "http://localhost.evil.example",
    ] {
        for (method, path, body) in [
            ("POST", "/_emulator/keys/rotate", ""),
            ("POST", "/_emulator/users/victim@example.com/revoke", ""),
            (
                "POST",
                "/_emulator/codes",
                r#"{"email": "victim@example.com", "scope": "openid email"}"#,
            ),
            ("GET", "/_emulator/clients", ""),
            ("GET", "/_emulator/tokens?email=victim@example.com", ""),
        ] {
            let content_type = (!body.is_empty()).then_some("application/json");
            let a = raw(&t, method, path, content_type, &[("origin", origin)], body).await;
            assert_eq!(a.status, 403, "{origin} {method} {path}: {}", a.text);
            assert_eq!(a.body["error"], "forbidden", "{}", a.text);
            assert!(
                !a.text.contains(&t.web_secret),
                "a refusal carries no secret"
            );
        }
    }
    assert_eq!(t.get("/oauth2/v3/certs").await.body, jwks_before);
    let own = t.base.clone();
    let a = raw(
        &t,
        "GET",
        "/_emulator/clients",
        None,
        &[("origin", &own)],
        "",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
}

/// A request addressed to a host name that is not loopback (a DNS rebinding page's own name)
/// is refused, even from "its own" origin.
#[tokio::test]
async fn control_requests_for_a_non_loopback_host_are_refused() {
    let t = TestEmu::start().await;
    for host in [
        "evil.example",
        "evil.example:80",
        "10.0.0.1:8080",
        "0.0.0.0",
    ] {
        let origin = format!("http://{host}");
        for headers in [
            vec![("host", host)],
            vec![("host", host), ("origin", &origin)],
        ] {
            let a = raw(&t, "GET", "/_emulator/clients", None, &headers, "").await;
            assert_eq!(a.status, 403, "{headers:?}: {}", a.text);
            assert_eq!(a.body["error"], "forbidden", "{}", a.text);
            assert!(!a.text.contains(&t.web_secret), "{}", a.text);
        }
    }
    for host in ["localhost", "127.0.0.1", "[::1]:1234"] {
        let a = raw(&t, "GET", "/_emulator/stats", None, &[("host", host)], "").await;
        assert_eq!(a.status, 200, "{host}: {}", a.text);
    }
    // Exposed on purpose (`dev --expose-emulator-control`): any host, still no foreign origin.
    t.emu.expose_control_api();
    let a = raw(
        &t,
        "GET",
        "/_emulator/stats",
        None,
        &[("host", "dev.lan:8080")],
        "",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let a = raw(
        &t,
        "GET",
        "/_emulator/stats",
        None,
        &[("host", "dev.lan:8080"), ("origin", "https://evil.example")],
        "",
    )
    .await;
    assert_eq!(a.status, 403, "{}", a.text);
}
