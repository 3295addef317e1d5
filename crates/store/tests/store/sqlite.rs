//! The conformance suite on fresh SQLite files, and what only SQLite has: files, reopening,
//! migrations, in-memory databases, URLs.

use crate::conformance::{Fixture, OPENID_EMAIL, refresh, sign_in, t, transfer};
use grantkeeper_core::GrantState;
use grantkeeper_store::{
    DataKeyRecord, ExportKind, GrantEvent, KeyStore, OutboxStore, PendingEvent, SessionRecord,
    SessionStore, SharedStore, SqliteStore, Store, StoreError, UserStore,
};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use sqlx::{Row, SqlSafeStr};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

fn url_of(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

fn temp_db() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grantkeeper.db");
    (dir, path)
}

/// A plain connection to the file, outside the store, for set-up and inspection.
async fn raw(path: &Path) -> SqlitePool {
    SqlitePool::connect_with(
        SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(Duration::from_secs(5)),
    )
    .await
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

    let pool = raw(&path).await;
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(mode, "wal");
    let tables: Vec<String> = sqlx::query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
          ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .iter()
    .map(|row| row.get(0))
    .collect();
    assert_eq!(
        tables,
        [
            "_sqlx_migrations",
            "activity",
            "admin_sessions",
            "api_keys",
            "audit",
            "data_keys",
            "grant_events",
            "grants",
            "imports_under_way",
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
    let indexes: Vec<String> = sqlx::query(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .iter()
    .map(|row| row.get(0))
    .collect();
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
            "pending_revocations_due",
            "risc_events_received_at",
            "sessions_expires_at",
            "sessions_sub",
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
    let plan: Vec<String> = sqlx::query(
        "EXPLAIN QUERY PLAN
         SELECT id, sub, from_state, to_state, reason, at, attempts, next_attempt_at
           FROM grant_events
          WHERE delivered_at IS NULL AND next_attempt_at <= ?1
          ORDER BY id LIMIT ?2",
    )
    .bind(0_i64)
    .bind(10_i64)
    .fetch_all(&raw(&path).await)
    .await
    .unwrap()
    .iter()
    .map(|row| row.get::<String, _>("detail"))
    .collect();
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
    let pool = SqlitePool::connect_with(
        SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .foreign_keys(true),
    )
    .await
    .unwrap();
    Migrator::with_migrations(vec![Migration::new(
        1,
        Cow::Borrowed("initial"),
        MigrationType::Simple,
        include_str!("../../migrations/sqlite/0001_initial.sql").into_sql_str(),
        false,
    )])
    .run(&pool)
    .await
    .unwrap();
    let at = t(0).unix_timestamp();
    for sql in [
        "INSERT INTO users (sub, created_at, updated_at) VALUES ('old', ?1, ?1)",
        "INSERT INTO grants (sub, state, state_changed_at, updated_at)
         VALUES ('old', 'needs_consent', ?1, ?1)",
        "INSERT INTO grant_events (sub, from_state, to_state, reason, at)
         VALUES ('old', NULL, 'needs_consent', 'signed in without a refresh token', ?1)",
    ] {
        sqlx::query(sql).bind(at).execute(&pool).await.unwrap();
    }
    pool.close().await;

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

    let applied: i64 = sqlx::query("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&raw(&path).await)
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied, 12);
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
    let pool = raw(&path).await;
    for kind in ExportKind::ALL {
        let mut columns: Vec<String> = sqlx::query("SELECT name FROM pragma_table_info(?1)")
            .bind(transfer::table_of(kind))
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
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
