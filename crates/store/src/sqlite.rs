//! The SQLite backend: one database file (or one in-memory database) behind the store traits.
//!
//! Writes go through a pool of one connection, so writers of this process queue in order
//! instead of spinning on SQLite's busy handler; every write transaction starts with
//! `BEGIN IMMEDIATE`, so it holds the database's write lock from its first read and a
//! read-modify-write cannot lose an update to another process on the same file (which waits
//! up to [`BUSY_TIMEOUT`]). Reads go through a pool of [`READERS`] query-only connections that
//! WAL lets run beside the writer. `synchronous = FULL` makes a commit durable before it
//! returns: a refresh token, once received, must survive a crash that follows the answer.
//!
//! Refreshes, refresh leases, sign-ins and sessions, which many tasks make at once, are committed
//! in groups (`group`): one flush of the WAL makes a whole group durable before any of its callers
//! is answered.
//!
//! An in-memory database lives as long as its one connection, so there both pools are that
//! one connection, kept open for the life of the store.

mod activity;
mod admin;
mod api_keys;
mod audit;
mod batches;
mod grants;
mod group;
mod keys;
mod leases;
mod outbox;
mod revocations;
mod risc;
mod rotation;
mod sessions;
mod statements;
mod sweeps;
mod transfer;
mod users;

use crate::{Result, Store, StoreError};
use async_trait::async_trait;
use sqlx::error::ErrorKind;
use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{SqlSafeStr, Sqlite, Transaction};
use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How long a statement waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Read connections per store; writes are serialised by SQLite anyway.
const READERS: u32 = 8;
/// How long a caller waits for a pooled connection before the store is called unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Switching a new file to WAL takes a lock that the busy handler does not wait for, so
/// processes opening one new file together retry the first connection a few times.
const OPEN_ATTEMPTS: u32 = 50;
const OPEN_RETRY_DELAY: Duration = Duration::from_millis(100);

/// The migrations of this backend, in order. Each runs once, inside the one transaction that
/// [`SqliteStore::migrate`] holds, so none may contain `VACUUM` or change `foreign_keys`.
/// An applied file must never change (its checksum is kept); add a new one instead.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "offline access",
        include_str!("../migrations/sqlite/0002_offline_access.sql"),
    ),
    (
        3,
        "instances",
        include_str!("../migrations/sqlite/0003_instances.sql"),
    ),
    (
        4,
        "activity",
        include_str!("../migrations/sqlite/0004_activity.sql"),
    ),
    (
        5,
        "admin sessions",
        include_str!("../migrations/sqlite/0005_admin_sessions.sql"),
    ),
    (
        6,
        "cross-account protection",
        include_str!("../migrations/sqlite/0006_risc.sql"),
    ),
    (
        7,
        "key rotation",
        include_str!("../migrations/sqlite/0007_key_rotation.sql"),
    ),
    (
        8,
        "pending revocations",
        include_str!("../migrations/sqlite/0008_pending_revocations.sql"),
    ),
    (
        9,
        "audit counts",
        include_str!("../migrations/sqlite/0009_audit_times.sql"),
    ),
    (
        10,
        "export order",
        include_str!("../migrations/sqlite/0010_export_order.sql"),
    ),
    (
        11,
        "sealing key",
        include_str!("../migrations/sqlite/0011_sealing_key.sql"),
    ),
    (
        19,
        "master key sources",
        include_str!("../migrations/sqlite/0019_wrapped_by.sql"),
    ),
];

fn migrator() -> Migrator {
    Migrator::with_migrations(
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
    )
}

