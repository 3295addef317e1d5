//! The PKCS#11 source against SoftHSM2, each test with its own token (see [`super::softhsm`]).

use super::softhsm::{self, Hsm, PIN};
use grantkeeper_core::master::{MasterKeyError, MasterKeySource, round_trip};
use grantkeeper_core::{KeyId, SecretString, Vault};
use grantkeeper_keysource::{Pkcs11Key, Pkcs11Settings, Wrapping};

const URI: &str = "pkcs11:token=grantkeeper;object=master";

fn settings(hsm: &Hsm, uri: &str, pin: &str) -> Pkcs11Settings {
    Pkcs11Settings {
        uri: uri.to_owned(),
        module: Some(hsm.module.clone()),
        pin: Some(SecretString::from(pin)),
        pin_setting: "vault.pkcs11_pin_file",
        wrapping: None,
    }
}

fn refused(e: MasterKeyError) -> grantkeeper_core::SettingProblem {
    match e {
        MasterKeyError::Refused(p) => p,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn check_binding(key: &Pkcs11Key) -> Vec<u8> {
    let data_key = Vault::generate_data_key();
    let wrapped = key.wrap(KeyId(7), &data_key).await.unwrap();
    assert!(!wrapped.windows(32).any(|w| w == data_key.as_slice()));
    assert_eq!(*key.unwrap(KeyId(7), &wrapped).await.unwrap(), *data_key);
    assert_eq!(
        key.unwrap(KeyId(8), &wrapped).await.unwrap_err(),
        MasterKeyError::Unwrap,
        "another id"
    );
    for i in 0..wrapped.len() {
        let mut altered = wrapped.clone();
        altered[i] ^= 0x01;
        assert_eq!(
            key.unwrap(KeyId(7), &altered).await.unwrap_err(),
            MasterKeyError::Unwrap,
            "byte {i}"
        );
    }
    assert_eq!(
        key.unwrap(KeyId(7), &wrapped[..wrapped.len() - 1])
            .await
            .unwrap_err(),
        MasterKeyError::Unwrap
    );
    wrapped
}

#[tokio::test]
async fn an_aes_key_in_the_token_wraps_with_gcm() {
    let Some(hsm) = softhsm::token("keysource::pkcs11::an_aes_key_in_the_token_wraps_with_gcm")
    else {
        return;
    };
    hsm.make_key("master", &[1]);
    let key = Pkcs11Key::open(settings(&hsm, URI, PIN)).await.unwrap();
    assert_eq!(key.label(), URI);
    assert_eq!(key.wrapping(), Wrapping::AesGcm);
    let wrapped = check_binding(&key).await;
    assert_eq!(wrapped[0], 0x01);
    assert_eq!(wrapped.len(), 1 + 12 + 32 + 16);
    round_trip(&key).await.unwrap();

    // Calls from many tasks at once share the session.
    let data_key = Vault::generate_data_key();
    let calls = (0..16u32).map(|i| key.wrap(KeyId(i), &data_key));
    let wrapped: Vec<_> = futures_util::future::join_all(calls).await;
    for (i, w) in wrapped.into_iter().enumerate() {
        let w = w.unwrap();
        assert_eq!(*key.unwrap(KeyId(i as u32), &w).await.unwrap(), *data_key);
    }
}

#[tokio::test]
async fn key_wrap_with_padding_binds_the_id_too() {
    let Some(hsm) = softhsm::token("keysource::pkcs11::key_wrap_with_padding_binds_the_id_too")
    else {
        return;
    };
    hsm.make_key("master", &[1]);
    let mut forced = settings(&hsm, URI, PIN);
    forced.wrapping = Some(Wrapping::AesKeyWrapPad);
    let key = Pkcs11Key::open(forced).await.unwrap();
    assert_eq!(key.wrapping(), Wrapping::AesKeyWrapPad);
    let wrapped = check_binding(&key).await;
    assert_eq!(wrapped[0], 0x02);
    // Each wrapping says how it was made: the GCM source opens it, and the other way round.
    let gcm = Pkcs11Key::open(settings(&hsm, URI, PIN)).await.unwrap();
    assert!(gcm.unwrap(KeyId(7), &wrapped).await.is_ok());
    let by_gcm = gcm.wrap(KeyId(3), &[3; 32]).await.unwrap();
    assert_eq!(*key.unwrap(KeyId(3), &by_gcm).await.unwrap(), [3; 32]);
}

#[tokio::test]
async fn each_wrong_setting_is_named_with_its_fix() {
    let Some(hsm) = softhsm::token("keysource::pkcs11::each_wrong_setting_is_named_with_its_fix")
    else {
        return;
    };
    hsm.make_key("master", &[1]);

    let p = refused(
        Pkcs11Key::open(settings(&hsm, URI, "0000"))
            .await
            .err()
            .unwrap(),
    );
    assert_eq!(p.setting, "vault.pkcs11_pin_file");
    assert!(p.problem.contains("refused the PIN"), "{p}");
    assert!(!p.to_string().contains("0000"));

    let mut missing = settings(&hsm, URI, PIN);
    missing.module = Some("/nonexistent/libpkcs11-nothing.so".into());
    let p = refused(Pkcs11Key::open(missing).await.err().unwrap());
    assert_eq!(p.setting, "vault.pkcs11_module");
    assert!(p.problem.contains("cannot load"), "{p}");
    assert!(p.fix.contains("softhsm2"), "{p}");

    let p = refused(
        Pkcs11Key::open(settings(&hsm, "pkcs11:token=nope;object=master", PIN))
            .await
            .err()
            .unwrap(),
    );
    assert_eq!(p.setting, "vault.pkcs11");
    assert!(p.problem.contains("no token"), "{p}");

    let p = refused(
        Pkcs11Key::open(settings(&hsm, "pkcs11:token=grantkeeper;object=other", PIN))
            .await
            .err()
            .unwrap(),
    );
    assert!(p.problem.contains("no secret key"), "{p}");

    let p = refused(
        Pkcs11Key::open(settings(&hsm, "pkcs11:token=grantkeeper", PIN))
            .await
            .err()
            .unwrap(),
    );
    assert!(p.problem.contains("object="), "{p}");

    // Two keys of one label: the URI must say which (by id).
    hsm.make_key("master", &[2]);
    let p = refused(
        Pkcs11Key::open(settings(&hsm, URI, PIN))
            .await
            .err()
            .unwrap(),
    );
    assert!(p.problem.contains("several keys"), "{p}");
    let by_id = Pkcs11Key::open(settings(&hsm, &format!("{URI};id=%02"), PIN))
        .await
        .unwrap();
    round_trip(&by_id).await.unwrap();
    // The other key of the same label does not unwrap what this one wrapped.
    let first = Pkcs11Key::open(settings(&hsm, &format!("{URI};id=%01"), PIN))
        .await
        .unwrap();
    let wrapped = by_id.wrap(KeyId(1), &[1; 32]).await.unwrap();
    assert_eq!(
        first.unwrap(KeyId(1), &wrapped).await.unwrap_err(),
        MasterKeyError::Unwrap
    );
}

#[tokio::test]
async fn the_uri_may_name_the_module_and_the_pin_file() {
    let Some(hsm) =
        softhsm::token("keysource::pkcs11::the_uri_may_name_the_module_and_the_pin_file")
    else {
        return;
    };
    hsm.make_key("master", &[1]);
    let pin_file = hsm.dir.join("pin");
    std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
    let uri = format!(
        "{URI}?module-path={}&pin-source=file:{}",
        hsm.module.display(),
        pin_file.display()
    );
    let key = Pkcs11Key::open(Pkcs11Settings {
        uri,
        module: None,
        pin: None,
        pin_setting: "vault.pkcs11_pin_file",
        wrapping: None,
    })
    .await
    .unwrap();
    // The label leaves the module and the PIN's file out.
    assert_eq!(key.label(), URI);
    round_trip(&key).await.unwrap();
}
