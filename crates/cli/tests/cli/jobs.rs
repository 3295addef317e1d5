//! `jobs run|list|show|cancel` as an operator runs them against `dev`: every user's command runs
//! once with the user's sub and a token of theirs in its environment (never on a command line),
//! at the asked concurrency and rate; an interrupted run resumes without redoing users done; the
//! listings and a cancel.

use super::{BIN, client, sign_in, start};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

/// The command of the tests: records, per run, its environment, its own and its parent's
/// command lines, its start time and how many runs were under way with it; prints to stdout
/// (which must not reach grantkeeper's JSON lines); fails for `$FAIL_SUB` with the token in
/// its last line of stderr.
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

/// A run's stdout: every line JSON, one per user, then the summary, last.
fn run_lines(stdout: &str) -> (Vec<Value>, Value) {
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

fn jobs_cmd(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
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

const APPDATA: &str = "https://www.googleapis.com/auth/drive.appdata";

#[tokio::test]
async fn jobs_run_gives_each_user_s_command_a_token_in_its_environment() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let http = client();
    let dev = start(&["dev", "--addr", "127.0.0.1:0", "--data-dir", data_arg]);
    let mut subs = Vec::new();
    for i in 0..6 {
        let (answer, _) = sign_in(&http, &dev.url, &data, &format!("run{i}@example.com")).await;
        subs.push(answer["user"]["sub"].as_str().unwrap().to_owned());
    }
    let (ok, _, told) = jobs_cmd(&["users", "revoke", &subs[5], "--data-dir", data_arg], &[]);
    assert!(ok, "{told}");
    let (out, exec) = workdir(dir.path());
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
        "--data-dir",
        data_arg,
    ];
    let env = [
        ("OUT_DIR", out_arg),
        ("FAIL_SUB", subs[4].as_str()),
        ("WORK_SECONDS", "0.3"),
    ];
    let (ok, stdout, told) = jobs_cmd(&args, &env);
    assert!(ok, "{stdout}{told}");

    // stdout: JSON lines alone (the command's own stdout went to stderr), one per user.
    let (lines, summary) = run_lines(&stdout);
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
            .get(format!("{}/_google/tokeninfo", dev.url))
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
    let (ok, table, told) = jobs_cmd(&["jobs", "list", "--data-dir", data_arg], &[]);
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
    let (ok, listed, _) = jobs_cmd(&["jobs", "list", "--json", "--data-dir", data_arg], &[]);
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
    let (ok, none, _) = jobs_cmd(
        &["jobs", "list", "--state", "running", "--data-dir", data_arg],
        &[],
    );
    assert!(ok);
    assert_eq!(none.lines().count(), 1, "the header alone: {none}");

    let (ok, shown, _) = jobs_cmd(
        &["jobs", "show", &job_id.to_string(), "--data-dir", data_arg],
        &[],
    );
    assert!(ok, "{shown}");
    assert!(
        shown.contains("boom with [token]") && shown.contains(&subs[4]),
        "{shown}"
    );
    assert!(
        shown.contains(&subs[5]) && shown.contains("revoked"),
        "{shown}"
    );
    let (ok, shown, _) = jobs_cmd(
        &[
            "jobs",
            "show",
            &job_id.to_string(),
            "--json",
            "--data-dir",
            data_arg,
        ],
        &[],
    );
    assert!(ok);
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["failures"].as_array().unwrap().len(), 2, "{shown}");
    let (ok, _, told) = jobs_cmd(&["jobs", "show", "999", "--data-dir", data_arg], &[]);
    assert!(!ok && told.contains("no job has the id 999"), "{told}");

    // The same command again, the job being finished: a new job, every usable user again.
    let (ok, stdout, told) = jobs_cmd(&args, &[("OUT_DIR", out_arg)]);
    assert!(ok, "{told}");
    let (_, summary) = run_lines(&stdout);
    assert_eq!(summary["resumed"], false);
    assert_ne!(summary["job"], job_id);
    assert_eq!(summary["counts"]["done"], 5, "{stdout}");
}

