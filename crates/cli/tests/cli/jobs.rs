//! `jobs run|list|show|cancel` as an operator runs them, on both stores: against `dev` (its
//! SQLite data dir) and against an emulator and `serve` on a PostgreSQL database (`--config`).
//! Every user's command runs once with the user's sub and a token of theirs in its environment
//! (never on a command line), at the asked concurrency and rate; an interrupted run resumes
//! without redoing users done, and one whose job is cancelled under it stops and fails; the
//! listings and a cancel; a sweep's run, a job too, interrupted and resumed, or cancelled.

use super::instances::{authcode_for, client_id, deployment, start_emulator};
use super::{BIN, Running, client, interrupt, run_split_with_env, start, user_lines};
use grantkeeper_testkit::postgres::TestDatabase;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::Duration;

/// Where the stories run: `dev` on a SQLite data dir, or a standalone emulator and `serve` on
/// a PostgreSQL database.
struct Deployment {
    dir: tempfile::TempDir,
    server: Running,
    /// The emulator's base URL (`dev` serves it under `/_google`).
    emulator: String,
    /// How a command names the deployment: `--data-dir DIR` or `--config FILE`.
    target: [String; 2],
    client_id: String,
    _emulator: Option<Running>,
    _db: Option<TestDatabase>,
}

impl Deployment {
    fn sqlite() -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let data_arg = data.to_str().unwrap().to_owned();
        let server = start(&["dev", "--addr", "127.0.0.1:0", "--data-dir", &data_arg]);
        let emulator = format!("{}/_google", server.url);
        Deployment {
            client_id: client_id(&data),
            dir,
            server,
            emulator,
            target: ["--data-dir".to_owned(), data_arg],
            _emulator: None,
            _db: None,
        }
    }

    /// None (and `skipped`, or a failure under CI) without a PostgreSQL server.
    async fn postgres() -> Option<Deployment> {
        let db = TestDatabase::empty().await?;
        let dir = tempfile::tempdir().unwrap();
        let emulator = start_emulator(dir.path());
        let config = deployment(dir.path(), &emulator.url, &db.url);
        // Keep-alive's own job would show in the listings: off, as `dev` has no keep-alive.
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str("[jobs]\nkeepalive_after = \"0s\"\n");
        std::fs::write(&config, text).unwrap();
        let server = start(&["serve", "--config", &config]);
        Some(Deployment {
            client_id: client_id(dir.path()),
            dir,
            server,
            emulator: emulator.url.clone(),
            target: ["--config".to_owned(), config],
            _emulator: Some(emulator),
            _db: Some(db),
        })
    }

    /// A scratch directory of the test's own.
    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `args` naming this deployment.
    fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = args.to_vec();
        all.extend(self.target.iter().map(String::as_str));
        all
    }

    /// Runs the binary on this deployment: (success, stdout, stderr).
    fn cmd(&self, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
        run_split_with_env(&self.args(args), env)
    }

    /// Signs `email` in, with drive.appdata granted; the user's sub.
    async fn sign_in(&self, http: &reqwest::Client, email: &str) -> String {
        let r = authcode_for(
            http,
            &self.emulator,
            &self.client_id,
            &self.server.url,
            email,
            &format!("openid email {APPDATA}"),
        )
        .await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        body["user"]["sub"].as_str().unwrap().to_owned()
    }

    /// The one running job, as `jobs list --state running --json` gives it.
    fn the_running_job(&self) -> Value {
        let (ok, listed, told) = self.cmd(&["jobs", "list", "--state", "running", "--json"], &[]);
        assert!(ok, "{told}");
        assert_eq!(listed.lines().count(), 1, "one job runs: {listed}");
        serde_json::from_str(listed.trim()).unwrap()
    }

    /// `jobs cancel` on the one running job, which must be of `kind`; its id.
    fn cancel_the_running_job(&self, kind: &str) -> String {
        let job = self.the_running_job();
        assert_eq!(job["kind"], kind, "{job}");
        let id = job["id"].as_u64().unwrap().to_string();
        let (ok, text, told) = self.cmd(&["jobs", "cancel", &id], &[]);
        assert!(ok, "{text}{told}");
        id
    }

    /// A new API key with the `jobs` scope.
    fn jobs_key(&self) -> String {
        let (ok, key, told) = self.cmd(
            &["api-keys", "create", "--name", "jobs", "--scope", "jobs"],
            &[],
        );
        assert!(ok, "{told}");
        key.lines().last().unwrap().trim().to_owned()
    }

    /// Sets the emulator's faults (`{}`: none).
    async fn faults(&self, http: &reqwest::Client, faults: Value) {
        let r = http
            .put(format!("{}/_emulator/faults", self.emulator))
            .json(&faults)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
}

