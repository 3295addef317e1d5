//! Rotation of the vault's data keys: counting sealed values by the key id in their header,
//! a new active key, fenced re-seals and retirement.

use super::keys::all_keys;
use super::{SqliteStore, map_sqlx};
use crate::rotation::{
    self, DataKeyStatus, KeyRotationStore, Reseal, SealedColumn, SealedCounts, SealedValue,
};
use crate::rows::{Columns, unix};
use crate::{DataKeyRecord, Result, StoreError, page_limit};
use async_trait::async_trait;
use sqlx::SqliteConnection;
use time::OffsetDateTime;

const SELECT_STATUSES: &str =
    "SELECT id, created_at, active, retired_at, wrapped_by FROM data_keys ORDER BY id";

/// Sealed values by their first five bytes (SQLite's `substr` counts bytes in a BLOB).
const COUNT_SEALED: &str = "SELECT head, COUNT(*) AS n FROM (
        SELECT substr(refresh_token, 1, 5) AS head FROM grants WHERE refresh_token IS NOT NULL
        UNION ALL
        SELECT substr(access_token, 1, 5) FROM grants WHERE access_token IS NOT NULL
        UNION ALL
        SELECT substr(token, 1, 5) FROM pending_revocations
    ) GROUP BY head";

/// The values of one column not under the key whose header is ?1, `?2` at most, in row
/// order; the `_AFTER` forms start after the row ?3.
const REFRESH_OUTSIDE: &str = "SELECT sub AS row, refresh_token AS sealed FROM grants
     WHERE refresh_token IS NOT NULL AND substr(refresh_token, 1, 5) <> ?1
     ORDER BY sub LIMIT ?2";
const REFRESH_OUTSIDE_AFTER: &str = "SELECT sub AS row, refresh_token AS sealed FROM grants
     WHERE refresh_token IS NOT NULL AND substr(refresh_token, 1, 5) <> ?1 AND sub > ?3
     ORDER BY sub LIMIT ?2";
const ACCESS_OUTSIDE: &str = "SELECT sub AS row, access_token AS sealed FROM grants
     WHERE access_token IS NOT NULL AND substr(access_token, 1, 5) <> ?1
     ORDER BY sub LIMIT ?2";
const ACCESS_OUTSIDE_AFTER: &str = "SELECT sub AS row, access_token AS sealed FROM grants
     WHERE access_token IS NOT NULL AND substr(access_token, 1, 5) <> ?1 AND sub > ?3
     ORDER BY sub LIMIT ?2";
const PENDING_OUTSIDE: &str = "SELECT id AS row, token AS sealed FROM pending_revocations
     WHERE substr(token, 1, 5) <> ?1
     ORDER BY id LIMIT ?2";
const PENDING_OUTSIDE_AFTER: &str = "SELECT id AS row, token AS sealed FROM pending_revocations
     WHERE substr(token, 1, 5) <> ?1 AND id > ?3
     ORDER BY id LIMIT ?2";

fn outside_statement(column: SealedColumn, after: bool) -> &'static str {
    match (column, after) {
        (SealedColumn::RefreshToken, false) => REFRESH_OUTSIDE,
        (SealedColumn::RefreshToken, true) => REFRESH_OUTSIDE_AFTER,
        (SealedColumn::AccessToken, false) => ACCESS_OUTSIDE,
        (SealedColumn::AccessToken, true) => ACCESS_OUTSIDE_AFTER,
        (SealedColumn::PendingRevocation, false) => PENDING_OUTSIDE,
        (SealedColumn::PendingRevocation, true) => PENDING_OUTSIDE_AFTER,
    }
}

/// Replaces the value of row ?2 by ?1 only if it is still ?3. Neither `version` nor
/// `updated_at` moves: the value opens to what it did.
fn reseal_statement(column: SealedColumn) -> &'static str {
    match column {
        SealedColumn::RefreshToken => {
            "UPDATE grants SET refresh_token = ?1 WHERE sub = ?2 AND refresh_token = ?3"
        }
        SealedColumn::AccessToken => {
            "UPDATE grants SET access_token = ?1 WHERE sub = ?2 AND access_token = ?3"
        }
        SealedColumn::PendingRevocation => {
            "UPDATE pending_revocations SET token = ?1 WHERE id = ?2 AND token = ?3"
        }
    }
}

/// One statement under the write lock: nothing can seal a value under the key between the
/// check and the mark.
const RETIRE: &str = "UPDATE data_keys SET retired_at = ?2
     WHERE id = ?1 AND active = 0 AND retired_at IS NULL
       AND NOT EXISTS (SELECT 1 FROM grants WHERE substr(refresh_token, 1, 5) = ?3)
       AND NOT EXISTS (SELECT 1 FROM grants WHERE substr(access_token, 1, 5) = ?3)
       AND NOT EXISTS (SELECT 1 FROM pending_revocations WHERE substr(token, 1, 5) = ?3)";

