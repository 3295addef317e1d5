//! Sign-in from each platform, the refresh-token rules, sessions and key rotation. A web
//! sign-in and the rule that keeps the held refresh token run on PostgreSQL too.

use super::harness::{Backend, Code, Options, TestApp};
use grantkeeper_core::ManualClock;
use grantkeeper_core::scopes::{DRIVE_APPDATA, EMAIL, PROFILE};
use serde_json::json;

fn scopes(a: &super::harness::Answer) -> Vec<String> {
    a.body["granted_scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

on_both_stores!(
    web_sign_in_creates_the_user_keeps_the_refresh_token_and_starts_a_session,
    a_later_sign_in_without_a_refresh_token_keeps_the_held_one,
);

async fn web_sign_in_creates_the_user_keeps_the_refresh_token_and_starts_a_session(on: Backend) {
    let Some(t) = TestApp::start_on(on, Options::default()).await else {
        return;
    };
    let code = t.web_code("alice@example.com").await;
    let a = t.authcode_web(&code).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let user = &a.body["user"];
    assert_eq!(user["email"], "alice@example.com");
    assert_eq!(user["email_verified"], true);
    let sub = user["sub"].as_str().unwrap().to_owned();
    assert!(!sub.is_empty());
    for field in ["name", "picture", "given_name", "family_name", "locale"] {
        assert!(
            user.get(field).is_some(),
            "user.{field} missing in {}",
            a.text
        );
    }
    assert_eq!(a.body["offline_access"], true);
    assert_eq!(a.body["needs_consent"], false);
    let granted = scopes(&a);
    for s in ["openid", EMAIL, PROFILE, DRIVE_APPDATA] {
        assert!(granted.contains(&s.to_owned()), "{s} not in {granted:?}");
    }

    let set_cookie = a
        .headers
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    for attr in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/"] {
        assert!(set_cookie.contains(attr), "{attr} missing in {set_cookie}");
    }
    let cookie = a.session_cookie().unwrap();
    let me = t.get("/me", Some(&cookie)).await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.body["user"]["sub"], sub.as_str());
    assert_eq!(me.body["grant"]["state"], "active");

    // The refresh token Google issued is the one held, sealed.
    let issued = t
        .emulator_call("GET", "tokens?email=alice@example.com", None)
        .await;
    let rt = issued.body["refresh_tokens"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        t.held_refresh_token(&sub).await.as_deref(),
        Some(rt.as_str())
    );
}

#[tokio::test]
async fn android_and_ios_codes_exchange_with_an_empty_redirect_uri() {
    let t = TestApp::start().await;
    let android = t
        .mobile_code("andy@example.com", t.emulator.android_client_id())
        .await;
    let a = t.authcode_android(&android).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["offline_access"], true);
    assert!(a.session_cookie().is_some());

    let ios = t
        .mobile_code("iris@example.com", t.emulator.ios_client_id())
        .await;
    let a = t.authcode_ios(&ios).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["user"]["email"], "iris@example.com");

    // Form with `code=` and an explicit platform in the query works too.
    let code = t
        .mobile_code("ios2@example.com", t.emulator.ios_client_id())
        .await;
    let a = t
        .post_authcode(
            "?platform=ios",
            Some("application/x-www-form-urlencoded"),
            &[("x-requested-with", "app")],
            format!("code={}", code.replace('/', "%2F")).into_bytes(),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
}

#[tokio::test]
async fn a_web_code_sent_as_mobile_and_a_mobile_code_sent_as_web_are_rejected() {
    let t = TestApp::start().await;
    let mobile = t
        .mobile_code("m@example.com", t.emulator.android_client_id())
        .await;
    t.authcode_web(&mobile)
        .await
        .assert_error(400, "code_rejected");
    let web = t.web_code("w@example.com").await;
    t.authcode_android(&web)
        .await
        .assert_error(400, "code_rejected");
}