/// The command of the tests: records, per run, its environment, its own and its parent's
/// command lines, its start time and how many runs were under way with it; prints to stdout
/// (which must not reach grantkeeper's JSON lines); works `$WORK_SECONDS`, then, given
/// `$WAIT_FOR`, until that file exists; fails for `$FAIL_SUB` with the token in its last line
/// of stderr.
const WORK: &str = r#"
f="$OUT_DIR/runs/$GRANTKEEPER_SUB.$$"
printf 'sub=%s\ntoken=%s\nexpires=%s\n' "$GRANTKEEPER_SUB" "$GRANTKEEPER_ACCESS_TOKEN" "$GRANTKEEPER_TOKEN_EXPIRES_AT" > "$f.env"
tr '\0' ' ' < /proc/$$/cmdline > "$f.argv"
tr '\0' ' ' < /proc/$PPID/cmdline >> "$f.argv"
date +%s.%N > "$f.start"
touch "$OUT_DIR/running/$$"
ls "$OUT_DIR/running" | wc -l >> "$OUT_DIR/concurrent"
echo "working for $GRANTKEEPER_SUB"
sleep "${WORK_SECONDS:-0}"
while [ -n "$WAIT_FOR" ] && [ ! -e "$WAIT_FOR" ]; do sleep 0.05; done
rm -f "$OUT_DIR/running/$$"
if [ "$GRANTKEEPER_SUB" = "$FAIL_SUB" ]; then
  echo "first line" >&2
  echo "boom with $GRANTKEEPER_ACCESS_TOKEN" >&2
  exit 3
fi
"#;

/// A directory for the command's records, and the command line running the script.
fn workdir(root: &Path) -> (std::path::PathBuf, String) {
    let out = root.join("work");
    std::fs::create_dir_all(out.join("runs")).unwrap();
    std::fs::create_dir_all(out.join("running")).unwrap();
    let script = root.join("work.sh");
    std::fs::write(&script, WORK).unwrap();
    (out, format!("sh {}", script.display()))
}

/// One run of the command: its environment (`sub`, `token`, `expires`) and its command lines.
type Run = (BTreeMap<String, String>, String);

/// The runs recorded, by sub.
fn runs(out: &Path) -> BTreeMap<String, Vec<Run>> {
    let mut runs: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for entry in std::fs::read_dir(out.join("runs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("env") {
            continue;
        }
        let env: BTreeMap<String, String> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let argv = std::fs::read_to_string(path.with_extension("argv")).unwrap_or_default();
        runs.entry(env["sub"].clone())
            .or_default()
            .push((env, argv));
    }
    runs
}

/// A command of the binary under way (killed when dropped): its stdout read as the test
/// needs it, its stderr kept for the end.
struct Started {
    child: Child,
    lines: std::io::Lines<BufReader<ChildStdout>>,
    /// Its stdout's lines read so far.
    read: Vec<String>,
}

impl Started {
    /// Starts the binary with `args` and `env`, and reads the first `n` lines of its stdout.
    fn reading(args: &[&str], env: &[(&str, &str)], n: usize) -> Started {
        let mut child = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut started = Started {
            child,
            lines,
            read: Vec::new(),
        };
        while started.read.len() < n {
            let line = started.lines.next().expect("the command ended early");
            started.read.push(line.unwrap());
        }
        started
    }

