#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The store's one test binary: the conformance suite that every backend passes unchanged,
//! run here against SQLite files and PostgreSQL databases, the checks particular to each, and
//! those between the two.

#[macro_use]
#[path = "store/conformance/mod.rs"]
mod conformance;

#[path = "store/sqlite.rs"]
mod sqlite;

#[path = "store/postgres.rs"]
mod postgres;

#[path = "store/backends.rs"]
mod backends;
