//! Rotation of the vault's data keys: counting sealed values by the key id in their header,
//! a new active key, fenced re-seals and retirement.

use super::SqliteStore;
use super::conn::{execute, rows, scalar};
use crate::rotation::{
    self, DataKeyStatus, KeyRotationStore, Reseal, SealedColumn, SealedCounts, SealedValue,
};
use crate::rotation::{COUNT_SEALED, RETIRE, SELECT_STATUSES, outside_statement, reseal_statement};
use crate::{DataKeyRecord, Result, StoreError, page_limit};
use async_trait::async_trait;
use rusqlite::Connection;
use time::OffsetDateTime;

#[async_trait]
impl KeyRotationStore for SqliteStore {
    async fn data_key_statuses(&self) -> Result<Vec<DataKeyStatus>> {
        self.read(|conn| {
            let counts = count_sealed(conn)?;
            rows(conn, SELECT_STATUSES, &[], |row| {
                rotation::data_key_status(row, &counts)
            })
        })
        .await
    }

    async fn count_sealed(&self) -> Result<SealedCounts> {
        self.read(count_sealed).await
    }

    async fn rotate_data_key(
        &self,
        candidate: DataKeyRecord,
        expected_active: u32,
    ) -> Result<Vec<DataKeyRecord>> {
        self.write(move |conn| {
            let active: Option<i64> =
                rows(conn, "SELECT id FROM data_keys WHERE active", &[], |r| {
                    r.int("id")
                })?
                .into_iter()
                .next();
            let taken: bool = scalar(
                conn,
                "SELECT EXISTS (SELECT 1 FROM data_keys WHERE id = $1)",
                &args![candidate.id],
            )?;
            if active != Some(i64::from(expected_active)) || taken {
                return Err(StoreError::Conflict);
            }
            execute(
                conn,
                "UPDATE data_keys SET active = FALSE WHERE id = $1",
                &args![expected_active],
            )?;
            execute(
                conn,
                "INSERT INTO data_keys (id, wrapped, created_at, active, wrapped_by)
                 VALUES ($1, $2, $3, TRUE, $4)",
                &args![
                    candidate.id,
                    candidate.wrapped.as_slice(),
                    candidate.created_at,
                    candidate.wrapped_by.as_deref()
                ],
            )?;
            rows(conn, crate::common::SELECT_KEYS, &[], crate::rows::data_key)
        })
        .await
    }

    async fn sealed_outside(
        &self,
        column: SealedColumn,
        key: u32,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SealedValue>> {
        let mut args = args![rotation::header(key), page_limit(limit)];
        if let Some(after) = after {
            args.push(crate::sql::Arg::from(after));
        }
        let sql = outside_statement(column, after.is_some());
        self.read(move |conn| {
            rows(conn, sql, &args, |row| {
                Ok(SealedValue {
                    column,
                    row: row.text("row")?,
                    sealed: row.bytes("sealed")?,
                })
            })
        })
        .await
    }

    async fn reseal(&self, reseals: Vec<Reseal>) -> Result<u64> {
        if reseals.is_empty() {
            return Ok(0);
        }
        self.write(move |conn| {
            let mut written = 0;
            for reseal in &reseals {
                written += execute(
                    conn,
                    reseal_statement(reseal.column),
                    &args![
                        reseal.to.as_slice(),
                        reseal.row.as_str(),
                        reseal.from.as_slice()
                    ],
                )?;
            }
            Ok(written)
        })
        .await
    }

    async fn retire_data_key(&self, id: u32, at: OffsetDateTime) -> Result<bool> {
        let args = args![id, at, rotation::header(id)];
        self.write(move |conn| Ok(execute(conn, RETIRE, &args)? > 0))
            .await
    }

    async fn rewrap_data_key(
        &self,
        id: u32,
        from: &[u8],
        to: &[u8],
        wrapped_by: &str,
    ) -> Result<bool> {
        let args = args![id, to, wrapped_by, from];
        self.write(move |conn| Ok(execute(conn, rotation::REWRAP, &args)? > 0))
            .await
    }
}

fn count_sealed(conn: &Connection) -> Result<SealedCounts> {
    let found = rows(conn, COUNT_SEALED, &[], |row| {
        let n = u64::try_from(row.int("n")?)
            .map_err(|_| StoreError::Corrupt("a count of sealed values is negative".into()))?;
        Ok((row.bytes("head")?, n))
    })?;
    let mut counts = SealedCounts::default();
    for (head, n) in &found {
        counts.add(head, *n);
    }
    Ok(counts)
}
