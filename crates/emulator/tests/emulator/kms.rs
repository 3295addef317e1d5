//! Cloud KMS, service accounts and the metadata server, spoken to as Google's client libraries
//! do: the signed-JWT grant at the token endpoint, `Metadata-Flavor: Google`, `encrypt` and
//! `decrypt` with base64 bytes and CRC32C integrity fields as int64 strings, key versions, and
//! Google's error envelope.

use super::helpers::{Answer, TestEmu};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use grantkeeper_core::Clock;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const KEY: &str = "projects/demo/locations/global/keyRings/gk/cryptoKeys/master";
const KMS_SCOPE: &str = "https://www.googleapis.com/auth/cloudkms";

fn crc32c(data: &[u8]) -> u32 {
    crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(data)
}

async fn service_account(emu: &TestEmu, name: &str) -> Value {
    let a = emu
        .post_json("/_emulator/service-accounts", json!({"name": name}))
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    a.body
}

/// The assertion Google's libraries sign with a key file.
fn assertion(file: &Value, aud: &str, iat: i64, exp: i64, scope: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(file["private_key_id"].as_str().unwrap().to_owned());
    let key = EncodingKey::from_rsa_pem(file["private_key"].as_str().unwrap().as_bytes()).unwrap();
    jsonwebtoken::encode(
        &header,
        &json!({"iss": file["client_email"], "scope": scope, "aud": aud, "iat": iat, "exp": exp}),
        &key,
    )
    .unwrap()
}

async fn grant(emu: &TestEmu, assertion: &str) -> Answer {
    emu.post_form(
        "/token",
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion),
        ],
    )
    .await
}

