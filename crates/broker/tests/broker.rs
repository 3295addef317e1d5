//! The broker against the real Google emulator over HTTP on 127.0.0.1, with a real SQLite
//! file (and, for the sweeps and the checks of several instances on one database, a real
//! PostgreSQL database too) and a real vault. One test binary; modules beneath it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// Runs each named check (an `async fn(Env)`) on a SQLite file and on PostgreSQL.
macro_rules! on_every_store {
    ($($check:ident),* $(,)?) => {$(
        mod $check {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$check(super::Env::start().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if let Some(env) = super::Env::start_postgres().await {
                    super::$check(env).await;
                }
            }
        }
    )*};
}

mod broker {
    pub mod concurrency;
    pub mod harness;
    pub mod instances;
    pub mod metrics;
    pub mod postgres;
    pub mod queued_revocation;
    pub mod revocation;
    pub mod sweep;
    pub mod tokens;
    pub mod warnings;
}
