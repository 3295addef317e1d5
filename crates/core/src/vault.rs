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
//! (refresh token, access token, data key, pending revocation) and for the same row (the user's
//! `sub`, the data key's id, or the pending revocation's id). A refresh token copied into another
//! user's row does not open.
//!
//! Plaintext never leaves this module except as a [`SecretString`] or a zeroized buffer, and no
//! error says anything about the key or the value.
//!
//! # Rotation, seen from a running process
//!
//! A process holds its keyring in a [`VaultHandle`]. Another process (`grantkeeper keys
//! rotate`) may add a data key, make it the active one and re-seal values under it while this
//! one runs. A handle built [`VaultHandle::with_source`] reads the keyring again from its
//! [`KeyringSource`] when asked ([`VaultHandle::reload`], which the server does periodically)
//! and, once, when [`VaultHandle::open_secret`] meets a value sealed under a key id it does not
//! know: then it retries with the keyring it just read. Until it reloads, it seals under the key
//! that was active when it last read.
//!
//! The store accepts a new sealed value only under the key that is active there (it reads the
//! header), so a value sealed under a key a rotation has made inactive is refused, never
//! written: the writer then calls [`VaultHandle::reload_after_refusal`], seals again under the
//! key it reads, and writes again. A value under a key that rotation may retire is never left
//! behind by a process that had not read the keyring yet.
//!
//! A handle whose reloads keep failing no longer knows which key is active. Once they have
//! failed for longer than the time given to [`VaultHandle::stop_sealing_after`],
//! [`VaultHandle::sealer`] answers [`VaultError::KeyringStale`] until a reload succeeds: the
//! server refuses work that would seal (with 503) rather than seal under a key it cannot vouch
//! for.

use crate::clock::{SharedClock, SystemClock};
use aws_lc_rs::aead::{AES_256_GCM, Aad as GcmAad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock, Weak};
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
    /// A token waiting in the revocation queue to be revoked at the provider; its row is the
    /// queue entry's id, not a `sub` (the user may be gone).
    PendingRevocation,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::RefreshToken => "refresh_token",
            Purpose::AccessToken => "access_token",
            Purpose::DataKey => "data_key",
            Purpose::PendingRevocation => "pending_revocation",
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

    /// A token queued for revocation at the provider, bound to its queue entry `id`: copied
    /// into another entry (or a grant) it does not open.
    pub fn pending_revocation(id: &'a str) -> Self {
        Aad {
            purpose: Purpose::PendingRevocation,
            row: id,
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
    /// The keyring could not be read again for too long: sealing waits until it can.
    #[error("the data keys could not be read again for too long; sealing waits until they can")]
    KeyringStale,
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
    let [a, b, c, d] = id.to_be_bytes();
    let header = [VERSION, a, b, c, d];
    let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&header);
    out.extend_from_slice(&nonce_bytes);
    let aad_bytes = aad.bytes(&header);
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

/// A sealed value cut along its byte format.
struct Parts<'a> {
    /// Version and key id: the start of the AAD.
    header: &'a [u8; 5],
    id: u32,
    nonce: [u8; NONCE_LEN],
    /// Ciphertext and tag.
    body: &'a [u8],
}

/// Cuts a sealed value into its parts; too short or of another version is `Malformed`.
fn parts(sealed: &[u8]) -> Result<Parts<'_>, VaultError> {
    let (header, rest) = sealed
        .split_first_chunk::<5>()
        .ok_or(VaultError::Malformed)?;
    let (nonce, body) = rest
        .split_first_chunk::<NONCE_LEN>()
        .ok_or(VaultError::Malformed)?;
    let [version, id @ ..] = *header;
    if version != VERSION || body.len() < TAG_LEN {
        return Err(VaultError::Malformed);
    }
    Ok(Parts {
        header,
        id: u32::from_be_bytes(id),
        nonce: *nonce,
        body,
    })
}

/// Reads the key id of a sealed value without opening it.
pub fn key_id_of(sealed: &[u8]) -> Result<KeyId, VaultError> {
    parts(sealed).map(|p| KeyId(p.id))
}

