//! The admin console at /admin: sign-in with an API key, CSRF and origin checks, the users
//! list with search and pages, a user's page, revoking, escaping, and the activity charts.

use super::harness::{Answer, Code, Options, TestApp, captured_logs};
use grantkeeper_core::{GrantState, Scopes, UserProfile};
use grantkeeper_server::apikeys::KeyScope::{self, Token, UsersRead, UsersWrite};
use grantkeeper_server::apikeys::hash_key;
use grantkeeper_store::{ActivityPoint, AuditFilter, SignIn, StateUpdate, series};
use serde_json::json;

/// A signed-in console: the session cookie (`gk_admin=...`) and the session's CSRF token.
struct Console {
    cookie: String,
    csrf: String,
}

/// The `Set-Cookie` header this answer set for `name`, whole.
fn set_cookie(a: &Answer, name: &str) -> Option<String> {
    a.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// `name=value` of a `Set-Cookie` header.
fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

/// The value of the first `name="csrf"` field of a page.
fn csrf_field(html: &str) -> String {
    let start = html.find(r#"name="csrf" value=""#).expect("a csrf field") + 19;
    html[start..].split('"').next().unwrap().to_owned()
}

/// The rows of the users table, as `(sub, state)`.
fn rows(html: &str) -> Vec<(String, String)> {
    html.split(r#"<tr class="linked" data-sub=""#)
        .skip(1)
        .map(|rest| {
            let sub = rest.split('"').next().unwrap().to_owned();
            let state = rest
                .split(r#"data-state=""#)
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .to_owned();
            (sub, state)
        })
        .collect()
}

/// The `href` of the link with this id, unescaped.
fn link(html: &str, id: &str) -> Option<String> {
    let at = html.find(&format!(r#"id="{id}""#))?;
    let tag_start = html[..at].rfind('<')?;
    let tag = &html[tag_start..];
    let href = tag.split(r#"href=""#).nth(1)?.split('"').next()?;
    Some(href.replace("&amp;", "&"))
}

#[track_caller]
fn assert_console_headers(a: &Answer) {
    let h = |name: &str| {
        a.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(
        h("content-security-policy"),
        "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src 'self' data: https:; form-action 'self'; frame-ancestors 'none'"
    );
    assert_eq!(h("cache-control"), "no-store");
    assert_eq!(h("x-frame-options"), "DENY");
}

impl TestApp {
    async fn admin_get(&self, path: &str, cookie: Option<&str>) -> Answer {
        self.get(path, cookie).await
    }

    /// A form POST to the console, as a browser sends it (plus any extra headers).
    async fn admin_post(
        &self,
        path: &str,
        cookie: Option<&str>,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = self.http.post(format!("{}{path}", self.url)).form(fields);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        Answer {
            status,
            headers,
            body: serde_json::Value::Null,
            text,
        }
    }

    /// The sign-in form's double-submit cookie (`name=value`) and its field.
    async fn login_form(&self) -> (String, String) {
        let a = self.admin_get("/admin", None).await;
        assert_eq!(a.status, 200, "{}", a.text);
        let cookie = pair(&set_cookie(&a, "gk_admin_csrf").expect("a csrf cookie"));
        let field = csrf_field(&a.text);
        assert_eq!(cookie, format!("gk_admin_csrf={field}"));
        (cookie, field)
    }

    async fn try_login(&self, key: &str) -> Answer {
        let (cookie, field) = self.login_form().await;
        self.admin_post(
            "/admin/login",
            Some(&cookie),
            &[("api_key", key), ("csrf", &field)],
            &[("origin", &self.url)],
        )
        .await
    }

    async fn console(&self, key: &str) -> Console {
        let a = self.try_login(key).await;
        assert_eq!(a.status, 303, "{}", a.text);
        assert_eq!(a.headers["location"], "/admin");
        let cookie = pair(&set_cookie(&a, "gk_admin").expect("a session cookie"));
        let page = self.admin_get("/admin", Some(&cookie)).await;
        assert_eq!(page.status, 200, "{}", page.text);
        assert!(page.text.contains(r#"id="logout""#), "{}", page.text);
        Console {
            csrf: csrf_field(&page.text),
            cookie,
        }
    }

    async fn console_with(&self, scopes: &[KeyScope]) -> Console {
        let key = self.api_key(scopes).await;
        self.console(&key).await
    }

    async fn key_id_of(&self, secret: &str) -> String {
        self.app
            .store()
            .api_key_by_hash(&hash_key(secret))
            .await
            .unwrap()
            .unwrap()
            .id
    }

    async fn grant_state(&self, sub: &str) -> GrantState {
        self.app.store().user(sub).await.unwrap().unwrap().1.state
    }
}

#[tokio::test]
async fn sign_in_with_a_users_read_key_and_out() {
    let t = TestApp::start().await;
    let first = t.admin_get("/admin", None).await;
    assert_eq!(first.status, 200);
    assert_console_headers(&first);
    assert!(
        first
            .text
            .contains(r#"<label for="api-key">API key</label>"#)
    );
    assert!(
        first
            .text
            .contains(r#"<input id="api-key" name="api_key" type="password""#)
    );
    assert!(first.text.contains(r#"id="login""#));
    let csrf_cookie = set_cookie(&first, "gk_admin_csrf").unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/admin", "Secure"] {
        assert!(csrf_cookie.contains(attribute), "{csrf_cookie}");
    }

    let key = t.api_key(&[UsersRead]).await;
    let a = t.try_login(&key).await;
    assert_eq!(a.status, 303, "{}", a.text);
    assert_eq!(a.headers["location"], "/admin");
    assert_console_headers(&a);
    let session = set_cookie(&a, "gk_admin").unwrap();
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/admin",
        "Secure",
        "Max-Age=28800",
    ] {
        assert!(session.contains(attribute), "{session}");
    }
    // Only a hash of the secret is stored, with the key it was opened with.
    let secret = pair(&session).trim_start_matches("gk_admin=").to_owned();
    let store = t.app.store();
    let now = t.app.clock().now();
    assert!(store.admin_session(&secret, now).await.unwrap().is_none());
    let (record, held_key) = store
        .admin_session(&hash_key(&secret), now)
        .await
        .unwrap()
        .unwrap();
    let key_id = t.key_id_of(&key).await;
    assert_eq!(
        (record.key_id.as_str(), held_key.id.as_str()),
        (key_id.as_str(), key_id.as_str())
    );
    assert_eq!((record.expires_at - record.created_at).whole_hours(), 8);

    let cookie = pair(&session);
    let users = t.admin_get("/admin", Some(&cookie)).await;
    assert_eq!(users.status, 200);
    assert_console_headers(&users);
    assert!(users.text.contains("<h1>Users</h1>"));
    assert!(users.text.contains(&key_id));
    let same = t.admin_get("/admin/users", Some(&cookie)).await;
    assert!(same.text.contains("<h1>Users</h1>"));
    // The sign-in is audited.
    t.app.audit().flush().await;
    let audit = store.audit(AuditFilter::default()).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|r| r.actor == key_id && r.action == "console_sign_in")
    );

    // Signing out ends the session and clears the cookie.
    let csrf = csrf_field(&users.text);
    let out = t
        .admin_post("/admin/logout", Some(&cookie), &[("csrf", &csrf)], &[])
        .await;
    assert_eq!(out.status, 303, "{}", out.text);
    assert!(set_cookie(&out, "gk_admin").unwrap().contains("Max-Age=0"));
    // The sign-in form it leads to says that it happened.
    let location = out.headers["location"].to_str().unwrap().to_owned();
    assert_eq!(location, "/admin?signed-out=1");
    let told = t.admin_get(&location, None).await;
    assert!(
        told.text.contains(
            r#"<div class="alert ok" role="status" id="login-note"><p>You signed out of the console.</p></div>"#
        ),
        "{}",
        told.text
    );
    assert!(told.text.contains(r#"id="api-key""#));
    assert!(
        store
            .admin_session(&hash_key(&secret), now)
            .await
            .unwrap()
            .is_none()
    );
    let after = t.admin_get("/admin", Some(&cookie)).await;
    assert!(after.text.contains(r#"id="api-key""#));
    assert!(after.text.contains("session has ended"), "{}", after.text);

    // Neither the key, the session secret nor the CSRF token reach the logs.
    let logs = captured_logs();
    assert!(!logs.contains(&key));
    assert!(!logs.contains(&secret));
    assert!(!logs.contains(&csrf));
}

#[tokio::test]
async fn unknown_revoked_and_unfit_keys_are_refused() {
    let t = TestApp::start().await;
    let token_only = t.api_key(&[Token]).await;
    let a = t.try_login(&token_only).await;
    assert_eq!(a.status, 401, "{}", a.text);
    assert_console_headers(&a);
    assert!(
        a.text.contains("lacks the users:read capability"),
        "{}",
        a.text
    );
    assert!(a.text.contains(r#"id="api-key""#));
    assert!(set_cookie(&a, "gk_admin").is_none());

    let a = t.try_login("gk_not_a_key").await;
    assert_eq!(a.status, 401);
    assert!(a.text.contains("unknown or revoked"), "{}", a.text);
    assert!(set_cookie(&a, "gk_admin").is_none());

    let revoked = t.api_key(&[UsersRead]).await;
    let id = t.key_id_of(&revoked).await;
    t.app
        .store()
        .revoke_api_key(&id, t.app.clock().now())
        .await
        .unwrap();
    let a = t.try_login(&revoked).await;
    assert_eq!(a.status, 401);
    assert!(a.text.contains("unknown or revoked"));

    let a = t.try_login("   ").await;
    assert_eq!(a.status, 401);
    assert!(a.text.contains("Enter an API key"));
}

#[tokio::test]
async fn revoking_the_key_ends_the_console_session() {
    let t = TestApp::start().await;
    let sub = t.signed_in("kept@example.com").await;
    let key = t.api_key(&[UsersRead, UsersWrite]).await;
    let c = t.console(&key).await;
    let page = t
        .admin_get(&format!("/admin/users/{sub}"), Some(&c.cookie))
        .await;
    assert_eq!(page.status, 200);

    let id = t.key_id_of(&key).await;
    t.app
        .store()
        .revoke_api_key(&id, t.app.clock().now())
        .await
        .unwrap();

    // At once: no cache keeps the revoked key alive for the console.
    let a = t.admin_get("/admin", Some(&c.cookie)).await;
    assert_eq!(a.status, 200);
    assert!(a.text.contains(r#"id="api-key""#), "{}", a.text);
    assert!(a.text.contains("was revoked"), "{}", a.text);
    assert!(set_cookie(&a, "gk_admin").unwrap().contains("Max-Age=0"));
    let a = t
        .admin_get(&format!("/admin/users/{sub}"), Some(&c.cookie))
        .await;
    assert_eq!(a.status, 303);
    assert_eq!(a.headers["location"], "/admin");
    let a = t
        .admin_post(
            &format!("/admin/users/{sub}/revoke"),
            Some(&c.cookie),
            &[("csrf", &c.csrf)],
            &[],
        )
        .await;
    assert_eq!(a.status, 401, "{}", a.text);
    assert!(a.text.contains(r#"data-code="unauthorized""#));
    assert_eq!(t.grant_state(&sub).await, GrantState::Active);
    assert_eq!(t.stats().await["revocations"], 0);
}

#[tokio::test]
async fn forms_need_their_csrf_token_and_this_origin() {
    let t = TestApp::start().await;
    let sub = t.signed_in("guarded@example.com").await;
    let c = t.console_with(&[UsersRead, UsersWrite]).await;
    let other = t.console_with(&[UsersRead, UsersWrite]).await;
    assert_ne!(c.csrf, other.csrf);
    let path = format!("/admin/users/{sub}/revoke");

    for fields in [
        vec![],
        vec![("csrf", "")],
        vec![("csrf", "not-hex")],
        vec![("csrf", other.csrf.as_str())],
        vec![("csrf", &c.csrf[..62])],
    ] {
        let a = t.admin_post(&path, Some(&c.cookie), &fields, &[]).await;
        assert_eq!(a.status, 403, "{fields:?}: {}", a.text);
        assert_console_headers(&a);
        assert!(a.text.contains(r#"data-code="csrf""#), "{}", a.text);
        assert!(
            a.text
                .contains("security token was missing or did not match")
        );
        assert!(a.text.contains("nothing was changed"));
    }
    // Another site's form, even with the right token.
    for origin in ["https://evil.example", "null", "http://127.0.0.1:1"] {
        let a = t
            .admin_post(
                &path,
                Some(&c.cookie),
                &[("csrf", &c.csrf)],
                &[("origin", origin)],
            )
            .await;
        assert_eq!(a.status, 403, "{origin}: {}", a.text);
        assert!(
            a.text.contains(r#"data-code="origin_not_allowed""#),
            "{}",
            a.text
        );
    }
    assert_eq!(t.grant_state(&sub).await, GrantState::Active);
    assert_eq!(t.stats().await["revocations"], 0);

    // The sign-in form: the cookie and the field must match, and come from this origin.
    let key = t.api_key(&[UsersRead]).await;
    let (cookie, field) = t.login_form().await;
    /// A cookie header, a csrf field and extra headers.
    type Attempt<'a> = (Option<&'a str>, &'a str, &'a [(&'a str, &'a str)]);
    let attempts: [Attempt<'_>; 4] = [
        (None, field.as_str(), &[]),
        (Some(cookie.as_str()), "", &[]),
        (
            Some("gk_admin_csrf=something-else-entirely-but-long-enough"),
            field.as_str(),
            &[],
        ),
        (
            Some(cookie.as_str()),
            field.as_str(),
            &[("origin", "https://evil.example")],
        ),
    ];
    for (cookie, csrf, headers) in attempts {
        let a = t
            .admin_post(
                "/admin/login",
                cookie,
                &[("api_key", &key), ("csrf", csrf)],
                headers,
            )
            .await;
        assert_eq!(a.status, 403, "{cookie:?} {csrf}: {}", a.text);
        assert!(set_cookie(&a, "gk_admin").is_none());
    }

    // The same form from this origin works.
    let a = t
        .admin_post(
            &path,
            Some(&c.cookie),
            &[("csrf", &c.csrf)],
            &[("origin", &t.url)],
        )
        .await;
    assert_eq!(a.status, 303, "{}", a.text);
    assert_eq!(t.grant_state(&sub).await, GrantState::Revoked);
}

#[tokio::test]
async fn the_users_list_shows_states_and_searches() {
    let t = TestApp::start().await;
    let alice = t.signed_in("Alice.Smith@example.com").await;
    let bob = t.signed_in("bob@example.com").await;
    let carol = t.signed_in("carol@corp.example").await;
    // A native code without offline access: no refresh token (web popup codes are always
    // offline).
    let online = t
        .mint(Code {
            access_type: "online",
            redirect_uri: "",
            azp: Some(t.emulator.android_client_id()),
            ..Code::web("dave@example.com")
        })
        .await;
    let a = t.authcode_android(&online).await;
    let dave = a.body["user"]["sub"].as_str().unwrap().to_owned();
    t.app
        .broker()
        .revoke_grant(&bob, "revoked in a test")
        .await
        .unwrap();
    t.app
        .store()
        .update_grant_state(
            &carol,
            None,
            StateUpdate {
                state: GrantState::Failing,
                reason: "Google answered 503".into(),
                error: Some("503 from the token endpoint".into()),
                drop_tokens: false,
                at: t.app.clock().now(),
            },
        )
        .await
        .unwrap();
    let c = t.console_with(&[UsersRead]).await;

    let page = t.admin_get("/admin", Some(&c.cookie)).await;
    let mut expected = vec![
        (alice.clone(), "active".to_owned()),
        (bob.clone(), "revoked".to_owned()),
        (carol.clone(), "failing".to_owned()),
        (dave.clone(), "needs_consent".to_owned()),
    ];
    expected.sort();
    assert_eq!(rows(&page.text), expected);
    // The emulator keys accounts by the lower-case address.
    assert!(
        page.text
            .to_ascii_lowercase()
            .contains("alice.smith@example.com")
    );
    assert!(
        page.text
            .contains(r#"<span class="badge failing">failing</span>"#)
    );
    assert!(
        page.text
            .contains(r#"<span class="badge needs_consent">needs consent</span>"#)
    );
    assert!(page.text.contains("503 from the token endpoint"));
    assert!(page.text.contains(
        r#"<span title="https://www.googleapis.com/auth/drive.appdata">drive.appdata</span>"#
    ));
    // The user's name leads to their page (and the link's area covers the row).
    assert!(
        page.text.contains(&format!(
            r#"<a class="row-link" href="/admin/users/{alice}">Alice Smith</a>"#
        )),
        "{}",
        page.text
    );
    for label in [
        r#"<label for="q">"#,
        r#"<input id="q" name="q" type="search""#,
        r#"<label for="state">"#,
        r#"<select id="state" name="state">"#,
    ] {
        assert!(page.text.contains(label), "{label}");
    }
    assert!(link(&page.text, "next-page").is_none());

    let search = |q: String| {
        let t = &t;
        let cookie = c.cookie.clone();
        async move {
            let a = t
                .admin_get(&format!("/admin/users{q}"), Some(&cookie))
                .await;
            assert_eq!(a.status, 200, "{q}: {}", a.text);
            rows(&a.text)
                .into_iter()
                .map(|(s, _)| s)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(search("?q=ALICE.smith".into()).await, [alice.as_str()]);
    assert_eq!(search("?q=%40example.com&state=all".into()).await.len(), 3);
    assert_eq!(search("?state=revoked".into()).await, [bob.as_str()]);
    assert_eq!(search("?state=needs_consent".into()).await, [dave.as_str()]);
    assert_eq!(
        search("?q=example&state=failing".into()).await,
        [carol.as_str()]
    );
    assert_eq!(
        search(format!("?q={}", &alice[..alice.len() - 1])).await,
        [alice.as_str()]
    );
    assert_eq!(search("?q=nobody".into()).await, Vec::<String>::new());
    // The search box keeps what was asked.
    let a = t
        .admin_get("/admin/users?q=bob&state=revoked", Some(&c.cookie))
        .await;
    assert!(a.text.contains(r#"value="bob""#));
    assert!(a.text.contains(r#"<option value="revoked" selected>"#));

    let bad = t
        .admin_get("/admin/users?state=sleepy", Some(&c.cookie))
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.text.contains(r#"data-code="invalid_request""#));
    assert!(bad.text.contains("The state filter must be"));
}

#[tokio::test]
async fn the_users_list_pages_by_fifty() {
    let t = TestApp::start().await;
    let emails: Vec<String> = (0..53).map(|i| format!("page{i:02}@example.com")).collect();
    for chunk in emails.chunks(8) {
        futures_util::future::join_all(chunk.iter().map(|e| t.signed_in(e))).await;
    }
    t.signed_in("someone.else@other.example").await;
    let c = t.console_with(&[UsersRead]).await;

    let everyone = t.admin_get("/admin", Some(&c.cookie)).await;
    assert_eq!(rows(&everyone.text).len(), 50);
    assert!(link(&everyone.text, "next-page").is_some());

    let first = t.admin_get("/admin/users?q=PAGE", Some(&c.cookie)).await;
    let first_rows = rows(&first.text);
    assert_eq!(first_rows.len(), 50);
    let next = link(&first.text, "next-page").expect("a next page");
    assert!(next.starts_with("/admin/users?q=PAGE&after="), "{next}");
    assert!(next.ends_with(&first_rows.last().unwrap().0), "{next}");
    let second = t.admin_get(&next, Some(&c.cookie)).await;
    let second_rows = rows(&second.text);
    assert_eq!(second_rows.len(), 3);
    assert!(link(&second.text, "next-page").is_none());
    assert_eq!(
        link(&second.text, "first-page").as_deref(),
        Some("/admin/users?q=PAGE")
    );
    // The pages do not overlap and hold every matching user, in sub order.
    let mut all: Vec<String> = first_rows
        .into_iter()
        .chain(second_rows)
        .map(|(s, _)| s)
        .collect();
    let sorted = {
        let mut s = all.clone();
        s.sort();
        s
    };
    assert_eq!(all, sorted);
    all.dedup();
    assert_eq!(all.len(), 53);
}

#[tokio::test]
async fn a_users_page_shows_an_act_made_just_before_it() {
    // The audit log writes its rows once a second; the page does not make the operator wait
    // for that.
    let t = TestApp::start().await;
    let sub = t.signed_in("just-now@example.com").await;
    let key = t.api_key(&[UsersRead]).await;
    let c = t.console(&key).await;
    t.app
        .audit()
        .record("cli", Some(&sub), "probe", "made just now".to_owned(), "ok")
        .await;
    let page = t
        .admin_get(&format!("/admin/users/{sub}"), Some(&c.cookie))
        .await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("made just now"), "{}", page.text);
}

#[tokio::test]
async fn a_users_page_shows_the_grant_history_and_audit_trail() {
    let t = TestApp::start().await;
    let sub = t.signed_in("history@example.com").await;
    let key = t.api_key(&[Token, UsersRead]).await;
    let key_id = t.key_id_of(&key).await;
    let a = t
        .v1("POST", &format!("/v1/users/{sub}/token"), Some(&key), None)
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    // More audit rows than one page holds.
    for i in 0..55 {
        t.app
            .audit()
            .record("cli", Some(&sub), "probe", format!("row {i}"), "ok")
            .await;
    }
    t.app.audit().flush().await;
    let c = t.console(&key).await;

    let page = t
        .admin_get(&format!("/admin/users/{sub}"), Some(&c.cookie))
        .await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert_console_headers(&page);
    let text = &page.text;
    assert!(text.contains(r#"<h1 id="user""#));
    assert!(text.contains("history@example.com (verified)"));
    assert!(text.contains(r#"<table id="history" class="cards">"#));
    assert!(
        text.contains(r#"<td class="nowrap" data-label="From">(new)</td><td class="lead nowrap" data-label="To"><span class="badge active">active</span></td>"#),
        "{text}"
    );
    assert!(text.contains("held (sealed)"));
    // Newest first: the last probe row leads, the token hand-out is on the next page.
    assert!(text.contains("row 54"));
    assert!(!text.contains(r#"data-label="Action">token</td>"#));
    assert_eq!(text.matches("<tr data-audit=").count(), 50);
    let older = link(text, "older-audit").expect("older entries");
    let second = t.admin_get(&older, Some(&c.cookie)).await;
    assert_eq!(second.status, 200);
    assert!(
        second.text.contains(&format!(
            r#"<td data-label="Who">{key_id}</td><td data-label="Action">token</td>"#
        )),
        "{}",
        second.text
    );
    assert!(second.text.contains("row 0"));
    assert!(!second.text.contains("row 54"));
    assert!(link(&second.text, "newest-audit").is_some());
    // A reader's key shows the revoke button disabled, with the reason.
    assert!(text.contains(r#"id="revoke" class="danger" disabled aria-describedby="revoke-why""#));
    assert!(text.contains("needs an API key with the users:write capability"));

    let missing = t
        .admin_get("/admin/users/nobody-here", Some(&c.cookie))
        .await;
    assert_eq!(missing.status, 404);
    assert!(missing.text.contains(r#"data-code="not_found""#));
    let bad = t
        .admin_get(&format!("/admin/users/{sub}?before=x"), Some(&c.cookie))
        .await;
    assert_eq!(bad.status, 400);
    for back in ["/admin/login", "/admin/logout", "/admin/"] {
        let a = t.admin_get(back, Some(&c.cookie)).await;
        assert_eq!(
            (a.status, &a.headers["location"]),
            (303, &"/admin".parse().unwrap())
        );
    }
    let nowhere = t.admin_get("/admin/nowhere", Some(&c.cookie)).await;
    assert_eq!(nowhere.status, 404);
    assert_console_headers(&nowhere);
    assert!(nowhere.text.contains("<!doctype html>"));
}

#[tokio::test]
async fn revoking_from_the_console_needs_users_write() {
    let t = TestApp::start().await;
    let sub = t.signed_in("revoke.me@example.com").await;
    let reader = t.console_with(&[UsersRead]).await;
    let forged = t
        .admin_post(
            &format!("/admin/users/{sub}/revoke"),
            Some(&reader.cookie),
            &[("csrf", &reader.csrf)],
            &[],
        )
        .await;
    assert_eq!(forged.status, 403, "{}", forged.text);
    assert!(forged.text.contains(r#"data-code="forbidden""#));
    assert!(forged.text.contains("users:write"));
    assert_eq!(t.grant_state(&sub).await, GrantState::Active);
    assert_eq!(t.stats().await["revocations"], 0);

    let key = t.api_key(&[UsersRead, UsersWrite]).await;
    let key_id = t.key_id_of(&key).await;
    let writer = t.console(&key).await;
    let page = t
        .admin_get(&format!("/admin/users/{sub}"), Some(&writer.cookie))
        .await;
    // Revoking asks once: the form is behind a disclosure that names the user.
    assert!(page.text.contains(&format!(
        r#"<details class="confirm" id="revoke-confirm"><summary id="revoke-ask">Revoke grant…</summary><form method="post" action="/admin/users/{sub}/revoke"><p>Revoke the grant of revoke.me@example.com? Revokes the grant at Google"#
    )), "{}", page.text);
    assert!(
        page.text
            .contains(r#"<button type="submit" id="revoke" class="danger">"#)
    );
    let a = t
        .admin_post(
            &format!("/admin/users/{sub}/revoke"),
            Some(&writer.cookie),
            &[("csrf", &writer.csrf)],
            &[],
        )
        .await;
    assert_eq!(a.status, 303, "{}", a.text);
    let location = a.headers["location"].to_str().unwrap().to_owned();
    assert_eq!(location, format!("/admin/users/{sub}?revoked=1"));

    assert_eq!(t.grant_state(&sub).await, GrantState::Revoked);
    assert_eq!(t.stats().await["revocations"], 1);
    let after = t.admin_get(&location, Some(&writer.cookie)).await;
    assert!(after.text.contains(
        "Revoked: Google confirmed the revocation, and the grant is marked revoked here."
    ));
    // A revoked grant is not offered for revoking again; a stale form changes nothing.
    assert!(!after.text.contains(r#"id="revoke""#));
    assert!(
        after
            .text
            .contains("The grant is revoked: the app must ask the user")
    );
    let again = t
        .admin_post(
            &format!("/admin/users/{sub}/revoke"),
            Some(&writer.cookie),
            &[("csrf", &writer.csrf)],
            &[],
        )
        .await;
    assert_eq!(
        again.headers["location"].to_str().unwrap(),
        format!("/admin/users/{sub}?revoked=already")
    );
    assert_eq!(t.stats().await["revocations"], 1);
    assert!(
        after
            .text
            .contains(r#"<dt>State</dt><dd><span class="badge revoked">revoked</span>"#)
    );
    let reason = format!("revoked by an operator in the console (key {key_id})");
    assert!(
        after.text.contains(&format!(
            r#"<td class="nowrap" data-label="From"><span class="badge active">active</span></td><td class="lead nowrap" data-label="To"><span class="badge revoked">revoked</span></td><td class="wrap" data-label="Reason">{reason}</td>"#
        )),
        "{}",
        after.text
    );
    assert!(after.text.contains(&format!(
        r#"<td data-label="Who">{key_id}</td><td data-label="Action">revoke</td><td class="wrap" data-label="Detail">console</td><td class="lead" data-label="Outcome">ok</td>"#
    )), "{}", after.text);
    // A grant whose tokens are gone already is marked revoked here, and the page says that
    // nothing was revoked at Google.
    let other = t.signed_in("tokenless@example.com").await;
    t.app
        .store()
        .update_grant_state(
            &other,
            None,
            StateUpdate {
                state: GrantState::NeedsConsent,
                reason: "tokens lost in a test".into(),
                error: None,
                drop_tokens: true,
                at: t.app.clock().now(),
            },
        )
        .await
        .unwrap();
    let a = t
        .admin_post(
            &format!("/admin/users/{other}/revoke"),
            Some(&writer.cookie),
            &[("csrf", &writer.csrf)],
            &[],
        )
        .await;
    let location = a.headers["location"].to_str().unwrap().to_owned();
    assert_eq!(location, format!("/admin/users/{other}?revoked=local"));
    let told = t.admin_get(&location, Some(&writer.cookie)).await;
    assert!(told.text.contains(
        "Marked revoked here. No token was held, so there was nothing to revoke at Google."
    ));
    assert_eq!(t.grant_state(&other).await, GrantState::Revoked);
    assert_eq!(t.stats().await["revocations"], 1);

    // The app's services see it revoked.
    let token_key = t.api_key(&[Token]).await;
    t.v1(
        "POST",
        &format!("/v1/users/{sub}/token"),
        Some(&token_key),
        None,
    )
    .await
    .assert_error(409, "grant_revoked");
}

#[tokio::test]
async fn revoking_while_google_is_unavailable_revokes_here_and_queues_it() {
    let t = TestApp::start().await;
    let sub = t.signed_in("flaky@example.com").await;
    let c = t.console_with(&[UsersRead, UsersWrite]).await;
    let set = t
        .emulator_call(
            "PUT",
            "faults",
            Some(json!({"revoke": {"error_rate": 1.0, "status": 503}})),
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.text);
    let a = t
        .admin_post(
            &format!("/admin/users/{sub}/revoke"),
            Some(&c.cookie),
            &[("csrf", &c.csrf)],
            &[],
        )
        .await;
    assert_eq!(a.status, 303, "{}", a.text);
    let location = a.headers["location"].to_str().unwrap().to_owned();
    assert_eq!(location, format!("/admin/users/{sub}?revoked=queued"));
    assert_eq!(t.grant_state(&sub).await, GrantState::Revoked);
    assert!(t.held_refresh_token(&sub).await.is_none());
    assert_eq!(t.stats().await["revocations"], 0);
    assert_eq!(t.app.store().count_revocations().await.unwrap(), 1);

    let after = t.admin_get(&location, Some(&c.cookie)).await;
    assert!(
        after.text.contains(
            "Revoked here; the revocation at Google is queued and retried until Google accepts it."
        ),
        "{}",
        after.text
    );
    assert!(after.text.contains(r#"data-revocation="queued""#));
    assert!(
        after
            .text
            .contains(r#"<td data-label="Action">revoke</td><td class="wrap" data-label="Detail">console</td><td class="lead" data-label="Outcome">queued</td>"#),
        "{}",
        after.text
    );

    t.set_faults(json!({})).await;
    let pass = t.app.retry_revocations_now().await.unwrap();
    assert_eq!((pass.revoked, pass.pending), (1, 0));
    assert_eq!(t.stats().await["revocations"], 1);
}

#[tokio::test]
async fn hostile_profiles_are_escaped() {
    let t = TestApp::start().await;
    let sub = r#"x"><script>alert(1)</script>"#;
    let now = t.app.clock().now();
    t.app
        .store()
        .record_sign_in(SignIn {
            profile: UserProfile {
                sub: sub.to_owned(),
                email: Some(r#"<img src=x onerror=alert(2)>@example.com"#.to_owned()),
                email_verified: false,
                name: Some("<script>alert(3)</script>".to_owned()),
                ..UserProfile::default()
            },
            granted_scopes: Scopes::parse("openid <b>bold</b>"),
            refresh_token: None,
            access_token: None,
            at: now,
            session: None,
        })
        .await
        .unwrap();
    let c = t.console_with(&[UsersRead, UsersWrite]).await;
    let list = t.admin_get("/admin/users?q=%3Cimg", Some(&c.cookie)).await;
    assert_eq!(list.status, 200);
    assert_eq!(rows(&list.text).len(), 1);
    let user_link = format!(
        "/admin/users/{}",
        "x%22%3E%3Cscript%3Ealert%281%29%3C%2Fscript%3E"
    );
    assert!(
        list.text.contains(&format!(r#"href="{user_link}""#)),
        "{}",
        list.text
    );
    let page = t.admin_get(&user_link, Some(&c.cookie)).await;
    assert_eq!(page.status, 200, "{}", page.text);
    for html in [&list.text, &page.text] {
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<img"));
        assert!(!html.contains("<b>bold"));
        assert!(html.contains("&lt;script&gt;alert(3)&lt;/script&gt;"));
        assert!(html.contains("&lt;img src=x onerror=alert(2)&gt;@example.com"));
    }
    // Escaped in the search box too.
    let echoed = t
        .admin_get("/admin/users?q=%22%3E%3Cscript%3E", Some(&c.cookie))
        .await;
    assert!(echoed.text.contains(r#"value="&quot;&gt;&lt;script&gt;""#));
    assert!(!echoed.text.contains("\"><script>"));
}

#[tokio::test]
async fn the_activity_page_charts_what_happened() {
    let t = TestApp::start().await;
    let c = t.console_with(&[UsersRead]).await;
    // Nothing yet.
    let empty = t
        .admin_get("/admin/activity?range=1h", Some(&c.cookie))
        .await;
    assert_eq!(empty.status, 200, "{}", empty.text);
    assert!(empty.text.contains("No data in this range"));
    assert!(empty.text.contains("No grants yet"));

    t.signed_in("busy@example.com").await;
    let revoked = t.signed_in("gone@example.com").await;
    t.app
        .broker()
        .revoke_grant(&revoked, "revoked in a test")
        .await
        .unwrap();
    // Counts as the instances add them; written here so that the numbers are known exactly.
    let minute = t.app.clock().now() - time::Duration::minutes(2);
    t.app
        .store()
        .add_activity(vec![
            ActivityPoint {
                minute,
                series: series::SIGN_IN.into(),
                count: 40,
                total_ms: 0,
                max_ms: 0,
            },
            ActivityPoint {
                minute,
                series: series::TOKEN.into(),
                count: 70,
                total_ms: 0,
                max_ms: 0,
            },
            ActivityPoint {
                minute,
                series: series::REFRESH.into(),
                count: 4,
                total_ms: 1000,
                max_ms: 700,
            },
        ])
        .await
        .unwrap();

    let page = t
        .admin_get("/admin/activity?range=1h", Some(&c.cookie))
        .await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert_console_headers(&page);
    let text = &page.text;
    for id in ["chart-activity", "chart-latency", "chart-states"] {
        assert!(text.contains(&format!(r#"<svg id="{id}" "#)), "{id}");
        assert!(text.contains(&format!(r#"<title id="{id}-title">"#)));
    }
    assert_eq!(text.matches(r#"role="img""#).count(), 3);
    assert!(!text.contains("No data in this range"), "{text}");
    // What was added (the server may have counted the sign-ins above as well, but nothing
    // else).
    assert!(
        text.contains("Token hand-outs: 70 in all, highest 70 at"),
        "{text}"
    );
    assert!(text.contains("Refreshes: 4 in all, highest 4 at"), "{text}");
    assert!(text.contains("Maximum: highest 700"), "{text}");
    assert!(text.contains("Average: highest 250"), "{text}");
    assert!(
        text.contains("active: 1; failing: 0; needs consent: 0; revoked: 1."),
        "{text}"
    );
    assert!(text.contains(r#"id="range-1h" href="/admin/activity?range=1h" aria-current="page""#));
    assert!(text.contains(r#"<div class="vh"><table id="chart-activity-data">"#));

    let day = t.admin_get("/admin/activity", Some(&c.cookie)).await;
    assert!(
        day.text
            .contains(r#"id="range-24h" href="/admin/activity?range=24h" aria-current="page""#)
    );
    assert!(day.text.contains("per 30 minutes"));
    let bad = t
        .admin_get("/admin/activity?range=1y", Some(&c.cookie))
        .await;
    assert_eq!(bad.status, 400);
    let out = t.admin_get("/admin/activity", None).await;
    assert_eq!(out.status, 303);
}

#[tokio::test]
async fn the_activity_page_charts_what_the_server_counted() {
    let t = TestApp::start().await;
    let c = t.console_with(&[UsersRead]).await;
    let first = t.signed_in("counted.one@example.com").await;
    t.signed_in("counted.two@example.com").await;
    let key = t.api_key(&[Token]).await;
    for _ in 0..3 {
        let a = t
            .v1(
                "POST",
                &format!("/v1/users/{first}/token"),
                Some(&key),
                None,
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
    }
    t.app.flush_activity().await.unwrap();

    let page = t
        .admin_get("/admin/activity?range=1h", Some(&c.cookie))
        .await;
    assert_eq!(page.status, 200, "{}", page.text);
    let text = &page.text;
    assert!(text.contains("Sign-ins: 2 in all"), "{text}");
    assert!(text.contains("Token hand-outs: 3 in all"), "{text}");
    assert!(text.contains("active: 2; failing: 0; needs consent: 0; revoked: 0."));
    // The numbers are in the table as well (a row per minute with any: one, or two when the
    // calls straddled a minute).
    let table = text
        .split(r#"<div class="vh"><table id="chart-activity-data">"#)
        .nth(1)
        .unwrap()
        .split("</table>")
        .next()
        .unwrap();
    let mut sums = [0u64; 2];
    for row in table.split("<tr><th scope=\"row\">").skip(1) {
        let cells: Vec<u64> = row
            .split("<td>")
            .skip(1)
            .map(|cell| cell.split('<').next().unwrap().parse().unwrap())
            .collect();
        sums[0] += cells[0];
        sums[1] += cells[1];
    }
    assert_eq!(sums, [2, 3], "{table}");
}

/// The rows of the activity page's warnings table: (kind, count).
fn warning_rows(text: &str) -> Vec<(String, u64)> {
    let section = text
        .split(r#"<section id="warnings""#)
        .nth(1)
        .unwrap()
        .split("</section>")
        .next()
        .unwrap();
    section
        .split(r#"<tr data-warning=""#)
        .skip(1)
        .map(|row| {
            let (kind, rest) = row.split_once('"').unwrap();
            let count = rest
                .split(r#"data-count=""#)
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            (kind.to_owned(), count)
        })
        .collect()
}

#[tokio::test]
async fn the_activity_page_lists_warnings_with_what_to_do() {
    let t = TestApp::start().await;
    let c = t.console_with(&[UsersRead]).await;
    let quiet = t
        .admin_get("/admin/activity?range=1h", Some(&c.cookie))
        .await;
    assert_eq!(
        warning_rows(&quiet.text),
        [
            ("testing_expiry".to_owned(), 0),
            ("token_died_early".to_owned(), 0),
            ("invalid_client".to_owned(), 0)
        ]
    );
    assert!(quiet.text.contains("Nothing to act on in this range."));

    // As instances count them: two instances saw the Testing expiry in different minutes.
    let now = t.app.clock().now();
    let point = |minutes_ago: i64, series: &str, count: u64| ActivityPoint {
        minute: now - time::Duration::minutes(minutes_ago),
        series: series.into(),
        count,
        total_ms: 0,
        max_ms: 0,
    };
    t.app
        .store()
        .add_activity(vec![
            point(30, series::WARNING_TESTING_EXPIRY, 2),
            point(5, series::WARNING_TESTING_EXPIRY, 3),
            // Outside the hour: only in the day's view.
            point(120, series::WARNING_TOKEN_DIED_EARLY, 1),
        ])
        .await
        .unwrap();
    let hour = t
        .admin_get("/admin/activity?range=1h", Some(&c.cookie))
        .await;
    assert_eq!(hour.status, 200);
    assert_eq!(
        warning_rows(&hour.text),
        [
            ("testing_expiry".to_owned(), 5),
            ("token_died_early".to_owned(), 0),
            ("invalid_client".to_owned(), 0)
        ]
    );
    assert!(
        hour.text
            .contains(r#"<tr data-warning="testing_expiry" data-count="5" class="warn">"#)
    );
    assert!(hour.text.contains("Publish the app (In production)"));
    assert!(!hour.text.contains("Nothing to act on in this range."));
    let day = t.admin_get("/admin/activity", Some(&c.cookie)).await;
    assert_eq!(
        warning_rows(&day.text),
        [
            ("testing_expiry".to_owned(), 5),
            ("token_died_early".to_owned(), 1),
            ("invalid_client".to_owned(), 0)
        ]
    );
}

#[tokio::test]
async fn refused_client_credentials_reach_the_logs_the_metrics_and_the_console() {
    let t = TestApp::start_with(Options {
        client_secret: Some("a-secret-reset-in-the-cloud-console".into()),
        ..Options::default()
    })
    .await;
    let c = t.console_with(&[UsersRead]).await;
    let code = t.web_code("refused@example.com").await;
    let answer = t.authcode_web(&code).await;
    answer.assert_error(502, "upstream_error");
    assert!(!answer.text.contains("a-secret-reset"), "{}", answer.text);

    let metrics = t.get("/metrics", None).await;
    assert!(
        metrics
            .text
            .lines()
            .any(|l| l == r#"grantkeeper_warnings_total{kind="invalid_client"} 1"#),
        "{}",
        metrics.text
    );
    let page = t
        .admin_get("/admin/activity?range=1h", Some(&c.cookie))
        .await;
    assert_eq!(
        warning_rows(&page.text),
        [
            ("testing_expiry".to_owned(), 0),
            ("token_died_early".to_owned(), 0),
            ("invalid_client".to_owned(), 1)
        ]
    );
    let logs = captured_logs();
    assert!(
        logs.lines()
            .any(|l| l.contains(r#"warning="invalid_client""#)
                && l.contains(r#"call="code_exchange""#)),
        "no invalid_client warning in the logs"
    );
    assert!(!logs.contains("a-secret-reset-in-the-cloud-console"));
}

#[tokio::test]
async fn the_jobs_page_shows_each_job_s_progress_and_failures() {
    use grantkeeper_broker::jobs::{ClaimRequest, JobSpec, Report};
    let t = TestApp::start().await;
    let c = t.console_with(&[UsersRead]).await;
    let empty = t.admin_get("/admin/jobs", Some(&c.cookie)).await;
    assert_eq!(empty.status, 200, "{}", empty.text);
    assert_console_headers(&empty);
    assert!(empty.text.contains("No jobs yet"), "{}", empty.text);
    assert!(
        empty
            .text
            .contains(r#"<a id="nav-jobs" href="/admin/jobs" aria-current="page">"#)
    );

    let mut subs = Vec::new();
    for i in 0..4 {
        subs.push(t.signed_in(&format!("console-job{i}@example.com")).await);
    }
    t.app
        .broker()
        .revoke_grant(&subs[3], "revoked in a test")
        .await
        .unwrap();
    let jobs = t.app.jobs();
    let made = jobs
        .create(JobSpec::api("<b>nightly</b> sync"), "test")
        .await
        .unwrap();
    let id = made.job.id;
    let other = jobs.create(JobSpec::api("older"), "test").await.unwrap();
    jobs.cancel(other.job.id).await.unwrap();
    let batch = jobs
        .claim(
            id,
            ClaimRequest {
                max: 2,
                lease: None,
                worker: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(batch.items.len(), 2);
    let failed_sub = batch.items[1].sub.clone();
    jobs.report(
        id,
        &batch.lease,
        vec![
            (batch.items[0].id, Report::Done),
            (
                batch.items[1].id,
                Report::Failed {
                    detail: Some("<script>quota</script>".to_owned()),
                },
            ),
        ],
    )
    .await
    .unwrap();

    let page = t.admin_get("/admin/jobs", Some(&c.cookie)).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert_console_headers(&page);
    let text = &page.text;
    // Newest first; each with its bar, in numbers and in words.
    let older = text.find(&format!(r#"data-job="{id}""#)).unwrap();
    let newer = text
        .find(&format!(r#"data-job="{}""#, other.job.id))
        .unwrap();
    assert!(newer < older, "newest first");
    assert!(text.contains("&lt;b&gt;nightly&lt;/b&gt; sync"), "{text}");
    assert!(!text.contains("<b>nightly"), "names are escaped");
    assert!(
        text.contains(
            r#"role="progressbar" aria-valuemin="0" aria-valuemax="4" aria-valuenow="3" aria-label="3 of 4 settled: 1 done, 1 failed, 1 skipped, 0 in flight""#
        ),
        "{text}"
    );
    assert!(text.contains(r#"<span class="done" style="width:25.00%"></span><span class="failed" style="width:25.00%"></span><span class="skipped" style="width:25.00%"></span>"#), "{text}");
    assert!(text.contains(r#"<span class="badge job-running">running</span>"#));
    assert!(text.contains(r#"<span class="badge job-cancelled">cancelled</span>"#));
    assert_eq!(text.matches(r#"role="progressbar""#).count(), 2);

    // One job: its settings and its failures, the worker's and the skipped grant.
    let page = t
        .admin_get(&format!("/admin/jobs/{id}"), Some(&c.cookie))
        .await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert_console_headers(&page);
    let text = &page.text;
    assert!(
        text.contains(&format!(
            r#"<tr data-sub="{failed_sub}" data-outcome="failed">"#
        )),
        "{text}"
    );
    assert!(
        text.contains("&lt;script&gt;quota&lt;/script&gt;"),
        "{text}"
    );
    assert!(!text.contains("<script>quota"), "details are escaped");
    assert!(
        text.contains(&format!(
            r#"<tr data-sub="{}" data-outcome="skipped">"#,
            subs[3]
        )),
        "{text}"
    );
    assert!(text.contains(&format!(r#"href="/admin/users/{failed_sub}""#)));
    assert!(text.contains("10 refreshes a second at most"), "{text}");

    assert_eq!(
        t.admin_get("/admin/jobs/999", Some(&c.cookie)).await.status,
        404
    );
    assert_eq!(
        t.admin_get("/admin/jobs/x", Some(&c.cookie)).await.status,
        404
    );
    assert_eq!(t.admin_get("/admin/jobs", None).await.status, 303);
    assert_eq!(
        t.admin_get(&format!("/admin/jobs/{id}"), None).await.status,
        303
    );
}

/// A console page as a person reads it: the text of its HTML without scripts, styles and
/// charts, one block a line, a table's row on one line with its cells parted by ` | `.
fn visible_text(html: &str) -> String {
    // Markup within a run of text; any other tag parts words (links and spans are laid out
    // as blocks by the console's style).
    const WITHIN: &[&str] = &["abbr", "b", "code", "em", "i", "kbd", "strong", "time"];
    const SPACED: &[&str] = &["a", "button", "label", "small", "span", "option"];
    let mut out = String::new();
    let mut in_cell = false;
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('>').map_or(after.len(), |i| i + 1);
        let tag = &after[..close.saturating_sub(1)];
        let closing = tag.starts_with('/');
        let name = tag
            .trim_start_matches('/')
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_lowercase();
        rest = after.get(close..).unwrap_or("");
        if !closing && matches!(name.as_str(), "script" | "style" | "svg") {
            let end = format!("</{name}>");
            rest = rest.find(&end).map_or("", |i| &rest[i + end.len()..]);
            // The charts' numbers are in the tables beside them.
            if name == "svg" {
                out.push_str("\n[chart]\n");
            }
            continue;
        }
        match name.as_str() {
            "td" | "th" => {
                in_cell = !closing;
                if !closing {
                    out.push_str(" | ");
                }
            }
            n if WITHIN.contains(&n) => {}
            n if SPACED.contains(&n) || in_cell => out.push(' '),
            _ => out.push('\n'),
        }
    }
    out.push_str(rest);
    let decoded = out
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&");
    decoded
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .map(|l| l.trim_start_matches("| ").to_owned())
        .filter(|l| !l.is_empty() && l != "|")
        .collect::<Vec<_>>()
        .join("\n")
        .replace(" ,", ",")
}

#[tokio::test]
async fn the_console_pages_as_text() {
    let t = TestApp::start().await;
    let login = t.admin_get("/admin", None).await;
    assert_eq!(login.status, 200, "{}", login.text);

    // Four users: active, revoked, needing consent, and one with a job that failed.
    let ann = t.signed_in("ann@example.com").await;
    let ben = t.signed_in("ben@example.com").await;
    t.app
        .broker()
        .revoke_grant(&ben, "revoked by the operator")
        .await
        .unwrap();
    assert_eq!(t.sign_in_online("cat@example.com").await.status, 200);
    let key = t.api_key(&[Token]).await;
    let token = t
        .v1("POST", &format!("/v1/users/{ann}/token"), Some(&key), None)
        .await;
    assert_eq!(token.status, 200, "{}", token.text);
    let jobs = t.api_key(&[KeyScope::Jobs]).await;
    let job = t
        .v1(
            "POST",
            "/v1/jobs",
            Some(&jobs),
            Some(json!({"name": "drive backup", "scopes": ["https://www.googleapis.com/auth/drive.appdata"]})),
        )
        .await;
    assert_eq!(job.status, 201, "{}", job.text);
    let id = job.body["id"].as_i64().unwrap();
    // The audit writer flushes within a second: wait for ann's token row.
    let waited = grantkeeper_core::Stopwatch::start();
    loop {
        let rows = t
            .app
            .store()
            .audit(AuditFilter {
                sub: Some(ann.clone()),
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        if rows.iter().any(|r| r.action.contains("token")) {
            break;
        }
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(10),
            "never audited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let c = t.console_with(&[UsersRead]).await;
    let mut pages = Vec::new();
    for (name, path) in [
        ("users", "/admin".to_owned()),
        ("user", format!("/admin/users/{ann}")),
        ("user-revoked", format!("/admin/users/{ben}")),
        ("activity", "/admin/activity".to_owned()),
        ("jobs", "/admin/jobs".to_owned()),
        ("job", format!("/admin/jobs/{id}")),
    ] {
        let page = t.admin_get(&path, Some(&c.cookie)).await;
        assert_eq!(page.status, 200, "{path}: {}", page.text);
        pages.push((name, visible_text(&page.text)));
    }
    let filters = vec![
        (
            r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2}| UTC)?",
            "[time]",
        ),
        (r"\d{4}-\d{2}-\d{2}", "[date]"),
        (r"\b\d{2}:\d{2}(:\d{2})?\b", "[hh:mm]"),
        (r"127\.0\.0\.1:\d+", "127.0.0.1:[port]"),
        (r"key_[0-9a-f]{12}", "key_[id]"),
        // A job's speed is its users over the time it has run so far.
        (r"\d+(\.\d+)? users/s", "[n] users/s"),
    ];
    insta::with_settings!({filters => filters}, {
        insta::assert_snapshot!("console-login", visible_text(&login.text));
        for (name, text) in &pages {
            insta::assert_snapshot!(format!("console-{name}"), text);
        }
    });
}
