//! Loads the vault's data keys from the store, unwrapping them with the master key; creates the
//! first data key on a deployment's first start.

use grantkeeper_core::{Clock, KeyId, MasterKey, Vault};
use grantkeeper_store::{DataKeyRecord, KeyStore};

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
            })
            .await?;
    }
    let mut vault = Vault::new();
    for record in &records {
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
