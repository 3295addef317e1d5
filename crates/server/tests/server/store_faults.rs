//! The store failing under a sign-in: a full disk, a database file locked by another process or
//! made read-only, a PostgreSQL connection dropped mid-operation. Each answers the contract's
//! 503 `upstream_unavailable` with Retry-After, leaves nothing half-written, and the next
//! sign-in after the fault clears succeeds, with no restart.

use super::harness::{Answer, Options, TestApp};
use grantkeeper_testkit::cannot_run;
use grantkeeper_testkit::postgres::{TestDatabase, must_test};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn assert_unavailable(answer: &Answer) {
    answer.assert_error(503, "upstream_unavailable");
    assert!(
        answer.headers.contains_key("retry-after"),
        "{:?}",
        answer.headers
    );
    assert!(answer.session_cookie().is_none());
}

/// Rows of `table` in the SQLite file at `path`, read by a connection of its own.
fn rows(path: &Path, table: &str) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
        row.get(0)
    })
    .unwrap()
}

#[tokio::test]
async fn a_database_locked_by_another_process_answers_503_until_it_is_released() {
    let t = TestApp::start().await;
    let path = t.db_dir().join("grantkeeper.db");
    let other = rusqlite::Connection::open(&path).unwrap();
    // Past the store's busy timeout: the sign-in gives up waiting for the write lock.
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let code = t.web_code("ada@example.com").await;
    assert_unavailable(&t.authcode_web(&code).await);
    other.execute_batch("ROLLBACK").unwrap();
    assert_eq!((rows(&path, "users"), rows(&path, "sessions")), (0, 0));

    let code = t.web_code("ada@example.com").await;
    let answer = t.authcode_web(&code).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(answer.session_cookie().is_some());
    assert_eq!((rows(&path, "users"), rows(&path, "sessions")), (1, 1));
}

/// Makes a file read-only even for root (the immutable attribute), or lifts that.
fn immutable(path: &Path, on: bool) -> bool {
    Command::new("chattr")
        .arg(if on { "+i" } else { "-i" })
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn a_read_only_database_file_answers_503_until_it_is_writable_again() {
    let t = TestApp::start().await;
    let path = t.db_dir().join("grantkeeper.db");
    let wal = t.db_dir().join("grantkeeper.db-wal");
    // A first sign-in, so that the grant of a second one would change rows already held.
    let code = t.web_code("bo@example.com").await;
    assert_eq!(t.authcode_web(&code).await.status, 200);
    if !(immutable(&path, true) && immutable(&wal, true)) {
        immutable(&path, false);
        return cannot_run("chattr +i is refused here (not root, or a file system without it)");
    }
    let code = t.web_code("ada@example.com").await;
    let refused = t.authcode_web(&code).await;
    let again = t.authcode_web(&t.web_code("ada@example.com").await).await;
    immutable(&path, false);
    immutable(&wal, false);
    assert_unavailable(&refused);
    // Opened again while the file still was read-only: refused as well, not half-open.
    assert_unavailable(&again);
    assert_eq!((rows(&path, "users"), rows(&path, "sessions")), (1, 1));

    let code = t.web_code("ada@example.com").await;
    let answer = t.authcode_web(&code).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!((rows(&path, "users"), rows(&path, "sessions")), (2, 2));
}

/// A small tmpfs mounted for the check, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(bytes: u64) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(SmallDisk { dir })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Fills what is left of the disk; the filler's path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.dir.path().join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0_u8; 4096];
        while file.write_all(&block).is_ok() {}
        let _ = file.sync_all();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_answers_503_until_there_is_room_again() {
    let Some(disk) = SmallDisk::mount(8 << 20) else {
        return cannot_run("a tmpfs cannot be mounted here (not root)");
    };
    let path = disk.path().join("grantkeeper.db");
    let t = TestApp::start_with(Options {
        store_url: Some(format!("sqlite://{}", path.display())),
        ..Options::default()
    })
    .await;
    let code = t.web_code("bo@example.com").await;
    assert_eq!(t.authcode_web(&code).await.status, 200);
    let filler = disk.fill();

    let code = t.web_code("ada@example.com").await;
    assert_unavailable(&t.authcode_web(&code).await);
    std::fs::remove_file(filler).unwrap();
    assert_eq!((rows(&path, "users"), rows(&path, "sessions")), (1, 1));

    let code = t.web_code("ada@example.com").await;
    let answer = t.authcode_web(&code).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!((rows(&path, "users"), rows(&path, "sessions")), (2, 2));
    drop(t);
}

#[tokio::test]
async fn a_postgresql_connection_dropped_mid_sign_in_answers_503_and_the_next_succeeds() {
    let Some(db) = TestDatabase::migrated().await else {
        assert!(!must_test());
        return;
    };
    let t = TestApp::start_with(Options {
        store_url: Some(db.url.clone()),
        ..Options::default()
    })
    .await;
    let code = t.web_code("ada@example.com").await;
    assert_eq!(t.authcode_web(&code).await.status, 200);
    let sub: String = {
        let mut raw = db.raw().await;
        sqlx::query_scalar("SELECT sub FROM users")
            .fetch_one(&mut raw)
            .await
            .unwrap()
    };

    // Another session holds Ada's row, so that her next sign-in waits inside the store; its
    // connection is then cut, as a failover or a restart of the server would.
    let mut holder = db.raw().await;
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT 1 FROM users WHERE sub = $1 FOR UPDATE")
        .bind(&sub)
        .execute(&mut holder)
        .await
        .unwrap();
    let code = t.web_code("ada@example.com").await;
    let signing_in = {
        let url = t.url.clone();
        tokio::spawn(async move {
            let answer = reqwest::Client::new()
                .post(format!("{url}/authcode"))
                .header("x-requested-with", "XmlHttpRequest")
                .header("content-type", "application/octet-stream")
                .body(code)
                .send()
                .await
                .unwrap();
            Answer::from_response(answer).await
        })
    };
    let mut watcher = db.raw().await;
    let mut cut = 0_i64;
    for _ in 0..100 {
        cut = sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
              WHERE datname = current_database() AND application_name = 'grantkeeper'
                AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut watcher)
        .await
        .unwrap();
        if cut > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cut, 1, "the sign-in never waited on the row");
    let answer = signing_in.await.unwrap();
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    assert_unavailable(&answer);
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
        .fetch_one(&mut watcher)
        .await
        .unwrap();
    // The first sign-in's session only: nothing of the cut one was committed.
    assert_eq!(sessions, 1);

    let code = t.web_code("ada@example.com").await;
    let answer = t.authcode_web(&code).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
        .fetch_one(&mut watcher)
        .await
        .unwrap();
    assert_eq!(sessions, 2);
    drop(t);
}
