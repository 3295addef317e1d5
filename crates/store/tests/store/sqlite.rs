//! The conformance suite on fresh SQLite files, and what only SQLite has: files, reopening,
//! migrations, in-memory databases, URLs.

use crate::conformance::{Fixture, OPENID_EMAIL, refresh, sign_in, t, transfer};
use grantkeeper_core::GrantState;
use grantkeeper_store::{
    ApiKeyStore, DataKeyRecord, ExportKind, GrantEvent, GrantStore, KeyStore, OutboxStore,
    PendingEvent, SessionRecord, SessionStore, SharedStore, SqliteStore, Store, StoreError,
    UserStore,
};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

/// Migrations a new SQLite database has applied (1 to 11, 13, 19, 21, 23, 25 and 29).
const MIGRATIONS_APPLIED: i64 = 17;

fn url_of(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

fn temp_db() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grantkeeper.db");
    (dir, path)
}

/// A plain connection to the file, outside the store, for set-up and inspection.
fn raw(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

/// The first column of every row of `sql`.
fn column(conn: &Connection, sql: &str) -> Vec<String> {
    let mut statement = conn.prepare(sql).unwrap();
    statement
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

pub(crate) async fn fresh_file() -> Fixture {
    let (dir, path) = temp_db();
    let store: SharedStore = Arc::new(SqliteStore::open(&url_of(&path)).await.unwrap());
    Fixture {
        store,
        _keep: Box::new(dir),
    }
}

/// SQLite is always there to test against.
async fn fresh() -> Option<Fixture> {
    Some(fresh_file().await)
}

/// Two stores opened at once on one new file, as two processes starting together would.
async fn pair() -> Option<(Fixture, SharedStore)> {
    let (dir, path) = temp_db();
    let url = url_of(&path);
    let (first, second) = tokio::join!(SqliteStore::open(&url), SqliteStore::open(&url));
    let fixture = Fixture {
        store: Arc::new(first.unwrap()),
        _keep: Box::new(dir),
    };
    Some((fixture, Arc::new(second.unwrap())))
}

mod suite {
    use super::{fresh, pair};
    conformance_suite!(fresh: fresh, pair: pair);
}

#[tokio::test]
async fn backend_is_sqlite() {
    let fixture = fresh_file().await;
    assert_eq!(fixture.store.backend(), "sqlite");
}

#[tokio::test]
async fn file_is_created_in_wal_mode_with_the_schema() {
    let (_dir, path) = temp_db();
    assert!(!path.exists());
    let store = SqliteStore::open(&format!("{}?mode=rwc", url_of(&path)))
        .await
        .unwrap();
    store.ping().await.unwrap();
    assert!(path.exists());

    let conn = raw(&path);
    assert_eq!(column(&conn, "PRAGMA journal_mode"), ["wal"]);
    let tables = column(
        &conn,
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
          ORDER BY name",
    );
    assert_eq!(
        tables,
        [
            "_sqlx_migrations",
            "activity",
            "admin_sessions",
            "api_keys",
            "audit",
            "data_keys",
            "grant_counts",
            "grant_events",
            "grants",
            "imports_under_way",
            "job_items",
            "jobs",
            "pending_revocations",
            "refresh_leases",
            "risc_events",
            "sessions",
            "sign_in_blocks",
            "sweep_batches",
            "sweep_runs",
            "users"
        ]
    );
    let indexes = column(
        &conn,
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name",
    );
    assert_eq!(
        indexes,
        [
            "admin_sessions_expires_at",
            "admin_sessions_key_id",
            "audit_at",
            "audit_sub",
            "data_keys_one_active",
            "grant_events_due",
            "grant_events_sub",
            "grants_rt_hash",
            "grants_rt_prefix_hash",
            "job_items_due",
            "job_items_lease",
            "job_items_settled",
            "job_items_state",
            "jobs_running_key",
            "pending_revocations_due",
            "risc_events_received_at",
            "sessions_expires_at",
            "sessions_sub_newest",
            "sweep_batches_last",
            "sweep_batches_undone",
            "sweep_runs_one_unfinished",
            "users_email"
        ]
    );
}

/// The deliverer polls often: its query must read the partial index of undelivered events,
/// not the whole history.
#[tokio::test]
async fn due_events_read_the_partial_index() {
    let (_dir, path) = temp_db();
    let store = SqliteStore::open(&url_of(&path)).await.unwrap();
    store.ping().await.unwrap();
    let conn = raw(&path);
    let mut statement = conn
        .prepare(
            "EXPLAIN QUERY PLAN
             SELECT id, sub, from_state, to_state, reason, at, attempts, next_attempt_at
               FROM grant_events
              WHERE delivered_at IS NULL AND next_attempt_at <= 0
              ORDER BY id LIMIT 10",
        )
        .unwrap();
    let plan: Vec<String> = statement
        .query_map([], |row| row.get("detail"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        plan.iter()
            .any(|step| step.contains("USING INDEX grant_events_due")),
        "{plan:?}"
    );
}

/// A database made before the outbox existed: its events become due, none is lost.
#[tokio::test]
async fn offline_access_migration_keeps_earlier_events_due() {
    let (_dir, path) = temp_db();
    // As sqlx's migrator left such a database: migration 1 applied and recorded with the
    // SHA-384 of its text.
    let conn = raw(&path);
    let initial = include_str!("../../migrations/sqlite/0001_initial.sql");
    conn.execute_batch(initial).unwrap();
    conn.execute_batch(
        "CREATE TABLE _sqlx_migrations (
             version BIGINT PRIMARY KEY, description TEXT NOT NULL,
             installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
             success BOOLEAN NOT NULL, checksum BLOB NOT NULL, execution_time BIGINT NOT NULL)",
    )
    .unwrap();
    let checksum = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA384, initial.as_bytes());
    conn.execute(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (1, 'initial', TRUE, ?1, 1000)",
        [checksum.as_ref()],
    )
    .unwrap();
    let at = t(0).unix_timestamp();
    for sql in [
        "INSERT INTO users (sub, created_at, updated_at) VALUES ('old', ?1, ?1)",
        "INSERT INTO grants (sub, state, state_changed_at, updated_at)
         VALUES ('old', 'needs_consent', ?1, ?1)",
        "INSERT INTO grant_events (sub, from_state, to_state, reason, at)
         VALUES ('old', NULL, 'needs_consent', 'signed in without a refresh token', ?1)",
    ] {
        conn.execute(sql, [at]).unwrap();
    }
    drop(conn);

    let store = SqliteStore::open(&url_of(&path)).await.unwrap();
    let event = GrantEvent {
        id: 1,
        sub: "old".into(),
        from: None,
        to: GrantState::NeedsConsent,
        reason: "signed in without a refresh token".into(),
        at: t(0),
    };
    assert_eq!(
        store.grant_events("old").await.unwrap(),
        vec![event.clone()]
    );
    assert_eq!(
        store.due_events(t(0), 10).await.unwrap(),
        [PendingEvent {
            event,
            attempts: 0,
            next_attempt_at: t(0),
        }]
    );
    assert!(store.due_events(t(-1), 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn reopening_keeps_everything_and_migrate_is_idempotent() {
    let (_dir, path) = temp_db();
    let url = url_of(&path);
    let store = SqliteStore::open(&url).await.unwrap();
    let signed = store
        .record_sign_in(sign_in("nia", OPENID_EMAIL, Some(refresh("n1")), t(0)))
        .await
        .unwrap();
    let session = SessionRecord {
        id_hash: "nia-session".into(),
        sub: "nia".into(),
        created_at: t(0),
        expires_at: t(600),
    };
    store.create_session(session.clone()).await.unwrap();
    let keys = store
        .ensure_data_key(DataKeyRecord {
            id: 1,
            wrapped: vec![9; 60],
            created_at: t(0),
            active: true,
            wrapped_by: None,
        })
        .await
        .unwrap();
    let events = store.grant_events("nia").await.unwrap();
    drop(store);

    let store = SqliteStore::open(&url).await.unwrap();
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    let (user, grant) = store.user("nia").await.unwrap().unwrap();
    assert_eq!(user, signed.user);
    assert_eq!(grant, signed.grant);
    assert_eq!(grant.refresh_token, Some(refresh("n1")));
    assert_eq!(store.grant_events("nia").await.unwrap(), events);
    assert_eq!(
        store.session("nia-session", t(1)).await.unwrap(),
        Some(session)
    );
    assert_eq!(store.data_keys().await.unwrap(), keys);

    let applied: i64 = raw(&path)
        .query_row("SELECT COUNT(*) FROM _sqlx_migrations", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_eq!(applied, MIGRATIONS_APPLIED);
}

#[tokio::test]
async fn memory_store_keeps_its_data() {
    let store = SqliteStore::open("sqlite::memory:").await.unwrap();
    store.migrate().await.unwrap();
    let out = store
        .record_sign_in(sign_in("ola", OPENID_EMAIL, Some(refresh("o1")), t(0)))
        .await
        .unwrap();
    let (_, grant) = store.user("ola").await.unwrap().unwrap();
    assert_eq!(grant, out.grant);
    store
        .create_session(SessionRecord {
            id_hash: "ola-1".into(),
            sub: "ola".into(),
            created_at: t(0),
            expires_at: t(60),
        })
        .await
        .unwrap();
    assert!(store.session("ola-1", t(1)).await.unwrap().is_some());
    let keys = store
        .ensure_data_key(DataKeyRecord {
            id: 1,
            wrapped: vec![1, 2, 3],
            created_at: t(0),
            active: true,
            wrapped_by: Some("local".into()),
        })
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
    store.ping().await.unwrap();

    // Each memory store is its own database.
    let other = grantkeeper_store::open("sqlite::memory:").await.unwrap();
    assert!(other.user("ola").await.unwrap().is_none());
    assert_eq!(other.backend(), "sqlite");
}

#[tokio::test]
async fn bad_urls_are_configuration_errors() {
    let err = grantkeeper_store::open("mysql://app:hunter2@db.example/grantkeeper")
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");

    let err = SqliteStore::open("mysql://app:hunter2@db.example/x")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");

    let (_dir, path) = temp_db();
    let err = SqliteStore::open(&format!("{}?mode=sideways", url_of(&path)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
}

#[tokio::test]
async fn a_missing_directory_is_reported_not_created() {
    let (dir, _) = temp_db();
    let path = dir.path().join("no-such-dir").join("grantkeeper.db");
    let err = SqliteStore::open(&url_of(&path)).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(!path.exists());
}

/// An export carries every column of every table it reads: a column added by a later
/// migration and forgotten by the export would be lost by a move to another store.
#[tokio::test]
async fn exports_carry_every_column() {
    let (_dir, path) = temp_db();
    let store: SharedStore = Arc::new(SqliteStore::open(&url_of(&path)).await.unwrap());
    transfer::populate(&store).await;
    let conn = raw(&path);
    for kind in ExportKind::ALL {
        let mut columns = column(
            &conn,
            &format!(
                "SELECT name FROM pragma_table_info('{}')",
                transfer::table_of(kind)
            ),
        );
        columns.sort_unstable();
        assert_eq!(
            transfer::exported_columns(&store, kind).await,
            columns,
            "{kind:?}"
        );
    }
}

/// Many writers at once share commits, and one writer's failure is its own: refreshes fenced
/// out, leases on unknown users and good writes, all queued together, each get their own answer,
/// and exactly the good ones are in the file after reopening it.
#[tokio::test]
async fn concurrent_writes_committed_together_keep_their_own_outcomes() {
    use crate::conformance::signed_in;
    use grantkeeper_store::{GrantStore, RefreshLeaseStore, RefreshSuccess};

    let (dir, path) = temp_db();
    let store: SharedStore = Arc::new(SqliteStore::open(&url_of(&path)).await.unwrap());
    let subs: Vec<String> = (0..60).map(|i| format!("grouped-{i:02}")).collect();
    for sub in &subs {
        signed_in(&store, sub).await;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, sub) in subs.iter().enumerate() {
        let store = store.clone();
        let sub = sub.clone();
        tasks.spawn(async move {
            // Even users: a good refresh (version 1); odd: a refresh fenced out (version 9).
            let version = if i % 2 == 0 { 1 } else { 9 };
            let refreshed = store
                .record_refresh(
                    &sub,
                    version,
                    RefreshSuccess {
                        access_token: crate::conformance::access(&format!("{sub}-new"), t(7200)),
                        refresh_token: None,
                        scopes: None,
                        at: t(10),
                    },
                )
                .await;
            let lease = store.try_lease_refresh(&sub, "owner", t(100), t(10)).await;
            let unknown = store
                .try_lease_refresh(&format!("nobody-{i}"), "owner", t(100), t(10))
                .await;
            let new_user = store
                .record_sign_in(sign_in(
                    &format!("new-{i:02}"),
                    OPENID_EMAIL,
                    Some(refresh("n")),
                    t(5),
                ))
                .await;
            (
                i,
                refreshed.map(|g| g.version),
                lease,
                unknown,
                new_user.is_ok(),
            )
        });
    }
    while let Some(done) = tasks.join_next().await {
        let (i, refreshed, lease, unknown, new_user) = done.unwrap();
        if i % 2 == 0 {
            assert_eq!(refreshed.unwrap(), 2, "user {i}");
        } else {
            assert!(
                matches!(refreshed, Err(StoreError::Conflict)),
                "user {i}: {refreshed:?}"
            );
        }
        assert!(lease.unwrap(), "user {i}");
        assert!(
            matches!(unknown, Err(StoreError::NotFound)),
            "user {i}: {unknown:?}"
        );
        assert!(new_user, "user {i}");
    }
    drop(store);

    let reopened = SqliteStore::open(&url_of(&path)).await.unwrap();
    for (i, sub) in subs.iter().enumerate() {
        let grant = reopened.grant(sub).await.unwrap().unwrap();
        let expected = if i % 2 == 0 { 2 } else { 1 };
        assert_eq!(grant.version, expected, "{sub}");
        // A second lease by another owner is refused: the first one was kept.
        assert!(
            !reopened
                .try_lease_refresh(sub, "other", t(100), t(20))
                .await
                .unwrap()
        );
    }
    for i in 0..60 {
        assert!(
            reopened
                .user(&format!("new-{i:02}"))
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            reopened
                .user(&format!("nobody-{i}"))
                .await
                .unwrap()
                .is_none()
        );
    }
    drop(dir);
}

/// A database made by grantkeeper when its store ran on sqlx (`tests/fixtures/sqlx-era.db`:
/// `grantkeeper migrate` and `api-keys create` of that version, then a user, a grant, its event
/// and a session as a sign-in left them) opens: its applied migrations are recognised from
/// sqlx's table, the new ones applied, and every row is read back as it was.
#[tokio::test]
async fn a_database_of_the_sqlx_era_opens_and_migrates() {
    let (_dir, path) = temp_db();
    std::fs::write(&path, include_bytes!("../fixtures/sqlx-era.db")).unwrap();
    let store = SqliteStore::open(&url_of(&path)).await.unwrap();
    let (user, grant) = store.user("fixture-sub").await.unwrap().unwrap();
    assert_eq!(user.profile.email.as_deref(), Some("fixture@example.com"));
    assert_eq!(grant.state, GrantState::Active);
    assert_eq!(
        grant.refresh_token.map(|t| t.sealed),
        Some(vec![1, 0, 0, 0, 1, 0xaa, 0xbb, 0xcc])
    );
    assert_eq!(store.grant_events("fixture-sub").await.unwrap().len(), 1);
    assert!(
        store
            .session("fixture-session", t(0))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.data_keys().await.unwrap().len(), 1);
    assert_eq!(store.list_api_keys().await.unwrap()[0].name, "fixture");
    // Counted by state from the rows it held before the counts existed.
    let counts = store.count_grants_by_state().await.unwrap();
    assert!(counts.contains(&(GrantState::Active, 1)), "{counts:?}");
    drop(store);
    let conn = raw(&path);
    let versions = column(
        &conn,
        "SELECT CAST(version AS TEXT) FROM _sqlx_migrations WHERE success ORDER BY version",
    );
    assert_eq!(
        versions,
        [
            "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "13", "19", "21", "23", "25",
            "29"
        ]
    );
    // Opened again: nothing left to apply, nothing refused.
    drop(conn);
    SqliteStore::open(&url_of(&path)).await.unwrap();
}

/// A migration recorded with another text than this version holds is refused, naming it.
#[tokio::test]
async fn a_changed_migration_is_refused() {
    let (_dir, path) = temp_db();
    std::fs::write(&path, include_bytes!("../fixtures/sqlx-era.db")).unwrap();
    raw(&path)
        .execute(
            "UPDATE _sqlx_migrations SET checksum = x'00' WHERE version = 4",
            [],
        )
        .unwrap();
    let err = SqliteStore::open(&url_of(&path)).await.unwrap_err();
    assert!(matches!(err, StoreError::Migration(_)), "{err:?}");
    assert!(err.to_string().contains("migration 4"), "{err}");
}

/// The database file, and the -wal and -shm files SQLite makes beside it, are readable by
/// their owner alone, whatever the process's umask lets new files be.
#[tokio::test]
async fn a_new_database_and_its_wal_and_shm_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, path) = temp_db();
    let store = SqliteStore::open(&url_of(&path)).await.unwrap();
    store
        .record_sign_in(sign_in(
            "private",
            OPENID_EMAIL,
            Some(refresh("private")),
            t(0),
        ))
        .await
        .unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", file.display());
    }
}