#[tokio::test]
async fn an_interrupted_jobs_run_resumes_without_redoing_users_done() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let http = client();
    let dev = start(&["dev", "--addr", "127.0.0.1:0", "--data-dir", data_arg]);
    let mut subs = Vec::new();
    for i in 0..20 {
        let (answer, _) = sign_in(&http, &dev.url, &data, &format!("rs{i:02}@example.com")).await;
        subs.push(answer["user"]["sub"].as_str().unwrap().to_owned());
    }
    let (out, exec) = workdir(dir.path());
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
        "--data-dir",
        data_arg,
    ];
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .env("OUT_DIR", out_arg)
        .env("WORK_SECONDS", "0.3")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut first = Vec::new();
    while first.len() < 4 {
        first.push(lines.next().unwrap().unwrap());
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    first.extend(lines.map_while(Result::ok));
    assert!(
        child.wait().unwrap().success(),
        "a stopped run exits cleanly"
    );
    let mut told = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut told).unwrap();
    assert!(told.contains("interrupted"), "{told}");
    let (done_first, summary) = run_lines(&first.join("\n"));
    assert_eq!(summary["interrupted"], true, "{first:?}");
    assert_eq!(summary["run"]["state"], "running", "{first:?}");
    assert!(done_first.len() < 20, "stopped midway: {first:?}");
    assert!(done_first.iter().all(|l| l["outcome"] == "done"));

    // The stopped job still runs, holding nobody: the rerun joins it.
    let (ok, listed, _) = jobs_cmd(
        &[
            "jobs",
            "list",
            "--state",
            "running",
            "--json",
            "--data-dir",
            data_arg,
        ],
        &[],
    );
    assert!(ok);
    assert_eq!(listed.lines().count(), 1, "{listed}");

    let (ok, rest, told) = jobs_cmd(&args, &[("OUT_DIR", out_arg)]);
    assert!(ok, "{rest}{told}");
    assert!(told.contains("resuming job"), "{told}");
    let (done_rest, summary) = run_lines(&rest);
    assert_eq!(summary["resumed"], true, "{rest}");
    assert_eq!(summary["run"]["state"], "finished", "{rest}");
    assert_eq!(summary["run"]["progress"]["done"], 20, "{rest}");
    assert_eq!(done_first.len() + done_rest.len(), 20, "{first:?} {rest}");
    assert_eq!(done_rest.last().unwrap()["done"], 20, "{rest}");
    // Every user's command ran exactly once across both runs.
    let runs = runs(&out);
    assert_eq!(runs.len(), 20);
    for sub in &subs {
        assert_eq!(runs[sub].len(), 1, "{sub} ran {} times", runs[sub].len());
    }
}

#[tokio::test]
async fn jobs_cancel_stops_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let http = client();
    let dev = start(&["dev", "--addr", "127.0.0.1:0", "--data-dir", data_arg]);
    for i in 0..3 {
        sign_in(&http, &dev.url, &data, &format!("cx{i}@example.com")).await;
    }
    let key = std::fs::read_to_string(data.join("dev-api-key")).unwrap();
    let made: Value = http
        .post(format!("{}/v1/jobs", dev.url))
        .bearer_auth(key.trim())
        .json(&json!({"name": "backup"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = made["id"].as_u64().unwrap().to_string();
    let (ok, text, told) = jobs_cmd(&["jobs", "cancel", &id, "--data-dir", data_arg], &[]);
    assert!(ok, "{told}");
    assert!(
        text.contains(&format!("cancelled job {id} (backup)")),
        "{text}"
    );
    let job: Value = http
        .get(format!("{}/v1/jobs/{id}", dev.url))
        .bearer_auth(key.trim())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["state"], "cancelled", "{job}");
    let claim: Value = http
        .post(format!("{}/v1/jobs/{id}/claim", dev.url))
        .bearer_auth(key.trim())
        .json(&json!({"max": 10}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(claim["items"], json!([]), "nothing more is handed out");
    let (ok, _, told) = jobs_cmd(&["jobs", "cancel", &id, "--data-dir", data_arg], &[]);
    assert!(!ok && told.contains("cancelled already"), "{told}");
    let (ok, _, told) = jobs_cmd(&["jobs", "cancel", "424242", "--data-dir", data_arg], &[]);
    assert!(!ok && told.contains("no job has the id 424242"), "{told}");
}
