//! Invariant 1 over a whole run: web and mobile sign-ins, hand-outs, a forced refresh, a
//! proxied call, a RISC event, a data key rotation and a disconnect; afterwards no token the
//! emulator issued, no key, no client or API key secret and no session id is in the logs, the
//! database (SQLite file bytes, or every PostgreSQL row as text) or any response body, but for
//! the access tokens that `POST /v1/users/{sub}/token` hands out by contract.

use super::harness::{Answer, TestApp, captured_logs};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use grantkeeper_core::{ExposeSecret, KeyId, MasterKey, SystemClock};
use grantkeeper_emulator::{Emulator, EmulatorOptions};
use grantkeeper_server::App;
use grantkeeper_server::apikeys::KeyScope::{Proxy, Token, UsersRead, UsersWrite};
use grantkeeper_server::config::{FileConfig, Settings};
use grantkeeper_server::vault::rotation::{Rotation, RotationOptions};
use grantkeeper_testkit::postgres::TestDatabase;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::net::TcpListener;
use url::Url;

const XRW: (&str, &str) = ("x-requested-with", "XmlHttpRequest");

/// The server beside an emulator, as the harness starts it, on the store at `store_url` (the
/// test directory's SQLite file when `None`), with a master key whose text the test keeps.
async fn start(store_url: Option<String>) -> (TestApp, String) {
    // Starts the capture of the logs before anything logs.
    captured_logs();
    let dir = tempfile::tempdir().unwrap();
    let clock = SystemClock::shared();
    let emulator_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let emulator_url = format!("http://{}", emulator_listener.local_addr().unwrap());
    let emulator = Emulator::open(EmulatorOptions {
        base_url: Url::parse(&emulator_url).unwrap(),
        data_dir: None,
        clock: clock.clone(),
        control_api: true,
    })
    .await
    .unwrap();
    tokio::spawn(axum::serve(emulator_listener, emulator.router()).into_future());

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let client = emulator.web_client();
    let mut file = FileConfig::default();
    file.server.addr = Some(listener.local_addr().unwrap().to_string());
    file.server.public_url = Some(url.clone());
    file.server.allowed_origins = vec!["https://app.example.com".into()];
    file.provider.issuer = Some(emulator_url.clone());
    file.provider.client_id = Some(client.client_id.clone());
    file.provider.client_secret = Some(client.client_secret.clone());
    file.provider.google_quirks = Some(true);
    file.provider.authorized_parties = vec![emulator.android_client_id(), emulator.ios_client_id()];
    file.provider.api_base = Some(emulator_url.clone());
    file.store.url = Some(
        store_url
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("grantkeeper.db").display()))
            .into(),
    );
    let settings = Settings::from_file(&file, dir.path()).unwrap();
    let master_text = MasterKey::generate_base64();
    let master = MasterKey::from_base64(&master_text).unwrap();
    let store = grantkeeper_store::open(settings.store_url.expose_secret())
        .await
        .unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let source: std::sync::Arc<dyn grantkeeper_core::MasterKeySource> =
        std::sync::Arc::new(master.try_clone().unwrap());
    let app = App::with_http_client(settings, store, source.clone(), clock, http)
        .await
        .unwrap();
    tokio::spawn(
        axum::serve(listener, grantkeeper_server::http::router(app.clone())).into_future(),
    );
    let t = TestApp {
        url,
        emulator_url,
        emulator,
        app,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        dir,
        master,
        source,
        kms_credentials: None,
        database: None,
    };
    (t, master_text.expose_secret().to_owned())
}

/// What a run received and what it must keep secret.
struct Run {
    /// The users' subs: not secret, and stored, logged and answered in plaintext.
    subs: Vec<String>,
    /// Every response body of the server, but the hand-outs'.
    answers: Vec<String>,
    /// The bodies of `POST /v1/users/{sub}/token`: they carry access tokens by contract.
    hand_outs: Vec<String>,
    /// Access tokens the emulator issued.
    access_tokens: Vec<String>,
    /// Everything else secret: refresh and ID tokens, codes, keys, secrets, session ids.
    secrets: Vec<(String, Vec<u8>)>,
}

#[track_caller]
fn ok(a: &Answer, status: u16) {
    assert_eq!(a.status, status, "{}", a.text);
}

