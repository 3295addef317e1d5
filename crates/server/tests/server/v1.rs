//! The /v1 API for app services: keys, tokens, the proxy, users, audit and events.

use super::harness::{Options, TestApp};
use axum::routing::post;
use grantkeeper_core::ManualClock;
use grantkeeper_core::scopes::DRIVE_APPDATA;
use grantkeeper_server::apikeys::KeyScope::{self, Proxy, Token, UsersRead, UsersWrite};
use grantkeeper_store::AuditFilter;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ALL: [KeyScope; 4] = [Token, Proxy, UsersRead, UsersWrite];

async fn audit_rows(t: &TestApp, sub: &str) -> Vec<grantkeeper_store::AuditRecord> {
    t.app.audit().flush().await;
    t.app
        .store()
        .audit(AuditFilter {
            sub: Some(sub.to_owned()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
}

/// Signs `email` in while the emulator hands out two-second tokens, and moves the clock of the
/// server and the emulator on until the held access token is about to expire.
async fn signed_in_with_expired_token(t: &TestApp, clock: &ManualClock, email: &str) -> String {
    t.emulator_call("PUT", "settings", Some(json!({"access_token_ttl_secs": 2})))
        .await;
    let sub = t.signed_in(email).await;
    t.emulator_call(
        "PUT",
        "settings",
        Some(json!({"access_token_ttl_secs": 3600})),
    )
    .await;
    clock.advance(time::Duration::milliseconds(1500));
    sub
}

#[tokio::test]
async fn api_keys_are_required_and_scoped() {
    let t = TestApp::start().await;
    let sub = t.signed_in("keys@example.com").await;
    let path = format!("/v1/users/{sub}");
    t.v1("GET", &path, None, None)
        .await
        .assert_error(401, "unauthorized");
    t.v1("GET", &path, Some("gk_not_a_key"), None)
        .await
        .assert_error(401, "unauthorized");
    let token_only = t.api_key(&[Token]).await;
    t.v1("GET", &path, Some(&token_only), None)
        .await
        .assert_error(403, "forbidden");
    let reader = t.api_key(&[UsersRead]).await;
    let a = t.v1("GET", &path, Some(&reader), None).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["user"]["email"], "keys@example.com");
    assert_eq!(a.body["grant"]["state"], "active");
    t.v1("DELETE", &path, Some(&reader), None)
        .await
        .assert_error(403, "forbidden");
    // A revoked key is refused.
    let doomed = t.api_key(&[UsersRead]).await;
    let (id, _) = {
        let keys = t.app.store().list_api_keys().await.unwrap();
        let k = keys.last().unwrap().clone();
        (k.id, k.hash)
    };
    assert!(
        t.app
            .store()
            .revoke_api_key(&id, t.app.clock().now())
            .await
            .unwrap()
    );
    t.v1("GET", &path, Some(&doomed), None)
        .await
        .assert_error(401, "unauthorized");
}

#[tokio::test]
async fn tokens_are_handed_out_from_the_held_grant() {
    let t = TestApp::start().await;
    let sub = t.signed_in("tok@example.com").await;
    let key = t.api_key(&ALL).await;
    let path = format!("/v1/users/{sub}/token");
    let a = t.v1("POST", &path, Some(&key), None).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let issued = t.issued_tokens("tok@example.com").await;
    assert!(issued.contains(&a.body["access_token"].as_str().unwrap().to_owned()));
    assert!(a.body["expires_at"].as_str().unwrap().ends_with('Z'));
    assert!(
        a.body["scopes"]
            .as_array()
            .unwrap()
            .contains(&json!(DRIVE_APPDATA))
    );
    assert_eq!(a.headers.get("cache-control").unwrap(), "no-store");
    // The sign-in's token is still fresh: no refresh happened.
    assert_eq!(t.stats().await["refreshes"], 0);
    let b = t
        .v1(
            "POST",
            &path,
            Some(&key),
            Some(json!({"scopes": ["email"], "min_ttl": 0})),
        )
        .await;
    assert_eq!(b.status, 200, "{}", b.text);
    assert_eq!(b.body["access_token"], a.body["access_token"]);

    t.v1(
        "POST",
        &path,
        Some(&key),
        Some(json!({"scopes": ["https://www.googleapis.com/auth/gmail.readonly"]})),
    )
    .await
    .assert_error(403, "scope_not_granted");
    t.v1("POST", "/v1/users/000/token", Some(&key), None)
        .await
        .assert_error(404, "not_found");
    let bad = t
        .http
        .post(format!("{}{path}", t.url))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body("{\"min_ttl\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    t.v1("POST", &path, Some(&key), Some(json!({"min_ttl": 99999})))
        .await
        .assert_error(400, "invalid_request");
    t.v1("POST", &path, Some(&key), Some(json!({"mintl": 5})))
        .await
        .assert_error(400, "invalid_request");
    let huge = t
        .http
        .post(format!("{}{path}", t.url))
        .bearer_auth(&key)
        .body(vec![b' '; 64 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);

    let rows = audit_rows(&t, &sub).await;
    let outcomes: Vec<(&str, &str)> = rows
        .iter()
        .rev()
        .map(|r| (r.action.as_str(), r.outcome.as_str()))
        .collect();
    assert_eq!(
        outcomes[..4],
        [
            ("sign_in", "ok"),
            ("token", "ok"),
            ("token", "ok"),
            ("token", "scope_not_granted")
        ],
        "{outcomes:?}"
    );
    assert!(
        rows.iter()
            .all(|r| r.actor.starts_with("key_") || (r.action == "sign_in" && r.actor == "session"))
    );
    assert!(rows.iter().any(|r| r.detail.contains("userinfo.email")));
}

#[tokio::test]
async fn concurrent_demands_on_an_expired_grant_cause_one_refresh() {
    let clock = ManualClock::new();
    let t = TestApp::start_with(Options {
        clock: Some(clock.clone()),
        ..Options::default()
    })
    .await;
    let sub = signed_in_with_expired_token(&t, &clock, "stampede@example.com").await;
    let key = t.api_key(&[Token]).await;
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let http = t.http.clone();
        let url = format!("{}/v1/users/{sub}/token", t.url);
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let r = http.post(url).bearer_auth(key).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }));
    }
    let mut tokens = std::collections::HashSet::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200, "{body}");
        tokens.insert(body["access_token"].as_str().unwrap().to_owned());
    }
    assert_eq!(t.stats().await["refreshes"], 1);
    assert_eq!(tokens.len(), 1, "every caller got the one refreshed token");
}

