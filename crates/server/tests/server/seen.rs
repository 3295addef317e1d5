//! What the app's code and its users see of the HTTP API, snapshotted: the sign-in answers of
//! each platform, the token answer, one body for each error code of design.md, and `/risc`'s
//! RFC 8935 refusals. Ids, times, ports and tokens change from run to run and are masked by
//! insta's filters.

use super::harness::{Answer, Options, TestApp, no_rate_limits};
use grantkeeper_server::apikeys::KeyScope::{Jobs, Proxy, Token, UsersRead};
use grantkeeper_server::config::{DurationValue, LimitsSection};
use serde_json::{Value, json};

/// The filters of every snapshot here: what differs between two runs of the same test.
fn filters() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})",
            "[time]",
        ),
        (r"127\.0\.0\.1:\d+", "127.0.0.1:[port]"),
        (r"key_[0-9a-f]{12}", "key_[id]"),
        (
            r#""access_token": "[^"]+""#,
            r#""access_token": "[access token]""#,
        ),
        (r#""lease": "[^"]+""#, r#""lease": "[lease]""#),
        // A token Google hands out lives 3600 s; a second may pass before it is answered.
        (r#""expires_in": 35\d\d"#, r#""expires_in": "[about 3600]""#),
    ]
}

/// Status and body of an answer, for a snapshot.
fn shown(a: &Answer) -> Value {
    assert!(!a.body.is_null(), "{} is not JSON: {}", a.status, a.text);
    json!({"status": a.status, "body": a.body})
}

/// An error answer as listed in the error snapshot: its status, code and message.
#[track_caller]
fn error(case: &str, a: &Answer) -> Value {
    let code = a.body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{case}: {} {}", a.status, a.text));
    assert!(a.status >= 400, "{case}: {} {}", a.status, a.text);
    assert_eq!(
        a.body.as_object().unwrap().len(),
        2,
        "{case}: error and message only: {}",
        a.text
    );
    json!({"case": case, "status": a.status, "error": code, "message": a.body["message"]})
}

