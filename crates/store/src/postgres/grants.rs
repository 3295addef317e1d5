//! The broker's and operators' writes to grants, listing and deleting users.

use super::statements::{RECORD_REFRESH, SELECT_GRANT_FOR_UPDATE};
use super::{PgResult, PostgresStore, bound, retrying};
use crate::merge::{Merged, check_fence};
use crate::rows::{self, Columns};
use crate::sql::{event_args, grant_args};
use crate::statements::{INSERT_EVENT, UPDATE_GRANT};
use crate::{GrantEvent, GrantRecord, RefreshSuccess, Result, StoreError};
use sqlx::PgConnection;

impl PostgresStore {
    /// A recorded refresh in one call of `grantkeeper_record_refresh` (one round trip), with
    /// `owner`'s lease given back in its transaction when given.
    pub(super) async fn record_refresh_call(
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
