//! The master key in the emulated Cloud KMS: the whole story (sign-ins, hand-outs, refreshes,
//! a rotation, a new key version, a rewrap) with no KMS call per token; a KMS outage that
//! running servers serve through; the start refusals of each fault, naming the setting and
//! the fix; wrapped keys altered or mislabelled; and a scan of everything the run left for
//! master key material and unwrapped data keys.

use crate::server::harness::{KMS_KEY, Options, TestApp, captured_logs, kms_source};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use grantkeeper_core::{ExposeSecret, KeyId, MasterKey, MasterKeySource, SystemClock};
use grantkeeper_server::App;
use grantkeeper_server::apikeys::KeyScope::{Proxy, Token, UsersRead};
use grantkeeper_server::config::{FileConfig, Settings};
use grantkeeper_server::vault::rewrap::rewrap;
use grantkeeper_server::vault::rotation::{Rotation, RotationOptions};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// No wait before old keys are retired: these tests' servers seal nothing meanwhile.
fn no_grace() -> RotationOptions {
    RotationOptions {
        grace: Duration::ZERO,
        reload_interval: Duration::ZERO,
        ..RotationOptions::default()
    }
}

fn stop_never() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    std::mem::forget(tx);
    rx
}

async fn kms_app() -> TestApp {
    TestApp::start_with(Options {
        kms: true,
        ..Options::default()
    })
    .await
}

/// A hand-out of `sub`'s access token; `min_ttl` of the token's life forces a refresh.
async fn hand_out(
    t: &TestApp,
    key: &str,
    sub: &str,
    min_ttl: u64,
) -> crate::server::harness::Answer {
    t.v1(
        "POST",
        &format!("/v1/users/{sub}/token"),
        Some(key),
        Some(json!({"min_ttl": min_ttl})),
    )
    .await
}

/// The same deployment's settings, for another App on its store (a restarted server).
fn settings_of(t: &TestApp) -> Settings {
    let client = t.emulator.web_client();
    let mut file = FileConfig::default();
    file.server.addr = Some("127.0.0.1:0".into());
    file.provider.issuer = Some(t.emulator_url.clone());
    file.provider.client_id = Some(client.client_id.clone());
    file.provider.client_secret = Some(client.client_secret.clone());
    file.provider.api_base = Some(t.emulator_url.clone());
    file.store.url =
        Some(format!("sqlite://{}", t.dir.path().join("grantkeeper.db").display()).into());
    Settings::from_file(&file, t.dir.path()).unwrap()
}