async fn a_later_sign_in_without_a_refresh_token_keeps_the_held_one(on: Backend) {
    let Some(t) = TestApp::start_on(on, Options::default()).await else {
        return;
    };
    let first = t.authcode_web(&t.web_code("bob@example.com").await).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let sub = first.body["user"]["sub"].as_str().unwrap().to_owned();
    let held = t.held_refresh_token(&sub).await.unwrap();

    let second = t.authcode_web(&t.web_code("bob@example.com").await).await;
    assert_eq!(second.status, 200, "{}", second.text);
    assert_eq!(second.body["user"]["sub"], sub.as_str());
    assert_eq!(second.body["offline_access"], true);
    assert_eq!(second.body["needs_consent"], false);
    assert_eq!(t.held_refresh_token(&sub).await.unwrap(), held);
    let stats = t.stats().await;
    assert_eq!(stats["code_exchanges"], 2);
    assert_eq!(stats["refresh_tokens_issued"], 1);

    // With prompt=consent Google issues a new one, which replaces the held one.
    let third = t
        .authcode_web(
            &t.mint(Code {
                prompt: Some("consent"),
                ..Code::web("bob@example.com")
            })
            .await,
        )
        .await;
    assert_eq!(third.status, 200, "{}", third.text);
    let replaced = t.held_refresh_token(&sub).await.unwrap();
    assert_ne!(replaced, held);
    assert_eq!(t.stats().await["refresh_tokens_issued"], 2);
}

#[tokio::test]
async fn online_access_needs_consent_until_an_offline_consent() {
    let t = TestApp::start().await;
    let a = t.sign_in_online("carol@example.com").await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["offline_access"], false);
    assert_eq!(a.body["needs_consent"], true);
    let cookie = a.session_cookie().unwrap();
    assert_eq!(
        t.get("/me", Some(&cookie)).await.body["grant"]["state"],
        "needs_consent"
    );

    let offline = t
        .mint(Code {
            prompt: Some("consent"),
            ..Code::web("carol@example.com")
        })
        .await;
    let b = t.authcode_web(&offline).await;
    assert_eq!(b.status, 200, "{}", b.text);
    assert_eq!(b.body["needs_consent"], false);
    assert_eq!(
        t.get("/me", Some(&cookie)).await.body["grant"]["state"],
        "active"
    );
    // The grant's state history records the change.
    let sub = b.body["user"]["sub"].as_str().unwrap();
    let events = t.app.store().grant_events(sub).await.unwrap();
    let states: Vec<_> = events.iter().map(|e| e.to.as_str()).collect();
    assert_eq!(states, ["needs_consent", "active"]);
}

#[tokio::test]
async fn granular_consent_records_only_what_was_granted() {
    let t = TestApp::start().await;
    let body = json!({
        "email": "gran@example.com", "client_id": t.emulator.web_client().client_id,
        "scope": format!("openid email profile {DRIVE_APPDATA}"), "redirect_uri": "postmessage",
        "access_type": "offline", "granted_scopes": "openid email profile",
    });
    let minted = t.emulator_call("POST", "codes", Some(body)).await;
    assert_eq!(minted.status, 200, "{}", minted.text);
    let a = t.authcode_web(minted.body["code"].as_str().unwrap()).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(
        !scopes(&a).contains(&DRIVE_APPDATA.to_owned()),
        "{:?}",
        scopes(&a)
    );
}

