//! Group commit: the small, frequent writes of refreshes, refresh leases, sign-ins and sessions,
//! made by many tasks at once, share write transactions.
//!
//! With `synchronous = FULL` every commit waits for the disk to flush the WAL, and one flush
//! costs far more than the statements it makes durable. Callers hand their write to one
//! committer task and wait; the committer takes every write queued meanwhile (at most
//! [`MAX_GROUP`]), runs each in a savepoint of one `BEGIN IMMEDIATE` transaction, commits
//! once, and only then answers each caller. A write that fails is rolled back to its savepoint
//! alone and answered with its error; a commit that fails answers every write of the group with
//! it, and none of them took effect. Nobody is answered before their write is durable, so a
//! refresh token is as safe as with a transaction of its own.
//!
//! A lone write is committed at once: the group is whatever queued while the previous commit
//! was flushing, so grouping adds no wait of its own.
//!
//! Some writes need not survive a power loss: a refresh lease (it runs out by itself) and an
//! access token without a new refresh token (a refresh gets another). A group made only of
//! such [`GroupCommit::write_lazy`] writes commits with `synchronous = NORMAL`: atomic and at
//! once visible to every reader, made durable by the next flush of the WAL instead of its own.
//! The connection is set back to `FULL` before anything else uses it, and a group with one
//! durable write is flushed as before.

use super::map_sqlx;
use crate::{Result, StoreError};
use sqlx::{SqliteConnection, SqlitePool};
use std::future::Future;
use std::pin::Pin;
use tokio::sync::{mpsc, oneshot};

/// Most writes in one transaction (bounds the time a commit holds the write lock).
const MAX_GROUP: usize = 256;
/// Writes waiting for the committer; callers past this wait to queue.
const QUEUE: usize = 1024;

type Boxed<'c, T> = Pin<Box<dyn Future<Output = T> + Send + 'c>>;
/// Hands the commit's outcome to the caller.
type Deliver = Box<dyn FnOnce(Result<()>) + Send>;
/// One caller's write: runs in the group's transaction (or, given why the transaction cannot
/// run it, does not), says whether it succeeded, and how to answer once the commit is known.
type Run = Box<
    dyn for<'c> FnOnce(
            std::result::Result<&'c mut SqliteConnection, StoreError>,
        ) -> Boxed<'c, (bool, Deliver)>
        + Send,
>;

struct Write {
    run: Run,
    /// Must be flushed to disk before its caller is answered.
    durable: bool,
}

/// The handle callers queue writes on. Cheap to clone; the committer ends when the last clone
/// is dropped.
#[derive(Clone, Debug)]
pub(super) struct GroupCommit {
    writes: mpsc::Sender<Write>,
}

impl GroupCommit {
    /// Starts the committer on the store's write pool.
    pub(super) fn start(pool: SqlitePool) -> GroupCommit {
        let (writes, queued) = mpsc::channel(QUEUE);
        tokio::spawn(committer(pool, queued));
        GroupCommit { writes }
    }