fn open_with(
    key: &LessSafeKey,
    sealed: &[u8],
    aad: Aad<'_>,
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let parts = parts(sealed)?;
    let aad_bytes = aad.bytes(parts.header);
    let mut body = Zeroizing::new(parts.body.to_vec());
    let len = key
        .open_in_place(
            Nonce::assume_unique_for_key(parts.nonce),
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
    /// Kept (zeroized on drop) for [`MasterKey::try_clone`].
    bytes: Zeroizing<[u8; 32]>,
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
            bytes: Zeroizing::new(*bytes),
        })
    }

    /// A second handle on the same key: a running server keeps one to unwrap the data keys
    /// that a rotation adds.
    pub fn try_clone(&self) -> Result<Self, VaultError> {
        Self::from_bytes(&self.bytes)
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
    /// Shared with the vaults a reload builds from this one ([`Vault::adopt`]).
    keys: BTreeMap<KeyId, Arc<LessSafeKey>>,
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
        self.keys.insert(id, Arc::new(key_from(key)?));
        Ok(())
    }

    /// Takes key `id` from `held` (a vault built before) without unwrapping it again: a data
    /// key's id names the same key for ever. True when `held` had it.
    pub fn adopt(&mut self, held: &Vault, id: KeyId) -> bool {
        match held.keys.get(&id) {
            Some(key) => {
                self.keys.insert(id, key.clone());
                true
            }
            None => false,
        }
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

    /// Whether this vault opens values under key `id`.
    pub fn has_key(&self, id: KeyId) -> bool {
        self.keys.contains_key(&id)
    }

    /// The ids of its keys, in order.
    pub fn key_ids(&self) -> Vec<KeyId> {
        self.keys.keys().copied().collect()
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

/// Where a [`VaultHandle`] reads the keyring again (the server: the store's data keys, unwrapped
/// with the master key). A failure is described for people, never with a key in it; the source
/// logs it, as this crate does no I/O.
pub trait KeyringSource: Send + Sync {
    fn load(&self) -> Pin<Box<dyn Future<Output = Result<Vault, String>> + Send + '_>>;
}

/// The vault in use, shared by every part that seals or opens. Cheap to clone; clones share
/// it. A reload swaps in a new [`Vault`]; holders of the old one keep a consistent view until
/// they ask again.
#[derive(Clone)]
pub struct VaultHandle(Arc<Shared>);

struct Shared {
    current: RwLock<Arc<Vault>>,
    source: Option<Arc<dyn KeyringSource>>,
    /// What times a failing keyring ([`VaultHandle::sealer`]'s limit).
    clock: SharedClock,
    /// One reload at a time: the many opens that meet a new key together read the keyring once.
    reloading: tokio::sync::Mutex<()>,
    /// Key ids that the last reload did not find either. Opens of values under them are not
    /// sent to the source again until the next reload (a value under a key that no longer
    /// exists must not turn every read of it into a read of the keyring).
    missing: Mutex<BTreeSet<u32>>,
    /// When the reloads began to fail, as the clock's monotonic reading (None while the last
    /// one succeeded).
    failing_since: Mutex<Option<std::time::Duration>>,
    /// How long reloads may fail before [`VaultHandle::sealer`] refuses (None: never).
    stale_after: Mutex<Option<std::time::Duration>>,
}

impl fmt::Debug for VaultHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultHandle")
            .field("vault", &self.get())
            .field("reloads", &self.0.source.is_some())
            .finish()
    }
}

/// A [`VaultHandle`] that does not keep the vault alive (for a background reloader that should
/// end with its owner).
#[derive(Clone, Debug)]
pub struct WeakVaultHandle(Weak<Shared>);

impl WeakVaultHandle {
    pub fn upgrade(&self) -> Option<VaultHandle> {
        self.0.upgrade().map(VaultHandle)
    }
}

impl VaultHandle {
    /// A handle that never reloads: the vault changes only through [`VaultHandle::replace`].
    pub fn new(vault: Vault) -> Self {
        Self::build(vault, None, Arc::new(SystemClock))
    }

