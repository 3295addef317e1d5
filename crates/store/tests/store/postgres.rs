//! The conformance suite on PostgreSQL, and what only PostgreSQL has: a shared server, one
//! schema migrated by instances starting together, collations, statement timeouts, locks held
//! by other sessions, URLs with passwords.
//!
//! Databases come from `grantkeeper_testkit::postgres`: one per check, copied from a migrated
//! template; skipped without a server, except under CI.

use crate::conformance::{
    self, Fixture, OPENID_EMAIL, refresh, sign_in, state_update, t, transfer,
};
use grantkeeper_core::GrantState;
use grantkeeper_store::{
    ExportKind, PostgresStore, SharedStore, SqliteStore, Store, StoreError, StoreOptions, UserStore,
};
use grantkeeper_testkit::postgres::{TestDatabase, admin, url_of};
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// How many times to look for a session waiting on a lock before giving up (10 ms apart).
const WAIT_POLLS: u32 = 1000;

pub(crate) async fn fresh() -> Option<Fixture> {
    let database = TestDatabase::migrated().await?;
    let store = grantkeeper_store::open(&database.url).await.unwrap();
    Some(Fixture {
        store,
        _keep: Box::new(database),
    })
}

/// Two stores opened at once on one database, as two instances starting together would.
async fn pair() -> Option<(Fixture, SharedStore)> {
    let database = TestDatabase::migrated().await?;
    let (first, second) = tokio::join!(
        grantkeeper_store::open(&database.url),
        grantkeeper_store::open(&database.url)
    );
    let fixture = Fixture {
        store: first.unwrap(),
        _keep: Box::new(database),
    };
    Some((fixture, second.unwrap()))
}

mod suite {
    use super::{fresh, pair};
    conformance_suite!(fresh: fresh, pair: pair);
}

#[tokio::test]
async fn schema_is_present_with_byte_ordered_subs() {
    let Some(database) = TestDatabase::migrated().await else {
        return;
    };
    let store = grantkeeper_store::open(&database.url).await.unwrap();
    assert_eq!(store.backend(), "postgres");
    store.ping().await.unwrap();

    let mut raw = database.raw().await;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::TEXT FROM information_schema.tables
          WHERE table_schema = 'public' ORDER BY table_name",
    )
    .fetch_all(&mut raw)
    .await
    .unwrap();
    assert_eq!(
        tables,
        [
            "_sqlx_migrations",
            "activity",
            "admin_sessions",
            "api_keys",
            "audit",
            "data_keys",
            "drop_notices",
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
    // The indexes SQLite has, by the same names (the keys' own indexes aside).
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexname::TEXT FROM pg_indexes
          WHERE schemaname = 'public' AND indexname NOT LIKE '%\\_pkey'
            AND indexname NOT LIKE '%\\_key' ORDER BY indexname",
    )
    .fetch_all(&mut raw)
    .await
    .unwrap();
    assert_eq!(
        indexes,
        [
            "admin_sessions_expires_at",
            "admin_sessions_key_id",
            "audit_at",
            "audit_sub",
            "data_keys_one_active",
            "drop_notices_at",
            "grant_events_due",
            "grant_events_sub",
            "grants_rt_hash",
            "grants_rt_prefix_hash",
            "job_items_due",
            "job_items_lease",
            "job_items_settled",
            "job_items_state",
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
    let partial: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::TEXT FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
          WHERE i.indpred IS NOT NULL ORDER BY c.relname",
    )
    .fetch_all(&mut raw)
    .await
    .unwrap();
    assert_eq!(
        partial,
        [
            "data_keys_one_active",
            "grant_events_due",
            "job_items_due",
            "job_items_lease",
            "job_items_settled",
            "jobs_running_key",
            "sweep_batches_undone",
            "sweep_runs_one_unfinished"
        ]
    );
    // Every column holding a sub compares bytes, and so does every text key that exports are
    // paged by.
    let collations: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT table_name::TEXT, column_name::TEXT, collation_name::TEXT
           FROM information_schema.columns
          WHERE table_schema = 'public'
            AND (column_name IN ('sub', 'cursor', 'after', 'last', 'progress')
                 OR (table_name, column_name) IN (('api_keys', 'id'),
                     ('pending_revocations', 'id'), ('risc_events', 'jti'),
                     ('activity', 'series')))
          ORDER BY table_name, column_name",
    )
    .fetch_all(&mut raw)
    .await
    .unwrap();
    assert_eq!(collations.len(), 17, "{collations:?}");
    for (table, column, collation) in &collations {
        assert_eq!(collation.as_deref(), Some("C"), "{table}.{column}");
    }

    // The checks hold: a refresh token is never kept without its fingerprints.
    signed_in(&store, "cat").await;
    let err = sqlx::query("UPDATE grants SET rt_hash = NULL WHERE sub = 'cat'")
        .execute(&mut raw)
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("23514")
    );
    raw.close().await.unwrap();
}

