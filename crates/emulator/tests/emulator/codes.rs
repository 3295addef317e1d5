//! Code exchange: single use, expiry, redirect URI binding, PKCE, client authentication and
//! the token answer's shape (reference §2, §3.1, §10.2, §10.3, §10.6).

use super::helpers::*;
use serde_json::json;

#[tokio::test]
async fn the_token_answer_has_googles_shape_and_headers() {
    let t = TestEmu::start().await;
    let a = t
        .sign_in(
            "alice@example.com",
            &format!("openid email {DRIVE_APPDATA}"),
        )
        .await;
    assert_eq!(
        a.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(
        a.header("cache-control"),
        Some("no-cache, no-store, max-age=0, must-revalidate")
    );
    assert_eq!(a.header("pragma"), Some("no-cache"));
    assert!(a.str("access_token").starts_with("ya29."));
    assert!(a.str("refresh_token").starts_with("1//"));
    assert_eq!(a.body["expires_in"], 3599);
    assert_eq!(a.body["token_type"], "Bearer");
    assert_eq!(
        scope_set(a.str("scope")),
        sorted(&["openid", EMAIL, DRIVE_APPDATA])
    );
    assert!(a.body.get("id_token").is_some());
    // Errors carry the same headers.
    let e = t.exchange("garbage", "postmessage").await;
    assert_eq!(
        e.header("cache-control"),
        Some("no-cache, no-store, max-age=0, must-revalidate")
    );
    assert_eq!(
        e.header("content-type"),
        Some("application/json; charset=utf-8")
    );
}

#[tokio::test]
async fn codes_are_single_use() {
    let t = TestEmu::start().await;
    let code = t.popup_code("alice@example.com", "openid").await;
    assert!(code.starts_with("4/"));
    assert_eq!(t.exchange(&code, "postmessage").await.status, 200);
    t.exchange(&code, "postmessage")
        .await
        .assert_error(400, "invalid_grant", Some("Bad Request"));
}

#[tokio::test]
async fn garbage_codes_are_malformed() {
    let t = TestEmu::start().await;
    for garbage in ["garbage", "4/0Atooshort", "ya29.nope"] {
        t.exchange(garbage, "postmessage").await.assert_error(
            400,
            "invalid_grant",
            Some("Malformed auth code."),
        );
    }
    t.post_form(
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &t.web_id),
            ("client_secret", &t.web_secret),
            ("redirect_uri", "postmessage"),
        ],
    )
    .await
    .assert_error(400, "invalid_request", None);
}

#[tokio::test]
async fn codes_expire_after_code_ttl() {
    let t = TestEmu::start().await;
    // Default ten minutes, on the emulator's clock offset.
    let code = t.popup_code("alice@example.com", "openid").await;
    t.settings(json!({"clock_offset_secs": 601})).await;
    t.exchange(&code, "postmessage")
        .await
        .assert_error(400, "invalid_grant", Some("Bad Request"));
    t.settings(json!({"clock_offset_secs": 0, "code_ttl_secs": 5}))
        .await;
    // A shorter TTL, on the injected clock.
    let code = t.popup_code("alice@example.com", "openid").await;
    t.clock.advance(time::Duration::seconds(6));
    t.exchange(&code, "postmessage")
        .await
        .assert_error(400, "invalid_grant", Some("Bad Request"));
    let code = t.popup_code("alice@example.com", "openid").await;
    assert_eq!(t.exchange(&code, "postmessage").await.status, 200);
}

