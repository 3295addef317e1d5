//! `POST /risc`: security event tokens signed by the emulator's RISC key, delivered by the
//! emulator itself (its control API) or, for the events and faults it does not make, signed
//! here with that same key.

use super::harness::{Answer, Code, Options, TestApp, captured_logs};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use grantkeeper_core::GrantState;
use grantkeeper_server::apikeys::KeyScope;
use grantkeeper_store::{AuditFilter, AuditRecord};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

const RISC: &str = "https://schemas.openid.net/secevent/risc/event-type/";
const OAUTH: &str = "https://schemas.openid.net/secevent/oauth/event-type/";

/// The test app, with what it takes to sign security events as the emulator does.
struct Risc {
    t: TestApp,
    kid: String,
    key: EncodingKey,
    /// The issuer the emulator's tokens carry (its base URL with a trailing slash).
    issuer: String,
}

impl Risc {
    async fn start() -> Risc {
        let t = TestApp::start_with(Options {
            emulator_data_dir: true,
            ..Options::default()
        })
        .await;
        // Asking for the RISC keys makes the emulator create its key, kept in its data dir.
        let jwks: Value = t
            .http
            .get(format!("{}/risc/jwks", t.emulator_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let kid = jwks["keys"][0]["kid"].as_str().unwrap().to_owned();
        let pem = std::fs::read(t.db_dir().join("emulator/keys/risc.pem")).unwrap();
        let key = EncodingKey::from_rsa_pem(&pem).unwrap();
        let issuer = format!("{}/", t.emulator_url);
        Risc {
            t,
            kid,
            key,
            issuer,
        }
    }

    fn receiver(&self) -> String {
        format!("{}/risc", self.t.url)
    }

    /// Has the emulator sign and deliver an event to `/risc`; returns the status it got.
    async fn emit(&self, body: Value) -> u16 {
        let mut body = body;
        if body.get("receiver").is_none() {
            body["receiver"] = json!(self.receiver());
        }
        let a = self.t.emulator_call("POST", "risc", Some(body)).await;
        assert_eq!(a.status, 200, "{}", a.text);
        a.body["receiver_status"].as_u64().unwrap() as u16
    }

    /// Claims as Google writes them, for one event.
    fn claims(&self, event_type: &str, event: Value) -> Value {
        json!({
            "iss": self.issuer,
            "aud": self.t.emulator.web_client().client_id,
            "iat": self.t.app.clock().unix(),
            "jti": grantkeeper_core::random::token::<16>(),
            "events": { event_type: event },
        })
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }

    fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_owned());
        header.typ = Some("secevent+jwt".to_owned());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }

