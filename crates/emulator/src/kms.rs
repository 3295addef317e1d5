//! Google Cloud KMS, the part of it that envelope encryption calls: `cryptoKeys.encrypt` and
//! `cryptoKeys.decrypt` of symmetric keys with versions (encryption under the primary version,
//! decryption under whichever version encrypted), the CRC32C integrity fields both ways, and
//! Google's API error envelope (`{"error": {"code", "message", "status"}}`) for unknown keys
//! (NOT_FOUND), callers without the role (PERMISSION_DENIED), disabled versions
//! (FAILED_PRECONDITION), ciphertexts that do not decrypt (INVALID_ARGUMENT) and missing or
//! expired credentials (UNAUTHENTICATED). Callers are the service accounts of [`crate::iam`].
//!
//! The control API creates keys, adds a primary version, disables and enables versions, and
//! denies service accounts the use of every key (as removing their
//! `roles/cloudkms.cryptoKeyEncrypterDecrypter` binding would). Key material stays in memory,
//! or under `DIR/emulator/kms.json` (mode 0600) for an emulator with a data dir: it stands in
//! for Google's side.

use crate::Inner;
use crate::error::{ControlError, json};
use crate::iam::KMS_SCOPES;
use crate::settings::Endpoint;
use crate::util::{lock, write_private};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Cloud KMS's limit on a SOFTWARE key's plaintext and AAD.
const MAX_BYTES: usize = 64 * 1024;
/// Bytes before the AES-GCM output in an emulated ciphertext: the version id, then the nonce.
const CIPHERTEXT_HEADER: usize = 4 + NONCE_LEN;

/// CRC32C (Castagnoli), the checksum of Cloud KMS's integrity fields.
pub(crate) const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum VersionState {
    Enabled,
    Disabled,
}

impl VersionState {
    fn as_str(self) -> &'static str {
        match self {
            VersionState::Enabled => "ENABLED",
            VersionState::Disabled => "DISABLED",
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct Version {
    id: u32,
    state: VersionState,
    /// AES-256 key, standard base64.
    material: String,
}

#[derive(Clone, Serialize, Deserialize)]
struct CryptoKey {
    primary: u32,
    versions: Vec<Version>,
}

#[derive(Default, Serialize, Deserialize)]
struct Saved {
    keys: BTreeMap<String, CryptoKey>,
    /// Service accounts refused the use of every key.
    denied: BTreeSet<String>,
}

/// The project's keys and who may not use them.
#[derive(Default)]
pub(crate) struct Kms {
    saved: Saved,
    file: Option<PathBuf>,
    pub(crate) encrypts: u64,
    pub(crate) decrypts: u64,
}

impl Kms {
    pub(crate) fn open(dir: Option<&std::path::Path>) -> anyhow::Result<Kms> {
        let file = dir.map(|d| d.join("kms.json"));
        let saved = match &file {
            Some(f) if f.exists() => serde_json::from_slice(&std::fs::read(f)?)?,
            _ => Saved::default(),
        };
        Ok(Kms {
            saved,
            file,
            ..Kms::default()
        })
    }

    fn save(&self) -> anyhow::Result<()> {
        if let Some(f) = &self.file {
            write_private(f, &serde_json::to_vec_pretty(&self.saved)?)?;
        }
        Ok(())
    }
}

/// An answer of Google's API front end: `{"error": {"code", "message", "status"}}`.
pub(crate) struct ApiError {
    status: StatusCode,
    /// The canonical code's name (`NOT_FOUND`, `PERMISSION_DENIED`, ...).
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
    }

    fn undecryptable() -> Self {
        Self::invalid("Decryption failed: verify that 'name' refers to the correct CryptoKey.")
    }

    pub(crate) fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "The service is currently unavailable.",
        )
    }

    /// An injected failure with `status`, in this envelope.
    pub(crate) fn fault(status: StatusCode) -> Self {
        let code = match status.as_u16() {
            429 => "RESOURCE_EXHAUSTED",
            500 => "INTERNAL",
            503 => "UNAVAILABLE",
            504 => "DEADLINE_EXCEEDED",
            401 => "UNAUTHENTICATED",
            403 => "PERMISSION_DENIED",
            404 => "NOT_FOUND",
            _ => "UNKNOWN",
        };
        Self::new(status, code, "The service is currently unavailable.")
    }

    fn not_enabled(version: &str, state: VersionState) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "FAILED_PRECONDITION",
            format!(
                "{version} is not enabled, current state is: {}.",
                state.as_str()
            ),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = json(
            self.status,
            &json!({"error": {"code": self.status.as_u16(), "message": self.message,
                              "status": self.code}}),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"https://accounts.google.com/\""),
            );
        }
        res
    }
}

