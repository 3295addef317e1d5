//! SQLite connections: how each is opened, statements run on it with the shared [`Arg`] lists,
//! rows read back through [`Columns`], and SQLite's failures translated into [`StoreError`].

use crate::rows::Columns;
use crate::sql::Arg;
use crate::{Result, StoreError};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode, MAIN_DB, OpenFlags, ToSql};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

/// How long a statement waits for another process's write lock before giving up.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Prepared statements each connection keeps.
const STATEMENT_CACHE: usize = 128;
/// Switching a new file to WAL takes a lock that the busy handler does not wait for, so
/// processes opening one new file together retry the first connection a few times.
const OPEN_ATTEMPTS: u32 = 50;
const OPEN_RETRY_DELAY: Duration = Duration::from_millis(100);
/// The writer's page cache and its checkpoints. With SQLite's defaults (a 2 MB cache, a
/// checkpoint every 1,000 WAL pages) a sign-in read about three pages back from the database
/// file that the cache had dropped, and the checkpoints, run in the writer's commits, copied
/// about three more from the WAL into the database: the same hot pages (the users', grants'
/// and sessions' and their indexes') again at every checkpoint. A 16 MiB cache keeps them, and
/// a checkpoint every 4,000 pages (a WAL of about 16 MiB) copies each of them once for four
/// times as many commits. Durability is unchanged: a commit is durable when its WAL frames
/// are flushed (`synchronous = FULL`); a checkpoint only moves committed pages.
const WRITER_SETTINGS: &str = "PRAGMA cache_size = -16384; PRAGMA wal_autocheckpoint = 4000;";

/// Opens connections to one database, each set up the same way.
#[derive(Clone, Debug)]
pub(super) struct Opener {
    pub path: PathBuf,
    /// The file is created when missing.
    pub create: bool,
    /// Readers: `query_only`, so that no write can bypass the writer's lock by mistake.
    pub read_only: bool,
}

impl Opener {
    pub(super) fn reader(&self) -> Opener {
        Opener {
            create: false,
            read_only: true,
            ..self.clone()
        }
    }

    /// A connection with the store's settings, retried while another process switches a new
    /// file to WAL.
    pub(super) fn open(&self) -> Result<Connection> {
        let mut attempt = 1;
        loop {
            match self.open_once() {
                // SQLite opens a file it may not write read-only, without a word: the writer
                // would then fail every unit. Refused here, the next unit opens it again.
                Ok(conn) if !self.read_only && conn.is_readonly(MAIN_DB).unwrap_or(true) => {
                    return Err(StoreError::Unavailable(
                        "the database file cannot be written (read-only file or file system)"
                            .into(),
                    ));
                }
                Ok(conn) => return Ok(conn),
                Err(e) if is_busy(&e) && attempt < OPEN_ATTEMPTS => {
                    attempt += 1;
                    std::thread::sleep(OPEN_RETRY_DELAY);
                }
                Err(e) => return Err(map_sqlite(e)),
            }
        }
    }

    fn open_once(&self) -> rusqlite::Result<Connection> {
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if self.create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let conn = Connection::open_with_flags(&self.path, flags)?;
        setup(&conn)?;
        conn.execute_batch("PRAGMA journal_mode = WAL")?;
        if self.read_only {
            conn.execute_batch("PRAGMA query_only = ON")?;
        } else {
            conn.execute_batch(WRITER_SETTINGS)?;
        }
        Ok(conn)
    }
}

/// An in-memory database: one connection for the life of the store.
pub(super) fn open_memory() -> Result<Connection> {
    let conn = Connection::open_in_memory().map_err(map_sqlite)?;
    setup(&conn).map_err(map_sqlite)?;
    Ok(conn)
}

/// `synchronous = FULL` makes a commit durable before it returns: a refresh token, once
/// received, must survive a crash that follows the answer.
fn setup(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;")
}

impl ToSql for Arg {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Arg::Text(Some(text)) => ValueRef::Text(text.as_bytes()),
            Arg::Int(Some(int)) => ValueRef::Integer(*int),
            Arg::Bytes(Some(bytes)) => ValueRef::Blob(bytes),
            Arg::Bool(flag) => ValueRef::Integer(i64::from(*flag)),
            Arg::Text(None) | Arg::Int(None) | Arg::Bytes(None) => ValueRef::Null,
        }))
    }
}

