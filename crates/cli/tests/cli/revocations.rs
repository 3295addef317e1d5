//! `grantkeeper users revoke` while Google cannot revoke: revoked here at once, the revocation
//! at Google queued, and retried by the running server once Google answers again.

use super::{client, run, sign_in, start};
use serde_json::{Value, json};
use std::time::Duration;

async fn emulator(
    http: &reqwest::Client,
    url: &str,
    method: &str,
    path: &str,
    body: Value,
) -> Value {
    let r = http
        .request(
            method.parse().unwrap(),
            format!("{url}/_google/_emulator/{path}"),
        )
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap_or(Value::Null)
}

async fn revocations(http: &reqwest::Client, url: &str) -> u64 {
    let stats: Value = http
        .get(format!("{url}/_google/_emulator/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stats["revocations"].as_u64().unwrap()
}

#[tokio::test]
async fn users_revoke_during_a_google_outage_queues_it_for_the_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let http = client();
    let dev = start(&["dev", "--addr", "127.0.0.1:0", "--data-dir", data_arg]);
    let (answer, _) = sign_in(&http, &dev.url, &data, "cli-outage@example.com").await;
    let sub = answer["user"]["sub"].as_str().unwrap().to_owned();
    emulator(
        &http,
        &dev.url,
        "PUT",
        "faults",
        json!({"revoke": {"error_rate": 1.0, "status": 503}}),
    )
    .await;

    let (ok, text) = run(&["users", "revoke", &sub, "--data-dir", data_arg]);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!(
            "revoked the grant of {sub} here; the revocation at Google is queued and retried"
        )),
        "{text}"
    );
    assert_eq!(revocations(&http, &dev.url).await, 0);
    let (ok, show) = run(&["users", "show", &sub, "--data-dir", data_arg]);
    assert!(ok && show.contains("revoked"), "{show}");
    assert!(show.contains("revocation at Google queued"), "{show}");
    let (ok, audit) = run(&["audit", "--user", &sub, "--data-dir", data_arg]);
    assert!(
        ok && audit
            .lines()
            .any(|l| l.contains("cli") && l.contains("revoke") && l.contains("queued")),
        "{audit}"
    );

    // The command's process is gone; the dev server retries the queued revocation once Google
    // answers again (its first retry is due about 10 s after the failure).
    emulator(&http, &dev.url, "PUT", "faults", json!({})).await;
    let waited = grantkeeper_core::Stopwatch::start();
    while revocations(&http, &dev.url).await == 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(90),
            "the running server never retried the queued revocation"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(revocations(&http, &dev.url).await, 1);
}
