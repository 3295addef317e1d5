//! Sealing tokens at rest with AES-256-GCM.
//!
//! Two layers of keys. The **master key** (32 bytes, from a file with mode 0600 or from
//! `GRANTKEEPER_VAULT__MASTER_KEY`) never seals a token: it only wraps **data keys**, which the
//! store keeps wrapped. Tokens are sealed under the active data key. Rotating means adding a
//! data key and re-sealing values under it; the master key file never changes for that.
//!
//! # Byte format of a sealed value
//!
//! ```text
//! offset  size  field
//! 0       1     version, 0x01
//! 1       4     key id, big-endian u32 (the data key; 0 for values wrapped by the master key)
//! 5       12    nonce, random per value (2^32 values per key stay far inside GCM's bound)
//! 17      n+16  ciphertext followed by the 16-byte GCM tag
//! ```
//!
//! The additional authenticated data is the 5-byte header followed by
//! `grantkeeper/<purpose>/<row>`: a value opens only under the same key id, for the same purpose
//! (refresh token, access token, data key) and for the same row (the user's `sub`, or the data
//! key's id). A refresh token copied into another user's row does not open.
//!
//! Plaintext never leaves this module except as a [`SecretString`] or a zeroized buffer, and no
//! error says anything about the key or the value.

use aws_lc_rs::aead::{AES_256_GCM, Aad as GcmAad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};
use std::collections::BTreeMap;
use std::fmt;
use zeroize::Zeroizing;

const VERSION: u8 = 1;
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
const TAG_LEN: usize = 16;

/// The id of a data key. Id 0 is reserved for the master key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub u32);

/// What a sealed value is, bound into its AAD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    RefreshToken,
    AccessToken,
    DataKey,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::RefreshToken => "refresh_token",
            Purpose::AccessToken => "access_token",
            Purpose::DataKey => "data_key",
        }
    }
}

/// The row and purpose a sealed value belongs to.
#[derive(Clone, Copy, Debug)]
pub struct Aad<'a> {
    pub purpose: Purpose,
    pub row: &'a str,
}

impl<'a> Aad<'a> {
    pub fn refresh_token(sub: &'a str) -> Self {
        Aad {
            purpose: Purpose::RefreshToken,
            row: sub,
        }
    }
    pub fn access_token(sub: &'a str) -> Self {
        Aad {
            purpose: Purpose::AccessToken,
            row: sub,
        }
    }

    fn bytes(&self, header: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(header.len() + 32 + self.row.len());
        v.extend_from_slice(header);
        v.extend_from_slice(b"grantkeeper/");
        v.extend_from_slice(self.purpose.as_str().as_bytes());
        v.push(b'/');
        v.extend_from_slice(self.row.as_bytes());
        v
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VaultError {
    #[error("sealed value is malformed")]
    Malformed,
    #[error("sealed value uses unknown key {0}")]
    UnknownKey(u32),
    #[error("sealed value does not open: wrong key, wrong row or tampered")]
    Open,
    #[error("the vault has no active key")]
    NoActiveKey,
    #[error("master key must be 32 bytes, base64-encoded")]
    BadMasterKey,
    #[error("encryption failed")]
    Seal,
}

fn key_from(bytes: &[u8; 32]) -> Result<LessSafeKey, VaultError> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| VaultError::Seal)
}

fn seal_with(
    key: &LessSafeKey,
    id: u32,
    plaintext: &[u8],
    aad: Aad<'_>,
) -> Result<Vec<u8>, VaultError> {
    let nonce_bytes = crate::random::bytes::<NONCE_LEN>();
    let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
    out.push(VERSION);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&nonce_bytes);
    let aad_bytes = aad.bytes(&out[..5]);
    let mut body = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce_bytes),
        GcmAad::from(aad_bytes),
        &mut body,
    )
    .map_err(|_| VaultError::Seal)?;
    out.extend_from_slice(&body);
    body.iter_mut().for_each(|b| *b = 0);
    Ok(out)
}

/// Reads the key id of a sealed value without opening it.
pub fn key_id_of(sealed: &[u8]) -> Result<KeyId, VaultError> {
    if sealed.len() < HEADER_LEN + TAG_LEN || sealed[0] != VERSION {
        return Err(VaultError::Malformed);
    }
    let mut id = [0u8; 4];
    id.copy_from_slice(&sealed[1..5]);
    Ok(KeyId(u32::from_be_bytes(id)))
}

fn open_with(
    key: &LessSafeKey,
    sealed: &[u8],
    aad: Aad<'_>,
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    key_id_of(sealed)?;
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&sealed[5..HEADER_LEN]);
    let aad_bytes = aad.bytes(&sealed[..5]);
    let mut body = Zeroizing::new(sealed[HEADER_LEN..].to_vec());
    let len = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            GcmAad::from(aad_bytes),
            &mut body,
        )
        .map_err(|_| VaultError::Open)?
        .len();
    body.truncate(len);
    Ok(body)
}

