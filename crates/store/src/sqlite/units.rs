//! The units of work of several statements, each one closure on the writer: a sign-in with its
//! session, a fenced change of state, a recorded refresh with its lease given back, a lease with
//! the grant read under it, a revocation queued with its grant's change.

use super::SqliteStore;
use super::conn::execute;
use super::grants::{fenced_write_in, read_grant};
use super::users::sign_in_in;
use crate::common::{INSERT_REVOCATION, queue_args};
use crate::merge::{merge_refresh, merge_state_update};
use crate::sql::{Arg, Units};
use crate::statements::{LEASE_REFRESH, RELEASE_LEASE};
use crate::{
    GrantEvent, GrantRecord, PendingRevocation, RefreshSuccess, Result, SignIn, SignInRecorded,
    StateUpdate, StoreError,
};
use async_trait::async_trait;
use rusqlite::Connection;

#[async_trait]
impl Units for SqliteStore {
    async fn sign_in(&self, sign_in: SignIn, unless_blocked: bool) -> Result<SignInRecorded> {
        // The write lock is held from the first read, so a concurrent sign-in of the same user
        // (here or in another process) merges into what this one commits, not beside it, and
        // a block written meanwhile is seen.
        self.write(move |conn| sign_in_in(conn, &sign_in, unless_blocked))
            .await
    }

    async fn change_state(
        &self,
        sub: &str,
        expected_version: Option<i64>,
        update: StateUpdate,
    ) -> Result<(GrantRecord, Option<GrantEvent>)> {
        let sub = sub.to_owned();
        self.write(move |conn| {
            fenced_write_in(conn, &sub, expected_version, update.at, |held| {
                merge_state_update(held, &update)
            })
        })
        .await
    }

    async fn refresh(
        &self,
        sub: &str,
        expected_version: i64,
        refresh: RefreshSuccess,
        owner: Option<&str>,
    ) -> Result<GrantRecord> {
        // Flushed to disk before anyone is told only when it brings a refresh token; an access
        // token alone need not survive a power loss, the next demand refreshes again.
        let durable = refresh.refresh_token.is_some();
        let (sub, owner) = (sub.to_owned(), owner.map(str::to_owned));
        let unit = move |conn: &Connection| {
            // One savepoint: a failed fence rolls back to it, lease included.
            let (grant, _) =
                fenced_write_in(conn, &sub, Some(expected_version), refresh.at, |held| {
                    merge_refresh(held, &refresh)
                })?;
            if let Some(owner) = &owner {
                execute(conn, RELEASE_LEASE, &args![sub.as_str(), owner.as_str()])?;
            }
            Ok(grant)
        };
        if durable {
            self.write(unit).await
        } else {
            self.write_lazy(unit).await
        }
    }

    async fn lease_reading(&self, lease: Vec<Arg>) -> Result<Option<GrantRecord>> {
        // The lease and the read in one unit of the writer: one trip where two would do.
        self.write_lazy(move |conn| {
            if execute(conn, LEASE_REFRESH, &lease)? != 1 {
                return Ok(None);
            }
            let sub = match lease.first() {
                Some(Arg::Text(Some(sub))) => sub.as_str(),
                _ => return Err(StoreError::Database("a lease names no user".into())),
            };
            read_grant(conn, sub)?.map(Some).ok_or(StoreError::NotFound)
        })
        .await
    }

    async fn lease_statement(&self, sql: &'static str, args: Vec<Arg>) -> Result<u64> {
        self.write_lazy(move |conn| execute(conn, sql, &args)).await
    }

    async fn queue_with_state(
        &self,
        revocation: PendingRevocation,
        update: StateUpdate,
    ) -> Result<(GrantRecord, Option<GrantEvent>)> {
        self.write(move |conn| {
            let written = fenced_write_in(conn, &revocation.sub, None, update.at, |held| {
                merge_state_update(held, &update)
            })?;
            execute(conn, INSERT_REVOCATION, &queue_args(&revocation))?;
            Ok(written)
        })
        .await
    }
}
