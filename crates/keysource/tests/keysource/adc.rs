//! Application Default Credentials: the key file named by GOOGLE_APPLICATION_CREDENTIALS, else
//! the metadata server at GCE_METADATA_HOST, each against the emulator.

use super::emu::{Emu, KEY};
use grantkeeper_core::KeyId;
use grantkeeper_core::master::{MasterKeyError, MasterKeySource};
use grantkeeper_keysource::Credentials;
use serde_json::json;
use std::collections::HashMap;

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

fn problem(e: MasterKeyError) -> (bool, grantkeeper_core::SettingProblem) {
    match e {
        MasterKeyError::Refused(p) => (true, p),
        MasterKeyError::Unavailable(p) => (false, p),
        MasterKeyError::Unwrap => panic!("expected a refusal or an outage"),
    }
}

#[tokio::test]
async fn the_key_file_of_the_environment_comes_first() {
    let emu = Emu::start().await;
    let (path, file) = emu.key_file("gk").await;
    let credentials = Credentials::from_env(env(&[
        ("GOOGLE_APPLICATION_CREDENTIALS", path.to_str().unwrap()),
        ("GCE_METADATA_HOST", "127.0.0.1:1"),
    ]))
    .unwrap();
    let described = credentials.describe();
    assert!(
        described.contains(file["client_email"].as_str().unwrap()),
        "{described}"
    );
    let kms = emu.kms(KEY, credentials);
    let wrapped = kms.wrap(KeyId(1), &[1; 32]).await.unwrap();
    assert_eq!(*kms.unwrap(KeyId(1), &wrapped).await.unwrap(), [1; 32]);
    // The private key is nowhere in what can be printed.
    let pem = file["private_key"].as_str().unwrap();
    let body = pem.lines().nth(1).unwrap();
    assert!(!format!("{:?}", Credentials::key_file(&path, "x").unwrap()).contains(body));
}

#[tokio::test]
async fn without_a_key_file_the_metadata_server_answers() {
    let emu = Emu::start().await;
    let credentials = Credentials::from_env(env(&[("GCE_METADATA_HOST", &emu.host)])).unwrap();
    assert!(credentials.describe().contains(&emu.host));
    let kms = emu.kms(KEY, credentials);
    let wrapped = kms.wrap(KeyId(3), &[3; 32]).await.unwrap();
    assert_eq!(*kms.unwrap(KeyId(3), &wrapped).await.unwrap(), [3; 32]);
    assert_eq!(emu.tokens_issued().await, 1);

    // Denied, the fix names the instance's account, as the metadata server tells it.
    let project = emu.get("/_emulator/clients").await["project_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let account = format!("{project}-compute@developer.gserviceaccount.com");
    emu.put(
        "/_emulator/kms/denied",
        json!({"service_accounts": [account]}),
    )
    .await;
    let (refused, p) = problem(kms.unwrap(KeyId(3), &wrapped).await.unwrap_err());
    assert!(refused);
    assert!(p.fix.contains(&account), "{p}");
}

#[tokio::test]
async fn no_metadata_server_is_an_outage_that_says_what_to_set() {
    let emu = Emu::start().await;
    // Nothing listens on port 1.
    let credentials = Credentials::from_env(env(&[("GCE_METADATA_HOST", "127.0.0.1:1")])).unwrap();
    let kms = emu.kms(KEY, credentials);
    let (refused, p) = problem(kms.wrap(KeyId(1), &[1; 32]).await.unwrap_err());
    assert!(!refused);
    assert_eq!(p.setting, "GCE_METADATA_HOST");
    assert!(p.problem.contains("no credentials"), "{p}");
    assert!(p.fix.contains("GOOGLE_APPLICATION_CREDENTIALS"), "{p}");
    assert_eq!(emu.kms_requests().await, 0, "no call without a token");

    // A host path is not a host.
    assert!(Credentials::from_env(env(&[("GCE_METADATA_HOST", "h/x")])).is_err());
}

#[tokio::test]
async fn a_server_that_is_not_the_metadata_server_is_not_trusted() {
    let emu = Emu::start().await;
    // It answers a token, but without Metadata-Flavor: Google.
    let impostor = axum::Router::new().fallback(|| async {
        axum::Json(
            json!({"access_token": "ya29.stolen", "expires_in": 3600, "token_type": "Bearer"}),
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, impostor).await.unwrap() });
    let kms = emu.kms(
        KEY,
        Credentials::from_env(env(&[("GCE_METADATA_HOST", &host)])).unwrap(),
    );
    let (refused, p) = problem(kms.wrap(KeyId(1), &[1; 32]).await.unwrap_err());
    assert!(refused);
    assert!(p.problem.contains("not a metadata server"), "{p}");
    assert_eq!(emu.kms_requests().await, 0);
}

#[tokio::test]
async fn bad_key_files_are_refused_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let setting = "GOOGLE_APPLICATION_CREDENTIALS";
    let missing = dir.path().join("missing.json");
    let e = Credentials::key_file(&missing, setting).unwrap_err();
    let (_, p) = problem(e);
    assert_eq!(p.setting, setting);
    assert!(p.problem.contains("cannot read"), "{p}");

    let user = dir.path().join("user.json");
    std::fs::write(
        &user,
        r#"{"type": "authorized_user", "refresh_token": "1//SECRET"}"#,
    )
    .unwrap();
    let (_, p) = problem(Credentials::key_file(&user, setting).unwrap_err());
    assert!(p.problem.contains("authorized_user"), "{p}");
    assert!(!p.to_string().contains("1//SECRET"));

    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "private_key: SECRETSECRET").unwrap();
    let (_, p) = problem(Credentials::key_file(&garbage, setting).unwrap_err());
    assert!(p.problem.contains("not a service account key file"), "{p}");
    assert!(!p.to_string().contains("SECRETSECRET"));

    // A key file whose key the token endpoint does not know (deleted, or of another project).
    let emu = Emu::start().await;
    let other = Emu::start().await;
    let (path, _) = other.key_file("elsewhere").await;
    let mut file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    file["token_uri"] = json!(format!("{}/token", emu.base));
    std::fs::write(&path, file.to_string()).unwrap();
    let kms = emu.kms(KEY, Credentials::key_file(&path, setting).unwrap());
    let (refused, p) = problem(kms.wrap(KeyId(1), &[1; 32]).await.unwrap_err());
    assert!(refused);
    assert_eq!(p.setting, setting);
    assert!(p.problem.contains("invalid_grant"), "{p}");
    assert!(p.fix.contains("create a new key"), "{p}");
}
