//! What the operator's listings print, in both forms: the table for people and `--json` (one
//! object a line) for scripts, snapshotted with times and random key ids masked. Subs are
//! stable per email in the emulator, so they stay as they are. And `check`, passing and failing.

use super::{BIN, client, sign_in, start};
use grantkeeper_core::Stopwatch;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

/// Runs the binary: (success, stdout, stderr).
fn run3(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Replaces what changes from run to run by placeholders of the same length, so that tables
/// keep their alignment: RFC 3339 times and API key ids.
fn mask(text: &str) -> String {
    const TIME: &str = "YYYY-MM-DDThh:mm:ssZ";
    let pattern = |w: &[u8]| {
        w.len() == TIME.len()
            && w.iter().zip(TIME.bytes()).all(|(c, p)| match p {
                b'Y' | b'M' | b'D' | b'h' | b'm' | b's' => c.is_ascii_digit(),
                other => *c == other,
            })
    };
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes.get(i..i + TIME.len()).is_some_and(pattern) {
            out.push_str(TIME);
            i += TIME.len();
            continue;
        }
        let key = bytes
            .get(i..i + 16)
            .filter(|w| w.starts_with(b"key_") && w[4..].iter().all(|c| c.is_ascii_hexdigit()));
        if key.is_some() {
            out.push_str("key_XXXXXXXXXXXX");
            i += 16;
            continue;
        }
        let c = text[i..].chars().next().unwrap();
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// Every line of a `--json` listing is one JSON object.
fn objects(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"));
            assert!(v.is_object(), "{l}");
            v
        })
        .collect()
}

/// A listing in both forms, snapshotted under `name` and `name-json` with `url` (the dev
/// server's, which profile pictures name) masked too; answers the objects.
fn both(name: &str, url: &str, args: &[&str]) -> Vec<Value> {
    let (ok, table, err) = run3(args);
    assert!(ok, "{args:?}: {err}");
    insta::assert_snapshot!(name, mask(&table));
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let (ok, json, err) = run3(&json_args);
    assert!(ok, "{json_args:?}: {err}");
    let found = objects(&json);
    let mut shown = json.replace(url, "http://127.0.0.1:PORT");
    // Audit rows written in one flush of the server's writer take their ids in any order.
    for row in &found {
        if let (Some(id), Some(_)) = (row["id"].as_i64(), row.get("actor")) {
            shown = shown.replace(&format!("\"id\":{id},"), "\"id\":N,");
        }
    }
    insta::assert_snapshot!(format!("{name}-json"), mask(&shown));
    found
}