/// A protobuf `int64` in JSON: Google writes it as a string and reads either form.
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
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EncryptRequest {
    plaintext: Option<String>,
    additional_authenticated_data: Option<String>,
    plaintext_crc32c: Option<Int64>,
    additional_authenticated_data_crc32c: Option<Int64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DecryptRequest {
    ciphertext: Option<String>,
    additional_authenticated_data: Option<String>,
    ciphertext_crc32c: Option<Int64>,
    additional_authenticated_data_crc32c: Option<Int64>,
}

/// A `bytes` field: base64, standard or URL-safe, padded or not, as Google's JSON reads it.
fn bytes_field(field: &str, value: Option<&str>) -> Result<Vec<u8>, ApiError> {
    let Some(text) = value else {
        return Ok(Vec::new());
    };
    [STANDARD, URL_SAFE, STANDARD_NO_PAD, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
        .ok_or_else(|| {
            // The value is never quoted back: it may be a secret.
            ApiError::invalid(format!(
                "Invalid value at '{field}' (TYPE_BYTES), Base64 decoding failed."
            ))
        })
}

/// Checks a request's checksum of `data`, if it gave one; true when it did and it matched.
fn checked(
    field: &str,
    data_field: &str,
    data: &[u8],
    sum: Option<&Int64>,
) -> Result<bool, ApiError> {
    let Some(sum) = sum else {
        return Ok(false);
    };
    if sum.value() == Some(i64::from(CRC32C.checksum(data))) {
        Ok(true)
    } else {
        Err(ApiError::invalid(format!(
            "The checksum in field {field} did not match the data in field {data_field}."
        )))
    }
}

fn crc_text(data: &[u8]) -> String {
    CRC32C.checksum(data).to_string()
}

/// `name`, `method` and the version named, if any, of `projects/.../cryptoKeys/K[/cryptoKeyVersions/N]:method`.
fn parse_target(rest: &str) -> Option<(String, &str, Option<u32>)> {
    let (path, method) = rest.rsplit_once(':')?;
    let full = format!("projects/{path}");
    let parts: Vec<&str> = full.split('/').collect();
    let shape_ok = |n: usize| {
        parts.len() == n
            && parts.first() == Some(&"projects")
            && parts.get(2) == Some(&"locations")
            && parts.get(4) == Some(&"keyRings")
            && parts.get(6) == Some(&"cryptoKeys")
            && parts.iter().all(|p| !p.is_empty())
    };
    if shape_ok(8) {
        return Some((full, method, None));
    }
    if shape_ok(10) && parts.get(8) == Some(&"cryptoKeyVersions") {
        let version = parts.get(9)?.parse().ok()?;
        let key = parts.get(..8)?.join("/");
        return Some((key, method, Some(version)));
    }
    None
}

/// Whether `name` is a CryptoKey's resource name.
pub(crate) fn is_key_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("projects/") else {
        return false;
    };
    let target = format!("{rest}:x");
    parse_target(&target).is_some_and(|(key, _, version)| key == name && version.is_none())
}

fn cipher(material: &str) -> Result<LessSafeKey, ApiError> {
    let bytes = STANDARD
        .decode(material)
        .map_err(|_| ApiError::unavailable())?;
    UnboundKey::new(&AES_256_GCM, &bytes)
        .map(LessSafeKey::new)
        .map_err(|_| ApiError::unavailable())
}

/// `POST /v1/projects/{...}/cryptoKeys/{key}:encrypt` and `:decrypt`.
pub(crate) async fn call(
    State(inner): State<Arc<Inner>>,
    Path(rest): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    inner.kms_requests.fetch_add(1, Ordering::Relaxed);
    let corrupt = match inner.gate_or_corrupt(Endpoint::Kms).await {
        Ok(corrupt) => corrupt,
        Err(fault) => return *fault,
    };
    match answer(&inner, &rest, &headers, &body, corrupt) {
        Ok(res) => res,
        Err(e) => e.into_response(),
    }
}

/// Changes a byte of the base64 payload `field` and leaves its checksum: what corruption in
/// transit looks like to a client.
fn corrupt_field(answer: &mut serde_json::Value, field: &str) {
    let Some(slot) = answer.get_mut(field) else {
        return;
    };
    if let Some(mut bytes) = slot.as_str().and_then(|t| STANDARD.decode(t).ok()) {
        if let Some(b) = bytes.first_mut() {
            *b ^= 0x20;
        }
        *slot = serde_json::Value::String(STANDARD.encode(&bytes));
    }
}

fn answer(
    inner: &Inner,
    rest: &str,
    headers: &HeaderMap,
    body: &[u8],
    corrupt: bool,
) -> Result<Response, ApiError> {
    let (key_name, method, version) = parse_target(rest).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested URL was not found on this server.",
        )
    })?;
    let permission = match (method, version) {
        ("encrypt", _) => "cloudkms.cryptoKeyVersions.useToEncrypt",
        ("decrypt", None) => "cloudkms.cryptoKeyVersions.useToDecrypt",
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "The requested URL was not found on this server.",
            ));
        }
    };
    let settings = inner.settings();
    let now = inner.now(&settings);
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let caller = lock(&inner.accounts).caller(token, now).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, \
             login cookie or other valid authentication credential. See \
             https://developers.google.com/identity/sign-in/web/devconsole-project.",
        )
    })?;
    if !KMS_SCOPES.iter().any(|s| caller.scopes.contains(*s)) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "Request had insufficient authentication scopes.",
        ));
    }
    let mut kms = lock(&inner.kms);
    if kms.saved.denied.contains(&caller.email) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            format!(
                "Permission '{permission}' denied on resource '{key_name}' (or it may not exist)."
            ),
        ));
    }
    let key = kms.saved.keys.get(&key_name).cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("{key_name} not found."),
        )
    })?;
    if method == "encrypt" {
        let req: EncryptRequest = serde_json::from_slice(body).map_err(|e| {
            ApiError::invalid(format!(
                "Invalid JSON payload received. {}",
                e.classify_name()
            ))
        })?;
        let mut res = encrypt(&key_name, &key, version, &req)?;
        kms.encrypts += 1;
        if corrupt {
            corrupt_field(&mut res, "ciphertext");
        }
        Ok(json(StatusCode::OK, &res))
    } else {
        let req: DecryptRequest = serde_json::from_slice(body).map_err(|e| {
            ApiError::invalid(format!(
                "Invalid JSON payload received. {}",
                e.classify_name()
            ))
        })?;
        let mut res = decrypt(&key_name, &key, &req)?;
        kms.decrypts += 1;
        if corrupt {
            corrupt_field(&mut res, "plaintext");
        }
        Ok(json(StatusCode::OK, &res))
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Data => "A field is unknown or of the wrong type.",
            _ => "The body is not JSON.",
        }
    }
}

