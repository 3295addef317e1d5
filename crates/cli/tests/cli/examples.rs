//! The two job workers of `examples/` (Python, standard library only; Node, no dependencies)
//! against `dev`: each makes a job over the users holding drive.appdata, claims batches, lists
//! every user's Drive app folder through the proxy and reports each user once, until the job
//! is finished. Without `python3` or `node` the test says `skipped`, and fails under CI.

use super::{client, sign_in, start};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// True when `program --version` runs; otherwise says what is skipped, and fails on CI.
fn available(program: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        grantkeeper_testkit::cannot_run(&format!(
            "{program} not found; it runs the example workers"
        ));
    }
    found
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

/// Runs one example worker to its end and checks what it listed: each user once, with the
/// files of their app folder, and the job finished with every user done.
fn check_worker(
    program: &str,
    script: &str,
    url: &str,
    key: &str,
    batch: &str,
    folders: &BTreeMap<String, String>,
) {
    let out = Command::new(program)
        .arg(example(script))
        .args(["--batch", batch])
        .env("GRANTKEEPER_URL", url)
        .env("GRANTKEEPER_API_KEY", key)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script}: {stdout}{stderr}");
    let mut lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{script}: {l:?}: {e}")))
        .collect();
    let job = lines.pop().expect("the job, last")["job"].clone();
    let mut listed: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for line in &lines {
        assert!(line.get("error").is_none(), "{script}: {line}");
        listed
            .entry(line["sub"].as_str().unwrap().to_owned())
            .or_default()
            .push(line["files"].clone());
    }
    assert_eq!(
        listed.keys().collect::<Vec<_>>(),
        folders.keys().collect::<Vec<_>>(),
        "{script} listed every user's folder: {stdout}"
    );
    for (sub, file) in folders {
        assert_eq!(
            listed[sub],
            [json!([file])],
            "{script}: {sub} once, its file"
        );
    }
    assert_eq!(job["state"], "finished", "{script}: {job}");
    assert_eq!(job["progress"]["done"], folders.len(), "{script}: {job}");
    assert_eq!(job["progress"]["total"], folders.len(), "{script}: {job}");
    assert_eq!(job["progress"]["failed"], 0, "{script}: {job}");
}

#[tokio::test]
async fn the_example_workers_list_every_user_s_app_folder() {
    let python = available("python3");
    let node = available("node");
    if !python && !node {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let dev = start(&[
        "dev",
        "--addr",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let http = client();
    // Seven users, each with one file of their own in their app folder (through the demo
    // page's offline routes, as the user).
    let mut folders = BTreeMap::new();
    for i in 0..7 {
        let (answer, cookie) = sign_in(&http, &dev.url, &data, &format!("ex{i}@example.com")).await;
        let name = format!("notes-{i}.txt");
        let added: Value = http
            .post(format!("{}/demo/files", dev.url))
            .header("cookie", &cookie)
            .header("x-requested-with", "XmlHttpRequest")
            .json(&json!({"name": name, "content": "hello"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(added["status"], 200, "{added}");
        folders.insert(answer["user"]["sub"].as_str().unwrap().to_owned(), name);
    }
    let key = std::fs::read_to_string(data.join("dev-api-key")).unwrap();
    // Batches of three: several claims each, the last one smaller.
    if python {
        check_worker(
            "python3",
            "drive_worker.py",
            &dev.url,
            key.trim(),
            "3",
            &folders,
        );
    }
    if node {
        check_worker(
            "node",
            "drive_worker.mjs",
            &dev.url,
            key.trim(),
            "3",
            &folders,
        );
    }
}
