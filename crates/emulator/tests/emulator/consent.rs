//! The consent page: validation, rendering, and its answers in redirect and popup mode
//! (reference §2.3, §3.4, §3.5, §7.1).

use super::helpers::*;
use serde_json::{Value, json};

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Attribute `name` of an HTML tag.
fn attr(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
    let end = tag[start..].find('"')? + start;
    Some(unescape(&tag[start..end]))
}

/// What a browser would submit: the form's action and its hidden fields.
fn form_of(html: &str) -> (String, Vec<(String, String)>) {
    let form_tag = html
        .split("<form")
        .nth(1)
        .unwrap()
        .split('>')
        .next()
        .unwrap();
    let action = attr(form_tag, "action").unwrap();
    let fields = html
        .split("<input")
        .skip(1)
        .map(|t| t.split('>').next().unwrap())
        .filter(|t| t.contains("type=\"hidden\""))
        .map(|t| (attr(t, "name").unwrap(), attr(t, "value").unwrap()))
        .collect();
    (action, fields)
}

async fn consent_page(t: &TestEmu, params: &[(&str, &str)]) -> (u16, String) {
    let res = t
        .http
        .get(t.url("/o/oauth2/v2/auth"))
        .query(params)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

async fn submit(t: &TestEmu, html: &str, extra: &[(&str, &str)]) -> reqwest::Response {
    let (action, mut fields) = form_of(html);
    fields.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    t.http.post(action).form(&fields).send().await.unwrap()
}

fn query_of(location: &str) -> std::collections::HashMap<String, String> {
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

#[tokio::test]
async fn the_page_renders_accounts_and_one_checkbox_per_scope() {
    let t = TestEmu::start().await;
    let redirect = format!("{}/oauth2/callback", t.base);
    let scope = format!("openid email {DRIVE_APPDATA}");
    let (status, html) = consent_page(
        &t,
        &[
            ("client_id", &t.web_id),
            ("redirect_uri", &redirect),
            ("response_type", "code"),
            ("scope", &scope),
            ("state", "s<1>"),
            ("login_hint", "dave@example.com"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    for user in ["alice@example.com", "bob@example.com", "carol@example.com"] {
        assert!(html.contains(user), "{user} missing");
    }
    assert!(html.contains("value=\"dave@example.com\" checked"));
    assert!(html.contains(&format!("name=\"grant\" value=\"{DRIVE_APPDATA}\" checked")));
    assert!(html.contains(&format!("type=\"hidden\" name=\"grant\" value=\"{EMAIL}\"")));
    assert!(html.contains("name=\"email_other\""));
    assert!(html.contains("value=\"allow\"") && html.contains("value=\"cancel\""));
    assert!(html.contains("s&lt;1&gt;"), "state is escaped");
    assert!(!html.contains("src=\"http"), "no external assets");
    // The app is named as a consent screen's "App name" names it, not by its project id.
    assert!(
        html.contains("<h1>grantkeeper demo wants access to your Google Account</h1>"),
        "{html}"
    );
    // The legacy path serves the same page.
    let res = t
        .http
        .get(t.url("/o/oauth2/auth"))
        .query(&[
            ("client_id", t.web_id.as_str()),
            ("redirect_uri", &redirect),
            ("response_type", "code"),
            ("scope", "openid"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn bad_requests_get_an_error_page() {
    let t = TestEmu::start().await;
    let redirect = format!("{}/oauth2/callback", t.base);
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![
            ("client_id", "123-nope.apps.googleusercontent.com"),
            ("redirect_uri", &redirect),
            ("response_type", "code"),
            ("scope", "openid"),
        ],
        vec![
            ("client_id", &t.web_id),
            ("redirect_uri", "http://127.0.0.1:1/unregistered"),
            ("response_type", "code"),
            ("scope", "openid"),
        ],
        vec![
            ("client_id", &t.web_id),
            ("redirect_uri", &redirect),
            ("response_type", "token"),
            ("scope", "openid"),
        ],
        vec![
            ("client_id", &t.web_id),
            ("redirect_uri", &redirect),
            ("response_type", "code"),
        ],
        vec![
            ("client_id", &t.web_id),
            (
                "redirect_uri",
                "storagerelay://https/evil.example.com?id=auth1",
            ),
            ("response_type", "code"),
            ("scope", "openid"),
        ],
        vec![
            ("client_id", &t.web_id),
            ("redirect_uri", "postmessage"),
            ("response_type", "code"),
            ("scope", "openid"),
        ],
    ];
    for params in cases {
        let (status, html) = consent_page(&t, &params).await;
        assert_eq!(status, 400, "{params:?}");
        assert!(html.contains("Error 400"), "{html}");
    }
    // A registered URI (control API) passes.
    let extra = "https://app.example.com/signin/callback";
    let r = t
        .put_json(
            &format!("/_emulator/clients/{}", t.web_id),
            json!({"redirect_uris": [extra]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (status, _) = consent_page(
        &t,
        &[
            ("client_id", &t.web_id),
            ("redirect_uri", extra),
            ("response_type", "code"),
            ("scope", "openid"),
        ],
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn allow_in_redirect_mode_yields_a_working_code() {
    let t = TestEmu::start().await;
    let redirect = format!("{}/oauth2/callback", t.base);
    let scope = format!("openid email {DRIVE_APPDATA}");
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let (_, html) = consent_page(
        &t,
        &[
            ("client_id", &t.web_id),
            ("redirect_uri", &redirect),
            ("response_type", "code"),
            ("scope", &scope),
            ("state", "xyz 1/2"),
            ("access_type", "offline"),
            (
                "code_challenge",
                "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            ),
            ("code_challenge_method", "S256"),
        ],
    )
    .await;
    // The user picks bob and unticks Drive: only the identity scopes are granted.
    let res = submit(
        &t,
        &html,
        &[("account", "bob@example.com"), ("action", "allow")],
    )
    .await;
    assert_eq!(res.status(), 302);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&redirect), "{location}");
    let q = query_of(&location);
    assert_eq!(q["state"], "xyz 1/2");
    assert_eq!(q["authuser"], "0");
    assert_eq!(q["prompt"], "consent");
    assert_eq!(scope_set(&q["scope"]), sorted(&["openid", EMAIL]));

    let a = t
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &q["code"]),
                ("client_id", &t.web_id),
                ("client_secret", &t.web_secret),
                ("redirect_uri", &redirect),
                ("code_verifier", verifier),
            ],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(scope_set(a.str("scope")), sorted(&["openid", EMAIL]));
    assert!(a.body.get("refresh_token").is_some());
    assert_eq!(
        t.verify_id_token(a.str("id_token")).await["email"],
        "bob@example.com"
    );

    // Typing an address wins over the radio choice; ticking Drive grants it.
    let res = submit(
        &t,
        &html,
        &[
            ("account", "bob@example.com"),
            ("email_other", "Erin@Example.com"),
            ("grant", DRIVE_APPDATA),
            ("action", "allow"),
        ],
    )
    .await;
    let q = query_of(res.headers()["location"].to_str().unwrap());
    assert_eq!(
        scope_set(&q["scope"]),
        sorted(&["openid", EMAIL, DRIVE_APPDATA])
    );
    let a = t
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &q["code"]),
                ("client_id", &t.web_id),
                ("client_secret", &t.web_secret),
                ("redirect_uri", &redirect),
                ("code_verifier", verifier),
            ],
        )
        .await;
    assert_eq!(
        t.verify_id_token(a.str("id_token")).await["email"],
        "erin@example.com"
    );
}

/// The message a popup page posts, and the origin it posts to.
fn popup_message(html: &str) -> (Value, String) {
    let data = html
        .split("var data = ")
        .nth(1)
        .unwrap()
        .split("; var origin")
        .next()
        .unwrap();
    let origin = html
        .split("var origin = ")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    assert!(html.contains("window.opener.postMessage(data, origin)"));
    assert!(html.contains("window.close()"));
    (
        serde_json::from_str(data).unwrap(),
        serde_json::from_str(origin).unwrap(),
    )
}

#[tokio::test]
async fn allow_in_popup_mode_posts_a_code_to_the_opener() {
    let t = TestEmu::start().await;
    let scope = format!("openid email {DRIVE_APPDATA}");
    let (status, html) = consent_page(
        &t,
        &[
            ("client_id", &t.web_id),
            (
                "redirect_uri",
                "storagerelay://http/127.0.0.1:5555?id=auth123",
            ),
            ("response_type", "code"),
            ("scope", &scope),
            ("state", "st"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    let res = submit(
        &t,
        &html,
        &[
            ("account", "alice@example.com"),
            ("grant", DRIVE_APPDATA),
            ("action", "allow"),
        ],
    )
    .await;
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    let (msg, origin) = popup_message(&page);
    assert_eq!(origin, "http://127.0.0.1:5555");
    assert_eq!(msg["state"], "st");
    assert_eq!(
        scope_set(msg["scope"].as_str().unwrap()),
        sorted(&["openid", EMAIL, DRIVE_APPDATA])
    );
    // Popup codes exchange with postmessage and are offline.
    let code = msg["code"].as_str().unwrap();
    t.exchange(code, &format!("{}/oauth2/callback", t.base))
        .await
        .assert_error(400, "redirect_uri_mismatch", None);
    let a = t.exchange(code, "postmessage").await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(a.body.get("refresh_token").is_some());

    // redirect_uri=postmessage with an origin parameter (legacy gapi.auth2) works the same.
    let (status, html) = consent_page(
        &t,
        &[
            ("client_id", &t.web_id),
            ("redirect_uri", "postmessage"),
            ("origin", "http://localhost:3000"),
            ("response_type", "code"),
            ("scope", "openid"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let res = submit(
        &t,
        &html,
        &[("account", "bob@example.com"), ("action", "allow")],
    )
    .await;
    let (msg, origin) = popup_message(&res.text().await.unwrap());
    assert_eq!(origin, "http://localhost:3000");
    assert_eq!(
        t.exchange(msg["code"].as_str().unwrap(), "postmessage")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn cancel_answers_access_denied() {
    let t = TestEmu::start().await;
    let redirect = format!("{}/oauth2/callback", t.base);
    let (_, html) = consent_page(
        &t,
        &[
            ("client_id", &t.web_id),
            ("redirect_uri", &redirect),
            ("response_type", "code"),
            ("scope", "openid"),
            ("state", "s1"),
        ],
    )
    .await;
    let res = submit(
        &t,
        &html,
        &[("account", "alice@example.com"), ("action", "cancel")],
    )
    .await;
    assert_eq!(res.status(), 302);
    let q = query_of(res.headers()["location"].to_str().unwrap());
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["state"], "s1");
    assert!(!q.contains_key("code"));

    let (_, html) = consent_page(
        &t,
        &[
            ("client_id", &t.web_id),
            ("redirect_uri", "storagerelay://http/localhost:8080?id=a"),
            ("response_type", "code"),
            ("scope", "openid"),
        ],
    )
    .await;
    let res = submit(
        &t,
        &html,
        &[("account", "alice@example.com"), ("action", "cancel")],
    )
    .await;
    let (msg, _) = popup_message(&res.text().await.unwrap());
    assert_eq!(msg["error"], "access_denied");
}

#[tokio::test]
async fn prompt_none_answers_without_a_page_once_consented() {
    let t = TestEmu::start().await;
    let redirect = format!("{}/oauth2/callback", t.base);
    let params = |hint: &'static str| {
        vec![
            ("client_id", t.web_id.clone()),
            ("redirect_uri", redirect.clone()),
            ("response_type", "code".to_owned()),
            ("scope", "openid email".to_owned()),
            ("prompt", "none".to_owned()),
            ("login_hint", hint.to_owned()),
        ]
    };
    let res = t
        .http
        .get(t.url("/o/oauth2/v2/auth"))
        .query(&params("alice@example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    let q = query_of(res.headers()["location"].to_str().unwrap());
    assert_eq!(q["error"], "consent_required");

    t.sign_in("alice@example.com", "openid email").await;
    let res = t
        .http
        .get(t.url("/o/oauth2/v2/auth"))
        .query(&params("alice@example.com"))
        .send()
        .await
        .unwrap();
    let q = query_of(res.headers()["location"].to_str().unwrap());
    assert_eq!(q["prompt"], "none");
    let a = t.exchange(&q["code"], &redirect).await;
    assert_eq!(a.status, 200, "{}", a.text);
}

#[tokio::test]
async fn the_page_has_stable_selectors_and_a_label_for_every_input() {
    let t = TestEmu::start().await;
    let scope = format!("openid email {DRIVE_APPDATA}");
    let (status, html) = consent_page(
        &t,
        &[
            ("client_id", &t.web_id),
            (
                "redirect_uri",
                "storagerelay://http/127.0.0.1:5555?id=auth1",
            ),
            ("response_type", "code"),
            ("scope", &scope),
        ],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    for (i, user) in ["alice@example.com", "bob@example.com", "carol@example.com"]
        .iter()
        .enumerate()
    {
        assert!(html.contains(&format!(
            "id=\"account-{i}\" name=\"account\" value=\"{user}\""
        )));
    }
    for id in [
        "scope-0",
        "scope-1",
        "scope-2",
        "email-other",
        "allow",
        "cancel",
    ] {
        assert_eq!(html.matches(&format!("id=\"{id}\"")).count(), 1, "{id}");
    }
    assert!(html.contains(&format!(
        "id=\"scope-2\" name=\"grant\" value=\"{DRIVE_APPDATA}\" checked"
    )));
    // Every input a person sees sits inside its label.
    let mut visible = 0;
    for (at, _) in html.match_indices("<input") {
        let tag = html[at..].split('>').next().unwrap();
        if tag.contains("type=\"hidden\"") {
            continue;
        }
        let before = &html[..at];
        let open = before.matches("<label").count();
        let closed = before.matches("</label>").count();
        assert_eq!(open, closed + 1, "{tag} has no label");
        visible += 1;
    }
    assert_eq!(
        visible,
        3 + 1 + 3,
        "three accounts, another account, three scopes"
    );
    assert!(html.contains("name=\"viewport\""));
}
