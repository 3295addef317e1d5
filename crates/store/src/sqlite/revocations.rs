//! The revocation queue: tokens waiting to be revoked at the provider.

use super::statements::SELECT_GRANT;
use super::users::{append_event, write_grant};
use super::{SqliteStore, map_sqlx};
use crate::merge::merge_state_update;
use crate::revocations::{self, PendingRevocation, RevocationQueueStore};
use crate::rows::{self, unix};
use crate::{GrantEvent, GrantRecord, Result, StateUpdate, StoreError, page_limit};
use async_trait::async_trait;
use sqlx::SqliteConnection;
use time::OffsetDateTime;

#[async_trait]
impl RevocationQueueStore for SqliteStore {
    async fn enqueue_revocation(&self, revocation: PendingRevocation) -> Result<()> {
        let mut tx = self.begin_write().await?;
        insert(&mut tx, &revocation).await?;
        tx.commit().await.map_err(map_sqlx)
    }

    async fn enqueue_revocation_with_state(
        &self,
        revocation: PendingRevocation,
        update: StateUpdate,
    ) -> Result<(GrantRecord, Option<GrantEvent>)> {
        let sub = revocation.sub.as_str();
        let mut tx = self.begin_write().await?;
        let held = read_grant(&mut tx, sub)
            .await?
            .ok_or(StoreError::NotFound)?;
        let held_version = held.version;
        let merged = merge_state_update(held, &update);
        write_grant(&mut tx, &merged.grant, Some(held_version)).await?;
        let event = match &merged.change {
            Some(change) => Some(append_event(&mut tx, sub, change, update.at).await?),
            None => None,
        };
        insert(&mut tx, &revocation).await?;
        let grant = read_grant(&mut tx, sub).await?.ok_or_else(|| {
            StoreError::Corrupt("the grant just written could not be read back".into())
        })?;
        tx.commit().await.map_err(map_sqlx)?;
        Ok((grant, event))
    }

    async fn due_revocations(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<PendingRevocation>> {
        let found = sqlx::query(
            "SELECT id, sub, token, token_kind, created_at, attempts, next_attempt_at, last_error
               FROM pending_revocations
              WHERE next_attempt_at <= ?1
              ORDER BY next_attempt_at, id LIMIT ?2",
        )
        .bind(unix(now))
        .bind(i64::from(page_limit(limit)))
        .fetch_all(&self.read)
        .await
        .map_err(map_sqlx)?;
        found.iter().map(revocations::pending_revocation).collect()
    }

    async fn mark_revocation_failed(
        &self,
        id: &str,
        next_attempt_at: OffsetDateTime,
        error: &str,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE pending_revocations
                SET attempts = attempts + 1, next_attempt_at = ?2, last_error = ?3
              WHERE id = ?1",
        )
        .bind(id)
        .bind(unix(next_attempt_at))
        .bind(error)
        .execute(&self.write)
        .await
        .map_err(map_sqlx)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn delete_revocation(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM pending_revocations WHERE id = ?1")
            .bind(id)
            .execute(&self.write)
            .await
            .map_err(map_sqlx)?;
        Ok(done.rows_affected() > 0)
    }

    async fn count_revocations(&self) -> Result<u64> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pending_revocations")
            .fetch_one(&self.read)
            .await
            .map_err(map_sqlx)?;
        u64::try_from(count)
            .map_err(|_| StoreError::Corrupt("the revocation count is negative".into()))
    }
}

async fn insert(conn: &mut SqliteConnection, r: &PendingRevocation) -> Result<()> {
    sqlx::query(
        "INSERT INTO pending_revocations
             (id, sub, token, token_kind, created_at, attempts, next_attempt_at, last_error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .bind(&r.id)
    .bind(&r.sub)
    .bind(r.token.as_slice())
    .bind(r.token_kind.as_str())
    .bind(unix(r.created_at))
    .bind(i64::from(r.attempts))
    .bind(unix(r.next_attempt_at))
    .bind(r.last_error.as_deref())
    .execute(conn)
    .await
    .map_err(map_sqlx)?;
    Ok(())
}

async fn read_grant(conn: &mut SqliteConnection, sub: &str) -> Result<Option<GrantRecord>> {
    let row = sqlx::query(SELECT_GRANT)
        .bind(sub)
        .fetch_optional(conn)
        .await
        .map_err(map_sqlx)?;
    row.as_ref().map(rows::grant_alone).transpose()
}
