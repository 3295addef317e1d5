//! The demo page and the admin console in a real browser: `grantkeeper dev` as a person runs
//! it, driven through Debian's chromium and chromium-driver over WebDriver. One `dev` and one
//! browser serve every scenario, one after another. Without Chromium the test says `skipped`,
//! except under `CI=true`, where it fails. A failing scenario saves a screenshot and the page
//! source of each window under `target/browser-artifacts/<scenario>/`.
//!
//! With `GRANTKEEPER_SCREENSHOTS=1` the tour also writes the README's pictures into
//! `docs/screenshots/` (DEVELOPERS.md).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "browser/harness.rs"]
#[macro_use]
mod harness;

#[path = "browser/web.rs"]
mod web;

#[path = "browser/admin.rs"]
mod admin;

#[path = "browser/tour.rs"]
mod tour;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_the_console_as_a_person_uses_them() {
    let scenarios = scenarios![
        web::a_signed_out_load_logs_no_error_and_the_consent_popup_shows_allow => (1280, 900),
        web::a_revocation_shows_once_and_the_repair_clears_it => (1280, 900),
        web::a_double_click_adds_one_file_and_deleting_asks_once => (1280, 900),
        web::with_the_network_down_the_files_stay_and_the_page_says_so => (1280, 900),
        web::granular_consent_then_drive_for_this_account_only => (375, 812),
        web::a_sign_in_without_offline_access_is_repaired_from_the_page => (1024, 800),
        web::disconnecting_asks_once_and_the_next_person_sees_nothing_of_it => (375, 812),
        admin::the_console_fits_both_widths_and_says_what_happened => (1280, 900),
        admin::chart_labels_never_overlap => (1280, 900),
        admin::the_jobs_page_draws_each_job_s_bar => (1280, 900),
        tour::the_page_and_the_console_at_both_widths => (1280, 900),
    ];
    harness::run_scenarios(&scenarios).await;
}
