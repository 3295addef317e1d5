//! Rotation of the vault's data keys: counting sealed values by the key id in their header,
//! a new active key, fenced re-seals and retirement.

use super::SqliteStore;
use super::conn::{execute, rows, scalar};
use crate::rotation::{
    self, DataKeyStatus, KeyRotationStore, Reseal, SealedColumn, SealedCounts, SealedValue,
};
use crate::{DataKeyRecord, Result, StoreError, page_limit};
use async_trait::async_trait;
use rusqlite::Connection;
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

/// The values of one column not under the key whose header is $1, `$2` at most, in row
/// order; the `_AFTER` forms start after the row $3.
const REFRESH_OUTSIDE: &str = "SELECT sub AS row, refresh_token AS sealed FROM grants
     WHERE refresh_token IS NOT NULL AND substr(refresh_token, 1, 5) <> $1
     ORDER BY sub LIMIT $2";
const REFRESH_OUTSIDE_AFTER: &str = "SELECT sub AS row, refresh_token AS sealed FROM grants
     WHERE refresh_token IS NOT NULL AND substr(refresh_token, 1, 5) <> $1 AND sub > $3
     ORDER BY sub LIMIT $2";
const ACCESS_OUTSIDE: &str = "SELECT sub AS row, access_token AS sealed FROM grants
     WHERE access_token IS NOT NULL AND substr(access_token, 1, 5) <> $1
     ORDER BY sub LIMIT $2";
const ACCESS_OUTSIDE_AFTER: &str = "SELECT sub AS row, access_token AS sealed FROM grants
     WHERE access_token IS NOT NULL AND substr(access_token, 1, 5) <> $1 AND sub > $3
     ORDER BY sub LIMIT $2";
const PENDING_OUTSIDE: &str = "SELECT id AS row, token AS sealed FROM pending_revocations
     WHERE substr(token, 1, 5) <> $1
     ORDER BY id LIMIT $2";
const PENDING_OUTSIDE_AFTER: &str = "SELECT id AS row, token AS sealed FROM pending_revocations
     WHERE substr(token, 1, 5) <> $1 AND id > $3
     ORDER BY id LIMIT $2";

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

/// Replaces the value of row $2 by $1 only if it is still $3. Neither `version` nor
/// `updated_at` moves: the value opens to what it did.
fn reseal_statement(column: SealedColumn) -> &'static str {
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

/// One statement under the write lock: nothing can seal a value under the key between the
/// check and the mark.
const RETIRE: &str = "UPDATE data_keys SET retired_at = $2
     WHERE id = $1 AND NOT active AND retired_at IS NULL
       AND NOT EXISTS (SELECT 1 FROM grants WHERE substr(refresh_token, 1, 5) = $3)
       AND NOT EXISTS (SELECT 1 FROM grants WHERE substr(access_token, 1, 5) = $3)
       AND NOT EXISTS (SELECT 1 FROM pending_revocations WHERE substr(token, 1, 5) = $3)";

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
