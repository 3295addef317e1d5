//! What rotating the vault's data keys needs from the store: every key with what it still seals,
//! a new active key in one step, the sealed values not yet under a given key, re-sealing them
//! fenced by the bytes read, and retiring a key that seals nothing. The traits and records are
//! here; each backend's statements are in its `rotation` module.
//!
//! The store never opens a sealed value, but it reads the 5-byte header that the vault writes
//! first in each (`grantkeeper_core::vault`: version 0x01, then the data key's id as a
//! big-endian u32), in SQL (`substr` of the BLOB or bytea), so that counting the values under
//! each key is one scan of the database, with no value leaving it.
//!
//! A re-seal changes the bytes of a value, never what it opens to: it does not move a grant's
//! `version` or `updated_at`, so that a writer holding the fence it read (a refresh on another
//! instance) still writes, and its value, newer, wins. The re-seal itself is fenced by the
//! bytes: a value replaced since it was read is skipped.

use crate::rows::Columns;
use crate::{DataKeyRecord, Result, StoreError};
use async_trait::async_trait;
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// The version byte that starts every sealed value of the vault's format 1.
const SEALED_VERSION: u8 = 1;

/// A column holding sealed values, and the row that each value's AAD binds it to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SealedColumn {
    /// `grants.refresh_token`, bound to the grant's `sub` (`Aad::refresh_token`).
    RefreshToken,
    /// `grants.access_token`, bound to the grant's `sub` (`Aad::access_token`).
    AccessToken,
    /// `pending_revocations.token`, bound to the entry's `id` (`Aad::pending_revocation`).
    PendingRevocation,
}

impl SealedColumn {
    /// Every sealed column of the store.
    pub const ALL: [SealedColumn; 3] = [
        SealedColumn::RefreshToken,
        SealedColumn::AccessToken,
        SealedColumn::PendingRevocation,
    ];

    /// `table.column`, for people.
    pub fn as_str(self) -> &'static str {
        match self {
            SealedColumn::RefreshToken => "grants.refresh_token",
            SealedColumn::AccessToken => "grants.access_token",
            SealedColumn::PendingRevocation => "pending_revocations.token",
        }
    }
}

/// One sealed value as it is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedValue {
    pub column: SealedColumn,
    /// The grant's `sub`, or the pending revocation's `id`: the row its AAD names.
    pub row: String,
    pub sealed: Vec<u8>,
}

/// A value sealed again: written only if the column still holds `from`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reseal {
    pub column: SealedColumn,
    pub row: String,
    /// The bytes read.
    pub from: Vec<u8>,
    /// The same plaintext, sealed under another key for the same row.
    pub to: Vec<u8>,
}

/// How many sealed values name each key id in their header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SealedCounts {
    /// Key id -> values, for every id that some value names (a key that seals nothing is
    /// absent). Ids no data key has are counted too.
    pub by_key: BTreeMap<u32, u64>,
    /// Values whose header is not of the vault's format (shorter than 5 bytes, or another
    /// version byte).
    pub malformed: u64,
}

impl SealedCounts {
    /// Values under key `id`.
    pub fn under(&self, id: u32) -> u64 {
        self.by_key.get(&id).copied().unwrap_or(0)
    }

    /// Values not under key `id`: under other keys, or malformed.
    pub fn outside(&self, id: u32) -> u64 {
        self.total() - self.under(id)
    }

    pub fn total(&self) -> u64 {
        self.by_key.values().sum::<u64>() + self.malformed
    }

    /// Adds `n` values whose first bytes are `head` (up to 5).
    pub(crate) fn add(&mut self, head: &[u8], n: u64) {
        match head {
            [SEALED_VERSION, a, b, c, d] => {
                *self
                    .by_key
                    .entry(u32::from_be_bytes([*a, *b, *c, *d]))
                    .or_default() += n;
            }
            _ => self.malformed += n,
        }
    }
}

/// The header that values sealed under key `id` start with, as the statements compare it.
pub(crate) fn header(id: u32) -> Vec<u8> {
    let mut head = vec![SEALED_VERSION];
    head.extend_from_slice(&id.to_be_bytes());
    head
}

/// A data key as `grantkeeper keys list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataKeyStatus {
    pub id: u32,
    pub created_at: OffsetDateTime,
    pub active: bool,
    /// When it was retired: it sealed nothing then, and is never loaded again.
    pub retired_at: Option<OffsetDateTime>,
    /// Sealed values whose header names it.
    pub sealed_values: u64,
    /// The label of the master key source that wraps it ([`crate::DataKeyRecord::wrapped_by`]).
    pub wrapped_by: Option<String>,
}

