//! Several grantkeeper processes on one PostgreSQL database: one refresh per grant across
//! instances, sweeps that split the users, a key rotation that outpaces both servers, and
//! moving a deployment between stores.

use super::keys::{FAST_RELOAD, keep_signing_in};
use super::{BIN, Running, client, run, run_with_env, start, write_private};
use grantkeeper_testkit::postgres::TestDatabase;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Numbers the config files of one test.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// A standalone emulator keeping its state (and the deployments' client_secret.json) in `dir`.
pub(crate) fn start_emulator(dir: &Path) -> Running {
    start(&[
        "emulator",
        "--addr",
        "127.0.0.1:0",
        "--data-dir",
        dir.to_str().unwrap(),
    ])
}

/// A config file pointing a deployment at `store_url`, beside a standalone emulator.
pub(crate) fn deployment(dir: &Path, emulator_url: &str, store_url: &str) -> String {
    write_private(
        &dir.join("master.key"),
        "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=\n",
    );
    let config = dir.join(format!(
        "grantkeeper-{}.toml",
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::write(
        &config,
        format!(
            "[server]\naddr = \"127.0.0.1:0\"\n[provider]\nissuer = {emulator_url:?}\napi_base = {emulator_url:?}\n\
             client_secret_file = \"client_secret.json\"\n[store]\nurl = {store_url:?}\n\
             [vault]\nmaster_key_file = \"master.key\"\n[broker]\nrefresh_concurrency = 64\n\
             [limits]\nauthcode_per_minute = 0\nv1_per_second = 0\n"
        ),
    )
    .unwrap();
    config.to_str().unwrap().to_owned()
}

async fn emulator_json(
    http: &reqwest::Client,
    emulator: &str,
    method: &str,
    path: &str,
    body: Value,
) -> Value {
    http.request(
        method.parse().unwrap(),
        format!("{emulator}/_emulator/{path}"),
    )
    .json(&body)
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap_or(Value::Null)
}

/// The OAuth client of the client_secret.json in `dir` (a `dev` data dir, or the emulator's
/// of the deployments there).
pub(crate) fn client_id(dir: &Path) -> String {
    let secret: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("client_secret.json")).unwrap())
            .unwrap();
    secret["web"]["client_id"].as_str().unwrap().to_owned()
}

/// Consents as `email` at the emulator (`openid email`) and hands the code to `server`: its
/// answer.
async fn authcode(
    http: &reqwest::Client,
    emulator: &str,
    client_id: &str,
    server: &str,
    email: &str,
) -> reqwest::Response {
    authcode_for(http, emulator, client_id, server, email, "openid email").await
}

