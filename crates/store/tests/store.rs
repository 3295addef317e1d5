#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The store's one test binary: the conformance suite that every backend passes unchanged,
//! run here against SQLite files, and the checks particular to SQLite.

#[macro_use]
#[path = "store/conformance/mod.rs"]
mod conformance;

#[path = "store/sqlite.rs"]
mod sqlite;
