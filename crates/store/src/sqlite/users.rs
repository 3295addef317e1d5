//! Users, grants and the grant history: a sign-in is one unit of the writer.

use super::conn::one;
use crate::common::SELECT_SIGN_IN_BLOCK;
use crate::merge::{StateChange, merge_sign_in};
use crate::sql::{event_args, grant_args, profile_args};
use crate::statements::{
    INSERT_EVENT, INSERT_GRANT, SELECT_USER_AND_GRANT, UPDATE_GRANT, UPSERT_USER,
};
use crate::{
    GrantEvent, GrantRecord, Result, SignIn, SignInOutcome, SignInRecorded, StoreError, UserRecord,
    common, risc, rows as read,
};
use rusqlite::Connection;
use time::OffsetDateTime;

fn read_user_and_grant(
    conn: &Connection,
    sub: &str,
) -> Result<Option<(UserRecord, Option<GrantRecord>)>> {
    one(
        conn,
        SELECT_USER_AND_GRANT,
        &args![sub],
        read::user_and_grant,
    )
}

/// Inserts the grant, or updates it if it still has `held_version` (the fence); the row as
/// written.
pub(super) fn write_grant(
    conn: &Connection,
    grant: &GrantRecord,
    held_version: Option<i64>,
) -> Result<GrantRecord> {
    let sql = match held_version {
        None => INSERT_GRANT,
        Some(_) => UPDATE_GRANT,
    };
    one(
        conn,
        sql,
        &grant_args(grant, held_version),
        read::grant_alone,
    )?
    .ok_or(StoreError::Conflict)
}

/// Appends the event of a state change, in the unit that writes the change.
pub(super) fn append_event(
    conn: &Connection,
    sub: &str,
    change: &StateChange,
    at: OffsetDateTime,
) -> Result<GrantEvent> {
    one(
        conn,
        INSERT_EVENT,
        &event_args(sub, change, at),
        read::grant_event,
    )?
    .ok_or_else(|| StoreError::Corrupt("an event just written could not be read back".into()))
}

/// A sign-in's unit: user, grant, event (the webhook's outbox) and session; with
/// `unless_blocked`, nothing when sign-in is blocked for the user.
pub(super) fn sign_in_in(
    conn: &Connection,
    sign_in: &SignIn,
    unless_blocked: bool,
) -> Result<SignInRecorded> {
    let sub = sign_in.profile.sub.as_str();
    if unless_blocked
        && let Some(block) = one(conn, SELECT_SIGN_IN_BLOCK, &args![sub], risc::block)?
    {
        return Ok(SignInRecorded::Blocked(block));
    }
    let held = read_user_and_grant(conn, sub)?;
    let created = held.is_none();
    let held_grant = held.and_then(|(_, grant)| grant);
    let held_version = held_grant.as_ref().map(|g| g.version);

    let user = one(conn, UPSERT_USER, &profile_args(sign_in), read::user)?.ok_or_else(|| {
        StoreError::Corrupt("the user just written could not be read back".into())
    })?;
    let merged = merge_sign_in(held_grant, sign_in);
    let grant = write_grant(conn, &merged.grant, held_version)?;
    let event = match &merged.change {
        Some(change) => Some(append_event(conn, sub, change, sign_in.at)?),
        None => None,
    };
    if let Some(session) = &sign_in.session {
        super::conn::execute(conn, common::INSERT_SESSION, &common::session_args(session))?;
    }
    Ok(SignInRecorded::Recorded(SignInOutcome {
        user,
        grant,
        created,
        event,
    }))
}
