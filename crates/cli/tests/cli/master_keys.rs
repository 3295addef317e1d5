//! The master key off the host, as an operator runs it: `dev --kms` with the emulated Cloud
//! KMS (and back to a key file), `serve` refusing credentials it cannot find, and a deployment
//! moved into SoftHSM2 with `keys rewrap` that serves, rotates, is checked, refuses a wrong PIN
//! or module, and moves back to a file.

use super::{client, run, run_with_env, sign_in, start, start_with_env};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A file only its owner may read, as secrets' files must be.
fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn api_key(data: &Path) -> String {
    std::fs::read_to_string(data.join("dev-api-key"))
        .unwrap()
        .trim()
        .to_owned()
}

async fn hand_out(url: &str, key: &str, sub: &str) -> reqwest::StatusCode {
    client()
        .post(format!("{url}/v1/users/{sub}/token"))
        .bearer_auth(key)
        .json(&serde_json::json!({"min_ttl": 0}))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn dev_keeps_its_master_key_in_the_emulated_kms_and_moves_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let http = client();

    let dev = start(&[
        "dev",
        "--kms",
        "--addr",
        "127.0.0.1:0",
        "--data-dir",
        data_arg,
    ]);
    assert!(
        dev.stdout
            .iter()
            .any(|l| l.starts_with("master key: kms:projects/")),
        "{:?}",
        dev.stdout
    );
    assert!(!data.join("master.key").exists(), "no key file in KMS mode");
    let config = std::fs::read_to_string(data.join("grantkeeper.toml")).unwrap();
    assert!(config.contains("kms_key = \"projects/"), "{config}");
    let (answer, _) = sign_in(&http, &dev.url, &data, "kms-dev@example.com").await;
    let sub = answer["user"]["sub"].as_str().unwrap().to_owned();
    let key = api_key(&data);
    assert_eq!(hand_out(&dev.url, &key, &sub).await, 200);

    let (ok, listed) = run(&["keys", "list", "--data-dir", data_arg]);
    assert!(ok, "{listed}");
    assert!(
        listed.contains("WRAPPED BY") && listed.contains("kms:projects/"),
        "{listed}"
    );
    let (_, checked) = run(&["check", "--data-dir", data_arg]);
    assert!(
        checked.lines().any(|l| l.starts_with("ok")
            && l.contains("master key: kms:projects/")
            && l.contains("answers")),
        "{checked}"
    );
    drop(dev);

    // Started again (on another port), the emulated KMS still holds the key.
    let dev = start(&[
        "dev",
        "--kms",
        "--addr",
        "127.0.0.1:0",
        "--data-dir",
        data_arg,
    ]);
    assert_eq!(hand_out(&dev.url, &key, &sub).await, 200);
    drop(dev);

    // Without --kms, the data keys move to a new master.key.
    let dev = start(&["dev", "--addr", "127.0.0.1:0", "--data-dir", data_arg]);
    assert!(
        dev.stdout
            .iter()
            .any(|l| l.starts_with("moved 1 data keys from kms:projects/")
                && l.ends_with("to local (keys rewrap)")),
        "{:?}",
        dev.stdout
    );
    assert!(data.join("master.key").exists());
    assert_eq!(hand_out(&dev.url, &key, &sub).await, 200);
    let (_, listed) = run(&["keys", "list", "--data-dir", data_arg]);
    assert!(!listed.contains("kms:"), "{listed}");
}

