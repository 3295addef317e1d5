//! `keys rotate` and `keys list` on the data dir of a running `grantkeeper dev`: the server
//! hands out tokens after the rotation without a restart; a rotation stopped with Ctrl-C
//! resumes without making a third key; a grace shorter than twice the reload interval is
//! refused; and a rotation that retires the old key while the server still seals under it
//! (its reload interval longer than the rotation was told) loses nothing, with one server and
//! with two (`instances`).

use super::{BIN, client, run, run_with_env, sign_in, start};
use futures_util::future::join_all;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

/// What a rotation is told of the servers: they read the keys every second.
pub(crate) const FAST_RELOAD: &[(&str, &str)] = &[("GRANTKEEPER_VAULT__RELOAD_INTERVAL", "1s")];

/// Signs `n` users in through the dev server, 16 at a time; returns their subs.
async fn sign_in_many(http: &reqwest::Client, url: &str, data: &Path, n: usize) -> Vec<String> {
    let mut subs = Vec::new();
    let emails: Vec<String> = (0..n).map(|i| format!("key{i:03}@example.com")).collect();
    for chunk in emails.chunks(16) {
        let answers = join_all(chunk.iter().map(|email| sign_in(http, url, data, email))).await;
        for (answer, _) in answers {
            subs.push(answer["user"]["sub"].as_str().unwrap().to_owned());
        }
    }
    subs
}

/// `keys list` as rows of cells (header left out).
fn key_rows(data_arg: &str) -> Vec<Vec<String>> {
    let (ok, listing) = run(&["keys", "list", "--data-dir", data_arg]);
    assert!(ok, "{listing}");
    let mut lines = listing.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        [
            "ID", "CREATED", "ACTIVE", "RETIRED", "VALUES", "WRAPPED", "BY"
        ],
        "{listing}"
    );
    lines
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// The id, active, retired (as `-` or a time) and values of each key.
fn keys_shown(rows: &[Vec<String>]) -> Vec<(String, String, bool, u64)> {
    rows.iter()
        .map(|r| {
            (
                r[0].clone(),
                r[2].clone(),
                r[3] != "-",
                r[4].parse().unwrap(),
            )
        })
        .collect()
}

