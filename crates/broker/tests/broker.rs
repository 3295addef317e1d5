//! The broker against the real Google emulator over HTTP on 127.0.0.1, with a real SQLite
//! file (and, for the checks of several instances on one database, a real PostgreSQL
//! database too) and a real vault. One test binary; modules beneath it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

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