#[tokio::test]
async fn sign_in_and_token_answers() {
    let t = TestApp::start().await;
    let web = t.authcode_web(&t.web_code("ann@example.com").await).await;
    let android = t
        .authcode_android(
            &t.mobile_code("ben@example.com", t.emulator.android_client_id())
                .await,
        )
        .await;
    let ios = t
        .authcode_ios(
            &t.mobile_code("cat@example.com", t.emulator.ios_client_id())
                .await,
        )
        .await;
    // A native code without offline access: signed in, but no refresh token is held.
    let needs_consent = t.sign_in_online("dan@example.com").await;
    for a in [&web, &android, &ios, &needs_consent] {
        assert_eq!(a.status, 200, "{}", a.text);
        assert!(a.session_cookie().is_some(), "{:?}", a.headers);
    }
    assert_eq!(needs_consent.body["needs_consent"], true);

    let key = t.api_key(&[Token]).await;
    let sub = web.body["user"]["sub"].as_str().unwrap();
    let path = format!("/v1/users/{sub}/token");
    let token = t.v1("POST", &path, Some(&key), None).await;
    let narrowed = t
        .v1(
            "POST",
            &path,
            Some(&key),
            Some(json!({"scopes": ["https://www.googleapis.com/auth/drive.appdata"], "min_ttl": 600})),
        )
        .await;
    for a in [&token, &narrowed] {
        assert_eq!(a.status, 200, "{}", a.text);
        assert!(
            a.body["access_token"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
        );
    }

    insta::with_settings!({filters => filters()}, {
        insta::assert_json_snapshot!("sign_in_answers", json!({
            "web": shown(&web),
            "android": shown(&android),
            "ios": shown(&ios),
            "needs_consent": shown(&needs_consent),
        }));
        insta::assert_json_snapshot!("token_answers", json!({
            "token": shown(&token),
            "token_scopes_min_ttl": shown(&narrowed),
        }));
    });
}

/// Sends a request with a raw body and content type.
async fn raw(
    t: &TestApp,
    method: &str,
    path: &str,
    key: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Answer {
    let r = t
        .http
        .request(method.parse().unwrap(), format!("{}{path}", t.url))
        .bearer_auth(key)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    Answer::from_response(r).await
}

/// One answer for each code of `ApiError::code` (crates/server/src/error.rs), each from a
/// request an outside caller can make. `internal_error` is the one code left out: it answers a
/// failure of grantkeeper's own (an unexpected store or vault error), which no request can
/// cause on a healthy server; its body is the fixed "grantkeeper could not complete the
/// request".
#[tokio::test]
async fn every_error_code_users_see() {
    let t = TestApp::start_with(Options {
        limits: LimitsSection {
            v1_per_second: Some(1),
            v1_burst: Some(1),
            proxy_body_limit: Some(1024),
            request_timeout: Some(DurationValue::Seconds(1)),
            ..no_rate_limits()
        },
        ..Options::default()
    })
    .await;
    // A key for each request that is to pass the rate limit; one shared key for the 429.
    let fresh = |scopes: &'static [grantkeeper_server::apikeys::KeyScope]| t.api_key(scopes);
    let sub = t.signed_in("ann@example.com").await;
    let token_path = format!("/v1/users/{sub}/token");
    let mut e = Vec::new();

    // invalid_request
    let a = raw(
        &t,
        "POST",
        &token_path,
        &fresh(&[Token]).await,
        "application/json",
        b"{not json".to_vec(),
    )
    .await;
    e.push(error("bad JSON", &a));
    let a = t
        .v1(
            "POST",
            &token_path,
            Some(&fresh(&[Token]).await),
            Some(json!({"min_ttl": "soon"})),
        )
        .await;
    e.push(error("a field of the wrong type", &a));
    let a = t
        .post_authcode(
            "",
            Some("application/octet-stream"),
            &[("x-requested-with", "XMLHttpRequest")],
            Vec::new(),
        )
        .await;
    e.push(error("an empty sign-in", &a));
    let a = t.v1("PUT", &token_path, Some("k"), None).await;
    e.push(error("method not allowed (405)", &a));
    let a = t
        .v1(
            "TRACE",
            &format!("/v1/users/{sub}/google/drive/v3/files"),
            Some("k"),
            None,
        )
        .await;
    e.push(error("method not allowed on the proxy (405)", &a));
    // csrf, origin_not_allowed
    let a = t
        .post_authcode("", Some("text/plain"), &[], b"4/x".to_vec())
        .await;
    e.push(error("sign-in without X-Requested-With", &a));
    let a = t
        .post_authcode(
            "",
            Some("application/octet-stream"),
            &[
                ("x-requested-with", "XMLHttpRequest"),
                ("origin", "https://evil.example"),
            ],
            b"4/x".to_vec(),
        )
        .await;
    e.push(error("sign-in from another origin", &a));
    // code_rejected
    let a = t.authcode_web("4/0AnotAcodeAtAll").await;
    e.push(error("a code Google never issued", &a));
    // id_token_invalid
    t.set_faults(json!({"id_token": {"tamper": "bad_signature"}}))
        .await;
    let a = t
        .authcode_web(&t.web_code("bad-sig@example.com").await)
        .await;
    e.push(error("an ID token with a bad signature", &a));
    // upstream_error, upstream_unavailable at sign-in
    t.set_faults(json!({"token": {"body": "garbage"}})).await;
    let a = t
        .authcode_web(&t.web_code("garbage@example.com").await)
        .await;
    e.push(error("Google answers the exchange with garbage", &a));
    t.set_faults(json!({"token": {"status": 503}})).await;
    let a = t.authcode_web(&t.web_code("down@example.com").await).await;
    e.push(error("Google's token endpoint is down at sign-in", &a));
    t.set_faults(json!({})).await;
    // unauthorized
    let a = t.get("/me", None).await;
    e.push(error("/me without a session", &a));
    let a = t.v1("GET", "/v1/users", None, None).await;
    e.push(error("no API key", &a));
    let a = t.v1("GET", "/v1/users", Some("gk_not_a_key"), None).await;
    e.push(error("an unknown API key", &a));
    // forbidden
    let a = t
        .v1("GET", "/v1/users", Some(&fresh(&[Token]).await), None)
        .await;
    e.push(error("an API key without the scope", &a));
    // not_found
    let a = t
        .v1(
            "POST",
            "/v1/users/000/token",
            Some(&fresh(&[Token]).await),
            None,
        )
        .await;
    e.push(error("unknown user", &a));
    let a = t
        .v1("GET", "/v1/jobs/999999", Some(&fresh(&[Jobs]).await), None)
        .await;
    e.push(error("unknown job", &a));
    let a = t.get("/v2/nothing", None).await;
    e.push(error("no such endpoint", &a));
    // scope_not_granted
    let a = t
        .v1(
            "POST",
            &token_path,
            Some(&fresh(&[Token]).await),
            Some(json!({"scopes": ["https://www.googleapis.com/auth/gmail.readonly"]})),
        )
        .await;
    e.push(error("a scope the user did not grant", &a));
    // not_held: a report under a lease that does not hold the item.
    let jobs = fresh(&[Jobs]).await;
    let job = t
        .v1(
            "POST",
            "/v1/jobs",
            Some(&jobs),
            Some(json!({"name": "backup", "scopes": ["https://www.googleapis.com/auth/drive.appdata"]})),
        )
        .await;
    assert_eq!(job.status, 201, "{}", job.text);
    let id = job.body["id"].as_i64().unwrap();
    let claimed = t
        .v1(
            "POST",
            &format!("/v1/jobs/{id}/claim"),
            Some(&fresh(&[Jobs]).await),
            Some(json!({"max": 1})),
        )
        .await;
    assert_eq!(claimed.status, 200, "{}", claimed.text);
    let item = claimed.body["items"][0]["id"].clone();
    let a = t
        .v1(
            "POST",
            &format!("/v1/jobs/{id}/reports"),
            Some(&fresh(&[Jobs]).await),
            Some(json!({"lease": "not-this-lease", "items": [{"id": item, "outcome": "done"}]})),
        )
        .await;
    e.push(error("a job report for an item not held", &a));
    // payload_too_large, unsupported_media_type
    let a = raw(
        &t,
        "POST",
        &format!("/v1/users/{sub}/google/upload/drive/v3/files"),
        &fresh(&[Proxy]).await,
        "application/octet-stream",
        vec![b'a'; 4096],
    )
    .await;
    e.push(error("a proxied body over the limit", &a));
    let a = t
        .post_authcode(
            "",
            Some("application/octet-stream"),
            &[("x-requested-with", "XMLHttpRequest")],
            vec![b'a'; 64 * 1024],
        )
        .await;
    e.push(error("a sign-in body over the limit", &a));
    let a = t
        .post_authcode(
            "",
            Some("image/png"),
            &[("x-requested-with", "XMLHttpRequest")],
            b"4/x".to_vec(),
        )
        .await;
    e.push(error("a sign-in of the wrong content type", &a));
    // upstream_unavailable: Drive answers after the request's time (`limits.request_timeout`).
    t.set_faults(json!({"drive": {"latency_ms": 1500, "error_rate": 0.0}}))
        .await;
    let a = t
        .v1(
            "GET",
            &format!("/v1/users/{sub}/google/drive/v3/files?spaces=appDataFolder"),
            Some(&fresh(&[Proxy]).await),
            None,
        )
        .await;
    e.push(error("a proxied call over its time", &a));
    t.set_faults(json!({})).await;
    // grant_revoked: Google says the grant is gone.
    let gone = t.signed_in("gone@example.com").await;
    let revoked = t
        .emulator_call("POST", "users/gone@example.com/revoke", None)
        .await;
    assert!(revoked.status < 300, "{}", revoked.text);
    let a = t
        .v1(
            "POST",
            &format!("/v1/users/{gone}/token"),
            Some(&fresh(&[Token]).await),
            Some(json!({"min_ttl": 3600})),
        )
        .await;
    e.push(error("a revoked grant", &a));
    // rate_limited: one key, beyond its burst of 1 a second.
    let busy = fresh(&[UsersRead]).await;
    let mut limited = None;
    for _ in 0..20 {
        let a = t.v1("GET", "/v1/users", Some(&busy), None).await;
        if a.status == 429 {
            limited = Some(a);
            break;
        }
    }
    e.push(error(
        "an API key beyond its rate",
        &limited.expect("never limited"),
    ));

    // Every code of the contract is here but internal_error.
    let mut codes: Vec<&str> = e.iter().map(|c| c["error"].as_str().unwrap()).collect();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(
        codes,
        [
            "code_rejected",
            "csrf",
            "forbidden",
            "grant_revoked",
            "id_token_invalid",
            "invalid_request",
            "not_found",
            "not_held",
            "origin_not_allowed",
            "payload_too_large",
            "rate_limited",
            "scope_not_granted",
            "unauthorized",
            "unsupported_media_type",
            "upstream_error",
            "upstream_unavailable",
        ]
    );
    insta::with_settings!({filters => filters()}, {
        insta::assert_json_snapshot!("error_codes", e);
    });
}

/// `POST /risc`'s refusals: RFC 8935's body (`err`, `description`), the one endpoint whose
/// refusals are not the contract's error body, because Google's transmitter reads them.
#[tokio::test]
async fn security_event_refusals_users_see() {
    let t = TestApp::start().await;
    let mut refusals = Vec::new();
    for (case, content_type, body) in [
        ("an empty body", "application/secevent+jwt", ""),
        ("not a token", "application/secevent+jwt", "not-a-token"),
        (
            "a token that is not signed",
            "application/secevent+jwt",
            "eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.",
        ),
        ("another content type", "application/json", "{}"),
    ] {
        let r = t
            .http
            .post(format!("{}/risc", t.url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let a = Answer::from_response(r).await;
        assert_eq!(a.status, 400, "{case}: {}", a.text);
        let fields: Vec<&String> = a.body.as_object().unwrap().keys().collect();
        assert_eq!(fields, ["description", "err"], "{case}: {}", a.text);
        refusals.push(json!({"case": case, "status": a.status, "body": a.body}));
    }
    insta::assert_json_snapshot!("security_event_refusals", refusals);
}