#[tokio::test]
async fn redirect_uri_must_match_the_codes_origin() {
    let t = TestEmu::start().await;
    // Popup codes: postmessage only.
    let code = t.popup_code("alice@example.com", "openid").await;
    t.exchange(&code, "")
        .await
        .assert_error(400, "redirect_uri_mismatch", None);
    t.exchange(&code, "http://127.0.0.1/cb")
        .await
        .assert_error(400, "redirect_uri_mismatch", None);
    t.post_form(
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", &t.web_id),
            ("client_secret", &t.web_secret),
        ],
    )
    .await
    .assert_error(
        400,
        "invalid_request",
        Some("Missing required parameter: redirect_uri"),
    );
    assert_eq!(t.exchange(&code, "postmessage").await.status, 200);

    // Native codes: the empty string; postmessage is a mismatch (omniauth#272).
    let native = t
        .code(json!({"email": "alice@example.com", "scope": "openid", "azp": t.emu.android_client_id()}))
        .await;
    t.exchange(&native, "postmessage").await.assert_error(
        400,
        "redirect_uri_mismatch",
        Some("Bad Request"),
    );
    assert_eq!(t.exchange(&native, "").await.status, 200);

    // Redirect-mode codes: the exact URI, trailing slash included.
    let uri = "http://127.0.0.1:9999/oauth2/callback";
    let exact = t
        .code(json!({"email": "alice@example.com", "scope": "openid", "redirect_uri": uri}))
        .await;
    t.exchange(&exact, &format!("{uri}/"))
        .await
        .assert_error(400, "redirect_uri_mismatch", None);
    t.exchange(&exact, "postmessage")
        .await
        .assert_error(400, "redirect_uri_mismatch", None);
    assert_eq!(t.exchange(&exact, uri).await.status, 200);
}

#[tokio::test]
async fn client_authentication_errors_are_googles() {
    let t = TestEmu::start().await;
    let code = t.popup_code("alice@example.com", "openid").await;
    let base = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", "postmessage"),
    ];
    let with = |extra: &[(&'static str, &str)]| {
        let mut f: Vec<(&str, String)> = base.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        f.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        f
    };
    let post = |form: Vec<(&'static str, String)>| {
        let http = t.http.clone();
        let url = t.url("/token");
        async move {
            let res = http.post(url).form(&form).send().await.unwrap();
            let status = res.status().as_u16();
            let body: serde_json::Value = res.json().await.unwrap();
            (status, body)
        }
    };
    let (s, b) = post(with(&[("client_id", &t.web_id)])).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_request")));
    assert_eq!(b["error_description"], "client_secret is missing.");

    let (s, b) = post(with(&[
        ("client_id", &t.web_id),
        ("client_secret", "GOCSPX-wrong"),
    ]))
    .await;
    assert_eq!((s, b["error"].as_str()), (401, Some("invalid_client")));
    assert_eq!(b["error_description"], "Unauthorized");

    let (s, b) = post(with(&[
        ("client_id", "123456789012-nope.apps.googleusercontent.com"),
        ("client_secret", "x"),
    ]))
    .await;
    assert_eq!((s, b["error"].as_str()), (401, Some("invalid_client")));
    assert_eq!(b["error_description"], "The OAuth client was not found.");

    let (s, b) = post(with(&[])).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_request")));

    // HTTP Basic: a wrong secret fails the same way, the right one works.
    let basic = |secret: &str| {
        t.http
            .post(t.url("/token"))
            .basic_auth(&t.web_id, Some(secret))
            .form(&base)
    };
    let res = basic("GOCSPX-wrong").send().await.unwrap();
    assert_eq!(res.status(), 401);
    let res = basic(&t.web_secret).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body["access_token"].as_str().unwrap().starts_with("ya29."));
}

#[tokio::test]
async fn a_code_only_works_for_its_client() {
    let t = TestEmu::start().await;
    let other = t
        .post_json("/_emulator/clients", json!({"type": "web"}))
        .await;
    assert_eq!(other.status, 201, "{}", other.text);
    let (other_id, other_secret) = (other.str("client_id"), other.str("client_secret"));
    let code = t.popup_code("alice@example.com", "openid").await;
    t.post_form(
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", other_id),
            ("client_secret", other_secret),
            ("redirect_uri", "postmessage"),
        ],
    )
    .await
    .assert_error(400, "invalid_grant", None);
    // The failed attempt did not burn the code for its own client.
    assert_eq!(t.exchange(&code, "postmessage").await.status, 200);
    // A code minted for the second client works for it.
    let code = t
        .code(json!({"email": "alice@example.com", "scope": "openid", "client_id": other_id}))
        .await;
    let a = t
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("client_id", other_id),
                ("client_secret", other_secret),
                ("redirect_uri", "postmessage"),
            ],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let claims = verify_with_jwks(a.str("id_token"), &t.jwks().await, other_id, &[&t.base]);
    assert_eq!(claims["azp"], other_id);
}