/// grantkeeper's store on SQLite. Cloning shares the pools.
#[derive(Clone)]
pub struct SqliteStore {
    read: SqlitePool,
    write: SqlitePool,
    /// Refreshes, refresh leases, sign-ins and sessions, committed in groups on `write`.
    group: group::GroupCommit,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("readers", &self.read.size())
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens `sqlite://PATH` (the file is created when missing; `?mode=rwc` is accepted) or
    /// `sqlite::memory:`, and applies pending migrations.
    pub async fn open(url: &str) -> Result<SqliteStore> {
        let Some(rest) = url.strip_prefix("sqlite:") else {
            return Err(StoreError::Config(
                "store.url must start with sqlite: (sqlite://PATH or sqlite::memory:)".into(),
            ));
        };
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("store.url is not a usable SQLite URL: {e}")))?
            .foreign_keys(true)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT);

        let store = if is_memory(rest) {
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options)
                .await
                .map_err(map_sqlx)?;
            SqliteStore {
                read: pool.clone(),
                group: group::GroupCommit::start(pool.clone()),
                write: pool,
            }
        } else {
            create_private(options.get_filename())?;
            let options = options
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal);
            let write = connect(
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(ACQUIRE_TIMEOUT),
                options.clone(),
            )
            .await?;
            // Readers cannot write by mistake: every write must take the writer's lock.
            let read = connect(
                SqlitePoolOptions::new()
                    .max_connections(READERS)
                    .acquire_timeout(ACQUIRE_TIMEOUT),
                options.pragma("query_only", "ON"),
            )
            .await?;
            SqliteStore {
                read,
                group: group::GroupCommit::start(write.clone()),
                write,
            }
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations; does nothing when the schema is current. Several processes
    /// may call it at once: the first takes the write lock and the others then find nothing
    /// to do.
    pub async fn migrate(&self) -> Result<()> {
        let mut tx = self.begin_write().await?;
        // run_direct: `run` takes an `Acquire`, whose higher-ranked bound makes this future not
        // `Send` (sqlx says as much on run_direct).
        migrator()
            .run_direct(None, &mut *tx, false)
            .await
            .map_err(map_migrate)?;
        tx.commit().await.map_err(map_sqlx)?;
        tracing::debug!(
            version = MIGRATIONS.last().map_or(0, |m| m.0),
            "SQLite schema current"
        );
        Ok(())
    }

    /// A write transaction holding the database's write lock from its first statement.
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>> {
        self.write
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_sqlx)
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.read)
            .await
            .map_err(map_sqlx)?;
        Ok(())
    }
}

/// Creates the database file, empty, readable and writable by its owner alone (0600), unless it
/// exists: it holds sealed tokens, API key hashes and the wrapped data keys. SQLite gives the
/// `-wal` and `-shm` files it makes beside it the same mode. An existing file that other local
/// users may read is left as it is (the operator chose its mode) and named in a warning.
fn create_private(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if let Ok(meta) = std::fs::metadata(path)
                && meta.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{:o}", meta.permissions().mode() & 0o777),
                    "the SQLite database is readable by other local users: `chmod 600` it and \
                     its -wal and -shm files"
                );
            }
            Ok(())
        }
        // SQLite says the same, in its words, when it cannot create the file either.
        Err(e) => Err(StoreError::Unavailable(format!(
            "cannot create the database file {}: {e}",
            path.display()
        ))),
    }
}

/// True for the spellings of an in-memory database that sqlx accepts (`rest` follows `sqlite:`).
fn is_memory(rest: &str) -> bool {
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    database == ":memory:" || params.split('&').any(|p| p == "mode=memory")
}

async fn connect(pool: SqlitePoolOptions, options: SqliteConnectOptions) -> Result<SqlitePool> {
    let mut attempt = 1;
    loop {
        match pool.clone().connect_with(options.clone()).await {
            Ok(pool) => return Ok(pool),
            Err(e) if is_busy(&e) && attempt < OPEN_ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(OPEN_RETRY_DELAY).await;
            }
            Err(e) => return Err(map_sqlx(e)),
        }
    }
}

/// The message of migration 0011's refusal of a value sealed under a key that is not active.
const SEALED_UNDER_INACTIVE_KEY: &str = "sealed_under_inactive_key";