/// The key that wraps data keys. Its `Debug` shows nothing.
pub struct MasterKey {
    key: LessSafeKey,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, VaultError> {
        Ok(MasterKey {
            key: key_from(bytes)?,
        })
    }

    /// Parses the base64 of 32 bytes (surrounding white space allowed), as the key file and
    /// `GRANTKEEPER_VAULT__MASTER_KEY` hold it.
    pub fn from_base64(text: &SecretString) -> Result<Self, VaultError> {
        let decoded = Zeroizing::new(
            STANDARD
                .decode(text.expose_secret().trim())
                .map_err(|_| VaultError::BadMasterKey)?,
        );
        let bytes: Zeroizing<[u8; 32]> = Zeroizing::new(
            decoded
                .as_slice()
                .try_into()
                .map_err(|_| VaultError::BadMasterKey)?,
        );
        Self::from_bytes(&bytes)
    }

    /// A new random master key, as base64 text for a key file.
    pub fn generate_base64() -> SecretString {
        let bytes = Zeroizing::new(crate::random::bytes::<32>());
        SecretString::from(STANDARD.encode(bytes.as_slice()))
    }

    /// Wraps a data key for storage.
    pub fn wrap(&self, id: KeyId, data_key: &[u8; 32]) -> Result<Vec<u8>, VaultError> {
        let row = id.0.to_string();
        seal_with(
            &self.key,
            0,
            data_key,
            Aad {
                purpose: Purpose::DataKey,
                row: &row,
            },
        )
    }

    /// Unwraps a stored data key.
    pub fn unwrap_key(&self, id: KeyId, wrapped: &[u8]) -> Result<Zeroizing<[u8; 32]>, VaultError> {
        let row = id.0.to_string();
        let opened = open_with(
            &self.key,
            wrapped,
            Aad {
                purpose: Purpose::DataKey,
                row: &row,
            },
        )?;
        let key: [u8; 32] = opened
            .as_slice()
            .try_into()
            .map_err(|_| VaultError::Malformed)?;
        Ok(Zeroizing::new(key))
    }
}

/// The data keys, one of them active for sealing. All of them open.
#[derive(Default)]
pub struct Vault {
    keys: BTreeMap<KeyId, LessSafeKey>,
    active: Option<KeyId>,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .field("active", &self.active)
            .finish()
    }
}

impl Vault {
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh random data key, for the store to keep wrapped.
    pub fn generate_data_key() -> Zeroizing<[u8; 32]> {
        Zeroizing::new(crate::random::bytes::<32>())
    }

    pub fn add_key(&mut self, id: KeyId, key: &[u8; 32]) -> Result<(), VaultError> {
        self.keys.insert(id, key_from(key)?);
        Ok(())
    }

    /// Makes `id` the key new values are sealed under.
    pub fn set_active(&mut self, id: KeyId) -> Result<(), VaultError> {
        if !self.keys.contains_key(&id) {
            return Err(VaultError::UnknownKey(id.0));
        }
        self.active = Some(id);
        Ok(())
    }

    pub fn active(&self) -> Option<KeyId> {
        self.active
    }

    pub fn seal(&self, plaintext: &[u8], aad: Aad<'_>) -> Result<Vec<u8>, VaultError> {
        let id = self.active.ok_or(VaultError::NoActiveKey)?;
        let key = self.keys.get(&id).ok_or(VaultError::NoActiveKey)?;
        seal_with(key, id.0, plaintext, aad)
    }

    pub fn open(&self, sealed: &[u8], aad: Aad<'_>) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let id = key_id_of(sealed)?;
        let key = self.keys.get(&id).ok_or(VaultError::UnknownKey(id.0))?;
        open_with(key, sealed, aad)
    }

    pub fn seal_secret(&self, secret: &SecretString, aad: Aad<'_>) -> Result<Vec<u8>, VaultError> {
        self.seal(secret.expose_secret().as_bytes(), aad)
    }

    pub fn open_secret(&self, sealed: &[u8], aad: Aad<'_>) -> Result<SecretString, VaultError> {
        let bytes = self.open(sealed, aad)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| VaultError::Malformed)?;
        Ok(SecretString::from(text))
    }
}

/// The vault in use, shared by every part that seals or opens. Key rotation swaps in a new
/// [`Vault`]; holders of the old one keep a consistent view until they ask again.
#[derive(Clone, Debug)]
pub struct VaultHandle(std::sync::Arc<std::sync::RwLock<std::sync::Arc<Vault>>>);

impl VaultHandle {
    pub fn new(vault: Vault) -> Self {
        VaultHandle(std::sync::Arc::new(std::sync::RwLock::new(
            std::sync::Arc::new(vault),
        )))
    }

    /// The current vault.
    pub fn get(&self) -> std::sync::Arc<Vault> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the vault (after adding or activating a key).
    pub fn replace(&self, vault: Vault) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = std::sync::Arc::new(vault);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault(id: u32) -> Vault {
        let mut v = Vault::new();
        v.add_key(KeyId(id), &[id as u8; 32]).unwrap();
        v.set_active(KeyId(id)).unwrap();
        v
    }

