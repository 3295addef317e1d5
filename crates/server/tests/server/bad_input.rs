//! Every bad input of the sign-in path gets a 4xx (or, for upstream failures, a 502/503) with
//! design.md's error body, and nothing is stored.

use super::harness::{Code, TestApp};
use serde_json::json;

fn count(t: &TestApp, table: &str) -> i64 {
    let conn = rusqlite::Connection::open(t.db_dir().join("grantkeeper.db")).unwrap();
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
        row.get(0)
    })
    .unwrap()
}

async fn users(t: &TestApp) -> i64 {
    count(t, "users")
}

async fn sessions(t: &TestApp) -> i64 {
    count(t, "sessions")
}

const XRW: (&str, &str) = ("x-requested-with", "XmlHttpRequest");

#[tokio::test]
async fn the_gate_refuses_cross_site_requests() {
    let t = TestApp::start().await;
    let code = t.web_code("gate@example.com").await;
    let raw = Some("application/octet-stream");
    t.post_authcode("", raw, &[], code.clone().into_bytes())
        .await
        .assert_error(403, "csrf");
    t.post_authcode(
        "",
        raw,
        &[("x-requested-with", "")],
        code.clone().into_bytes(),
    )
    .await
    .assert_error(403, "csrf");
    t.post_authcode(
        "",
        raw,
        &[XRW, ("origin", "https://evil.example")],
        code.clone().into_bytes(),
    )
    .await
    .assert_error(403, "origin_not_allowed");
    t.post_authcode(
        "",
        raw,
        &[XRW, ("origin", "null")],
        code.clone().into_bytes(),
    )
    .await
    .assert_error(403, "origin_not_allowed");
    // The code was not spent by the refused calls: an allowed origin still signs in.
    let ok = t
        .post_authcode(
            "",
            raw,
            &[XRW, ("origin", "https://app.example.com")],
            code.into_bytes(),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
}

#[tokio::test]
async fn malformed_bodies_are_refused_without_calling_the_provider() {
    let t = TestApp::start().await;
    let raw = Some("application/octet-stream");
    t.post_authcode("", raw, &[XRW], Vec::new())
        .await
        .assert_error(400, "invalid_request");
    t.post_authcode("", raw, &[XRW], b"   \n".to_vec())
        .await
        .assert_error(400, "invalid_request");
    t.post_authcode("", raw, &[XRW], vec![b'a'; 4097])
        .await
        .assert_error(413, "payload_too_large");
    t.post_authcode("", raw, &[XRW], vec![b'a'; 64 * 1024])
        .await
        .assert_error(413, "payload_too_large");
    t.post_authcode("", raw, &[XRW], vec![0xc3, 0x28, 0xff])
        .await
        .assert_error(400, "invalid_request");
    t.post_authcode("", Some("image/png"), &[XRW], b"4/x".to_vec())
        .await
        .assert_error(415, "unsupported_media_type");
    t.post_authcode("", None, &[XRW], b"4/x".to_vec())
        .await
        .assert_error(415, "unsupported_media_type");
    let json = Some("application/json");
    t.post_authcode("", json, &[XRW], b"{\"code\": ".to_vec())
        .await
        .assert_error(400, "invalid_request");
    t.post_authcode("", json, &[XRW], b"{\"code\": 5}".to_vec())
        .await
        .assert_error(400, "invalid_request");
    t.post_authcode(
        "",
        json,
        &[XRW],
        b"{\"code\":\"4/x\",\"platform\":\"tv\"}".to_vec(),
    )
    .await
    .assert_error(400, "invalid_request");
    t.post_authcode("?platform=%ZZ", raw, &[XRW], b"4/x".to_vec())
        .await
        .assert_error(400, "invalid_request");
    let form = Some("application/x-www-form-urlencoded");
    t.post_authcode("", form, &[XRW], b"nothing=here".to_vec())
        .await
        .assert_error(400, "invalid_request");
    assert_eq!(t.stats().await["token_requests"], 0);
    assert_eq!(users(&t).await, 0);
}

#[tokio::test]
async fn codes_google_rejects_are_code_rejected() {
    let t = TestApp::start().await;
    // Used twice.
    let code = t.web_code("reuse@example.com").await;
    assert_eq!(t.authcode_web(&code).await.status, 200);
    t.authcode_web(&code)
        .await
        .assert_error(400, "code_rejected");
    // Never issued.
    t.authcode_web("4/0AnotAcodeAtAll")
        .await
        .assert_error(400, "code_rejected");
    // Issued for another client of the project.
    let other = t
        .emulator_call("POST", "clients", Some(json!({"type": "web"})))
        .await;
    assert!(matches!(other.status, 200 | 201), "{}", other.text);
    let foreign = t
        .mint(Code {
            client_id: Some(other.body["client_id"].as_str().unwrap().to_owned()),
            ..Code::web("foreign@example.com")
        })
        .await;
    t.authcode_web(&foreign)
        .await
        .assert_error(400, "code_rejected");
    // Issued for another redirect URI.
    let redirect = t
        .mint(Code {
            redirect_uri: "",
            ..Code::web("redir@example.com")
        })
        .await;
    t.authcode_web(&redirect)
        .await
        .assert_error(400, "code_rejected");
    assert_eq!(users(&t).await, 1);
}

#[tokio::test]
async fn an_expired_code_is_code_rejected() {
    let t = TestApp::start().await;
    let code = t.web_code("late@example.com").await;
    let moved = t
        .emulator_call("PUT", "settings", Some(json!({"clock_offset_secs": 3600})))
        .await;
    assert_eq!(moved.status, 200, "{}", moved.text);
    t.authcode_web(&code)
        .await
        .assert_error(400, "code_rejected");
    assert_eq!(users(&t).await, 0);
}

#[tokio::test]
async fn spoiled_id_tokens_are_refused_and_nothing_is_stored() {
    let t = TestApp::start().await;
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
        let set = t
            .emulator_call(
                "PUT",
                "faults",
                Some(json!({"id_token": {"tamper": tamper}})),
            )
            .await;
        assert_eq!(set.status, 200, "{tamper}: {}", set.text);
        let a = t
            .authcode_web(&t.web_code(&format!("{tamper}@example.com")).await)
            .await;
        assert_eq!(a.status, 401, "{tamper}: {}", a.text);
        a.assert_error(401, "id_token_invalid");
    }
    t.set_faults(json!({})).await;
    assert_eq!(users(&t).await, 0);
    assert_eq!(sessions(&t).await, 0);
}

