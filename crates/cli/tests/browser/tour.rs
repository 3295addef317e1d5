//! A walk through the page's states and the console's pages at 1280x900 and 375x812, as the
//! README shows them: each state is checked at both widths, and with
//! `GRANTKEEPER_SCREENSHOTS=1` pictured into `docs/screenshots/`.

use crate::admin::console_sign_in;
use crate::harness::{Browser, Dev};
use crate::web::{open_page, sign_in};

const WIDE: (u32, u32) = (1280, 900);
const PHONE: (u32, u32) = (375, 812);

/// Checks the page at both widths, pictures it as `<name>-1280` and `<name>-375` with `css`
/// in view, and leaves the window wide.
async fn both_widths(b: &Browser, name: &str, css: &str) {
    for (width, height) in [WIDE, PHONE] {
        b.resize(width, height).await;
        b.assert_accessible(&format!("{name} at {width} px")).await;
        b.screenshot(&format!("{name}-{width}"), css).await;
    }
    b.resize(WIDE.0, WIDE.1).await;
}

pub async fn the_page_and_the_console_at_both_widths(b: &Browser, dev: &Dev) {
    open_page(b, dev).await;
    both_widths(b, "page-signed-out", "body").await;

    sign_in(b, dev, "alice@example.com", &[]).await;
    b.until("document.querySelector('#files li')", "the file list")
        .await;
    b.fill("#file-name", "notes.txt").await;
    b.click("#add").await;
    b.until(
        "document.querySelector('#files li[data-file-id]')",
        "the new file",
    )
    .await;
    b.click("#run-job").await;
    b.until(
        "document.getElementById('drive-msg').textContent.startsWith('The job refreshed')",
        "the job",
    )
    .await;
    both_widths(b, "page-signed-in", "body").await;

    b.click("#emulator-revoke").await;
    b.until(
        "document.getElementById('emulator-msg').textContent.startsWith('Google revoked')",
        "the emulator's revocation",
    )
    .await;
    b.click("#reload-files").await;
    b.until(
        "!document.getElementById('grant-notice').hidden",
        "the revoked notice",
    )
    .await;
    assert_eq!(b.messages().await.len(), 1);
    both_widths(b, "page-revoked", "#profile").await;

    b.click("#repair").await;
    b.consent("alice@example.com", &[]).await;
    b.until(
        "document.getElementById('state').textContent === 'active'",
        "the repaired grant",
    )
    .await;
    b.until(
        "document.querySelector('#files li[data-file-id]')",
        "the files again",
    )
    .await;
    assert!(b.messages().await.is_empty());
    both_widths(b, "page-repaired", "#profile").await;
    let alice = b.text("#sub").await;

    console_sign_in(b, dev).await;
    both_widths(b, "console-users", "body").await;
    b.click(&format!("tr[data-sub='{alice}'] a.row-link")).await;
    b.until("document.getElementById('history')", "a user's page")
        .await;
    both_widths(b, "console-user", "body").await;
    b.goto(&format!("{}/admin/activity?range=1h", dev.url))
        .await;
    both_widths(b, "console-activity", "body").await;
}