#[tokio::test]
async fn pkce_binds_the_code_to_its_verifier() {
    let t = TestEmu::start().await;
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    // RFC 7636 appendix B.
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let mint = || {
        t.code(json!({
            "email": "alice@example.com", "scope": "openid", "redirect_uri": "postmessage",
            "code_challenge": challenge, "code_challenge_method": "S256",
        }))
    };
    let exchange = |code: String, v: Option<&'static str>| {
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code),
            ("client_id", t.web_id.clone()),
            ("client_secret", t.web_secret.clone()),
            ("redirect_uri", "postmessage".to_owned()),
        ];
        if let Some(v) = v {
            form.push(("code_verifier", v.to_owned()));
        }
        let req = t.http.post(t.url("/token")).form(&form);
        async move {
            let res = req.send().await.unwrap();
            (
                res.status().as_u16(),
                res.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let code = mint().await;
    let (s, b) = exchange(code.clone(), None).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_grant")));
    assert_eq!(b["error_description"], "Missing code verifier.");
    let (s, b) = exchange(
        code.clone(),
        Some("wrong-verifier-wrong-verifier-wrong-verifier"),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_grant")));
    let (s, _) = exchange(code, Some(verifier)).await;
    assert_eq!(s, 200);

    let plain = t
        .code(json!({
            "email": "alice@example.com", "scope": "openid", "redirect_uri": "postmessage",
            "code_challenge": verifier, "code_challenge_method": "plain",
        }))
        .await;
    assert_eq!(exchange(plain, Some(verifier)).await.0, 200);
}

#[tokio::test]
async fn unknown_grant_types_are_unsupported() {
    let t = TestEmu::start().await;
    t.post_form(
        "/token",
        &[
            ("grant_type", "password"),
            ("client_id", &t.web_id),
            ("client_secret", &t.web_secret),
        ],
    )
    .await
    .assert_error(400, "unsupported_grant_type", None);
    t.post_form("/token", &[("client_id", &t.web_id)])
        .await
        .assert_error(400, "invalid_request", None);
}

#[tokio::test]
async fn scope_is_the_granted_subset_in_long_form() {
    let t = TestEmu::start().await;
    let code = t
        .code(json!({
            "email": "alice@example.com",
            "scope": format!("openid email profile {DRIVE_APPDATA}"),
            "granted_scopes": "openid email profile",
            "redirect_uri": "postmessage",
        }))
        .await;
    let a = t.exchange(&code, "postmessage").await;
    assert_eq!(a.status, 200);
    assert_eq!(
        scope_set(a.str("scope")),
        sorted(&["openid", EMAIL, PROFILE])
    );
    // A subset must be a subset.
    let bad = t
        .post_json(
            "/_emulator/codes",
            json!({"email": "a@example.com", "scope": "openid", "granted_scopes": DRIVE_APPDATA}),
        )
        .await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn no_id_token_without_an_identity_scope() {
    let t = TestEmu::start().await;
    let a = t.sign_in("alice@example.com", DRIVE_APPDATA).await;
    assert!(a.body.get("id_token").is_none(), "{}", a.text);
    assert_eq!(a.str("scope"), DRIVE_APPDATA);
    let r = t.refresh(a.str("refresh_token")).await;
    assert_eq!(r.status, 200);
    assert!(r.body.get("id_token").is_none());
    // Granting only email (no openid) still gives an ID token at exchange.
    let e = t.sign_in("bob@example.com", "email").await;
    assert!(e.body.get("id_token").is_some());
}

#[tokio::test]
async fn include_granted_scopes_answers_the_combined_grant() {
    let t = TestEmu::start().await;
    t.sign_in("alice@example.com", "openid email").await;
    let code = t
        .code(json!({
            "email": "alice@example.com", "scope": DRIVE_APPDATA,
            "include_granted_scopes": true, "redirect_uri": "postmessage",
        }))
        .await;
    let a = t.exchange(&code, "postmessage").await;
    assert_eq!(
        scope_set(a.str("scope")),
        sorted(&["openid", EMAIL, DRIVE_APPDATA])
    );
    // Without it, the answer names only this consent's scopes.
    let code = t
        .code(json!({"email": "alice@example.com", "scope": DRIVE_APPDATA, "redirect_uri": "postmessage"}))
        .await;
    let a = t.exchange(&code, "postmessage").await;
    assert_eq!(a.str("scope"), DRIVE_APPDATA);
}