async fn hand_out(http: &reqwest::Client, url: &str, key: &str, sub: &str, body: Value) -> Value {
    let r = http
        .post(format!("{url}/v1/users/{sub}/token"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let answer: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{answer}");
    answer
}

#[tokio::test]
async fn keys_rotate_while_the_server_runs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let http = client();
    let dev = start(&["dev", "--addr", "127.0.0.1:0", "--data-dir", data_arg]);
    let api_key = std::fs::read_to_string(data.join("dev-api-key"))
        .unwrap()
        .trim()
        .to_owned();
    let subs = sign_in_many(&http, &dev.url, &data, 20).await;
    for sub in &subs {
        hand_out(&http, &dev.url, &api_key, sub, json!({})).await;
    }
    let rows = key_rows(data_arg);
    assert_eq!(
        keys_shown(&rows),
        [("1".to_owned(), "yes".to_owned(), false, 40)],
        "a refresh and an access token per user: {rows:?}"
    );

    // No server writes meanwhile here, so old keys may be retired soon: the rotation is told the
    // servers read the keys every second.
    let (ok, out) = run_with_env(
        &[
            "keys",
            "rotate",
            "--batch-size",
            "7",
            "--grace",
            "2s",
            "--data-dir",
            data_arg,
        ],
        FAST_RELOAD,
    );
    assert!(ok, "{out}");
    assert!(out.contains("rotating to key 2 (from key 1)"), "{out}");
    let events: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let batches: Vec<&Value> = events.iter().filter(|e| e["event"] == "batch").collect();
    // 20 refresh tokens and 20 access tokens, 7 at a time.
    assert_eq!(batches.len(), 6, "{out}");
    assert_eq!(batches.last().unwrap()["done"], 40, "{out}");
    assert!(
        batches
            .iter()
            .all(|b| b["skipped"] == 0 && b["unreadable"] == 0),
        "{out}"
    );
    assert!(
        events.contains(&json!({"event": "verified", "pass": 1, "remaining": 0})),
        "{out}"
    );
    assert!(
        events.contains(&json!({"event": "retired", "key": 1})),
        "{out}"
    );
    assert!(out.contains("rotation to key 2 finished"), "{out}");

    // The server started before the rotation, with key 1 alone. A token that must last longer
    // than the held one makes it read the grant, open both tokens (sealed under key 2, which it
    // had not loaded) and refresh.
    for sub in &subs {
        let token = hand_out(&http, &dev.url, &api_key, sub, json!({"min_ttl": 3600})).await;
        assert!(token["access_token"].as_str().unwrap().starts_with("ya29."));
    }
    let rows = key_rows(data_arg);
    assert_eq!(
        keys_shown(&rows),
        [
            ("1".to_owned(), "no".to_owned(), true, 0),
            ("2".to_owned(), "yes".to_owned(), false, 40),
        ],
        "what the server sealed since is under key 2: {rows:?}"
    );
}

#[tokio::test]
async fn an_interrupted_rotation_resumes_without_a_third_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let http = client();
    let dev = start(&["dev", "--addr", "127.0.0.1:0", "--data-dir", data_arg]);
    let api_key = std::fs::read_to_string(data.join("dev-api-key"))
        .unwrap()
        .trim()
        .to_owned();
    let subs = sign_in_many(&http, &dev.url, &data, 150).await;

    // One value per batch, so that Ctrl-C lands midway.
    let mut child = Command::new(BIN)
        .args([
            "keys",
            "rotate",
            "--batch-size",
            "1",
            "--grace",
            "2s",
            "--data-dir",
            data_arg,
        ])
        .env("RUST_LOG", "warn")
        .envs(FAST_RELOAD.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = Vec::new();
    while !out.iter().any(|l: &String| l.starts_with('{')) {
        out.push(lines.next().unwrap().unwrap());
    }
    super::interrupt(&child);
    out.extend(lines.map_while(Result::ok));
    let exit = child.wait().unwrap();
    assert!(exit.success(), "a stopped rotation exits cleanly: {out:?}");
    let mut told = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut told).unwrap();
    assert!(
        told.starts_with("rotating to key 2 (from key 1)\n"),
        "{told}"
    );
    assert!(told.contains("interrupted"), "{told}");
    // Stdout is JSON lines only, the summary last.
    let events: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "summary", "{out:?}");
    assert_eq!(summary["interrupted"], true, "{out:?}");
    let done_first = out.iter().filter(|l| l.contains("\"batch\"")).count();
    assert!(done_first < 300, "stopped midway: {done_first}");

    let rows = key_rows(data_arg);
    let shown = keys_shown(&rows);
    assert_eq!(shown.len(), 2, "{rows:?}");
    assert_eq!(
        (shown[0].3 + shown[1].3, shown[0].2, shown[1].1.as_str()),
        (300, false, "yes"),
        "{rows:?}"
    );
    assert_eq!(shown[1].3, done_first as u64, "{rows:?}");

    let (ok, rest) = run_with_env(
        &["keys", "rotate", "--grace", "2s", "--data-dir", data_arg],
        FAST_RELOAD,
    );
    assert!(ok, "{rest}");
    assert!(
        rest.contains("resuming rotation to key 2 (from key 1)"),
        "{rest}"
    );
    assert!(rest.contains("rotation to key 2 finished"), "{rest}");
    let rows = key_rows(data_arg);
    assert_eq!(
        keys_shown(&rows),
        [
            ("1".to_owned(), "no".to_owned(), true, 0),
            ("2".to_owned(), "yes".to_owned(), false, 300),
        ],
        "no third key: {rows:?}"
    );
    // The running server opens what the two runs sealed.
    for sub in subs.iter().step_by(15) {
        hand_out(&http, &dev.url, &api_key, sub, json!({"min_ttl": 3600})).await;
    }
}