async fn signed_in(store: &SharedStore, sub: &str) {
    store
        .record_sign_in(sign_in(sub, OPENID_EMAIL, Some(refresh(sub)), t(0)))
        .await
        .unwrap();
}

/// The deliverer polls often: its query must be able to read the partial index of undelivered
/// events rather than the whole history.
#[tokio::test]
async fn due_events_can_read_the_partial_index() {
    let Some(database) = TestDatabase::migrated().await else {
        return;
    };
    let mut raw = database.raw().await;
    // Tiny tables are cheaper to scan: forbid that, to see whether the index fits the query.
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut raw)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT id, sub, from_state, to_state, reason, at, attempts, next_attempt_at
           FROM grant_events
          WHERE delivered_at IS NULL AND next_attempt_at <= 0
          ORDER BY id LIMIT 10",
    )
    .fetch_all(&mut raw)
    .await
    .unwrap();
    assert!(
        plan.iter().any(|step| step.contains("grant_events_due")),
        "{plan:?}"
    );
    raw.close().await.unwrap();
}

/// Instances starting together on an empty database: one applies the migrations, the others
/// wait for it and find nothing to do; later starts change nothing and keep the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_idempotent_and_safe_to_start_together() {
    let Some(database) = TestDatabase::empty().await else {
        return;
    };
    let options = StoreOptions {
        max_connections: 2,
        ..StoreOptions::default()
    };
    let starts: Vec<_> = (0..6)
        .map(|_| {
            let url = database.url.clone();
            let options = options.clone();
            tokio::spawn(async move { PostgresStore::open(&url, &options).await })
        })
        .collect();
    let mut stores = Vec::new();
    for start in starts {
        stores.push(start.await.unwrap().unwrap());
    }

    let first = &stores[0];
    first
        .record_sign_in(sign_in("nia", OPENID_EMAIL, Some(refresh("n1")), t(0)))
        .await
        .unwrap();
    for store in &stores {
        store.migrate().await.unwrap();
        store.migrate().await.unwrap();
    }
    for store in &stores {
        store.close().await;
    }
    let reopened = grantkeeper_store::open(&database.url).await.unwrap();
    let (_, grant) = reopened.user("nia").await.unwrap().unwrap();
    assert_eq!(grant.refresh_token, Some(refresh("n1")));

    let mut raw = database.raw().await;
    let applied: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut raw)
            .await
            .unwrap();
    // Every migration shipped, each once and successful.
    let shipped: Vec<(i64, bool)> = {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres");
        let mut versions: Vec<i64> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|entry| {
                let name = entry.unwrap().file_name().into_string().unwrap();
                name.split_once('_')?.0.parse().ok()
            })
            .collect();
        versions.sort_unstable();
        versions.into_iter().map(|v| (v, true)).collect()
    };
    assert!(shipped.len() >= 15, "{shipped:?}");
    assert_eq!(applied, shipped);
    raw.close().await.unwrap();
}

/// Users are paged in byte order, as SQLite pages them, whatever the server's locale would
/// say of case and accents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_order_is_byte_order() {
    let Some(database) = TestDatabase::migrated().await else {
        return;
    };
    let postgres = grantkeeper_store::open(&database.url).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sqlite: SharedStore = Arc::new(
        SqliteStore::open(&format!("sqlite://{}", dir.path().join("gk.db").display()))
            .await
            .unwrap(),
    );
    let subs = [
        "alice", "Alice", "ALICE", "bob", "Bob", "b", "B", "zoe", "Zoë", "zoë", "émile", "Émile",
        "emile", "Emile", "ß", "ss", "SS", "straße", "a b", "a-b", "a_b", "ab", "_x", "~", "ü",
        "日本", "Ω", "123", "0", "10", "9", "a\u{301}", "á",
    ];
    for store in [&postgres, &sqlite] {
        for sub in subs {
            signed_in(store, sub).await;
        }
    }
    let mut expected: Vec<&str> = subs.to_vec();
    expected.sort_unstable();

    for store in [&postgres, &sqlite] {
        let mut listed = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = store.list_users(after.as_deref(), 4).await.unwrap();
            listed.extend(page.users.iter().map(|(user, _)| user.profile.sub.clone()));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(listed, expected, "{}", store.backend());
        // A cursor that is not a stored sub starts where its bytes say.
        let page = store.list_users(Some("Z"), 3).await.unwrap();
        let from_z: Vec<&str> = page
            .users
            .iter()
            .map(|(u, _)| u.profile.sub.as_str())
            .collect();
        let after_z: Vec<&str> = expected
            .iter()
            .copied()
            .filter(|s| *s > "Z")
            .take(3)
            .collect();
        assert_eq!(from_z, after_z, "{}", store.backend());
    }
}

