//! The SQLite backend: one database file (or one in-memory database) behind the store traits,
//! through rusqlite (SQLite compiled in).
//!
//! One writer thread owns the write connection and runs whole units of work handed to it as
//! closures, many in one transaction (`engine`): a sign-in, a refresh lease, a recorded refresh
//! or a revocation is one unit, so the async side crosses to the writer once per operation, not
//! once per statement. Every group starts with `BEGIN IMMEDIATE`, so it holds the database's
//! write lock from its first read and a read-modify-write cannot lose an update to another
//! process on the same file (which waits up to [`conn::BUSY_TIMEOUT`]). Reads run on a few
//! reader threads, each with a query-only connection and its prepared statements cached, which
//! WAL lets run beside the writer. `synchronous = FULL` makes a commit durable before anyone is
//! answered: a refresh token, once received, must survive a crash that follows the answer.
//!
//! An in-memory database lives as long as its one connection, so there the writer's connection
//! serves reads too.

mod conn;
mod engine;
mod grants;
mod jobs;
mod migrate;
mod rotation;
mod transfer;
mod units;
mod users;

use crate::sql::{Arg, Engine, RowMap, Sql};
use crate::{Result, Store, StoreError};
use async_trait::async_trait;
use conn::Opener;
use engine::{Readers, Writer};
use rusqlite::Connection;
use std::fmt;
use std::path::PathBuf;

/// Reader threads per store: reads mostly come from SQLite's page cache, so a few threads keep
/// two cores busy; more would only add context switches.
const READERS: usize = 4;

/// grantkeeper's store on SQLite. Cloning shares the writer and the readers.
#[derive(Clone)]
pub struct SqliteStore {
    writer: Writer,
    /// None for an in-memory database: its one connection is the writer's.
    readers: Option<Readers>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("in_memory", &self.readers.is_none())
            .finish_non_exhaustive()
    }
}

/// Where a `sqlite:` URL points.
enum Target {
    Memory,
    File { path: PathBuf, create: bool },
}

fn parse_url(url: &str) -> Result<Target> {
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return Err(StoreError::Config(
            "store.url must start with sqlite: (sqlite://PATH or sqlite::memory:)".into(),
        ));
    };
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    let mut create = true;
    let mut memory = database == ":memory:";
    for param in params.split('&').filter(|p| !p.is_empty()) {
        match param.split_once('=') {
            Some(("mode", "rwc")) => create = true,
            Some(("mode", "rw")) => create = false,
            Some(("mode", "memory")) => memory = true,
            Some(("mode", other)) => {
                return Err(StoreError::Config(format!(
                    "store.url: SQLite mode {other:?} is not supported (rwc, rw or memory)"
                )));
            }
            _ => {
                return Err(StoreError::Config(format!(
                    "store.url: the SQLite parameter {param:?} is not supported (mode=rwc|rw)"
                )));
            }
        }
    }
    if memory {
        return Ok(Target::Memory);
    }
    if database.is_empty() {
        return Err(StoreError::Config(
            "store.url names no SQLite file: use sqlite://PATH".into(),
        ));
    }
    let path = percent_decode(database)
        .ok_or_else(|| StoreError::Config("store.url's path is not valid UTF-8".into()))?;
    Ok(Target::File {
        path: PathBuf::from(path),
        create,
    })
}

/// `%XX` escapes of a URL's path, as sqlx read them.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

impl SqliteStore {
    /// Opens `sqlite://PATH` (the file is created when missing; `?mode=rwc` is accepted,
    /// `?mode=rw` refuses to create it) or `sqlite::memory:`, and applies pending migrations.
    pub async fn open(url: &str) -> Result<SqliteStore> {
        let target = parse_url(url)?;
        let store = tokio::task::spawn_blocking(move || -> Result<SqliteStore> {
            match target {
                Target::Memory => {
                    let conn = conn::open_memory()?;
                    migrate::migrate(&conn)?;
                    let opener = Opener {
                        path: PathBuf::from(":memory:"),
                        create: false,
                        read_only: false,
                    };
                    Ok(SqliteStore {
                        writer: Writer::start(conn, opener)?,
                        readers: None,
                    })
                }
                Target::File { path, create } => {
                    if create {
                        create_private(&path)?;
                    }
                    let opener = Opener {
                        path,
                        create,
                        read_only: false,
                    };
                    let conn: Connection = opener.open()?;
                    migrate::migrate(&conn)?;
                    // The file exists now: readers never create it.
                    let readers = Readers::start(READERS, opener.reader())?;
                    Ok(SqliteStore {
                        writer: Writer::start(conn, opener)?,
                        readers: Some(readers),
                    })
                }
            }
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("opening the SQLite store failed: {e}")))??;
        Ok(store)
    }

    /// Applies pending migrations; does nothing when the schema is current (as it is once
    /// [`SqliteStore::open`] returned).
    pub async fn migrate(&self) -> Result<()> {
        self.write(migrate::apply).await
    }

    /// Runs `read` on a reader thread.
    pub(super) async fn read<T, F>(&self, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        match &self.readers {
            Some(readers) => readers.run(read).await,
            None => self.writer.run(read, false).await,
        }
    }