#[test]
fn serve_refuses_a_kms_key_without_credentials_naming_what_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("grantkeeper.toml");
    std::fs::write(
        &config,
        "[provider]\nclient_id = \"x.apps.googleusercontent.com\"\nclient_secret = \"GOCSPX-s\"\n\
         [store]\nurl = \"sqlite://gk.db\"\n\
         [vault]\nkms_key = \"projects/p/locations/global/keyRings/r/cryptoKeys/k\"\n",
    )
    .unwrap();
    // No key file in the environment, and no metadata server where it is said to be.
    let (ok, text) = run_with_env(
        &["serve", "--config", config.to_str().unwrap()],
        &[("GCE_METADATA_HOST", "127.0.0.1:1")],
    );
    assert!(!ok);
    assert!(
        text.contains("GCE_METADATA_HOST") && text.contains("no credentials"),
        "{text}"
    );
    assert!(text.contains("GOOGLE_APPLICATION_CREDENTIALS"), "{text}");

    // Two master keys named at once.
    std::fs::write(
        &config,
        "[provider]\nclient_id = \"x.apps.googleusercontent.com\"\nclient_secret = \"GOCSPX-s\"\n\
         [vault]\nkms_key = \"projects/p/locations/global/keyRings/r/cryptoKeys/k\"\n\
         pkcs11 = \"pkcs11:token=t;object=o\"\n",
    )
    .unwrap();
    let (ok, text) = run(&["serve", "--config", config.to_str().unwrap()]);
    assert!(!ok);
    assert!(text.contains("more than one master key"), "{text}");
}

const SOFTHSM_MODULES: [&str; 3] = [
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
];

/// A random AES-256 key that `softhsm2-util --import --aes` takes whole: it reads the file as
/// a C string up to the first newline, so a zero or newline byte would cut the key short and
/// leave a token key that no AES mechanism accepts (CKR_MECHANISM_INVALID at C_EncryptInit).
fn importable_key() -> [u8; 32] {
    loop {
        let key = grantkeeper_core::random::bytes::<32>();
        if !key.iter().any(|b| matches!(b, b'\0' | b'\n')) {
            return key;
        }
    }
}

/// A SoftHSM2 store under `dir` with the token `grantkeeper` (PIN 1234) holding the AES-256
/// key `master`; its configuration's path and the module. None when SoftHSM2 is missing.
fn softhsm(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let module = SOFTHSM_MODULES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    let (Some(module), Ok(_)) = (module, Command::new("softhsm2-util").arg("-v").output()) else {
        grantkeeper_testkit::cannot_run("SoftHSM2 is not installed (apt-get install softhsm2)");
        return None;
    };
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let util = |args: &[&str]| {
        let out = Command::new("softhsm2-util")
            .args(args)
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "softhsm2-util {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    util(&[
        "--init-token",
        "--free",
        "--label",
        "grantkeeper",
        "--pin",
        "1234",
        "--so-pin",
        "5678",
    ]);
    // The key is imported from a file that is deleted at once (the library's tests generate
    // theirs inside the token).
    let raw = dir.join("aes.key");
    std::fs::write(&raw, importable_key()).unwrap();
    util(&[
        "--import",
        raw.to_str().unwrap(),
        "--aes",
        "--token",
        "grantkeeper",
        "--label",
        "master",
        "--id",
        "01",
        "--pin",
        "1234",
    ]);
    std::fs::remove_file(&raw).unwrap();
    Some((conf, module))
}

