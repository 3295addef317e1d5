//! Reading rows back into records, for every backend. Both schemas give each column the same
//! name and a type that decodes to the same Rust value (whole Unix seconds as 64-bit integers,
//! sealed values as bytes, booleans), so the rules of what a row must hold are written once
//! here. A value the records cannot hold is reported as corrupt, naming the column and never
//! the value.

use crate::{
    ApiKeyRecord, AuditRecord, DataKeyRecord, GrantEvent, GrantRecord, PendingEvent, Result,
    SealedAccessToken, SealedRefreshToken, SessionRecord, StoreError, TokenFingerprint, UserRecord,
};
use grantkeeper_core::{GrantState, Scopes, UserProfile};
use time::OffsetDateTime;

/// The grant's columns as [`user_and_grant`] and [`grant_alone`] read them, each after
/// `$prefix` (`"g."` from `grants` aliased `g`; `""` in a `RETURNING`, where SQLite takes no
/// alias). A macro, so that the statements built from it stay `&'static str`.
macro_rules! grant_columns {
    ($p:literal) => {
        concat!(
            $p,
            "state, ",
            $p,
            "scopes, ",
            $p,
            "refresh_token, ",
            $p,
            "rt_hash, ",
            $p,
            "rt_prefix_hash, ",
            $p,
            "refresh_token_received_at, ",
            $p,
            "access_token, ",
            $p,
            "access_token_expires_at, ",
            $p,
            "reason, ",
            $p,
            "state_changed_at, ",
            $p,
            "updated_at AS grant_updated_at, ",
            $p,
            "last_refresh_at, ",
            $p,
            "last_error, ",
            $p,
            "version"
        )
    };
}

/// The user's columns as [`user`] reads them, each after `$prefix` (`"u."` from `users`
/// aliased `u`; `""` in a `RETURNING`).
macro_rules! user_columns {
    ($p:literal) => {
        concat!(
            $p,
            "sub, ",
            $p,
            "email, ",
            $p,
            "email_verified, ",
            $p,
            "name, ",
            $p,
            "picture, ",
            $p,
            "given_name, ",
            $p,
            "family_name, ",
            $p,
            "locale, ",
            $p,
            "hd, ",
            $p,
            "created_at, ",
            $p,
            "updated_at AS user_updated_at, ",
            $p,
            "last_sign_in_at"
        )
    };
}

/// The user and grant columns, as [`user_and_grant`] reads them, from `users` aliased `u` and
/// `grants` aliased `g`.
macro_rules! user_and_grant_columns {
    () => {
        concat!(
            "SELECT ",
            user_columns!("u."),
            ", g.sub AS grant_sub, ",
            grant_columns!("g.")
        )
    };
}