#[async_trait]
pub trait KeyRotationStore: Send + Sync {
    /// Every data key, retired ones included, oldest first, with the values each seals.
    async fn data_key_statuses(&self) -> Result<Vec<DataKeyStatus>>;

    /// How many sealed values name each key id, over every [`SealedColumn`].
    async fn count_sealed(&self) -> Result<SealedCounts>;

    /// Inserts `candidate` as the active key and makes the key that was active inactive, in one
    /// transaction, only if `expected_active` is still the active key (another rotation may
    /// have got there first): else [`StoreError::Conflict`], and nothing changes. The caller
    /// chooses `candidate.id` (its wrapping binds that id), one more than the highest id of any
    /// key, retired ones included; an id already taken is a [`StoreError::Conflict`] too.
    /// `candidate.active` is ignored. Returns every key that is not retired, oldest first.
    async fn rotate_data_key(
        &self,
        candidate: DataKeyRecord,
        expected_active: u32,
    ) -> Result<Vec<DataKeyRecord>>;

    /// Up to `limit` values of `column` that are not sealed under key `key` (under another key,
    /// or malformed), ordered by row, after the row `after`. `limit` is capped at
    /// [`crate::MAX_PAGE`]; 0 means [`crate::DEFAULT_PAGE`].
    async fn sealed_outside(
        &self,
        column: SealedColumn,
        key: u32,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SealedValue>>;

    /// Writes each re-seal whose column still holds exactly `from`, in one transaction;
    /// returns how many were written. The others were replaced (or their row deleted) since
    /// they were read and are left as they are. Moves no grant's `version` nor `updated_at`.
    async fn reseal(&self, reseals: Vec<Reseal>) -> Result<u64>;

    /// Retires key `id` at `at` if it is neither active nor retired and no sealed value names
    /// it, checked in the same transaction; true when it was retired now. A retired key keeps
    /// its row (ids are never reused) but is no longer returned by
    /// [`crate::KeyStore::data_keys`], so no vault loads it again.
    async fn retire_data_key(&self, id: u32, at: OffsetDateTime) -> Result<bool>;

    /// Replaces the wrapping of data key `id` by `to`, made by the master key source labelled
    /// `wrapped_by`, only if the key is still wrapped as `from` (moving keys to another master
    /// key, `grantkeeper keys rewrap`); true when it was written. The data key itself does not
    /// change, so neither does anything it seals. Retired keys are written too.
    async fn rewrap_data_key(
        &self,
        id: u32,
        from: &[u8],
        to: &[u8],
        wrapped_by: &str,
    ) -> Result<bool>;
}

/// The statements of rotation, the same on both backends.
pub(crate) const SELECT_STATUSES: &str =
    "SELECT id, created_at, active, retired_at, wrapped_by FROM data_keys ORDER BY id";

/// Sealed values by their first five bytes (`substr` counts bytes in a BLOB or bytea).
pub(crate) const COUNT_SEALED: &str = "SELECT head, COUNT(*) AS n FROM (
        SELECT substr(refresh_token, 1, 5) AS head FROM grants WHERE refresh_token IS NOT NULL
        UNION ALL
        SELECT substr(access_token, 1, 5) FROM grants WHERE access_token IS NOT NULL
        UNION ALL
        SELECT substr(token, 1, 5) FROM pending_revocations
    ) AS heads GROUP BY head";

/// The values of one column not under the key whose header is $1, `$2` at most, in row
/// order; the `_AFTER` forms start after the row $3.
pub(crate) const REFRESH_OUTSIDE: &str = "SELECT sub AS row, refresh_token AS sealed FROM grants
     WHERE refresh_token IS NOT NULL AND substr(refresh_token, 1, 5) <> $1
     ORDER BY sub LIMIT $2";
pub(crate) const REFRESH_OUTSIDE_AFTER: &str =
    "SELECT sub AS row, refresh_token AS sealed FROM grants
     WHERE refresh_token IS NOT NULL AND substr(refresh_token, 1, 5) <> $1 AND sub > $3
     ORDER BY sub LIMIT $2";
pub(crate) const ACCESS_OUTSIDE: &str = "SELECT sub AS row, access_token AS sealed FROM grants
     WHERE access_token IS NOT NULL AND substr(access_token, 1, 5) <> $1
     ORDER BY sub LIMIT $2";