#[tokio::test]
async fn a_mobile_client_that_is_not_an_authorized_party_is_refused() {
    let t = TestApp::start_with(super::harness::Options {
        mobile_parties: false,
        ..Default::default()
    })
    .await;
    let code = t
        .mobile_code("mob@example.com", t.emulator.android_client_id())
        .await;
    t.authcode_android(&code)
        .await
        .assert_error(401, "id_token_invalid");
    assert_eq!(users(&t).await, 0);
}

#[tokio::test]
async fn answers_without_an_id_token() {
    let t = TestApp::start().await;
    // A code asked only for Drive: Google sends no ID token, so no user can be identified.
    let drive_only = t
        .mint(Code {
            scope: "https://www.googleapis.com/auth/drive.appdata",
            ..Code::web("drive@example.com")
        })
        .await;
    t.authcode_web(&drive_only)
        .await
        .assert_error(400, "invalid_request");
    // The same from a token endpoint that drops it.
    t.emulator_call(
        "PUT",
        "faults",
        Some(json!({"id_token": {"tamper": "missing"}})),
    )
    .await;
    t.authcode_web(&t.web_code("noid@example.com").await)
        .await
        .assert_error(400, "invalid_request");
    assert_eq!(users(&t).await, 0);
}

#[tokio::test]
async fn upstream_failures_are_502_or_503_and_store_nothing() {
    let t = TestApp::start().await;
    let cases = [
        (json!({"token": {"body": "garbage"}}), 502, "upstream_error"),
        (
            json!({"token": {"status": 500}}),
            503,
            "upstream_unavailable",
        ),
        (
            json!({"token": {"status": 503}}),
            503,
            "upstream_unavailable",
        ),
        (
            json!({"token": {"status": 429, "retry_after_secs": 7}}),
            503,
            "upstream_unavailable",
        ),
        (
            json!({"token": {"status": 403, "body": "html"}}),
            503,
            "upstream_unavailable",
        ),
        (
            json!({"token": {"latency_ms": 3000}}),
            503,
            "upstream_unavailable",
        ),
        (
            json!({"certs": {"status": 503}}),
            503,
            "upstream_unavailable",
        ),
    ];
    for (fault, status, code) in cases {
        let set = t.emulator_call("PUT", "faults", Some(fault.clone())).await;
        assert_eq!(set.status, 200, "{fault}: {}", set.text);
        let a = t.authcode_web(&t.web_code("up@example.com").await).await;
        assert_eq!(a.status, status, "{fault}: {}", a.text);
        a.assert_error(status, code);
        if fault["token"]["status"] == 429 {
            assert_eq!(a.headers.get("retry-after").unwrap(), "7");
        }
        t.set_faults(json!({})).await;
    }
    assert_eq!(users(&t).await, 0);
    assert_eq!(sessions(&t).await, 0);
}

