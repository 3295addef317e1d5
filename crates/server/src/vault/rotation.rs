//! Rotating the vault's data keys without stopping the servers (`grantkeeper keys rotate`).
//!
//! A rotation makes a new data key, wrapped by the master key, the active one in one store
//! transaction, then re-seals every sealed value of the store under it in batches, and ends
//! with verification passes that count what old keys still seal. Running servers pick the new
//! key up without a restart ([`super::keyring`]): one that meets a value under a key it does not
//! know reads the keyring again and opens it, one whose write the store refuses (sealed under
//! a key that is no longer active) reads it, seals anew and writes again, and each reads it
//! every `vault.reload_interval` anyway.
//!
//! Each re-seal is fenced by the bytes read: a value that a running server replaced meanwhile
//! (a refresh, a sign-in) is skipped, never overwritten, and the writer's value wins. When the
//! writer still sealed under the old key, a later pass re-seals that value. Passes stop when old
//! keys seal nothing, and then the old keys are retired: marked, kept out of every vault, their
//! ids never reused. A key that still seals a value is never retired, and the store refuses any
//! new value under a key that is not active, so none appears under a retired key. Retirement
//! also waits until the new key has been active for [`RotationOptions::grace`], at least twice
//! the servers' reload interval, by when every running server has read the keyring again.
//!
//! A rotation that was stopped (Ctrl-C, a crash) is resumed by the next [`Rotation::begin`]:
//! while a key other than the active one is not retired, a rotation to the active key is
//! unfinished, and no new key is made. Re-sealing needs no saved cursor: the values still to
//! do are those not under the active key.

use super::keyring::{KeyringError, load_vault, vault_from};
use crate::config::DEFAULT_KEYRING_RELOAD;
use grantkeeper_core::{Aad, KeyId, MasterKeySource, SharedClock, Vault, VaultError};
use grantkeeper_store::{
    DataKeyRecord, DataKeyStatus, MAX_PAGE, Reseal, RotationStore, SealedColumn, SealedValue,
    StoreError,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Values read and re-sealed per batch (one store transaction) unless told otherwise.
pub const DEFAULT_BATCH_SIZE: u32 = 500;
/// Old keys are retired only once the new key has been active this long: twice the time in
/// which every running server reads the keyring again (by default).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(2 * DEFAULT_KEYRING_RELOAD.as_secs());
/// Re-seal passes at most: the first re-seals everything; the next ones take what running
/// servers sealed under an old key before they read the keyring again.
pub const DEFAULT_PASSES: u32 = 3;

/// How a rotation runs.
#[derive(Clone, Debug)]
pub struct RotationOptions {
    /// Values per batch, 1 to [`MAX_PAGE`].
    pub batch_size: u32,
    /// How long after the new key became active old keys may be retired: at least twice
    /// `reload_interval` (a run with less is refused).
    pub grace: Duration,
    /// Re-seal passes at most (at least 1).
    pub passes: u32,
    /// How often the servers read the keyring again (their `vault.reload_interval`).
    pub reload_interval: Duration,
}

impl RotationOptions {
    /// The shortest grace allowed: twice the servers' reload interval, by when each has read
    /// the keyring again (one interval) even if its first read after the rotation failed.
    pub fn min_grace(&self) -> Duration {
        self.reload_interval.saturating_mul(2)
    }
}

impl Default for RotationOptions {
    fn default() -> Self {
        RotationOptions {
            batch_size: DEFAULT_BATCH_SIZE,
            grace: DEFAULT_GRACE,
            passes: DEFAULT_PASSES,
            reload_interval: DEFAULT_KEYRING_RELOAD,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("{0}")]
    Keyring(#[from] KeyringError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("vault: {0}")]
    Vault(#[from] VaultError),
    #[error("{0}")]
    Options(String),
}

/// What a rotation is doing, as it happens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RotationEvent {
    /// One batch of values of `column` was re-sealed under the new key.
    Batch {
        column: SealedColumn,
        /// Written under the new key.
        resealed: u64,
        /// Replaced by another writer since they were read: left as that writer wrote them.
        skipped: u64,
        /// Do not open with any key held (tampered, moved to another row, or under a key the
        /// store does not have): left as they are, and their key is kept.
        unreadable: u64,
        /// Values this run has gone through so far, and how many were not under the new key
        /// when it started (later passes may go past it).
        done: u64,
        total: u64,
    },
    /// Waiting before the verification that may retire old keys, until the new key has been
    /// active for the grace time.
    Waiting { remaining: Duration },
    /// A verification pass counted the values still not under the new key.
    Verified { pass: u32, remaining: u64 },
    /// An old key that seals nothing any more was retired.
    Retired { key: u32 },
}

/// How a run ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RotationSummary {
    /// The key values are sealed under now.
    pub key: u32,
    /// True when this run continued a rotation begun before.
    pub resumed: bool,
    pub resealed: u64,
    pub skipped: u64,
    pub unreadable: u64,
    /// Values still not under the new key at the last count (0 when the run finished).
    pub remaining: u64,
    /// Old keys retired by this run.
    pub retired: Vec<u32>,
    /// Old keys left because they still seal values.
    pub kept: Vec<u32>,
    /// Re-seal passes done.
    pub passes: u32,
    /// True when the stop signal ended the run after a batch: the next run resumes.
    pub interrupted: bool,
}

impl RotationSummary {
    /// True when every value is under the new key and every old key is retired.
    pub fn finished(&self) -> bool {
        !self.interrupted && self.remaining == 0 && self.kept.is_empty()
    }
}

/// A rotation begun or resumed: the new key is active in the store.
pub struct Rotation {
    store: Arc<dyn RotationStore>,
    clock: SharedClock,
    /// Every key not retired, the new one active.
    vault: Vault,
    key: DataKeyStatus,
    resumed: bool,
}

impl std::fmt::Debug for Rotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rotation")
            .field("key", &self.key.id)
            .field("resumed", &self.resumed)
            .finish_non_exhaustive()
    }
}

