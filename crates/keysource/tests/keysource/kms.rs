//! The Cloud KMS source against the emulated Cloud KMS: wrapping bound to the key id,
//! versions, each refusal turned into the setting and the fix, outages, checksums, tokens.

use super::emu::{Emu, KEY};
use grantkeeper_core::master::{MasterKeyError, MasterKeySource, round_trip};
use grantkeeper_core::{KeyId, Vault};
use grantkeeper_keysource::Credentials;
use serde_json::json;

fn refused(e: MasterKeyError) -> grantkeeper_core::SettingProblem {
    match e {
        MasterKeyError::Refused(p) => p,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn unavailable(e: MasterKeyError) -> grantkeeper_core::SettingProblem {
    match e {
        MasterKeyError::Unavailable(p) => p,
        other => panic!("expected an outage, got {other:?}"),
    }
}

#[tokio::test]
async fn data_keys_wrap_and_unwrap_bound_to_their_id() {
    let emu = Emu::start().await;
    let (kms, _) = emu.client().await;
    assert_eq!(kms.label(), format!("kms:{KEY}"));
    let data_key = Vault::generate_data_key();
    let wrapped = kms.wrap(KeyId(1), &data_key).await.unwrap();
    assert!(!wrapped.windows(32).any(|w| w == data_key.as_slice()));
    assert_eq!(*kms.unwrap(KeyId(1), &wrapped).await.unwrap(), *data_key);

    // Presented for another id: the AAD differs and Cloud KMS refuses it.
    assert_eq!(
        kms.unwrap(KeyId(2), &wrapped).await.unwrap_err(),
        MasterKeyError::Unwrap
    );
    // Altered anywhere: refused.
    for i in [0, wrapped.len() / 2, wrapped.len() - 1] {
        let mut altered = wrapped.clone();
        altered[i] ^= 0x01;
        assert_eq!(
            kms.unwrap(KeyId(1), &altered).await.unwrap_err(),
            MasterKeyError::Unwrap,
            "byte {i}"
        );
    }
    // Under another key of Cloud KMS: refused.
    let other = "projects/demo/locations/global/keyRings/grantkeeper/cryptoKeys/other";
    emu.post("/_emulator/kms/keys", json!({"name": other}), 201)
        .await;
    let (path, _) = emu.key_file("second").await;
    let elsewhere = emu.kms(other, Credentials::key_file(&path, "t").unwrap());
    assert_eq!(
        elsewhere.unwrap(KeyId(1), &wrapped).await.unwrap_err(),
        MasterKeyError::Unwrap
    );
    round_trip(&kms).await.unwrap();
}

#[tokio::test]
async fn a_new_primary_version_wraps_and_older_ones_still_unwrap() {
    let emu = Emu::start().await;
    let (kms, _) = emu.client().await;
    let first = Vault::generate_data_key();
    let old = kms.wrap(KeyId(1), &first).await.unwrap();
    emu.post("/_emulator/kms/versions", json!({"name": KEY}), 200)
        .await;
    let second = Vault::generate_data_key();
    let new = kms.wrap(KeyId(2), &second).await.unwrap();
    assert_eq!(*kms.unwrap(KeyId(1), &old).await.unwrap(), *first);
    assert_eq!(*kms.unwrap(KeyId(2), &new).await.unwrap(), *second);

    // Version 1 disabled: what it wrapped does not unwrap, and the message says what to do.
    emu.put(
        "/_emulator/kms/versions",
        json!({"name": format!("{KEY}/cryptoKeyVersions/1"), "state": "DISABLED"}),
    )
    .await;
    let p = refused(kms.unwrap(KeyId(1), &old).await.unwrap_err());
    assert_eq!(p.setting, "vault.kms_key");
    assert!(p.problem.contains("DISABLED"), "{p}");
    assert!(p.fix.contains("enable the key's version"), "{p}");
    assert_eq!(*kms.unwrap(KeyId(2), &new).await.unwrap(), *second);
}

#[tokio::test]
async fn an_unknown_key_and_a_denied_account_are_refused_with_the_fix() {
    let emu = Emu::start().await;
    let (path, file) = emu.key_file("grantkeeper").await;
    let missing = emu.kms(
        "projects/demo/locations/global/keyRings/grantkeeper/cryptoKeys/nope",
        Credentials::key_file(&path, "GOOGLE_APPLICATION_CREDENTIALS").unwrap(),
    );
    let p = refused(missing.wrap(KeyId(1), &[1; 32]).await.unwrap_err());
    assert_eq!(p.setting, "vault.kms_key");
    assert!(p.problem.contains("has no key"), "{p}");
    assert!(p.fix.contains("create the key"), "{p}");

    let (kms, _) = emu.client().await;
    let wrapped = kms.wrap(KeyId(1), &[1; 32]).await.unwrap();
    let email = file["client_email"].as_str().unwrap();
    emu.put(
        "/_emulator/kms/denied",
        json!({"service_accounts": [email]}),
    )
    .await;
    let denied = emu.kms(
        KEY,
        Credentials::key_file(&path, "GOOGLE_APPLICATION_CREDENTIALS").unwrap(),
    );
    let p = refused(denied.unwrap(KeyId(1), &wrapped).await.unwrap_err());
    assert_eq!(p.setting, "vault.kms_key");
    assert!(
        p.problem.contains("PERMISSION") || p.problem.contains("denied"),
        "{p}"
    );
    assert!(
        p.fix.contains(email) && p.fix.contains("roles/cloudkms.cryptoKeyEncrypterDecrypter"),
        "{p}"
    );
    // Refusals are not retried: one call each.
    let before = emu.kms_requests().await;
    assert!(denied.wrap(KeyId(2), &[2; 32]).await.is_err());
    assert_eq!(emu.kms_requests().await, before + 1);
}

#[tokio::test]
async fn an_outage_is_retried_then_reported_as_unavailable() {
    let emu = Emu::start().await;
    let (kms, _) = emu.client().await;
    let wrapped = kms.wrap(KeyId(1), &[9; 32]).await.unwrap();

    // One failure in two: the retry gets through.
    emu.put(
        "/_emulator/faults",
        json!({"kms": {"status": 503, "error_rate": 0.5}}),
    )
    .await;
    assert_eq!(*kms.unwrap(KeyId(1), &wrapped).await.unwrap(), [9; 32]);

    emu.put("/_emulator/faults", json!({"kms": {"status": 503}}))
        .await;
    let before = emu.kms_requests().await;
    let p = unavailable(kms.unwrap(KeyId(1), &wrapped).await.unwrap_err());
    assert_eq!(p.setting, "vault.kms_endpoint");
    assert!(p.problem.contains("503"), "{p}");
    assert_eq!(emu.kms_requests().await, before + 3, "three tries");
    emu.put("/_emulator/faults", json!({})).await;

    emu.stop().await;
    let p = unavailable(kms.unwrap(KeyId(1), &wrapped).await.unwrap_err());
    assert_eq!(p.setting, "vault.kms_endpoint");
    assert!(p.problem.contains("did not answer"), "{p}");
}

#[tokio::test]
async fn answers_corrupted_in_transit_are_caught_by_their_checksums() {
    let emu = Emu::start().await;
    let (kms, _) = emu.client().await;
    let key = Vault::generate_data_key();
    // Every other answer arrives corrupted: each call needs a second try, and still gets the
    // right bytes.
    emu.put(
        "/_emulator/faults",
        json!({"kms": {"corrupt": true, "error_rate": 0.5}}),
    )
    .await;
    // Calls 0, 2, 4 answer as they should, 1 and 3 arrive corrupted.
    let before = emu.kms_requests().await;
    let wrapped = kms.wrap(KeyId(1), &key).await.unwrap();
    assert_eq!(emu.kms_requests().await, before + 1);
    assert_eq!(*kms.unwrap(KeyId(1), &wrapped).await.unwrap(), *key);
    assert_eq!(
        emu.kms_requests().await,
        before + 3,
        "a plaintext corrupted, then tried again"
    );
    let again = kms.wrap(KeyId(2), &key).await.unwrap();
    assert_eq!(
        emu.kms_requests().await,
        before + 5,
        "a ciphertext corrupted, then tried again"
    );
    emu.put("/_emulator/faults", json!({})).await;
    assert_eq!(*kms.unwrap(KeyId(2), &again).await.unwrap(), *key);

    emu.put("/_emulator/faults", json!({"kms": {"corrupt": true}}))
        .await;
    let p = unavailable(kms.wrap(KeyId(2), &key).await.unwrap_err());
    assert!(p.problem.contains("CRC32C"), "{p}");
    let p = unavailable(kms.unwrap(KeyId(1), &wrapped).await.unwrap_err());
    assert!(p.problem.contains("CRC32C"), "{p}");
}

#[tokio::test]
async fn one_token_serves_every_call_until_it_nears_expiry() {
    let emu = Emu::start().await;
    let (kms, _) = emu.client().await;
    let keys: Vec<[u8; 32]> = (0..8u8).map(|i| [i; 32]).collect();
    let calls: Vec<_> = keys
        .iter()
        .zip(0u32..)
        .map(|(key, i)| kms.wrap(KeyId(i), key))
        .collect();
    for wrapped in futures_util::future::join_all(calls).await {
        wrapped.unwrap();
    }
    assert_eq!(emu.tokens_issued().await, 1);

    // Near its expiry the token is fetched again.
    emu.clock.advance(time::Duration::seconds(3560));
    kms.wrap(KeyId(9), &[9; 32]).await.unwrap();
    assert_eq!(emu.tokens_issued().await, 2);

    // Cloud KMS refusing a token it thinks expired: a new one, and the call goes through.
    emu.put("/_emulator/settings", json!({"clock_offset_secs": 1800}))
        .await;
    emu.clock.advance(time::Duration::seconds(1900));
    kms.wrap(KeyId(10), &[10; 32]).await.unwrap();
    assert_eq!(emu.tokens_issued().await, 3);
}
