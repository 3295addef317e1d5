//! The vault's wrapped data keys.

use super::{PgResult, PostgresStore, map_pg, retrying};
use crate::rows::{self, unix};
use crate::{DataKeyRecord, KeyStore, Result};
use async_trait::async_trait;
use sqlx::PgConnection;

/// Retired keys are left out: they seal nothing, and no vault loads them again.
const SELECT_KEYS: &str = "SELECT id, wrapped, created_at, active, wrapped_by FROM data_keys WHERE retired_at IS NULL ORDER BY id";

#[async_trait]
impl KeyStore for PostgresStore {
    async fn data_keys(&self) -> Result<Vec<DataKeyRecord>> {
        let mut conn = self.pool.acquire().await.map_err(map_pg)?;
        Ok(all_keys(&mut conn).await?)
    }

    async fn ensure_data_key(&self, candidate: DataKeyRecord) -> Result<Vec<DataKeyRecord>> {
        retrying(|| self.ensure_data_key_once(&candidate)).await
    }
}

impl PostgresStore {
    async fn ensure_data_key_once(
        &self,
        candidate: &DataKeyRecord,
    ) -> PgResult<Vec<DataKeyRecord>> {
        // Instances starting together all try. One that finds no active key inserts its
        // candidate; when another's insert of an active key (or of the same id) is under way,
        // the unique indexes make this one wait for it and then insert nothing. The next
        // statement sees whatever committed meanwhile: the winner's key.
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO data_keys (id, wrapped, created_at, active, wrapped_by)
             SELECT $3, $1, $2, TRUE, $4 WHERE NOT EXISTS (SELECT 1 FROM data_keys WHERE active)
             ON CONFLICT DO NOTHING",
        )
        .bind(&candidate.wrapped)
        .bind(unix(candidate.created_at))
        .bind(i64::from(candidate.id))
        .bind(&candidate.wrapped_by)
        .execute(&mut *tx)
        .await?;
        let keys = all_keys(&mut tx).await?;
        tx.commit().await?;
        Ok(keys)
    }
}

pub(super) async fn all_keys(conn: &mut PgConnection) -> PgResult<Vec<DataKeyRecord>> {
    let found = sqlx::query(SELECT_KEYS).fetch_all(conn).await?;
    Ok(found.iter().map(rows::data_key).collect::<Result<_>>()?)
}
