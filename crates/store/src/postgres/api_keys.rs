//! API keys of the app services, kept by the hash of their secret.

use super::{PostgresStore, map_pg, retrying};
use crate::rows::{self, unix};
use crate::{ApiKeyRecord, ApiKeyStore, Result};
use async_trait::async_trait;
use time::OffsetDateTime;

#[async_trait]
impl ApiKeyStore for PostgresStore {
    async fn create_api_key(&self, key: ApiKeyRecord) -> Result<()> {
        // A taken id or hash fails a unique index, which the error mapping calls AlreadyExists.
        retrying(|| async {
            sqlx::query(
                "INSERT INTO api_keys (id, name, hash, scopes, created_at, revoked_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&key.id)
            .bind(&key.name)
            .bind(&key.hash)
            // Capabilities are single words, kept in the order given.
            .bind(key.scopes.join(" "))
            .bind(unix(key.created_at))
            .bind(key.revoked_at.map(unix))
            .execute(&self.pool)
            .await?;
            Ok(())
        })
        .await
    }

    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>> {
        let row = sqlx::query(
            "SELECT id, name, hash, scopes, created_at, revoked_at FROM api_keys WHERE hash = $1",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_pg)?;
        row.as_ref().map(rows::api_key).transpose()
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        // seq breaks ties between keys created in the same second: insertion order.
        let found = sqlx::query(
            "SELECT id, name, hash, scopes, created_at, revoked_at
               FROM api_keys ORDER BY created_at, seq",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(map_pg)?;
        found.iter().map(rows::api_key).collect()
    }

    async fn revoke_api_key(&self, id: &str, at: OffsetDateTime) -> Result<bool> {
        // A revoked key keeps the time it was first revoked.
        retrying(|| async {
            let done = sqlx::query(
                "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            )
            .bind(id)
            .bind(unix(at))
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }
}
