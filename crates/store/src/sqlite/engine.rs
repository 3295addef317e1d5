//! The threads that own SQLite's connections: one writer, running whole units of work in group
//! commits, and a few readers. The async side hands each a closure and awaits one answer, so an
//! operation crosses a thread boundary once, however many statements it runs.
//!
//! Group commit: with `synchronous = FULL` every commit waits for the disk to flush the WAL, and
//! one flush costs far more than the statements it makes durable. The writer takes every unit
//! queued meanwhile (at most [`MAX_GROUP`]), runs each in a savepoint of one `BEGIN IMMEDIATE`
//! transaction, commits once, and only then answers each caller. A unit that fails is rolled
//! back to its savepoint alone and answered with its error; a commit that fails answers every
//! unit of the group with it, and none of them took effect. Nobody is answered before their
//! write is durable, so a refresh token is as safe as with a transaction of its own. A lone unit
//! is committed at once: the group is whatever queued while the previous commit was flushing.
//!
//! Some writes need not survive a power loss: a refresh lease (it runs out by itself) and an
//! access token without a new refresh token (a refresh gets another). A group made only of such
//! lazy units commits with `synchronous = NORMAL`: atomic and at once visible to every reader,
//! made durable by the next flush of the WAL instead of its own. The connection is set back to
//! `FULL` before anything else uses it, and a group with one durable unit is flushed as before.
//!
//! Faults: a unit or commit that fails because the database cannot be written (a full disk, a
//! read-only or vanished file, an I/O error) is answered with [`StoreError::Unavailable`], and
//! the thread opens its connection again before its next unit, so that once the fault clears
//! the store works again without a restart.

use super::conn::{Opener, is_fault, map_sqlite};
use crate::{Result, StoreError};
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

/// Most units in one transaction (bounds the time a commit holds the write lock).
const MAX_GROUP: usize = 256;
/// Units waiting for the writer; callers past this wait to queue.
const QUEUE: usize = 1024;

/// What a unit's run tells the writer: whether it succeeded, whether its failure says the
/// connection should be opened again, and how to answer once the commit is known.
struct Ran {
    ok: bool,
    fault: bool,
    deliver: Box<dyn FnOnce(Result<()>) + Send>,
}

/// One caller's unit: runs in the group's transaction (or, given why the transaction cannot run
/// it, does not).
type Run = Box<dyn FnOnce(std::result::Result<&Connection, StoreError>) -> Ran + Send>;

struct Unit {
    run: Run,
    /// Must be flushed to disk before its caller is answered.
    durable: bool,
}

/// The handle callers queue units on. Cheap to clone; the writer thread ends when the last clone
/// is dropped.
#[derive(Clone, Debug)]
pub(super) struct Writer {
    units: mpsc::Sender<Unit>,
}

impl Writer {
    /// Starts the writer thread on `conn` (already migrated); `opener` opens it again after a
    /// fault.
    pub(super) fn start(conn: Connection, opener: Opener) -> Result<Writer> {
        let (units, queued) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer(Some(conn), opener, queued))
            .map_err(|e| StoreError::Unavailable(format!("no thread for SQLite's writer: {e}")))?;
        Ok(Writer { units })
    }

    /// Runs `unit` in a group's transaction; its answer once the group is committed and, when
    /// `durable`, flushed to disk.
    pub(super) async fn run<T, F>(&self, unit: F, durable: bool) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel::<Result<T>>();
        let run: Run = Box::new(move |conn| match conn {
            Ok(conn) => {
                let result = unit(conn);
                let ok = result.is_ok();
                let fault = matches!(result, Err(StoreError::Unavailable(_)));
                Ran {
                    ok,
                    fault,
                    deliver: Box::new(move |committed: Result<()>| {
                        // The caller may have stopped waiting; what was committed stays.
                        let _ = answer.send(committed.and(result));
                    }),
                }
            }
            Err(e) => Ran {
                ok: false,
                fault: false,
                deliver: Box::new(move |_| {
                    let _ = answer.send(Err(e));
                }),
            },
        });
        self.units
            .send(Unit { run, durable })
            .await
            .map_err(|_| StoreError::Unavailable("the store's writer has stopped".into()))?;
        answered.await.map_err(|_| {
            StoreError::Unavailable("the store's writer stopped before answering".into())
        })?
    }
}

fn writer(mut conn: Option<Connection>, opener: Opener, mut queued: mpsc::Receiver<Unit>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = queued.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match queued.try_recv() {
                Ok(unit) => group.push(unit),
                Err(_) => break,
            }
        }
        if conn.is_none() {
            match opener.open() {
                Ok(opened) => conn = Some(opened),
                Err(e) => {
                    tracing::warn!(error = %e, "SQLite's writer could not open the database");
                    for unit in group.drain(..) {
                        ((unit.run)(Err(e.clone())).deliver)(Ok(()));
                    }
                    continue;
                }
            }
        }
        let Some(open) = conn.as_ref() else { continue };
        let (delivered, fault) = commit_group(open, &mut group);
        if fault {
            // Opened again before the next unit: a file made writable again, or given room,
            // works without a restart.
            tracing::warn!("SQLite's writer met a fault; its connection will be opened again");
            conn = None;
        }
        for (deliver, outcome) in delivered {
            deliver(outcome);
        }
    }
}

type Delivered = Vec<(Box<dyn FnOnce(Result<()>) + Send>, Result<()>)>;