/// A prepared statement with `args` bound: `$N` (or `?N`) takes `args[N - 1]`, so that one text
/// serves both backends whatever order its placeholders come in.
fn bound<'c>(
    conn: &'c Connection,
    sql: &str,
    args: &[Arg],
) -> Result<rusqlite::CachedStatement<'c>> {
    let mut statement = conn.prepare_cached(sql).map_err(map_sqlite)?;
    let numbers = placeholder_numbers(&statement, sql);
    for (index, &number) in (1..=statement.parameter_count()).zip(numbers.iter()) {
        let arg = number
            .checked_sub(1)
            .and_then(|i| args.get(i))
            .ok_or_else(|| StoreError::Database(format!("no value for parameter {number}")))?;
        statement
            .raw_bind_parameter(index, arg)
            .map_err(map_sqlite)?;
    }
    Ok(statement)
}

/// Distinct statement texts whose placeholder numbers a thread remembers; past this, it starts
/// over (the texts are the store's own, a few hundred at most).
const PLACEHOLDER_MEMORY: usize = 512;

thread_local! {
    static PLACEHOLDERS: RefCell<HashMap<Box<str>, Rc<[usize]>>> = RefCell::new(HashMap::new());
}

/// The number `N` of each parameter of `statement` (prepared from `sql`), in SQLite's order.
/// SQLite looks a parameter's name up by walking the statement's list of names, so asking for
/// every name costs the square of their count: a third of the writer's time, with the audit
/// INSERT's 1,024 values (BENCHMARKS.md). Each thread asks once per statement text.
fn placeholder_numbers(statement: &rusqlite::Statement<'_>, sql: &str) -> Rc<[usize]> {
    PLACEHOLDERS.with_borrow_mut(|known| {
        if let Some(numbers) = known.get(sql) {
            return Rc::clone(numbers);
        }
        let numbers: Rc<[usize]> = (1..=statement.parameter_count())
            .map(|index| {
                statement
                    .parameter_name(index)
                    .and_then(|name| name.get(1..))
                    .and_then(|digits| digits.parse::<usize>().ok())
                    .unwrap_or(index)
            })
            .collect();
        if known.len() >= PLACEHOLDER_MEMORY {
            known.clear();
        }
        known.insert(sql.into(), Rc::clone(&numbers));
        numbers
    })
}

/// Runs a statement; how many rows it changed.
pub(super) fn execute(conn: &Connection, sql: &str, args: &[Arg]) -> Result<u64> {
    let mut statement = bound(conn, sql, args)?;
    let changed = statement.raw_execute().map_err(map_sqlite)?;
    Ok(changed as u64)
}

/// The rows a statement answers, each read by `map`.
pub(super) fn rows<T>(
    conn: &Connection,
    sql: &str,
    args: &[Arg],
    mut map: impl FnMut(&dyn Columns) -> Result<T>,
) -> Result<Vec<T>> {
    let mut statement = bound(conn, sql, args)?;
    let mut rows = statement.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(map_sqlite)? {
        out.push(map(&Named::new(row))?);
    }
    Ok(out)
}

/// The first row a statement answers, if any.
pub(super) fn one<T>(
    conn: &Connection,
    sql: &str,
    args: &[Arg],
    map: impl FnOnce(&dyn Columns) -> Result<T>,
) -> Result<Option<T>> {
    let mut statement = bound(conn, sql, args)?;
    let mut rows = statement.raw_query();
    match rows.next().map_err(map_sqlite)? {
        Some(row) => map(&Named::new(row)).map(Some),
        None => Ok(None),
    }
}

/// The first column of the first row, which must be there (`COUNT`, `EXISTS`, `MAX`).
pub(super) fn scalar<T: rusqlite::types::FromSql>(
    conn: &Connection,
    sql: &str,
    args: &[Arg],
) -> Result<T> {
    let mut statement = bound(conn, sql, args)?;
    let mut rows = statement.raw_query();
    match rows.next().map_err(map_sqlite)? {
        Some(row) => row
            .get(0)
            .map_err(|_| StoreError::Corrupt("a computed value could not be decoded".into())),
        None => Err(StoreError::NotFound),
    }
}