    async fn post(&self, content_type: Option<&str>, body: impl Into<Vec<u8>>) -> Answer {
        let mut req = self.t.http.post(self.receiver()).body(body.into());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        Answer {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    }

    async fn deliver(&self, set: &str) -> Answer {
        self.post(Some("application/secevent+jwt"), set).await
    }

    /// Every audit row written by `/risc`, oldest first.
    async fn audit(&self) -> Vec<AuditRecord> {
        self.t.app.audit().flush().await;
        let mut rows: Vec<_> = self
            .t
            .app
            .store()
            .audit(AuditFilter {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.actor == "risc")
            .collect();
        rows.reverse();
        rows
    }

    /// Signs `email` in on the web; returns the sub and the session cookie.
    async fn sign_in(&self, email: &str) -> (String, String) {
        let a = self.t.authcode_web(&self.t.web_code(email).await).await;
        assert_eq!(a.status, 200, "{}", a.text);
        (
            a.body["user"]["sub"].as_str().unwrap().to_owned(),
            a.session_cookie().unwrap(),
        )
    }

    /// Signs `email` in with a code minted with prompt=consent: a new refresh token each time.
    async fn sign_in_with_consent(&self, email: &str) -> Answer {
        let code = self
            .t
            .mint(Code {
                prompt: Some("consent"),
                ..Code::web(email)
            })
            .await;
        self.t.authcode_web(&code).await
    }

    async fn session_alive(&self, cookie: &str) -> bool {
        let a = self.t.get("/me", Some(cookie)).await;
        match a.status {
            200 => true,
            401 => false,
            other => panic!("/me answered {other}: {}", a.text),
        }
    }

    async fn grant_state(&self, sub: &str) -> Option<(GrantState, Option<String>, bool)> {
        let (_, grant) = self.t.app.store().user(sub).await.unwrap()?;
        Some((grant.state, grant.reason, grant.refresh_token.is_some()))
    }

    async fn grant(&self, sub: &str) -> grantkeeper_store::GrantRecord {
        self.t.app.store().user(sub).await.unwrap().unwrap().1
    }

    async fn revocations(&self) -> u64 {
        self.t.stats().await["revocations"].as_u64().unwrap()
    }
}

/// A receiver that keeps what it is sent and answers 202: how a test gets a genuine token.
struct Capture {
    url: String,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl Capture {
    async fn start() -> Capture {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = bodies.clone();
        let app = axum::Router::new().route(
            "/",
            post(move |body: String| {
                let kept = kept.clone();
                async move {
                    kept.lock().unwrap().push(body);
                    axum::http::StatusCode::ACCEPTED
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Capture { url, bodies }
    }

    /// A token the emulator signed for `body`, captured on its way.
    async fn genuine(&self, r: &Risc, mut body: Value) -> String {
        body["receiver"] = json!(self.url);
        assert_eq!(r.emit(body).await, 202);
        self.bodies.lock().unwrap().pop().unwrap()
    }
}

#[tokio::test]
async fn sessions_revoked_ends_every_session_of_the_user_only() {
    let r = Risc::start().await;
    let (ada, first) = r.sign_in("ada@example.com").await;
    let (_, second) = r.sign_in("ada@example.com").await;
    let (_, other) = r.sign_in("bob@example.com").await;
    let grant_before = r.grant(&ada).await;

    let status = r
        .emit(json!({"email": "ada@example.com", "event": "sessions-revoked"}))
        .await;
    assert_eq!(status, 202);
    assert!(!r.session_alive(&first).await);
    assert!(!r.session_alive(&second).await);
    assert!(r.session_alive(&other).await);
    // The grant is not touched.
    assert_eq!(
        r.grant(&ada).await,
        grant_before,
        "the grant is not touched"
    );
    let rows = r.audit().await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].sub.as_deref(), Some(ada.as_str()));
    assert_eq!(rows[0].action, "sessions-revoked");
    assert_eq!(rows[0].outcome, "ok");
    assert!(rows[0].detail.contains("sessions ended: 2"), "{rows:?}");
}

#[tokio::test]
async fn tokens_revoked_marks_the_grant_revoked_without_revoking_at_google() {
    let r = Risc::start().await;
    let (ada, cookie) = r.sign_in("ada@example.com").await;
    let (bob, _) = r.sign_in("bob@example.com").await;
    let key = r.t.api_key(&[KeyScope::Token]).await;
    let token =
        r.t.v1("POST", &format!("/v1/users/{ada}/token"), Some(&key), None)
            .await;
    assert_eq!(token.status, 200, "{}", token.text);
    let before = r.revocations().await;

    let status = r
        .emit(json!({"email": "ada@example.com", "event": "tokens-revoked"}))
        .await;
    assert_eq!(status, 202);
    assert_eq!(
        r.grant_state(&ada).await,
        Some((
            GrantState::Revoked,
            Some("RISC: tokens revoked at Google".to_owned()),
            false
        ))
    );
    // The state change is a grant event, as every other one (the webhook's outbox).
    let events = r.t.app.store().grant_events(&ada).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.to, GrantState::Revoked);
    assert_eq!(last.reason, "RISC: tokens revoked at Google");
    assert!(!r.session_alive(&cookie).await);
    // The broker forgot the cached token: no hand-out.
    r.t.v1("POST", &format!("/v1/users/{ada}/token"), Some(&key), None)
        .await
        .assert_error(409, "grant_revoked");
    // Only the emulator's own revocation of the user's grant (what the event reports)
    // counted: grantkeeper did not call /revoke.
    assert_eq!(r.revocations().await, before + 1);
    assert_eq!(r.grant_state(&bob).await.unwrap().0, GrantState::Active);
    let rows = r.audit().await;
    assert_eq!(
        rows.iter()
            .map(|r| (r.action.as_str(), r.outcome.as_str()))
            .collect::<Vec<_>>(),
        [("tokens-revoked", "ok")]
    );
}

#[tokio::test]
async fn a_refresh_token_newer_than_a_tokens_revoked_event_is_kept() {
    let r = Risc::start().await;
    let (ada, _) = r.sign_in("ada@example.com").await;
    let grant_before = r.grant(&ada).await;
    // The event was issued an hour ago, before this grant's refresh token arrived.
    let mut claims = r.claims(
        &format!("{OAUTH}tokens-revoked"),
        json!({"subject": {"subject_type": "iss-sub", "iss": r.issuer, "sub": ada}}),
    );
    claims["iat"] = json!(r.t.app.clock().unix() - 3600);
    assert_eq!(r.deliver(&r.sign(&claims)).await.status, 202);
    assert_eq!(
        r.grant(&ada).await,
        grant_before,
        "the grant is not touched"
    );
    assert_eq!(r.audit().await[0].outcome, "newer_grant");
}

#[tokio::test]
async fn hijacking_blocks_sign_in_until_the_account_is_enabled() {
    let r = Risc::start().await;
    let (ada, cookie) = r.sign_in("ada@example.com").await;
    let before = r.revocations().await;

    let status = r
        .emit(
            json!({"email": "ada@example.com", "event": "account-disabled", "reason": "hijacking"}),
        )
        .await;
    assert_eq!(status, 202);
    assert!(!r.session_alive(&cookie).await);
    assert_eq!(
        r.grant_state(&ada).await,
        Some((
            GrantState::Revoked,
            Some("RISC: account disabled at Google (hijacking)".to_owned()),
            false
        ))
    );
    assert_eq!(r.revocations().await, before, "no call to /revoke");

    // A fresh consent, with a new refresh token: refused, and nothing of it is kept.
    let (user_before, _) = r.t.app.store().user(&ada).await.unwrap().unwrap();
    let refused = r.sign_in_with_consent("ada@example.com").await;
    refused.assert_error(403, "forbidden");
    assert!(
        refused.body["message"]
            .as_str()
            .unwrap()
            .contains("re-enables"),
        "{}",
        refused.text
    );
    assert!(refused.session_cookie().is_none());
    let (user_after, grant) = r.t.app.store().user(&ada).await.unwrap().unwrap();
    assert_eq!(user_after, user_before);
    assert!(grant.refresh_token.is_none());
    assert_eq!(grant.state, GrantState::Revoked);
    // Other users sign in as usual.
    r.sign_in("bob@example.com").await;

    let status = r
        .emit(json!({"email": "ada@example.com", "event": "account-enabled"}))
        .await;
    assert_eq!(status, 202);
    let back = r.sign_in_with_consent("ada@example.com").await;
    assert_eq!(back.status, 200, "{}", back.text);
    assert_eq!(r.grant_state(&ada).await.unwrap().0, GrantState::Active);

    let rows = r.audit().await;
    assert_eq!(
        rows.iter()
            .map(|r| (r.action.as_str(), r.outcome.as_str()))
            .collect::<Vec<_>>(),
        [("account-disabled", "ok"), ("account-enabled", "ok")]
    );
    assert!(rows[0].detail.contains("sign-in blocked"), "{rows:?}");
}

#[tokio::test]
async fn hijacking_of_an_account_not_yet_signed_up_blocks_its_first_sign_in() {
    let r = Risc::start().await;
    let status = r
        .emit(
            json!({"email": "new@example.com", "event": "account-disabled", "reason": "hijacking"}),
        )
        .await;
    assert_eq!(status, 202);
    r.sign_in_with_consent("new@example.com")
        .await
        .assert_error(403, "forbidden");
    assert!(
        r.t.app
            .store()
            .list_users(None, 10)
            .await
            .unwrap()
            .users
            .is_empty()
    );
    let rows = r.audit().await;
    assert_eq!(rows[0].outcome, "unknown_user");
    assert!(captured_logs().contains("security event for an unknown user"));
}

#[tokio::test]
async fn other_disabling_reasons_end_sessions_only() {
    let r = Risc::start().await;
    let (ada, cookie) = r.sign_in("ada@example.com").await;
    let grant_before = r.grant(&ada).await;
    let status = r
        .emit(json!({"email": "ada@example.com", "event": "account-disabled", "reason": "bulk-account"}))
        .await;
    assert_eq!(status, 202);
    assert!(!r.session_alive(&cookie).await);
    assert_eq!(
        r.grant(&ada).await,
        grant_before,
        "the grant is not touched"
    );
    assert_eq!(r.sign_in_with_consent("ada@example.com").await.status, 200);
    let rows = r.audit().await;
    assert_eq!(rows[0].action, "account-disabled");
    assert!(rows[0].detail.contains("reason: bulk-account"), "{rows:?}");
}

#[tokio::test]
async fn account_purged_deletes_the_user() {
    let r = Risc::start().await;
    let (ada, cookie) = r.sign_in("ada@example.com").await;
    let (bob, _) = r.sign_in("bob@example.com").await;
    let before = r.revocations().await;
    let status = r
        .emit(json!({"email": "ada@example.com", "event": "account-purged"}))
        .await;
    assert_eq!(status, 202);
    assert!(r.t.app.store().user(&ada).await.unwrap().is_none());
    assert!(r.t.app.store().user(&bob).await.unwrap().is_some());
    assert!(!r.session_alive(&cookie).await);
    assert_eq!(r.revocations().await, before);
    let rows = r.audit().await;
    assert_eq!(rows[0].sub.as_deref(), Some(ada.as_str()));
    assert_eq!(
        (rows[0].action.as_str(), rows[0].outcome.as_str()),
        ("account-purged", "ok")
    );
}

#[tokio::test]
async fn credential_change_and_verification_are_only_logged() {
    let r = Risc::start().await;
    let (ada, cookie) = r.sign_in("ada@example.com").await;
    let grant_before = r.grant(&ada).await;
    let status = r
        .emit(json!({"email": "ada@example.com", "event": "account-credential-change-required"}))
        .await;
    assert_eq!(status, 202);
    let status = r
        .emit(json!({"event": "verification", "state": "state-from-the-operator-42"}))
        .await;
    assert_eq!(status, 202);
    assert!(r.session_alive(&cookie).await);
    assert_eq!(
        r.grant(&ada).await,
        grant_before,
        "the grant is not touched"
    );
    let rows = r.audit().await;
    assert_eq!(
        rows.iter()
            .map(|r| (r.action.as_str(), r.outcome.as_str()))
            .collect::<Vec<_>>(),
        [
            ("account-credential-change-required", "ok"),
            ("verification", "ok")
        ]
    );
    assert!(rows[1].detail.contains("state-from-the-operator-42"));
    assert!(captured_logs().contains("state-from-the-operator-42"));
}

#[tokio::test]
async fn events_for_unknown_users_and_unknown_types_are_accepted() {
    let r = Risc::start().await;
    let status = r
        .emit(json!({"email": "stranger@example.com", "event": "sessions-revoked"}))
        .await;
    assert_eq!(status, 202);
    let set = r.sign(&r.claims(
        "https://schemas.openid.net/secevent/risc/event-type/something-new",
        json!({"subject": {"subject_type": "iss-sub", "iss": r.issuer, "sub": "123"}}),
    ));
    assert_eq!(r.deliver(&set).await.status, 202);
    // By email, for nobody.
    let set = r.sign(&r.claims(
        &format!("{RISC}sessions-revoked"),
        json!({"subject": {"subject_type": "id_token_claims", "email": "nobody@example.com"}}),
    ));
    assert_eq!(r.deliver(&set).await.status, 202);
    let rows = r.audit().await;
    assert_eq!(
        rows.iter()
            .map(|r| (r.action.as_str(), r.outcome.as_str()))
            .collect::<Vec<_>>(),
        [
            ("sessions-revoked", "unknown_user"),
            ("unknown", "ignored"),
            ("sessions-revoked", "unknown_user")
        ]
    );
}

#[tokio::test]
async fn a_subject_by_email_finds_the_user() {
    let r = Risc::start().await;
    let (_, cookie) = r.sign_in("ada@example.com").await;
    let set = r.sign(&r.claims(
        &format!("{RISC}sessions-revoked"),
        json!({"subject": {"subject_type": "id_token_claims", "email": "ada@example.com"}}),
    ));
    assert_eq!(r.deliver(&set).await.status, 202);
    assert!(!r.session_alive(&cookie).await);
}

#[tokio::test]
async fn a_redelivered_event_acts_once() {
    let r = Risc::start().await;
    let capture = Capture::start().await;
    let (_, first) = r.sign_in("ada@example.com").await;
    let set = capture
        .genuine(
            &r,
            json!({"email": "ada@example.com", "event": "sessions-revoked"}),
        )
        .await;

    assert_eq!(r.deliver(&set).await.status, 202);
    assert!(!r.session_alive(&first).await);
    assert_eq!(r.audit().await.len(), 1);

    // Signed in again, the redelivery ends nothing and records nothing.
    let (_, again) = r.sign_in("ada@example.com").await;
    let answer = r.deliver(&set).await;
    assert_eq!(answer.status, 202, "{}", answer.text);
    assert!(r.session_alive(&again).await);
    assert_eq!(r.audit().await.len(), 1);
}

#[tokio::test]
async fn token_revoked_by_prefix_or_hash_finds_the_right_grant() {
    let r = Risc::start().await;
    let mut subs = Vec::new();
    for email in ["a@example.com", "b@example.com", "c@example.com"] {
        subs.push(r.sign_in(email).await.0);
    }
    let tokens: Vec<String> =
        futures_util::future::join_all(subs.iter().map(|sub| r.t.held_refresh_token(sub)))
            .await
            .into_iter()
            .map(Option::unwrap)
            .collect();
    let before = r.revocations().await;
    let token_revoked = |alg: &str, token: String| {
        r.sign(&r.claims(
            &format!("{OAUTH}token-revoked"),
            json!({"subject": {
                "subject_type": "oauth_token",
                "token_type": "refresh_token",
                "token_identifier_alg": alg,
                "token": token,
            }}),
        ))
    };

    // By prefix: the first 16 characters of b's token.
    let prefix: String = tokens[1].chars().take(16).collect();
    assert_eq!(
        r.deliver(&token_revoked("prefix", prefix)).await.status,
        202
    );
    assert_eq!(
        states(&r, &subs).await,
        [GrantState::Active, GrantState::Revoked, GrantState::Active]
    );

    // By hash: base64(SHA-512(SHA-512(c's token))).
    let once = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA512, tokens[2].as_bytes());
    let twice = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA512, once.as_ref());
    let hash = STANDARD.encode(twice.as_ref());
    assert_eq!(
        r.deliver(&token_revoked("hash_base64_sha512_sha512", hash))
            .await
            .status,
        202
    );
    assert_eq!(
        states(&r, &subs).await,
        [GrantState::Active, GrantState::Revoked, GrantState::Revoked]
    );
    let (_, reason, held) = r.grant_state(&subs[2]).await.unwrap();
    assert_eq!(reason.as_deref(), Some("RISC: tokens revoked at Google"));
    assert!(!held);

    // A token nobody holds.
    assert_eq!(
        r.deliver(&token_revoked("prefix", "1//0nobodyholds".into()))
            .await
            .status,
        202
    );
    assert_eq!(r.revocations().await, before, "no call to /revoke");
    let rows = r.audit().await;
    assert_eq!(
        rows.iter()
            .map(|r| (r.sub.as_deref(), r.action.as_str(), r.outcome.as_str()))
            .collect::<Vec<_>>(),
        [
            (Some(subs[1].as_str()), "token-revoked", "ok"),
            (Some(subs[2].as_str()), "token-revoked", "ok"),
            (None, "token-revoked", "unknown_token")
        ]
    );
    // Neither the prefix nor the token reached a log line.
    let logs = captured_logs();
    for token in &tokens {
        assert!(!logs.contains(&token[..16]), "a token prefix was logged");
    }
}

async fn states(r: &Risc, subs: &[String]) -> Vec<GrantState> {
    let mut out = Vec::new();
    for sub in subs {
        out.push(r.grant_state(sub).await.unwrap().0);
    }
    out
}

/// What a refused token must leave as it was: the session, the grant, the audit trail.
struct Untouched {
    sub: String,
    cookie: String,
    grant: grantkeeper_store::GrantRecord,
}

impl Untouched {
    async fn new(r: &Risc) -> Untouched {
        let (sub, cookie) = r.sign_in("ada@example.com").await;
        let grant = r.grant(&sub).await;
        Untouched { sub, cookie, grant }
    }

    async fn check(&self, r: &Risc, what: &str) {
        assert!(r.session_alive(&self.cookie).await, "{what}");
        assert_eq!(r.grant(&self.sub).await, self.grant, "{what}");
        assert!(r.audit().await.is_empty(), "{what}");
        assert!(
            r.t.app
                .store()
                .sign_in_block(&self.sub)
                .await
                .unwrap()
                .is_none(),
            "{what}"
        );
    }
}

#[track_caller]
fn assert_refused(a: &Answer, err: &str, what: &str) {
    assert_eq!(a.status, 400, "{what}: {}", a.text);
    assert_eq!(a.body["err"], err, "{what}: {}", a.text);
    assert!(
        a.body["description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{what}: {}",
        a.text
    );
    assert!(a.body.get("error").is_none(), "RFC 8935's body, not ours");
}

#[tokio::test]
async fn refused_tokens_change_nothing() {
    let r = Risc::start().await;
    let capture = Capture::start().await;
    let ada = Untouched::new(&r).await;
    let hijack = |r: &Risc| {
        r.claims(
            &format!("{RISC}account-disabled"),
            json!({
                "subject": {"subject_type": "iss-sub", "iss": r.issuer, "sub": ada.sub},
                "reason": "hijacking"
            }),
        )
    };
    // The genuine token, one bit of its signature flipped.
    let genuine = capture
        .genuine(
            &r,
            json!({"email": "ada@example.com", "event": "account-disabled", "reason": "hijacking"}),
        )
        .await;
    let (input, signature) = genuine.rsplit_once('.').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
    bytes[10] ^= 0x01;
    let flipped = format!("{input}.{}", URL_SAFE_NO_PAD.encode(bytes));
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"secevent+jwt"}"#),
        URL_SAFE_NO_PAD.encode(hijack(&r).to_string())
    );

    let mut cases: Vec<(&str, String, &str)> = vec![
        ("flipped signature", flipped, "invalid_key"),
        ("alg none", none, "invalid_key"),
        (
            "unknown kid",
            r.sign_as("no-such-kid", &hijack(&r)),
            "invalid_key",
        ),
        ("garbage", "this is not a token".into(), "jwtParse"),
        ("two parts", "eyJhbGciOiJSUzI1NiJ9.e30".into(), "jwtParse"),
    ];
    let mut wrong_aud = hijack(&r);
    wrong_aud["aud"] = json!("another-project.apps.googleusercontent.com");
    cases.push(("wrong aud", r.sign(&wrong_aud), "invalid_audience"));
    let mut wrong_iss = hijack(&r);
    wrong_iss["iss"] = json!("https://accounts.example.com/");
    cases.push(("wrong iss", r.sign(&wrong_iss), "invalid_issuer"));
    let mut no_jti = hijack(&r);
    no_jti.as_object_mut().unwrap().remove("jti");
    cases.push(("no jti", r.sign(&no_jti), "invalid_request"));
    let mut future = hijack(&r);
    future["iat"] = json!(r.t.app.clock().unix() + 3600);
    cases.push(("iat in the future", r.sign(&future), "invalid_request"));
    let mut old = hijack(&r);
    old["iat"] = json!(r.t.app.clock().unix() - 31 * 86_400);
    cases.push(("iat too old", r.sign(&old), "invalid_request"));
    let mut two = hijack(&r);
    two["events"][format!("{RISC}account-purged")] =
        json!({"subject": {"subject_type": "iss-sub", "iss": r.issuer, "sub": ada.sub}});
    cases.push(("two events", r.sign(&two), "invalid_request"));
    let mut no_subject = hijack(&r);
    no_subject["events"] = json!({ format!("{RISC}account-disabled"): {"reason": "hijacking"} });
    cases.push(("no subject", r.sign(&no_subject), "invalid_request"));
    let mut foreign_subject = hijack(&r);
    foreign_subject["events"][format!("{RISC}account-disabled")]["subject"]["iss"] =
        json!("https://accounts.example.com/");
    cases.push((
        "subject of another issuer",
        r.sign(&foreign_subject),
        "invalid_request",
    ));
    // An ID token is not a security event, although the same provider signed it.
    let id_token =
        r.t.issued_tokens("ada@example.com")
            .await
            .into_iter()
            .find(|t| t.starts_with("eyJ"))
            .unwrap();
    cases.push(("an ID token", id_token, "invalid_key"));

    for (what, body, err) in &cases {
        let a = r.deliver(body).await;
        assert_refused(&a, err, what);
        ada.check(&r, what).await;
    }

    let empty = r.post(Some("application/secevent+jwt"), Vec::new()).await;
    assert_refused(&empty, "invalid_request", "empty");
    let binary = r.post(None, vec![0xff, 0xfe, 0x00]).await;
    assert_refused(&binary, "jwtParse", "not text");
    let json_body = r
        .post(Some("application/json"), hijack(&r).to_string())
        .await;
    assert_refused(&json_body, "invalid_request", "JSON");
    let big = r
        .post(Some("application/secevent+jwt"), vec![b'a'; 16 * 1024 + 1])
        .await;
    big.assert_error(413, "payload_too_large");
    ada.check(&r, "after the bodies").await;

    // The genuine token itself, in every accepted content type spelling, is taken (once).
    let a = r
        .post(Some("application/jwt; charset=utf-8"), genuine.clone())
        .await;
    assert_eq!(a.status, 202, "{}", a.text);
    for ct in [None, Some("text/plain"), Some("application/secevent+jwt")] {
        assert_eq!(r.post(ct, genuine.clone()).await.status, 202);
    }
    assert_eq!(r.audit().await.len(), 1);
    // No token reached a log line.
    let logs = captured_logs();
    for (_, body, _) in &cases {
        if body.len() > 40 {
            assert!(!logs.contains(body.as_str()), "a refused token was logged");
        }
    }
    assert!(!logs.contains(&genuine), "a token was logged");
}

#[tokio::test]
async fn an_expired_event_is_still_history() {
    let r = Risc::start().await;
    let (ada, cookie) = r.sign_in("ada@example.com").await;
    let mut claims = r.claims(
        &format!("{RISC}sessions-revoked"),
        json!({"subject": {"subject_type": "iss-sub", "iss": r.issuer, "sub": ada}}),
    );
    claims["exp"] = json!(r.t.app.clock().unix() - 86_400);
    assert_eq!(r.deliver(&r.sign(&claims)).await.status, 202);
    assert!(!r.session_alive(&cookie).await);
}

#[tokio::test]
async fn only_post_is_routed() {
    let r = Risc::start().await;
    let a = r.t.get("/risc", None).await;
    assert_eq!(a.status, 405, "{}", a.text);
}

/// A connection of another process's, to the server's database file.
fn other_connection(r: &Risc) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(r.t.db_dir().join("grantkeeper.db")).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    conn
}

