//! The master key in Google Cloud KMS: data keys are wrapped with `cryptoKeys.encrypt` and
//! unwrapped with `cryptoKeys.decrypt` of one symmetric key, through its REST interface.
//!
//! Each call sends the data key's [`data_key_aad`] as additional authenticated data, so that a
//! wrapped key presented for another key id does not decrypt, and the CRC32C integrity fields
//! both ways: the request's checksums must come back verified (`verifiedPlaintextCrc32c`,
//! `verifiedAdditionalAuthenticatedDataCrc32c`), and the answer's (`ciphertextCrc32c`,
//! `plaintextCrc32c`) must match what arrived; a mismatch is retried a few times, as Google
//! asks, then reported as an outage. Rotating the key in Cloud KMS needs nothing here: a new
//! primary version encrypts new wrappings, and Cloud KMS decrypts old ones with the version
//! that made them (named inside its ciphertext).
//!
//! Errors are Google's (`{"error": {"code", "message", "status"}}`), turned into what an
//! operator does next: NOT_FOUND (the key name), PERMISSION_DENIED (grant
//! `roles/cloudkms.cryptoKeyEncrypterDecrypter`), FAILED_PRECONDITION (a disabled or destroyed
//! version), INVALID_ARGUMENT on decrypt (a wrapping altered or mislabelled), UNAUTHENTICATED
//! (the credentials), and anything transient (5xx, 429, no answer) as unavailable.
//!
//! The data key travels base64-encoded inside TLS; the buffers this module owns are wiped, the
//! HTTP client's own copies are freed without being wiped.

use crate::adc::{Credentials, TokenSource, plain, short};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use grantkeeper_core::master::{
    BoxFuture, MasterKeyError, MasterKeySource, SettingProblem, data_key_aad,
};
use grantkeeper_core::{ExposeSecret, KeyId, SharedClock};
use serde::Deserialize;
use std::time::Duration;
use zeroize::{Zeroize, Zeroizing};

/// Cloud KMS's API endpoint.
pub const GOOGLE_ENDPOINT: &str = "https://cloudkms.googleapis.com";
/// The configuration key naming the key.
const KEY_SETTING: &str = "vault.kms_key";
const ENDPOINT_SETTING: &str = "vault.kms_endpoint";
/// Tries of a call that met an outage or a checksum mismatch.
const ATTEMPTS: u32 = 3;

/// CRC32C (Castagnoli), the checksum of Cloud KMS's integrity fields.
const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

fn crc32c(data: &[u8]) -> u32 {
    CRC32C.checksum(data)
}

/// Checks a CryptoKey resource name: `projects/P/locations/L/keyRings/R/cryptoKeys/K`.
pub fn parse_key_name(name: &str) -> Result<String, SettingProblem> {
    let parts: Vec<&str> = name.split('/').collect();
    let shaped = parts.len() == 8
        && parts.first() == Some(&"projects")
        && parts.get(2) == Some(&"locations")
        && parts.get(4) == Some(&"keyRings")
        && parts.get(6) == Some(&"cryptoKeys")
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        });
    if shaped {
        Ok(name.to_owned())
    } else {
        Err(SettingProblem::new(
            KEY_SETTING,
            "not a Cloud KMS key name",
            "write it as projects/PROJECT/locations/LOCATION/keyRings/RING/cryptoKeys/KEY",
        ))
    }
}

/// A Cloud KMS key as a master key source.
pub struct CloudKms {
    key: String,
    label: String,
    endpoint: String,
    http: reqwest::Client,
    tokens: TokenSource,
}

/// An `int64` of Google's JSON: a string, or a number from a lenient server.
#[derive(Deserialize)]
#[serde(untagged)]
enum Int64 {
    Text(String),
    Number(i64),
}