async fn token_for(emu: &TestEmu, file: &Value) -> String {
    let now = emu.clock.unix();
    // The audience is this emulator's token endpoint (a restarted one listens elsewhere).
    let a = grant(
        emu,
        &assertion(file, &emu.url("/token"), now, now + 3600, KMS_SCOPE),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    a.str("access_token").to_owned()
}

async fn kms(emu: &TestEmu, token: &str, target: &str, body: Value) -> Answer {
    Answer::from(
        emu.http
            .post(emu.url(&format!("/v1/{target}")))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

fn encrypt_body(plaintext: &[u8], aad: &[u8]) -> Value {
    json!({
        "plaintext": STANDARD.encode(plaintext),
        "plaintextCrc32c": crc32c(plaintext).to_string(),
        "additionalAuthenticatedData": STANDARD.encode(aad),
        "additionalAuthenticatedDataCrc32c": crc32c(aad).to_string(),
    })
}

fn decrypt_body(ciphertext: &[u8], aad: &[u8]) -> Value {
    json!({
        "ciphertext": STANDARD.encode(ciphertext),
        "ciphertextCrc32c": crc32c(ciphertext).to_string(),
        "additionalAuthenticatedData": STANDARD.encode(aad),
        "additionalAuthenticatedDataCrc32c": crc32c(aad).to_string(),
    })
}

fn assert_google_error(a: &Answer, code: u16, status: &str) {
    assert_eq!(a.status.as_u16(), code, "{}", a.text);
    assert_eq!(a.body["error"]["code"], code, "{}", a.text);
    assert_eq!(a.body["error"]["status"], status, "{}", a.text);
    assert!(
        a.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
}

async fn create_key(emu: &TestEmu, name: &str) {
    let a = emu
        .post_json("/_emulator/kms/keys", json!({"name": name}))
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(a.body["primary"], format!("{name}/cryptoKeyVersions/1"));
}

#[tokio::test]
async fn a_key_file_trades_its_assertion_for_a_token() {
    let emu = TestEmu::start().await;
    let file = service_account(&emu, "gk-server").await;
    assert_eq!(file["type"], "service_account");
    assert_eq!(file["token_uri"], emu.url("/token"));
    assert!(
        file["client_email"]
            .as_str()
            .unwrap()
            .starts_with("gk-server@")
    );
    assert!(
        file["private_key"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    let now = emu.clock.unix();
    let aud = emu.url("/token");

    let a = grant(&emu, &assertion(&file, &aud, now, now + 3600, KMS_SCOPE)).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["token_type"], "Bearer");
    assert!(a.body["expires_in"].as_i64().unwrap() > 3000);
    assert!(a.str("access_token").starts_with("ya29."));

    // Too long, expired, for another audience, signed by another key, without a scope.
    let too_long = grant(&emu, &assertion(&file, &aud, now, now + 7200, KMS_SCOPE)).await;
    too_long.assert_error(400, "invalid_grant", None);
    let expired = grant(
        &emu,
        &assertion(&file, &aud, now - 7200, now - 3600, KMS_SCOPE),
    )
    .await;
    expired.assert_error(400, "invalid_grant", None);
    let elsewhere = grant(
        &emu,
        &assertion(
            &file,
            "https://oauth2.googleapis.com/token",
            now,
            now + 60,
            KMS_SCOPE,
        ),
    )
    .await;
    elsewhere.assert_error(400, "invalid_grant", None);
    let other = service_account(&emu, "other").await;
    let mut forged = other.clone();
    forged["client_email"] = file["client_email"].clone();
    forged["private_key_id"] = file["private_key_id"].clone();
    let a = grant(&emu, &assertion(&forged, &aud, now, now + 60, KMS_SCOPE)).await;
    a.assert_error(400, "invalid_grant", Some("Invalid JWT Signature."));
    let a = grant(&emu, &assertion(&file, &aud, now, now + 60, "")).await;
    a.assert_error(400, "invalid_scope", None);
    let a = grant(&emu, "not.a.jwt").await;
    a.assert_error(400, "invalid_grant", None);
}

#[tokio::test]
async fn the_metadata_server_wants_its_flavour() {
    let emu = TestEmu::start().await;
    let path = "/computeMetadata/v1/instance/service-accounts/default/token";
    let bare = emu.get(path).await;
    assert_eq!(bare.status, 403);
    assert_eq!(bare.header("metadata-flavor"), Some("Google"));

    let a = Answer::from(
        emu.http
            .get(emu.url(path))
            .header("Metadata-Flavor", "Google")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.header("metadata-flavor"), Some("Google"));
    assert_eq!(a.body["token_type"], "Bearer");
    let token = a.str("access_token").to_owned();

    let email = Answer::from(
        emu.http
            .get(emu.url("/computeMetadata/v1/instance/service-accounts/default/email"))
            .header("Metadata-Flavor", "Google")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        email
            .text
            .ends_with("-compute@developer.gserviceaccount.com"),
        "{}",
        email.text
    );

    // The instance's token (scope cloud-platform) calls Cloud KMS.
    create_key(&emu, KEY).await;
    let a = kms(
        &emu,
        &token,
        &format!("{KEY}:encrypt"),
        encrypt_body(b"k", b""),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
}

#[tokio::test]
async fn encrypt_and_decrypt_check_both_checksums_and_bind_the_aad() {
    let emu = TestEmu::start().await;
    create_key(&emu, KEY).await;
    let file = service_account(&emu, "gk").await;
    let token = token_for(&emu, &file).await;
    let data_key = [7u8; 32];

    let a = kms(
        &emu,
        &token,
        &format!("{KEY}:encrypt"),
        encrypt_body(&data_key, b"grantkeeper/data_key/1"),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["name"], format!("{KEY}/cryptoKeyVersions/1"));
    assert_eq!(a.body["verifiedPlaintextCrc32c"], true);
    assert_eq!(a.body["verifiedAdditionalAuthenticatedDataCrc32c"], true);
    assert_eq!(a.body["protectionLevel"], "SOFTWARE");
    let ciphertext = STANDARD.decode(a.str("ciphertext")).unwrap();
    // Checksums travel as int64 strings.
    assert_eq!(a.str("ciphertextCrc32c"), crc32c(&ciphertext).to_string());
    assert!(!ciphertext.windows(32).any(|w| w == data_key));

    let a = kms(
        &emu,
        &token,
        &format!("{KEY}:decrypt"),
        decrypt_body(&ciphertext, b"grantkeeper/data_key/1"),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let plaintext = STANDARD.decode(a.str("plaintext")).unwrap();
    assert_eq!(plaintext, data_key);
    assert_eq!(a.str("plaintextCrc32c"), crc32c(&data_key).to_string());
    assert_eq!(a.body["usedPrimary"], true);

    // Without checksums nothing is verified, and still encrypted.
    let a = kms(
        &emu,
        &token,
        &format!("{KEY}:encrypt"),
        json!({"plaintext": STANDARD.encode(b"x")}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["verifiedPlaintextCrc32c"], false);
    // A checksum given as a number is read too.
    let a = kms(
        &emu,
        &token,
        &format!("{KEY}:encrypt"),
        json!({"plaintext": STANDARD.encode(b"x"), "plaintextCrc32c": crc32c(b"x")}),
    )
    .await;
    assert_eq!(a.body["verifiedPlaintextCrc32c"], true, "{}", a.text);

    // A checksum that does not match is refused, both ways.
    let mut bad = encrypt_body(&data_key, b"a");
    bad["plaintextCrc32c"] = json!((crc32c(&data_key) ^ 1).to_string());
    assert_google_error(
        &kms(&emu, &token, &format!("{KEY}:encrypt"), bad).await,
        400,
        "INVALID_ARGUMENT",
    );
    let mut bad = decrypt_body(&ciphertext, b"grantkeeper/data_key/1");
    bad["ciphertextCrc32c"] = json!("12345");
    assert_google_error(
        &kms(&emu, &token, &format!("{KEY}:decrypt"), bad).await,
        400,
        "INVALID_ARGUMENT",
    );

    // Another AAD, or an altered ciphertext, does not decrypt.
    let a = kms(
        &emu,
        &token,
        &format!("{KEY}:decrypt"),
        decrypt_body(&ciphertext, b"grantkeeper/data_key/2"),
    )
    .await;
    assert_google_error(&a, 400, "INVALID_ARGUMENT");
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Decryption failed")
    );
    let mut altered = ciphertext.clone();
    *altered.last_mut().unwrap() ^= 1;
    let a = kms(
        &emu,
        &token,
        &format!("{KEY}:decrypt"),
        decrypt_body(&altered, b"grantkeeper/data_key/1"),
    )
    .await;
    assert_google_error(&a, 400, "INVALID_ARGUMENT");
    // Nor under another key.
    let other = "projects/demo/locations/global/keyRings/gk/cryptoKeys/other";
    create_key(&emu, other).await;
    let a = kms(
        &emu,
        &token,
        &format!("{other}:decrypt"),
        decrypt_body(&ciphertext, b"grantkeeper/data_key/1"),
    )
    .await;
    assert_google_error(&a, 400, "INVALID_ARGUMENT");
    // Unknown fields are refused, as Google's JSON parser does.
    let a = kms(
        &emu,
        &token,
        &format!("{KEY}:encrypt"),
        json!({"plaintext": "eA==", "colour": 1}),
    )
    .await;
    assert_google_error(&a, 400, "INVALID_ARGUMENT");
}

#[tokio::test]
async fn versions_rotate_and_a_disabled_one_refuses() {
    let emu = TestEmu::start().await;
    create_key(&emu, KEY).await;
    let token = token_for(&emu, &service_account(&emu, "gk").await).await;
    let aad = b"grantkeeper/data_key/3";
    let a = kms(
        &emu,
        &token,
        &format!("{KEY}:encrypt"),
        encrypt_body(b"old", aad),
    )
    .await;
    let old = STANDARD.decode(a.str("ciphertext")).unwrap();

    let a = emu
        .post_json("/_emulator/kms/versions", json!({"name": KEY}))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["primary"], format!("{KEY}/cryptoKeyVersions/2"));
    let a = kms(
        &emu,
        &token,
        &format!("{KEY}:encrypt"),
        encrypt_body(b"new", aad),
    )
    .await;
    assert_eq!(a.body["name"], format!("{KEY}/cryptoKeyVersions/2"));
    // The older version still decrypts what it encrypted.
    let a = kms(
        &emu,
        &token,
        &format!("{KEY}:decrypt"),
        decrypt_body(&old, aad),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["usedPrimary"], false);

    let a = emu
        .put_json(
            "/_emulator/kms/versions",
            json!({"name": format!("{KEY}/cryptoKeyVersions/1"), "state": "DISABLED"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let a = kms(
        &emu,
        &token,
        &format!("{KEY}:decrypt"),
        decrypt_body(&old, aad),
    )
    .await;
    assert_google_error(&a, 400, "FAILED_PRECONDITION");
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("DISABLED"),
        "{}",
        a.text
    );
    // Encrypting names a disabled version: refused too.
    let a = kms(
        &emu,
        &token,
        &format!("{KEY}/cryptoKeyVersions/1:encrypt"),
        encrypt_body(b"x", aad),
    )
    .await;
    assert_google_error(&a, 400, "FAILED_PRECONDITION");
    emu.put_json(
        "/_emulator/kms/versions",
        json!({"name": format!("{KEY}/cryptoKeyVersions/1"), "state": "ENABLED"}),
    )
    .await;
    let a = kms(
        &emu,
        &token,
        &format!("{KEY}:decrypt"),
        decrypt_body(&old, aad),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
}

#[tokio::test]
async fn callers_are_authenticated_authorised_and_told_in_googles_envelope() {
    let emu = TestEmu::start().await;
    create_key(&emu, KEY).await;
    let file = service_account(&emu, "gk").await;
    let token = token_for(&emu, &file).await;
    let body = encrypt_body(b"k", b"");

    let a = kms(&emu, "ya29.forged", &format!("{KEY}:encrypt"), body.clone()).await;
    assert_google_error(&a, 401, "UNAUTHENTICATED");
    assert!(a.header("www-authenticate").is_some());
    let unknown = "projects/demo/locations/global/keyRings/gk/cryptoKeys/nope";
    let a = kms(&emu, &token, &format!("{unknown}:encrypt"), body.clone()).await;
    assert_google_error(&a, 404, "NOT_FOUND");

    let a = emu
        .put_json(
            "/_emulator/kms/denied",
            json!({"service_accounts": [file["client_email"]]}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let a = kms(&emu, &token, &format!("{KEY}:encrypt"), body.clone()).await;
    assert_google_error(&a, 403, "PERMISSION_DENIED");
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cloudkms.cryptoKeyVersions.useToEncrypt")
    );
    emu.put_json("/_emulator/kms/denied", json!({"service_accounts": []}))
        .await;
    assert_eq!(
        kms(&emu, &token, &format!("{KEY}:encrypt"), body.clone())
            .await
            .status,
        200
    );

    // A token for another API's scope is not enough.
    let now = emu.clock.unix();
    let a = grant(
        &emu,
        &assertion(
            &file,
            &emu.url("/token"),
            now,
            now + 60,
            "https://www.googleapis.com/auth/drive",
        ),
    )
    .await;
    let drive_token = a.str("access_token").to_owned();
    let a = kms(&emu, &drive_token, &format!("{KEY}:encrypt"), body.clone()).await;
    assert_google_error(&a, 403, "PERMISSION_DENIED");

    // An outage answers in the same envelope.
    emu.faults(json!({"kms": {"status": 503}})).await;
    let a = kms(&emu, &token, &format!("{KEY}:encrypt"), body.clone()).await;
    assert_google_error(&a, 503, "UNAVAILABLE");
    emu.faults(json!({})).await;

    let stats = emu.get("/_emulator/stats").await;
    // Every call is counted; the one that succeeded as an encryption.
    assert_eq!(stats.body["kms_requests"], 6, "{}", stats.text);
    let overview = emu.get("/_emulator/kms").await;
    assert_eq!(overview.body["encrypts"], 1, "{}", overview.text);
}

#[tokio::test]
async fn keys_and_accounts_outlive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let emu = TestEmu::start_with(Some(dir.path().to_owned()), true).await;
    create_key(&emu, KEY).await;
    let file = service_account(&emu, "gk").await;
    let token = token_for(&emu, &file).await;
    let a = kms(
        &emu,
        &token,
        &format!("{KEY}:encrypt"),
        encrypt_body(b"kept", b"aad"),
    )
    .await;
    let ciphertext = STANDARD.decode(a.str("ciphertext")).unwrap();
    emu.stop().await;

    let mode = std::fs::metadata(dir.path().join("emulator/kms.json")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    let emu = TestEmu::start_with(Some(dir.path().to_owned()), true).await;
    // The old token is gone (tokens are kept in memory); the key file still works.
    let a = kms(
        &emu,
        &token,
        &format!("{KEY}:decrypt"),
        decrypt_body(&ciphertext, b"aad"),
    )
    .await;
    assert_google_error(&a, 401, "UNAUTHENTICATED");
    let token = token_for(&emu, &file).await;
    let a = kms(
        &emu,
        &token,
        &format!("{KEY}:decrypt"),
        decrypt_body(&ciphertext, b"aad"),
    )
    .await;
    assert_eq!(STANDARD.decode(a.str("plaintext")).unwrap(), b"kept");
}