/// [`authcode`], consenting to `scope`.
pub(crate) async fn authcode_for(
    http: &reqwest::Client,
    emulator: &str,
    client_id: &str,
    server: &str,
    email: &str,
    scope: &str,
) -> reqwest::Response {
    let code: Value = http
        .post(format!("{emulator}/_emulator/codes"))
        .json(
            &json!({"email": email, "client_id": client_id, "scope": scope,
                      "redirect_uri": "postmessage", "access_type": "offline"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    http.post(format!("{server}/authcode"))
        .header("x-requested-with", "test")
        .header("content-type", "text/plain")
        .body(code["code"].as_str().unwrap().to_owned())
        .send()
        .await
        .unwrap()
}

/// Signs `n` users in through `server` (32 at a time); returns their subs.
async fn sign_in_many(
    http: &reqwest::Client,
    emulator: &str,
    dir: &Path,
    server: &str,
    prefix: &str,
    n: usize,
) -> Vec<String> {
    let client_id = client_id(dir);
    let mut subs = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (http, emulator, server, client_id) = (
            http.clone(),
            emulator.to_owned(),
            server.to_owned(),
            client_id.clone(),
        );
        let email = format!("{prefix}{i:05}@example.com");
        tasks.spawn(async move {
            let r = authcode(&http, &emulator, &client_id, &server, &email).await;
            assert_eq!(r.status(), 200);
            let body: Value = r.json().await.unwrap();
            body["user"]["sub"].as_str().unwrap().to_owned()
        });
        while tasks.len() >= 32 {
            subs.push(tasks.join_next().await.unwrap().unwrap());
        }
    }
    while let Some(s) = tasks.join_next().await {
        subs.push(s.unwrap());
    }
    subs
}

#[tokio::test]
async fn two_instances_on_one_database_refresh_a_grant_once() {
    let Some(db) = TestDatabase::empty().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let emulator = start_emulator(dir.path());
    let config = deployment(dir.path(), &emulator.url, &db.url);
    let a = start(&["serve", "--config", &config]);
    let b = start(&["serve", "--config", &config]);
    let http = client();
    let (ok, text) = run(&[
        "api-keys", "create", "--name", "svc", "--scope", "token", "--config", &config,
    ]);
    assert!(ok, "{text}");
    let key = text.lines().last().unwrap().trim().to_owned();

    // The held token expires a second after sign-in.
    emulator_json(
        &http,
        &emulator.url,
        "PUT",
        "settings",
        json!({"access_token_ttl_secs": 2}),
    )
    .await;
    let sub = sign_in_many(&http, &emulator.url, dir.path(), &a.url, "stampede", 1)
        .await
        .remove(0);
    emulator_json(
        &http,
        &emulator.url,
        "PUT",
        "settings",
        json!({"access_token_ttl_secs": 3600}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..500 {
        let server = if i % 2 == 0 {
            a.url.clone()
        } else {
            b.url.clone()
        };
        let (http, key, sub) = (http.clone(), key.clone(), sub.clone());
        tasks.spawn(async move {
            let r = http
                .post(format!("{server}/v1/users/{sub}/token"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            (status, body["access_token"].as_str().map(str::to_owned))
        });
    }
    let mut tokens = std::collections::HashSet::new();
    while let Some(r) = tasks.join_next().await {
        let (status, token) = r.unwrap();
        assert_eq!(status, 200);
        tokens.insert(token.unwrap());
    }
    let stats = emulator_json(&http, &emulator.url, "GET", "stats", Value::Null).await;
    assert_eq!(stats["refreshes"], 1, "{stats}");
    assert_eq!(tokens.len(), 1);
}

#[tokio::test]
async fn a_sqlite_deployment_moves_to_postgres_and_back() {
    let Some(db) = TestDatabase::empty().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let emulator = start_emulator(dir.path());
    let sqlite = deployment(dir.path(), &emulator.url, "sqlite://from.db");
    let http = client();
    let (subs, revoked) = {
        let server = start(&["serve", "--config", &sqlite]);
        let subs = sign_in_many(&http, &emulator.url, dir.path(), &server.url, "move", 30).await;
        sign_in_many(&http, &emulator.url, dir.path(), &server.url, "hijacked", 1).await;
        // Google disables one account as hijacked: its sign-in is blocked from now on.
        let event = emulator_json(
            &http,
            &emulator.url,
            "POST",
            "risc",
            json!({"email": "hijacked00000@example.com", "event": "account-disabled",
                   "reason": "hijacking", "receiver": format!("{}/risc", server.url)}),
        )
        .await;
        assert_eq!(event["receiver_status"], 202, "{event}");
        let revoked = sign_in_many(&http, &emulator.url, dir.path(), &server.url, "revoked", 1)
            .await
            .remove(0);
        (subs, revoked)
    };
    // Another grant is revoked while Google cannot revoke it: its revocation waits in the
    // queue, which moves with the deployment.
    emulator_json(
        &http,
        &emulator.url,
        "PUT",
        "faults",
        json!({"revoke": {"error_rate": 1.0, "status": 503}}),
    )
    .await;
    let (ok, text) = run(&["users", "revoke", &revoked, "--config", &sqlite]);
    assert!(ok && text.contains("queued"), "{text}");
    emulator_json(&http, &emulator.url, "PUT", "faults", json!({})).await;
    let (ok, text) = run(&[
        "api-keys", "create", "--name", "svc", "--scope", "token", "--config", &sqlite,
    ]);
    assert!(ok, "{text}");
    let key = text.lines().last().unwrap().trim().to_owned();

    let export = dir.path().join("export.jsonl");
    let (ok, text) = run(&[
        "export",
        "--output",
        export.to_str().unwrap(),
        "--config",
        &sqlite,
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains("1 queued revocations") && text.contains("1 sign-in blocks"),
        "{text}"
    );
    let postgres = deployment(dir.path(), &emulator.url, &db.url);
    let (ok, text) = run(&[
        "import",
        "--input",
        export.to_str().unwrap(),
        "--config",
        &postgres,
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains("already present") && text.contains("imported"),
        "{text}"
    );
    // Again: nothing new, and at the default log level nothing of PostgreSQL's notices about
    // the schema already being there.
    let (ok, text) = run_with_env(
        &[
            "import",
            "--input",
            export.to_str().unwrap(),
            "--config",
            &postgres,
        ],
        &[("RUST_LOG", "info")],
    );
    assert!(ok, "{text}");
    assert!(text.contains("imported 0 rows"), "{text}");
    assert!(!text.contains("already exists"), "{text}");

    // The moved grants still refresh, and the moved API key still works.
    let server = start(&["serve", "--config", &postgres]);
    for sub in &subs {
        let r = http
            .post(format!("{}/v1/users/{sub}/token", server.url))
            .bearer_auth(&key)
            .json(&json!({"min_ttl": 3600}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let stats = emulator_json(&http, &emulator.url, "GET", "stats", Value::Null).await;
    assert_eq!(stats["refreshes"], 30);
    assert_eq!(stats["revocations"], 0, "{stats}");
    // The block moved: the hijacked account still cannot sign in.
    let refused = authcode(
        &http,
        &emulator.url,
        &client_id(dir.path()),
        &server.url,
        "hijacked00000@example.com",
    )
    .await;
    assert_eq!(refused.status(), 403);
    // The queued revocation moved, its token still opening under the moved keys: this server
    // retries it once it is due (about 10 s after the failure) and Google revokes the grant.
    let waited = grantkeeper_core::Stopwatch::start();
    loop {
        let stats = emulator_json(&http, &emulator.url, "GET", "stats", Value::Null).await;
        if stats["revocations"] == 1 {
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(90),
            "the moved revocation was never retried: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // And back: PostgreSQL -> a new SQLite file holds the same rows.
    let back = dir.path().join("back.jsonl");
    let (ok, text) = run(&[
        "export",
        "--output",
        back.to_str().unwrap(),
        "--config",
        &postgres,
    ]);
    assert!(ok, "{text}");
    // The revocation went through: nothing left to queue; the block holds.
    assert!(
        text.contains("0 queued revocations") && text.contains("1 sign-in blocks"),
        "{text}"
    );
    let sqlite_again = deployment(dir.path(), &emulator.url, "sqlite://back.db");
    let (ok, text) = run(&[
        "import",
        "--input",
        back.to_str().unwrap(),
        "--config",
        &sqlite_again,
    ]);
    assert!(ok, "{text}");
    let (ok, list) = run(&["users", "list", "--config", &sqlite_again]);
    assert!(ok);
    assert_eq!(
        list.lines().filter(|l| l.contains("@example.com")).count(),
        32,
        "{list}"
    );
}

/// Emails refreshed so far, by count.
async fn refreshes_by_email(http: &reqwest::Client, emulator: &str) -> HashMap<String, u64> {
    let stats = emulator_json(http, emulator, "GET", "stats", Value::Null).await;
    stats["refreshes_by_email"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

/// A sweep process; `lease` is how soon a peer continues its batches if it dies.
fn sweep_process(config: &str, lease: &str) -> std::process::Child {
    Command::new(BIN)
        .args([
            "sweep",
            "--job",
            "refresh",
            "--concurrency",
            "16",
            "--batch-lease",
            lease,
            "--config",
            config,
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The users a sweep reported (its JSON lines but the summary), read to the end while the
/// process runs: a pipe nobody reads fills up and stops the process at its next line.
fn collect(child: std::process::Child) -> std::thread::JoinHandle<(bool, usize)> {
    std::thread::spawn(move || {
        let out = child.wait_with_output().unwrap();
        let lines = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("{\"") && !l.starts_with("{\"summary\""))
            .count();
        (out.status.success(), lines)
    })
}

const USERS: usize = 5000;

#[tokio::test]
async fn sweeps_split_the_users_and_survive_a_killed_peer() {
    let Some(db) = TestDatabase::empty().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let emulator = start_emulator(dir.path());
    let config = deployment(dir.path(), &emulator.url, &db.url);
    let server = start(&["serve", "--config", &config]);
    let http = client();
    let subs = sign_in_many(
        &http,
        &emulator.url,
        dir.path(),
        &server.url,
        "sweep",
        USERS,
    )
    .await;
    assert_eq!(subs.len(), USERS);

    // Two sweeps at once: every user refreshed exactly once, by one of them.
    let (x, y) = (
        collect(sweep_process(&config, "30s")),
        collect(sweep_process(&config, "30s")),
    );
    let ((x_ok, x_lines), (y_ok, y_lines)) = (x.join().unwrap(), y.join().unwrap());
    assert!(x_ok && y_ok);
    assert_eq!(x_lines + y_lines, USERS);
    assert!(
        x_lines > 0 && y_lines > 0,
        "both took part: {x_lines} and {y_lines}"
    );
    let counts = refreshes_by_email(&http, &emulator.url).await;
    assert_eq!(counts.len(), USERS);
    assert!(
        counts.values().all(|&n| n == 1),
        "someone was refreshed twice"
    );

    // A new run, with one sweep killed with SIGKILL midway: the other finishes all the rest once
    // the dead one's batch lease runs out.
    emulator_json(
        &http,
        &emulator.url,
        "PUT",
        "faults",
        json!({"token": {"latency_ms": 5}}),
    )
    .await;
    let mut doomed = sweep_process(&config, "3s");
    let survivor = collect(sweep_process(&config, "3s"));
    {
        use std::io::BufRead;
        let mut out = std::io::BufReader::new(doomed.stdout.take().unwrap()).lines();
        for _ in 0..300 {
            out.next().unwrap().unwrap();
        }
    }
    Command::new("kill")
        .args(["-KILL", &doomed.id().to_string()])
        .status()
        .unwrap();
    let _ = doomed.wait();
    let (survivor_ok, _) = survivor.join().unwrap();
    assert!(survivor_ok);
    let counts = refreshes_by_email(&http, &emulator.url).await;
    assert!(
        counts.values().all(|&n| n >= 2),
        "every user was refreshed in the second run too"
    );
    // Only what the dead one had done but not yet saved is done again.
    let again = counts.values().filter(|&&n| n > 2).count();
    assert!(
        again < 500,
        "{again} users refreshed twice in the second run"
    );
}

/// As `keys::a_rotation_that_outpaces_the_server_loses_nothing`, with two `serve` processes on
/// one PostgreSQL database taking sign-ins in turn: nothing is left under the
/// retired key, every sign-in succeeds, and a third server started afterwards opens every value.
#[tokio::test]
async fn a_rotation_that_outpaces_two_servers_loses_nothing() {
    let Some(db) = TestDatabase::empty().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let emulator = start_emulator(dir.path());
    let config = deployment(dir.path(), &emulator.url, &db.url);
    let a = start(&["serve", "--config", &config]);
    let b = start(&["serve", "--config", &config]);
    let http = client();
    let (ok, text) = run(&[
        "api-keys", "create", "--name", "svc", "--scope", "token", "--config", &config,
    ]);
    assert!(ok, "{text}");
    let key = text.lines().last().unwrap().trim().to_owned();
    let mut subs = sign_in_many(&http, &emulator.url, dir.path(), &a.url, "first", 10).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writing = {
        let (http, emulator, client_id) =
            (http.clone(), emulator.url.clone(), client_id(dir.path()));
        tokio::spawn(keep_signing_in(
            vec![a.url.clone(), b.url.clone()],
            move |server, email| {
                let (http, emulator, client_id) =
                    (http.clone(), emulator.clone(), client_id.clone());
                Box::pin(async move {
                    let r = authcode(&http, &emulator, &client_id, &server, &email).await;
                    let status = r.status().as_u16();
                    let body: Value = r.json().await.unwrap();
                    (
                        status,
                        body["user"]["sub"].as_str().unwrap_or_default().to_owned(),
                    )
                })
            },
            stop.clone(),
        ))
    };
    let rotate = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            run_with_env(
                &["keys", "rotate", "--grace", "2s", "--config", &config],
                FAST_RELOAD,
            )
        })
    };
    let (ok, out) = rotate.await.unwrap();
    assert!(ok, "{out}");
    assert!(out.contains("rotation to key 2 finished"), "{out}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let during = writing.await.unwrap();
    assert!(
        during.len() > 5,
        "users signed in meanwhile: {}",
        during.len()
    );
    subs.extend(during);

    let (ok, listing) = run(&["keys", "list", "--config", &config]);
    assert!(ok, "{listing}");
    let rows: Vec<Vec<&str>> = listing
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{listing}");
    assert_eq!(
        (rows[0][0], rows[0][2], rows[0][4], rows[1][2]),
        ("1", "no", "0", "yes"),
        "key 1 retired, sealing nothing: {listing}"
    );
    assert_ne!(rows[0][3], "-", "{listing}");
    let c = start(&["serve", "--config", &config]);
    for sub in &subs {
        let r = http
            .post(format!("{}/v1/users/{sub}/token", c.url))
            .bearer_auth(&key)
            .json(&json!({"min_ttl": 3600}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
}

/// Asks `server` for `sub`'s token with `key` every 50 ms until the answer's status is not
/// 200; that status and how long it took. Gives up after 5 s.
async fn until_refused(
    http: &reqwest::Client,
    server: &str,
    key: &str,
    sub: &str,
) -> (u16, Duration) {
    let started = grantkeeper_core::Stopwatch::start();
    loop {
        let status = http
            .post(format!("{server}/v1/users/{sub}/token"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status != 200 || started.elapsed() > Duration::from_secs(5) {
            return (status, started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A key revoked, a user disconnected or deleted, or a grant revoked by a security event
/// through one instance is honoured by the other within 2 s: it refuses the key and stops
/// handing out the token it had cached.
#[tokio::test]
async fn drops_reach_every_instance_within_two_seconds() {
    let Some(db) = TestDatabase::empty().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let emulator = start_emulator(dir.path());
    let config = deployment(dir.path(), &emulator.url, &db.url);
    let a = start(&["serve", "--config", &config]);
    let b = start(&["serve", "--config", &config]);
    let http = client();
    let create = |name: &str, scopes: &[&str]| {
        let mut args = vec!["api-keys", "create", "--name", name, "--config", &config];
        for scope in scopes {
            args.extend(["--scope", scope]);
        }
        let (ok, text) = run(&args);
        assert!(ok, "{text}");
        text.lines().last().unwrap().trim().to_owned()
    };
    let key = create("svc", &["token", "users:write"]);
    let doomed = create("doomed", &["token"]);
    let client_id = client_id(dir.path());
    let mut subs = Vec::new();
    let mut cookies = Vec::new();
    for who in ["leaves", "deleted", "hijacked"] {
        let email = format!("{who}@example.com");
        let r = authcode(&http, &emulator.url, &client_id, &a.url, &email).await;
        assert_eq!(r.status(), 200);
        let cookie = r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let body: Value = r.json().await.unwrap();
        subs.push(body["user"]["sub"].as_str().unwrap().to_owned());
        cookies.push(cookie);
    }
    // B holds each token and both keys in memory.
    for sub in &subs {
        for k in [&key, &doomed] {
            let r = http
                .post(format!("{}/v1/users/{sub}/token", b.url))
                .bearer_auth(k)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    }

    // A key revoked by an operator.
    let (ok, text) = run(&["api-keys", "list", "--json", "--config", &config]);
    assert!(ok, "{text}");
    let id = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|k| k["name"] == "doomed")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // At the default log level, and nothing of PostgreSQL's notices (`relation
    // "_sqlx_migrations" already exists, skipping`) on the operator's terminal.
    let (ok, text) = run_with_env(
        &["api-keys", "revoke", &id, "--config", &config],
        &[("RUST_LOG", "info")],
    );
    assert!(ok, "{text}");
    assert!(
        !text.contains("already exists") && !text.contains("skipping"),
        "{text}"
    );
    let (status, took) = until_refused(&http, &b.url, &doomed, &subs[0]).await;
    println!("a revoked key refused by the other instance after {took:?}");
    assert_eq!(status, 401, "after {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");

    // The user disconnects through A.
    let r = http
        .post(format!("{}/disconnect", a.url))
        .header("cookie", &cookies[0])
        .header("x-requested-with", "test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (status, took) = until_refused(&http, &b.url, &key, &subs[0]).await;
    println!("a disconnect honoured by the other instance after {took:?}");
    assert_eq!(status, 409, "after {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");

    // A service deletes a user through A.
    let r = http
        .delete(format!("{}/v1/users/{}", a.url, subs[1]))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (status, took) = until_refused(&http, &b.url, &key, &subs[1]).await;
    println!("a deletion honoured by the other instance after {took:?}");
    assert_eq!(status, 404, "after {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");

    // Google says the account's tokens were revoked; A receives the event.
    let event = emulator_json(
        &http,
        &emulator.url,
        "POST",
        "risc",
        json!({"email": "hijacked@example.com", "event": "tokens-revoked",
                "receiver": format!("{}/risc", a.url)}),
    )
    .await;
    assert_eq!(event["receiver_status"], 202, "{event}");
    let (status, took) = until_refused(&http, &b.url, &key, &subs[2]).await;
    println!("a security event honoured by the other instance after {took:?}");
    assert_eq!(status, 409, "after {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}
