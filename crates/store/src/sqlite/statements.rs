//! Reading rows back into records. Times are whole Unix seconds in the database; a value the
//! records cannot hold is reported as corrupt, naming the column and never the value.

use super::map_sqlx;
use crate::{
    ApiKeyRecord, AuditRecord, DataKeyRecord, GrantEvent, GrantRecord, PendingEvent, Result,
    SealedAccessToken, SealedRefreshToken, SessionRecord, StoreError, SweepRun, TokenFingerprint,
    UserRecord,
};
use grantkeeper_core::{GrantState, Scopes, UserProfile};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use time::OffsetDateTime;

pub(super) fn unix(at: OffsetDateTime) -> i64 {
    at.unix_timestamp()
}

fn time(row: &SqliteRow, column: &'static str) -> Result<OffsetDateTime> {
    let secs: i64 = get(row, column)?;
    OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|_| StoreError::Corrupt(format!("{column} is out of range")))
}

fn opt_time(row: &SqliteRow, column: &'static str) -> Result<Option<OffsetDateTime>> {
    let secs: Option<i64> = get(row, column)?;
    secs.map(|secs| {
        OffsetDateTime::from_unix_timestamp(secs)
            .map_err(|_| StoreError::Corrupt(format!("{column} is out of range")))
    })
    .transpose()
}

fn state(row: &SqliteRow, column: &'static str) -> Result<GrantState> {
    parse_state(&get::<String>(row, column)?, column)
}

fn parse_state(text: &str, column: &'static str) -> Result<GrantState> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("{column} holds an unknown grant state")))
}

fn get<'r, T>(row: &'r SqliteRow, column: &'static str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(column).map_err(map_sqlx)
}

/// The grant's columns as [`grant`] reads them, from `grants` aliased `g`. A macro, so that the
/// statements below stay `&'static str` (sqlx takes only those as SQL without a wrapper).
macro_rules! grant_columns {
    () => {
        "g.state, g.scopes, g.refresh_token, g.rt_hash, g.rt_prefix_hash,
         g.refresh_token_received_at, g.access_token, g.access_token_expires_at, g.reason,
         g.state_changed_at, g.updated_at AS grant_updated_at, g.last_refresh_at, g.last_error,
         g.version"
    };
}

/// The user and grant columns, as [`user_and_grant`] reads them, from `users` aliased `u`.
macro_rules! user_and_grant_columns {
    () => {
        concat!(
            "SELECT u.sub, u.email, u.email_verified, u.name, u.picture, u.given_name,
                    u.family_name, u.locale, u.hd, u.created_at, u.updated_at AS user_updated_at,
                    u.last_sign_in_at, g.sub AS grant_sub, ",
            grant_columns!()
        )
    };
}

/// One user and their grant. The grant's columns are null when the user has no grant row.
pub(super) const SELECT_USER_AND_GRANT: &str = concat!(
    user_and_grant_columns!(),
    " FROM users u LEFT JOIN grants g ON g.sub = u.sub WHERE u.sub = ?1"
);

/// The first page of users with their grants, ordered by `sub`; `?1` is the page size.
pub(super) const SELECT_USERS_FIRST: &str = concat!(
    user_and_grant_columns!(),
    " FROM users u JOIN grants g ON g.sub = u.sub ORDER BY u.sub LIMIT ?1"
);

/// A later page: the users after `?2`. Keyset paging walks the primary key from `?2` on, so a
/// page costs the same however deep it is.
pub(super) const SELECT_USERS_AFTER: &str = concat!(
    user_and_grant_columns!(),
    " FROM users u JOIN grants g ON g.sub = u.sub WHERE u.sub > ?2 ORDER BY u.sub LIMIT ?1"
);

/// One grant, as [`grant_alone`] reads it.
pub(super) const SELECT_GRANT: &str = concat!(
    "SELECT g.sub, ",
    grant_columns!(),
    " FROM grants g WHERE g.sub = ?1"
);

pub(super) fn user_and_grant(row: &SqliteRow) -> Result<(UserRecord, Option<GrantRecord>)> {
    let user = UserRecord {
        profile: UserProfile {
            sub: get(row, "sub")?,
            email: get(row, "email")?,
            email_verified: get(row, "email_verified")?,
            name: get(row, "name")?,
            picture: get(row, "picture")?,
            given_name: get(row, "given_name")?,
            family_name: get(row, "family_name")?,
            locale: get(row, "locale")?,
            hd: get(row, "hd")?,
        },
        created_at: time(row, "created_at")?,
        updated_at: time(row, "user_updated_at")?,
        last_sign_in_at: opt_time(row, "last_sign_in_at")?,
    };
    let grant_sub: Option<String> = get(row, "grant_sub")?;
    let grant = match grant_sub {
        None => None,
        Some(sub) => Some(grant(row, sub)?),
    };
    Ok((user, grant))
}

/// A grant read with [`SELECT_GRANT`].
pub(super) fn grant_alone(row: &SqliteRow) -> Result<GrantRecord> {
    grant(row, get(row, "sub")?)
}

