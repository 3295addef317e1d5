//! The revocation queue: tokens waiting to be revoked at the provider.

use super::SqliteStore;
use super::conn::execute;
use super::grants::fenced_write_in;
use crate::common::queue;
use crate::merge::merge_state_update;
use crate::revocations::{PendingRevocation, RevocationQueueStore};
use crate::{GrantEvent, GrantRecord, Result, StateUpdate};
use async_trait::async_trait;
use time::OffsetDateTime;

#[async_trait]
impl RevocationQueueStore for SqliteStore {
    async fn enqueue_revocation(&self, revocation: PendingRevocation) -> Result<()> {
        queue::enqueue(self, &revocation).await
    }

    async fn enqueue_revocation_with_state(
        &self,
        revocation: PendingRevocation,
        update: StateUpdate,
    ) -> Result<(GrantRecord, Option<GrantEvent>)> {
        self.write(move |conn| {
            let written = fenced_write_in(conn, &revocation.sub, None, update.at, |held| {
                merge_state_update(held, &update)
            })?;
            execute(conn, queue::INSERT, &queue::insert_args(&revocation))?;
            Ok(written)
        })
        .await
    }

    async fn due_revocations(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<PendingRevocation>> {
        queue::due(self, now, limit).await
    }

    async fn mark_revocation_failed(
        &self,
        id: &str,
        next_attempt_at: OffsetDateTime,
        error: &str,
    ) -> Result<()> {
        queue::mark_failed(self, id, next_attempt_at, error).await
    }

    async fn delete_revocation(&self, id: &str) -> Result<bool> {
        queue::delete(self, id).await
    }

    async fn count_revocations(&self) -> Result<u64> {
        queue::count_all(self).await
    }
}
