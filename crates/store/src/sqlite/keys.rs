//! The vault's wrapped data keys.

use super::{SqliteStore, map_sqlx};
use crate::rows::{self, unix};
use crate::{DataKeyRecord, KeyStore, Result};
use async_trait::async_trait;
use sqlx::SqliteConnection;

/// Retired keys are left out: they seal nothing, and no vault loads them again.
const SELECT_KEYS: &str = "SELECT id, wrapped, created_at, active, wrapped_by FROM data_keys WHERE retired_at IS NULL ORDER BY id";

#[async_trait]
impl KeyStore for SqliteStore {
    async fn data_keys(&self) -> Result<Vec<DataKeyRecord>> {
        let mut conn = self.read.acquire().await.map_err(map_sqlx)?;
        all_keys(&mut conn).await
    }

    async fn ensure_data_key(&self, candidate: DataKeyRecord) -> Result<Vec<DataKeyRecord>> {
        // Instances starting together all try; the write lock lets one insert and the others
        // then see its key. The unique index on the active key backs this up.
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO data_keys (id, wrapped, created_at, active, wrapped_by)
             SELECT ?3, ?1, ?2, 1, ?4 WHERE NOT EXISTS (SELECT 1 FROM data_keys WHERE active = 1)
             AND NOT EXISTS (SELECT 1 FROM data_keys WHERE id = ?3)",
        )
        .bind(&candidate.wrapped)
        .bind(unix(candidate.created_at))
        .bind(i64::from(candidate.id))
        .bind(&candidate.wrapped_by)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        let keys = all_keys(&mut tx).await?;
        tx.commit().await.map_err(map_sqlx)?;
        Ok(keys)
    }
}

pub(super) async fn all_keys(conn: &mut SqliteConnection) -> Result<Vec<DataKeyRecord>> {
    let rows = sqlx::query(SELECT_KEYS)
        .fetch_all(conn)
        .await
        .map_err(map_sqlx)?;
    rows.iter().map(rows::data_key).collect()
}
