//! Reading rows back into records. Times are whole Unix seconds in the database; a value the
//! records cannot hold is reported as corrupt, naming the column and never the value.

use super::map_sqlx;
use crate::{
    DataKeyRecord, GrantEvent, GrantRecord, Result, SealedAccessToken, SealedRefreshToken,
    SessionRecord, StoreError, TokenFingerprint, UserRecord,
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

/// The user and grant columns of one user, as [`user_and_grant`] reads them. The grant's
/// columns are null when the user has no grant row.
pub(super) const SELECT_USER_AND_GRANT: &str = "
    SELECT u.sub, u.email, u.email_verified, u.name, u.picture, u.given_name, u.family_name,
           u.locale, u.hd, u.created_at, u.updated_at AS user_updated_at, u.last_sign_in_at,
           g.sub AS grant_sub, g.state, g.scopes, g.refresh_token, g.rt_hash, g.rt_prefix_hash,
           g.refresh_token_received_at, g.access_token, g.access_token_expires_at, g.reason,
           g.state_changed_at, g.updated_at AS grant_updated_at, g.last_refresh_at,
           g.last_error, g.version
      FROM users u LEFT JOIN grants g ON g.sub = u.sub
     WHERE u.sub = ?1";

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