fn encrypt(
    key_name: &str,
    key: &CryptoKey,
    version: Option<u32>,
    req: &EncryptRequest,
) -> Result<serde_json::Value, ApiError> {
    let plaintext = bytes_field("plaintext", req.plaintext.as_deref())?;
    let aad = bytes_field(
        "additional_authenticated_data",
        req.additional_authenticated_data.as_deref(),
    )?;
    if plaintext.is_empty() {
        return Err(ApiError::invalid("Plaintext is required."));
    }
    if plaintext.len() > MAX_BYTES || aad.len() > MAX_BYTES {
        return Err(ApiError::invalid(
            "The plaintext and additional authenticated data must each be at most 64KiB.",
        ));
    }
    let verified_plaintext = checked(
        "plaintext_crc32c",
        "plaintext",
        &plaintext,
        req.plaintext_crc32c.as_ref(),
    )?;
    let verified_aad = checked(
        "additional_authenticated_data_crc32c",
        "additional_authenticated_data",
        &aad,
        req.additional_authenticated_data_crc32c.as_ref(),
    )?;
    let id = version.unwrap_or(key.primary);
    let version_name = format!("{key_name}/cryptoKeyVersions/{id}");
    let chosen = key.versions.iter().find(|v| v.id == id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("{version_name} not found."),
        )
    })?;
    if chosen.state != VersionState::Enabled {
        return Err(ApiError::not_enabled(&version_name, chosen.state));
    }
    let nonce = grantkeeper_core::random::bytes::<NONCE_LEN>();
    let mut sealed = plaintext;
    cipher(&chosen.material)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad.as_slice()),
            &mut sealed,
        )
        .map_err(|_| ApiError::unavailable())?;
    let mut ciphertext = Vec::with_capacity(CIPHERTEXT_HEADER + sealed.len());
    ciphertext.extend_from_slice(&id.to_be_bytes());
    ciphertext.extend_from_slice(&nonce);
    ciphertext.extend_from_slice(&sealed);
    Ok(json!({
        "name": version_name,
        "ciphertext": STANDARD.encode(&ciphertext),
        "ciphertextCrc32c": crc_text(&ciphertext),
        "verifiedPlaintextCrc32c": verified_plaintext,
        "verifiedAdditionalAuthenticatedDataCrc32c": verified_aad,
        "protectionLevel": "SOFTWARE",
    }))
}

