//! The demo page as served (its configuration and policy), its `/demo/*` calls, and
//! `POST /disconnect`.

use crate::server::harness::{Options, TestApp};
use serde_json::{Value, json};

const XRW: (&str, &str) = ("x-requested-with", "XmlHttpRequest");

async fn with_page() -> TestApp {
    TestApp::start_with(Options {
        demo_page: true,
        ..Options::default()
    })
    .await
}

/// The JSON the page reads from its configuration element.
fn page_config(html: &str) -> Value {
    let start = html.find("id=\"gk-config\">").unwrap() + "id=\"gk-config\">".len();
    let end = start + html[start..].find("</script>").unwrap();
    serde_json::from_str(&html[start..end]).unwrap()
}

#[tokio::test]
async fn the_page_loads_identity_services_from_the_provider_under_a_strict_policy() {
    let t = with_page().await;
    let page = t.get("/", None).await;
    assert_eq!(page.status, 200);
    let config = page_config(&page.text);
    assert_eq!(
        config["gsi_script"],
        format!("{}/gsi/client", t.emulator_url),
        "{config}"
    );
    assert_eq!(config["provider"], "emulator");
    assert_eq!(
        config["emulator_control"],
        Value::Null,
        "only `dev` offers the emulator's control API"
    );
    assert_eq!(
        config["client_id"],
        t.emulator.web_client().client_id.as_str()
    );
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains(&format!("script-src 'self' {};", t.emulator_url)),
        "{csp}"
    );
    assert!(
        !csp.contains("unsafe-inline"),
        "no inline script runs: {csp}"
    );
    assert!(page.text.contains("Sign in with Google"));
    // The script it names is served, by the provider, as JavaScript.
    let gsi = t
        .http
        .get(config["gsi_script"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(gsi.status(), 200);
    assert!(
        gsi.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript")
    );
    assert!(gsi.text().await.unwrap().contains("initCodeClient"));
    for (path, kind) in [("/web/app.js", "javascript"), ("/web/app.css", "css")] {
        let a = t.get(path, None).await;
        assert_eq!(a.status, 200, "{path}");
        let ct = a.headers["content-type"].to_str().unwrap();
        assert!(ct.contains(kind), "{path}: {ct}");
    }
}

#[tokio::test]
async fn without_demo_page_the_server_serves_no_page() {
    let t = TestApp::start().await;
    for path in ["/", "/web/app.js", "/demo/files"] {
        let a = t.get(path, None).await;
        a.assert_error(404, "not_found");
    }
}

#[tokio::test]
async fn drive_files_are_listed_added_and_deleted_for_the_session_user() {
    let t = with_page().await;
    let a = t.authcode_web(&t.web_code("files@example.com").await).await;
    let cookie = a.session_cookie().unwrap();
    let call = |method: &str, path: &str| {
        t.http
            .request(method.parse().unwrap(), format!("{}{path}", t.url))
            .header("cookie", &cookie)
            .header(XRW.0, XRW.1)
    };
    let added: Value = call("POST", "/demo/files")
        .json(&json!({"name": "a.txt", "content": "x"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = added["result"]["id"].as_str().unwrap().to_owned();
    let listed: Value = call("GET", "/demo/files")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["result"]["files"][0]["id"], id.as_str());

    let bad = call("DELETE", "/demo/files/..%2Fsecret")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let no_xrw = t
        .http
        .delete(format!("{}/demo/files/{id}", t.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        no_xrw.status(),
        403,
        "a state change needs X-Requested-With"
    );

    let deleted = call("DELETE", &format!("/demo/files/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let again = call("DELETE", &format!("/demo/files/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
    let listed: Value = call("GET", "/demo/files")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["result"]["files"], json!([]), "{listed}");
}

#[tokio::test]
async fn a_revoked_grant_is_found_by_the_next_drive_call() {
    let t = with_page().await;
    let a = t.authcode_web(&t.web_code("gone@example.com").await).await;
    let cookie = a.session_cookie().unwrap();
    let sub = a.body["user"]["sub"].as_str().unwrap().to_owned();
    // The access token is cached; Google revokes everything (a password change).
    t.emulator_call("POST", "users/gone@example.com/revoke", None)
        .await;
    let r = t.get("/demo/files", Some(&cookie)).await;
    r.assert_error(409, "grant_revoked");
    let (_, grant) = t.app.store().user(&sub).await.unwrap().unwrap();
    assert_eq!(grant.state.as_str(), "revoked");
    let me = t.get("/me", Some(&cookie)).await;
    assert_eq!(me.body["grant"]["state"], "revoked", "{}", me.text);
}

#[tokio::test]
async fn disconnect_revokes_at_google_and_ends_every_session() {
    let t = TestApp::start().await;
    let first = t
        .authcode_web(&t.web_code("leaving@example.com").await)
        .await;
    let sub = first.body["user"]["sub"].as_str().unwrap().to_owned();
    let cookie = first.session_cookie().unwrap();
    // A second device, signed in too.
    let other = t
        .authcode_web(&t.web_code("leaving@example.com").await)
        .await
        .session_cookie()
        .unwrap();
    let held = t.held_refresh_token(&sub).await.unwrap();

    t.post("/disconnect", Some(&cookie), &[])
        .await
        .assert_error(403, "csrf");
    t.post("/disconnect", None, &[XRW])
        .await
        .assert_error(401, "unauthorized");
    t.post(
        "/disconnect",
        Some(&cookie),
        &[XRW, ("origin", "https://evil.example")],
    )
    .await
    .assert_error(403, "origin_not_allowed");
    assert_eq!(
        t.stats().await["revocations"],
        0,
        "refused calls change nothing"
    );

    let r = t.post("/disconnect", Some(&cookie), &[XRW]).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(r.headers["grantkeeper-revocation"], "revoked");
    let cleared = r.headers["set-cookie"].to_str().unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(t.stats().await["revocations"], 1);
    let (_, grant) = t.app.store().user(&sub).await.unwrap().unwrap();
    assert_eq!(grant.state.as_str(), "revoked");
    assert_eq!(grant.reason.as_deref(), Some("disconnected by the user"));
    assert!(grant.refresh_token.is_none() && grant.access_token.is_none());
    for c in [&cookie, &other] {
        t.get("/me", Some(c))
            .await
            .assert_error(401, "unauthorized");
    }
    // Google no longer honours the token it issued.
    let refresh = t
        .http
        .post(format!("{}/token", t.emulator_url))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", held.as_str()),
            ("client_id", t.emulator.web_client().client_id.as_str()),
            (
                "client_secret",
                grantkeeper_core::ExposeSecret::expose_secret(
                    &t.emulator.web_client().client_secret,
                ),
            ),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refresh.status(), 400);
    let key = t
        .api_key(&[grantkeeper_server::apikeys::KeyScope::Token])
        .await;
    t.v1("POST", &format!("/v1/users/{sub}/token"), Some(&key), None)
        .await
        .assert_error(409, "grant_revoked");
}

#[tokio::test]
async fn disconnect_when_google_cannot_revoke_queues_it() {
    let t = TestApp::start().await;
    let a = t.authcode_web(&t.web_code("stuck@example.com").await).await;
    let sub = a.body["user"]["sub"].as_str().unwrap().to_owned();
    let cookie = a.session_cookie().unwrap();
    let held = t.held_refresh_token(&sub).await.unwrap();
    let set = t
        .emulator_call(
            "PUT",
            "faults",
            Some(json!({"revoke": {"error_rate": 1.0, "status": 503}})),
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.text);

    // The user asked to leave: honoured here at once.
    let r = t.post("/disconnect", Some(&cookie), &[XRW]).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(r.headers["grantkeeper-revocation"], "queued");
    t.get("/me", Some(&cookie))
        .await
        .assert_error(401, "unauthorized");
    let (_, grant) = t.app.store().user(&sub).await.unwrap().unwrap();
    assert_eq!(grant.state.as_str(), "revoked");
    assert!(grant.refresh_token.is_none() && grant.access_token.is_none());
    assert_eq!(
        grant.reason.as_deref(),
        Some("disconnected by the user (revocation at Google queued)")
    );
    assert_eq!(t.app.store().count_revocations().await.unwrap(), 1);
    assert_eq!(t.stats().await["revocations"], 0);
    t.app.audit().flush().await;
    let audit = t
        .app
        .store()
        .audit(grantkeeper_store::AuditFilter {
            sub: Some(sub.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        audit
            .iter()
            .any(|r| r.action == "disconnect" && r.outcome == "queued"),
        "{audit:?}"
    );
    assert!(
        crate::server::harness::captured_logs()
            .lines()
            .any(|l| l.contains("WARN") && l.contains(&sub) && l.contains("queued")),
        "the queued revocation is logged at warn level"
    );

    // Google is back: the retry revokes the token there and empties the queue.
    t.set_faults(json!({})).await;
    let pass = t.app.retry_revocations_now().await.unwrap();
    assert_eq!((pass.revoked, pass.failed, pass.pending), (1, 0, 0));
    assert_eq!(t.stats().await["revocations"], 1);
    assert_eq!(t.app.store().count_revocations().await.unwrap(), 0);
    let refresh = t
        .http
        .post(format!("{}/token", t.emulator_url))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", held.as_str()),
            ("client_id", t.emulator.web_client().client_id.as_str()),
            (
                "client_secret",
                grantkeeper_core::ExposeSecret::expose_secret(
                    &t.emulator.web_client().client_secret,
                ),
            ),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refresh.status(), 400, "Google no longer honours the token");
}
