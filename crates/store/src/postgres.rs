//! The PostgreSQL backend: one database shared by every instance of grantkeeper.
//!
//! Many processes write at once here, so every read-modify-write holds what it reads: the
//! sign-in merge and the fenced grant writes lock the grant row (`SELECT ... FOR UPDATE`)
//! inside their transaction, after the sign-in has created or updated the user row, which
//! orders concurrent sign-ins of one user; the other writes are single statements whose unique indexes settle races (`INSERT ... ON
//! CONFLICT`, refresh leases among them). Transactions run at READ COMMITTED
//! whatever the server's default, as those locks are designed for: each statement sees what
//! committed before it. A transaction or statement that the server aborts because of a
//! concurrent one (a deadlock, or a serialization failure of a single statement under a
//! stricter default isolation) is run again from the start a few times by [`retrying`] before
//! the store answers [`StoreError::Unavailable`].
//!
//! Each connection announces itself as `application_name=grantkeeper` (unless the URL names
//! another) and carries the `statement_timeout` of [`StoreOptions`], so that no statement, and
//! no wait for a row lock, holds a caller longer than that.

mod drops;
mod grants;
mod jobs;
mod rotation;
mod statements;
mod transfer;
mod units;
mod users;

use crate::rows::Columns;
use crate::sql::{Arg, Engine, RowMap, Sql};
use crate::{Result, Store, StoreError, StoreOptions};
use async_trait::async_trait;
use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Connection, Postgres, SqlSafeStr, Transaction};
use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

/// The migrations of this backend, in order, the twins of SQLite's. They run in the one
/// transaction that [`PostgresStore::migrate`] holds (PostgreSQL's DDL is transactional), so
/// none may contain `CREATE INDEX CONCURRENTLY` or anything else that refuses a transaction.
/// An applied file must never change (its checksum is kept); add a new one instead.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "offline access",
        include_str!("../migrations/postgres/0002_offline_access.sql"),
    ),
    (
        3,
        "instances",
        include_str!("../migrations/postgres/0003_instances.sql"),
    ),
    (
        4,
        "activity",
        include_str!("../migrations/postgres/0004_activity.sql"),
    ),
    (
        5,
        "admin sessions",
        include_str!("../migrations/postgres/0005_admin_sessions.sql"),
    ),
    (
        6,
        "cross-account protection",
        include_str!("../migrations/postgres/0006_risc.sql"),
    ),
    (
        7,
        "key rotation",
        include_str!("../migrations/postgres/0007_key_rotation.sql"),
    ),
    (
        8,
        "pending revocations",
        include_str!("../migrations/postgres/0008_pending_revocations.sql"),
    ),
    (
        9,
        "audit counts",
        include_str!("../migrations/postgres/0009_audit_times.sql"),
    ),
    (
        10,
        "export order",
        include_str!("../migrations/postgres/0010_export_order.sql"),
    ),
    (
        11,
        "sealing key",
        include_str!("../migrations/postgres/0011_sealing_key.sql"),
    ),
    (
        13,
        "grant counts",
        include_str!("../migrations/postgres/0013_grant_counts.sql"),
    ),
    (
        14,
        "single round trips",
        include_str!("../migrations/postgres/0014_single_round_trips.sql"),
    ),
    (
        19,
        "master key sources",
        include_str!("../migrations/postgres/0019_wrapped_by.sql"),
    ),
    (
        21,
        "jobs",
        include_str!("../migrations/postgres/0021_jobs.sql"),
    ),
    (
        23,
        "job counts",
        include_str!("../migrations/postgres/0023_job_counts.sql"),
    ),
    (
        25,
        "session bound",
        include_str!("../migrations/postgres/0025_session_bound.sql"),
    ),
    (
        26,
        "drop notices",
        include_str!("../migrations/postgres/0026_drop_notices.sql"),
    ),
    (
        28,
        "sign-in unless blocked",
        include_str!("../migrations/postgres/0028_sign_in_unless_blocked.sql"),
    ),
    (
        29,
        "session bound by index",
        include_str!("../migrations/postgres/0029_session_bound_by_index.sql"),
    ),
];

/// The key of the advisory lock that instances starting together take to migrate one at a
/// time ("grantkee" in ASCII). Advisory locks are per database, so databases sharing a server
/// do not wait for each other.
const MIGRATION_LOCK: i64 = 0x6772_616e_746b_6565;
/// Migrations may rewrite tables and other instances wait for the lock meanwhile: both take
/// longer than a request's statement, but not forever.
const MIGRATION_STATEMENT_TIMEOUT: &str = "SET LOCAL statement_timeout = '10min'";