/// Starts another server on `t`'s store with `source`; its start error, if any, as text.
async fn restart(t: &TestApp, source: Arc<dyn MasterKeySource>) -> Result<App, String> {
    let settings = settings_of(t);
    let store = grantkeeper_store::open(settings.store_url.expose_secret())
        .await
        .unwrap();
    App::new(settings, store, source, SystemClock::shared())
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_story_asks_cloud_kms_only_for_data_keys() {
    let t = kms_app().await;
    // At start: the first data key made (encrypt) and loaded (decrypt).
    assert_eq!(t.kms_requests().await, 2);
    let label = format!("kms:{KMS_KEY}");
    assert_eq!(t.source.label(), label);
    let key = t.api_key(&[Token, Proxy, UsersRead]).await;

    let mut subs = Vec::new();
    for i in 0..20 {
        subs.push(t.signed_in(&format!("kms-story-{i}@example.com")).await);
    }
    for sub in &subs {
        assert_eq!(hand_out(&t, &key, sub, 0).await.status, 200);
        // A refresh: a new access token sealed and stored.
        assert_eq!(hand_out(&t, &key, sub, 3600).await.status, 200);
    }
    assert_eq!(
        t.kms_requests().await,
        2,
        "20 sign-ins, 20 hand-outs and 20 refreshes asked Cloud KMS nothing"
    );
    let store = t.app.store().clone();
    let statuses = store.data_key_statuses().await.unwrap();
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].wrapped_by.as_deref(), Some(label.as_str()));

    // Another process rotates the data keys with the same KMS key (its own service account).
    let (other, _) = kms_source(&t.emulator_url, t.dir.path()).await;
    let mut rotation = Rotation::begin(store.clone(), &other, SystemClock::shared())
        .await
        .unwrap();
    let summary = rotation
        .run(&no_grace(), stop_never(), &|_| {})
        .await
        .unwrap();
    assert!(summary.finished(), "{summary:?}");
    let before = t.kms_requests().await;
    // The running server meets values under the new key: it unwraps that key once.
    for sub in &subs {
        assert_eq!(hand_out(&t, &key, sub, 3600).await.status, 200);
    }
    assert_eq!(t.kms_requests().await, before + 1);
    let keys = store.data_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].wrapped_by.as_deref(), Some(label.as_str()));

    // Cloud KMS rotates its own key: a new primary version; what the old one wrapped still
    // unwraps, for a server started now.
    let a = t
        .emulator_call("POST", "kms/versions", Some(json!({"name": KMS_KEY})))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let restarted = restart(&t, Arc::new(other)).await.unwrap();
    assert_eq!(
        restarted.vault().key_ids(),
        vec![KeyId(keys[0].id)],
        "the retired key is not loaded"
    );

    // Moving to a local key and back while the server runs: it keeps serving, asking nothing.
    let local = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
    let to_local = rewrap(&store, t.source.as_ref(), &local, &stop_never(), &|_| {})
        .await
        .unwrap();
    assert_eq!(to_local.rewrapped, vec![keys[0].id]);
    let back = rewrap(&store, &local, t.source.as_ref(), &stop_never(), &|_| {})
        .await
        .unwrap();
    assert_eq!(back.rewrapped, vec![keys[0].id]);
    let before = t.kms_requests().await;
    for sub in &subs {
        assert_eq!(hand_out(&t, &key, sub, 3600).await.status, 200);
    }
    assert_eq!(t.kms_requests().await, before);
    assert!(restart(&t, t.source.clone()).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_server_serves_through_a_kms_outage() {
    let t = kms_app().await;
    let key = t.api_key(&[Token, UsersRead]).await;
    let ada = t.signed_in("outage-ada@example.com").await;
    assert_eq!(hand_out(&t, &key, &ada, 0).await.status, 200);

    t.set_faults(json!({"kms": {"status": 503}})).await;
    let before = t.kms_requests().await;
    // Sign-ins, hand-outs and refreshes need no data key the server does not hold.
    let bo = t.signed_in("outage-bo@example.com").await;
    for sub in [&ada, &bo] {
        assert_eq!(hand_out(&t, &key, sub, 0).await.status, 200);
        assert_eq!(hand_out(&t, &key, sub, 3600).await.status, 200);
    }
    assert_eq!(t.kms_requests().await, before, "not even tried");

    // Only what needs a data key it has not loaded fails, with 503 upstream_unavailable: here a
    // value sealed under a key that another process made while Cloud KMS was up.
    t.set_faults(json!({})).await;
    let (other, _) = kms_source(&t.emulator_url, t.dir.path()).await;
    let mut rotation = Rotation::begin(t.app.store().clone(), &other, SystemClock::shared())
        .await
        .unwrap();
    rotation
        .run(&no_grace(), stop_never(), &|_| {})
        .await
        .unwrap();
    t.set_faults(json!({"kms": {"status": 503}})).await;
    let refused = hand_out(&t, &key, &ada, 3600).await;
    refused.assert_error(503, "upstream_unavailable");
    assert!(refused.headers.get("retry-after").is_some());

    // Back up: the same call goes through, and the key is held from then on.
    t.set_faults(json!({})).await;
    assert_eq!(hand_out(&t, &key, &ada, 3600).await.status, 200);
    assert_eq!(hand_out(&t, &key, &bo, 3600).await.status, 200);
}

#[tokio::test]
async fn a_server_refuses_to_start_naming_the_setting_and_the_fix() {
    let t = kms_app().await;
    let credentials = t.kms_credentials.clone().unwrap();
    let source = |key: &str, endpoint: &str| -> Arc<dyn MasterKeySource> {
        Arc::new(
            grantkeeper_keysource::CloudKms::new(
                key,
                endpoint,
                grantkeeper_keysource::Credentials::key_file(
                    &credentials,
                    "vault.kms_credentials_file",
                )
                .unwrap(),
                SystemClock::shared(),
            )
            .unwrap(),
        )
    };

    let unknown = "projects/test/locations/global/keyRings/grantkeeper/cryptoKeys/nope";
    let e = restart(&t, source(unknown, &t.emulator_url))
        .await
        .err()
        .unwrap();
    assert!(e.contains(&format!("is wrapped by kms:{KMS_KEY}")), "{e}");
    assert!(e.contains("keys rewrap"), "{e}");

    let e = restart(&t, source(KMS_KEY, "http://127.0.0.1:1"))
        .await
        .err()
        .unwrap();
    assert!(
        e.contains("vault.kms_endpoint") && e.contains("did not answer"),
        "{e}"
    );

    let file: Value = serde_json::from_slice(&std::fs::read(&credentials).unwrap()).unwrap();
    t.emulator_call(
        "PUT",
        "kms/denied",
        Some(json!({"service_accounts": [file["client_email"]]})),
    )
    .await;
    let e = restart(&t, source(KMS_KEY, &t.emulator_url))
        .await
        .err()
        .unwrap();
    assert!(e.contains("vault.kms_key"), "{e}");
    assert!(
        e.contains("roles/cloudkms.cryptoKeyEncrypterDecrypter"),
        "{e}"
    );
    t.emulator_call("PUT", "kms/denied", Some(json!({"service_accounts": []})))
        .await;

    t.emulator_call(
        "PUT",
        "kms/versions",
        Some(json!({"name": format!("{KMS_KEY}/cryptoKeyVersions/1"), "state": "DISABLED"})),
    )
    .await;
    let e = restart(&t, source(KMS_KEY, &t.emulator_url))
        .await
        .err()
        .unwrap();
    assert!(
        e.contains("DISABLED") && e.contains("enable the key's version"),
        "{e}"
    );
    t.emulator_call(
        "PUT",
        "kms/versions",
        Some(json!({"name": format!("{KMS_KEY}/cryptoKeyVersions/1"), "state": "ENABLED"})),
    )
    .await;

    // A new store, whose first data key is to be wrapped by a key Cloud KMS does not have.
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings_of(&t);
    settings.store_url = format!("sqlite://{}", dir.path().join("new.db").display()).into();
    let store = grantkeeper_store::open(settings.store_url.expose_secret())
        .await
        .unwrap();
    let e = App::new(
        settings,
        store,
        source(unknown, &t.emulator_url),
        SystemClock::shared(),
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("vault.kms_key") && e.contains("create the key"),
        "{e}"
    );

    // Credentials Cloud KMS does not accept (a key file of another project's emulator).
    let elsewhere = kms_app().await;
    let foreign: Arc<dyn MasterKeySource> = Arc::new(
        grantkeeper_keysource::CloudKms::new(
            KMS_KEY,
            &t.emulator_url,
            grantkeeper_keysource::Credentials::key_file(
                elsewhere.kms_credentials.as_ref().unwrap(),
                "vault.kms_credentials_file",
            )
            .unwrap(),
            SystemClock::shared(),
        )
        .unwrap(),
    );
    let e = restart(&t, foreign).await.err().unwrap();
    assert!(
        e.contains("vault.kms_credentials_file") && e.contains("did not accept the credentials"),
        "{e}"
    );

    assert!(restart(&t, source(KMS_KEY, &t.emulator_url)).await.is_ok());
}

#[tokio::test]
async fn a_wrapped_key_altered_or_mislabelled_does_not_unwrap() {
    let t = kms_app().await;
    let store = t.app.store().clone();
    // Two keys, so that one's wrapping can be presented as the other's.
    let mut rotation = Rotation::begin(store.clone(), t.source.as_ref(), SystemClock::shared())
        .await
        .unwrap();
    rotation
        .run(&no_grace(), stop_never(), &|_| {})
        .await
        .unwrap();
    t.signed_in("label@example.com").await;
    let (other, _) = kms_source(&t.emulator_url, t.dir.path()).await;
    let other: Arc<dyn MasterKeySource> = Arc::new(other);
    let mut second = Rotation::begin(store.clone(), other.as_ref(), SystemClock::shared())
        .await
        .unwrap();
    // Key 2 active, key 3 made: stop before anything is retired (both keys stay loaded).
    let (stop, stopped) = tokio::sync::watch::channel(true);
    second.run(&no_grace(), stopped, &|_| {}).await.unwrap();
    drop(stop);
    let keys = store.data_keys().await.unwrap();
    assert!(keys.len() >= 2, "{keys:?}");
    let (a, b) = (&keys[0], &keys[1]);
    let label = format!("kms:{KMS_KEY}");

    // b's wrapping presented as a's: its AAD names b's id, and Cloud KMS refuses it.
    assert!(
        store
            .rewrap_data_key(a.id, &a.wrapped, &b.wrapped, &label)
            .await
            .unwrap()
    );
    let e = restart(&t, other.clone()).await.err().unwrap();
    assert!(
        e.contains(&format!("does not open data key {}", a.id)),
        "{e}"
    );

    // Altered.
    let mut altered = a.wrapped.clone();
    let last = altered.len() - 1;
    altered[last] ^= 0x01;
    assert!(
        store
            .rewrap_data_key(a.id, &b.wrapped, &altered, &label)
            .await
            .unwrap()
    );
    let e = restart(&t, other.clone()).await.err().unwrap();
    assert!(
        e.contains(&format!("does not open data key {}", a.id)),
        "{e}"
    );

    // Labelled as another master key's.
    assert!(
        store
            .rewrap_data_key(a.id, &altered, &a.wrapped, "local")
            .await
            .unwrap()
    );
    let e = restart(&t, other.clone()).await.err().unwrap();
    assert!(
        e.contains("is wrapped by local") && e.contains("keys rewrap"),
        "{e}"
    );

    assert!(
        store
            .rewrap_data_key(a.id, &a.wrapped, &a.wrapped, &label)
            .await
            .unwrap()
    );
    assert!(restart(&t, other).await.is_ok());
}

/// The forms a 32-byte key could take in a file or a log line.
fn spellings(key: &[u8]) -> Vec<(String, Vec<u8>)> {
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        ("raw".into(), key.to_vec()),
        ("base64".into(), STANDARD.encode(key).into_bytes()),
        (
            "base64 unpadded".into(),
            STANDARD
                .encode(key)
                .trim_end_matches('=')
                .as_bytes()
                .to_vec(),
        ),
        ("base64url".into(), URL_SAFE_NO_PAD.encode(key).into_bytes()),
        ("hex".into(), hex.clone().into_bytes()),
        ("HEX".into(), hex.to_uppercase().into_bytes()),
    ]
}