    /// A handle that reads the keyring again from `source` on [`VaultHandle::reload`] and when
    /// an open meets an unknown key id; `clock` times how long reloads have been failing.
    pub fn with_source(vault: Vault, source: Arc<dyn KeyringSource>, clock: SharedClock) -> Self {
        Self::build(vault, Some(source), clock)
    }

    fn build(vault: Vault, source: Option<Arc<dyn KeyringSource>>, clock: SharedClock) -> Self {
        VaultHandle(Arc::new(Shared {
            current: RwLock::new(Arc::new(vault)),
            source,
            clock,
            reloading: tokio::sync::Mutex::new(()),
            missing: Mutex::new(BTreeSet::new()),
            failing_since: Mutex::new(None),
            stale_after: Mutex::new(None),
        }))
    }

    /// Makes [`VaultHandle::sealer`] refuse once reloads have failed for longer than `after`
    /// (the server passes its reload interval: one failed period is tolerated, a second is
    /// not).
    pub fn stop_sealing_after(&self, after: std::time::Duration) {
        *self.0.stale_after.lock().unwrap_or_else(|e| e.into_inner()) = Some(after);
    }

    /// The vault to seal under: the current one, unless reloads have failed for longer than
    /// [`VaultHandle::stop_sealing_after`] allows ([`VaultError::KeyringStale`]).
    pub fn sealer(&self) -> Result<Arc<Vault>, VaultError> {
        let stale_after = *self.0.stale_after.lock().unwrap_or_else(|e| e.into_inner());
        let failing_since = *self
            .0
            .failing_since
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let (Some(after), Some(since)) = (stale_after, failing_since)
            && self.0.clock.monotonic().saturating_sub(since) > after
        {
            return Err(VaultError::KeyringStale);
        }
        Ok(self.get())
    }

    /// After the store refused a value sealed under `refused` (no longer its active key):
    /// reads the keyring again, unless another caller already did since (the active key is
    /// no longer `refused`). Then [`VaultHandle::sealer`] seals under the store's active key.
    /// [`VaultError::KeyringStale`] when the keyring cannot be read, or still names `refused`
    /// active.
    pub async fn reload_after_refusal(&self, refused: KeyId) -> Result<(), VaultError> {
        let Some(source) = &self.0.source else {
            return Err(VaultError::KeyringStale);
        };
        if self.get().active() != Some(refused) {
            return Ok(());
        }
        let _one_at_a_time = self.0.reloading.lock().await;
        if self.get().active() != Some(refused) {
            return Ok(());
        }
        self.reload_from(source.as_ref())
            .await
            .map_err(|_| VaultError::KeyringStale)?;
        if self.get().active() == Some(refused) {
            return Err(VaultError::KeyringStale);
        }
        Ok(())
    }