    /// Reads its stdout to the end and waits for it: its exit, its whole stdout, its stderr.
    fn finish(&mut self) -> (ExitStatus, String, String) {
        self.read.extend(self.lines.by_ref().map_while(Result::ok));
        let exit = self.child.wait().unwrap();
        let mut told = String::new();
        std::io::Read::read_to_string(&mut self.child.stderr.take().unwrap(), &mut told).unwrap();
        (exit, self.read.join("\n"), told)
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const APPDATA: &str = "https://www.googleapis.com/auth/drive.appdata";

#[tokio::test]
async fn jobs_run_gives_each_user_s_command_a_token_in_its_environment_on_sqlite() {
    each_user_s_command_gets_a_token(&Deployment::sqlite()).await;
}

#[tokio::test]
async fn jobs_run_gives_each_user_s_command_a_token_in_its_environment_on_postgres() {
    if let Some(d) = Deployment::postgres().await {
        each_user_s_command_gets_a_token(&d).await;
    }
}

async fn each_user_s_command_gets_a_token(d: &Deployment) {
    let http = client();
    let mut subs = Vec::new();
    for i in 0..6 {
        subs.push(d.sign_in(&http, &format!("run{i}@example.com")).await);
    }
    let (ok, _, told) = d.cmd(&["users", "revoke", &subs[5]], &[]);
    assert!(ok, "{told}");
    let (out, exec) = workdir(d.root());
    let out_arg = out.to_str().unwrap();
    let args = [
        "jobs",
        "run",
        "--scope",
        APPDATA,
        "--exec",
        &exec,
        "--concurrency",
        "2",
        "--rate",
        "10/s",
    ];
    let args = d.args(&args);
    let env = [
        ("OUT_DIR", out_arg),
        ("FAIL_SUB", subs[4].as_str()),
        ("WORK_SECONDS", "0.3"),
    ];
    let (ok, stdout, told) = run_split_with_env(&args, &env);
    assert!(ok, "{stdout}{told}");

    // stdout: JSON lines alone (the command's own stdout went to stderr), one per user.
    let (lines, summary) = user_lines(&stdout);
    assert!(told.contains("working for"), "{told}");
    let outcome_of = |sub: &str| {
        lines
            .iter()
            .filter(|l| l["sub"] == sub)
            .map(|l| l["outcome"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    for sub in &subs[..4] {
        assert_eq!(outcome_of(sub), ["done"], "{stdout}");
    }
    assert_eq!(outcome_of(&subs[4]), ["failed"], "{stdout}");
    // The revoked grant was skipped as the job was made: counted, not worked on.
    assert!(outcome_of(&subs[5]).is_empty(), "{stdout}");
    assert_eq!(
        summary["run"]["progress"]["skipped_by"]["revoked"], 1,
        "{stdout}"
    );
    let failed = lines.iter().find(|l| l["sub"] == subs[4].as_str()).unwrap();
    assert_eq!(failed["detail"], "boom with [token]", "the token is masked");
    assert_eq!(lines.last().unwrap()["done"], 6, "{stdout}");
    assert!(lines.iter().all(|l| l["total"] == 6), "{stdout}");
    assert_eq!(
        summary["counts"],
        json!({"done": 4, "retry": 0, "failed": 1, "skipped": 0}),
        "{stdout}"
    );
    assert_eq!(summary["resumed"], false);
    assert_eq!(summary["interrupted"], false);
    assert_eq!(summary["run"]["state"], "finished", "{stdout}");
    assert_eq!(summary["run"]["kind"], "run");
    let job_id = summary["job"].as_u64().unwrap();

    // Each usable user's command ran once, with the user's own token, valid for a while; the
    // token was on no command line.
    let runs = runs(&out);
    assert_eq!(
        runs.len(),
        5,
        "the revoked user's command never ran: {runs:?}"
    );
    for sub in &subs[..5] {
        let user_runs = &runs[sub];
        assert_eq!(user_runs.len(), 1, "{sub} ran once");
        let (env, argv) = &user_runs[0];
        let token = &env["token"];
        assert!(!token.is_empty());
        assert!(!argv.is_empty() && argv.contains("work.sh"), "{argv}");
        assert!(
            !argv.contains(token.as_str()),
            "the token is on a command line: {argv}"
        );
        assert!(!stdout.contains(token.as_str()) && !told.contains(token.as_str()));
        let info: Value = http
            .get(format!("{}/tokeninfo", d.emulator))
            .query(&[("access_token", token)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(info["sub"], sub.as_str(), "{info}");
        assert!(info["expires_in"].as_str().unwrap().parse::<i64>().unwrap() > 300);
        let expires = time::OffsetDateTime::parse(
            &env["expires"],
            &time::format_description::well_known::Rfc3339,
        );
        assert!(expires.is_ok(), "{env:?}");
    }
    // At most two at once, and at most ten started a second.
    let concurrent: Vec<u32> = std::fs::read_to_string(out.join("concurrent"))
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert!(concurrent.iter().all(|n| *n <= 2), "{concurrent:?}");
    assert!(concurrent.contains(&2), "two ran at once: {concurrent:?}");
    let mut starts: Vec<f64> = std::fs::read_dir(out.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("start"))
        .map(|p| std::fs::read_to_string(p).unwrap().trim().parse().unwrap())
        .collect();
    starts.sort_by(f64::total_cmp);
    // Commands are started 100 ms apart; each records its start once its shell runs, which a
    // loaded machine delays by a varying few tens of ms. So any two starts k apart are at least
    // k x 100 ms apart, less one such delay (without the rate, all five start within a few ms).
    for (i, a) in starts.iter().enumerate() {
        for (k, b) in starts.iter().skip(i + 1).enumerate() {
            let spaced = (k + 1) as f64 * 0.1 - 0.08;
            assert!(b - a >= spaced, "started at most 10 a second: {starts:?}");
        }
    }

    // The listings: a table for people and the API's job objects for scripts.
    let (ok, table, told) = d.cmd(&["jobs", "list"], &[]);
    assert!(ok, "{told}");
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID", "NAME", "KIND", "STATE", "DONE", "FAILED", "SKIPPED", "TOTAL", "CREATED"
        ]
    );
    let row = table.lines().nth(1).unwrap();
    assert!(
        row.starts_with(&format!("{job_id} ")) && row.contains("run") && row.contains("finished"),
        "{table}"
    );
    let (ok, listed, _) = d.cmd(&["jobs", "list", "--json"], &[]);
    assert!(ok);
    let listed: Vec<Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], job_id);
    assert_eq!(listed[0]["progress"]["done"], 4);
    assert_eq!(listed[0]["progress"]["failed"], 1);
    assert_eq!(listed[0]["progress"]["skipped_by"]["revoked"], 1);
    let (ok, none, _) = d.cmd(&["jobs", "list", "--state", "running"], &[]);
    assert!(ok);
    assert_eq!(none.lines().count(), 1, "the header alone: {none}");

    let (ok, shown, _) = d.cmd(&["jobs", "show", &job_id.to_string()], &[]);
    assert!(ok, "{shown}");
    assert!(
        shown.contains("boom with [token]") && shown.contains(&subs[4]),
        "{shown}"
    );
    assert!(
        shown.contains(&subs[5]) && shown.contains("revoked"),
        "{shown}"
    );
    let (ok, shown, _) = d.cmd(&["jobs", "show", &job_id.to_string(), "--json"], &[]);
    assert!(ok);
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["failures"].as_array().unwrap().len(), 2, "{shown}");
    let (ok, _, told) = d.cmd(&["jobs", "show", "999"], &[]);
    assert!(!ok && told.contains("no job has the id 999"), "{told}");

    // The same command again, the job being finished: a new job, every usable user again.
    let (ok, stdout, told) = run_split_with_env(&args, &[("OUT_DIR", out_arg)]);
    assert!(ok, "{told}");
    let (_, summary) = user_lines(&stdout);
    assert_eq!(summary["resumed"], false);
    assert_ne!(summary["job"], job_id);
    assert_eq!(summary["counts"]["done"], 5, "{stdout}");
}

#[tokio::test]
async fn an_interrupted_jobs_run_resumes_without_redoing_users_done_on_sqlite() {
    interrupted_run_resumes(&Deployment::sqlite()).await;
}

#[tokio::test]
async fn an_interrupted_jobs_run_resumes_without_redoing_users_done_on_postgres() {
    if let Some(d) = Deployment::postgres().await {
        interrupted_run_resumes(&d).await;
    }
}

async fn interrupted_run_resumes(d: &Deployment) {
    let http = client();
    let mut subs = Vec::new();
    for i in 0..20 {
        subs.push(d.sign_in(&http, &format!("rs{i:02}@example.com")).await);
    }
    let (out, exec) = workdir(d.root());
    let out_arg = out.to_str().unwrap();
    let args = [
        "jobs",
        "run",
        "--scope",
        APPDATA,
        "--exec",
        &exec,
        "--name",
        "nightly",
        "--concurrency",
        "2",
    ];
    let args = d.args(&args);
    let env = [("OUT_DIR", out_arg), ("WORK_SECONDS", "0.3")];
    let mut run = Started::reading(&args, &env, 4);
    interrupt(&run.child);
    let (exit, first, told) = run.finish();
    assert!(exit.success(), "a stopped run exits cleanly: {told}");
    assert!(told.contains("interrupted"), "{told}");
    let (done_first, summary) = user_lines(&first);
    assert_eq!(summary["interrupted"], true, "{first}");
    assert_eq!(summary["run"]["state"], "running", "{first}");
    assert!(done_first.len() < 20, "stopped midway: {first}");
    assert!(done_first.iter().all(|l| l["outcome"] == "done"));

    // The stopped job still runs, holding nobody: the rerun joins it.
    assert_eq!(d.the_running_job()["kind"], "run");

    let (ok, rest, told) = run_split_with_env(&args, &[("OUT_DIR", out_arg)]);
    assert!(ok, "{rest}{told}");
    assert!(told.contains("resuming job"), "{told}");
    let (done_rest, summary) = user_lines(&rest);
    assert_eq!(summary["resumed"], true, "{rest}");
    assert_eq!(summary["run"]["state"], "finished", "{rest}");
    assert_eq!(summary["run"]["progress"]["done"], 20, "{rest}");
    assert_eq!(done_first.len() + done_rest.len(), 20, "{first} {rest}");
    assert_eq!(done_rest.last().unwrap()["done"], 20, "{rest}");
    // Every user's command ran exactly once across both runs.
    let runs = runs(&out);
    assert_eq!(runs.len(), 20);
    for sub in &subs {
        assert_eq!(runs[sub].len(), 1, "{sub} ran {} times", runs[sub].len());
    }
}

#[tokio::test]
async fn jobs_cancel_stops_a_job_on_sqlite() {
    cancel_stops_a_job(&Deployment::sqlite()).await;
}

#[tokio::test]
async fn jobs_cancel_stops_a_job_on_postgres() {
    if let Some(d) = Deployment::postgres().await {
        cancel_stops_a_job(&d).await;
    }
}

async fn cancel_stops_a_job(d: &Deployment) {
    let http = client();
    for i in 0..3 {
        d.sign_in(&http, &format!("cx{i}@example.com")).await;
    }
    let key = d.jobs_key();
    let url = &d.server.url;
    let made: Value = http
        .post(format!("{url}/v1/jobs"))
        .bearer_auth(&key)
        .json(&json!({"name": "backup"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = made["id"].as_u64().unwrap().to_string();
    let (ok, text, told) = d.cmd(&["jobs", "cancel", &id], &[]);
    assert!(ok, "{told}");
    assert!(
        text.contains(&format!("cancelled job {id} (backup)")),
        "{text}"
    );
    let job: Value = http
        .get(format!("{url}/v1/jobs/{id}"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["state"], "cancelled", "{job}");
    let claim: Value = http
        .post(format!("{url}/v1/jobs/{id}/claim"))
        .bearer_auth(&key)
        .json(&json!({"max": 10}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(claim["items"], json!([]), "nothing more is handed out");
    let (ok, _, told) = d.cmd(&["jobs", "cancel", &id], &[]);
    assert!(!ok && told.contains("cancelled already"), "{told}");
    let (ok, _, told) = d.cmd(&["jobs", "cancel", "424242"], &[]);
    assert!(!ok && told.contains("no job has the id 424242"), "{told}");
}

#[tokio::test]
async fn a_jobs_run_whose_job_is_cancelled_stops_and_fails_on_sqlite() {
    cancelled_run(&Deployment::sqlite()).await;
}

#[tokio::test]
async fn a_jobs_run_whose_job_is_cancelled_stops_and_fails_on_postgres() {
    if let Some(d) = Deployment::postgres().await {
        cancelled_run(&d).await;
    }
}

/// `jobs cancel` from another process on the job of a `jobs run` under way: the run starts no
/// more commands, lets the two running finish and reports them, gives back the users it had
/// claimed ahead, says that the job was cancelled and exits with status 1; the same command
/// then makes a new job.
async fn cancelled_run(d: &Deployment) {
    let http = client();
    for i in 0..20 {
        d.sign_in(&http, &format!("cr{i:02}@example.com")).await;
    }
    let (out, exec) = workdir(d.root());
    let go = out.join("go");
    let (out_arg, go_arg) = (out.to_str().unwrap(), go.to_str().unwrap());
    let args = [
        "jobs",
        "run",
        "--scope",
        APPDATA,
        "--exec",
        &exec,
        "--name",
        "digest",
        "--concurrency",
        "2",
    ];
    let args = d.args(&args);
    // Two commands start and work until `go` exists.
    let mut run = Started::reading(&args, &[("OUT_DIR", out_arg), ("WAIT_FOR", go_arg)], 0);
    let running = || std::fs::read_dir(out.join("running")).unwrap().count();
    for _ in 0..400 {
        if running() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(running(), 2, "two commands at work");

    let id = d.cancel_the_running_job("run");
    // Past the longest the run trusts the job's state it last read (a quarter of a second),
    // the two commands end: their places free, and no other user may start in them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(&go, "").unwrap();

    let (exit, stdout, told) = run.finish();
    assert_eq!(exit.code(), Some(1), "a cancelled job's run fails: {told}");
    assert!(
        told.contains(&format!("job {id} (digest) was cancelled")),
        "{told}"
    );
    assert!(!told.contains("interrupted"), "{told}");
    let (lines, summary) = user_lines(&stdout);
    assert_eq!(runs(&out).len(), 2, "no command started after the cancel");
    assert_eq!(lines.len(), 2, "both reported: {stdout}");
    assert!(lines.iter().all(|l| l["outcome"] == "done"), "{stdout}");
    assert_eq!(summary["interrupted"], false, "{stdout}");
    assert_eq!(summary["counts"]["done"], 2, "{stdout}");
    assert_eq!(summary["run"]["state"], "cancelled", "{stdout}");
    let progress = &summary["run"]["progress"];
    assert_eq!(progress["done"], 2, "{stdout}");
    // Nothing is held: the users claimed ahead went back.
    assert_eq!(progress["in_flight"], 0, "{stdout}");
    assert_eq!(progress["pending"], 18, "{stdout}");

    // The same command makes a new job, over every user.
    let (ok, stdout, told) = run_split_with_env(&args, &[("OUT_DIR", out_arg)]);
    assert!(ok, "{stdout}{told}");
    let (_, summary) = user_lines(&stdout);
    assert_eq!(summary["resumed"], false, "{stdout}");
    assert_ne!(summary["job"].to_string(), id, "{stdout}");
    assert_eq!(summary["counts"]["done"], 20, "{stdout}");
}

#[tokio::test]
async fn an_interrupted_sweep_resumes_on_sqlite() {
    interrupted_sweep_resumes(&Deployment::sqlite()).await;
}

#[tokio::test]
async fn an_interrupted_sweep_resumes_on_postgres() {
    if let Some(d) = Deployment::postgres().await {
        interrupted_sweep_resumes(&d).await;
    }
}

/// `sweep --job refresh --concurrency 2` over `n` users signed in (`{prefix}NN@example.com`),
/// with refreshes slowed to 200 ms so that what the test does next lands midway; its first
/// `lines` lines read.
async fn slow_sweep(
    d: &Deployment,
    http: &reqwest::Client,
    prefix: &str,
    n: usize,
    lines: usize,
) -> Started {
    for i in 0..n {
        d.sign_in(http, &format!("{prefix}{i:02}@example.com"))
            .await;
    }
    d.faults(http, json!({"token": {"latency_ms": 200}})).await;
    let args = d.args(&["sweep", "--job", "refresh", "--concurrency", "2"]);
    Started::reading(&args, &[], lines)
}

async fn interrupted_sweep_resumes(d: &Deployment) {
    let http = client();
    let mut sweep = slow_sweep(d, &http, "sw", 40, 5).await;
    interrupt(&sweep.child);
    let (exit, first, told) = sweep.finish();
    assert!(exit.success(), "a stopped sweep exits cleanly: {told}");
    assert!(told.contains("interrupted"), "{told}");
    let (events, summary) = user_lines(&first);
    assert_eq!(summary["interrupted"], true, "{first}");
    assert_eq!(summary["run"]["finished"], false, "{first}");
    let done_first = events.len();
    assert!(done_first < 40, "stopped midway: {done_first}");

    // The run is a job of the sweep's kind, still running.
    let running = d.the_running_job();
    assert_eq!(running["kind"], "sweep:refresh", "{running}");
    assert_eq!(running["progress"]["done"], done_first, "{running}");

    d.faults(&http, json!({})).await;
    let (ok, rest, told) = d.cmd(&["sweep", "--job", "refresh", "--concurrency", "2"], &[]);
    assert!(ok, "{rest}{told}");
    assert!(told.contains("resumed after"), "{told}");
    let (events, summary) = user_lines(&rest);
    let done_rest = events.len();
    assert_eq!(
        done_first + done_rest,
        40,
        "each user once: {done_first} + {done_rest}"
    );
    // The run's counts cover both invocations: every user once.
    assert_eq!(summary["counts"]["ok"], done_rest, "{rest}");
    assert_eq!(summary["run"]["finished"], true, "{rest}");
    assert_eq!(summary["run"]["counts"]["ok"], 40, "{rest}");
    let stats: Value = http
        .get(format!("{}/_emulator/stats", d.emulator))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["refreshes"], 40);
}

#[tokio::test]
async fn a_sweep_s_run_is_a_job_that_jobs_cancel_ends_on_sqlite() {
    cancelled_sweep(&Deployment::sqlite()).await;
}

#[tokio::test]
async fn a_sweep_s_run_is_a_job_that_jobs_cancel_ends_on_postgres() {
    if let Some(d) = Deployment::postgres().await {
        cancelled_sweep(&d).await;
    }
}

/// A refresh sweep's run is listed with the jobs; `jobs cancel` on it ends the sweep, which
/// says that its run was cancelled (not that other processes hold it) and exits with status 1;
/// the next sweep starts a new run over every user.
async fn cancelled_sweep(d: &Deployment) {
    let http = client();
    let mut sweep = slow_sweep(d, &http, "sc", 30, 3).await;
    assert_eq!(d.the_running_job()["name"], "sweep refresh");
    let id = d.cancel_the_running_job("sweep:refresh");

    let (exit, first, told) = sweep.finish();
    assert_eq!(
        exit.code(),
        Some(1),
        "a cancelled run's sweep fails: {told}"
    );
    assert!(
        told.contains(&format!("run {id} of the refresh sweep was cancelled")),
        "{told}"
    );
    assert!(!told.contains("other sweep processes"), "{told}");
    let (events, summary) = user_lines(&first);
    assert!(events.len() < 30, "cancelled midway: {first}");
    assert_eq!(summary["interrupted"], false, "{first}");
    assert_eq!(summary["run"]["finished"], false, "{first}");
    assert_eq!(summary["run"]["cancelled"], true, "{first}");

    // The next sweep starts a new run: every user once.
    d.faults(&http, json!({})).await;
    let (ok, rest, told) = d.cmd(&["sweep", "--job", "refresh", "--concurrency", "8"], &[]);
    assert!(ok, "{rest}{told}");
    assert!(!told.contains("resumed after"), "{told}");
    let (events, summary) = user_lines(&rest);
    assert_eq!(events.len(), 30, "{rest}");
    assert_eq!(summary["run"]["finished"], true, "{rest}");
    assert_eq!(summary["run"]["cancelled"], false, "{rest}");
    assert_eq!(summary["run"]["counts"]["ok"], 30, "{rest}");
}
