//! A sign-in storm against a `serve` process killed with SIGKILL at random moments and
//! restarted: every sign-in answered 200 kept its refresh token (design invariant 1), and a
//! grant whose refresh token was issued but never committed is marked `needs_consent` and
//! repaired by one consenting sign-in.

use super::instances::deployment;
use super::{BIN, client, run};
use grantkeeper_testkit::postgres::TestDatabase;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::time::Instant;

const SIGN_INS: usize = 300;
const CONCURRENCY: usize = 16;
/// Sign-in `i` starts no earlier than `i * PACE` after the storm begins (about 21 s in all).
const PACE: Duration = Duration::from_millis(70);
/// Attempts per email, each with a fresh code, while the server is down or restarting.
const ATTEMPTS: usize = 3;

/// A `serve` process, killed with SIGKILL when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    /// Starts `serve`, waits for its `listening on` line and keeps its stdout drained.
    #[allow(clippy::zombie_processes)] // `Drop` kills and waits for the child
    fn start(config: &str) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", "--config", config])
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("serve ended before listening").unwrap();
            if let Some(url) = line.strip_prefix("listening on ") {
                break url.to_owned();
            }
        };
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        Server { child, url }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // `Child::kill` sends SIGKILL.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How one email's sign-in ended.
#[derive(Debug, Clone)]
struct Outcome {
    /// The last HTTP status, `None` when every attempt failed to connect.
    status: Option<u16>,
    needs_consent: bool,
    /// Kills done when the 200 arrived.
    kills_at_success: usize,
}

