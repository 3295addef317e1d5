//! What both backends share to run a statement: the values bound to it ([`Arg`], built once per
//! record by the functions of this module and of the modules that own the records), and the
//! [`Engine`] that runs a statement written once for both (placeholders `$1`, `$2`, ... which
//! PostgreSQL reads as positions and SQLite as names bound by their number), so that a
//! capability made of single statements is implemented once for both backends
//! (`crate::common`). Units of work of several statements stay with each backend, where each
//! holds its locks its own way.

use crate::rows::Columns;
use crate::{GrantRecord, Result};
use async_trait::async_trait;
use std::borrow::Cow;
use time::OffsetDateTime;

/// One value bound to a statement. Owned: SQLite's statements run on threads of their own.
/// Each variant keeps its type when NULL, which PostgreSQL needs to know.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Arg {
    Text(Option<String>),
    Int(Option<i64>),
    Bytes(Option<Vec<u8>>),
    Bool(bool),
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(Some(v.to_owned()))
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(Some(v))
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Arg::Text(Some(v.clone()))
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Arg::Text(v.map(str::to_owned))
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::Text(v)
    }
}
impl From<&Option<String>> for Arg {
    fn from(v: &Option<String>) -> Self {
        Arg::Text(v.clone())
    }
}
impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}
impl From<u32> for Arg {
    fn from(v: u32) -> Self {
        Arg::Int(Some(i64::from(v)))
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}
impl From<&[u8]> for Arg {
    fn from(v: &[u8]) -> Self {
        Arg::Bytes(Some(v.to_vec()))
    }
}
impl From<Vec<u8>> for Arg {
    fn from(v: Vec<u8>) -> Self {
        Arg::Bytes(Some(v))
    }
}
impl From<&Vec<u8>> for Arg {
    fn from(v: &Vec<u8>) -> Self {
        Arg::Bytes(Some(v.clone()))
    }
}
impl From<Option<&[u8]>> for Arg {
    fn from(v: Option<&[u8]>) -> Self {
        Arg::Bytes(v.map(<[u8]>::to_vec))
    }
}
/// Times as the database keeps them: whole seconds since the Unix epoch.
impl From<OffsetDateTime> for Arg {
    fn from(v: OffsetDateTime) -> Self {
        Arg::Int(Some(v.unix_timestamp()))
    }
}
impl From<Option<OffsetDateTime>> for Arg {
    fn from(v: Option<OffsetDateTime>) -> Self {
        Arg::Int(v.map(OffsetDateTime::unix_timestamp))
    }
}

/// The values of a statement's `$1`, `$2`, ... in that order.
macro_rules! args {
    ($($value:expr),* $(,)?) => {
        ::std::vec::Vec::<$crate::sql::Arg>::from([$($crate::sql::Arg::from($value)),*])
    };
}

/// Reads one row into a record; the functions of [`crate::rows`] are such readers.
pub(crate) type RowMap<T> = fn(&dyn Columns) -> Result<T>;

/// A statement's text: most are constants, a few are built for the filters given.
pub(crate) type Sql = Cow<'static, str>;

/// Runs single statements, each in a transaction of its own (a write is committed, and on
/// SQLite flushed to disk, before it answers). What each backend gives the capabilities that
/// are implemented once for both (`crate::common`).
#[async_trait]
pub(crate) trait Engine: Send + Sync + 'static {
    /// The column that orders rows inserted in the same second as they were inserted, in
    /// tables without a sequence of their own (`api_keys`).
    const API_KEY_INSERTION_ORDER: &'static str;
    /// `u.email` with its ASCII letters, and only those, in lower case (the console's search
    /// matches alike on both backends, whatever the server's locale).
    const ASCII_LOWER_EMAIL: &'static str;

    /// The rows a read answers.
    async fn read_rows<T: Send + 'static>(
        &self,
        sql: Sql,
        args: Vec<Arg>,
        map: RowMap<T>,
    ) -> Result<Vec<T>>;
    /// The rows a write returns (`RETURNING`).
    async fn write_rows<T: Send + 'static>(
        &self,
        sql: Sql,
        args: Vec<Arg>,
        map: RowMap<T>,
    ) -> Result<Vec<T>>;
    /// How many rows a write changed.
    async fn execute(&self, sql: Sql, args: Vec<Arg>) -> Result<u64>;
    /// Several writes in one transaction, in order; how many rows each changed. Either all
    /// are committed or none.
    async fn execute_all(&self, statements: Vec<(Sql, Vec<Arg>)>) -> Result<Vec<u64>>;
}

