//! Loads the vault's data keys from the store, unwrapping them with the master key; creates the
//! first data key on a deployment's first start; and keeps a running server's keyring current
//! while `grantkeeper keys rotate` (see [`super::rotation`]) adds and retires keys: the
//! [`StoreKeyring`] is the source a [`VaultHandle`] reads again when it meets a value under a key
//! it does not know, and [`keep_reloading`] reads it every `vault.reload_interval` besides.
//!
//! The store refuses a value sealed under a key that is not its active one; the writer then
//! reads the keyring again here and seals anew. A server whose reads keep failing stops sealing
//! once they have failed for longer than one interval ([`keep_reloading`]).
//!
//! The data keys are wrapped by the master key source the deployment names
//! ([`crate::master_key`]); the source is asked only for keys this process has not unwrapped
//! yet, so that reading the keyring again asks it nothing unless a rotation added a key, and a
//! server whose Cloud KMS or HSM is down keeps the keys it holds.

use super::rewrap::wrapped_by;
use crate::workers::{StopSignal, stopped};
use grantkeeper_core::master::MasterKeyError;
use grantkeeper_core::{Clock, KeyId, KeyringSource, MasterKeySource, Vault, VaultHandle};
use grantkeeper_store::{DataKeyRecord, KeyStore};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::{MissedTickBehavior, interval};

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error(
        "the master key does not open data key {0}: is this the master key this store was created with?"
    )]
    WrongMasterKey(u32),
    /// The source refused or did not answer; the problem names the setting and the fix.
    #[error("data key {key}: {source}")]
    MasterKey {
        key: u32,
        #[source]
        source: MasterKeyError,
    },
    #[error(
        "data key {key} is wrapped by {wrapped_by}, but [vault] names {configured}: name that \
         master key in [vault], or move the data keys with `grantkeeper keys rewrap --to`"
    )]
    OtherSource {
        key: u32,
        wrapped_by: String,
        configured: String,
    },
    #[error("the store holds no active data key")]
    NoActiveKey,
    #[error("store: {0}")]
    Store(#[from] grantkeeper_store::StoreError),
    #[error("vault: {0}")]
    Vault(#[from] grantkeeper_core::VaultError),
}

/// Opens every data key; makes the first one if the store has none.
pub async fn load_vault(
    store: &dyn KeyStore,
    source: &dyn MasterKeySource,
    clock: &dyn Clock,
) -> Result<Vault, KeyringError> {
    let mut records = store.data_keys().await?;
    if !records.iter().any(|k| k.active) {
        // The store assigns ids from 1; wrap for the id the store will give only if it is the
        // first key, otherwise the race was lost and the winner's key is returned.
        let next_id = records.iter().map(|k| k.id).max().unwrap_or(0) + 1;
        let data_key = Vault::generate_data_key();
        let wrapped = source
            .wrap(KeyId(next_id), &data_key)
            .await
            .map_err(|source| KeyringError::MasterKey {
                key: next_id,
                source,
            })?;
        records = store
            .ensure_data_key(DataKeyRecord {
                id: next_id,
                wrapped,
                created_at: clock.now(),
                active: true,
                wrapped_by: Some(source.label().to_owned()),
            })
            .await?;
    }
    vault_from(&records, source, None).await
}

/// The vault of these data keys (the store's, not retired), one of them active. Keys `held`
/// has are taken from it; the others are unwrapped by `source`.
pub async fn vault_from(
    records: &[DataKeyRecord],
    source: &dyn MasterKeySource,
    held: Option<&Vault>,
) -> Result<Vault, KeyringError> {
    let mut vault = Vault::new();
    for record in records {
        let id = KeyId(record.id);
        if !held.is_some_and(|held| vault.adopt(held, id)) {
            let label = wrapped_by(record);
            if label != source.label() {
                return Err(KeyringError::OtherSource {
                    key: record.id,
                    wrapped_by: label.to_owned(),
                    configured: source.label().to_owned(),
                });
            }
            let key = source
                .unwrap(id, &record.wrapped)
                .await
                .map_err(|e| match e {
                    MasterKeyError::Unwrap => KeyringError::WrongMasterKey(record.id),
                    other => KeyringError::MasterKey {
                        key: record.id,
                        source: other,
                    },
                })?;
            vault.add_key(id, &key)?;
        }
        if record.active {
            vault.set_active(id)?;
        }
    }
    if vault.active().is_none() {
        return Err(KeyringError::NoActiveKey);
    }
    Ok(vault)
}

/// The store's data keys as a running server reads them again. Never creates a key; asks the
/// master key source only for keys it has not unwrapped before.
pub struct StoreKeyring {
    store: Arc<dyn KeyStore>,
    source: Arc<dyn MasterKeySource>,
    /// The last vault built, whose keys the next read takes again.
    held: Mutex<Arc<Vault>>,
}

impl StoreKeyring {
    /// Reads `store`'s keys with `source`, starting from the keys of `held` (the vault
    /// loaded at start).
    pub fn new(
        store: Arc<dyn KeyStore>,
        source: Arc<dyn MasterKeySource>,
        held: &Vault,
    ) -> StoreKeyring {
        let mut start = Vault::new();
        for id in held.key_ids() {
            start.adopt(held, id);
        }
        StoreKeyring {
            store,
            source,
            held: Mutex::new(Arc::new(start)),
        }
    }

    async fn load_now(&self) -> Result<Vault, KeyringError> {
        let records = self.store.data_keys().await?;
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let vault = vault_from(&records, self.source.as_ref(), Some(&held)).await?;
        let mut kept = Vault::new();
        for id in vault.key_ids() {
            kept.adopt(&vault, id);
        }
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(kept);
        Ok(vault)
    }
}

impl KeyringSource for StoreKeyring {
    fn load(&self) -> Pin<Box<dyn Future<Output = Result<Vault, String>> + Send + '_>> {
        Box::pin(async move {
            match self.load_now().await {
                Ok(vault) => {
                    tracing::debug!(keys = ?vault.key_ids(), active = ?vault.active(), "read the store's data keys");
                    Ok(vault)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the store's data keys again; keeping those held");
                    Err(e.to_string())
                }
            }
        })
    }
}

