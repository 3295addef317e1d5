//! Drive faults, upload limits, the control listing, and files kept across restarts.

use super::helpers::*;
use serde_json::{Value, json};
use std::time::Duration;

const APP_DATA_ONLY: &str = "openid email https://www.googleapis.com/auth/drive.appdata";

#[tokio::test]
async fn drive_faults_answer_in_googles_api_envelope() {
    let t = TestEmu::start().await;
    let alice = t.drive("alice@example.com", APP_DATA_ONLY).await;
    let app_data = [("spaces", "appDataFolder")];

    t.faults(json!({"drive": {"status": 503}})).await;
    let r = alice.list(&app_data).await;
    assert_drive_error(&r, 503, "backendError", "Service Unavailable");
    // Only Drive is affected.
    assert_eq!(t.get("/.well-known/openid-configuration").await.status, 200);

    t.faults(json!({"drive": {"status": 429, "retry_after_secs": 3}}))
        .await;
    let r = alice
        .create(json!({"name": "a", "parents": ["appDataFolder"]}), &[])
        .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("3"));
    assert_eq!(
        r.body,
        json!({"error": {
            "code": 429,
            "message": "Rate Limit Exceeded",
            "errors": [{"message": "Rate Limit Exceeded", "domain": "usageLimits",
                        "reason": "rateLimitExceeded"}],
            "status": "RESOURCE_EXHAUSTED",
        }})
    );
    // The refused create created nothing.
    t.faults(json!({})).await;
    assert!(ids(&alice.list(&app_data).await).is_empty());

    t.faults(json!({"drive": {"error_rate": 0.5, "status": 429}}))
        .await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(alice.list(&app_data).await.status.as_u16());
    }
    assert_eq!(statuses, vec![200, 429, 200, 429]);

    t.faults(json!({"drive": {"body": "html"}})).await;
    let r = alice.list(&app_data).await;
    assert_eq!(r.status, 403);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    // A fault comes before authentication, as Google's front end answers first.
    t.faults(json!({"drive": {"status": 503}})).await;
    assert_eq!(t.drive_with(None).list(&[]).await.status, 503);
    assert_eq!(
        t.get("/_emulator/faults").await.body["drive"]["status"],
        503
    );
    t.faults(json!({})).await;
    assert_eq!(alice.list(&app_data).await.status, 200);
    let s = t.stats().await;
    assert_eq!(s["drive_requests"], 10);
    assert_eq!(s["drive_requests_by_email"]["alice@example.com"], 4);
}