/// A row whose columns are looked up by name, each search starting after the column found
/// last. The readers ask for columns in the order their statements list them, so a column is
/// found at the first name compared; rusqlite's own lookup by name compares every name from the
/// first column on, which made reading a grant with its user a few hundred comparisons.
struct Named<'a, 'r> {
    row: &'a rusqlite::Row<'r>,
    next: Cell<usize>,
}

impl<'a, 'r> Named<'a, 'r> {
    fn new(row: &'a rusqlite::Row<'r>) -> Self {
        Named {
            row,
            next: Cell::new(0),
        }
    }

    /// The position of `column`, compared as SQLite compares names (ASCII case ignored).
    fn index(&self, column: &str) -> Option<usize> {
        let statement: &rusqlite::Statement<'_> = self.row.as_ref();
        let count = statement.column_count();
        let start = self.next.get().min(count);
        let found = (start..count).chain(0..start).find(|&i| {
            statement
                .column_name(i)
                .is_ok_and(|name| name.eq_ignore_ascii_case(column))
        })?;
        self.next.set(found + 1);
        Some(found)
    }
}

impl_columns!(Named<'_, '_>, get);

fn get<T: rusqlite::types::FromSql>(row: &Named<'_, '_>, column: &'static str) -> Result<T> {
    let index = row
        .index(column)
        .ok_or_else(|| StoreError::Corrupt(format!("{column} is missing")))?;
    // Only the column is named: a decode error may quote the value.
    row.row
        .get(index)
        .map_err(|_| StoreError::Corrupt(format!("{column} could not be decoded")))
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// True when the connection itself is in doubt: it is opened again before its next use.
pub(super) fn is_fault(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(
            ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::CannotOpen
                | ErrorCode::ReadOnly
        )
    )
}

/// The message of migration 0011's refusal of a value sealed under a key that is not active.
const SEALED_UNDER_INACTIVE_KEY: &str = "sealed_under_inactive_key";

// Extended result codes of constraint failures (sqlite3.h).
const SQLITE_CONSTRAINT_FOREIGNKEY: i32 = 787;
const SQLITE_CONSTRAINT_PRIMARYKEY: i32 = 1555;
const SQLITE_CONSTRAINT_UNIQUE: i32 = 2067;

/// The one translation of SQLite's failures into the store's terms. SQLite's messages name
/// tables, columns and constraints, never bound values, so they may be kept; decode failures
/// keep only the column's name.
pub(crate) fn map_sqlite(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
        rusqlite::Error::SqliteFailure(code, message) => {
            let message = message.unwrap_or_else(|| code.to_string());
            // Migration 0011's trigger: a value sealed under a key that is not active.
            if message == SEALED_UNDER_INACTIVE_KEY {
                return StoreError::InactiveKey;
            }
            match code.extended_code {
                SQLITE_CONSTRAINT_PRIMARYKEY | SQLITE_CONSTRAINT_UNIQUE => {
                    return StoreError::AlreadyExists;
                }
                // Only inserts meet it here: the row they point at does not exist.
                SQLITE_CONSTRAINT_FOREIGNKEY => return StoreError::NotFound,
                _ => {}
            }
            match code.code {
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                    StoreError::Unavailable(format!("database is busy: {message}"))
                }
                ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::CannotOpen
                | ErrorCode::ReadOnly => StoreError::Unavailable(message),
                ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                    StoreError::Corrupt(message)
                }
                _ => StoreError::Database(format!("{message} (code {})", code.extended_code)),
            }
        }
        rusqlite::Error::FromSqlConversionFailure(index, ..)
        | rusqlite::Error::InvalidColumnType(index, ..) => {
            StoreError::Corrupt(format!("column {index} could not be decoded"))
        }
        rusqlite::Error::IntegralValueOutOfRange(index, _) => {
            StoreError::Corrupt(format!("column {index} is out of range"))
        }
        other => StoreError::Database(other.to_string()),
    }
}
