//! PostgreSQL databases for the checks that run on both stores, as the store's own tests make
//! them: the server is named by `GRANTKEEPER_TEST_POSTGRES` (an admin URL; default
//! [`DEFAULT_ADMIN_URL`]); each check gets its own database, copied from a template this test
//! binary migrates once, and dropped when the check ends, passed or failed. Databases left by
//! processes that are gone (the templates among them) are dropped by the next run. Without a
//! server the checks are skipped (saying so on stderr), except under CI, where they fail.

use grantkeeper_store::{PostgresStore, StoreOptions};
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection, Executor};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;
use tokio::sync::OnceCell;
use url::Url;

const ADMIN_URL_ENV: &str = "GRANTKEEPER_TEST_POSTGRES";
const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Every database these checks make is named so, then `<pid>_...` (not the store tests'
/// prefix: each suite cleans up only after itself).
const PREFIX: &str = "gk_broker_test_";
const REACH_TIMEOUT: Duration = Duration::from_secs(5);

fn admin_url() -> String {
    std::env::var(ADMIN_URL_ENV).unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// The admin URL as it may be printed: without its password.
fn shown_admin_url() -> String {
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

fn url_of(database: &str) -> String {
    let mut url = Url::parse(&admin_url()).expect("the admin URL parses");
    url.set_path(database);
    url.to_string()
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

enum Server {
    Ready { template: String },
    Unreachable(String),
}

static SERVER: OnceCell<Server> = OnceCell::const_new();
static SKIP_SAID: AtomicBool = AtomicBool::new(false);
static NEXT_DATABASE: AtomicU32 = AtomicU32::new(1);

async fn template() -> Option<&'static str> {
    match SERVER.get_or_init(prepare_server).await {
        Server::Ready { template } => Some(template),
        Server::Unreachable(why) => {
            let at = shown_admin_url();
            if std::env::var_os("CI").is_some() {
                panic!(
                    "PostgreSQL not reachable at {at} ({why}): CI must test it; start the \
                     server or point {ADMIN_URL_ENV} at one"
                );
            }
            if !SKIP_SAID.swap(true, Ordering::Relaxed) {
                let _ = writeln!(
                    std::io::stderr(),
                    "skipped: PostgreSQL not reachable at {at} ({why})"
                );
            }
            None
        }
    }
}

async fn prepare_server() -> Server {
    let mut admin =
        match tokio::time::timeout(REACH_TIMEOUT, PgConnection::connect(&admin_url())).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Server::Unreachable(e.to_string()),
            Err(_) => return Server::Unreachable("no answer".into()),
        };
    drop_stale_databases(&mut admin).await;
    let template = format!("{PREFIX}{}_template", std::process::id());
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

async fn drop_stale_databases(admin: &mut PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE starts_with(datname, $1)")
            .bind(PREFIX)
            .fetch_all(&mut *admin)
            .await
            .unwrap();
    let me = std::process::id().to_string();
    for name in names {
        let Some(pid) = name
            .strip_prefix(PREFIX)
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
    // FORCE: the stores of a failed check may still hold connections.
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

/// A database of one check, dropped when this is dropped.
pub struct TestDatabase {
    name: String,
    pub url: String,
}

impl TestDatabase {
    /// A copy of the migrated template; None when the checks are skipped.
    pub async fn migrated() -> Option<TestDatabase> {
        let template = template().await?;
        let n = NEXT_DATABASE.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}_{n}", std::process::id());
        let mut admin = PgConnection::connect(&admin_url()).await.unwrap();
        admin
            .execute(AssertSqlSafe(format!(
                "CREATE DATABASE {} TEMPLATE {}",
                quoted(&name),
                quoted(template)
            )))
            .await
            .unwrap();
        admin.close().await.unwrap();
        let url = url_of(&name);
        Some(TestDatabase { name, url })
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