fn files_under(dir: &std::path::Path, skip: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.starts_with(skip) {
            continue;
        }
        if path.is_dir() {
            files_under(&path, skip, out);
        } else {
            out.push(path);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_of_the_master_key_nor_any_data_key_is_left_behind() {
    captured_logs();
    let t = TestApp::start_with(Options {
        kms: true,
        // The emulator's Cloud KMS keeps its key material under dir/emulator/: Google's side,
        // left out of the scan but read to know what to look for.
        emulator_data_dir: true,
        ..Options::default()
    })
    .await;
    let key = t.api_key(&[Token, UsersRead]).await;
    let mut subs = Vec::new();
    for i in 0..5 {
        subs.push(t.signed_in(&format!("scan-{i}@example.com")).await);
    }
    for sub in &subs {
        assert_eq!(hand_out(&t, &key, sub, 3600).await.status, 200);
    }
    let store = t.app.store().clone();
    let mut rotation = Rotation::begin(store.clone(), t.source.as_ref(), SystemClock::shared())
        .await
        .unwrap();
    rotation
        .run(&no_grace(), stop_never(), &|_| {})
        .await
        .unwrap();
    for sub in &subs {
        assert_eq!(hand_out(&t, &key, sub, 3600).await.status, 200);
    }
    t.app.shutdown().await;

    // What to look for: the KMS key's material, and every data key ever made, unwrapped.
    let kms_state: Value = serde_json::from_slice(
        &std::fs::read(t.dir.path().join("emulator").join("kms.json")).unwrap(),
    )
    .unwrap();
    let mut needles = Vec::new();
    for version in kms_state["keys"][KMS_KEY]["versions"].as_array().unwrap() {
        let material = STANDARD
            .decode(version["material"].as_str().unwrap())
            .unwrap();
        for (form, bytes) in spellings(&material) {
            needles.push((format!("the KMS key's material ({form})"), bytes));
        }
    }
    let statuses = store.data_key_statuses().await.unwrap();
    assert_eq!(statuses.len(), 2);
    // Every key, retired ones included, through an export (which carries their wrappings).
    let (rows, _) = store
        .export_page(grantkeeper_store::ExportKind::DataKey, None, 10)
        .await
        .unwrap();
    for row in rows {
        let id = row.row["id"].as_u64().unwrap() as u32;
        let wrapped = STANDARD
            .decode(row.row["wrapped"].as_str().unwrap())
            .unwrap();
        let data_key = t.source.unwrap(KeyId(id), &wrapped).await.unwrap();
        for (form, bytes) in spellings(data_key.as_slice()) {
            needles.push((format!("data key {id} ({form})"), bytes));
        }
    }

    let mut haystacks: Vec<(String, Vec<u8>)> =
        vec![("the logs".into(), captured_logs().into_bytes())];
    let mut files = Vec::new();
    files_under(t.dir.path(), &t.dir.path().join("emulator"), &mut files);
    assert!(
        files.iter().any(|f| f.ends_with("grantkeeper.db")),
        "{files:?}"
    );
    for file in files {
        haystacks.push((file.display().to_string(), std::fs::read(&file).unwrap()));
    }
    for (what, haystack) in &haystacks {
        for (needle_name, needle) in &needles {
            assert!(
                !haystack
                    .windows(needle.len())
                    .any(|w| w == needle.as_slice()),
                "{needle_name} found in {what}"
            );
        }
    }
}

/// The figure: sign-ins (each a code exchange, an ID-token check, a refresh token and an access
/// token sealed and stored) ask Cloud KMS nothing. 2,000 here, to keep the suite quick;
/// `GRANTKEEPER_TEST_KMS_SIGN_INS=10000` gives BENCHMARKS.md's figure (about a minute).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_by_the_thousand_ask_cloud_kms_nothing() {
    let sign_ins: usize = std::env::var("GRANTKEEPER_TEST_KMS_SIGN_INS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000);
    const AT_ONCE: usize = 16;
    let t = Arc::new(kms_app().await);
    let before = t.kms_requests().await;
    let started = grantkeeper_core::Stopwatch::start();
    let mut workers = Vec::new();
    for w in 0..AT_ONCE {
        let t = t.clone();
        workers.push(tokio::spawn(async move {
            for i in (w..sign_ins).step_by(AT_ONCE) {
                t.signed_in(&format!("many-{i}@example.com")).await;
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let calls = t.kms_requests().await - before;
    eprintln!(
        "{sign_ins} sign-ins in {:.1} s: {calls} Cloud KMS calls",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(calls, 0);
    assert_eq!(
        t.app.store().data_key_statuses().await.unwrap()[0].sealed_values,
        2 * sign_ins as u64,
        "each sign-in sealed a refresh and an access token"
    );
}