/// A statement held up past `statement_timeout` (here waiting for a row another session holds)
/// is cancelled by the server and answered as Unavailable; the store then works on. Each
/// connection carries grantkeeper's name and its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_is_unavailable() {
    let Some(database) = TestDatabase::migrated().await else {
        return;
    };
    let options = StoreOptions {
        statement_timeout: Duration::from_millis(300),
        ..StoreOptions::default()
    };
    let store = grantkeeper_store::open_with(&database.url, &options)
        .await
        .unwrap();
    signed_in(&store, "tim").await;

    let mut raw = database.raw().await;
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT application_name::TEXT FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut raw)
    .await
    .unwrap();
    assert!(!names.is_empty());
    assert!(names.iter().all(|name| name == "grantkeeper"), "{names:?}");

    let mut holder = raw.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM grants WHERE sub = 'tim' FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let err = store
        .update_grant_state(
            "tim",
            None,
            state_update(GrantState::Failing, "upstream 503", None, 5),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("statement_timeout"), "{err}");
    holder.rollback().await.unwrap();

    // Nothing was written; the next write goes through.
    let grant = store.grant("tim").await.unwrap().unwrap();
    assert_eq!((grant.state, grant.version), (GrantState::Active, 1));
    let (grant, _) = store
        .update_grant_state(
            "tim",
            Some(1),
            state_update(GrantState::Failing, "upstream 503", None, 5),
        )
        .await
        .unwrap();
    assert_eq!((grant.state, grant.version), (GrantState::Failing, 2));
    raw.close().await.unwrap();
}

/// A deadlock with another session aborts the store's transaction; the store runs it again
/// and succeeds once the other session lets go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlocked_transaction_is_run_again() {
    let Some(database) = TestDatabase::migrated().await else {
        return;
    };
    let store = grantkeeper_store::open(&database.url).await.unwrap();
    signed_in(&store, "dee").await;

    let mut other = database.raw().await;
    let mut other_tx = other.begin().await.unwrap();
    // This session waits longer before it looks for deadlocks, so the store's session (at the
    // server's default of one second) is the one that finds it and is aborted.
    sqlx::query("SET LOCAL deadlock_timeout = '60s'")
        .execute(&mut *other_tx)
        .await
        .unwrap();
    sqlx::query("SELECT 1 FROM grants WHERE sub = 'dee' FOR UPDATE")
        .execute(&mut *other_tx)
        .await
        .unwrap();

    // The sign-in locks the user row, then waits for the grant row.
    let signing = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .record_sign_in(sign_in("dee", OPENID_EMAIL, Some(refresh("d2")), t(10)))
                .await
        })
    };
    let mut watcher = database.raw().await;
    wait_for_lock_waiter(&mut watcher).await;

    // Now this session waits for the user row: a cycle. The server aborts the store's
    // transaction, which lets this statement through.
    sqlx::query("SELECT 1 FROM users WHERE sub = 'dee' FOR UPDATE")
        .execute(&mut *other_tx)
        .await
        .unwrap();
    other_tx.commit().await.unwrap();

    let out = signing.await.unwrap().unwrap();
    assert_eq!(out.grant.refresh_token, Some(refresh("d2")));
    assert_eq!(out.grant.version, 2, "written once");
    assert_eq!(store.grant_events("dee").await.unwrap().len(), 1);
    watcher.close().await.unwrap();
    other.close().await.unwrap();
}

/// Unfenced state changes from many instances at once all apply, one after another: each
/// writer waits for the grant row and then reads what the one before it committed, so none
/// of them meets a version it did not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfenced_state_updates_queue_on_the_grant() {
    const TASKS: i64 = 16;
    let Some((fixture, second)) = pair().await else {
        return;
    };
    let stores = [fixture.store.clone(), second];
    signed_in(&stores[0], "una").await;
    let updates: Vec<_> = (1..=TASKS)
        .map(|i| {
            let store = stores[i as usize % 2].clone();
            tokio::spawn(async move {
                let error = format!("upstream 503 #{i}");
                let update = state_update(GrantState::Failing, "upstream 503", Some(&error), i);
                store.update_grant_state("una", None, update).await.unwrap()
            })
        })
        .collect();
    let mut versions = Vec::new();
    let mut events = 0;
    for update in updates {
        let (grant, event) = update.await.unwrap();
        versions.push(grant.version);
        events += usize::from(event.is_some());
    }
    versions.sort_unstable();
    assert_eq!(versions, (2..=TASKS + 1).collect::<Vec<_>>());
    assert_eq!(events, 1, "only the first changed the state");
    let grant = stores[1].grant("una").await.unwrap().unwrap();
    assert_eq!(
        (grant.state, grant.version),
        (GrantState::Failing, TASKS + 1)
    );
}

