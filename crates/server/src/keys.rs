//! Loads the vault's data keys from the store, unwrapping them with the master key; creates the
//! first data key on a deployment's first start; and keeps a running server's keyring current
//! while `grantkeeper keys rotate` (see [`crate::rotation`]) adds and retires keys: the
//! [`StoreKeyring`] is the source a [`VaultHandle`] reads again when it meets a value under a key
//! it does not know, and [`spawn_reloader`] reads it every `vault.reload_interval` besides.
//!
//! The store refuses a value sealed under a key that is not its active one; the writer then
//! reads the keyring again here and seals anew. A server whose reads keep failing stops sealing
//! once they have failed for longer than one interval ([`spawn_reloader`]).

use grantkeeper_core::{Clock, KeyId, KeyringSource, MasterKey, Vault, VaultHandle};
use grantkeeper_store::{DataKeyRecord, KeyStore, SharedStore};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior, interval_at};

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error(
        "the master key does not open data key {0}: is this the master key this store was created with?"
    )]
    WrongMasterKey(u32),
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
    master: &MasterKey,
    clock: &dyn Clock,
) -> Result<Vault, KeyringError> {
    let mut records = store.data_keys().await?;
    if !records.iter().any(|k| k.active) {
        // The store assigns ids from 1; wrap for the id the store will give only if it is the
        // first key, otherwise the race was lost and the winner's key is returned.
        let next_id = records.iter().map(|k| k.id).max().unwrap_or(0) + 1;
        let data_key = Vault::generate_data_key();
        let wrapped = master.wrap(KeyId(next_id), &data_key)?;
        records = store
            .ensure_data_key(DataKeyRecord {
                id: next_id,
                wrapped,
                created_at: clock.now(),
                active: true,
                // The master key of a file or of the environment.
                wrapped_by: Some("local".to_owned()),
            })
            .await?;
    }
    vault_from(&records, master)
}

/// The vault of these data keys (the store's, not retired), one of them active.
pub fn vault_from(records: &[DataKeyRecord], master: &MasterKey) -> Result<Vault, KeyringError> {
    let mut vault = Vault::new();
    for record in records {
        let key = master
            .unwrap_key(KeyId(record.id), &record.wrapped)
            .map_err(|_| KeyringError::WrongMasterKey(record.id))?;
        vault.add_key(KeyId(record.id), &key)?;
        if record.active {
            vault.set_active(KeyId(record.id))?;
        }
    }
    if vault.active().is_none() {
        return Err(KeyringError::NoActiveKey);
    }
    Ok(vault)
}

/// The store's data keys as a running server reads them again. Never creates a key.
pub struct StoreKeyring {
    store: SharedStore,
    master: MasterKey,
}

impl StoreKeyring {
    pub fn new(store: SharedStore, master: &MasterKey) -> Result<StoreKeyring, KeyringError> {
        Ok(StoreKeyring {
            store,
            master: master.try_clone()?,
        })
    }

    async fn load_now(&self) -> Result<Vault, KeyringError> {
        let records = self.store.data_keys().await?;
        vault_from(&records, &self.master)
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

/// Reads the keyring of `handle` again every `every`, for as long as the handle (a clone of
/// it) lives elsewhere; after a rotation makes a new key active, the server seals under it
/// within this time, even one that meets no value under it. Once the reads have failed for
/// longer than `every`, the handle stops sealing until one succeeds: the server no longer knows
/// which key is active, and answers work that would seal with 503.
pub fn spawn_reloader(handle: &VaultHandle, every: Duration) {
    handle.stop_sealing_after(every);
    let weak = handle.downgrade();
    tokio::spawn(async move {
        let mut ticks = interval_at(Instant::now() + every, every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
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
    });
}