#[tokio::test]
async fn a_grace_shorter_than_twice_the_reload_interval_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let dev = start(&["dev", "--addr", "127.0.0.1:0", "--data-dir", data_arg]);
    drop(dev);
    for (grace, env, shortest) in [
        ("0s", &[][..], "60s"),
        ("59s", &[][..], "60s"),
        ("1s", FAST_RELOAD, "2s"),
    ] {
        let (ok, out) = run_with_env(
            &["keys", "rotate", "--grace", grace, "--data-dir", data_arg],
            env,
        );
        assert!(!ok, "{out}");
        assert!(
            out.contains("shorter than twice vault.reload_interval")
                && out.contains(&format!("--grace {shortest}")),
            "{out}"
        );
    }
    assert_eq!(
        keys_shown(&key_rows(data_arg)),
        [("1".to_owned(), "yes".to_owned(), false, 0)],
        "nothing was rotated"
    );
}

/// New users sign in on `servers`, in turn, without pause until `stop` turns true; every
/// answer must be 200. A sign-in opens no sealed value, so it does not lead a server to read
/// the keyring: only its periodic read, or the store's refusal, does. Returns the subs.
pub(crate) async fn keep_signing_in(
    servers: Vec<String>,
    sign_in: impl Fn(String, String) -> futures_util::future::BoxFuture<'static, (u16, String)>
    + Send
    + Sync
    + 'static,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<String> {
    let mut subs: Vec<String> = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let n = subs.len();
        let server = servers[n % servers.len()].clone();
        let (status, sub) = sign_in(server, format!("during{n:04}@example.com")).await;
        assert_eq!(status, 200, "a sign-in during the rotation");
        subs.push(sub);
    }
    subs
}

/// `keys rotate --grace 2s`, told the servers read the keys every second while the dev server
/// reads them every 30 s (as when an operator gets the interval wrong, or the server's reads
/// fail): the old key is retired while the server still seals under it, and users keep signing
/// in. The store refuses each value sealed under the old key and the server seals it again
/// under the new one: nothing is left under the retired key, every sign-in succeeds, and a
/// server started afresh (which loads only the keys not retired) opens every value.
#[tokio::test]
async fn a_rotation_that_outpaces_the_server_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap().to_owned();
    let http = client();
    let dev = start(&["dev", "--addr", "127.0.0.1:0", "--data-dir", &data_arg]);
    let api_key = std::fs::read_to_string(data.join("dev-api-key"))
        .unwrap()
        .trim()
        .to_owned();
    let mut subs = sign_in_many(&http, &dev.url, &data, 10).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writing = {
        let (data, http) = (data.clone(), http.clone());
        tokio::spawn(keep_signing_in(
            vec![dev.url.clone()],
            move |url, email| {
                let (data, http) = (data.clone(), http.clone());
                Box::pin(async move {
                    let (answer, _) = sign_in(&http, &url, &data, &email).await;
                    (200, answer["user"]["sub"].as_str().unwrap().to_owned())
                })
            },
            stop.clone(),
        ))
    };
    let rotate = {
        let data_arg = data_arg.clone();
        tokio::task::spawn_blocking(move || {
            run_with_env(
                &["keys", "rotate", "--grace", "2s", "--data-dir", &data_arg],
                FAST_RELOAD,
            )
        })
    };
    let (ok, out) = rotate.await.unwrap();
    assert!(ok, "{out}");
    assert!(out.contains("rotation to key 2 finished"), "{out}");
    // The server has not read the keys since: it goes on writing past the retirement.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let during = writing.await.unwrap();
    assert!(
        during.len() > 5,
        "users signed in meanwhile: {}",
        during.len()
    );
    subs.extend(during);

    let shown = keys_shown(&key_rows(&data_arg));
    assert_eq!(shown.len(), 2, "{shown:?}");
    assert_eq!(
        (shown[0].1.as_str(), shown[0].2, shown[0].3),
        ("no", true, 0),
        "key 1 retired, sealing nothing: {shown:?}"
    );
    // A server started now loads key 2 alone, and opens every value.
    drop(dev);
    let dev = start(&["dev", "--addr", "127.0.0.1:0", "--data-dir", &data_arg]);
    for sub in &subs {
        hand_out(&http, &dev.url, &api_key, sub, json!({"min_ttl": 3600})).await;
    }
    let (ok, again) = run_with_env(
        &["keys", "rotate", "--grace", "2s", "--data-dir", &data_arg],
        FAST_RELOAD,
    );
    // Every value opens: a rotation that met one that does not would keep key 2 and fail.
    assert!(
        ok && again.contains("rotation to key 3 finished"),
        "{again}"
    );
}