/// Runs and commits `group` (emptying it): what to deliver to each caller, and whether the
/// connection met a fault.
fn commit_group(conn: &Connection, group: &mut Vec<Unit>) -> (Delivered, bool) {
    let mut delivered: Delivered = Vec::with_capacity(group.len());
    let lazy = group.iter().all(|u| !u.durable);
    if lazy && let Err(e) = conn.execute_batch("PRAGMA synchronous = NORMAL") {
        let fault = is_fault(&e);
        answer_unrun(group, map_sqlite(e), &mut delivered);
        return (delivered, fault);
    }
    let mut fault = run_group(conn, group, &mut delivered);
    if lazy && let Err(e) = conn.execute_batch("PRAGMA synchronous = FULL") {
        // Never keep a connection that would not flush.
        tracing::warn!(error = %e, "could not restore synchronous = FULL");
        fault = true;
    }
    (delivered, fault)
}

/// Nothing runs: each unit is answered with why.
fn answer_unrun(group: &mut Vec<Unit>, e: StoreError, delivered: &mut Delivered) {
    for unit in group.drain(..) {
        delivered.push(((unit.run)(Err(e.clone())).deliver, Ok(())));
    }
}

fn step(conn: &Connection, sql: &str) -> std::result::Result<(), rusqlite::Error> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

fn run_group(conn: &Connection, group: &mut Vec<Unit>, delivered: &mut Delivered) -> bool {
    if let Err(e) = step(conn, "BEGIN IMMEDIATE") {
        let fault = is_fault(&e);
        answer_unrun(group, map_sqlite(e), delivered);
        return fault;
    }
    let mut ran: Vec<Box<dyn FnOnce(Result<()>) + Send>> = Vec::with_capacity(group.len());
    let mut broken: Option<rusqlite::Error> = None;
    let mut fault = false;
    for unit in group.drain(..) {
        if broken.is_none()
            && let Err(e) = step(conn, "SAVEPOINT unit")
        {
            broken = Some(e);
        }
        if let Some(e) = &broken {
            // The transaction cannot go on: answered with why, not run.
            delivered.push(((unit.run)(Err(map_sqlite_ref(e))).deliver, Ok(())));
            continue;
        }
        let done = (unit.run)(Ok(conn));
        fault |= done.fault;
        // A failed unit leaves nothing behind; the others keep theirs.
        let end: &[&str] = if done.ok {
            &["RELEASE unit"]
        } else {
            &["ROLLBACK TO unit", "RELEASE unit"]
        };
        for statement in end {
            if broken.is_none()
                && let Err(e) = step(conn, statement)
            {
                broken = Some(e);
            }
        }
        ran.push(done.deliver);
    }
    let outcome = match broken {
        Some(e) => {
            fault |= is_fault(&e);
            rollback(conn);
            Err(map_sqlite(e))
        }
        None => match step(conn, "COMMIT") {
            Ok(()) => Ok(()),
            Err(e) => {
                fault |= is_fault(&e);
                rollback(conn);
                Err(map_sqlite(e))
            }
        },
    };
    delivered.extend(ran.into_iter().map(|d| (d, outcome.clone())));
    fault
}

/// Ends a transaction that failed, if SQLite has not ended it already.
fn rollback(conn: &Connection) {
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
}

fn map_sqlite_ref(e: &rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(code, message) => {
            map_sqlite(rusqlite::Error::SqliteFailure(*code, message.clone()))
        }
        other => StoreError::Database(other.to_string()),
    }
}

/// A job of a reader: runs on a read connection (or is told why there is none) and says
/// whether the connection met a fault.
type ReadJob = Box<dyn FnOnce(std::result::Result<&Connection, StoreError>) -> bool + Send>;

/// The reader threads, each with its own query-only connection and cache of prepared
/// statements, taking jobs from one queue.
#[derive(Clone, Debug)]
pub(super) struct Readers {
    jobs: crossbeam_channel::Sender<ReadJob>,
}

impl Readers {
    pub(super) fn start(count: usize, opener: Opener) -> Result<Readers> {
        let (jobs, queued) = crossbeam_channel::unbounded::<ReadJob>();
        for n in 0..count {
            let queued = queued.clone();
            let opener = opener.clone();
            std::thread::Builder::new()
                .name(format!("sqlite-reader-{n}"))
                .spawn(move || reader(opener, queued))
                .map_err(|e| {
                    StoreError::Unavailable(format!("no thread for SQLite's readers: {e}"))
                })?;
        }
        Ok(Readers { jobs })
    }

    pub(super) async fn run<T, F>(&self, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel::<Result<T>>();
        let job: ReadJob = Box::new(move |conn| {
            let result = conn.and_then(read);
            let fault = matches!(result, Err(StoreError::Unavailable(_)));
            let _ = answer.send(result);
            fault
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Unavailable("the store's readers have stopped".into()))?;
        answered.await.map_err(|_| {
            StoreError::Unavailable("the store's reader stopped before answering".into())
        })?
    }
}

fn reader(opener: Opener, queued: crossbeam_channel::Receiver<ReadJob>) {
    let mut conn: Option<Connection> = None;
    while let Ok(job) = queued.recv() {
        if conn.is_none() {
            match opener.open() {
                Ok(opened) => conn = Some(opened),
                Err(e) => {
                    job(Err(e));
                    continue;
                }
            }
        }
        let Some(open) = conn.as_ref() else { continue };
        if job(Ok(open)) {
            conn = None;
        }
    }
}
