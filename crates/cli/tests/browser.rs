//! The demo page and the admin console in a real browser: `grantkeeper dev` as a person runs
//! it, driven through Debian's chromium and chromium-driver over WebDriver. Without them the
//! tests say `skipped`, except under `CI=true`, where they fail. On a failure each test saves a
//! screenshot and the page source under `target/browser-artifacts/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "browser/harness.rs"]
mod harness;

#[path = "browser/web.rs"]
mod web;

#[path = "browser/admin.rs"]
mod admin;