    /// Runs `unit` on the writer, in a group commit; answered once flushed to disk.
    pub(super) async fn write<T, F>(&self, unit: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.writer.run(unit, true).await
    }

    /// As [`SqliteStore::write`], for a unit that may be lost to a power loss (never one that
    /// holds a refresh token): answered once committed, flushed with a later commit.
    pub(super) async fn write_lazy<T, F>(&self, unit: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.writer.run(unit, false).await
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

#[async_trait]
impl Engine for SqliteStore {
    const API_KEY_INSERTION_ORDER: &'static str = "rowid";
    // SQLite's lower() folds ASCII letters only.
    const ASCII_LOWER_EMAIL: &'static str = "lower(u.email)";

    async fn read_rows<T: Send + 'static>(
        &self,
        sql: Sql,
        args: Vec<Arg>,
        map: RowMap<T>,
    ) -> Result<Vec<T>> {
        self.read(move |c| conn::rows(c, &sql, &args, map)).await
    }

    async fn write_rows<T: Send + 'static>(
        &self,
        sql: Sql,
        args: Vec<Arg>,
        map: RowMap<T>,
    ) -> Result<Vec<T>> {
        self.write(move |c| conn::rows(c, &sql, &args, map)).await
    }

    async fn execute(&self, sql: Sql, args: Vec<Arg>) -> Result<u64> {
        self.write(move |c| conn::execute(c, &sql, &args)).await
    }

    async fn execute_all(&self, statements: Vec<(Sql, Vec<Arg>)>) -> Result<Vec<u64>> {
        self.write(move |c| {
            statements
                .iter()
                .map(|(sql, args)| conn::execute(c, sql, args))
                .collect()
        })
        .await
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<()> {
        self.read(|c| conn::scalar::<i64>(c, "SELECT 1", &[]).map(drop))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `PRAGMA synchronous` as a unit of the writer sees it (2 = FULL, 1 = NORMAL).
    async fn synchronous_in_group(store: &SqliteStore, durable: bool) -> i64 {
        let unit = |c: &Connection| conn::scalar::<i64>(c, "PRAGMA synchronous", &[]);
        if durable {
            store.write(unit).await.unwrap()
        } else {
            store.write_lazy(unit).await.unwrap()
        }
    }

    #[tokio::test]
    async fn only_lazy_groups_skip_the_flush_and_the_writer_flushes_again_after_them() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("group.db").display());
        let store = SqliteStore::open(&url).await.unwrap();
        assert_eq!(synchronous_in_group(&store, true).await, 2);
        assert_eq!(synchronous_in_group(&store, false).await, 1);
        assert_eq!(synchronous_in_group(&store, true).await, 2);
        // Queued together, a durable unit makes its whole group durable.
        let mut writes = tokio::task::JoinSet::new();
        for i in 0..40 {
            let store = store.clone();
            writes.spawn(async move { (i, synchronous_in_group(&store, i % 8 != 0).await) });
        }
        while let Some(done) = writes.join_next().await {
            let (i, mode) = done.unwrap();
            if i % 8 != 0 {
                assert_eq!(mode, 2, "durable unit {i}");
            }
        }
    }

    #[tokio::test]
    async fn a_failing_unit_rolls_back_alone_and_the_others_commit() {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        store
            .write(|c| conn::execute(c, "CREATE TABLE t (x INTEGER PRIMARY KEY)", &[]))
            .await
            .unwrap();
        let mut units = tokio::task::JoinSet::new();
        for i in 0..20_i64 {
            let store = store.clone();
            units.spawn(async move {
                store
                    .write(move |c| {
                        conn::execute(c, "INSERT INTO t (x) VALUES ($1)", &args![i])?;
                        if i % 5 == 0 {
                            // Written, then refused: its savepoint is rolled back.
                            return Err(StoreError::Conflict);
                        }
                        Ok(())
                    })
                    .await
            });
        }
        let mut refused = 0;
        while let Some(done) = units.join_next().await {
            if done.unwrap().is_err() {
                refused += 1;
            }
        }
        assert_eq!(refused, 4);
        let held: i64 = store
            .read(|c| conn::scalar(c, "SELECT COUNT(*) FROM t", &[]))
            .await
            .unwrap();
        assert_eq!(held, 16);
    }

    #[test]
    fn urls() {
        assert!(matches!(parse_url("sqlite::memory:"), Ok(Target::Memory)));
        assert!(matches!(
            parse_url("sqlite://a%20b.db?mode=rw"),
            Ok(Target::File { path, create: false }) if path == std::path::Path::new("a b.db")
        ));
        assert!(matches!(
            parse_url("sqlite:///var/gk.db"),
            Ok(Target::File { path, create: true }) if path == std::path::Path::new("/var/gk.db")
        ));
        assert!(matches!(
            parse_url("sqlite://x.db?mode=ro"),
            Err(StoreError::Config(_))
        ));
        assert!(matches!(
            parse_url("postgres://x"),
            Err(StoreError::Config(_))
        ));
    }
}
