//! Rotation of the vault's data keys: counting sealed values by the key id in their header,
//! a new active key, fenced re-seals and retirement. A new key is made active holding the row
//! of the key that was (`FOR UPDATE`), so that of two rotations at once the second finds it
//! changed; a re-seal is one `UPDATE ... WHERE value = read`, which PostgreSQL evaluates again
//! on the row as a concurrent writer left it.

use super::{PgError, PgResult, PostgresStore, map_pg, retrying};
use crate::rotation::{
    self, DataKeyStatus, KeyRotationStore, Reseal, SealedColumn, SealedCounts, SealedValue,
};
use crate::rotation::{COUNT_SEALED, RETIRE, SELECT_STATUSES, outside_statement, reseal_statement};
use crate::rows::{Columns, unix};
use crate::{DataKeyRecord, Result, StoreError, page_limit};
use async_trait::async_trait;
use sqlx::PgConnection;
use time::OffsetDateTime;

#[async_trait]
impl KeyRotationStore for PostgresStore {
    async fn data_key_statuses(&self) -> Result<Vec<DataKeyStatus>> {
        let mut conn = self.pool.acquire().await.map_err(map_pg)?;
        let counts = count_sealed(&mut conn).await?;
        let found = sqlx::query(SELECT_STATUSES)
            .fetch_all(&mut *conn)
            .await
            .map_err(map_pg)?;
        found
            .iter()
            .map(|row| rotation::data_key_status(row, &counts))
            .collect()
    }

    async fn count_sealed(&self) -> Result<SealedCounts> {
        let mut conn = self.pool.acquire().await.map_err(map_pg)?;
        Ok(count_sealed(&mut conn).await?)
    }

    async fn rotate_data_key(
        &self,
        candidate: DataKeyRecord,
        expected_active: u32,
    ) -> Result<Vec<DataKeyRecord>> {
        retrying(|| self.rotate_data_key_once(&candidate, expected_active)).await
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
        let found = query.fetch_all(&self.pool).await.map_err(map_pg)?;
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
        retrying(|| self.reseal_once(&reseals)).await
    }

    async fn retire_data_key(&self, id: u32, at: OffsetDateTime) -> Result<bool> {
        retrying(|| self.retire_data_key_once(id, at)).await
    }

    async fn rewrap_data_key(
        &self,
        id: u32,
        from: &[u8],
        to: &[u8],
        wrapped_by: &str,
    ) -> Result<bool> {
        let done = retrying(|| async {
            Ok(sqlx::query(crate::rotation::REWRAP)
                .bind(i64::from(id))
                .bind(to)
                .bind(wrapped_by)
                .bind(from)
                .execute(&self.pool)
                .await?)
        })
        .await?;
        Ok(done.rows_affected() > 0)
    }
}

impl PostgresStore {
    async fn rotate_data_key_once(
        &self,
        candidate: &DataKeyRecord,
        expected_active: u32,
    ) -> PgResult<Vec<DataKeyRecord>> {
        let mut tx = self.begin().await?;
        let active: Option<i64> =
            sqlx::query_scalar("SELECT id FROM data_keys WHERE active FOR UPDATE")
                .fetch_optional(&mut *tx)
                .await?;
        if active != Some(i64::from(expected_active)) {
            return Err(PgError::Store(StoreError::Conflict));
        }
        sqlx::query("UPDATE data_keys SET active = FALSE WHERE id = $1")
            .bind(i64::from(expected_active))
            .execute(&mut *tx)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO data_keys (id, wrapped, created_at, active, wrapped_by)
             VALUES ($1, $2, $3, TRUE, $4) ON CONFLICT (id) DO NOTHING",
        )
        .bind(i64::from(candidate.id))
        .bind(&candidate.wrapped)
        .bind(unix(candidate.created_at))
        .bind(&candidate.wrapped_by)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            // The id is taken; dropping the transaction rolls the deactivation back.
            return Err(PgError::Store(StoreError::Conflict));
        }
        let keys = all_keys(&mut tx).await?;
        tx.commit().await?;
        Ok(keys)
    }

    /// Counts and retires with the sealed tables locked against writers (`SHARE`: readers go
    /// on): a writer that read the old key as active just before the rotation committed has
    /// committed before the count, or waits and is then refused.
    async fn retire_data_key_once(&self, id: u32, at: OffsetDateTime) -> PgResult<bool> {
        let mut tx = self.begin().await?;
        sqlx::query("LOCK TABLE grants, pending_revocations IN SHARE MODE")
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query(RETIRE)
            .bind(i64::from(id))
            .bind(unix(at))
            .bind(rotation::header(id))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn reseal_once(&self, reseals: &[Reseal]) -> PgResult<u64> {
        let mut tx = self.begin().await?;
        let mut written = 0;
        for reseal in reseals {
            let done = sqlx::query(reseal_statement(reseal.column))
                .bind(&reseal.to)
                .bind(&reseal.row)
                .bind(&reseal.from)
                .execute(&mut *tx)
                .await?;
            written += done.rows_affected();
        }
        tx.commit().await?;
        Ok(written)
    }
}

async fn count_sealed(conn: &mut PgConnection) -> PgResult<SealedCounts> {
    let found = sqlx::query(COUNT_SEALED).fetch_all(conn).await?;
    let mut counts = SealedCounts::default();
    for row in &found {
        let n = u64::try_from(row.int("n")?)
            .map_err(|_| StoreError::Corrupt("a count of sealed values is negative".into()))?;
        counts.add(&row.bytes("head")?, n);
    }
    Ok(counts)
}

async fn all_keys(conn: &mut sqlx::PgConnection) -> PgResult<Vec<DataKeyRecord>> {
    let found = sqlx::query(crate::common::SELECT_KEYS)
        .fetch_all(conn)
        .await?;
    Ok(found
        .iter()
        .map(|row| crate::rows::data_key(row))
        .collect::<Result<_>>()?)
}