impl Int64 {
    fn value(&self) -> Option<i64> {
        match self {
            Int64::Text(t) => t.parse().ok(),
            Int64::Number(n) => Some(*n),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EncryptAnswer {
    name: Option<String>,
    ciphertext: Option<String>,
    ciphertext_crc32c: Option<Int64>,
    #[serde(default)]
    verified_plaintext_crc32c: bool,
    #[serde(default)]
    verified_additional_authenticated_data_crc32c: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DecryptAnswer {
    plaintext: Option<String>,
    plaintext_crc32c: Option<Int64>,
}

#[derive(Deserialize)]
struct GoogleError {
    error: GoogleErrorBody,
}

#[derive(Deserialize)]
struct GoogleErrorBody {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
}

/// What one attempt came to.
enum Attempt<T> {
    Done(T),
    /// Worth another try: an outage or a checksum mismatch.
    Again(MasterKeyError),
}

impl CloudKms {
    /// The key `key` (checked with [`parse_key_name`]) at `endpoint` (Cloud KMS's, or the
    /// emulator's base URL).
    pub fn new(
        key: &str,
        endpoint: &str,
        credentials: Credentials,
        clock: SharedClock,
    ) -> Result<CloudKms, MasterKeyError> {
        let key = parse_key_name(key).map_err(MasterKeyError::Refused)?;
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        if url::Url::parse(&endpoint).is_err() {
            return Err(MasterKeyError::Refused(SettingProblem::new(
                ENDPOINT_SETTING,
                "not a URL",
                format!("leave it out for {GOOGLE_ENDPOINT}"),
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("grantkeeper/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                MasterKeyError::Unavailable(SettingProblem::new(
                    ENDPOINT_SETTING,
                    format!("no HTTP client: {e}"),
                    "check the machine's TLS setup",
                ))
            })?;
        Ok(CloudKms {
            label: format!("kms:{key}"),
            key,
            endpoint,
            tokens: TokenSource::new(credentials, http.clone(), clock),
            http,
        })
    }

    /// The credentials the calls are made with, for people.
    pub fn credentials(&self) -> String {
        self.tokens.credentials().describe()
    }

    /// Encrypts `plaintext` bound to `aad` under the key's primary version.
    pub async fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, MasterKeyError> {
        let mut body = serde_json::json!({
            "plaintext": STANDARD.encode(plaintext),
            "plaintextCrc32c": crc32c(plaintext).to_string(),
            "additionalAuthenticatedData": STANDARD.encode(aad),
            "additionalAuthenticatedDataCrc32c": crc32c(aad).to_string(),
        });
        let text = Zeroizing::new(body.to_string());
        wipe_json(&mut body);
        self.retrying("encrypt", &text, |answer: EncryptAnswer| {
            self.check_encrypted(answer)
        })
        .await
    }

    /// Decrypts `ciphertext` bound to `aad` (with whichever version encrypted it).
    pub async fn decrypt(
        &self,
        ciphertext: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, MasterKeyError> {
        let text = Zeroizing::new(
            serde_json::json!({
                "ciphertext": STANDARD.encode(ciphertext),
                "ciphertextCrc32c": crc32c(ciphertext).to_string(),
                "additionalAuthenticatedData": STANDARD.encode(aad),
                "additionalAuthenticatedDataCrc32c": crc32c(aad).to_string(),
            })
            .to_string(),
        );
        self.retrying("decrypt", &text, |mut answer: DecryptAnswer| {
            let plaintext = answer
                .plaintext
                .as_deref()
                .and_then(|p| STANDARD.decode(p).ok())
                .map(Zeroizing::new);
            if let Some(p) = answer.plaintext.as_mut() {
                p.zeroize();
            }
            let Some(plaintext) = plaintext else {
                return Attempt::Again(self.outage("the decrypt answer holds no plaintext"));
            };
            let sum = answer.plaintext_crc32c.as_ref().and_then(Int64::value);
            if sum != Some(i64::from(crc32c(&plaintext))) {
                return Attempt::Again(
                    self.outage("the plaintext's CRC32C does not match (corrupted in transit)"),
                );
            }
            Attempt::Done(plaintext)
        })
        .await
    }

    fn check_encrypted(&self, answer: EncryptAnswer) -> Attempt<Vec<u8>> {
        if !answer.verified_plaintext_crc32c
            || !answer.verified_additional_authenticated_data_crc32c
        {
            return Attempt::Again(self.outage(
                "Cloud KMS did not verify the request's checksums (corrupted in transit)",
            ));
        }
        let version_of_key = answer
            .name
            .as_deref()
            .and_then(|n| n.strip_prefix(self.key.as_str()))
            .is_some_and(|rest| rest.starts_with("/cryptoKeyVersions/"));
        if !version_of_key {
            return Attempt::Again(self.outage("the encrypt answer names another key"));
        }
        let Some(ciphertext) = answer
            .ciphertext
            .as_deref()
            .and_then(|c| STANDARD.decode(c).ok())
        else {
            return Attempt::Again(self.outage("the encrypt answer holds no ciphertext"));
        };
        let sum = answer.ciphertext_crc32c.as_ref().and_then(Int64::value);
        if sum != Some(i64::from(crc32c(&ciphertext))) {
            return Attempt::Again(
                self.outage("the ciphertext's CRC32C does not match (corrupted in transit)"),
            );
        }
        Attempt::Done(ciphertext)
    }

    fn outage(&self, problem: impl Into<String>) -> MasterKeyError {
        MasterKeyError::Unavailable(SettingProblem::new(
            ENDPOINT_SETTING,
            problem,
            format!(
                "check that this machine reaches {} and that Cloud KMS is up; running servers \
                 keep the data keys they hold",
                self.endpoint
            ),
        ))
    }

    /// Calls `method` with `body` until an answer `check` accepts, an error that another try
    /// would not change, or [`ATTEMPTS`] tries.
    async fn retrying<A, T>(
        &self,
        method: &str,
        body: &str,
        check: impl Fn(A) -> Attempt<T>,
    ) -> Result<T, MasterKeyError>
    where
        A: for<'de> Deserialize<'de>,
    {
        let mut last = self.outage("no attempt was made");
        let mut reauthenticated = false;
        let mut attempt = 0;
        while attempt < ATTEMPTS {
            attempt += 1;
            match self.call_once(method, body).await {
                Ok(bytes) => match serde_json::from_slice::<A>(&bytes) {
                    Ok(answer) => match check(answer) {
                        Attempt::Done(value) => return Ok(value),
                        Attempt::Again(e) => last = e,
                    },
                    Err(_) => last = self.outage(format!("the {method} answer is not its JSON")),
                },
                Err(CallError::Unauthenticated(e)) if !reauthenticated => {
                    // The token expired early or was revoked: one more with a fresh one.
                    self.tokens.forget().await;
                    reauthenticated = true;
                    attempt -= 1;
                    last = e;
                    continue;
                }
                Err(CallError::Unauthenticated(e) | CallError::Final(e)) => return Err(e),
                Err(CallError::Transient(e)) => last = e,
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(Duration::from_millis(100 * 3u64.pow(attempt))).await;
            }
        }
        Err(last)
    }

    async fn call_once(&self, method: &str, body: &str) -> Result<Vec<u8>, CallError> {
        let token = self.tokens.token().await.map_err(|e| match e {
            MasterKeyError::Unavailable(_) => CallError::Transient(e),
            other => CallError::Final(other),
        })?;
        let url = format!("{}/v1/{}:{method}", self.endpoint, self.key);
        let sent = self
            .http
            .post(url)
            .bearer_auth(token.expose_secret())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_owned())
            .send()
            .await
            .map_err(|e| {
                CallError::Transient(self.outage(format!(
                    "Cloud KMS at {} did not answer: {}",
                    self.endpoint,
                    plain(&e)
                )))
            })?;
        let status = sent.status();
        let bytes = sent.bytes().await.map_err(|e| {
            CallError::Transient(
                self.outage(format!("Cloud KMS's answer broke off: {}", plain(&e))),
            )
        })?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        Err(self.error(method, status.as_u16(), &bytes).await)
    }

    /// Google's error answer, as the operator's next step.
    async fn error(&self, method: &str, http: u16, body: &[u8]) -> CallError {
        let parsed: Option<GoogleError> = serde_json::from_slice(body).ok();
        let (status, message) = parsed
            .map(|e| (e.error.status, short(&e.error.message)))
            .unwrap_or_else(|| (String::new(), format!("HTTP {http}")));
        let key = &self.key;
        let refused = |problem: String, fix: String| {
            CallError::Final(MasterKeyError::Refused(SettingProblem::new(
                KEY_SETTING,
                problem,
                fix,
            )))
        };
        match (status.as_str(), http) {
            ("NOT_FOUND", _) | (_, 404) => refused(
                format!("Cloud KMS has no key {key}: {message}"),
                "create the key (see the README) or correct vault.kms_key".into(),
            ),
            ("PERMISSION_DENIED", _) | (_, 403) => {
                let account = self.tokens.account().await;
                refused(
                    format!("Cloud KMS refused the {method}: {message}"),
                    format!(
                        "grant the service account {account} the role \
                         roles/cloudkms.cryptoKeyEncrypterDecrypter on {key}"
                    ),
                )
            }
            ("FAILED_PRECONDITION", _) => refused(
                format!("Cloud KMS cannot {method} with this key: {message}"),
                "enable the key's version in Cloud KMS (a disabled version neither encrypts nor \
                 decrypts; its wrappings are usable again once it is enabled), or make an \
                 enabled version primary"
                    .into(),
            ),
            ("INVALID_ARGUMENT", _) if method == "decrypt" => {
                CallError::Final(MasterKeyError::Unwrap)
            }
            ("UNAUTHENTICATED", _) | (_, 401) => {
                CallError::Unauthenticated(MasterKeyError::Refused(SettingProblem::new(
                    self.tokens.credentials().setting(),
                    format!(
                        "Cloud KMS did not accept the credentials of the {}: {message}",
                        self.tokens.credentials().describe()
                    ),
                    "use a valid key file of a service account of the key's project, or attach \
                     such a service account to this machine",
                )))
            }
            (_, 429 | 500..=599) => CallError::Transient(self.outage(format!(
                "Cloud KMS answered HTTP {http} {status}: {message}"
            ))),
            _ => refused(
                format!("Cloud KMS refused the {method} (HTTP {http} {status}): {message}"),
                "check vault.kms_key and the key's settings in Cloud KMS".into(),
            ),
        }
    }
}

enum CallError {
    Transient(MasterKeyError),
    Unauthenticated(MasterKeyError),
    Final(MasterKeyError),
}

/// Wipes the string values of a JSON object (the base64 of a data key).
fn wipe_json(value: &mut serde_json::Value) {
    if let serde_json::Value::Object(map) = value {
        for v in map.values_mut() {
            if let serde_json::Value::String(s) = v {
                s.zeroize();
            }
        }
    }
}

impl MasterKeySource for CloudKms {
    fn label(&self) -> &str {
        &self.label
    }

    fn wrap<'a>(
        &'a self,
        id: KeyId,
        data_key: &'a [u8; 32],
    ) -> BoxFuture<'a, Result<Vec<u8>, MasterKeyError>> {
        Box::pin(async move { self.encrypt(data_key, &data_key_aad(id)).await })
    }

    fn unwrap<'a>(
        &'a self,
        id: KeyId,
        wrapped: &'a [u8],
    ) -> BoxFuture<'a, Result<Zeroizing<[u8; 32]>, MasterKeyError>> {
        Box::pin(async move {
            let plain = self.decrypt(wrapped, &data_key_aad(id)).await?;
            let key: [u8; 32] = plain
                .as_slice()
                .try_into()
                .map_err(|_| MasterKeyError::Unwrap)?;
            Ok(Zeroizing::new(key))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_are_checked() {
        assert!(
            parse_key_name("projects/p-1/locations/europe-west1/keyRings/r/cryptoKeys/k").is_ok()
        );
        for bad in [
            "projects/p/locations/l/keyRings/r",
            "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1",
            "projects/p/locations/l/keyRings/r/cryptoKeys/",
            "projects/p/locations/l/keyRings/r/cryptoKeys/k?x",
            "kms:projects/p/locations/l/keyRings/r/cryptoKeys/k",
        ] {
            let e = parse_key_name(bad).unwrap_err();
            assert_eq!(e.setting, "vault.kms_key", "{bad}");
        }
    }

    fn answer(verified: bool, name: &str, ciphertext: &[u8], sum: u32) -> EncryptAnswer {
        EncryptAnswer {
            name: Some(name.to_owned()),
            ciphertext: Some(STANDARD.encode(ciphertext)),
            ciphertext_crc32c: Some(Int64::Text(sum.to_string())),
            verified_plaintext_crc32c: verified,
            verified_additional_authenticated_data_crc32c: true,
        }
    }

    #[test]
    fn an_encrypt_answer_must_have_verified_and_match_its_checksum() {
        let key = "projects/p/locations/l/keyRings/r/cryptoKeys/k";
        let kms = CloudKms::new(
            key,
            "http://127.0.0.1:1",
            Credentials::Metadata {
                host: "127.0.0.1:1".into(),
            },
            grantkeeper_core::SystemClock::shared(),
        )
        .unwrap();
        let version = format!("{key}/cryptoKeyVersions/1");
        let ct = b"ciphertext";
        assert!(matches!(
            kms.check_encrypted(answer(true, &version, ct, crc32c(ct))),
            Attempt::Done(_)
        ));
        for (bad, says) in [
            (answer(false, &version, ct, crc32c(ct)), "did not verify"),
            (answer(true, &version, ct, crc32c(ct) ^ 1), "CRC32C"),
            (
                answer(true, &format!("{key}x/cryptoKeyVersions/1"), ct, crc32c(ct)),
                "another key",
            ),
        ] {
            match kms.check_encrypted(bad) {
                Attempt::Again(MasterKeyError::Unavailable(p)) => {
                    assert!(p.problem.contains(says), "{p}")
                }
                _ => panic!("accepted: {says}"),
            }
        }
    }

    #[test]
    fn crc32c_is_castagnoli() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }
}
