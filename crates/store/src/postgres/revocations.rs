//! The revocation queue: tokens waiting to be revoked at the provider. Several instances may
//! read the same due entries and retry them at once; each write is a single statement, and a
//! second revocation of a token is harmless, so nothing is locked for that.

use super::users::{append_event, lock_grant, write_grant};
use super::{PgResult, PostgresStore, map_pg, retrying};
use crate::merge::merge_state_update;
use crate::revocations::{self, PendingRevocation, RevocationQueueStore};
use crate::rows::unix;
use crate::{GrantEvent, GrantRecord, Result, StateUpdate, StoreError, page_limit};
use async_trait::async_trait;
use sqlx::PgConnection;
use time::OffsetDateTime;

#[async_trait]
impl RevocationQueueStore for PostgresStore {
    async fn enqueue_revocation(&self, revocation: PendingRevocation) -> Result<()> {
        retrying(|| async {
            let mut conn = self.pool.acquire().await?;
            insert(&mut conn, &revocation).await
        })
        .await
    }

    async fn enqueue_revocation_with_state(
        &self,
        revocation: PendingRevocation,
        update: StateUpdate,
    ) -> Result<(GrantRecord, Option<GrantEvent>)> {
        retrying(|| self.enqueue_with_state_once(&revocation, &update)).await
    }

    async fn due_revocations(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<PendingRevocation>> {
        let found = sqlx::query(
            "SELECT id, sub, token, token_kind, created_at, attempts, next_attempt_at, last_error
               FROM pending_revocations
              WHERE next_attempt_at <= $1
              ORDER BY next_attempt_at, id LIMIT $2",
        )
        .bind(unix(now))
        .bind(i64::from(page_limit(limit)))
        .fetch_all(&self.pool)
        .await
        .map_err(map_pg)?;
        found.iter().map(revocations::pending_revocation).collect()
    }

    async fn mark_revocation_failed(
        &self,
        id: &str,
        next_attempt_at: OffsetDateTime,
        error: &str,
    ) -> Result<()> {
        let updated = retrying(|| async {
            let done = sqlx::query(
                "UPDATE pending_revocations
                    SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3
                  WHERE id = $1",
            )
            .bind(id)
            .bind(unix(next_attempt_at))
            .bind(error)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected())
        })
        .await?;
        if updated == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn delete_revocation(&self, id: &str) -> Result<bool> {
        retrying(|| async {
            let done = sqlx::query("DELETE FROM pending_revocations WHERE id = $1")
                .bind(id)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    async fn count_revocations(&self) -> Result<u64> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pending_revocations")
            .fetch_one(&self.pool)
            .await
            .map_err(map_pg)?;
        u64::try_from(count)
            .map_err(|_| StoreError::Corrupt("the revocation count is negative".into()))
    }
}

impl PostgresStore {
    /// Locks the grant, writes the state change (and its event) and queues the revocation, in
    /// one transaction.
    async fn enqueue_with_state_once(
        &self,
        revocation: &PendingRevocation,
        update: &StateUpdate,
    ) -> PgResult<(GrantRecord, Option<GrantEvent>)> {
        let sub = revocation.sub.as_str();
        let mut tx = self.begin().await?;
        let held = lock_grant(&mut tx, sub)
            .await?
            .ok_or(StoreError::NotFound)?;
        let held_version = held.version;
        let merged = merge_state_update(held, update);
        let grant = write_grant(&mut tx, &merged.grant, Some(held_version)).await?;
        let event = match &merged.change {
            Some(change) => Some(append_event(&mut tx, sub, change, update.at).await?),
            None => None,
        };
        insert(&mut tx, revocation).await?;
        tx.commit().await?;
        Ok((grant, event))
    }
}

async fn insert(conn: &mut PgConnection, r: &PendingRevocation) -> PgResult<()> {
    sqlx::query(
        "INSERT INTO pending_revocations
             (id, sub, token, token_kind, created_at, attempts, next_attempt_at, last_error)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
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
    .await?;
    Ok(())
}
