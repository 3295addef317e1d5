//! PostgreSQL databases for the checks that run on both stores: one per check, copied from a
//! template migrated once, dropped when the check ends; skipped without a server, except under
//! CI (see `grantkeeper_testkit::postgres`).

pub use grantkeeper_testkit::postgres::TestDatabase;