#[tokio::test]
async fn a_busy_store_answers_503_and_the_redelivery_acts() {
    let r = Risc::start().await;
    let (_, cookie) = r.sign_in("ada@example.com").await;
    let capture = Capture::start().await;
    let set = capture
        .genuine(
            &r,
            json!({"email": "ada@example.com", "event": "sessions-revoked"}),
        )
        .await;

    // Another process holds the database's write lock past the store's busy timeout.
    let other = other_connection(&r);
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let busy = r.deliver(&set).await;
    busy.assert_error(503, "upstream_unavailable");
    assert!(busy.headers.contains_key("retry-after"));
    other.execute_batch("ROLLBACK").unwrap();
    assert!(r.session_alive(&cookie).await);

    // Google delivers again: now it acts.
    assert_eq!(r.deliver(&set).await.status, 202);
    assert!(!r.session_alive(&cookie).await);
    assert_eq!(r.audit().await.len(), 1);
}

#[tokio::test]
async fn an_event_that_could_not_be_acted_on_is_not_taken_for_a_duplicate() {
    let r = Risc::start().await;
    let (ada, _) = r.sign_in("ada@example.com").await;
    let capture = Capture::start().await;
    let set = capture
        .genuine(
            &r,
            json!({"email": "ada@example.com", "event": "account-disabled", "reason": "hijacking"}),
        )
        .await;

    let raw = other_connection(&r);
    raw.execute_batch("ALTER TABLE sign_in_blocks RENAME TO sign_in_blocks_away")
        .unwrap();
    let failed = r.deliver(&set).await;
    assert!(failed.status >= 500, "{}", failed.text);
    assert!(failed.body["error"].is_string(), "{}", failed.text);
    raw.execute_batch("ALTER TABLE sign_in_blocks_away RENAME TO sign_in_blocks")
        .unwrap();
    assert!(r.t.app.store().sign_in_block(&ada).await.unwrap().is_none());

    assert_eq!(r.deliver(&set).await.status, 202);
    assert!(r.t.app.store().sign_in_block(&ada).await.unwrap().is_some());
    let rows = r.audit().await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].outcome, "ok");
}