#[tokio::test]
async fn drive_latency_does_not_hold_up_other_requests() {
    // The test's runtime has a single thread, shared with the emulator: a latency that blocked
    // its thread would stop every other answer.
    let t = TestEmu::start().await;
    let alice = t.drive("alice@example.com", APP_DATA_ONLY).await;
    let token = alice.token.clone().unwrap();
    t.faults(json!({"drive": {"latency_ms": 60_000}})).await;
    let mut slow = Vec::new();
    for _ in 0..20 {
        let req = t
            .http
            .get(t.url("/drive/v3/files?spaces=appDataFolder"))
            .bearer_auth(&token)
            .send();
        slow.push(tokio::spawn(req));
    }
    // Let the Drive calls reach the emulator and start waiting.
    while t.stats().await["drive_requests"] != 20 {
        tokio::task::yield_now().await;
    }
    assert_eq!(t.get("/.well-known/openid-configuration").await.status, 200);
    let fresh = t.sign_in("bob@example.com", APP_DATA_ONLY).await;
    assert_eq!(fresh.status, 200);
    assert!(slow.iter().all(|h| !h.is_finished()));
    for h in slow {
        h.abort();
    }

    // A short latency delays the answer and then serves it.
    t.faults(json!({"drive": {"latency_ms": 50}})).await;
    let started = grantkeeper_core::Stopwatch::start();
    let r = alice.list(&[("spaces", "appDataFolder")]).await;
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn uploads_are_capped_at_five_megabytes() {
    let t = TestEmu::start().await;
    let alice = t.drive("alice@example.com", APP_DATA_ONLY).await;
    let id = alice.create_app_data("big.bin").await;
    let five_mb = vec![7u8; 5 * 1024 * 1024];
    let ok = alice
        .patch_content(
            &id,
            "application/octet-stream",
            five_mb.clone(),
            &[("fields", "size")],
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.body["size"], "5242880");
    assert_eq!(alice.download(&id).await.bytes.len(), five_mb.len());

    let mut over = five_mb.clone();
    over.push(0);
    let r = alice
        .patch_content(&id, "application/octet-stream", over.clone(), &[])
        .await;
    assert_eq!(r.status, 413, "{}", r.text);
    assert_eq!(r.body["error"]["code"], 413);
    assert_eq!(r.body["error"]["errors"][0]["reason"], "uploadTooLarge");
    let r = alice
        .upload_multipart(
            json!({"name": "x", "parents": ["appDataFolder"]}),
            "application/octet-stream",
            &over,
            &[],
        )
        .await;
    assert_eq!(r.status, 413, "{}", r.text);
    // Far beyond: refused without reading it all.
    let huge = vec![0u8; 8 * 1024 * 1024];
    let r = alice
        .patch_content(&id, "application/octet-stream", huge, &[])
        .await;
    assert_eq!(r.status, 413);
    let size = alice
        .get(&format!("/drive/v3/files/{id}?fields=size,version"))
        .await;
    assert_eq!(size.body, json!({"size": "5242880", "version": "2"}));

    // Malformed uploads.
    let no_type = alice
        .send(
            alice
                .req(reqwest::Method::POST, "/upload/drive/v3/files")
                .body("x"),
        )
        .await;
    assert_eq!(no_type.status, 400);
    assert_eq!(no_type.body["error"]["errors"][0]["location"], "uploadType");
    let not_multipart = alice
        .send(
            alice
                .req(
                    reqwest::Method::POST,
                    "/upload/drive/v3/files?uploadType=multipart",
                )
                .header("content-type", "application/json")
                .body("{}"),
        )
        .await;
    assert_eq!(not_multipart.status, 400);
    let one_part = alice
        .send(
            alice
                .req(
                    reqwest::Method::POST,
                    "/upload/drive/v3/files?uploadType=multipart",
                )
                .header("content-type", "multipart/related; boundary=b")
                .body("--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b--"),
        )
        .await;
    assert_eq!(one_part.status, 400, "{}", one_part.text);
    assert!(ids(&alice.list(&[("spaces", "appDataFolder")]).await).len() == 1);
}

#[tokio::test]
async fn the_control_api_lists_a_users_files() {
    let t = TestEmu::start().await;
    let alice = t.drive("alice@example.com", APP_DATA_ONLY).await;
    let made = alice
        .upload_multipart(
            json!({"name": "s.json", "parents": ["appDataFolder"],
                   "appProperties": {"schema": "2"}}),
            "application/json",
            b"{\"a\":1}",
            &[("fields", "id")],
        )
        .await;
    let c = t.get("/_emulator/drive?email=Alice@Example.com").await;
    assert_eq!(c.status, 200, "{}", c.text);
    assert_eq!(c.body["email"], "alice@example.com");
    let files = c.body["files"].as_array().unwrap();
    assert_eq!(files.len(), 1);
    let f = &files[0];
    assert_eq!(f["id"], made.body["id"]);
    assert_eq!(f["name"], "s.json");
    assert_eq!(f["size"], "7");
    assert_eq!(f["md5Checksum"], md5_hex(b"{\"a\":1}"));
    assert_eq!(f["appProperties"], json!({"schema": "2"}));
    assert_eq!(f["parents"], json!([c.body["app_data_folder_id"]]));
    let nobody = t.get("/_emulator/drive?email=zed@example.com").await;
    assert_eq!(nobody.body["files"], json!([]));
    assert_eq!(t.get("/_emulator/drive").await.status, 400);
    // And a query on appProperties finds it.
    let q = alice
        .list(&[
            ("spaces", "appDataFolder"),
            ("q", "appProperties has { key='schema' and value='2' }"),
        ])
        .await;
    assert_eq!(ids(&q).len(), 1);
}

fn blobs(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("emulator").join("drive"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn files_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestEmu::start_with(Some(dir.path().to_path_buf()), true).await;
    let alice = t.drive("alice@example.com", APP_DATA_ONLY).await;
    let token = alice.token.clone().unwrap();
    let binary: Vec<u8> = (0..=255u8).rev().cycle().take(70_000).collect();
    let kept = alice
        .upload_multipart(
            json!({"name": "kept.bin", "parents": ["appDataFolder"]}),
            "application/octet-stream",
            &binary,
            &[("fields", "id")],
        )
        .await
        .str("id")
        .to_owned();
    let changed = alice.create_app_data("changed.json").await;
    alice
        .patch_content(&changed, "application/json", b"{\"v\":1}".to_vec(), &[])
        .await;
    alice
        .patch_content(&changed, "application/json", b"{\"v\":2}".to_vec(), &[])
        .await;
    alice
        .patch(&changed, json!({"name": "renamed.json"}), &[])
        .await;
    let gone = alice.create_app_data("gone.json").await;
    alice
        .patch_content(&gone, "text/plain", b"bye".to_vec(), &[])
        .await;
    assert_eq!(alice.delete(&gone).await.status, 204);
    let empty = alice.create_app_data("empty.json").await;
    let bob = t.drive("bob@example.com", APP_DATA_ONLY).await;
    let bobs = bob.create_app_data("bob.json").await;
    let all = "files(id,name,version,md5Checksum,size,modifiedTime,createdTime,parents)";
    let before = alice
        .list(&[("spaces", "appDataFolder"), ("fields", all)])
        .await;
    assert_eq!(before.body["files"].as_array().unwrap().len(), 3);
    // Old content went with its versions: one blob per file with content.
    assert_eq!(blobs(dir.path()).len(), 2);
    t.stop().await;

    // Debris of a crash between writing content and journaling it is collected at start.
    std::fs::write(dir.path().join("emulator/drive/orphan"), b"x").unwrap();

    let t = TestEmu::start_with(Some(dir.path().to_path_buf()), true).await;
    let alice = t.drive_with(Some(&token));
    let after = alice
        .list(&[("spaces", "appDataFolder"), ("fields", all)])
        .await;
    assert_eq!(after.status, 200, "{}", after.text);
    assert_eq!(after.body, before.body);
    assert_eq!(alice.download(&kept).await.bytes, binary);
    assert_eq!(alice.download(&changed).await.bytes, b"{\"v\":2}");
    assert_eq!(alice.download(&empty).await.bytes, b"");
    assert_eq!(alice.download(&gone).await.status, 404);
    let renamed: Vec<&Value> = after.body["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["id"] == changed.as_str())
        .collect();
    assert_eq!(renamed[0]["name"], "renamed.json");
    assert_eq!(renamed[0]["version"], "4");
    assert_eq!(blobs(dir.path()).len(), 2, "{:?}", blobs(dir.path()));
    let bob_files = t.get("/_emulator/drive?email=bob@example.com").await;
    assert_eq!(bob_files.body["files"][0]["id"], bobs);

    // Work goes on after the restart, and survives the next one.
    alice
        .patch_content(&kept, "text/plain", b"short".to_vec(), &[])
        .await;
    t.stop().await;
    let t = TestEmu::start_with(Some(dir.path().to_path_buf()), true).await;
    let alice = t.drive_with(Some(&token));
    let k = alice.download(&kept).await;
    assert_eq!(k.bytes, b"short");
    assert_eq!(k.header("content-type"), Some("text/plain"));
    assert_eq!(blobs(dir.path()).len(), 2);
    // Nothing of the content sits in the journal.
    let journal = std::fs::read(dir.path().join("emulator/journal.jsonl")).unwrap();
    assert!(journal.len() < 20_000, "{} bytes", journal.len());
}