fn decrypt(
    key_name: &str,
    key: &CryptoKey,
    req: &DecryptRequest,
) -> Result<serde_json::Value, ApiError> {
    let ciphertext = bytes_field("ciphertext", req.ciphertext.as_deref())?;
    let aad = bytes_field(
        "additional_authenticated_data",
        req.additional_authenticated_data.as_deref(),
    )?;
    if ciphertext.is_empty() {
        return Err(ApiError::invalid("Ciphertext is required."));
    }
    checked(
        "ciphertext_crc32c",
        "ciphertext",
        &ciphertext,
        req.ciphertext_crc32c.as_ref(),
    )?;
    checked(
        "additional_authenticated_data_crc32c",
        "additional_authenticated_data",
        &aad,
        req.additional_authenticated_data_crc32c.as_ref(),
    )?;
    if ciphertext.len() < CIPHERTEXT_HEADER + 16 {
        return Err(ApiError::undecryptable());
    }
    let (head, body) = ciphertext.split_at(CIPHERTEXT_HEADER);
    let (id_bytes, nonce_bytes) = head.split_at(4);
    let id = u32::from_be_bytes(id_bytes.try_into().map_err(|_| ApiError::undecryptable())?);
    let chosen = key
        .versions
        .iter()
        .find(|v| v.id == id)
        .ok_or_else(ApiError::undecryptable)?;
    let nonce: [u8; NONCE_LEN] = nonce_bytes
        .try_into()
        .map_err(|_| ApiError::undecryptable())?;
    let mut opened = body.to_vec();
    let plaintext = cipher(&chosen.material)?
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad.as_slice()),
            &mut opened,
        )
        .map_err(|_| ApiError::undecryptable())?
        .to_vec();
    // A ciphertext that opens names its version; a disabled one refuses to decrypt.
    if chosen.state != VersionState::Enabled {
        return Err(ApiError::not_enabled(
            &format!("{key_name}/cryptoKeyVersions/{id}"),
            chosen.state,
        ));
    }
    Ok(json!({
        "plaintext": STANDARD.encode(&plaintext),
        "plaintextCrc32c": crc_text(&plaintext),
        "usedPrimary": id == key.primary,
        "protectionLevel": "SOFTWARE",
    }))
}

