//! Test support shared by grantkeeper's test suites (a dev-dependency only, never linked into
//! the binary). Owns the PostgreSQL databases that checks make and drop, and the capture of
//! a test binary's logs; leaves everything else to each suite.
// Test support: a failed set-up is a failed check, said at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod logs;
pub mod postgres;

/// Says why a check cannot run here (a service or a program it needs is missing): under CI (the
/// `CI` variable set, to any value) that fails the check; elsewhere it returns, after printing
/// `skipped:` and the reason, and the check should stop there.
pub fn cannot_run(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{why}: CI must run this check");
    }
    eprintln!("skipped: {why}");
}
