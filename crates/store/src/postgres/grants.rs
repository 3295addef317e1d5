//! The broker's and operators' writes to grants, listing and deleting users.

use super::statements::{RECORD_REFRESH, SELECT_GRANT_FOR_UPDATE};
use super::{PgResult, PostgresStore, bound, retrying};
use crate::merge::{Merged, check_fence, merge_state_update};
use crate::rows::{self, Columns};
use crate::sql::{Engine, event_args, first, grant_args};
use crate::statements::{
    INSERT_EVENT, SELECT_GRANT, SELECT_USERS_AFTER, SELECT_USERS_FIRST, UPDATE_GRANT,
};
use crate::{
    GrantEvent, GrantRecord, GrantStore, RefreshSuccess, Result, StateUpdate, StoreError, UserPage,
    page_limit, user_page,
};
use async_trait::async_trait;
use grantkeeper_core::GrantState;
use sqlx::PgConnection;

#[async_trait]
impl GrantStore for PostgresStore {
    async fn grant(&self, sub: &str) -> Result<Option<GrantRecord>> {
        let found = self
            .read_rows(SELECT_GRANT.into(), args![sub], rows::grant_alone)
            .await?;
        Ok(first(found))
    }

    async fn record_refresh(
        &self,
        sub: &str,
        expected_version: i64,
        refresh: RefreshSuccess,
    ) -> Result<GrantRecord> {
        self.record_refresh_as(sub, expected_version, &refresh, None)
            .await
    }

    async fn update_grant_state(
        &self,
        sub: &str,
        expected_version: Option<i64>,
        update: StateUpdate,
    ) -> Result<(GrantRecord, Option<GrantEvent>)> {
        let merge = |held| merge_state_update(held, &update);
        retrying(|| async {
            let mut tx = self.begin().await?;
            let written = fenced_write_in(&mut tx, sub, expected_version, &merge).await?;
            tx.commit().await?;
            Ok(written)
        })
        .await
    }

    async fn list_users(&self, after: Option<&str>, limit: u32) -> Result<UserPage> {
        let limit = page_limit(limit);
        let fetch = i64::from(limit) + 1;
        let (sql, args) = match after {
            None => (SELECT_USERS_FIRST, args![fetch]),
            Some(after) => (SELECT_USERS_AFTER, args![fetch, after]),
        };
        let users = self
            .read_rows(sql.into(), args, rows::user_with_grant)
            .await?;
        Ok(user_page(users, limit))
    }

    async fn delete_user(&self, sub: &str) -> Result<bool> {
        // The foreign keys cascade to the grant, its events (undelivered ones too) and the
        // sessions, all in this statement's transaction. Audit rows name the user without a
        // foreign key: they are history and stay.
        let sql = "DELETE FROM users WHERE sub = $1";
        Ok(self.execute(sql.into(), args![sub]).await? > 0)
    }

    async fn count_users(&self) -> Result<u64> {
        crate::counts::users(self).await
    }

    async fn count_grants_by_state(&self) -> Result<Vec<(GrantState, u64)>> {
        crate::counts::grants_by_state(self).await
    }
}

impl PostgresStore {
    /// A recorded refresh in one call of `grantkeeper_record_refresh` (one round trip), with
    /// `owner`'s lease given back in its transaction when given.
    pub(super) async fn record_refresh_as(
        &self,
        sub: &str,
        expected_version: i64,
        refresh: &RefreshSuccess,
        owner: Option<&str>,
    ) -> Result<GrantRecord> {
        let rt = refresh.refresh_token.as_ref();
        let scopes = refresh
            .scopes
            .as_ref()
            .filter(|s| !s.is_empty())
            .map(ToString::to_string);
        let args = args![
            sub,
            expected_version,
            refresh.access_token.sealed.as_slice(),
            refresh.access_token.expires_at,
            rt.map(|t| t.sealed.as_slice()),
            rt.map(|t| t.fingerprint.hash.as_str()),
            rt.map(|t| t.fingerprint.prefix_hash.as_str()),
            scopes,
            refresh.at,
            owner
        ];
        let found = retrying(|| async {
            Ok(bound(&RECORD_REFRESH.into(), &args)
                .fetch_all(&self.pool)
                .await?)
        })
        .await?;
        let row = found
            .first()
            .ok_or_else(|| StoreError::Corrupt("a recorded refresh answered no row".into()))?;
        let row: &dyn Columns = row;
        match row.text("outcome")?.as_str() {
            "ok" => rows::grant_alone(row),
            "conflict" => Err(StoreError::Conflict),
            "not_found" => Err(StoreError::NotFound),
            _ => Err(StoreError::Corrupt(
                "a recorded refresh answered an unknown outcome".into(),
            )),
        }
    }
}

/// Locks the grant, checks the fence, writes what `merge` decides and the event of its change
/// of state, and answers with the row as written. Nothing is written when the fence fails.
/// Concurrent writers of one grant queue on its row lock, so each checks its fence against what
/// the one before it committed.
pub(super) async fn fenced_write_in(
    conn: &mut PgConnection,
    sub: &str,
    expected_version: Option<i64>,
    merge: &(impl Fn(GrantRecord) -> Merged + Sync),
) -> PgResult<(GrantRecord, Option<GrantEvent>)> {
    let held = bound(&SELECT_GRANT_FOR_UPDATE.into(), &args![sub])
        .fetch_optional(&mut *conn)
        .await?;
    let held = match held {
        Some(row) => rows::grant_alone(&row)?,
        None => return Err(StoreError::NotFound.into()),
    };
    check_fence(&held, expected_version)?;
    let held_version = held.version;
    let merged = merge(held);
    let at = merged.grant.updated_at;
    let grant = bound(
        &UPDATE_GRANT.into(),
        &grant_args(&merged.grant, Some(held_version)),
    )
    .fetch_optional(&mut *conn)
    .await?;
    let grant = match grant {
        Some(row) => rows::grant_alone(&row)?,
        None => return Err(StoreError::Conflict.into()),
    };
    let event = match &merged.change {
        Some(change) => {
            let row = bound(&INSERT_EVENT.into(), &event_args(sub, change, at))
                .fetch_one(&mut *conn)
                .await?;
            Some(rows::grant_event(&row)?)
        }
        None => None,
    };
    Ok((grant, event))
}
