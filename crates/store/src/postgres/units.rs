//! The units of work of several statements: a sign-in, a recorded refresh and a lease with the
//! grant read are one function call each (migration 14); a change of state, alone or with a
//! queued revocation, is one transaction holding the grant's row lock.

use super::grants::fenced_write_in;
use super::statements::LEASE_REFRESH_READING;
use super::{PostgresStore, bound, retrying};
use crate::common::{INSERT_REVOCATION, queue_args};
use crate::merge::merge_state_update;
use crate::rows;
use crate::sql::{Arg, Engine, Units, first};
use crate::{
    GrantEvent, GrantRecord, PendingRevocation, RefreshSuccess, Result, SignIn, SignInRecorded,
    StateUpdate,
};
use async_trait::async_trait;

#[async_trait]
impl Units for PostgresStore {
    async fn sign_in(&self, sign_in: SignIn, unless_blocked: bool) -> Result<SignInRecorded> {
        self.sign_in_call(&sign_in, unless_blocked).await
    }

    async fn change_state(
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

    async fn refresh(
        &self,
        sub: &str,
        expected_version: i64,
        refresh: RefreshSuccess,
        owner: Option<&str>,
    ) -> Result<GrantRecord> {
        self.record_refresh_call(sub, expected_version, &refresh, owner)
            .await
    }

    async fn lease_reading(&self, lease: Vec<Arg>) -> Result<Option<GrantRecord>> {
        let found = self
            .write_rows(LEASE_REFRESH_READING.into(), lease, rows::grant_alone)
            .await?;
        Ok(first(found))
    }

    async fn lease_statement(&self, sql: &'static str, args: Vec<Arg>) -> Result<u64> {
        self.execute(sql.into(), args).await
    }

    async fn queue_with_state(
        &self,
        revocation: PendingRevocation,
        update: StateUpdate,
    ) -> Result<(GrantRecord, Option<GrantEvent>)> {
        let merge = |held| merge_state_update(held, &update);
        let insert = queue_args(&revocation);
        retrying(|| async {
            let mut tx = self.begin().await?;
            let written = fenced_write_in(&mut tx, &revocation.sub, None, &merge).await?;
            bound(&INSERT_REVOCATION.into(), &insert)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(written)
        })
        .await
    }
}