/// The unretired keys other than the active one: a rotation to the active key is unfinished
/// while there are any.
fn old_keys(statuses: &[DataKeyStatus]) -> Vec<u32> {
    statuses
        .iter()
        .filter(|k| !k.active && k.retired_at.is_none())
        .map(|k| k.id)
        .collect()
}

impl Rotation {
    /// Resumes the unfinished rotation, if there is one; otherwise makes a new data key the
    /// active one (the store's first key too, on a store that has none).
    pub async fn begin(
        store: Arc<dyn RotationStore>,
        source: &dyn MasterKeySource,
        clock: SharedClock,
    ) -> Result<Rotation, RotationError> {
        // Opens every key (and proves the master key right) before anything is written.
        let loaded = load_vault(store.as_ref(), source, clock.as_ref()).await?;
        let mut created = false;
        // A lost race (another rotation made its key active first) is joined, not repeated.
        for _ in 0..3 {
            let statuses = store.data_key_statuses().await?;
            let active = statuses
                .iter()
                .find(|k| k.active)
                .cloned()
                .ok_or(KeyringError::NoActiveKey)?;
            if created || !old_keys(&statuses).is_empty() {
                let vault = vault_from(&store.data_keys().await?, source, Some(&loaded)).await?;
                return Ok(Rotation {
                    store,
                    clock,
                    vault,
                    key: active,
                    resumed: !created,
                });
            }
            let id = statuses.iter().map(|k| k.id).max().unwrap_or(0) + 1;
            let data_key = Vault::generate_data_key();
            let wrapped = source
                .wrap(KeyId(id), &data_key)
                .await
                .map_err(|source| KeyringError::MasterKey { key: id, source })?;
            let candidate = DataKeyRecord {
                id,
                wrapped,
                created_at: clock.now(),
                active: true,
                wrapped_by: Some(source.label().to_owned()),
            };
            match store.rotate_data_key(candidate, active.id).await {
                Ok(_) => created = true,
                Err(StoreError::Conflict) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Conflict.into())
    }

    /// The key values are being re-sealed under.
    pub fn key(&self) -> u32 {
        self.key.id
    }

    /// True when this continues a rotation begun before (no new key was made).
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// The keys being rotated away from.
    pub fn old_keys(&self) -> Vec<u32> {
        self.vault
            .key_ids()
            .into_iter()
            .map(|k| k.0)
            .filter(|&k| k != self.key.id)
            .collect()
    }

    /// Re-seals every value not under the new key, in batches, then (once the grace time is
    /// over) counts what old keys still seal and passes again until nothing is left or
    /// `options.passes` are done, and retires the old keys that seal nothing. When `stop`
    /// turns true, the run ends after the batch under way (or at once while it waits), with
    /// `interrupted` set; the next [`Rotation::begin`] resumes it. Each step is reported to
    /// `on_event`.
    pub async fn run(
        &mut self,
        options: &RotationOptions,
        mut stop: watch::Receiver<bool>,
        on_event: &(dyn Fn(&RotationEvent) + Send + Sync),
    ) -> Result<RotationSummary, RotationError> {
        if options.batch_size == 0 || options.batch_size > MAX_PAGE {
            return Err(RotationError::Options(format!(
                "the batch size must be 1 to {MAX_PAGE}"
            )));
        }
        if options.grace < options.min_grace() {
            return Err(RotationError::Options(format!(
                "a grace of {} s is shorter than twice the servers' key reload interval \
                 (vault.reload_interval, {} s): a server may still seal under the old key when \
                 it is retired; pass at least {} s",
                options.grace.as_secs_f64(),
                options.reload_interval.as_secs_f64(),
                options.min_grace().as_secs_f64()
            )));
        }
        if self.vault.active() != Some(KeyId(self.key.id)) {
            return Err(KeyringError::NoActiveKey.into());
        }
        let mut summary = RotationSummary {
            key: self.key.id,
            resumed: self.resumed,
            ..RotationSummary::default()
        };
        let mut progress = Progress {
            done: 0,
            total: self.store.count_sealed().await?.outside(self.key.id),
        };
        let mut waited = false;
        for pass in 1..=options.passes.max(1) {
            summary.passes = pass;
            if self
                .pass(
                    options.batch_size,
                    &stop,
                    &mut progress,
                    &mut summary,
                    on_event,
                )
                .await?
            {
                summary.interrupted = true;
                break;
            }
            if !waited {
                if self
                    .wait_for_grace(options.grace, &mut stop, on_event)
                    .await
                {
                    summary.interrupted = true;
                    break;
                }
                waited = true;
            }
            let remaining = self.store.count_sealed().await?.outside(self.key.id);
            summary.remaining = remaining;
            on_event(&RotationEvent::Verified { pass, remaining });
            if remaining == 0 {
                break;
            }
        }
        if !summary.interrupted {
            self.retire(&mut summary, on_event).await?;
        }
        Ok(summary)
    }

    /// One pass over every sealed column; true when `stop` ended it.
    async fn pass(
        &self,
        batch_size: u32,
        stop: &watch::Receiver<bool>,
        progress: &mut Progress,
        summary: &mut RotationSummary,
        on_event: &(dyn Fn(&RotationEvent) + Send + Sync),
    ) -> Result<bool, RotationError> {
        for column in SealedColumn::ALL {
            let mut after: Option<String> = None;
            loop {
                if *stop.borrow() {
                    return Ok(true);
                }
                let values = self
                    .store
                    .sealed_outside(column, self.key.id, after.as_deref(), batch_size)
                    .await?;
                let Some(last) = values.last() else {
                    break;
                };
                after = Some(last.row.clone());
                let read = values.len() as u64;
                let (reseals, unreadable) = self.reseal_all(&values);
                let tried = reseals.len() as u64;
                let resealed = self.store.reseal(reseals).await?;
                let skipped = tried - resealed.min(tried);
                progress.done += read;
                summary.resealed += resealed;
                summary.skipped += skipped;
                summary.unreadable += unreadable;
                on_event(&RotationEvent::Batch {
                    column,
                    resealed,
                    skipped,
                    unreadable,
                    done: progress.done,
                    total: progress.total.max(progress.done),
                });
                if read < u64::from(batch_size) {
                    break;
                }
            }
        }
        Ok(false)
    }

    /// The values sealed again under the new key, for the same row; and how many do not open.
    fn reseal_all(&self, values: &[SealedValue]) -> (Vec<Reseal>, u64) {
        let mut reseals = Vec::with_capacity(values.len());
        let mut unreadable = 0;
        for value in values {
            let aad = match value.column {
                SealedColumn::RefreshToken => Aad::refresh_token(&value.row),
                SealedColumn::AccessToken => Aad::access_token(&value.row),
                SealedColumn::PendingRevocation => Aad::pending_revocation(&value.row),
            };
            let resealed = self
                .vault
                .open(&value.sealed, aad)
                .and_then(|plain| self.vault.seal(&plain, aad));
            match resealed {
                Ok(to) => reseals.push(Reseal {
                    column: value.column,
                    row: value.row.clone(),
                    from: value.sealed.clone(),
                    to,
                }),
                Err(e) => {
                    // The row names whose value it is; the value itself is never logged.
                    tracing::warn!(column = value.column.as_str(), row = %value.row, error = %e, "a sealed value does not open; it is left as it is");
                    unreadable += 1;
                }
            }
        }
        (reseals, unreadable)
    }

    /// Waits until the new key has been active for `grace`; true when `stop` ended the wait.
    async fn wait_for_grace(
        &self,
        grace: Duration,
        stop: &mut watch::Receiver<bool>,
        on_event: &(dyn Fn(&RotationEvent) + Send + Sync),
    ) -> bool {
        let active_for = self.clock.now() - self.key.created_at;
        let active_for = Duration::try_from(active_for).unwrap_or(Duration::ZERO);
        let Some(remaining) = grace.checked_sub(active_for).filter(|d| !d.is_zero()) else {
            return false;
        };
        on_event(&RotationEvent::Waiting { remaining });
        if *stop.borrow() {
            return true;
        }
        let stopped = async {
            if stop.wait_for(|stopped| *stopped).await.is_err() {
                // Nobody can ask for a stop any more: wait the whole time.
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = tokio::time::sleep(remaining) => false,
            () = stopped => true,
        }
    }

    /// Retires every old key that seals nothing (the store checks again as it retires).
    async fn retire(
        &self,
        summary: &mut RotationSummary,
        on_event: &(dyn Fn(&RotationEvent) + Send + Sync),
    ) -> Result<(), RotationError> {
        let statuses = self.store.data_key_statuses().await?;
        for id in old_keys(&statuses) {
            if self.store.retire_data_key(id, self.clock.now()).await? {
                summary.retired.push(id);
                on_event(&RotationEvent::Retired { key: id });
            } else {
                summary.kept.push(id);
            }
        }
        Ok(())
    }
}

/// Values gone through, against those to do at the start.
struct Progress {
    done: u64,
    total: u64,
}