#[tokio::test]
async fn the_same_email_is_the_same_user() {
    let t = TestApp::start().await;
    let a = t.authcode_web(&t.web_code("same@example.com").await).await;
    let b = t
        .authcode_android(
            &t.mobile_code("same@example.com", t.emulator.android_client_id())
                .await,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(b.status, 200, "{}", b.text);
    assert_eq!(a.body["user"]["sub"], b.body["user"]["sub"]);
}

#[tokio::test]
async fn signing_keys_rotated_between_two_sign_ins_are_picked_up() {
    let t = TestApp::start().await;
    let a = t.authcode_web(&t.web_code("rot1@example.com").await).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let rotated = t.emulator_call("POST", "keys/rotate", None).await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let b = t.authcode_web(&t.web_code("rot2@example.com").await).await;
    assert_eq!(b.status, 200, "{}", b.text);
    // The second ID token was signed by the new key.
    let id_token = t
        .emulator_call("GET", "tokens?email=rot2@example.com", None)
        .await
        .body["id_tokens"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let header = jsonwebtoken::decode_header(&id_token).unwrap();
    assert_eq!(header.kid.as_deref(), rotated.body["kid"].as_str());
}

#[tokio::test]
async fn sessions_end_on_logout() {
    let t = TestApp::start().await;
    let a = t.authcode_web(&t.web_code("dave@example.com").await).await;
    let cookie = a.session_cookie().unwrap();
    t.get("/me", None).await.assert_error(401, "unauthorized");
    t.get("/me", Some("gk_session=forged"))
        .await
        .assert_error(401, "unauthorized");
    t.post("/logout", Some(&cookie), &[])
        .await
        .assert_error(403, "csrf");
    assert_eq!(t.get("/me", Some(&cookie)).await.status, 200);
    let out = t
        .post(
            "/logout",
            Some(&cookie),
            &[("x-requested-with", "XmlHttpRequest")],
        )
        .await;
    assert_eq!(out.status, 204, "{}", out.text);
    assert!(
        out.headers
            .get("set-cookie")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    t.get("/me", Some(&cookie))
        .await
        .assert_error(401, "unauthorized");
}

/// Every sign-in opens a session; a user keeps the newest `MAX_SESSIONS_PER_USER`, so the
/// cookie of the oldest stops working when one more is opened, and the others go on.
#[tokio::test]
async fn a_user_keeps_a_bounded_number_of_sessions() {
    let clock = ManualClock::new();
    let t = TestApp::start_with(super::harness::Options {
        clock: Some(clock.clone()),
        ..Default::default()
    })
    .await;
    let mut cookies = Vec::new();
    for i in 0..=grantkeeper_store::MAX_SESSIONS_PER_USER {
        let a = t
            .authcode_web(&t.web_code("bounded@example.com").await)
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
        cookies.push(a.session_cookie().unwrap());
        if i == 0 {
            // Sessions are timed in whole seconds: the first is older than the others.
            clock.advance(time::Duration::milliseconds(1100));
        }
    }
    t.get("/me", Some(&cookies[0]))
        .await
        .assert_error(401, "unauthorized");
    for cookie in &cookies[1..] {
        assert_eq!(t.get("/me", Some(cookie)).await.status, 200);
    }
}

/// Expired sessions do not stay in the store: the server deletes them every
/// `server.session_purge_interval`, whether or not their user comes back.
#[tokio::test]
async fn expired_sessions_are_purged_in_the_background() {
    let clock = ManualClock::new();
    let t = TestApp::start_with(super::harness::Options {
        sessions: Some(("2s", "1s")),
        clock: Some(clock.clone()),
        ..Default::default()
    })
    .await;
    let a = t
        .authcode_web(&t.web_code("purged@example.com").await)
        .await;
    let cookie = a.session_cookie().unwrap();
    assert_eq!(t.get("/me", Some(&cookie)).await.status, 200);
    let store = t.app.store();
    // Nothing has expired yet, so there is nothing to purge.
    assert_eq!(
        store
            .purge_expired_sessions(t.app.clock().now())
            .await
            .unwrap(),
        0
    );
    clock.advance(time::Duration::seconds(3));
    // The purge runs on a timer, every second here: two of its turns.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    t.get("/me", Some(&cookie))
        .await
        .assert_error(401, "unauthorized");
    // The server's own purge got there first: nothing expired is left.
    assert_eq!(
        store
            .purge_expired_sessions(t.app.clock().now())
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn health_readiness_and_unknown_routes() {
    let t = TestApp::start().await;
    assert_eq!(t.get("/healthz", None).await.status, 200);
    let ready = t.get("/readyz", None).await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert_eq!(ready.body["store"], "sqlite");
    t.get("/nope", None).await.assert_error(404, "not_found");
    let wrong_method = t.get("/authcode", None).await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.body["error"], "invalid_request");
}

/// Incremental authorization names the signed-in user (`?sub=`): a code that Google's window
/// returned for another account is refused, and nothing of it is kept.
#[tokio::test]
async fn a_code_for_another_account_than_the_expected_one_is_refused() {
    let t = TestApp::start().await;
    let alice = t.signed_in("alice@example.com").await;
    let carol = t.signed_in("carol@example.com").await;
    // Bob, unknown here: refused, not created, and his new grant revoked at Google.
    let revocations = t.stats().await["revocations"].as_u64().unwrap();
    let refused = incremental(
        &t,
        format!("?sub={alice}"),
        t.web_code("bob@example.com").await,
    )
    .await;
    refused.assert_error(403, "forbidden");
    assert!(refused.session_cookie().is_none(), "no session for bob");
    let listed = t
        .app
        .store()
        .subs_by_email("bob@example.com")
        .await
        .unwrap();
    assert!(listed.is_empty(), "bob was not recorded: {listed:?}");
    assert_eq!(t.stats().await["revocations"], revocations + 1);

    // Dan, who never signed in here, grants Drive alone: no ID token says who he is, but the
    // expected user's code would carry one (her grant has identity scopes). Refused, revoked.
    let refused = incremental(
        &t,
        format!("?sub={alice}"),
        t.mint(Code {
            scope: DRIVE_APPDATA,
            ..Code::web("dan@example.com")
        })
        .await,
    )
    .await;
    refused.assert_error(403, "forbidden");
    assert_eq!(t.stats().await["revocations"], revocations + 2);
    let revocations = revocations + 1;

    // Carol, whose grant is held here: refused, and her held grant left alone.
    let held = t.held_refresh_token(&carol).await.unwrap();
    let refused = incremental(
        &t,
        format!("?sub={alice}"),
        t.mint(Code {
            prompt: Some("consent"),
            ..Code::web("carol@example.com")
        })
        .await,
    )
    .await;
    refused.assert_error(403, "forbidden");
    assert_eq!(t.stats().await["revocations"], revocations + 1);
    assert_eq!(t.held_refresh_token(&carol).await.unwrap(), held);

    // Alice's own code goes through.
    let ok = incremental(
        &t,
        format!("?sub={alice}"),
        t.web_code("alice@example.com").await,
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.body["user"]["sub"], alice.as_str());
}

/// The web client's call for incremental authorization of a signed-in user.
async fn incremental(t: &TestApp, query: String, code: String) -> super::harness::Answer {
    let origin = t.url.clone();
    t.post_authcode(
        &query,
        Some("application/octet-stream"),
        &[("x-requested-with", "XmlHttpRequest"), ("origin", &origin)],
        code.into_bytes(),
    )
    .await
}

/// A Rust service embedding the server signs a user in through the library: the same records
/// as through `POST /authcode` (the user, the grant, the `sign_in` audit row and a live
/// session), and a session secret that works as the route's cookie.
#[tokio::test]
async fn sign_in_through_the_library_leaves_what_the_route_leaves() {
    use grantkeeper_core::{ExposeSecret, SecretString};
    use grantkeeper_server::ops::{self, Platform, SignInRequest};
    use grantkeeper_store::{AuditFilter, AuditRecord};

    let t = TestApp::start().await;
    let by_route = t.authcode_web(&t.web_code("route@example.com").await).await;
    assert_eq!(by_route.status, 200, "{}", by_route.text);
    let route_sub = by_route.body["user"]["sub"].as_str().unwrap().to_owned();
    let route_cookie = by_route.session_cookie().unwrap();

    let code = SecretString::from(t.web_code("library@example.com").await);
    let signed_in = ops::sign_in(
        &t.app,
        SignInRequest {
            code: &code,
            platform: Platform::Web,
            expected_sub: None,
        },
    )
    .await
    .unwrap();
    let sub = signed_in.user.profile.sub.clone();
    assert!(signed_in.created);
    assert_eq!(
        signed_in.user.profile.email.as_deref(),
        Some("library@example.com")
    );
    let (_, grant) = t.app.store().user(&sub).await.unwrap().unwrap();
    assert!(grant.refresh_token.is_some(), "the refresh token is held");

    // The audit rows: one each, alike but for the user.
    t.app.audit().flush().await;
    let rows_of = |sub: String| {
        let store = t.app.store().clone();
        async move {
            store
                .audit(AuditFilter {
                    sub: Some(sub),
                    limit: 10,
                    ..Default::default()
                })
                .await
                .unwrap()
        }
    };
    let shape = |rows: Vec<AuditRecord>| -> Vec<(String, String, String, String)> {
        rows.into_iter()
            .map(|r| (r.actor, r.action, r.detail, r.outcome))
            .collect()
    };
    let library_rows = shape(rows_of(sub.clone()).await);
    assert_eq!(library_rows, shape(rows_of(route_sub.clone()).await));
    assert_eq!(library_rows.len(), 1, "{library_rows:?}");
    let (actor, action, detail, outcome) = &library_rows[0];
    assert_eq!(
        (actor.as_str(), action.as_str(), outcome.as_str()),
        ("session", "sign_in", "ok")
    );
    assert!(
        detail.starts_with("web ") && detail.contains("openid"),
        "{detail}"
    );

    // The session: live in the store, and the route's cookie in all but its secret.
    assert_eq!(
        ops::sessions::user_of(&t.app, &signed_in.session.secret)
            .await
            .unwrap(),
        sub
    );
    let ttl = signed_in.session.ttl;
    assert_eq!(ttl, t.app.settings().session_ttl);
    let cookie = format!("gk_session={}", signed_in.session.secret.expose_secret());
    let me = t.get("/me", Some(&cookie)).await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.body["user"]["sub"], sub.as_str());
    let route_me = t.get("/me", Some(&route_cookie)).await;
    assert_eq!(route_me.body["user"]["sub"], route_sub.as_str());
    assert_eq!(
        signed_in.session.secret.expose_secret().len(),
        route_cookie.trim_start_matches("gk_session=").len(),
        "secrets of the same making"
    );
}