#[tokio::test]
async fn listings_print_tables_and_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let http = client();
    let dev = start(&["dev", "--addr", "127.0.0.1:0", "--data-dir", data_arg]);
    let mut subs = Vec::new();
    for email in ["ann@example.com", "ben@example.com", "cat@example.com"] {
        let (answer, _) = sign_in(&http, &dev.url, &data, email).await;
        subs.push(answer["user"]["sub"].as_str().unwrap().to_owned());
    }
    let (ann, ben) = (&subs[0], &subs[1]);
    let (ok, _, err) = run3(&["users", "revoke", ben, "--data-dir", data_arg]);
    assert!(ok, "{err}");
    let (ok, _, err) = run3(&[
        "api-keys",
        "create",
        "--name",
        "reports",
        "--scope",
        "users:read",
        "--data-dir",
        data_arg,
    ]);
    assert!(ok, "{err}");

    // The server writes its audit within a second: wait for ann's sign-in row.
    let waited = Stopwatch::start();
    while !run3(&["audit", "--user", ann, "--data-dir", data_arg])
        .1
        .contains("sign_in")
    {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "the sign-in was never audited"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let keys = both(
        "api-keys-list",
        &dev.url,
        &["api-keys", "list", "--data-dir", data_arg],
    );
    assert_eq!(keys.len(), 2);
    both(
        "keys-list",
        &dev.url,
        &["keys", "list", "--data-dir", data_arg],
    );
    let users = both(
        "users-list",
        &dev.url,
        &["users", "list", "--data-dir", data_arg],
    );
    assert_eq!(users.len(), 3);
    // The fields of GET /v1/users/{sub}, exactly.
    let (_, v1) = {
        let key = std::fs::read_to_string(data.join("dev-api-key")).unwrap();
        let r = http
            .get(format!("{}/v1/users/{ann}", dev.url))
            .bearer_auth(key.trim())
            .send()
            .await
            .unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    let listed = users.iter().find(|u| u["user"]["sub"] == *ann).unwrap();
    assert_eq!(listed, &v1);

    // The console's filters.
    let revoked = both(
        "users-list-revoked",
        &dev.url,
        &[
            "users",
            "list",
            "--state",
            "revoked",
            "--data-dir",
            data_arg,
        ],
    );
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["user"]["sub"], *ben);
    let by_email = both(
        "users-list-email",
        &dev.url,
        &["users", "list", "--email", "CAT@", "--data-dir", data_arg],
    );
    assert_eq!(by_email.len(), 1);
    assert_eq!(by_email[0]["user"]["email"], "cat@example.com");

    // A page at a time: the cursor of the first page goes on after it.
    let (ok, first, err) = run3(&[
        "users",
        "list",
        "--limit",
        "2",
        "--json",
        "--data-dir",
        data_arg,
    ]);
    assert!(ok, "{err}");
    let first = objects(&first);
    assert_eq!(first.len(), 2);
    let cursor = err
        .split("--cursor ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no cursor named: {err}"));
    let (ok, rest, err) = run3(&[
        "users",
        "list",
        "--limit",
        "2",
        "--cursor",
        cursor,
        "--json",
        "--data-dir",
        data_arg,
    ]);
    assert!(ok, "{err}");
    assert!(!err.contains("--cursor"), "the last page: {err}");
    let rest = objects(&rest);
    let mut paged: Vec<Value> = first.into_iter().chain(rest).collect();
    let mut all = users.clone();
    let by_sub = |v: &Value| v["user"]["sub"].as_str().unwrap().to_owned();
    paged.sort_by_key(by_sub);
    all.sort_by_key(by_sub);
    assert_eq!(paged, all);
    let (ok, _, err) = run3(&[
        "users",
        "list",
        "--cursor",
        "not a cursor",
        "--data-dir",
        data_arg,
    ]);
    assert!(!ok && err.contains("--cursor"), "{err}");
    let (ok, _, err) = run3(&["users", "list", "--state", "sleepy", "--data-dir", data_arg]);
    assert!(!ok && err.contains("sleepy"), "{err}");

    let shown = both(
        "users-show",
        &dev.url,
        &["users", "show", ben, "--data-dir", data_arg],
    );
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0]["grant"]["state"], "revoked");
    assert_eq!(shown[0]["history"].as_array().unwrap().len(), 2);

    let audit = both(
        "audit",
        &dev.url,
        &["audit", "--user", ann, "--data-dir", data_arg],
    );
    assert!(audit.iter().all(|row| row["sub"] == *ann));

    // `check` speaks to a person: no Rust debug form.
    let (ok, check, err) = run3(&["check", "--data-dir", data_arg]);
    assert!(ok, "{check}{err}");
    assert!(check.contains("(active key 1)"), "{check}");
    assert!(
        !check.contains("Some(") && !check.contains("None"),
        "{check}"
    );
    // With the dev server (and its provider) stopped: the failing check says what to do.
    drop(dev);
    let (ok, failed, err) = run3(&["check", "--data-dir", data_arg]);
    assert!(!ok, "{failed}{err}");
    assert!(failed.contains("FAIL  provider"), "{failed}");
    assert!(failed.contains("ok    store"), "{failed}");
    let filters = vec![(r"127\.0\.0\.1:\d+", "127.0.0.1:[port]")];
    insta::with_settings!({filters => filters}, {
        insta::assert_snapshot!("check", check.replace(data_arg, "[data dir]"));
        insta::assert_snapshot!("check-failed", failed.replace(data_arg, "[data dir]"));
    });
}