#[tokio::test]
async fn invalid_client_credentials_are_an_upstream_error() {
    let t = TestApp::start().await;
    // Another web client's code exchanged with our credentials is the client's problem, but our
    // own credentials being wrong is ours: simulate by a client the emulator no longer knows.
    let code = t.web_code("cred@example.com").await;
    let other = t
        .emulator_call("POST", "clients", Some(json!({"type": "web"})))
        .await;
    let mut file = grantkeeper_server::config::FileConfig::default();
    file.provider.issuer = Some(t.emulator_url.clone());
    file.provider.client_id = Some(other.body["client_id"].as_str().unwrap().to_owned());
    file.provider.client_secret = Some("GOCSPX-wrong".to_owned().into());
    let settings = grantkeeper_server::Settings::from_file(&file, &t.db_dir()).unwrap();
    let provider = grantkeeper_provider::Provider::new(
        settings.provider,
        reqwest::Client::new(),
        grantkeeper_core::SystemClock::shared(),
    );
    let err = provider
        .exchange_code(&code.into(), "postmessage")
        .await
        .unwrap_err();
    let api = grantkeeper_server::error::exchange_error(err);
    assert_eq!(api.code(), "upstream_error");
    assert_eq!(api.status().as_u16(), 502);
}

/// A path parameter that is not UTF-8 once percent-decoded is bad input like any other: 400
/// with the contract's JSON body on the API, the console's HTML page on the console.
#[tokio::test]
async fn a_path_parameter_that_is_not_utf8_answers_the_error_body() {
    use grantkeeper_server::apikeys::KeyScope::{Jobs, Proxy, Token, UsersRead, UsersWrite};
    let t = TestApp::start().await;
    let key = t
        .api_key(&[Token, Proxy, UsersRead, UsersWrite, Jobs])
        .await;
    for (method, path) in [
        ("GET", "/v1/users/%ff"),
        ("DELETE", "/v1/users/%ff"),
        ("POST", "/v1/users/%ff/token"),
        ("GET", "/v1/users/%ff/google/drive/v3/files"),
        ("GET", "/v1/users/123/google/drive/v3/files/%c3%28"),
        ("GET", "/v1/jobs/%ff"),
    ] {
        let a = t.v1(method, path, Some(&key), None).await;
        a.assert_error(400, "invalid_request");
        assert_eq!(
            a.headers["content-type"], "application/json",
            "{method} {path}: {}",
            a.text
        );
    }
    let a = t.get("/admin/users/%ff", None).await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(
        a.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
        "{:?}",
        a.headers
    );
    assert!(
        a.text.contains(r#"data-code="invalid_request""#),
        "{}",
        a.text
    );
}

/// A request not answered within `limits.request_timeout` gets the contract's 503, with
/// Retry-After, not an empty answer.
#[tokio::test]
async fn a_request_over_its_time_answers_the_error_body() {
    use grantkeeper_server::apikeys::KeyScope::Proxy;
    use grantkeeper_server::config::{DurationValue, LimitsSection};
    let t = TestApp::start_with(super::harness::Options {
        limits: LimitsSection {
            request_timeout: Some(DurationValue::Seconds(1)),
            ..super::harness::no_rate_limits()
        },
        ..super::harness::Options::default()
    })
    .await;
    let sub = t.signed_in("slow@example.com").await;
    let key = t.api_key(&[Proxy]).await;
    // Drive takes 1.5 s (less than the server's HTTP client waits), the server 1 s at most.
    t.emulator_call(
        "PUT",
        "faults",
        Some(json!({"drive": {"latency_ms": 1500, "error_rate": 0.0}})),
    )
    .await;
    let a = t
        .v1(
            "GET",
            &format!("/v1/users/{sub}/google/drive/v3/files?spaces=appDataFolder"),
            Some(&key),
            None,
        )
        .await;
    a.assert_error(503, "upstream_unavailable");
    assert_eq!(
        a.headers["content-type"], "application/json",
        "{:?}",
        a.headers
    );
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains("limits.request_timeout"),
        "{}",
        a.text
    );
    let retry: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
}