/// The full run on `t`; `tag` keeps the emails of the SQLite and PostgreSQL runs apart.
async fn run(t: &TestApp, master_text: &str, tag: &str) -> Run {
    let emails = [
        format!("noleak-web-{tag}@example.com"),
        format!("noleak-android-{tag}@example.com"),
        format!("noleak-ios-{tag}@example.com"),
    ];
    let mut answers = Vec::new();
    let mut hand_outs = Vec::new();
    let mut secrets: Vec<(String, Vec<u8>)> = Vec::new();
    let mut secret = |what: &str, value: &[u8]| secrets.push((what.to_owned(), value.to_vec()));

    let codes = [
        t.web_code(&emails[0]).await,
        t.mobile_code(&emails[1], t.emulator.android_client_id())
            .await,
        t.mobile_code(&emails[2], t.emulator.ios_client_id()).await,
    ];
    let signed = [
        t.authcode_web(&codes[0]).await,
        t.authcode_android(&codes[1]).await,
        t.authcode_ios(&codes[2]).await,
    ];
    let mut subs = Vec::new();
    let mut cookies = Vec::new();
    for (code, a) in codes.iter().zip(&signed) {
        ok(a, 200);
        secret("an authorization code", code.as_bytes());
        subs.push(a.body["user"]["sub"].as_str().unwrap().to_owned());
        let cookie = a.session_cookie().expect("a session cookie");
        secret("a session cookie", cookie.as_bytes());
        let id = cookie.trim_start_matches("gk_session=").to_owned();
        secret("a session id", id.as_bytes());
        cookies.push(cookie);
        answers.push(a.text.clone());
    }
    let me = t.get("/me", Some(&cookies[0])).await;
    ok(&me, 200);
    answers.push(me.text);

    let key = t.api_key(&[Token, Proxy, UsersRead, UsersWrite]).await;
    secret("an API key", key.as_bytes());
    let listed = t.v1("GET", "/v1/users", Some(&key), None).await;
    ok(&listed, 200);
    answers.push(listed.text);
    for sub in &subs {
        let one = t
            .v1("GET", &format!("/v1/users/{sub}"), Some(&key), None)
            .await;
        ok(&one, 200);
        answers.push(one.text);
    }

    let hand_out = |sub: String, body: Option<Value>| {
        let key = key.clone();
        async move {
            let a = t
                .v1("POST", &format!("/v1/users/{sub}/token"), Some(&key), body)
                .await;
            ok(&a, 200);
            assert!(a.body["access_token"].is_string(), "{}", a.text);
            a.text
        }
    };
    for sub in &subs {
        hand_outs.push(hand_out(sub.clone(), None).await);
    }
    // Forced: the held token does not last an hour more.
    let before = t.stats().await["refreshes"].as_u64().unwrap();
    hand_outs.push(hand_out(subs[0].clone(), Some(json!({"min_ttl": 3600}))).await);
    assert!(t.stats().await["refreshes"].as_u64().unwrap() > before);

    let proxied = t
        .v1(
            "GET",
            &format!(
                "/v1/users/{}/google/drive/v3/files?spaces=appDataFolder",
                subs[0]
            ),
            Some(&key),
            None,
        )
        .await;
    ok(&proxied, 200);
    answers.push(proxied.text);

    let risc = t
        .emulator_call(
            "POST",
            "risc",
            Some(json!({
                "email": emails[2], "event": "sessions-revoked",
                "receiver": format!("{}/risc", t.url),
            })),
        )
        .await;
    ok(&risc, 200);
    assert_eq!(risc.body["receiver_status"], 202, "{}", risc.text);
    // The event was taken: the iOS user's session is over.
    let ended = t.get("/me", Some(&cookies[2])).await;
    ended.assert_error(401, "unauthorized");
    answers.push(ended.text);

    // Another process rotates the data keys; the server then refreshes under the new key.
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let mut rotation = Rotation::begin(
        t.app.store().clone(),
        &t.master.try_clone().unwrap(),
        SystemClock::shared(),
    )
    .await
    .unwrap();
    let summary = rotation
        .run(
            &RotationOptions {
                batch_size: 10,
                grace: Duration::ZERO,
                reload_interval: Duration::ZERO,
                ..RotationOptions::default()
            },
            stopped,
            &|_| {},
        )
        .await
        .unwrap();
    assert!(summary.finished(), "{summary:?}");
    hand_outs.push(hand_out(subs[1].clone(), Some(json!({"min_ttl": 3600}))).await);

    let origin = t.url.clone();
    let gone = t
        .post(
            "/disconnect",
            Some(&cookies[0]),
            &[XRW, ("origin", &origin)],
        )
        .await;
    ok(&gone, 204);
    answers.push(gone.text);
    t.app.shutdown().await;

    // Keys: the master key as configured and as raw bytes, and every data key the store holds.
    secret("the master key (base64)", master_text.as_bytes());
    let raw = STANDARD.decode(master_text).unwrap();
    secret("the master key (hex)", hex::encode(&raw).as_bytes());
    secret("the master key (raw)", &raw);
    let data_keys = t.app.store().data_keys().await.unwrap();
    assert!(!data_keys.is_empty());
    for k in data_keys {
        let key = t.master.unwrap_key(KeyId(k.id), &k.wrapped).unwrap();
        secret("a data key (hex)", hex::encode(key.as_slice()).as_bytes());
        secret(
            "a data key (base64)",
            STANDARD.encode(key.as_slice()).as_bytes(),
        );
        secret("a data key (raw)", key.as_slice());
    }
    let client = t.emulator.web_client();
    secret(
        "the client secret",
        client.client_secret.expose_secret().as_bytes(),
    );

    let mut access_tokens = Vec::new();
    for email in &emails {
        let a = t
            .emulator_call("GET", &format!("tokens?email={email}"), None)
            .await;
        ok(&a, 200);
        let list = |kind: &str| -> Vec<String> {
            a.body[kind]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        let (access, refresh, id) = (
            list("access_tokens"),
            list("refresh_tokens"),
            list("id_tokens"),
        );
        assert!(
            !access.is_empty() && refresh.len() == 1 && !id.is_empty(),
            "{email}: {}",
            a.text
        );
        for r in refresh {
            secret("a refresh token", r.as_bytes());
        }
        for i in id {
            secret("an ID token", i.as_bytes());
        }
        access_tokens.extend(access);
    }
    // Three sign-ins, two forced refreshes (one before, one after the rotation).
    assert!(access_tokens.len() >= 5, "{access_tokens:?}");
    Run {
        subs,
        answers,
        hand_outs,
        access_tokens,
        secrets,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Checks the logs, the answers and `stored` (what the database holds, as bytes or text).
fn assert_no_leak(run: &Run, stored_name: &str, stored: &[u8], also_hex: bool) {
    let logs = captured_logs();
    assert!(
        logs.contains("signed in"),
        "logs were not captured at trace level"
    );
    // The searches find what is there: subs are stored and logged as they are.
    for sub in &run.subs {
        assert!(contains(stored, sub.as_bytes()), "no sub in {stored_name}");
        assert!(logs.contains(sub.as_str()), "no sub in the logs");
    }
    let access = run
        .access_tokens
        .iter()
        .map(|t| ("an access token".to_owned(), t.as_bytes().to_vec()));
    for (what, value) in run.secrets.iter().cloned().chain(access.clone()) {
        let mut needles = vec![value.clone()];
        // A bytea column is text as `\x` and hex.
        if also_hex {
            needles.push(hex::encode(&value).into_bytes());
        }
        for needle in &needles {
            assert!(
                !contains(stored, needle),
                "{what} ({} bytes) is in {stored_name}",
                value.len()
            );
        }
        assert!(
            !contains(logs.as_bytes(), &value),
            "{what} ({} bytes) is in the logs",
            value.len()
        );
        for a in &run.answers {
            assert!(
                !contains(a.as_bytes(), &value),
                "{what} is in a response body"
            );
        }
    }
    // The hand-outs carry access tokens, and nothing else secret.
    for (what, value) in &run.secrets {
        for a in &run.hand_outs {
            assert!(!contains(a.as_bytes(), value), "{what} is in a hand-out");
        }
    }
    assert!(
        run.hand_outs
            .iter()
            .all(|a| run.access_tokens.iter().any(|t| a.contains(t.as_str()))),
        "a hand-out without an access token the emulator issued"
    );
}

#[tokio::test]
async fn a_full_run_on_sqlite_leaks_nothing() {
    let (t, master_text) = start(None).await;
    let run = run(&t, &master_text, "sqlite").await;
    let mut stored = Vec::new();
    let mut files = Vec::new();
    for name in ["grantkeeper.db", "grantkeeper.db-wal"] {
        let path = t.db_dir().join(name);
        if path.exists() {
            stored.extend(std::fs::read(&path).unwrap());
            files.push(name);
        }
    }
    assert!(
        files.contains(&"grantkeeper.db") && stored.len() > 4096,
        "the database files were not found"
    );
    assert_no_leak(&run, "the SQLite files", &stored, false);
}

#[tokio::test]
async fn a_full_run_on_postgres_leaks_nothing() {
    let Some(database) = TestDatabase::migrated().await else {
        return;
    };
    let (t, master_text) = start(Some(database.url.clone())).await;
    let run = run(&t, &master_text, "postgres").await;
    let mut conn = database.raw().await;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema()",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(tables.iter().any(|t| t == "grants"), "{tables:?}");
    let mut dump = String::new();
    for table in &tables {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT t::text FROM {} t",
            grantkeeper_testkit::postgres::quoted(table)
        )))
        .fetch_all(&mut conn)
        .await
        .unwrap();
        for row in rows {
            dump.push_str(&row);
            dump.push('\n');
        }
    }
    assert!(dump.len() > 1024, "the rows were not read: {dump}");
    assert_no_leak(&run, "the PostgreSQL rows", dump.as_bytes(), true);
}