#[tokio::test]
async fn a_revoked_grant_answers_409_and_the_webhook_hears_of_it() {
    let received: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let sink = received.clone();
    let receiver = axum::Router::new().route(
        "/hook",
        post(move |headers: axum::http::HeaderMap, body: String| {
            let sink = sink.clone();
            async move {
                let header = |n: &str| headers.get(n).unwrap().to_str().unwrap().to_owned();
                sink.lock().unwrap().push((
                    header("x-grantkeeper-signature"),
                    header("x-grantkeeper-event-id"),
                    body,
                ));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, receiver).into_future());
    let secret = "a-webhook-secret-of-some-length";
    let t = TestApp::start_with(Options {
        webhook: Some((hook, secret.to_owned())),
        ..Default::default()
    })
    .await;

    let sub = t.signed_in("gone@example.com").await;
    let key = t.api_key(&ALL).await;
    let revoked = t
        .emulator_call("POST", "users/gone@example.com/revoke", None)
        .await;
    assert!(revoked.status < 300, "{}", revoked.text);
    // Ask for more lifetime than the held token has, so the broker must refresh.
    let a = t
        .v1(
            "POST",
            &format!("/v1/users/{sub}/token"),
            Some(&key),
            Some(json!({"min_ttl": 3600})),
        )
        .await;
    a.assert_error(409, "grant_revoked");
    let user = t
        .v1("GET", &format!("/v1/users/{sub}"), Some(&key), None)
        .await;
    assert_eq!(user.body["grant"]["state"], "revoked", "{}", user.text);
    assert!(
        user.body["grant"]["reason"]
            .as_str()
            .unwrap()
            .contains("invalid_grant")
    );
    // Later demands do not go upstream.
    let refreshes = t.stats().await["refreshes"].clone();
    t.v1("POST", &format!("/v1/users/{sub}/token"), Some(&key), None)
        .await
        .assert_error(409, "grant_revoked");
    assert_eq!(t.stats().await["refreshes"], refreshes);

    // The webhook receives the sign-in's activation and the revocation, signed.
    let mut events = Vec::new();
    for _ in 0..100 {
        events = received.lock().unwrap().clone();
        if events.iter().any(|(_, _, b)| b.contains("\"revoked\"")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (signature, id, body) = events
        .iter()
        .find(|(_, _, b)| b.contains("\"revoked\""))
        .expect("revocation delivered")
        .clone();
    let event: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["sub"], sub.as_str());
    assert_eq!(event["from"], "active");
    assert_eq!(event["to"], "revoked");
    assert_eq!(event["id"], id.as_str());
    let t_value: i64 = signature
        .split(',')
        .next()
        .unwrap()
        .trim_start_matches("t=")
        .parse()
        .unwrap();
    assert_eq!(
        signature,
        grantkeeper_server::webhook::signature(secret, t_value, &body)
    );
}

#[tokio::test]
async fn transient_failures_never_revoke() {
    let clock = ManualClock::new();
    let t = TestApp::start_with(Options {
        clock: Some(clock.clone()),
        ..Options::default()
    })
    .await;
    t.emulator_call("PUT", "settings", Some(json!({"access_token_ttl_secs": 2})))
        .await;
    let mut subs = Vec::new();
    for i in 0..5 {
        subs.push(t.signed_in(&format!("flaky{i}@example.com")).await);
    }
    t.emulator_call(
        "PUT",
        "settings",
        Some(json!({"access_token_ttl_secs": 3600})),
    )
    .await;
    clock.advance(time::Duration::milliseconds(1500));
    t.emulator_call(
        "PUT",
        "faults",
        Some(json!({"token": {"status": 503, "error_rate": 0.3}})),
    )
    .await;
    let key = t.api_key(&[Token, UsersRead]).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let http = t.http.clone();
        let url = format!("{}/v1/users/{}/token", t.url, subs[i % subs.len()]);
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .json(&json!({"min_ttl": 3000}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }));
    }
    for task in tasks {
        let (status, text) = task.await.unwrap();
        assert!(status == 200 || status == 503, "{status} {text}");
        if status == 503 {
            assert!(text.contains("upstream_unavailable"), "{text}");
        }
    }
    for sub in &subs {
        let u = t
            .v1("GET", &format!("/v1/users/{sub}"), Some(&key), None)
            .await;
        let state = u.body["grant"]["state"].as_str().unwrap().to_owned();
        assert!(state == "active" || state == "failing", "{sub}: {state}");
    }
}

#[tokio::test]
async fn the_proxy_calls_google_as_the_user() {
    let t = TestApp::start().await;
    let sub = t.signed_in("proxy@example.com").await;
    let key = t.api_key(&[Proxy]).await;
    let base = format!("{}/v1/users/{sub}/google", t.url);
    // Create a file with a multipart upload, then list it back.
    let boundary = "b0undary";
    let body = format!(
        "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{}\r\n--{boundary}\r\nContent-Type: text/plain\r\n\r\nhello\r\n--{boundary}--\r\n",
        json!({"name": "hello.txt", "parents": ["appDataFolder"]})
    );
    let created = t
        .http
        .post(format!("{base}/upload/drive/v3/files?uploadType=multipart"))
        .bearer_auth(&key)
        .header(
            "content-type",
            format!("multipart/related; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let listed: Value = t
        .http
        .get(format!(
            "{base}/drive/v3/files?spaces=appDataFolder&fields=files(id,name)"
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["files"][0]["name"], "hello.txt", "{listed}");
    // Google's own errors pass through unchanged.
    let denied = t
        .http
        .get(format!("{base}/drive/v3/files"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let err: Value = denied.json().await.unwrap();
    assert_eq!(
        err["error"]["errors"][0]["reason"], "insufficientScopes",
        "{err}"
    );
    // Escapes are refused before anything is sent.
    for bad in [
        "drive/../../_emulator/stats",
        "drive/%2e%2e/%2e%2e/_emulator/stats",
        "/http://evil.example/x",
    ] {
        let r = t
            .http
            .get(format!("{base}/{bad}"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert!(
            r.status() == 400 || r.status() == 404,
            "{bad}: {}",
            r.status()
        );
    }
    let rows = audit_rows(&t, &sub).await;
    assert!(
        rows.iter().any(|r| r.action == "proxy"
            && r.detail == "POST upload/drive/v3/files"
            && r.outcome == "200"),
        "{rows:?}"
    );
    assert!(
        rows.iter().all(|r| !r.detail.contains('?')),
        "no query strings in the audit"
    );
}

/// Identical hand-outs within the audit writer's window are one row that counts them; a
/// different key, detail or outcome is a row of its own; a written window is never added to.
#[tokio::test]
async fn identical_hand_outs_are_counted_in_one_audit_row() {
    let t = TestApp::start().await;
    let sub = t.signed_in("counted@example.com").await;
    let (a, b) = (t.api_key(&[Token]).await, t.api_key(&[Token]).await);
    let path = format!("/v1/users/{sub}/token");
    t.app.audit().flush().await;
    let before = audit_rows(&t, &sub).await.len();

    let calls = (0..25)
        .map(|_| t.v1("POST", &path, Some(&a), None))
        .chain((0..3).map(|_| t.v1("POST", &path, Some(&b), None)))
        .chain((0..2).map(|_| t.v1("POST", &path, Some(&a), Some(json!({"scopes": ["email"]})))))
        .chain((0..4).map(|_| {
            t.v1(
                "POST",
                &path,
                Some(&a),
                Some(json!({"scopes": ["https://www.googleapis.com/auth/gmail.readonly"]})),
            )
        }));
    let answers = futures_util::future::join_all(calls).await;
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        30,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 403).count(),
        4,
        "{statuses:?}"
    );

    let rows = audit_rows(&t, &sub).await;
    let new: Vec<_> = rows[..rows.len() - before].iter().rev().collect();
    let key_of = |secret: &str| {
        let hash = grantkeeper_server::apikeys::hash_key(secret);
        let t = &t;
        async move {
            t.app
                .store()
                .api_key_by_hash(&hash)
                .await
                .unwrap()
                .unwrap()
                .id
        }
    };
    let (a_id, b_id) = (key_of(&a).await, key_of(&b).await);
    // Per (key, detail, outcome): how many acts, in how many rows. The calls above take far
    // less than the one-second window, but may straddle the end of one: a few rows at most.
    let mut groups: std::collections::BTreeMap<(String, String, String), (u32, usize)> =
        Default::default();
    for r in &new {
        let g = groups
            .entry((r.actor.clone(), r.detail.clone(), r.outcome.clone()))
            .or_default();
        g.0 += r.times;
        g.1 += 1;
    }
    let email = "https://www.googleapis.com/auth/userinfo.email";
    let gmail = "https://www.googleapis.com/auth/gmail.readonly";
    let acts: Vec<(&str, &str, &str, u32)> = groups
        .iter()
        .map(|((k, d, o), (n, _))| (k.as_str(), d.as_str(), o.as_str(), *n))
        .collect();
    let mut expected = vec![
        (a_id.as_str(), "", "ok", 25),
        (b_id.as_str(), "", "ok", 3),
        (a_id.as_str(), email, "ok", 2),
        (a_id.as_str(), gmail, "scope_not_granted", 4),
    ];
    expected.sort();
    assert_eq!(acts, expected, "every act counted once, in its own group");
    let (_, a_rows) = groups[&(a_id.clone(), String::new(), "ok".to_owned())];
    assert!(a_rows <= 3, "25 identical hand-outs took {a_rows} rows");
    assert!(new.iter().all(|r| r.action == "token" && r.last_at >= r.at));

    // The flush wrote that window: the next identical hand-out starts a row of its own.
    t.v1("POST", &path, Some(&a), None).await;
    let rows = audit_rows(&t, &sub).await;
    assert_eq!((rows[0].actor.as_str(), rows[0].times), (a_id.as_str(), 1));
    assert!(rows[0].id > new.iter().map(|r| r.id).max().unwrap());
}

#[tokio::test]
async fn the_proxy_refreshes_once_after_a_401_and_never_more() {
    let t = TestApp::start().await;
    let sub = t.signed_in("p401@example.com").await;
    let key = t.api_key(&[Proxy]).await;
    let url = format!(
        "{}/v1/users/{sub}/google/drive/v3/files?spaces=appDataFolder",
        t.url
    );
    // Google's clock moves two hours on: the held token is dead there, though not here.
    t.emulator_call("PUT", "settings", Some(json!({"clock_offset_secs": 7200})))
        .await;
    let r = t.http.get(&url).bearer_auth(&key).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let stats = t.stats().await;
    assert_eq!(stats["refreshes"], 1);
    assert_eq!(stats["drive_requests"], 2);
    // An API that now always answers 401, within the cooldown of the refresh a 401 caused: its
    // answer is passed back, with no refresh and no retry.
    t.set_faults(json!({"drive": {"status": 401}})).await;
    let r = t.http.get(&url).bearer_auth(&key).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["errors"][0]["reason"], "authError", "{body}");
    let stats = t.stats().await;
    assert_eq!(stats["drive_requests"], 3);
    assert_eq!(stats["refreshes"], 1);
}

/// A path that keeps answering 401 costs one refresh per `broker.rejection_cooldown` (30 s),
/// not one per call: a `proxy` key cannot spend the client's token-endpoint quota.
#[tokio::test]
async fn a_path_that_keeps_answering_401_costs_one_refresh_per_cooldown() {
    let clock = ManualClock::new();
    let t = TestApp::start_with(Options {
        clock: Some(clock.clone()),
        ..Options::default()
    })
    .await;
    let sub = t.signed_in("cooldown@example.com").await;
    let key = t.api_key(&[Proxy]).await;
    let url = format!(
        "{}/v1/users/{sub}/google/drive/v3/files?spaces=appDataFolder",
        t.url
    );
    t.set_faults(json!({"drive": {"status": 401}})).await;
    for _ in 0..3 {
        let r = t.http.get(&url).bearer_auth(&key).send().await.unwrap();
        assert_eq!(r.status(), 401);
    }
    let stats = t.stats().await;
    assert_eq!(stats["refreshes"], 1, "{stats}");
    // The first call was retried once with the new token; the others were passed back.
    assert_eq!(stats["drive_requests"], 4, "{stats}");

    clock.advance(time::Duration::seconds(29));
    let r = t.http.get(&url).bearer_auth(&key).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(t.stats().await["refreshes"], 1);

    clock.advance(time::Duration::seconds(2));
    let r = t.http.get(&url).bearer_auth(&key).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let stats = t.stats().await;
    assert_eq!(stats["refreshes"], 2, "{stats}");
    assert_eq!(stats["drive_requests"], 7, "{stats}");
}

/// The proxy's upstream is the emulator's echo, which answers the headers it received.
#[tokio::test]
async fn the_proxy_passes_on_only_the_headers_of_an_api_call() {
    let t = TestApp::start().await;
    let sub = t.signed_in("echo@example.com").await;
    let key = t.api_key(&[Proxy]).await;
    let url = format!(
        "{}/v1/users/{sub}/google/_emulator/echo/upload/drive/v3/files?uploadType=resumable",
        t.url
    );
    let dropped = [
        ("x-forwarded-for", "192.0.2.1"),
        ("forwarded", "for=192.0.2.1"),
        ("origin", "https://evil.example"),
        ("referer", "https://evil.example/page"),
        ("x-api-key", "the-caller-s-key"),
        ("x-goog-api-key", "the-caller-s-google-key"),
        ("user-agent", "evil-agent/1"),
        ("cookie", "gk_session=the-caller-s"),
        ("x-goog-user-project", "someone-elses-project"),
        ("x-http-method-override", "DELETE"),
        ("x-requested-with", "XMLHttpRequest"),
    ];
    let kept = [
        ("accept", "application/json"),
        ("accept-language", "de"),
        ("content-type", "application/json; charset=UTF-8"),
        ("if-none-match", "\"v1\""),
        ("range", "bytes=0-9"),
        ("x-upload-content-type", "text/plain"),
        ("x-upload-content-length", "5"),
        ("x-goog-upload-protocol", "resumable"),
    ];
    let mut request = t.http.post(&url).bearer_auth(&key).body("{}");
    for (name, value) in dropped.iter().chain(&kept) {
        request = request.header(*name, *value);
    }
    let r = request.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["method"], "POST", "{echo}");
    assert_eq!(echo["query"], "uploadType=resumable", "{echo}");
    let received = echo["headers"].as_object().unwrap();
    for (name, value) in dropped {
        let passed = received
            .get(name)
            .is_some_and(|v| v.as_array().unwrap().iter().any(|v| v == value));
        assert!(!passed, "{name} reached the API: {echo}");
    }
    for name in [
        "x-forwarded-for",
        "forwarded",
        "origin",
        "x-api-key",
        "x-goog-api-key",
        "cookie",
    ] {
        assert!(
            !received.contains_key(name),
            "{name} reached the API: {echo}"
        );
    }
    for (name, value) in kept {
        assert_eq!(received.get(name), Some(&json!([value])), "{name}: {echo}");
    }
    // The body's own length, as sent.
    assert_eq!(received["content-length"], json!(["2"]), "{echo}");
}

/// A request written by hand on a fresh connection (reqwest does not send TRACE or CONNECT to
/// an origin-form path): the status, the `Allow` header and the body.
async fn raw_call(t: &TestApp, method: &str, path: &str, key: &str) -> (u16, String, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = t.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("no answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let allow = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("allow")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    (
        status,
        allow,
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn the_proxy_takes_only_the_methods_of_google_s_apis() {
    let t = TestApp::start().await;
    let sub = t.signed_in("methods@example.com").await;
    let key = t.api_key(&[Proxy]).await;
    let path = format!("/v1/users/{sub}/google/_emulator/echo/drive/v3/files");
    for method in ["TRACE", "CONNECT", "OPTIONS", "PROPFIND"] {
        let (status, allow, body) = raw_call(&t, method, &path, &key).await;
        assert_eq!(status, 405, "{method}: {body}");
        assert_eq!(body["error"], "invalid_request", "{method}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        let mut allowed: Vec<&str> = allow.split(',').map(str::trim).collect();
        allowed.sort_unstable();
        assert_eq!(
            allowed,
            ["DELETE", "GET", "HEAD", "PATCH", "POST", "PUT"],
            "{method}: {allow:?}"
        );
    }
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        let r = t
            .http
            .request(method.parse().unwrap(), format!("{}{path}", t.url))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{method}");
        let echo: Value = r.json().await.unwrap();
        assert_eq!(echo["method"], method);
    }
    let head = t
        .http
        .head(format!("{}{path}", t.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    let rows = audit_rows(&t, &sub).await;
    assert!(
        rows.iter()
            .all(|r| !r.detail.starts_with("TRACE") && !r.detail.starts_with("CONNECT")),
        "{rows:?}"
    );
}

#[tokio::test]
async fn users_are_listed_a_page_at_a_time_and_deleted_with_their_grant() {
    let t = TestApp::start().await;
    let mut subs = Vec::new();
    for e in ["u1@example.com", "u2@example.com", "u3@example.com"] {
        subs.push(t.signed_in(e).await);
    }
    subs.sort();
    let key = t.api_key(&ALL).await;
    let first = t.v1("GET", "/v1/users?limit=2", Some(&key), None).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.body["users"].as_array().unwrap().len(), 2);
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let second = t
        .v1(
            "GET",
            &format!("/v1/users?limit=2&cursor={cursor}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(second.body["users"].as_array().unwrap().len(), 1);
    assert!(second.body["next_cursor"].is_null());
    let listed: Vec<&str> = first.body["users"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second.body["users"].as_array().unwrap())
        .map(|u| u["user"]["sub"].as_str().unwrap())
        .collect();
    assert_eq!(listed, subs.iter().map(String::as_str).collect::<Vec<_>>());
    t.v1("GET", "/v1/users?limit=0", Some(&key), None)
        .await
        .assert_error(400, "invalid_request");
    t.v1("GET", "/v1/users?cursor=!!", Some(&key), None)
        .await
        .assert_error(400, "invalid_request");

    let gone = &subs[0];
    let d = t
        .v1("DELETE", &format!("/v1/users/{gone}"), Some(&key), None)
        .await;
    assert_eq!(d.status, 204, "{}", d.text);
    assert_eq!(t.stats().await["revocations"], 1);
    t.v1("GET", &format!("/v1/users/{gone}"), Some(&key), None)
        .await
        .assert_error(404, "not_found");
    t.v1("DELETE", &format!("/v1/users/{gone}"), Some(&key), None)
        .await
        .assert_error(404, "not_found");
    let rows = audit_rows(&t, gone).await;
    assert!(
        rows.iter()
            .any(|r| r.action == "delete_user" && r.outcome == "ok")
    );
}

/// Every path the router serves, as axum writes it (`{*path}` for a wildcard). axum offers no
/// list of its routes but names each one's path in the router's `Debug` form
/// (`RouteId(3): "/v1/users/{sub}"`); the check below fails, rather than passes, should
/// that form change.
fn routed_paths(app: &grantkeeper_server::App) -> std::collections::BTreeSet<String> {
    let debug = format!("{:?}", grantkeeper_server::http::router(app.clone()));
    // The routes, not the fallback router that follows them.
    let routes = debug.split("fallback_router").next().unwrap();
    let paths: std::collections::BTreeSet<String> = routes
        .split("RouteId(")
        .skip(1)
        .filter_map(|part| {
            let quoted = part.trim_start_matches(|c: char| c.is_ascii_digit());
            let path = quoted.strip_prefix("): \"")?;
            Some(path[..path.find('"')?].to_owned())
        })
        .collect();
    assert!(
        paths.contains("/healthz") && paths.contains("/v1/users/{sub}/google/{*path}"),
        "the router's paths could not be read from {debug}"
    );
    paths
}

/// The document is generated from the routes' own types (crates/server/src/http/openapi.rs)
/// and names exactly what the router serves, the console's and the demo page's routes aside
/// (design.md: the document describes the JSON API only). Any change to it shows in the
/// snapshot.
#[tokio::test]
async fn the_openapi_document_matches_the_routes() {
    let t = TestApp::start_with(Options {
        demo_page: true,
        ..Options::default()
    })
    .await;
    let a = t.get("/openapi.json", None).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["content-type"], "application/json");
    assert_eq!(a.body["openapi"], "3.1.0");
    let paths = a.body["paths"].as_object().unwrap();

    // What the router serves is documented, and nothing else is.
    let routed: std::collections::BTreeSet<String> = routed_paths(&t.app)
        .into_iter()
        .filter(|p| {
            let console = p == "/admin" || p.starts_with("/admin/");
            let demo_page = ["/", "/favicon.ico", "/web/app.js", "/web/app.css"]
                .contains(&p.as_str())
                || p.starts_with("/demo/");
            !console && !demo_page
        })
        .map(|p| p.replace("{*path}", "{path}"))
        .collect();
    let documented: std::collections::BTreeSet<String> = paths.keys().cloned().collect();
    assert_eq!(
        routed, documented,
        "routed (left) and documented (right) paths"
    );

    // Each path takes exactly the documented methods: without credentials a documented one is
    // refused, never unknown, and any other answers 405.
    for (path, item) in paths {
        let concrete = path
            .replace("{sub}", "123")
            .replace("{id}", "1")
            .replace("{path}", "drive/v3/files");
        for method in ["get", "post", "put", "patch", "delete"] {
            let r = t
                .http
                .request(
                    method.to_uppercase().parse().unwrap(),
                    format!("{}{concrete}", t.url),
                )
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            let routed = status != 405 && !(status == 404 && body["message"] == "no such endpoint");
            assert_eq!(
                routed,
                item.get(method).is_some(),
                "{method} {path}: answered {status} {body}"
            );
        }
    }

    // The contract's pieces: every error code, the API key on every /v1 operation with the
    // scope it needs, request and answer schemas.
    let schemas = &a.body["components"]["schemas"];
    let codes: Vec<&str> = schemas["Error"]["properties"]["error"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        grantkeeper_server::error::CODES,
        "the error codes of the contract"
    );
    assert_eq!(
        a.body["components"]["securitySchemes"]["apiKey"]["scheme"],
        "bearer"
    );
    for (path, item) in paths.iter().filter(|(p, _)| p.starts_with("/v1/")) {
        for (method, op) in item.as_object().unwrap() {
            let scopes = &op["security"][0]["apiKey"];
            assert!(
                scopes.as_array().is_some_and(|s| s.len() == 1),
                "{method} {path} names the API key and its scope: {op}"
            );
            if path.starts_with("/v1/jobs") {
                assert_eq!(scopes[0], "jobs", "{method} {path}");
            }
        }
    }
    let mut ids: Vec<&str> = paths
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .map(|op| op["operationId"].as_str().unwrap())
        .collect();
    let operations = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), operations, "an operation id names one operation");
    for (path, method, schema) in [
        ("/v1/users/{sub}/token", "post", "AccessToken"),
        ("/v1/jobs", "post", "Job"),
        ("/v1/jobs/{id}/claim", "post", "Claim"),
        ("/authcode", "post", "SignIn"),
    ] {
        let answer = &paths[path][method]["responses"];
        let ok = answer.get("200").or(answer.get("201")).unwrap();
        assert_eq!(
            ok["content"]["application/json"]["schema"]["$ref"],
            format!("#/components/schemas/{schema}"),
            "{method} {path}"
        );
    }
    for (path, schema) in [
        ("/v1/users/{sub}/token", "TokenRequest"),
        ("/v1/jobs", "JobRequest"),
        ("/v1/jobs/{id}/reports", "Report"),
        ("/authcode", "CodeJson"),
    ] {
        let body = &paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"];
        assert!(
            body.to_string()
                .contains(&format!("#/components/schemas/{schema}")),
            "{path}: {body}"
        );
    }
    insta::assert_json_snapshot!("openapi", a.body);
}