/// The first row of `rows`, if any.
pub(crate) fn first<T>(rows: Vec<T>) -> Option<T> {
    rows.into_iter().next()
}

/// The grant's columns `$2` to `$15` as `INSERT_GRANT` and `UPDATE_GRANT` take them (`$1` is
/// the `sub`; the fence, when there is one, is `$16`).
pub(crate) fn grant_args(grant: &GrantRecord, held_version: Option<i64>) -> Vec<Arg> {
    let rt = grant.refresh_token.as_ref();
    let at = grant.access_token.as_ref();
    let mut args = args![
        grant.sub.as_str(),
        grant.state.as_str(),
        grant.scopes.to_string(),
        rt.map(|t| t.sealed.as_slice()),
        rt.map(|t| t.fingerprint.hash.as_str()),
        rt.map(|t| t.fingerprint.prefix_hash.as_str()),
        grant.refresh_token_received_at,
        at.map(|t| t.sealed.as_slice()),
        at.map(|t| t.expires_at),
        grant.reason.as_deref(),
        grant.state_changed_at,
        grant.updated_at,
        grant.last_refresh_at,
        grant.last_error.as_deref(),
        grant.version,
    ];
    if let Some(version) = held_version {
        args.push(Arg::from(version));
    }
    args
}

/// A sign-in's profile as `UPSERT_USER` takes it, `$10` the time of the sign-in.
pub(crate) fn profile_args(sign_in: &crate::SignIn) -> Vec<Arg> {
    let p = &sign_in.profile;
    args![
        p.sub.as_str(),
        p.email.as_deref(),
        p.email_verified,
        p.name.as_deref(),
        p.picture.as_deref(),
        p.given_name.as_deref(),
        p.family_name.as_deref(),
        p.locale.as_deref(),
        p.hd.as_deref(),
        sign_in.at
    ]
}

/// A change of state as `INSERT_EVENT` takes it.
pub(crate) fn event_args(
    sub: &str,
    change: &crate::merge::StateChange,
    at: OffsetDateTime,
) -> Vec<Arg> {
    args![
        sub,
        change.from.map(|s| s.as_str()),
        change.to.as_str(),
        change.reason.as_str(),
        at
    ]
}

/// The units of work of several statements, which each backend runs its own way (SQLite: one
/// closure on its writer; PostgreSQL: one function call, or one transaction holding its row
/// locks). The capabilities they belong to are implemented once over them (`crate::common`).
#[async_trait]
pub(crate) trait Units: Engine {
    /// [`crate::UserStore::record_sign_in`], or with `unless_blocked`
    /// [`crate::UserStore::record_sign_in_unless_blocked`] (without it, never `Blocked`).
    async fn sign_in(
        &self,
        sign_in: crate::SignIn,
        unless_blocked: bool,
    ) -> Result<crate::SignInRecorded>;
    /// [`crate::GrantStore::update_grant_state`].
    async fn change_state(
        &self,
        sub: &str,
        expected_version: Option<i64>,
        update: crate::StateUpdate,
    ) -> Result<(GrantRecord, Option<crate::GrantEvent>)>;
    /// [`crate::GrantStore::record_refresh`], giving `owner`'s lease back in the same
    /// transaction when given ([`crate::RefreshLeaseStore::record_refresh_releasing`]).
    async fn refresh(
        &self,
        sub: &str,
        expected_version: i64,
        refresh: crate::RefreshSuccess,
        owner: Option<&str>,
    ) -> Result<GrantRecord>;
    /// [`crate::RefreshLeaseStore::try_lease_refresh_reading`], as `(sub, owner, until, now)`.
    async fn lease_reading(&self, lease: Vec<Arg>) -> Result<Option<GrantRecord>>;
    /// A lease taken or given back: a single statement, which SQLite need not flush on its own
    /// (a lease runs out by itself).
    async fn lease_statement(&self, sql: &'static str, args: Vec<Arg>) -> Result<u64>;
    /// [`crate::RevocationQueueStore::enqueue_revocation_with_state`].
    async fn queue_with_state(
        &self,
        revocation: crate::PendingRevocation,
        update: crate::StateUpdate,
    ) -> Result<(GrantRecord, Option<crate::GrantEvent>)>;
}