/// Waits until a session of the store waits for a lock.
async fn wait_for_lock_waiter(watcher: &mut PgConnection) {
    for _ in 0..WAIT_POLLS {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity
              WHERE datname = current_database() AND application_name = 'grantkeeper'
                AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut *watcher)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the store never waited for the lock");
}

/// Two stores on a fresh database of a server defaulting to SERIALIZABLE.
async fn serializable_pair() -> Option<(TestDatabase, SharedStore, SharedStore)> {
    let database = TestDatabase::migrated().await?;
    let url = format!(
        "{}?options=-c%20default_transaction_isolation%3Dserializable",
        database.url
    );
    let first = grantkeeper_store::open(&url).await.unwrap();
    let second = grantkeeper_store::open(&url).await.unwrap();
    Some((database, first, second))
}

/// A server defaulting to SERIALIZABLE: the store's transactions keep the isolation their
/// locks are designed for, so concurrent writers still queue instead of failing, and single
/// statements that lose a race are run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stricter_default_isolation_changes_nothing() {
    let Some((_database, first, second)) = serializable_pair().await else {
        return;
    };
    conformance::users::concurrent_sign_ins_across_instances(first.clone(), second.clone()).await;
    conformance::grants::concurrent_refreshes_across_instances(first.clone(), second.clone()).await;
    conformance::keys::ensure_data_key_race_across_instances(first.clone(), second.clone()).await;
    conformance::leases::refresh_lease_race_across_instances(first, second).await;
}

/// An export carries every column of every table it reads (but `api_keys.seq`, this backend's
/// own tie-breaker): a column added by a later migration and forgotten by the export would be
/// lost by a move to another store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_carry_every_column() {
    let Some(database) = TestDatabase::migrated().await else {
        return;
    };
    let store = grantkeeper_store::open(&database.url).await.unwrap();
    transfer::populate(&store).await;
    let mut raw = database.raw().await;
    for kind in ExportKind::ALL {
        let columns: Vec<String> = sqlx::query_scalar(
            "SELECT column_name::TEXT FROM information_schema.columns
              WHERE table_schema = 'public' AND table_name = $1
                AND NOT (table_name = 'api_keys' AND column_name = 'seq')
              ORDER BY column_name COLLATE \"C\"",
        )
        .bind(transfer::table_of(kind))
        .fetch_all(&mut raw)
        .await
        .unwrap();
        assert_eq!(
            transfer::exported_columns(&store, kind).await,
            columns,
            "{kind:?}"
        );
    }
    raw.close().await.unwrap();
}

#[tokio::test]
async fn bad_urls_are_configuration_errors_without_the_password() {
    for url in [
        "postgres://app:hunter2@127.0.0.1:notaport/grantkeeper",
        "postgresql://app:hunter2@127.0.0.1:5432/grantkeeper?sslmode=sideways",
        "postgres://app:hunter2@[::1/grantkeeper",
    ] {
        let err = grantkeeper_store::open(url).await.err().unwrap();
        assert!(matches!(err, StoreError::Config(_)), "{url}: {err:?}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
    }
    let err = PostgresStore::open("sqlite://x.db", &StoreOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");

    // A server that does not answer is unavailable, not misconfigured.
    let quick = StoreOptions {
        connect_timeout: Duration::from_secs(1),
        ..StoreOptions::default()
    };
    let err =
        grantkeeper_store::open_with("postgres://app:hunter2@127.0.0.1:1/grantkeeper", &quick)
            .await
            .err()
            .unwrap();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

/// On a live server: a database that does not exist is a configuration error, and a password
/// in the URL appears in no error and no Debug output.
#[tokio::test]
async fn a_missing_database_is_a_configuration_error() {
    let Some(database) = TestDatabase::migrated().await else {
        return;
    };
    let with_password = |name: &str| {
        let mut url = Url::parse(&url_of(name)).unwrap();
        url.set_password(Some("hunter2")).unwrap();
        url.to_string()
    };
    let err = grantkeeper_store::open(&with_password("gk_no_such_database"))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");

    // The test server trusts local connections and ignores the password; the store holds it.
    let store = PostgresStore::open(&with_password(&database.name), &StoreOptions::default())
        .await
        .unwrap();
    assert!(!format!("{store:?}").contains("hunter2"));
    store.close().await;
    let err = store.ping().await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

/// Each check's database is gone once its fixture is.
#[tokio::test]
async fn databases_are_dropped_after_use() {
    let Some(database) = TestDatabase::migrated().await else {
        return;
    };
    let name = database.name.clone();
    let mut admin = admin().await;
    let exists = "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)";
    let before: bool = sqlx::query_scalar(exists)
        .bind(&name)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(before);
    drop(database);
    let after: bool = sqlx::query_scalar(exists)
        .bind(&name)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(!after);
    admin.close().await.unwrap();
}
