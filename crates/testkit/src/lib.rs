//! Test support shared by grantkeeper's test suites (a dev-dependency only, never linked into
//! the binary). Owns the PostgreSQL databases that checks make and drop, and the capture of
//! a test binary's logs; leaves everything else to each suite.
// Test support: a failed set-up is a failed check, said at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod logs;
pub mod postgres;