pub(crate) const ACCESS_OUTSIDE_AFTER: &str =
    "SELECT sub AS row, access_token AS sealed FROM grants
     WHERE access_token IS NOT NULL AND substr(access_token, 1, 5) <> $1 AND sub > $3
     ORDER BY sub LIMIT $2";
pub(crate) const PENDING_OUTSIDE: &str =
    "SELECT id AS row, token AS sealed FROM pending_revocations
     WHERE substr(token, 1, 5) <> $1
     ORDER BY id LIMIT $2";
pub(crate) const PENDING_OUTSIDE_AFTER: &str =
    "SELECT id AS row, token AS sealed FROM pending_revocations
     WHERE substr(token, 1, 5) <> $1 AND id > $3
     ORDER BY id LIMIT $2";

pub(crate) fn outside_statement(column: SealedColumn, after: bool) -> &'static str {
    match (column, after) {
        (SealedColumn::RefreshToken, false) => REFRESH_OUTSIDE,
        (SealedColumn::RefreshToken, true) => REFRESH_OUTSIDE_AFTER,
        (SealedColumn::AccessToken, false) => ACCESS_OUTSIDE,
        (SealedColumn::AccessToken, true) => ACCESS_OUTSIDE_AFTER,
        (SealedColumn::PendingRevocation, false) => PENDING_OUTSIDE,
        (SealedColumn::PendingRevocation, true) => PENDING_OUTSIDE_AFTER,
    }
}

/// Replaces the value of row $2 by $1 only if it is still $3. Neither `version` nor
/// `updated_at` moves: the value opens to what it did.
pub(crate) fn reseal_statement(column: SealedColumn) -> &'static str {
    match column {
        SealedColumn::RefreshToken => {
            "UPDATE grants SET refresh_token = $1 WHERE sub = $2 AND refresh_token = $3"
        }
        SealedColumn::AccessToken => {
            "UPDATE grants SET access_token = $1 WHERE sub = $2 AND access_token = $3"
        }
        SealedColumn::PendingRevocation => {
            "UPDATE pending_revocations SET token = $1 WHERE id = $2 AND token = $3"
        }
    }
}

/// One statement, under the write lock (SQLite) or its rows' locks (PostgreSQL): nothing can
/// seal a value under the key between the check and the mark.
pub(crate) const RETIRE: &str = "UPDATE data_keys SET retired_at = $2
     WHERE id = $1 AND NOT active AND retired_at IS NULL
       AND NOT EXISTS (SELECT 1 FROM grants WHERE substr(refresh_token, 1, 5) = $3)
       AND NOT EXISTS (SELECT 1 FROM grants WHERE substr(access_token, 1, 5) = $3)
       AND NOT EXISTS (SELECT 1 FROM pending_revocations WHERE substr(token, 1, 5) = $3)";

/// A new wrapping of key $1, fenced by the bytes read ($4).
pub(crate) const REWRAP: &str =
    "UPDATE data_keys SET wrapped = $2, wrapped_by = $3 WHERE id = $1 AND wrapped = $4";

/// Columns: id, created_at, active, retired_at, wrapped_by.
pub(crate) fn data_key_status(row: &dyn Columns, counts: &SealedCounts) -> Result<DataKeyStatus> {
    let id = u32::try_from(row.int("id")?)
        .map_err(|_| StoreError::Corrupt("data_keys.id is out of range".into()))?;
    let time = |secs: i64, column: &str| {
        OffsetDateTime::from_unix_timestamp(secs)
            .map_err(|_| StoreError::Corrupt(format!("data_keys.{column} is out of range")))
    };
    Ok(DataKeyStatus {
        id,
        created_at: time(row.int("created_at")?, "created_at")?,
        active: row.flag("active")?,
        retired_at: row
            .opt_int("retired_at")?
            .map(|secs| time(secs, "retired_at"))
            .transpose()?,
        sealed_values: counts.under(id),
        wrapped_by: row.opt_text("wrapped_by")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_counted_by_key_id() {
        let mut counts = SealedCounts::default();
        counts.add(&header(1), 3);
        counts.add(&header(0x0102_0304), 2);
        counts.add(&[1, 0, 0], 1);
        counts.add(&[2, 0, 0, 0, 1], 4);
        counts.add(&header(1), 1);
        assert_eq!(counts.under(1), 4);
        assert_eq!(counts.under(0x0102_0304), 2);
        assert_eq!(counts.malformed, 5);
        assert_eq!(counts.total(), 11);
        assert_eq!(counts.outside(1), 7);
        assert_eq!(counts.outside(9), 11);
        assert_eq!(header(0x0102_0304), [1, 1, 2, 3, 4]);
    }
}