fn new_version(id: u32) -> Version {
    Version {
        id,
        state: VersionState::Enabled,
        material: STANDARD.encode(grantkeeper_core::random::bytes::<32>()),
    }
}

fn key_json(name: &str, key: &CryptoKey) -> serde_json::Value {
    let versions: Vec<serde_json::Value> = key
        .versions
        .iter()
        .map(|v| json!({"name": format!("{name}/cryptoKeyVersions/{}", v.id), "state": v.state}))
        .collect();
    json!({
        "name": name,
        "primary": format!("{name}/cryptoKeyVersions/{}", key.primary),
        "versions": versions,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRequest {
    name: String,
}

/// `POST /_emulator/kms/keys` `{"name": "projects/P/locations/L/keyRings/R/cryptoKeys/K"}`: a
/// symmetric key whose version 1 is primary.
pub(crate) async fn create_key(
    State(inner): State<Arc<Inner>>,
    body: axum::body::Bytes,
) -> Result<Response, ControlError> {
    let req: KeyRequest = crate::control::parse(&body)?;
    if !is_key_name(&req.name) {
        return Err(ControlError::bad(
            "name must be projects/P/locations/L/keyRings/R/cryptoKeys/K",
        ));
    }
    let mut kms = lock(&inner.kms);
    if kms.saved.keys.contains_key(&req.name) {
        return Err(ControlError {
            status: StatusCode::CONFLICT,
            error: "already_exists",
            message: "that key exists".into(),
        });
    }
    let key = CryptoKey {
        primary: 1,
        versions: vec![new_version(1)],
    };
    let answer = key_json(&req.name, &key);
    kms.saved.keys.insert(req.name, key);
    kms.save().map_err(|e| ControlError::internal(&e))?;
    Ok(json(StatusCode::CREATED, &answer))
}

impl crate::Emulator {
    /// Creates the Cloud KMS key `name` (`projects/P/locations/L/keyRings/R/cryptoKeys/K`)
    /// unless it exists (what `grantkeeper dev --kms` keeps its master key in).
    pub fn ensure_kms_key(&self, name: &str) -> anyhow::Result<()> {
        if !is_key_name(name) {
            anyhow::bail!("not a Cloud KMS key name");
        }
        let mut kms = lock(&self.inner.kms);
        if !kms.saved.keys.contains_key(name) {
            kms.saved.keys.insert(
                name.to_owned(),
                CryptoKey {
                    primary: 1,
                    versions: vec![new_version(1)],
                },
            );
            kms.save()?;
        }
        Ok(())
    }

    /// The project's id (the `P` of its Cloud KMS key names).
    pub fn project_id(&self) -> String {
        crate::util::read(&self.inner.clients).project_id.clone()
    }
}

/// `POST /_emulator/kms/versions` `{"name": KEY}`: a new version, made primary (older ones still
/// decrypt).
pub(crate) async fn add_version(
    State(inner): State<Arc<Inner>>,
    body: axum::body::Bytes,
) -> Result<Response, ControlError> {
    let req: KeyRequest = crate::control::parse(&body)?;
    let mut kms = lock(&inner.kms);
    let key = kms
        .saved
        .keys
        .get_mut(&req.name)
        .ok_or_else(|| ControlError::not_found("no such key"))?;
    let id = key.versions.iter().map(|v| v.id).max().unwrap_or(0) + 1;
    key.versions.push(new_version(id));
    key.primary = id;
    let answer = key_json(&req.name, key);
    kms.save().map_err(|e| ControlError::internal(&e))?;
    Ok(json(StatusCode::OK, &answer))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionUpdate {
    /// `KEY/cryptoKeyVersions/N`.
    name: String,
    state: VersionState,
}

/// `PUT /_emulator/kms/versions` `{"name": VERSION, "state": "DISABLED"|"ENABLED"}`.
pub(crate) async fn set_version_state(
    State(inner): State<Arc<Inner>>,
    body: axum::body::Bytes,
) -> Result<Response, ControlError> {
    let req: VersionUpdate = crate::control::parse(&body)?;
    let (key_name, id) = req
        .name
        .rsplit_once("/cryptoKeyVersions/")
        .and_then(|(k, v)| Some((k.to_owned(), v.parse::<u32>().ok()?)))
        .ok_or_else(|| ControlError::bad("name must be KEY/cryptoKeyVersions/N"))?;
    let mut kms = lock(&inner.kms);
    let key = kms
        .saved
        .keys
        .get_mut(&key_name)
        .ok_or_else(|| ControlError::not_found("no such key"))?;
    let version = key
        .versions
        .iter_mut()
        .find(|v| v.id == id)
        .ok_or_else(|| ControlError::not_found("no such version"))?;
    version.state = req.state;
    let answer = key_json(&key_name, key);
    kms.save().map_err(|e| ControlError::internal(&e))?;
    Ok(json(StatusCode::OK, &answer))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Denied {
    service_accounts: Vec<String>,
}

/// `PUT /_emulator/kms/denied` `{"service_accounts": [EMAIL, ...]}`: replaces the accounts
/// refused the use of every key (`[]` allows all again).
pub(crate) async fn set_denied(
    State(inner): State<Arc<Inner>>,
    body: axum::body::Bytes,
) -> Result<Response, ControlError> {
    let req: Denied = crate::control::parse(&body)?;
    let mut kms = lock(&inner.kms);
    kms.saved.denied = req.service_accounts.into_iter().collect();
    let answer = json!({"service_accounts": kms.saved.denied});
    kms.save().map_err(|e| ControlError::internal(&e))?;
    Ok(json(StatusCode::OK, &answer))
}

/// `GET /_emulator/kms`: keys, versions and their states, the denied accounts, and counts of
/// the calls that succeeded (`GET /_emulator/stats` counts every call).
pub(crate) async fn overview(State(inner): State<Arc<Inner>>) -> Response {
    let kms = lock(&inner.kms);
    let keys: serde_json::Map<String, serde_json::Value> = kms
        .saved
        .keys
        .iter()
        .map(|(name, key)| (name.clone(), key_json(name, key)))
        .collect();
    json(
        StatusCode::OK,
        &json!({
            "keys": keys,
            "denied": kms.saved.denied,
            "encrypts": kms.encrypts,
            "decrypts": kms.decrypts,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_keys_or_versions() {
        let (key, method, version) =
            parse_target("p/locations/global/keyRings/r/cryptoKeys/k:encrypt").unwrap();
        assert_eq!(key, "projects/p/locations/global/keyRings/r/cryptoKeys/k");
        assert_eq!((method, version), ("encrypt", None));
        let (key, _, version) =
            parse_target("p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/3:encrypt")
                .unwrap();
        assert_eq!(key, "projects/p/locations/l/keyRings/r/cryptoKeys/k");
        assert_eq!(version, Some(3));
        for bad in [
            "p/locations/l/keyRings/r/cryptoKeys/k",
            "p/locations/l/keyRings/r:encrypt",
            "p/locations//keyRings/r/cryptoKeys/k:encrypt",
            "p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/x:encrypt",
        ] {
            assert!(parse_target(bad).is_none(), "{bad}");
        }
        assert!(is_key_name(
            "projects/p/locations/l/keyRings/r/cryptoKeys/k"
        ));
        assert!(!is_key_name("projects/p/locations/l/keyRings/r"));
        assert!(!is_key_name(
            "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1"
        ));
    }

    #[test]
    fn crc32c_is_castagnoli() {
        // RFC 3720's check value of "123456789".
        assert_eq!(CRC32C.checksum(b"123456789"), 0xE306_9283);
    }
}