// SQLite's primary result codes (the low byte of an extended code).
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
const SQLITE_IOERR: i32 = 10;
const SQLITE_CORRUPT: i32 = 11;
const SQLITE_FULL: i32 = 13;
const SQLITE_CANTOPEN: i32 = 14;
const SQLITE_NOTADB: i32 = 26;

fn primary_code(db: &dyn sqlx::error::DatabaseError) -> Option<i32> {
    db.code()
        .and_then(|c| c.parse::<i32>().ok())
        .map(|c| c & 0xff)
}

fn is_busy(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(primary_code)
        .is_some_and(|c| c == SQLITE_BUSY || c == SQLITE_LOCKED)
}

/// The one translation of database failures into the store's terms. SQLite's messages name
/// tables, columns and constraints, never bound values, so they may be kept; decode failures
/// keep only the column's name.
pub(crate) fn map_sqlx(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::Database(db) => match db.kind() {
            ErrorKind::UniqueViolation => StoreError::AlreadyExists,
            // Only inserts meet it here: the row they point at does not exist.
            ErrorKind::ForeignKeyViolation => StoreError::NotFound,
            // Migration 0011's trigger: a value sealed under a key that is not active.
            _ if db.message() == SEALED_UNDER_INACTIVE_KEY => StoreError::InactiveKey,
            _ => {
                let message = db.message().to_owned();
                match primary_code(&*db) {
                    Some(SQLITE_BUSY | SQLITE_LOCKED) => {
                        StoreError::Unavailable(format!("database is busy: {message}"))
                    }
                    Some(SQLITE_IOERR | SQLITE_FULL | SQLITE_CANTOPEN) => {
                        StoreError::Unavailable(message)
                    }
                    Some(SQLITE_CORRUPT | SQLITE_NOTADB) => StoreError::Corrupt(message),
                    Some(code) => StoreError::Database(format!("{message} (code {code})")),
                    None => StoreError::Database(message),
                }
            }
        },
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
        sqlx::Error::Configuration(_) => StoreError::Config(e.to_string()),
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

fn map_migrate(e: MigrateError) -> StoreError {
    match e {
        MigrateError::Execute(e) => match map_sqlx(e) {
            unavailable @ StoreError::Unavailable(_) => unavailable,
            other => StoreError::Migration(other.to_string()),
        },
        other => StoreError::Migration(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `PRAGMA synchronous` as a write of the group commit sees it (2 = FULL, 1 = NORMAL).
    async fn synchronous_in_group(store: &SqliteStore, durable: bool) -> i64 {
        store
            .group
            .queue(
                |conn| {
                    Box::pin(async move {
                        let (mode,): (i64,) = sqlx::query_as("PRAGMA synchronous")
                            .fetch_one(conn)
                            .await
                            .map_err(map_sqlx)?;
                        Ok(mode)
                    })
                },
                durable,
            )
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn only_lazy_groups_skip_the_flush_and_the_writer_flushes_again_after_them() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("group.db").display());
        let store = SqliteStore::open(&url).await.unwrap();
        assert_eq!(synchronous_in_group(&store, true).await, 2);
        assert_eq!(synchronous_in_group(&store, false).await, 1);
        assert_eq!(synchronous_in_group(&store, true).await, 2);
        // A transaction outside the group commit (a sign-in's, an import's), after a lazy group.
        assert_eq!(synchronous_in_group(&store, false).await, 1);
        let mut tx = store.begin_write().await.unwrap();
        let (mode,): (i64,) = sqlx::query_as("PRAGMA synchronous")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(mode, 2);
        tx.commit().await.unwrap();
        // Queued together, a durable write makes its whole group durable.
        let mut writes = tokio::task::JoinSet::new();
        for i in 0..40 {
            let store = store.clone();
            writes.spawn(async move { (i, synchronous_in_group(&store, i % 8 != 0).await) });
        }
        while let Some(done) = writes.join_next().await {
            let (i, mode) = done.unwrap();
            if i % 8 != 0 {
                assert_eq!(mode, 2, "durable write {i}");
            }
        }
    }
}