/// How often a transaction aborted by a concurrent one is run in all.
const TX_ATTEMPTS: u32 = 5;
/// The first pause before running such a transaction again; it doubles each time, with jitter
/// so that the transactions that collided do not collide again.
const TX_RETRY_DELAY: Duration = Duration::from_millis(5);

fn migrator() -> Migrator {
    let mut migrator = Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    );
    // sqlx's own lock is a session lock around each migration's own transaction; ours is a
    // transaction lock around all of them, released however the transaction ends.
    migrator.set_locking(false);
    migrator
}

/// grantkeeper's store on PostgreSQL. Cloning shares the pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the connect options: they hold the password.
        f.debug_struct("PostgresStore")
            .field("connections", &self.pool.size())
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to `postgres://...` or `postgresql://...` (the database must exist) and applies
    /// pending migrations.
    pub async fn open(url: &str, options: &StoreOptions) -> Result<PostgresStore> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::Config(
                "store.url must start with postgres:// or postgresql://".into(),
            ));
        }
        // sqlx's parse errors name the part at fault, never the URL or its password.
        let mut connect = PgConnectOptions::from_str(url).map_err(|e| {
            StoreError::Config(format!("store.url is not a usable PostgreSQL URL: {e}"))
        })?;
        if connect.get_application_name().is_none() {
            connect = connect.application_name("grantkeeper");
        }
        // READ COMMITTED whatever the server's default: the functions of the hot paths run in
        // the implicit transaction of their one statement, and their locking reads rely on
        // each statement seeing what committed before it.
        let connect = connect.options([
            (
                "statement_timeout",
                options.statement_timeout.as_millis().to_string(),
            ),
            ("default_transaction_isolation", "read committed".to_owned()),
            // The server's NOTICEs (`relation "_sqlx_migrations" already exists, skipping` on
            // every start) are not for the operator: warnings and errors still come through.
            ("client_min_messages", "warning".to_owned()),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.connect_timeout)
            .connect_with(connect)
            .await
            .map_err(map_pg)?;
        let store = PostgresStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations; does nothing when the schema is current. Several instances
    /// may call it at once: each takes an advisory lock for the length of its transaction, so
    /// the first applies the migrations and the others then find nothing to do.
    pub async fn migrate(&self) -> Result<()> {
        retrying(|| self.migrate_once()).await?;
        tracing::debug!(
            version = MIGRATIONS.last().map_or(0, |m| m.0),
            "PostgreSQL schema current"
        );
        Ok(())
    }

    async fn migrate_once(&self) -> PgResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(MIGRATION_STATEMENT_TIMEOUT)
            .execute(&mut *tx)
            .await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await?;
        // run_direct: `run` takes an `Acquire`, whose higher-ranked bound makes this future not
        // `Send` (sqlx says as much on run_direct).
        migrator()
            .run_direct(None, &mut *tx, false)
            .await
            .map_err(migrate_failure)?;
        tx.commit().await?;
        Ok(())
    }

    /// A write transaction at READ COMMITTED, whatever the server's default: this backend's
    /// locking reads rely on each statement seeing what committed before it (a writer that
    /// waited for a row lock then reads the row as its holder left it), where a stricter
    /// isolation would abort the waiter instead.
    async fn begin(&self) -> PgResult<Transaction<'static, Postgres>> {
        Ok(self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await?)
    }

    /// Closes every connection, waiting for those in use to be returned. Later calls fail
    /// with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A statement with `args` bound, in their order.
pub(crate) fn bound(sql: &Sql, args: &[Arg]) -> Query<'static, Postgres, PgArguments> {
    let mut query = sqlx::query(AssertSqlSafe(sql.clone()));
    for arg in args {
        query = match arg.clone() {
            Arg::Text(v) => query.bind(v),
            Arg::Int(v) => query.bind(v),
            Arg::Bytes(v) => query.bind(v),
            Arg::Bool(v) => query.bind(v),
        };
    }
    query
}

fn mapped<T>(found: Vec<PgRow>, map: RowMap<T>) -> Result<Vec<T>> {
    found.iter().map(|row| map(row as &dyn Columns)).collect()
}

#[async_trait]
impl Engine for PostgresStore {
    const API_KEY_INSERTION_ORDER: &'static str = "seq";
    // Not lower(), whose folding follows the server's locale.
    const ASCII_LOWER_EMAIL: &'static str =
        "translate(u.email, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')";