    fn secret(s: &str) -> SecretString {
        SecretString::from(s)
    }

    #[test]
    fn round_trip() {
        let v = vault(7);
        let sealed = v
            .seal_secret(&secret("1//refresh"), Aad::refresh_token("sub-1"))
            .unwrap();
        assert_eq!(key_id_of(&sealed).unwrap(), KeyId(7));
        assert_eq!(sealed.len(), HEADER_LEN + "1//refresh".len() + TAG_LEN);
        assert!(!sealed.windows(10).any(|w| w == b"1//refresh"));
        let opened = v.open_secret(&sealed, Aad::refresh_token("sub-1")).unwrap();
        assert_eq!(opened.expose_secret(), "1//refresh");
    }

    #[test]
    fn two_seals_of_one_value_differ() {
        let v = vault(1);
        let a = v.seal(b"x", Aad::refresh_token("s")).unwrap();
        let b = v.seal(b"x", Aad::refresh_token("s")).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn wrong_row_or_purpose_does_not_open() {
        let v = vault(1);
        let sealed = v.seal(b"token", Aad::refresh_token("alice")).unwrap();
        assert_eq!(
            v.open(&sealed, Aad::refresh_token("bob")).unwrap_err(),
            VaultError::Open
        );
        assert_eq!(
            v.open(&sealed, Aad::access_token("alice")).unwrap_err(),
            VaultError::Open
        );
    }

    #[test]
    fn tampering_anywhere_is_detected() {
        let v = vault(1);
        let sealed = v.seal(b"token", Aad::refresh_token("alice")).unwrap();
        for i in 5..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x01;
            assert!(v.open(&t, Aad::refresh_token("alice")).is_err(), "byte {i}");
        }
        let mut bad_version = sealed.clone();
        bad_version[0] = 2;
        assert_eq!(
            v.open(&bad_version, Aad::refresh_token("alice"))
                .unwrap_err(),
            VaultError::Malformed
        );
    }

    #[test]
    fn wrong_or_unknown_key() {
        let sealed = vault(1).seal(b"token", Aad::refresh_token("a")).unwrap();
        assert_eq!(
            vault(2).open(&sealed, Aad::refresh_token("a")).unwrap_err(),
            VaultError::UnknownKey(1)
        );
        let mut other = Vault::new();
        other.add_key(KeyId(1), &[9u8; 32]).unwrap();
        other.set_active(KeyId(1)).unwrap();
        assert_eq!(
            other.open(&sealed, Aad::refresh_token("a")).unwrap_err(),
            VaultError::Open
        );
    }

    #[test]
    fn short_input_is_malformed() {
        let v = vault(1);
        for n in 0..(HEADER_LEN + TAG_LEN) {
            let mut buf = vec![0u8; n];
            if let Some(b) = buf.first_mut() {
                *b = VERSION;
            }
            assert_eq!(
                v.open(&buf, Aad::refresh_token("a")).unwrap_err(),
                VaultError::Malformed
            );
        }
    }

    #[test]
    fn rotation_keeps_old_values_open() {
        let mut v = vault(1);
        let old = v.seal(b"old", Aad::refresh_token("a")).unwrap();
        v.add_key(KeyId(2), &[2u8; 32]).unwrap();
        v.set_active(KeyId(2)).unwrap();
        let new = v.seal(b"new", Aad::refresh_token("a")).unwrap();
        assert_eq!(key_id_of(&new).unwrap(), KeyId(2));
        assert_eq!(&*v.open(&old, Aad::refresh_token("a")).unwrap(), b"old");
        assert_eq!(
            v.set_active(KeyId(3)).unwrap_err(),
            VaultError::UnknownKey(3)
        );
    }

    #[test]
    fn master_key_wraps_data_keys() {
        let text = MasterKey::generate_base64();
        let master = MasterKey::from_base64(&text).unwrap();
        let dk = Vault::generate_data_key();
        let wrapped = master.wrap(KeyId(3), &dk).unwrap();
        assert_eq!(*master.unwrap_key(KeyId(3), &wrapped).unwrap(), *dk);
        assert!(master.unwrap_key(KeyId(4), &wrapped).is_err());
        let other = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
        assert!(other.unwrap_key(KeyId(3), &wrapped).is_err());
        assert!(!format!("{master:?}").contains(text.expose_secret()));
    }

    #[test]
    fn master_key_text_must_be_32_bytes_of_base64() {
        assert_eq!(
            MasterKey::from_base64(&secret("not base64!")).unwrap_err(),
            VaultError::BadMasterKey
        );
        assert_eq!(
            MasterKey::from_base64(&secret("AAAA")).unwrap_err(),
            VaultError::BadMasterKey
        );
        let ok = format!("  {}\n", STANDARD.encode([1u8; 32]));
        assert!(MasterKey::from_base64(&secret(&ok)).is_ok());
    }
}