/// Typed access to a row's columns by name: what the readers below need from a backend's row.
pub(crate) trait Columns {
    fn text(&self, column: &'static str) -> Result<String>;
    fn opt_text(&self, column: &'static str) -> Result<Option<String>>;
    fn int(&self, column: &'static str) -> Result<i64>;
    fn opt_int(&self, column: &'static str) -> Result<Option<i64>>;
    fn flag(&self, column: &'static str) -> Result<bool>;
    fn bytes(&self, column: &'static str) -> Result<Vec<u8>>;
    fn opt_bytes(&self, column: &'static str) -> Result<Option<Vec<u8>>>;
}

/// Implements [`Columns`] for a backend's row type (`impl_columns!(Row, get)`) with `get`, the
/// backend's read of one column by name into any type its driver decodes, whose errors name
/// the column and never the value. The methods differ only in the type asked of `get`.
macro_rules! impl_columns {
    ($row:ty, $get:path) => {
        impl $crate::rows::Columns for $row {
            fn text(&self, column: &'static str) -> $crate::Result<String> {
                $get(self, column)
            }
            fn opt_text(&self, column: &'static str) -> $crate::Result<Option<String>> {
                $get(self, column)
            }
            fn int(&self, column: &'static str) -> $crate::Result<i64> {
                $get(self, column)
            }
            fn opt_int(&self, column: &'static str) -> $crate::Result<Option<i64>> {
                $get(self, column)
            }
            fn flag(&self, column: &'static str) -> $crate::Result<bool> {
                $get(self, column)
            }
            fn bytes(&self, column: &'static str) -> $crate::Result<Vec<u8>> {
                $get(self, column)
            }
            fn opt_bytes(&self, column: &'static str) -> $crate::Result<Option<Vec<u8>>> {
                $get(self, column)
            }
        }
    };
}

impl_columns!(sqlx::postgres::PgRow, get);

fn get<'r, R, T>(row: &'r R, column: &'static str) -> Result<T>
where
    R: sqlx::Row,
    &'static str: sqlx::ColumnIndex<R>,
    T: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    // Only the column is named: sqlx's decode errors may quote the value.
    row.try_get(column).map_err(|e| match e {
        sqlx::Error::ColumnNotFound(_) => StoreError::Corrupt(format!("{column} is missing")),
        _ => StoreError::Corrupt(format!("{column} could not be decoded")),
    })
}

/// A time as the database keeps it: whole seconds since the Unix epoch.
pub(crate) fn unix(at: OffsetDateTime) -> i64 {
    at.unix_timestamp()
}

fn time(row: &dyn Columns, column: &'static str) -> Result<OffsetDateTime> {
    from_unix(row.int(column)?, column)
}

fn opt_time(row: &dyn Columns, column: &'static str) -> Result<Option<OffsetDateTime>> {
    row.opt_int(column)?
        .map(|secs| from_unix(secs, column))
        .transpose()
}

fn from_unix(secs: i64, column: &'static str) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|_| StoreError::Corrupt(format!("{column} is out of range")))
}

fn state(row: &dyn Columns, column: &'static str) -> Result<GrantState> {
    parse_state(&row.text(column)?, column)
}

pub(crate) fn parse_state(text: &str, column: &'static str) -> Result<GrantState> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("{column} holds an unknown grant state")))
}

/// Columns: `user_columns!`.
pub(crate) fn user(row: &dyn Columns) -> Result<UserRecord> {
    Ok(UserRecord {
        profile: UserProfile {
            sub: row.text("sub")?,
            email: row.opt_text("email")?,
            email_verified: row.flag("email_verified")?,
            name: row.opt_text("name")?,
            picture: row.opt_text("picture")?,
            given_name: row.opt_text("given_name")?,
            family_name: row.opt_text("family_name")?,
            locale: row.opt_text("locale")?,
            hd: row.opt_text("hd")?,
        },
        created_at: time(row, "created_at")?,
        updated_at: time(row, "user_updated_at")?,
        last_sign_in_at: opt_time(row, "last_sign_in_at")?,
    })
}

/// One user and their grant, read with `user_and_grant_columns!`. The grant's columns are
/// null when the user has no grant row.
pub(crate) fn user_and_grant(row: &dyn Columns) -> Result<(UserRecord, Option<GrantRecord>)> {
    let user = user(row)?;
    let grant = match row.opt_text("grant_sub")? {
        None => None,
        Some(sub) => Some(grant(row, sub)?),
    };
    Ok((user, grant))
}

/// A user who must have a grant, read as [`user_and_grant`] reads them: sign-in writes both
/// rows in one transaction and nothing else creates users, so a user alone is corrupt.
pub(crate) fn user_with_grant(row: &dyn Columns) -> Result<(UserRecord, GrantRecord)> {
    match user_and_grant(row)? {
        (user, Some(grant)) => Ok((user, grant)),
        (_, None) => Err(StoreError::Corrupt("a user has no grant row".into())),
    }
}

/// A grant read as `g.sub` followed by `grant_columns!`.
pub(crate) fn grant_alone(row: &dyn Columns) -> Result<GrantRecord> {
    grant(row, row.text("sub")?)
}

pub(crate) fn grant(row: &dyn Columns, sub: String) -> Result<GrantRecord> {
    // Read in the order of `grant_columns!`: SQLite finds each column by name starting after
    // the last one found.
    let state = state(row, "state")?;
    let scopes = Scopes::parse(&row.text("scopes")?);
    let refresh_token = match (
        row.opt_bytes("refresh_token")?,
        row.opt_text("rt_hash")?,
        row.opt_text("rt_prefix_hash")?,
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
    let refresh_token_received_at = opt_time(row, "refresh_token_received_at")?;
    let access_token = match (
        row.opt_bytes("access_token")?,
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
    Ok(GrantRecord {
        sub,
        state,
        scopes,
        refresh_token,
        refresh_token_received_at,
        access_token,
        reason: row.opt_text("reason")?,
        state_changed_at: time(row, "state_changed_at")?,
        updated_at: time(row, "grant_updated_at")?,
        last_refresh_at: opt_time(row, "last_refresh_at")?,
        last_error: row.opt_text("last_error")?,
        version: row.int("version")?,
    })
}

/// Columns: id, sub, from_state, to_state, reason, at.
pub(crate) fn grant_event(row: &dyn Columns) -> Result<GrantEvent> {
    let (id, sub) = (row.int("id")?, row.text("sub")?);
    let from = row
        .opt_text("from_state")?
        .map(|text| parse_state(&text, "from_state"))
        .transpose()?;
    Ok(GrantEvent {
        id,
        sub,
        from,
        to: state(row, "to_state")?,
        reason: row.text("reason")?,
        at: time(row, "at")?,
    })
}

/// Columns: id_hash, sub, created_at, expires_at.
pub(crate) fn session(row: &dyn Columns) -> Result<SessionRecord> {
    Ok(SessionRecord {
        id_hash: row.text("id_hash")?,
        sub: row.text("sub")?,
        created_at: time(row, "created_at")?,
        expires_at: time(row, "expires_at")?,
    })
}

/// Columns: id, wrapped, created_at, active, wrapped_by.
pub(crate) fn data_key(row: &dyn Columns) -> Result<DataKeyRecord> {
    Ok(DataKeyRecord {
        id: u32::try_from(row.int("id")?)
            .map_err(|_| StoreError::Corrupt("data_keys.id is out of range".into()))?,
        wrapped: row.bytes("wrapped")?,
        created_at: time(row, "created_at")?,
        active: row.flag("active")?,
        wrapped_by: row.opt_text("wrapped_by")?,
    })
}

/// Columns: id, sub, from_state, to_state, reason, at, attempts, next_attempt_at.
pub(crate) fn pending_event(row: &dyn Columns) -> Result<PendingEvent> {
    Ok(PendingEvent {
        event: grant_event(row)?,
        attempts: u32::try_from(row.int("attempts")?)
            .map_err(|_| StoreError::Corrupt("grant_events.attempts is out of range".into()))?,
        next_attempt_at: time(row, "next_attempt_at")?,
    })
}

/// Columns: id, name, hash, scopes, created_at, revoked_at.
pub(crate) fn api_key(row: &dyn Columns) -> Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: row.text("id")?,
        name: row.text("name")?,
        hash: row.text("hash")?,
        scopes: row
            .text("scopes")?
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        created_at: time(row, "created_at")?,
        revoked_at: opt_time(row, "revoked_at")?,
    })
}

/// Columns: id, at, actor, sub, action, detail, outcome, times, last_at.
pub(crate) fn audit(row: &dyn Columns) -> Result<AuditRecord> {
    let at = time(row, "at")?;
    Ok(AuditRecord {
        id: row.int("id")?,
        at,
        actor: row.text("actor")?,
        sub: row.opt_text("sub")?,
        action: row.text("action")?,
        detail: row.text("detail")?,
        outcome: row.text("outcome")?,
        times: u32::try_from(row.int("times")?)
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| StoreError::Corrupt("an audit row counts fewer than one act".into()))?,
        last_at: opt_time(row, "last_at")?.unwrap_or(at),
    })
}