#[tokio::test]
async fn a_deployment_moves_into_an_hsm_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let Some((conf, module)) = softhsm(dir.path()) else {
        return;
    };
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let http = client();
    let dev = start(&["dev", "--addr", "127.0.0.1:0", "--data-dir", data_arg]);
    let (answer, _) = sign_in(&http, &dev.url, &data, "hsm@example.com").await;
    let sub = answer["user"]["sub"].as_str().unwrap().to_owned();
    let key = api_key(&data);
    assert_eq!(hand_out(&dev.url, &key, &sub).await, 200);
    drop(dev);

    let env = [("SOFTHSM2_CONF", conf.to_str().unwrap())];
    let pin = dir.path().join("pin");
    write_private(&pin, "1234\n");
    let uri = "pkcs11:token=grantkeeper;object=master";
    let rewrap_to_hsm = [
        "keys",
        "rewrap",
        "--data-dir",
        data_arg,
        "--to",
        uri,
        "--pkcs11-module",
        module.to_str().unwrap(),
        "--pkcs11-pin-file",
        pin.to_str().unwrap(),
    ];
    let (ok, text) = run_with_env(&rewrap_to_hsm, &env);
    assert!(ok, "{text}");
    assert!(text.contains(r#"{"event":"rewrapped","key":1}"#), "{text}");
    // Run again: nothing left to do.
    let (ok, text) = run_with_env(&rewrap_to_hsm, &env);
    assert!(ok, "{text}");
    assert!(text.contains(r#"{"event":"already","key":1}"#), "{text}");
    let (_, listed) = run(&["keys", "list", "--data-dir", data_arg]);
    assert!(listed.contains(uri), "{listed}");

    // The servers' configuration names the HSM now.
    let dev_config = std::fs::read_to_string(data.join("grantkeeper.toml")).unwrap();
    let vault = format!(
        "[vault]\npkcs11 = {uri:?}\npkcs11_module = {:?}\npkcs11_pin_file = {:?}\nreload_interval = \"1s\"\n",
        module.display().to_string(),
        pin.display().to_string()
    );
    let serve_config = dev_config
        .lines()
        .map(|l| {
            if l.starts_with("addr = ") {
                "addr = \"127.0.0.1:0\"".to_owned()
            } else if l == "[vault]" {
                vault.clone()
            } else if l.starts_with("master_key_file") {
                String::new()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let config = data.join("serve.toml");
    std::fs::write(&config, serve_config).unwrap();
    let config_arg = config.to_str().unwrap();

    let serve = start_with_env(&["serve", "--config", config_arg], &env);
    assert_eq!(hand_out(&serve.url, &key, &sub).await, 200);
    let (_, checked) = run_with_env(&["check", "--config", config_arg], &env);
    assert!(
        checked
            .lines()
            .any(|l| l.starts_with("ok") && l.contains(&format!("master key: {uri} answers"))),
        "{checked}"
    );
    // A rotation while it runs: the new key is wrapped in the HSM too, and the server opens
    // what was sealed under it.
    let (ok, text) = run_with_env(
        &["keys", "rotate", "--config", config_arg, "--grace", "2s"],
        &env,
    );
    assert!(ok, "{text}");
    let (_, listed) = run_with_env(&["keys", "list", "--json", "--config", config_arg], &env);
    let keys: Vec<Value> = listed
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(keys.len(), 2, "{listed}");
    assert!(keys.iter().all(|k| k["wrapped_by"] == uri), "{listed}");
    assert_eq!(hand_out(&serve.url, &key, &sub).await, 200);
    drop(serve);

    // A wrong PIN, a missing module: serve refuses, naming the setting.
    let wrong = dir.path().join("wrong-pin");
    write_private(&wrong, "0000\n");
    let bad = std::fs::read_to_string(&config)
        .unwrap()
        .replace(pin.to_str().unwrap(), wrong.to_str().unwrap());
    std::fs::write(data.join("bad.toml"), bad).unwrap();
    let (ok, text) = run_with_env(
        &["serve", "--config", data.join("bad.toml").to_str().unwrap()],
        &env,
    );
    assert!(!ok);
    assert!(
        text.contains("vault.pkcs11_pin_file") && text.contains("refused the PIN"),
        "{text}"
    );
    assert!(!text.contains("0000"), "{text}");
    let bad = std::fs::read_to_string(&config)
        .unwrap()
        .replace(module.to_str().unwrap(), "/nonexistent/libpkcs11.so");
    std::fs::write(data.join("bad.toml"), bad).unwrap();
    let (ok, text) = run_with_env(
        &["serve", "--config", data.join("bad.toml").to_str().unwrap()],
        &env,
    );
    assert!(!ok);
    assert!(
        text.contains("vault.pkcs11_module") && text.contains("cannot load"),
        "{text}"
    );

    // And back to a key file.
    let (ok, text) = run_with_env(
        &[
            "keys",
            "rewrap",
            "--config",
            config_arg,
            "--to",
            &format!("file:{}", data.join("master.key").display()),
        ],
        &env,
    );
    assert!(ok, "{text}");
    let (_, listed) = run(&["keys", "list", "--json", "--data-dir", data_arg]);
    assert!(
        listed
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .all(|k| k["wrapped_by"] == "local" || k["retired_at"] != Value::Null),
        "{listed}"
    );
    let dev = start(&["dev", "--addr", "127.0.0.1:0", "--data-dir", data_arg]);
    assert_eq!(hand_out(&dev.url, &key, &sub).await, 200);
}