    async fn read_rows<T: Send + 'static>(
        &self,
        sql: Sql,
        args: Vec<Arg>,
        map: RowMap<T>,
    ) -> Result<Vec<T>> {
        let found = bound(&sql, &args)
            .fetch_all(&self.pool)
            .await
            .map_err(map_pg)?;
        mapped(found, map)
    }

    async fn write_rows<T: Send + 'static>(
        &self,
        sql: Sql,
        args: Vec<Arg>,
        map: RowMap<T>,
    ) -> Result<Vec<T>> {
        let found =
            retrying(|| async { Ok(bound(&sql, &args).fetch_all(&self.pool).await?) }).await?;
        mapped(found, map)
    }

    async fn execute(&self, sql: Sql, args: Vec<Arg>) -> Result<u64> {
        retrying(|| async {
            let done = bound(&sql, &args).execute(&self.pool).await?;
            Ok(done.rows_affected())
        })
        .await
    }

    async fn execute_all(&self, statements: Vec<(Sql, Vec<Arg>)>) -> Result<Vec<u64>> {
        retrying(|| async {
            let mut tx = self.begin().await?;
            let mut changed = Vec::with_capacity(statements.len());
            for (sql, args) in &statements {
                changed.push(bound(sql, args).execute(&mut *tx).await?.rows_affected());
            }
            tx.commit().await?;
            Ok(changed)
        })
        .await
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<()> {
        let mut conn = self.pool.acquire().await.map_err(map_pg)?;
        conn.ping().await.map_err(map_pg)
    }

    fn drop_feed(
        &self,
        recheck: Duration,
        clock: grantkeeper_core::SharedClock,
    ) -> Option<crate::DropFeed> {
        Some(self.start_drop_feed(recheck, clock))
    }
}

/// A failure inside this backend, before it becomes a [`StoreError`] at a trait method's
/// boundary (through [`map_pg`]): a database error is kept as sqlx gave it, so that
/// [`retrying`] can tell a transaction that lost a race to a concurrent one, which may simply
/// run again, from a final failure.
#[derive(Debug)]
pub(crate) enum PgError {
    Sqlx(sqlx::Error),
    Store(StoreError),
}

pub(crate) type PgResult<T> = std::result::Result<T, PgError>;

impl From<sqlx::Error> for PgError {
    fn from(e: sqlx::Error) -> Self {
        PgError::Sqlx(e)
    }
}

impl From<StoreError> for PgError {
    fn from(e: StoreError) -> Self {
        PgError::Store(e)
    }
}

impl From<PgError> for StoreError {
    fn from(e: PgError) -> Self {
        match e {
            PgError::Sqlx(e) => map_pg(e),
            PgError::Store(e) => e,
        }
    }
}

/// Runs a write transaction (`attempt` begins, writes and commits it) until it is not aborted
/// by a concurrent one, at most [`TX_ATTEMPTS`] times; every write of this backend goes
/// through here. `attempt` must be safe to run again: a transaction that failed was rolled
/// back whole.
pub(crate) async fn retrying<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = PgResult<T>>,
{
    let mut done = 1;
    loop {
        match attempt().await {
            Err(PgError::Sqlx(e)) if is_lost_race(&e) && done < TX_ATTEMPTS => {
                tracing::debug!(attempt = done, "transaction aborted by a concurrent one");
                tokio::time::sleep(retry_delay(done)).await;
                done += 1;
            }
            result => return result.map_err(StoreError::from),
        }
    }
}

/// Between half and all of the doubled delay, so that the transactions that collided spread.
fn retry_delay(done: u32) -> Duration {
    let full = TX_RETRY_DELAY.saturating_mul(1 << done.min(8));
    let half = full / 2;
    let spread = u32::try_from(half.as_micros()).unwrap_or(u32::MAX).max(1);
    let jitter = grantkeeper_core::random::u64() % u64::from(spread);
    half + Duration::from_micros(jitter)
}

/// SQLSTATE codes this backend tells apart (PostgreSQL's Appendix A).
mod sqlstate {
    pub const UNIQUE_VIOLATION: &str = "23505";
    pub const FOREIGN_KEY_VIOLATION: &str = "23503";
    pub const CHECK_VIOLATION: &str = "23514";
    /// The constraint migration 0011's trigger names when it refuses a value sealed under a
    /// key that is not active.
    pub const SEALED_UNDER_ACTIVE_KEY: &str = "sealed_under_active_key";
    pub const SERIALIZATION_FAILURE: &str = "40001";
    pub const DEADLOCK_DETECTED: &str = "40P01";
    pub const QUERY_CANCELED: &str = "57014";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    pub const CRASH_SHUTDOWN: &str = "57P02";
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
    pub const READ_ONLY_SQL_TRANSACTION: &str = "25006";
    pub const INVALID_CATALOG_NAME: &str = "3D000";
    pub const DATA_CORRUPTED: &str = "XX001";
    pub const INDEX_CORRUPTED: &str = "XX002";
    /// Classes: connection exceptions, insufficient resources (too many connections, disk
    /// full, out of memory), invalid authorization, data exceptions.
    pub const CLASS_CONNECTION: &str = "08";
    pub const CLASS_RESOURCES: &str = "53";
    pub const CLASS_AUTHORIZATION: &str = "28";
    pub const CLASS_DATA: &str = "22";
}