    /// The current vault.
    pub fn get(&self) -> Arc<Vault> {
        self.0
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the vault (after adding or activating a key).
    pub fn replace(&self, vault: Vault) {
        *self.0.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(vault);
    }

    pub fn downgrade(&self) -> WeakVaultHandle {
        WeakVaultHandle(Arc::downgrade(&self.0))
    }

    /// Reads the keyring again from the source and makes it current; true when its keys or its
    /// active key changed. Without a source: false.
    pub async fn reload(&self) -> Result<bool, String> {
        let Some(source) = &self.0.source else {
            return Ok(false);
        };
        let _one_at_a_time = self.0.reloading.lock().await;
        self.reload_from(source.as_ref()).await
    }

    /// Holding `reloading`.
    async fn reload_from(&self, source: &dyn KeyringSource) -> Result<bool, String> {
        let vault = match source.load().await {
            Ok(vault) => vault,
            Err(e) => {
                let now = self.0.clock.monotonic();
                self.failing_since().get_or_insert(now);
                return Err(e);
            }
        };
        *self.failing_since() = None;
        let before = self.get();
        let changed = vault.key_ids() != before.key_ids() || vault.active() != before.active();
        self.replace(vault);
        self.missing().clear();
        Ok(changed)
    }

    fn failing_since(&self) -> std::sync::MutexGuard<'_, Option<std::time::Duration>> {
        self.0
            .failing_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn missing(&self) -> std::sync::MutexGuard<'_, BTreeSet<u32>> {
        self.0.missing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes sure the current vault has key `id`, reading the keyring once if it does not;
    /// true when it has it then.
    /// [`VaultError::KeyringStale`] when the keyring could not be read (its store or its master
    /// key source did not answer): the value may well open once it can.
    async fn know(&self, id: KeyId) -> Result<bool, VaultError> {
        let Some(source) = &self.0.source else {
            return Ok(false);
        };
        if self.get().has_key(id) {
            return Ok(true);
        }
        if self.missing().contains(&id.0) {
            return Ok(false);
        }
        let _one_at_a_time = self.0.reloading.lock().await;
        // Another open may have read the keyring while this one waited.
        if self.get().has_key(id) {
            return Ok(true);
        }
        if self.missing().contains(&id.0) {
            return Ok(false);
        }
        if self.reload_from(source.as_ref()).await.is_err() {
            return Err(VaultError::KeyringStale);
        }
        let known = self.get().has_key(id);
        if !known {
            self.missing().insert(id.0);
        }
        Ok(known)
    }

    /// Opens `sealed` with the current vault; a value under a key id it does not know reloads
    /// the keyring once (see [`VaultHandle::with_source`]) and is opened again.
    pub async fn open(
        &self,
        sealed: &[u8],
        aad: Aad<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let first = self.get().open(sealed, aad);
        match first {
            Err(VaultError::UnknownKey(id)) => match self.know(KeyId(id)).await? {
                true => self.get().open(sealed, aad),
                false => Err(VaultError::UnknownKey(id)),
            },
            other => other,
        }
    }

    /// [`VaultHandle::open`], as text.
    pub async fn open_secret(
        &self,
        sealed: &[u8],
        aad: Aad<'_>,
    ) -> Result<SecretString, VaultError> {
        let bytes = self.open(sealed, aad).await?;
        let text = std::str::from_utf8(&bytes).map_err(|_| VaultError::Malformed)?;
        Ok(SecretString::from(text))
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
    fn a_queued_revocation_opens_only_under_its_own_entry() {
        let v = vault(1);
        let sealed = v
            .seal_secret(&secret("1//refresh"), Aad::pending_revocation("rev_a"))
            .unwrap();
        let opened = v
            .open_secret(&sealed, Aad::pending_revocation("rev_a"))
            .unwrap();
        assert_eq!(opened.expose_secret(), "1//refresh");
        for other in [
            Aad::pending_revocation("rev_b"),
            Aad::refresh_token("rev_a"),
            Aad::access_token("rev_a"),
        ] {
            assert_eq!(v.open(&sealed, other).unwrap_err(), VaultError::Open);
        }
        // And a grant's refresh token does not open as a queued one.
        let held = v.seal(b"token", Aad::refresh_token("alice")).unwrap();
        assert_eq!(
            v.open(&held, Aad::pending_revocation("alice")).unwrap_err(),
            VaultError::Open
        );
    }

    #[test]
    fn existing_aads_keep_their_bytes() {
        let header = [1u8, 0, 0, 0, 7];
        let mut expected = header.to_vec();
        expected.extend_from_slice(b"grantkeeper/refresh_token/alice");
        assert_eq!(Aad::refresh_token("alice").bytes(&header), expected);
        let mut expected = header.to_vec();
        expected.extend_from_slice(b"grantkeeper/pending_revocation/rev_1");
        assert_eq!(Aad::pending_revocation("rev_1").bytes(&header), expected);
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

    /// A keyring that answers a vault of the given keys (the last one active), counting reads.
    struct Keys {
        ids: Mutex<Vec<u32>>,
        reads: std::sync::atomic::AtomicUsize,
        /// Reads fail while set (a store or a key service that does not answer).
        failing: std::sync::atomic::AtomicBool,
    }

    impl Keys {
        fn new(ids: &[u32]) -> Arc<Keys> {
            Arc::new(Keys {
                ids: Mutex::new(ids.to_vec()),
                reads: Default::default(),
                failing: Default::default(),
            })
        }
        fn fail(&self, failing: bool) {
            self.failing
                .store(failing, std::sync::atomic::Ordering::SeqCst);
        }
        fn set(&self, ids: &[u32]) {
            *self.ids.lock().unwrap() = ids.to_vec();
        }
        fn reads(&self) -> usize {
            self.reads.load(std::sync::atomic::Ordering::SeqCst)
        }
        fn vault(&self) -> Vault {
            let ids = self.ids.lock().unwrap().clone();
            let mut v = Vault::new();
            for id in &ids {
                v.add_key(KeyId(*id), &[*id as u8; 32]).unwrap();
            }
            if let Some(last) = ids.last() {
                v.set_active(KeyId(*last)).unwrap();
            }
            v
        }
    }

    impl KeyringSource for Keys {
        fn load(&self) -> Pin<Box<dyn Future<Output = Result<Vault, String>> + Send + '_>> {
            Box::pin(async move {
                self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::task::yield_now().await;
                if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err("the store does not answer".to_owned());
                }
                Ok(self.vault())
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_handle_reloads_once_for_a_value_under_a_new_key() {
        let keys = Keys::new(&[1]);
        let handle = VaultHandle::with_source(keys.vault(), keys.clone(), SystemClock::shared());
        let old = handle.get().seal(b"old", Aad::refresh_token("a")).unwrap();

        // Another process adds key 2, makes it active and seals under it.
        keys.set(&[1, 2]);
        let new = keys.vault().seal(b"new", Aad::refresh_token("a")).unwrap();
        assert_eq!(
            handle
                .get()
                .open(&new, Aad::refresh_token("a"))
                .unwrap_err(),
            VaultError::UnknownKey(2)
        );
        let opens: Vec<_> = (0..16)
            .map(|_| {
                let handle = handle.clone();
                let new = new.clone();
                tokio::spawn(async move {
                    handle
                        .open_secret(&new, Aad::refresh_token("a"))
                        .await
                        .unwrap()
                })
            })
            .collect();
        for open in opens {
            assert_eq!(open.await.unwrap().expose_secret(), "new");
        }
        assert_eq!(keys.reads(), 1, "concurrent misses read the keyring once");
        assert_eq!(
            handle.get().active(),
            Some(KeyId(2)),
            "and seal under the new key"
        );
        assert_eq!(
            &*handle.open(&old, Aad::refresh_token("a")).await.unwrap(),
            b"old"
        );
        assert_eq!(keys.reads(), 1, "a known key reads nothing");
    }

    #[tokio::test]
    async fn a_key_the_keyring_lacks_is_asked_for_once_per_reload() {
        let keys = Keys::new(&[1]);
        let handle = VaultHandle::with_source(keys.vault(), keys.clone(), SystemClock::shared());
        let stray = vault(9).seal(b"x", Aad::refresh_token("a")).unwrap();
        for _ in 0..3 {
            assert_eq!(
                handle
                    .open(&stray, Aad::refresh_token("a"))
                    .await
                    .unwrap_err(),
                VaultError::UnknownKey(9)
            );
        }
        assert_eq!(keys.reads(), 1);
        // A periodic reload forgets what was missing.
        assert!(!handle.reload().await.unwrap(), "nothing changed");
        assert!(handle.open(&stray, Aad::refresh_token("a")).await.is_err());
        assert_eq!(keys.reads(), 3);
        // Without a source, nothing is read.
        let fixed = VaultHandle::new(vault(1));
        assert!(!fixed.reload().await.unwrap());
        assert_eq!(
            fixed
                .open(&stray, Aad::refresh_token("a"))
                .await
                .unwrap_err(),
            VaultError::UnknownKey(9)
        );
    }

    #[tokio::test]
    async fn a_reload_says_whether_the_keyring_changed() {
        let keys = Keys::new(&[1]);
        let handle = VaultHandle::with_source(keys.vault(), keys.clone(), SystemClock::shared());
        assert!(!handle.reload().await.unwrap());
        keys.set(&[1, 2]);
        assert!(handle.reload().await.unwrap());
        keys.set(&[2]);
        assert!(
            handle.reload().await.unwrap(),
            "a retired key leaves the keyring"
        );
        assert_eq!(handle.get().key_ids(), vec![KeyId(2)]);
        let weak = handle.downgrade();
        assert!(weak.upgrade().is_some());
        drop(handle);
        assert!(weak.upgrade().is_none());
    }

    #[tokio::test]
    async fn a_handle_whose_reloads_keep_failing_stops_sealing_until_one_succeeds() {
        let keys = Keys::new(&[1]);
        let clock = crate::ManualClock::new();
        let handle = VaultHandle::with_source(keys.vault(), keys.clone(), clock.clone());
        let after = std::time::Duration::from_secs(30);
        handle.stop_sealing_after(after);
        assert!(handle.sealer().is_ok());
        keys.fail(true);
        assert!(handle.reload().await.is_err());
        // One failed period is tolerated: the key held is still the store's, most likely.
        clock.advance(time::Duration::seconds(29));
        assert_eq!(handle.sealer().unwrap().active(), Some(KeyId(1)));
        clock.advance(time::Duration::seconds(2));
        assert!(handle.reload().await.is_err());
        assert_eq!(handle.sealer().unwrap_err(), VaultError::KeyringStale);
        // Opening needs no current keyring: what is held still opens.
        let sealed = handle.get().seal(b"x", Aad::refresh_token("a")).unwrap();
        assert!(handle.open(&sealed, Aad::refresh_token("a")).await.is_ok());
        keys.fail(false);
        handle.reload().await.unwrap();
        assert!(handle.sealer().is_ok());
        // Without a limit, a failing keyring never stops sealing.
        let unlimited = VaultHandle::with_source(keys.vault(), keys.clone(), clock.clone());
        keys.fail(true);
        assert!(unlimited.reload().await.is_err());
        clock.advance(time::Duration::hours(1));
        assert!(unlimited.sealer().is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_seal_reads_the_keyring_once_and_seals_under_the_new_key() {
        let keys = Keys::new(&[1]);
        let handle = VaultHandle::with_source(keys.vault(), keys.clone(), SystemClock::shared());
        // A rotation made key 2 active; the store refuses what this handle seals under key 1.
        keys.set(&[1, 2]);
        let refusals: Vec<_> = (0..8)
            .map(|_| {
                let handle = handle.clone();
                tokio::spawn(async move { handle.reload_after_refusal(KeyId(1)).await })
            })
            .collect();
        for refusal in refusals {
            refusal.await.unwrap().unwrap();
        }
        assert_eq!(
            keys.reads(),
            1,
            "the writers refused together read the keyring once"
        );
        let sealed = handle
            .sealer()
            .unwrap()
            .seal(b"x", Aad::refresh_token("a"))
            .unwrap();
        assert_eq!(key_id_of(&sealed).unwrap(), KeyId(2));
        // A keyring that still names the refused key active cannot help: the writer gives up.
        assert_eq!(
            handle.reload_after_refusal(KeyId(2)).await.unwrap_err(),
            VaultError::KeyringStale
        );
        keys.fail(true);
        keys.set(&[1, 2, 3]);
        assert_eq!(
            handle.reload_after_refusal(KeyId(2)).await.unwrap_err(),
            VaultError::KeyringStale
        );
        // Without a source there is nothing to read.
        assert_eq!(
            VaultHandle::new(vault(1))
                .reload_after_refusal(KeyId(1))
                .await
                .unwrap_err(),
            VaultError::KeyringStale
        );
    }

    #[test]
    fn a_master_key_clone_unwraps_the_same_keys() {
        let master = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
        let wrapped = master.wrap(KeyId(5), &[7u8; 32]).unwrap();
        let twin = master.try_clone().unwrap();
        assert_eq!(*twin.unwrap_key(KeyId(5), &wrapped).unwrap(), [7u8; 32]);
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

    #[test]
    fn a_vault_adopts_the_keys_another_holds() {
        let held = vault(3);
        let sealed = held.seal(b"x", Aad::refresh_token("a")).unwrap();
        let mut next = Vault::new();
        assert!(next.adopt(&held, KeyId(3)));
        assert!(!next.adopt(&held, KeyId(4)));
        next.set_active(KeyId(3)).unwrap();
        assert_eq!(&*next.open(&sealed, Aad::refresh_token("a")).unwrap(), b"x");
        assert_eq!(next.key_ids(), vec![KeyId(3)]);
    }
}