async fn mint(
    http: &reqwest::Client,
    emulator: &str,
    client_id: &str,
    email: &str,
    consent: bool,
) -> String {
    let mut body = json!({"email": email, "client_id": client_id,
        "scope": "openid email profile https://www.googleapis.com/auth/drive.appdata",
        "redirect_uri": "postmessage", "access_type": "offline"});
    if consent {
        body["prompt"] = json!("consent");
    }
    let minted: Value = http
        .post(format!("{emulator}/_emulator/codes"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    minted["code"].as_str().unwrap().to_owned()
}

/// POSTs a code as a web client; `Err` on a connection error.
async fn post_code(
    http: &reqwest::Client,
    server: &str,
    code: String,
) -> Result<(u16, Value), reqwest::Error> {
    let r = http
        .post(format!("{server}/authcode"))
        .header("x-requested-with", "XmlHttpRequest")
        .header("content-type", "application/octet-stream")
        .body(code)
        .send()
        .await?;
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(Value::Null);
    Ok((status, body))
}

/// A hand-out that forces a refresh at the emulator with the held refresh token.
async fn hand_out(http: &reqwest::Client, server: &str, key: &str, sub: &str) -> (u16, Value) {
    let r = http
        .post(format!("{server}/v1/users/{sub}/token"))
        .bearer_auth(key)
        .json(&json!({"min_ttl": 3600}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A small seeded generator, so that the kill schedule is the same on every run.
fn kill_schedule(seed: u64, n: usize) -> Vec<Duration> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            Duration::from_millis(1000 + (x >> 33) % 2000)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_survive_a_server_killed_at_random_moments_on_sqlite() {
    storm("sqlite://crash.db").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_survive_a_server_killed_at_random_moments_on_postgres() {
    let Some(db) = TestDatabase::empty().await else {
        return;
    };
    storm(&db.url).await;
}

/// Runs the storm against a deployment on `store_url` and checks what the store kept.
async fn storm(store_url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let emulator = super::start(&[
        "emulator",
        "--addr",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    let emu = emulator.url.clone();
    let secret: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("client_secret.json")).unwrap(),
    )
    .unwrap();
    let client_id = secret["web"]["client_id"].as_str().unwrap().to_owned();
    let config = deployment(dir.path(), &emu, store_url);
    let http = client();

    // Slow code exchanges, so that kills often land while one is in flight: the emulator has
    // then issued a refresh token the dead server never committed.
    let r = http
        .put(format!("{emu}/_emulator/faults"))
        .json(&json!({"token": {"latency_ms": 40}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    let first = Server::start(&config);
    let url = Arc::new(RwLock::new(first.url.clone()));
    let server = Arc::new(Mutex::new(Some(first)));
    let kills = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));

    // The killer: SIGKILL on a fixed pseudo-random schedule, then a new process on the same config.
    let killer = {
        let (url, server, kills, done, config) = (
            url.clone(),
            server.clone(),
            kills.clone(),
            done.clone(),
            config.clone(),
        );
        tokio::spawn(async move {
            for pause in kill_schedule(0x6b69_6c6c, 64) {
                tokio::time::sleep(pause).await;
                if done.load(Ordering::SeqCst) {
                    break;
                }
                let (server, url, config, kills) =
                    (server.clone(), url.clone(), config.clone(), kills.clone());
                tokio::task::spawn_blocking(move || {
                    drop(server.lock().unwrap().take());
                    kills.fetch_add(1, Ordering::SeqCst);
                    let next = Server::start(&config);
                    *url.write().unwrap() = next.url.clone();
                    *server.lock().unwrap() = Some(next);
                })
                .await
                .unwrap();
            }
        })
    };

    // The storm: 16 workers take the sign-ins in order, each paced on a fixed schedule.
    let next = Arc::new(AtomicUsize::new(0));
    let cut = Arc::new(AtomicUsize::new(0));
    // Paced on tokio's timer: the storm runs against real child processes killed meanwhile.
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (http, emu, client_id, url, next, kills, cut) = (
            http.clone(),
            emu.clone(),
            client_id.clone(),
            url.clone(),
            next.clone(),
            kills.clone(),
            cut.clone(),
        );
        workers.spawn(async move {
            let mut outcomes = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= SIGN_INS {
                    return outcomes;
                }
                tokio::time::sleep_until(start + PACE * u32::try_from(i).unwrap()).await;
                let email = format!("crash{i:04}@example.com");
                let mut outcome = Outcome {
                    status: None,
                    needs_consent: false,
                    kills_at_success: 0,
                };
                for _ in 0..ATTEMPTS {
                    let code = mint(&http, &emu, &client_id, &email, false).await;
                    let server = url.read().unwrap().clone();
                    match post_code(&http, &server, code).await {
                        Ok((status, body)) => {
                            outcome.status = Some(status);
                            if status == 200 {
                                outcome.needs_consent = body["needs_consent"] == true;
                                outcome.kills_at_success = kills.load(Ordering::SeqCst);
                                break;
                            }
                        }
                        Err(_) => {
                            cut.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(300)).await;
                        }
                    }
                }
                outcomes.push((email, outcome));
            }
        });
    }
    let mut outcomes: HashMap<String, Outcome> = HashMap::new();
    while let Some(w) = workers.join_next().await {
        outcomes.extend(w.unwrap());
    }
    done.store(true, Ordering::SeqCst);
    killer.await.unwrap();
    assert_eq!(outcomes.len(), SIGN_INS);

    let kills = kills.load(Ordering::SeqCst);
    assert!(kills >= 3, "only {kills} kills happened");
    let cut = cut.load(Ordering::SeqCst);
    assert!(cut > 0, "no sign-in was ever cut off by a kill");
    let ok: Vec<&Outcome> = outcomes
        .values()
        .filter(|o| o.status == Some(200))
        .collect();
    let before = ok.iter().filter(|o| o.kills_at_success == 0).count();
    let after = ok.iter().filter(|o| o.kills_at_success >= 1).count();
    assert!(
        before > 0 && after > 0,
        "sign-ins succeeded before ({before}) and after ({after}) the kills"
    );
    let other: Vec<u16> = outcomes
        .values()
        .filter_map(|o| o.status)
        .filter(|&s| s != 200)
        .collect();
    assert!(
        other.iter().all(|&s| s < 500 || s == 503),
        "statuses besides 200: {other:?}"
    );

    // A final healthy server.
    let server_url = url.read().unwrap().clone();
    let r = http
        .get(format!("{server_url}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .put(format!("{emu}/_emulator/faults"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let (created, text) = run(&[
        "api-keys",
        "create",
        "--name",
        "crash",
        "--scope",
        "token",
        "--scope",
        "users:read",
        "--config",
        &config,
    ]);
    assert!(created, "{text}");
    let key = text.lines().last().unwrap().trim().to_owned();

    // Every user the store holds, by email: (sub, grant state).
    let mut users: HashMap<String, (String, String)> = HashMap::new();
    let mut cursor = String::new();
    loop {
        let page: Value = http
            .get(format!("{server_url}/v1/users?limit=500&cursor={cursor}"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for u in page["users"].as_array().unwrap() {
            users.insert(
                u["user"]["email"].as_str().unwrap().to_owned(),
                (
                    u["user"]["sub"].as_str().unwrap().to_owned(),
                    u["grant"]["state"].as_str().unwrap().to_owned(),
                ),
            );
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    assert!(
        users.keys().all(|e| outcomes.contains_key(e)),
        "only the storm's emails exist"
    );

    // Hand-outs for every user the store holds as active, 16 at a time.
    let active: Vec<(String, String)> = users
        .iter()
        .filter(|(_, (_, state))| state == "active")
        .map(|(email, (sub, _))| (email.clone(), sub.clone()))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    let mut handed: HashMap<String, (u16, Value)> = HashMap::new();
    for (email, sub) in active {
        let (http, server_url, key) = (http.clone(), server_url.clone(), key.clone());
        tasks.spawn(async move { (email, hand_out(&http, &server_url, &key, &sub).await) });
        while tasks.len() >= CONCURRENCY {
            let (email, answer) = tasks.join_next().await.unwrap().unwrap();
            handed.insert(email, answer);
        }
    }
    while let Some(t) = tasks.join_next().await {
        let (email, answer) = t.unwrap();
        handed.insert(email, answer);
    }

    let mut needs_consent = Vec::new();
    let mut failed = 0;
    for (email, outcome) in &outcomes {
        let held = users.get(email);
        if outcome.status == Some(200) && !outcome.needs_consent {
            // Invariant 1: a 200 with offline access means the refresh token was committed.
            let (_, state) = held.unwrap_or_else(|| panic!("{email} got 200 but is missing"));
            assert_eq!(state, "active", "{email} got 200");
            let (status, body) = &handed[email];
            assert_eq!(*status, 200, "{email}: {body}");
        } else {
            if outcome.status != Some(200) {
                failed += 1;
            }
            match held.map(|(_, state)| state.as_str()) {
                None => assert_ne!(outcome.status, Some(200), "{email} got 200 but is missing"),
                Some("active") => {
                    let (status, body) = &handed[email];
                    assert_eq!(*status, 200, "{email}: {body}");
                }
                Some("needs_consent") => needs_consent.push(email.clone()),
                Some(state) => panic!("{email} is {state}: {outcome:?}"),
            }
        }
    }
    // A 200 that said needs_consent left the grant in that state.
    for (email, outcome) in &outcomes {
        if outcome.status == Some(200) && outcome.needs_consent {
            assert!(needs_consent.contains(email), "{email}");
        }
    }

    // One consenting sign-in repairs each of them.
    for email in &needs_consent {
        let (sub, _) = &users[email];
        let code = mint(&http, &emu, &client_id, email, true).await;
        let (status, body) = post_code(&http, &server_url, code).await.unwrap();
        assert_eq!(status, 200, "{email}: {body}");
        assert_eq!(body["needs_consent"], false, "{email}: {body}");
        assert_eq!(body["user"]["sub"], sub.as_str());
        let (status, body) = hand_out(&http, &server_url, &key, sub).await;
        assert_eq!(status, 200, "{email}: {body}");
    }

    println!(
        "crash storm on {}: {kills} kills, {cut} attempts cut off, {} sign-ins answered 200 \
         ({before} before the first kill, {after} after; {} of them needs_consent), \
         {failed} failed, {} users held, {} needs_consent repaired",
        store_url.split(':').next().unwrap(),
        ok.len(),
        ok.iter().filter(|o| o.needs_consent).count(),
        users.len(),
        needs_consent.len()
    );
    drop(server.lock().unwrap().take());
}