fn sqlstate_of(e: &sqlx::Error) -> Option<String> {
    e.as_database_error()
        .and_then(|db| db.code())
        .map(Cow::into_owned)
}

/// True when the server aborted a transaction because of a concurrent one: running it again
/// may well succeed.
fn is_lost_race(e: &sqlx::Error) -> bool {
    sqlstate_of(e).is_some_and(|code| {
        code == sqlstate::SERIALIZATION_FAILURE || code == sqlstate::DEADLOCK_DETECTED
    })
}

/// The one translation of PostgreSQL failures into the store's terms. Messages are built from
/// the SQLSTATE and PostgreSQL's primary message, which names tables, columns and constraints;
/// never from its detail, which quotes the values of a row. Data exceptions (class 22) quote
/// the offending value in the primary message too, so only their code is kept.
pub(crate) fn map_pg(e: sqlx::Error) -> StoreError {
    use sqlstate::*;
    match e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::Database(db) => {
            let code = db.code().map(Cow::into_owned).unwrap_or_default();
            let message = db.message();
            match code.as_str() {
                // Migration 0011's trigger: a value sealed under a key that is not active.
                CHECK_VIOLATION if db.constraint() == Some(SEALED_UNDER_ACTIVE_KEY) => {
                    StoreError::InactiveKey
                }
                UNIQUE_VIOLATION => StoreError::AlreadyExists,
                // Only inserts meet it here: the row they point at does not exist.
                FOREIGN_KEY_VIOLATION => StoreError::NotFound,
                // What is left once `retrying` gave up.
                SERIALIZATION_FAILURE | DEADLOCK_DETECTED => StoreError::Unavailable(format!(
                    "the transaction kept colliding with concurrent ones: {message}"
                )),
                QUERY_CANCELED => StoreError::Unavailable(format!(
                    "a statement ran past statement_timeout or was cancelled: {message}"
                )),
                ADMIN_SHUTDOWN | CRASH_SHUTDOWN | CANNOT_CONNECT_NOW => {
                    StoreError::Unavailable(format!("the database is restarting: {message}"))
                }
                // A primary that became a standby under us (failover).
                READ_ONLY_SQL_TRANSACTION => StoreError::Unavailable(message.to_owned()),
                INVALID_CATALOG_NAME => StoreError::Config(format!(
                    "the database named by store.url does not exist: {message}"
                )),
                DATA_CORRUPTED | INDEX_CORRUPTED => StoreError::Corrupt(message.to_owned()),
                c if c.starts_with(CLASS_CONNECTION) || c.starts_with(CLASS_RESOURCES) => {
                    StoreError::Unavailable(format!("{message} (SQLSTATE {c})"))
                }
                c if c.starts_with(CLASS_AUTHORIZATION) => StoreError::Config(format!(
                    "the database refused the credentials of store.url: {message}"
                )),
                c if c.starts_with(CLASS_DATA) => {
                    StoreError::Database(format!("a value was refused (SQLSTATE {c})"))
                }
                c => StoreError::Database(format!("{message} (SQLSTATE {c})")),
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
        // A server without TLS, or a certificate that does not verify: the URL's settings.
        sqlx::Error::Configuration(_) | sqlx::Error::Tls(_) => StoreError::Config(e.to_string()),
        sqlx::Error::ColumnDecode { index, .. } => {
            StoreError::Corrupt(format!("column {index} could not be decoded"))
        }
        sqlx::Error::Decode(_) => StoreError::Corrupt("a value could not be decoded".into()),
        sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt(e.to_string()),
        sqlx::Error::Migrate(m) => map_migrate(*m),
        other => StoreError::Database(other.to_string()),
    }
}

/// A failure of the migrator: a database error that `retrying` may look at stays one.
fn migrate_failure(e: MigrateError) -> PgError {
    match e {
        MigrateError::Execute(e) => PgError::Sqlx(e),
        other => PgError::Store(map_migrate(other)),
    }
}

fn map_migrate(e: MigrateError) -> StoreError {
    match e {
        MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => match map_pg(e) {
            unavailable @ StoreError::Unavailable(_) => unavailable,
            other => StoreError::Migration(other.to_string()),
        },
        other => StoreError::Migration(other.to_string()),
    }
}