/// A new wrapping of key ?1, fenced by the bytes read (?4).
const REWRAP: &str =
    "UPDATE data_keys SET wrapped = ?2, wrapped_by = ?3 WHERE id = ?1 AND wrapped = ?4";

#[async_trait]
impl KeyRotationStore for SqliteStore {
    async fn data_key_statuses(&self) -> Result<Vec<DataKeyStatus>> {
        let mut conn = self.read.acquire().await.map_err(map_sqlx)?;
        let counts = count_sealed(&mut conn).await?;
        let found = sqlx::query(SELECT_STATUSES)
            .fetch_all(&mut *conn)
            .await
            .map_err(map_sqlx)?;
        found
            .iter()
            .map(|row| rotation::data_key_status(row, &counts))
            .collect()
    }

    async fn count_sealed(&self) -> Result<SealedCounts> {
        let mut conn = self.read.acquire().await.map_err(map_sqlx)?;
        count_sealed(&mut conn).await
    }

    async fn rotate_data_key(
        &self,
        candidate: DataKeyRecord,
        expected_active: u32,
    ) -> Result<Vec<DataKeyRecord>> {
        let mut tx = self.begin_write().await?;
        let active: Option<i64> = sqlx::query_scalar("SELECT id FROM data_keys WHERE active = 1")
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        let taken: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM data_keys WHERE id = ?1)")
                .bind(i64::from(candidate.id))
                .fetch_one(&mut *tx)
                .await
                .map_err(map_sqlx)?;
        if active != Some(i64::from(expected_active)) || taken {
            return Err(StoreError::Conflict);
        }
        sqlx::query("UPDATE data_keys SET active = 0 WHERE id = ?1")
            .bind(i64::from(expected_active))
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        sqlx::query(
            "INSERT INTO data_keys (id, wrapped, created_at, active, wrapped_by)
             VALUES (?1, ?2, ?3, 1, ?4)",
        )
        .bind(i64::from(candidate.id))
        .bind(&candidate.wrapped)
        .bind(unix(candidate.created_at))
        .bind(&candidate.wrapped_by)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        let keys = all_keys(&mut tx).await?;
        tx.commit().await.map_err(map_sqlx)?;
        Ok(keys)
    }

    async fn sealed_outside(
        &self,
        column: SealedColumn,
        key: u32,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SealedValue>> {
        let query = sqlx::query(outside_statement(column, after.is_some()))
            .bind(rotation::header(key))
            .bind(i64::from(page_limit(limit)));
        let query = match after {
            Some(after) => query.bind(after),
            None => query,
        };
        let found = query.fetch_all(&self.read).await.map_err(map_sqlx)?;
        found
            .iter()
            .map(|row| {
                Ok(SealedValue {
                    column,
                    row: row.text("row")?,
                    sealed: row.bytes("sealed")?,
                })
            })
            .collect()
    }

    async fn reseal(&self, reseals: Vec<Reseal>) -> Result<u64> {
        if reseals.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin_write().await?;
        let mut written = 0;
        for reseal in &reseals {
            let done = sqlx::query(reseal_statement(reseal.column))
                .bind(&reseal.to)
                .bind(&reseal.row)
                .bind(&reseal.from)
                .execute(&mut *tx)
                .await
                .map_err(map_sqlx)?;
            written += done.rows_affected();
        }
        tx.commit().await.map_err(map_sqlx)?;
        Ok(written)
    }

    async fn retire_data_key(&self, id: u32, at: OffsetDateTime) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(RETIRE)
            .bind(i64::from(id))
            .bind(unix(at))
            .bind(rotation::header(id))
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        tx.commit().await.map_err(map_sqlx)?;
        Ok(done.rows_affected() > 0)
    }

    async fn rewrap_data_key(
        &self,
        id: u32,
        from: &[u8],
        to: &[u8],
        wrapped_by: &str,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(REWRAP)
            .bind(i64::from(id))
            .bind(to)
            .bind(wrapped_by)
            .bind(from)
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        tx.commit().await.map_err(map_sqlx)?;
        Ok(done.rows_affected() > 0)
    }
}

async fn count_sealed(conn: &mut SqliteConnection) -> Result<SealedCounts> {
    let found = sqlx::query(COUNT_SEALED)
        .fetch_all(conn)
        .await
        .map_err(map_sqlx)?;
    let mut counts = SealedCounts::default();
    for row in &found {
        let n = u64::try_from(row.int("n")?)
            .map_err(|_| StoreError::Corrupt("a count of sealed values is negative".into()))?;
        counts.add(&row.bytes("head")?, n);
    }
    Ok(counts)
}
