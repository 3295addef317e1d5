//! PostgreSQL databases for checks, made and dropped per check.
//!
//! The server is named by `GRANTKEEPER_TEST_POSTGRES` (an admin URL; default
//! [`DEFAULT_ADMIN_URL`]). Each check gets its own database, copied from a template that the test
//! binary migrates once (`gk_test_<binary>_<pid>_template`), and dropped when the check ends,
//! passed or failed. A test binary has no hook at its exit, so the template outlives the run: the
//! next run drops it with every other database left by a process that is gone. Without a server
//! the checks are skipped (saying so on stderr), except under CI or when
//! `GRANTKEEPER_TEST_POSTGRES` names a server, where they fail: a server asked for and not
//! found is a broken test set-up, not a reason to pass.

use grantkeeper_store::{PostgresStore, StoreOptions};
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection, Executor};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;
use tokio::sync::OnceCell;
use url::Url;

pub const ADMIN_URL_ENV: &str = "GRANTKEEPER_TEST_POSTGRES";
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Every database a test binary makes is named `<prefix><pid>_...`, with a prefix of its own
/// ([`prefix`]) so that each suite cleans up only after itself.
fn prefix() -> &'static str {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PREFIX.get_or_init(|| {
        // The test binary's name up to its hash: `store`, `broker`, `cli`...
        let exe = std::env::current_exe().ok();
        let stem = exe
            .as_deref()
            .and_then(|p| p.file_stem())
            .and_then(|s| s.to_str())
            .and_then(|s| s.split('-').next())
            .unwrap_or("tests")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>();
        format!("gk_test_{stem}_")
    })
}
/// How long to wait for the server before calling it absent.
const REACH_TIMEOUT: Duration = Duration::from_secs(5);

pub fn admin_url() -> String {
    std::env::var(ADMIN_URL_ENV).unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// The admin URL as it may be printed: without its password.
pub fn shown_admin_url() -> String {
    match Url::parse(&admin_url()) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        Err(_) => format!("(an unparsable {ADMIN_URL_ENV})"),
    }
}

/// The admin URL pointed at another database of the same server.
pub fn url_of(database: &str) -> String {
    let mut url = Url::parse(&admin_url()).expect("the admin URL parses");
    url.set_path(database);
    url.to_string()
}

pub fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub async fn admin() -> PgConnection {
    PgConnection::connect(&admin_url()).await.unwrap()
}

/// The server as this test binary found it, once.
enum Server {
    /// Reachable, with the migrated template every check's database is copied from.
    Ready {
        template: String,
    },
    Unreachable(String),
}

static SERVER: OnceCell<Server> = OnceCell::const_new();
static SKIP_SAID: AtomicBool = AtomicBool::new(false);
static NEXT_DATABASE: AtomicU32 = AtomicU32::new(1);

/// The template to copy, or None when the checks are to be skipped.
async fn template() -> Option<&'static str> {
    match SERVER.get_or_init(prepare_server).await {
        Server::Ready { template } => Some(template),
        Server::Unreachable(why) => {
            let at = shown_admin_url();
            if must_test() {
                panic!(
                    "PostgreSQL not reachable at {at} ({why}): CI or {ADMIN_URL_ENV} asks for \
                     it; start the server or point {ADMIN_URL_ENV} at one"
                );
            }
            if !SKIP_SAID.swap(true, Ordering::Relaxed) {
                // Past the test harness's capture, so that a green run still says what it did
                // not test.
                let _ = writeln!(
                    std::io::stderr(),
                    "skipped: PostgreSQL not reachable at {at} ({why})"
                );
            }
            None
        }
    }
}

/// Whether the checks on PostgreSQL must run: under CI, or when a server is named.
pub fn must_test() -> bool {
    std::env::var_os("CI").is_some() || std::env::var_os(ADMIN_URL_ENV).is_some()
}

async fn prepare_server() -> Server {
    let mut admin =
        match tokio::time::timeout(REACH_TIMEOUT, PgConnection::connect(&admin_url())).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Server::Unreachable(e.to_string()),
            Err(_) => return Server::Unreachable("no answer".into()),
        };
    drop_stale_databases(&mut admin).await;

    let template = format!("{}{}_template", prefix(), std::process::id());
    admin
        .execute(AssertSqlSafe(format!(
            "CREATE DATABASE {}",
            quoted(&template)
        )))
        .await
        .unwrap();
    // Migrated by the store itself, then closed: a template is copied only while no one is
    // connected to it.
    let store = PostgresStore::open(&url_of(&template), &StoreOptions::default())
        .await
        .unwrap();
    store.close().await;
    admin.close().await.unwrap();
    Server::Ready { template }
}

/// Drops the databases of earlier runs: those of a process that is gone, and those bearing
/// this process's id, which it has not made yet (an earlier process had the same id).
async fn drop_stale_databases(admin: &mut PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE starts_with(datname, $1)")
            .bind(prefix())
            .fetch_all(&mut *admin)
            .await
            .unwrap();
    let me = std::process::id().to_string();
    for name in names {
        // Only names these tests make: the prefix, then a process id.
        let Some(pid) = name
            .strip_prefix(prefix())
            .and_then(|rest| rest.split('_').next())
            .filter(|pid| pid.parse::<u32>().is_ok())
        else {
            continue;
        };
        let gone = !std::path::Path::new("/proc").join(pid).exists();
        if pid == me || gone {
            drop_database(admin, &name).await;
        }
    }
}

async fn drop_database(admin: &mut PgConnection, name: &str) {
    // FORCE: a store of a failed check may still hold connections.
    if let Err(e) = admin
        .execute(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quoted(name)
        )))
        .await
    {
        let _ = writeln!(std::io::stderr(), "could not drop database {name}: {e}");
    }
}

/// A database of one check, dropped when this is dropped (a check that panics too).
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    /// A copy of the migrated template.
    pub async fn migrated() -> Option<TestDatabase> {
        let template = template().await?;
        Some(TestDatabase::create(&format!("TEMPLATE {}", quoted(template))).await)
    }

    /// An empty database, with no schema yet.
    pub async fn empty() -> Option<TestDatabase> {
        template().await?;
        Some(TestDatabase::create("").await)
    }

    async fn create(options: &str) -> TestDatabase {
        let n = NEXT_DATABASE.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}{}_{n}", prefix(), std::process::id());
        let mut admin = admin().await;
        admin
            .execute(AssertSqlSafe(format!(
                "CREATE DATABASE {} {options}",
                quoted(&name)
            )))
            .await
            .unwrap();
        admin.close().await.unwrap();
        let url = url_of(&name);
        TestDatabase { name, url }
    }

    /// A plain connection to this database, outside the store, for set-up and inspection.
    pub async fn raw(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.unwrap()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop cannot await, and the check's runtime cannot be blocked on from inside: a
        // thread with its own runtime drops the database.
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                match PgConnection::connect(&admin_url()).await {
                    Ok(mut admin) => {
                        drop_database(&mut admin, &name).await;
                        let _ = admin.close().await;
                    }
                    Err(e) => {
                        let _ = writeln!(std::io::stderr(), "could not drop {name}: {e}");
                    }
                }
            });
            Ok::<_, std::io::Error>(())
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            let _ = writeln!(std::io::stderr(), "could not drop database {}", self.name);
        }
    }
}
