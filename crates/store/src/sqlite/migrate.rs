//! SQLite's migrations: embedded, versioned, applied in one transaction.
//!
//! The record of what was applied is the table `_sqlx_migrations`, in the shape sqlx's migrator
//! gave it (a version, its description, whether it succeeded, the SHA-384 of its text, how long
//! it took), so that a database made when the store ran on sqlx opens and migrates as any other:
//! its applied migrations are recognised by version and checksum, and the new ones are applied.

use super::conn::map_sqlite;
use crate::{Result, StoreError};
use aws_lc_rs::digest;
use grantkeeper_core::Stopwatch;
use rusqlite::{Connection, params};

/// The migrations of this backend, in order. Each runs once, inside the one transaction that
/// [`migrate`] holds, so none may contain `VACUUM` or change `foreign_keys`. An applied file
/// must never change (its checksum is kept); add a new one instead.
pub(super) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "offline access",
        include_str!("../../migrations/sqlite/0002_offline_access.sql"),
    ),
    (
        3,
        "instances",
        include_str!("../../migrations/sqlite/0003_instances.sql"),
    ),
    (
        4,
        "activity",
        include_str!("../../migrations/sqlite/0004_activity.sql"),
    ),
    (
        5,
        "admin sessions",
        include_str!("../../migrations/sqlite/0005_admin_sessions.sql"),
    ),
    (
        6,
        "cross-account protection",
        include_str!("../../migrations/sqlite/0006_risc.sql"),
    ),
    (
        7,
        "key rotation",
        include_str!("../../migrations/sqlite/0007_key_rotation.sql"),
    ),
    (
        8,
        "pending revocations",
        include_str!("../../migrations/sqlite/0008_pending_revocations.sql"),
    ),
    (
        9,
        "audit counts",
        include_str!("../../migrations/sqlite/0009_audit_times.sql"),
    ),
    (
        10,
        "export order",
        include_str!("../../migrations/sqlite/0010_export_order.sql"),
    ),
    (
        11,
        "sealing key",
        include_str!("../../migrations/sqlite/0011_sealing_key.sql"),
    ),
    (
        13,
        "grant counts",
        include_str!("../../migrations/sqlite/0013_grant_counts.sql"),
    ),
    (
        19,
        "master key sources",
        include_str!("../../migrations/sqlite/0019_wrapped_by.sql"),
    ),
    (
        21,
        "jobs",
        include_str!("../../migrations/sqlite/0021_jobs.sql"),
    ),
    (
        23,
        "job counts",
        include_str!("../../migrations/sqlite/0023_job_counts.sql"),
    ),
    (
        25,
        "session bound",
        include_str!("../../migrations/sqlite/0025_session_bound.sql"),
    ),
    (
        29,
        "session bound by index",
        include_str!("../../migrations/sqlite/0029_session_bound_by_index.sql"),
    ),
];

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    success BOOLEAN NOT NULL,
    checksum BLOB NOT NULL,
    execution_time BIGINT NOT NULL
)";

/// Applies pending migrations; does nothing when the schema is current. Several processes may
/// call it at once: the first takes the write lock and the others then find nothing to do.
pub(super) fn migrate(conn: &Connection) -> Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(map_sqlite)?;
    match apply(conn) {
        Ok(()) => conn.execute_batch("COMMIT").map_err(map_sqlite),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

pub(super) fn apply(conn: &Connection) -> Result<()> {
    let failed = |e: rusqlite::Error| match map_sqlite(e) {
        unavailable @ StoreError::Unavailable(_) => unavailable,
        other => StoreError::Migration(other.to_string()),
    };
    conn.execute_batch(CREATE_TABLE).map_err(failed)?;
    let applied: Vec<(i64, bool, Vec<u8>)> = conn
        .prepare("SELECT version, success, checksum FROM _sqlx_migrations ORDER BY version")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
        .map_err(failed)?;
    for (version, success, checksum) in &applied {
        if !success {
            return Err(StoreError::Migration(format!(
                "migration {version} was left partly applied; restore a backup"
            )));
        }
        match MIGRATIONS.iter().find(|m| m.0 == *version) {
            None => {
                return Err(StoreError::Migration(format!(
                    "migration {version} was applied to the database but is not known to this \
                     version of grantkeeper (a newer one made it)"
                )));
            }
            Some((_, _, sql)) if checksum_of(sql) != *checksum => {
                return Err(StoreError::Migration(format!(
                    "migration {version} was applied from a different text than this version \
                     of grantkeeper holds"
                )));
            }
            Some(_) => {}
        }
    }
    for (version, description, sql) in MIGRATIONS {
        if applied.iter().any(|a| a.0 == *version) {
            continue;
        }
        let started = Stopwatch::start();
        conn.execute_batch(sql).map_err(failed)?;
        let took = i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX);
        conn.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (?1, ?2, TRUE, ?3, ?4)",
            params![version, description, checksum_of(sql), took],
        )
        .map_err(failed)?;
    }
    tracing::debug!(
        version = MIGRATIONS.last().map_or(0, |m| m.0),
        "SQLite schema current"
    );
    Ok(())
}

/// What sqlx kept as a migration's checksum: the SHA-384 of its text.
fn checksum_of(sql: &str) -> Vec<u8> {
    digest::digest(&digest::SHA384, sql.as_bytes())
        .as_ref()
        .to_vec()
}