/// A user row written as a sign-in of `sub` with `email` would write it, `verified` or not.
async fn user_with_email(r: &Risc, sub: &str, email: &str, verified: bool) {
    let now = r.t.app.clock().now();
    r.t.app
        .store()
        .record_sign_in(grantkeeper_store::SignIn {
            profile: grantkeeper_core::UserProfile {
                sub: sub.to_owned(),
                email: Some(email.to_owned()),
                email_verified: verified,
                name: None,
                picture: None,
                given_name: None,
                family_name: None,
                locale: None,
                hd: None,
            },
            granted_scopes: grantkeeper_core::Scopes::parse("openid email"),
            refresh_token: None,
            access_token: None,
            at: now,
            session: None,
        })
        .await
        .unwrap();
}

/// An event that names its subject by email acts only on the user whose verified email it is:
/// not on a row that carries the address unverified, and on no one when several users have
/// verified it (the address changed hands); the audit says which.
#[tokio::test]
async fn a_subject_by_email_acts_only_on_the_one_user_who_verified_it() {
    let r = Risc::start().await;
    let (ada, _) = r.sign_in("ada@example.com").await;
    user_with_email(&r, "999000111", "ada@example.com", false).await;
    let purged = r.sign(&r.claims(
        &format!("{RISC}account-purged"),
        json!({"subject": {"subject_type": "id_token_claims", "email": "ada@example.com"}}),
    ));
    assert_eq!(r.deliver(&purged).await.status, 202);
    assert!(r.grant_state(&ada).await.is_none(), "ada is deleted");
    assert!(
        r.grant_state("999000111").await.is_some(),
        "the unverified row is left alone"
    );

    // Two users verified one address over time: an event by that address acts on neither.
    let (bo, _) = r.sign_in("bo@example.com").await;
    user_with_email(&r, "999000222", "bo@example.com", true).await;
    let revoked = r.sign(&r.claims(
        &format!("{OAUTH}tokens-revoked"),
        json!({"subject": {"subject_type": "id_token_claims", "email": "bo@example.com"}}),
    ));
    assert_eq!(r.deliver(&revoked).await.status, 202);
    assert_eq!(
        r.grant_state(&bo).await.unwrap().0,
        GrantState::Active,
        "bo's grant is left as it is"
    );
    let rows = r.audit().await;
    let outcomes: Vec<_> = rows
        .iter()
        .map(|row| {
            (
                row.action.as_str(),
                row.sub.as_deref(),
                row.outcome.as_str(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("account-purged", Some(ada.as_str()), "ok"),
            ("tokens-revoked", None, "ambiguous"),
        ]
    );
    assert!(rows[1].detail.contains("999000222"), "{}", rows[1].detail);
    assert!(rows[1].detail.contains(&bo), "{}", rows[1].detail);
}
