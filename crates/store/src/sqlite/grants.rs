//! The broker's and operators' writes to grants, listing and deleting users.

use super::conn::one;
use super::users::{append_event, write_grant};
use crate::merge::{Merged, check_fence};
use crate::statements::SELECT_GRANT;
use crate::{GrantEvent, GrantRecord, Result, StoreError, rows as read};
use rusqlite::Connection;
use time::OffsetDateTime;

/// Reads the grant under the write lock, checks the fence, writes what `merge` decides and the
/// event of its change of state, and answers with the row as written. Nothing is written when
/// the fence fails.
pub(super) fn fenced_write_in(
    conn: &Connection,
    sub: &str,
    expected_version: Option<i64>,
    at: OffsetDateTime,
    merge: impl FnOnce(GrantRecord) -> Merged,
) -> Result<(GrantRecord, Option<GrantEvent>)> {
    let held = read_grant(conn, sub)?.ok_or(StoreError::NotFound)?;
    check_fence(&held, expected_version)?;
    let held_version = held.version;
    let merged = merge(held);
    let grant = write_grant(conn, &merged.grant, Some(held_version))?;
    let event = match &merged.change {
        Some(change) => Some(append_event(conn, sub, change, at)?),
        None => None,
    };
    Ok((grant, event))
}

pub(super) fn read_grant(conn: &Connection, sub: &str) -> Result<Option<GrantRecord>> {
    one(conn, SELECT_GRANT, &args![sub], read::grant_alone)
}
