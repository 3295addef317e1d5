//! The `grantkeeper` binary as an operator runs it: `dev` end to end, a restart on the same
//! data dir, `serve` refusing a bad configuration, `check` and `migrate`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[path = "cli/crash.rs"]
mod crash;
#[path = "cli/examples.rs"]
mod examples;
#[path = "cli/instances.rs"]
mod instances;
#[path = "cli/jobs.rs"]
mod jobs;
#[path = "cli/keys.rs"]
mod keys;
#[path = "cli/listings.rs"]
mod listings;
#[path = "cli/master_keys.rs"]
mod master_keys;
#[path = "cli/revocations.rs"]
mod revocations;

const BIN: &str = env!("CARGO_BIN_EXE_grantkeeper");

/// A running `grantkeeper` process, killed when dropped.
struct Running {
    child: Child,
    url: String,
    stdout: Vec<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends SIGTERM and asserts the process exits cleanly in time: it stops serving, then waits
/// at most `grantkeeper_server::workers::STOP_WAIT` (5 s) for its background tasks.
fn terminate(mut running: Running) {
    let status = Command::new("kill")
        .args(["-TERM", &running.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let waited = grantkeeper_core::Stopwatch::start();
    let exit = loop {
        if let Some(exit) = running.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit}");
}

/// Starts the binary and waits for its `listening on` line.
fn start(args: &[&str]) -> Running {
    start_with_env(args, &[])
}

/// [`start`], with these environment variables set.
#[allow(clippy::zombie_processes)] // `Running` kills and waits for the child when dropped
fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Running {
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout = Vec::new();
    loop {
        let line = lines
            .next()
            .expect("the process ended before listening")
            .unwrap();
        stdout.push(line.clone());
        if let Some(url) = line.strip_prefix("listening on ") {
            // Keep reading, or a later write to a full pipe would block the process.
            std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
            return Running {
                child,
                url: url.to_owned(),
                stdout,
            };
        }
    }
}

fn run(args: &[&str]) -> (bool, String) {
    run_with_env(args, &[])
}

/// [`run`], with these environment variables set.
fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs the binary with stdout and stderr apart: (success, stdout, stderr).
fn run_split(args: &[&str]) -> (bool, String, String) {
    run_split_with_env(args, &[])
}

/// [`run_split`], with these environment variables set.
fn run_split_with_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The stdout of a sweep or of `jobs run`: every line JSON, one per user, then the summary,
/// last.
fn user_lines(stdout: &str) -> (Vec<Value>, Value) {
    let mut lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    let summary = lines.pop().expect("a summary line");
    assert!(
        lines.iter().all(|l| l.get("sub").is_some()),
        "one line per user before the summary: {stdout}"
    );
    (lines, summary["summary"].clone())
}

/// Sends SIGINT (a Ctrl-C) to a process the test started.
fn interrupt(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Writes `text` to `path`, readable by its owner alone (as a master key file must be).
fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The permission bits of `path`.
fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn sign_in(
    http: &reqwest::Client,
    url: &str,
    data_dir: &Path,
    email: &str,
) -> (Value, String) {
    let secret: Value = serde_json::from_str(
        &std::fs::read_to_string(data_dir.join("client_secret.json")).unwrap(),
    )
    .unwrap();
    let client_id = secret["web"]["client_id"].as_str().unwrap();
    let minted: Value = http
        .post(format!("{url}/_google/_emulator/codes"))
        .json(
            &json!({"email": email, "client_id": client_id, "scope": "openid email profile https://www.googleapis.com/auth/drive.appdata",
                      "redirect_uri": "postmessage", "access_type": "offline"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = http
        .post(format!("{url}/authcode"))
        .header("x-requested-with", "XmlHttpRequest")
        .header("origin", url)
        .header("content-type", "application/octet-stream")
        .body(minted["code"].as_str().unwrap().to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        !r.headers()
            .get("set-cookie")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("Secure"),
        "dev serves plain HTTP"
    );
    (r.json().await.unwrap(), cookie)
}

#[tokio::test]
async fn dev_serves_the_page_signs_in_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let http = client();

    let dev = start(&["dev", "--addr", "127.0.0.1:0", "--data-dir", data_arg]);
    assert!(
        !dev.url.ends_with(":0"),
        "the bound port is printed: {}",
        dev.url
    );
    let api_key = std::fs::read_to_string(data.join("dev-api-key")).unwrap();
    assert!(
        dev.stdout.iter().any(|l| l.contains(api_key.trim())),
        "the dev API key is printed"
    );
    for file in ["master.key", "dev-api-key", "client_secret.json"] {
        let mode = std::fs::metadata(data.join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{file} has mode {mode:o}");
    }
    assert!(data.join("grantkeeper.db").exists());

    let page = http
        .get(format!("{}/", dev.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Sign in with Google"));
    let (answer, cookie) = sign_in(&http, &dev.url, &data, "alice@example.com").await;
    assert_eq!(answer["user"]["email"], "alice@example.com");
    assert_eq!(answer["offline_access"], true);
    let me: Value = http
        .get(format!("{}/me", dev.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"]["sub"], answer["user"]["sub"]);

    // The page's offline demo: the server reads and writes the user's Drive app folder through
    // the broker, and runs the offline job for the user now.
    let demo = |method: &str, path: &str| {
        http.request(method.parse().unwrap(), format!("{}{path}", dev.url))
            .header("cookie", &cookie)
            .header("x-requested-with", "XmlHttpRequest")
    };
    let added: Value = demo("POST", "/demo/files")
        .json(&json!({"name": "notes.txt", "content": "hello"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(added["status"], 200, "{added}");
    let files: Value = demo("GET", "/demo/files")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(files["result"]["files"][0]["name"], "notes.txt", "{files}");
    let job: Value = demo("POST", "/demo/offline-job")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["refreshed"], true, "{job}");
    assert_eq!(job["files"], 1, "{job}");

    // `check` and `migrate` work on the running dev deployment.
    let (ok, text) = run(&["check", "--data-dir", data_arg]);
    assert!(ok, "{text}");
    assert_eq!(text.matches("ok ").count(), 4, "{text}");
    let (ok, text) = run(&["migrate", "--data-dir", data_arg]);
    assert!(ok, "{text}");

    // SIGTERM stops it cleanly, its background work finished within the bound; a restart
    // keeps the users, the session and the emulator's grants.
    terminate(dev);
    let dev = start(&["dev", "--addr", "127.0.0.1:0", "--data-dir", data_arg]);
    let me = http
        .get(format!("{}/me", dev.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let (again, _) = sign_in(&http, &dev.url, &data, "alice@example.com").await;
    assert_eq!(again["user"]["sub"], answer["user"]["sub"]);
    assert_eq!(
        again["offline_access"], true,
        "the refresh token from before the restart is kept"
    );
}

/// `dev` refuses an address others can reach unless the operator names the risk; exposed, its
/// emulator still takes control calls from its own origin only, and delivers security events
/// to the deployment's own receiver only.
#[tokio::test]
async fn dev_listens_on_loopback_unless_the_emulator_control_is_exposed_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let (ok, text) = run(&["dev", "--addr", "0.0.0.0:0", "--data-dir", data_arg]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("--expose-emulator-control") && text.contains("0.0.0.0:0"),
        "{text}"
    );
    assert!(!data.exists(), "nothing is made before the refusal");
    let (ok, help) = run(&["dev", "--help"]);
    assert!(ok && help.contains("--expose-emulator-control"), "{help}");

    let dev = start(&[
        "dev",
        "--addr",
        "0.0.0.0:0",
        "--data-dir",
        data_arg,
        "--expose-emulator-control",
    ]);
    let http = client();
    let control = format!("{}/_google/_emulator", dev.url);
    let minted = http
        .post(format!("{control}/codes"))
        .header("origin", "https://evil.example")
        .json(&json!({"email": "victim@example.com", "scope": "openid email"}))
        .send()
        .await
        .unwrap();
    assert_eq!(minted.status(), 403);
    let minted = http
        .post(format!("{control}/codes"))
        .header("content-type", "text/plain")
        .body(r#"{"email": "victim@example.com", "scope": "openid email"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(minted.status(), 415);
    let event = |receiver: Option<&str>| {
        let mut body = json!({"email": "victim@example.com", "event": "sessions-revoked"});
        if let Some(r) = receiver {
            body["receiver"] = json!(r);
        }
        body
    };
    let foreign = http
        .post(format!("{control}/risc"))
        .json(&event(Some("http://192.0.2.1/risc")))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    let own: Value = http
        .post(format!("{control}/risc"))
        .json(&event(None))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(own["receiver_status"], 202, "{own}");
}

#[test]
fn serve_refuses_to_start_without_credentials_or_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("grantkeeper.toml");
    let config_arg = config.to_str().unwrap();

    std::fs::write(&config, "[vault]\nmaster_key_file = \"master.key\"\n").unwrap();
    let (ok, text) = run(&["serve", "--config", config_arg]);
    assert!(!ok);
    assert!(text.contains("provider.client_secret_file"), "{text}");

    std::fs::write(
        &config,
        "[provider]\nclient_id = \"x.apps.googleusercontent.com\"\nclient_secret = \"GOCSPX-s\"\n",
    )
    .unwrap();
    let (ok, text) = run(&["serve", "--config", config_arg]);
    assert!(!ok);
    assert!(text.contains("vault.master_key_file"), "{text}");
    assert!(
        !text.contains("GOCSPX-s"),
        "the secret is not echoed: {text}"
    );

    std::fs::write(&config, "[server]\nadress = \"typo\"\n").unwrap();
    let (ok, text) = run(&["serve", "--config", config_arg]);
    assert!(!ok);
    assert!(text.contains("adress"), "{text}");

    let (ok, text) = run(&[
        "serve",
        "--config",
        dir.path().join("missing.toml").to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(text.contains("does not exist"), "{text}");
}

/// `check` warns of a PostgreSQL database on another host reached without certificate
/// verification, naming the host and the fix, never the URL's password; `verify-full` and a
/// loopback database are not warned of.
#[test]
fn check_warns_of_a_database_reached_without_certificate_checks() {
    let dir = tempfile::tempdir().unwrap();
    write_private(
        &dir.path().join("master.key"),
        "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=\n",
    );
    let config = dir.path().join("grantkeeper.toml");
    let config_arg = config.to_str().unwrap();
    let password = "pg-s3cr3t-passw0rd";
    // Nothing listens on port 1: every check fails at once, and the warning comes first.
    let write = |url: &str| {
        std::fs::write(
            &config,
            format!(
                "[provider]\nissuer = \"http://127.0.0.1:1\"\nclient_id = \"x\"\n\
                 client_secret = \"GOCSPX-s\"\n[store]\nurl = {url:?}\n\
                 [vault]\nmaster_key_file = \"master.key\"\n"
            ),
        )
        .unwrap();
    };
    write(&format!("postgres://gk:{password}@0.0.0.0:1/gk"));
    let (ok, text) = run(&["check", "--config", config_arg]);
    assert!(!ok, "{text}");
    let warning = text
        .lines()
        .find(|l| l.starts_with("warn  configuration: store.url"))
        .unwrap_or_else(|| panic!("no warning: {text}"));
    assert!(warning.contains("on 0.0.0.0"), "{warning}");
    assert!(warning.contains("sslmode=verify-full"), "{warning}");
    assert!(!text.contains(password), "the password was printed: {text}");

    for quiet in [
        format!("postgres://gk:{password}@0.0.0.0:1/gk?sslmode=verify-full"),
        format!("postgres://gk:{password}@127.0.0.1:1/gk"),
    ] {
        write(&quiet);
        let (ok, text) = run(&["check", "--config", config_arg]);
        assert!(!ok, "{text}");
        assert!(!text.contains("warn  configuration"), "{quiet}: {text}");
        assert!(!text.contains(password), "the password was printed: {text}");
    }
}

/// `limits.trust_forwarded_for = true` took the client's address from the left-most
/// X-Forwarded-For entry: `serve` refuses it, naming `trusted_proxies`.
#[test]
fn serve_refuses_the_old_trust_forwarded_for() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("grantkeeper.toml");
    std::fs::write(
        &config,
        "[provider]\nclient_id = \"x\"\nclient_secret = \"GOCSPX-s\"\n\
         [limits]\ntrust_forwarded_for = true\n",
    )
    .unwrap();
    let (ok, text) = run(&["serve", "--config", config.to_str().unwrap()]);
    assert!(!ok);
    assert!(text.contains("limits.trust_forwarded_for"), "{text}");
    assert!(text.contains("trusted_proxies = ["), "{text}");
}

#[tokio::test]
async fn serve_runs_from_a_config_file_and_never_mounts_the_emulator() {
    let dir = tempfile::tempdir().unwrap();
    let emulator = start(&[
        "emulator",
        "--addr",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    // A key file other users may read is refused, saying how to fix it.
    std::fs::write(
        dir.path().join("master.key"),
        "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=\n",
    )
    .unwrap();
    std::fs::set_permissions(
        dir.path().join("master.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("grantkeeper.toml"),
        format!(
            "[server]\naddr = \"127.0.0.1:0\"\n[provider]\nissuer = {:?}\nclient_secret_file = \"client_secret.json\"\n\
             [store]\nurl = \"sqlite://gk.db\"\n[vault]\nmaster_key_file = \"master.key\"\n\
             [limits]\nauthcode_per_minute = 60\nauthcode_burst = 2\n",
            emulator.url
        ),
    )
    .unwrap();
    let config = dir.path().join("grantkeeper.toml");
    let (ok, text) = run(&["serve", "--config", config.to_str().unwrap()]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("vault.master_key_file")
            && text.contains("(mode 0644)")
            && text.contains("chmod 600"),
        "{text}"
    );
    assert!(!dir.path().join("gk.db").exists(), "nothing was started");
    std::fs::set_permissions(
        dir.path().join("master.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let serve = start(&["serve", "--config", config.to_str().unwrap()]);
    for file in ["gk.db", "gk.db-wal", "gk.db-shm"] {
        assert_eq!(mode_of(&dir.path().join(file)), 0o600, "{file}");
    }
    let http = client();
    assert_eq!(
        http.get(format!("{}/readyz", serve.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    for path in [
        "/_google/.well-known/openid-configuration",
        "/_emulator/stats",
        "/",
    ] {
        let r = http
            .get(format!("{}{path}", serve.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    // The per-IP sign-in limit sees the peer's address: the third attempt within the burst of
    // two is refused before the code is even looked at.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = http
            .post(format!("{}/authcode", serve.url))
            .header("x-requested-with", "XmlHttpRequest")
            .header("content-type", "application/octet-stream")
            .body("4/not-a-code")
            .send()
            .await
            .unwrap();
        statuses.push((r.status().as_u16(), r.headers().contains_key("retry-after")));
    }
    assert_eq!(
        statuses,
        [(400, false), (400, false), (429, true)],
        "{statuses:?}"
    );
    // The environment overrides the file.
    let (ok, text) = {
        let out = Command::new(BIN)
            .args([
                "check",
                "--config",
                dir.path().join("grantkeeper.toml").to_str().unwrap(),
            ])
            .env("GRANTKEEPER_VAULT__MASTER_KEY", "bm90IDMyIGJ5dGVz")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert!(!ok);
    assert!(text.contains("vault.master_key"), "{text}");
}

#[tokio::test]
async fn operators_manage_keys_users_audit_and_sweeps() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let http = client();
    let dev = start(&["dev", "--addr", "127.0.0.1:0", "--data-dir", data_arg]);
    let dev_key = std::fs::read_to_string(data.join("dev-api-key"))
        .unwrap()
        .trim()
        .to_owned();
    let mut subs = Vec::new();
    for i in 0..12 {
        let (answer, _) = sign_in(&http, &dev.url, &data, &format!("op{i:02}@example.com")).await;
        subs.push(answer["user"]["sub"].as_str().unwrap().to_owned());
    }
    // The dev API key works at once.
    let users = http
        .get(format!("{}/v1/users", dev.url))
        .bearer_auth(&dev_key)
        .send()
        .await
        .unwrap();
    assert_eq!(users.status(), 200);

    // A new key is printed once, alone on the last line, and works.
    let (ok, text) = run(&[
        "api-keys",
        "create",
        "--name",
        "photos",
        "--scope",
        "token",
        "--data-dir",
        data_arg,
    ]);
    assert!(ok, "{text}");
    let key = text.lines().last().unwrap().trim().to_owned();
    assert!(key.starts_with("gk_"), "{text}");
    let token = http
        .post(format!("{}/v1/users/{}/token", dev.url, subs[0]))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 200);
    let (ok, listing) = run(&["api-keys", "list", "--data-dir", data_arg]);
    assert!(
        ok && listing.contains("photos") && listing.contains("dev"),
        "{listing}"
    );
    assert!(
        !listing.contains(&key) && !listing.contains(&dev_key),
        "secrets are never listed"
    );
    let id = listing
        .lines()
        .find(|l| l.contains("photos"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();

    // The audit shows the hand-out, by key id, once the server's audit writer has written its
    // window (within a second).
    let shown = |audit: &str| {
        audit
            .lines()
            .any(|l| l.contains(&id) && l.contains("token") && l.contains("ok"))
    };
    let waited = grantkeeper_core::Stopwatch::start();
    let audit = loop {
        let (ok, audit) = run(&["audit", "--user", &subs[0], "--data-dir", data_arg]);
        assert!(ok, "{audit}");
        if shown(&audit) || waited.elapsed() > Duration::from_secs(10) {
            break audit;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(shown(&audit), "{audit}");
    let (ok, _) = run(&["audit", "--since", "1h", "--data-dir", data_arg]);
    assert!(ok);

    let (ok, text) = run(&["api-keys", "revoke", &id, "--data-dir", data_arg]);
    assert!(ok, "{text}");
    let (ok, text) = run(&["api-keys", "revoke", &id, "--data-dir", data_arg]);
    assert!(!ok, "revoking twice fails: {text}");

    // Users.
    let (ok, list) = run(&["users", "list", "--data-dir", data_arg]);
    assert!(ok, "{list}");
    assert_eq!(
        list.lines().filter(|l| l.contains("@example.com")).count(),
        12,
        "{list}"
    );
    let (ok, show) = run(&["users", "show", &subs[1], "--data-dir", data_arg]);
    assert!(
        ok && show.contains("op01@example.com") && show.contains("active"),
        "{show}"
    );

    // A sweep refreshes every grant; to a pipe it writes JSON lines and nothing else, one per
    // user and a summary, and tells a person the counts on stderr.
    let (ok, sweep, told) = run_split(&[
        "sweep",
        "--job",
        "refresh",
        "--concurrency",
        "4",
        "--data-dir",
        data_arg,
    ]);
    assert!(ok, "{sweep}{told}");
    let (events, summary) = user_lines(&sweep);
    assert_eq!(events.len(), 12, "{sweep}");
    assert!(events.iter().all(|e| e["outcome"] == "ok"), "{sweep}");
    assert_eq!(summary["counts"]["ok"], 12, "{sweep}");
    assert_eq!(summary["run"]["finished"], true, "{sweep}");
    assert_eq!(summary["run"]["counts"]["ok"], 12, "{sweep}");
    assert!(
        told.lines()
            .any(|l| l.split_whitespace().take(3).eq(["whole", "run", "12"])),
        "summary for people: {told}"
    );
    let stats: Value = http
        .get(format!("{}/_google/_emulator/stats", dev.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["refreshes"], 12);

    // Revoking a user's grant from the command line revokes it at Google.
    let (ok, text) = run(&["users", "revoke", &subs[2], "--data-dir", data_arg]);
    assert!(ok, "{text}");
    let stats: Value = http
        .get(format!("{}/_google/_emulator/stats", dev.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["revocations"], 1);
    let (_, show) = run(&["users", "show", &subs[2], "--data-dir", data_arg]);
    assert!(show.contains("revoked"), "{show}");
    let (ok, sweep, told) = run_split(&["sweep", "--job", "drive-appdata", "--data-dir", data_arg]);
    assert!(ok, "{sweep}{told}");
    let (events, _) = user_lines(&sweep);
    assert_eq!(
        events.iter().filter(|e| e["outcome"] == "ok").count(),
        11,
        "{sweep}"
    );
    assert_eq!(
        events.iter().filter(|e| e["outcome"] == "skipped").count(),
        1,
        "{sweep}"
    );
}

/// An export holds every sealed token and wrapped key: it is written readable by its owner
/// alone, a file it replaces too.
#[test]
fn an_export_is_readable_by_its_owner_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    drop(start(&[
        "dev",
        "--addr",
        "127.0.0.1:0",
        "--data-dir",
        data_arg,
    ]));
    let fresh = dir.path().join("fresh.jsonl");
    let replaced = dir.path().join("replaced.jsonl");
    std::fs::write(&replaced, "old\n").unwrap();
    std::fs::set_permissions(&replaced, std::fs::Permissions::from_mode(0o644)).unwrap();
    for output in [&fresh, &replaced] {
        let (ok, text) = run(&[
            "export",
            "--output",
            output.to_str().unwrap(),
            "--data-dir",
            data_arg,
        ]);
        assert!(ok, "{text}");
        assert_eq!(mode_of(output), 0o600, "{}", output.display());
        assert!(
            std::fs::read_to_string(output)
                .unwrap()
                .contains("data_key")
        );
    }
}