    /// Runs `write` in a group's transaction; its answer once the group is committed and
    /// flushed to disk.
    pub(super) async fn write<T, F>(&self, write: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> Boxed<'c, Result<T>> + Send + 'static,
    {
        self.queue(write, true).await
    }

    /// As [`GroupCommit::write`], for a write that may be lost to a power loss (never one that
    /// holds a refresh token): answered once committed, flushed with a later commit.
    pub(super) async fn write_lazy<T, F>(&self, write: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> Boxed<'c, Result<T>> + Send + 'static,
    {
        self.queue(write, false).await
    }

    /// [`GroupCommit::write`] when `durable`, else [`GroupCommit::write_lazy`].
    pub(super) async fn queue<T, F>(&self, write: F, durable: bool) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> Boxed<'c, Result<T>> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel::<Result<T>>();
        let run: Run = Box::new(move |conn| {
            Box::pin(async move {
                let result = match conn {
                    Ok(conn) => write(conn).await,
                    Err(e) => {
                        let deliver: Deliver = Box::new(move |_| {
                            let _ = answer.send(Err(e));
                        });
                        return (false, deliver);
                    }
                };
                let ok = result.is_ok();
                let deliver: Deliver = Box::new(move |committed: Result<()>| {
                    // The caller may have stopped waiting; what was committed stays.
                    let _ = answer.send(committed.and(result));
                });
                (ok, deliver)
            })
        });
        self.writes
            .send(Write { run, durable })
            .await
            .map_err(|_| StoreError::Unavailable("the store's committer has stopped".into()))?;
        answered.await.map_err(|_| {
            StoreError::Unavailable("the store's committer stopped before answering".into())
        })?
    }
}

async fn committer(pool: SqlitePool, mut queued: mpsc::Receiver<Write>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while queued.recv_many(&mut group, MAX_GROUP).await > 0 {
        let delivered = commit_group(&pool, &mut group).await;
        for (deliver, outcome) in delivered {
            deliver(outcome);
        }
    }
}

/// Runs and commits `group` (emptying it); what to deliver to each caller.
async fn commit_group(pool: &SqlitePool, group: &mut Vec<Write>) -> Vec<(Deliver, Result<()>)> {
    let mut delivered: Vec<(Deliver, Result<()>)> = Vec::with_capacity(group.len());
    let lazy = group.iter().all(|w| !w.durable);
    let mut conn = match pool.acquire().await {
        Ok(conn) => conn,
        Err(e) => {
            answer_unrun(group, map_sqlx(e), &mut delivered).await;
            return delivered;
        }
    };
    if lazy
        && let Err(e) = sqlx::query("PRAGMA synchronous = NORMAL")
            .execute(&mut *conn)
            .await
    {
        answer_unrun(group, map_sqlx(e), &mut delivered).await;
        return delivered;
    }
    run_group(&mut conn, group, &mut delivered).await;
    if lazy
        && let Err(e) = sqlx::query("PRAGMA synchronous = FULL")
            .execute(&mut *conn)
            .await
    {
        // Never hand a connection that would not flush back to the pool.
        tracing::warn!(error = %e, "could not restore synchronous = FULL; closing the connection");
        conn.close_on_drop();
    }
    delivered
}

/// Nothing runs: each write is answered with why.
async fn answer_unrun(
    group: &mut Vec<Write>,
    e: StoreError,
    delivered: &mut Vec<(Deliver, Result<()>)>,
) {
    for write in group.drain(..) {
        let (_, deliver) = (write.run)(Err(e.clone())).await;
        delivered.push((deliver, Ok(())));
    }
}

async fn run_group(
    conn: &mut SqliteConnection,
    group: &mut Vec<Write>,
    delivered: &mut Vec<(Deliver, Result<()>)>,
) {
    let mut tx = match sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(e) => {
            answer_unrun(group, map_sqlx(e), delivered).await;
            return;
        }
    };
    let mut ran: Vec<Deliver> = Vec::with_capacity(group.len());
    let mut broken: Option<StoreError> = None;
    for write in group.drain(..) {
        if broken.is_none()
            && let Err(e) = sqlx::query("SAVEPOINT grouped").execute(&mut *tx).await
        {
            broken = Some(map_sqlx(e));
        }
        if let Some(e) = &broken {
            // The transaction cannot go on: answered with why, not run.
            let (_, deliver) = (write.run)(Err(e.clone())).await;
            delivered.push((deliver, Ok(())));
            continue;
        }
        let (ok, deliver) = (write.run)(Ok(&mut tx)).await;
        // A failed write leaves nothing behind; the others keep theirs.
        let end: &[&'static str] = if ok {
            &["RELEASE grouped"]
        } else {
            &["ROLLBACK TO grouped", "RELEASE grouped"]
        };
        for &statement in end {
            if broken.is_none()
                && let Err(e) = sqlx::query(statement).execute(&mut *tx).await
            {
                broken = Some(map_sqlx(e));
            }
        }
        ran.push(deliver);
    }
    let outcome = match broken {
        Some(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
        None => tx.commit().await.map_err(map_sqlx),
    };
    delivered.extend(ran.into_iter().map(|d| (d, outcome.clone())));
}
