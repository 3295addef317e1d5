//! The server over real HTTP on 127.0.0.1, against the Google emulator, with a real SQLite
//! file (and, for the checks listed in `on_both_stores!`, a real PostgreSQL database too). One
//! test binary; modules beneath it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// Runs each named check (an `async fn(Backend)` that starts its `TestApp` with
/// `TestApp::start_on`) on a SQLite file and on a PostgreSQL database of its own: a module per
/// check, with a test `sqlite` and a test `postgres`.
macro_rules! on_both_stores {
    ($($check:ident),* $(,)?) => {$(
        mod $check {
            use crate::server::harness::Backend;

            #[tokio::test]
            async fn sqlite() {
                super::$check(Backend::Sqlite).await;
            }

            #[tokio::test]
            async fn postgres() {
                super::$check(Backend::Postgres).await;
            }
        }
    )*};
}

mod server {
    pub mod admin;
    pub mod bad_input;
    pub mod faults;
    pub mod harness;
    pub mod jobs;
    pub mod limits;
    pub mod master_keys;
    pub mod metrics;
    pub mod no_leaks;
    pub mod page;
    pub mod revocations;
    pub mod risc;
    pub mod rotation;
    pub mod secrets;
    pub mod seen;
    pub mod signin;
    pub mod store_faults;
    pub mod v1;
    pub mod workers;
}