/// Reads the keyring of `handle` again every `every`, until told to stop or for as long as the
/// handle (a clone of it) lives elsewhere, once the returned task runs ([`crate::workers`]);
/// after a rotation makes a new key active, the server seals under it
/// within this time, even one that meets no value under it. Once the reads have failed for
/// longer than `every`, the handle stops sealing until one succeeds: the server no longer knows
/// which key is active, and answers work that would seal with 503.
pub fn keep_reloading(
    handle: &VaultHandle,
    every: Duration,
    mut stop: StopSignal,
) -> impl Future<Output = ()> + Send + 'static {
    handle.stop_sealing_after(every);
    let weak = handle.downgrade();
    async move {
        let mut ticks = interval(every);
        ticks.reset();
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = stopped(&mut stop) => return,
            }
            let Some(handle) = weak.upgrade() else {
                return;
            };
            match handle.reload().await {
                Ok(true) => {
                    let vault = handle.get();
                    tracing::info!(
                        keys = ?vault.key_ids().iter().map(|k| k.0).collect::<Vec<_>>(),
                        active = ?vault.active().map(|k| k.0),
                        "the store's data keys changed; sealing under the active one"
                    );
                }
                Ok(false) => {}
                Err(_) if handle.sealer().is_err() => tracing::error!(
                    "the store's data keys could not be read again for longer than {} s: \
                     nothing is sealed (sign-ins and refreshes answer 503) until they can",
                    every.as_secs()
                ),
                // Logged by the keyring source; one failed period is tolerated.
                Err(_) => {}
            }
        }
    }
}
