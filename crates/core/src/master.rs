//! Where the vault's master key lives, behind one trait.
//!
//! The master key never seals a token: it only wraps the vault's data keys, which the store
//! keeps wrapped, and unwraps them when a process loads its keyring. A [`MasterKeySource`] does
//! both. The [`MasterKey`] of a file or of the environment is one (label `local`); a key in
//! Google Cloud KMS or in an HSM reached through PKCS#11 is another (grantkeeper-keysource),
//! and then the master key never leaves the service or the hardware that holds it.
//!
//! Each wrapping is bound to its data key's id: the additional authenticated data of every
//! source is [`data_key_aad`], so a wrapped key copied under another id, or altered, does not
//! unwrap. A source is asked only when a data key is made or loaded (at start, at a rotation,
//! when a running process meets a key it has not loaded), never per token: a process holds its
//! unwrapped data keys in memory, zeroized when dropped, and keeps serving with them while its
//! source cannot be reached.
//!
//! Every label is recorded beside the data keys it wraps (`grantkeeper keys list` shows it); it
//! names a key, never holds one.

use crate::vault::{KeyId, MasterKey};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use zeroize::Zeroizing;

/// The label of the master key of a file or of the environment.
pub const LOCAL_SOURCE: &str = "local";

/// An owned future, as the source traits return them (the trait stays object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What went wrong, for an operator: the setting at fault, the problem and the fix. Never a key,
/// a PIN or a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingProblem {
    /// The configuration key to look at, such as `vault.kms_key`.
    pub setting: String,
    pub problem: String,
    pub fix: String,
}

impl SettingProblem {
    pub fn new(
        setting: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        SettingProblem {
            setting: setting.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

impl fmt::Display for SettingProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}. {}", self.setting, self.problem, self.fix)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MasterKeyError {
    /// The source answered no, and will until an operator acts: an unknown key, a permission
    /// denied, a disabled key version, a wrong PIN, a missing module.
    #[error("{0}")]
    Refused(SettingProblem),
    /// The source did not answer (unreachable, timed out, overloaded); it may later.
    #[error("{0}")]
    Unavailable(SettingProblem),
    /// The wrapped key does not unwrap under this source: altered, wrapped for another key id,
    /// or by another master key.
    #[error(
        "the wrapped data key does not unwrap: altered, wrapped for another key id, or by another master key"
    )]
    Unwrap,
}

/// A home of the master key: wraps and unwraps the vault's data keys.
pub trait MasterKeySource: Send + Sync {
    /// Names the master key (`local`, `kms:projects/P/locations/L/keyRings/R/cryptoKeys/K`,
    /// `pkcs11:token=T;object=O`), recorded beside each data key it wraps.
    fn label(&self) -> &str;

    /// Wraps data key `id` so that only this source unwraps it, and only for that id.
    fn wrap<'a>(
        &'a self,
        id: KeyId,
        data_key: &'a [u8; 32],
    ) -> BoxFuture<'a, Result<Vec<u8>, MasterKeyError>>;

    /// Unwraps data key `id` from what [`MasterKeySource::wrap`] gave for that id.
    fn unwrap<'a>(
        &'a self,
        id: KeyId,
        wrapped: &'a [u8],
    ) -> BoxFuture<'a, Result<Zeroizing<[u8; 32]>, MasterKeyError>>;
}

/// The additional authenticated data that binds a wrapping to data key `id`, for the sources
/// whose cipher takes one (Cloud KMS, PKCS#11 AES-GCM). The local master key binds the same
/// words through the vault's own format.
pub fn data_key_aad(id: KeyId) -> Vec<u8> {
    format!("grantkeeper/data_key/{}", id.0).into_bytes()
}

/// Wraps and unwraps a throwaway data key: proves that the source answers and that both
/// directions are allowed (what `grantkeeper check` reports). Id 0 belongs to no data key.
pub async fn round_trip(source: &dyn MasterKeySource) -> Result<(), MasterKeyError> {
    let probe = Zeroizing::new(crate::random::bytes::<32>());
    let wrapped = source.wrap(KeyId(0), &probe).await?;
    let back = source.unwrap(KeyId(0), &wrapped).await?;
    if *back == *probe {
        Ok(())
    } else {
        Err(MasterKeyError::Unwrap)
    }
}

impl MasterKeySource for MasterKey {
    fn label(&self) -> &str {
        LOCAL_SOURCE
    }

    fn wrap<'a>(
        &'a self,
        id: KeyId,
        data_key: &'a [u8; 32],
    ) -> BoxFuture<'a, Result<Vec<u8>, MasterKeyError>> {
        let wrapped = MasterKey::wrap(self, id, data_key).map_err(|_| {
            MasterKeyError::Refused(SettingProblem::new(
                "vault.master_key_file",
                "the local master key could not wrap a data key",
                "check the master key",
            ))
        });
        Box::pin(std::future::ready(wrapped))
    }

    fn unwrap<'a>(
        &'a self,
        id: KeyId,
        wrapped: &'a [u8],
    ) -> BoxFuture<'a, Result<Zeroizing<[u8; 32]>, MasterKeyError>> {
        let key = self
            .unwrap_key(id, wrapped)
            .map_err(|_| MasterKeyError::Unwrap);
        Box::pin(std::future::ready(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::Vault;

    #[tokio::test]
    async fn the_local_key_is_a_source() {
        let master = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
        let source: &dyn MasterKeySource = &master;
        assert_eq!(source.label(), "local");
        let key = Vault::generate_data_key();
        let wrapped = source.wrap(KeyId(4), &key).await.unwrap();
        assert_eq!(*source.unwrap(KeyId(4), &wrapped).await.unwrap(), *key);
        assert_eq!(
            source.unwrap(KeyId(5), &wrapped).await.unwrap_err(),
            MasterKeyError::Unwrap
        );
        let mut altered = wrapped.clone();
        if let Some(b) = altered.last_mut() {
            *b ^= 1;
        }
        assert_eq!(
            source.unwrap(KeyId(4), &altered).await.unwrap_err(),
            MasterKeyError::Unwrap
        );
        round_trip(source).await.unwrap();
    }

    #[test]
    fn the_aad_names_the_key_id() {
        assert_eq!(data_key_aad(KeyId(12)), b"grantkeeper/data_key/12");
    }

    #[test]
    fn a_problem_names_the_setting_and_the_fix() {
        let e = MasterKeyError::Refused(SettingProblem::new(
            "vault.kms_key",
            "Cloud KMS has no such key",
            "create it",
        ));
        assert_eq!(
            e.to_string(),
            "vault.kms_key: Cloud KMS has no such key. create it"
        );
    }
}