fn grant(row: &SqliteRow, sub: String) -> Result<GrantRecord> {
    let refresh_token = match (
        get::<Option<Vec<u8>>>(row, "refresh_token")?,
        get::<Option<String>>(row, "rt_hash")?,
        get::<Option<String>>(row, "rt_prefix_hash")?,
    ) {
        (None, _, _) => None,
        (Some(sealed), Some(hash), Some(prefix_hash)) => Some(SealedRefreshToken {
            sealed,
            fingerprint: TokenFingerprint { hash, prefix_hash },
        }),
        (Some(_), _, _) => {
            return Err(StoreError::Corrupt(
                "grants.refresh_token is held without its fingerprints".into(),
            ));
        }
    };
    let access_token = match (
        get::<Option<Vec<u8>>>(row, "access_token")?,
        opt_time(row, "access_token_expires_at")?,
    ) {
        (None, _) => None,
        (Some(sealed), Some(expires_at)) => Some(SealedAccessToken { sealed, expires_at }),
        (Some(_), None) => {
            return Err(StoreError::Corrupt(
                "grants.access_token is held without its expiry".into(),
            ));
        }
    };
    let scopes: String = get(row, "scopes")?;
    Ok(GrantRecord {
        sub,
        state: state(row, "state")?,
        scopes: Scopes::parse(&scopes),
        refresh_token,
        refresh_token_received_at: opt_time(row, "refresh_token_received_at")?,
        access_token,
        reason: get(row, "reason")?,
        state_changed_at: time(row, "state_changed_at")?,
        updated_at: time(row, "grant_updated_at")?,
        last_refresh_at: opt_time(row, "last_refresh_at")?,
        last_error: get(row, "last_error")?,
        version: get(row, "version")?,
    })
}

/// Columns: id, sub, from_state, to_state, reason, at.
pub(super) fn grant_event(row: &SqliteRow) -> Result<GrantEvent> {
    let from = get::<Option<String>>(row, "from_state")?
        .map(|text| parse_state(&text, "from_state"))
        .transpose()?;
    Ok(GrantEvent {
        id: get(row, "id")?,
        sub: get(row, "sub")?,
        from,
        to: state(row, "to_state")?,
        reason: get(row, "reason")?,
        at: time(row, "at")?,
    })
}

/// Columns: id_hash, sub, created_at, expires_at.
pub(super) fn session(row: &SqliteRow) -> Result<SessionRecord> {
    Ok(SessionRecord {
        id_hash: get(row, "id_hash")?,
        sub: get(row, "sub")?,
        created_at: time(row, "created_at")?,
        expires_at: time(row, "expires_at")?,
    })
}

/// Columns: id, wrapped, created_at, active.
pub(super) fn data_key(row: &SqliteRow) -> Result<DataKeyRecord> {
    let id: i64 = get(row, "id")?;
    Ok(DataKeyRecord {
        id: u32::try_from(id)
            .map_err(|_| StoreError::Corrupt("data_keys.id is out of range".into()))?,
        wrapped: get(row, "wrapped")?,
        created_at: time(row, "created_at")?,
        active: get(row, "active")?,
    })
}

/// Columns: id, sub, from_state, to_state, reason, at, attempts, next_attempt_at.
pub(super) fn pending_event(row: &SqliteRow) -> Result<PendingEvent> {
    let attempts: i64 = get(row, "attempts")?;
    Ok(PendingEvent {
        event: grant_event(row)?,
        attempts: u32::try_from(attempts)
            .map_err(|_| StoreError::Corrupt("grant_events.attempts is out of range".into()))?,
        next_attempt_at: time(row, "next_attempt_at")?,
    })
}

/// Columns: id, name, hash, scopes, created_at, revoked_at.
pub(super) fn api_key(row: &SqliteRow) -> Result<ApiKeyRecord> {
    let scopes: String = get(row, "scopes")?;
    Ok(ApiKeyRecord {
        id: get(row, "id")?,
        name: get(row, "name")?,
        hash: get(row, "hash")?,
        scopes: scopes.split_whitespace().map(str::to_owned).collect(),
        created_at: time(row, "created_at")?,
        revoked_at: opt_time(row, "revoked_at")?,
    })
}

/// Columns: id, at, actor, sub, action, detail, outcome.
pub(super) fn audit(row: &SqliteRow) -> Result<AuditRecord> {
    Ok(AuditRecord {
        id: get(row, "id")?,
        at: time(row, "at")?,
        actor: get(row, "actor")?,
        sub: get(row, "sub")?,
        action: get(row, "action")?,
        detail: get(row, "detail")?,
        outcome: get(row, "outcome")?,
    })
}

/// Columns: id, job, started_at, finished_at, cursor, counts.
pub(super) fn sweep_run(row: &SqliteRow) -> Result<SweepRun> {
    Ok(SweepRun {
        id: get(row, "id")?,
        job: get(row, "job")?,
        started_at: time(row, "started_at")?,
        finished_at: opt_time(row, "finished_at")?,
        cursor: get(row, "cursor")?,
        counts: get(row, "counts")?,
    })
}
