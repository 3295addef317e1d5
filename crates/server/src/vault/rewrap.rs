//! Moving the vault's data keys to another master key while servers run
//! (`grantkeeper keys rewrap --to`): from a key file to Cloud KMS or an HSM, between KMS keys,
//! back to a file.
//!
//! Each data key is unwrapped with the master key that wraps it now, wrapped by the new one,
//! unwrapped again by the new one to prove the wrapping good, and written in place of the old
//! wrapping only if the store still holds the bytes read. The data keys themselves do not
//! change, so no sealed value is touched, and running servers, which hold their data keys
//! unwrapped, go on without noticing; a server started afterwards must name the new master key
//! in its `[vault]`, and should before the next `keys rotate` (whose new key the new master key
//! wraps).
//!
//! A run stopped (Ctrl-C, a crash) is resumed by running it again: keys the new master key
//! already unwraps are left as they are. Retired keys keep their wrapping: they seal nothing
//! and no vault loads them again.

use grantkeeper_core::KeyId;
use grantkeeper_core::master::{LOCAL_SOURCE, MasterKeyError, MasterKeySource};
use grantkeeper_store::{DataKeyRecord, SharedStore, StoreError};
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum RewrapError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A master key refused or did not answer.
    #[error("data key {key}: {source}")]
    MasterKey {
        key: u32,
        #[source]
        source: MasterKeyError,
    },
    /// The key is wrapped by neither master key at hand.
    #[error(
        "data key {key} is wrapped by {wrapped_by}, but the configuration names {configured}: \
         run `grantkeeper keys rewrap` with the configuration of the master key that wraps it"
    )]
    OtherSource {
        key: u32,
        wrapped_by: String,
        configured: String,
    },
    #[error(
        "data key {0} does not come back from the new master key as it went in: nothing was \
         written"
    )]
    Mismatch(u32),
}

/// What a run is doing, key by key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RewrapEvent {
    /// Key `key` is now wrapped by the new master key.
    Rewrapped { key: u32 },
    /// The new master key already wraps key `key` (a resumed run).
    Already { key: u32 },
    /// Another run rewrapped key `key` between the read and the write: left as it wrote it.
    Changed { key: u32 },
}

/// How a run ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RewrapSummary {
    /// The new master key's label.
    pub to: String,
    pub rewrapped: Vec<u32>,
    pub already: Vec<u32>,
    /// Rewrapped by someone else meanwhile: run again to check them.
    pub changed: Vec<u32>,
    /// The stop signal ended the run between two keys: run again to resume.
    pub interrupted: bool,
}

impl RewrapSummary {
    /// True when every data key a vault loads is wrapped by the new master key.
    pub fn finished(&self) -> bool {
        !self.interrupted && self.changed.is_empty()
    }
}

/// The label of the source that wraps `record` (keys recorded before sources were: the local
/// master key's).
pub fn wrapped_by(record: &DataKeyRecord) -> &str {
    record.wrapped_by.as_deref().unwrap_or(LOCAL_SOURCE)
}

/// Rewraps every data key that is not retired from `from` (the configured master key) to
/// `to`, reporting each step to `on_event`. When `stop` turns true, the run ends before the
/// next key.
pub async fn rewrap(
    store: &SharedStore,
    from: &dyn MasterKeySource,
    to: &dyn MasterKeySource,
    stop: &watch::Receiver<bool>,
    on_event: &(dyn Fn(&RewrapEvent) + Send + Sync),
) -> Result<RewrapSummary, RewrapError> {
    let mut summary = RewrapSummary {
        to: to.label().to_owned(),
        ..RewrapSummary::default()
    };
    for record in store.data_keys().await? {
        let id = KeyId(record.id);
        let label = wrapped_by(&record);
        if label == to.label() {
            // Two local master keys share a label: only unwrapping tells them apart.
            match to.unwrap(id, &record.wrapped).await {
                Ok(_) => {
                    summary.already.push(record.id);
                    on_event(&RewrapEvent::Already { key: record.id });
                    continue;
                }
                Err(MasterKeyError::Unwrap) if label == from.label() => {}
                Err(source) => {
                    return Err(RewrapError::MasterKey {
                        key: record.id,
                        source,
                    });
                }
            }
        }
        if *stop.borrow() {
            summary.interrupted = true;
            break;
        }
        if label != from.label() {
            return Err(RewrapError::OtherSource {
                key: record.id,
                wrapped_by: label.to_owned(),
                configured: from.label().to_owned(),
            });
        }
        let fail = |source| RewrapError::MasterKey {
            key: record.id,
            source,
        };
        let data_key = from.unwrap(id, &record.wrapped).await.map_err(fail)?;
        let wrapped = to.wrap(id, &data_key).await.map_err(fail)?;
        let back = to.unwrap(id, &wrapped).await.map_err(fail)?;
        if *back != *data_key {
            return Err(RewrapError::Mismatch(record.id));
        }
        if store
            .rewrap_data_key(record.id, &record.wrapped, &wrapped, to.label())
            .await?
        {
            tracing::info!(key = record.id, to = to.label(), "data key rewrapped");
            summary.rewrapped.push(record.id);
            on_event(&RewrapEvent::Rewrapped { key: record.id });
        } else {
            summary.changed.push(record.id);
            on_event(&RewrapEvent::Changed { key: record.id });
        }
    }
    Ok(summary)
}
