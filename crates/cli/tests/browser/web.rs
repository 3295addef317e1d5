//! The demo page: sign in through Google Identity Services' popup, Drive on the offline path,
//! granular and incremental consent, a revoked grant repaired, disconnect and sign-out.

use crate::harness::{Browser, Dev, with_browser};
use serde_json::Value;
use std::sync::Arc;

const DRIVE: &str = "https://www.googleapis.com/auth/drive.appdata";

/// Signs in from the page as `email`, unticking `untick` in the consent popup.
async fn sign_in(b: &Browser, dev: &Dev, email: &str, untick: &[&str]) {
    b.goto(&format!("{}/", dev.url)).await;
    b.until(
        "!document.getElementById('signin').disabled",
        "Identity Services to load",
    )
    .await;
    b.assert_accessible("the signed-out page").await;
    b.click("#signin").await;
    b.consent(email, untick).await;
    b.until(
        &format!("document.getElementById('email').textContent.startsWith('{email}')"),
        "the profile",
    )
    .await;
}

async fn file_names(b: &Browser) -> Vec<String> {
    let v = b
        .js("Array.from(document.querySelectorAll('#files li[data-file-id] span')).map((s) => s.textContent)")
        .await;
    serde_json::from_value(v).unwrap()
}

async fn sub_of(b: &Browser) -> String {
    b.text("#sub").await
}

#[tokio::test]
async fn a_person_signs_in_uses_drive_repairs_a_revoked_grant_and_disconnects() {
    let dev = Dev::start();
    with_browser(
        "signs_in_uses_drive_and_disconnects",
        1200,
        900,
        |b: Arc<Browser>| async move {
            sign_in(&b, &dev, "alice@example.com", &[]).await;
            assert_eq!(b.text("#state").await, "active");
            let scopes = b.text("#scopes").await;
            assert!(
                scopes.contains("drive.appdata") && scopes.contains("openid"),
                "{scopes}"
            );
            assert!(b.text("#offline").await.starts_with("yes"));
            b.until("document.querySelector('#files li')", "the file list")
                .await;
            assert_eq!(b.text("#files").await, "No files yet.");
            b.assert_accessible("the signed-in page").await;

            // A file added by the server on the offline path, then deleted.
            b.fill("#file-name", "hello.txt").await;
            b.fill("#file-content", "written from the browser test")
                .await;
            b.click("#add").await;
            b.until(
                "document.querySelector('#files li[data-file-id]')",
                "the new file",
            )
            .await;
            let names = file_names(&b).await;
            assert_eq!(names.len(), 1);
            assert!(names[0].starts_with("hello.txt ("), "{names:?}");
            let sub = sub_of(&b).await;
            let drive = dev
                .emulator("GET", "drive?email=alice@example.com", None)
                .await;
            assert!(
                drive.to_string().contains("hello.txt"),
                "Drive holds the file: {drive}"
            );
            b.click("#files li[data-file-id] button").await;
            b.until(
                "!document.querySelector('#files li[data-file-id]')",
                "the file to go",
            )
            .await;
            assert!(
                b.text("#drive-status")
                    .await
                    .starts_with("Deleted hello.txt")
            );

            // The offline job refreshes at Google.
            let before = dev.emulator("GET", "stats", None).await["refreshes"]
                .as_u64()
                .unwrap();
            b.click("#run-job").await;
            b.until(
                "document.getElementById('drive-status').textContent.startsWith('Refreshed')",
                "the job",
            )
            .await;
            let after = dev.emulator("GET", "stats", None).await["refreshes"]
                .as_u64()
                .unwrap();
            assert_eq!(after, before + 1);

            // Google revokes every grant of the user (a password change): the next Drive call
            // finds out, and the page says so and offers the repair.
            b.click("#emulator-revoke").await;
            b.until(
                "document.getElementById('status').textContent.startsWith('Google revoked')",
                "the emulator's revocation",
            )
            .await;
            b.click("#reload-files").await;
            b.until(
                "!document.getElementById('grant-banner').hidden",
                "the revoked banner",
            )
            .await;
            assert_eq!(b.text("#state").await, "revoked");
            let banner = b.text("#grant-banner-text").await;
            assert!(banner.contains("revoked"), "{banner}");
            assert!(b.text("#status").await.contains("grant_revoked"));
            assert!(
                !b.visible("#drive-granted").await,
                "no Drive controls on a dead grant"
            );
            b.assert_accessible("the revoked state").await;
            let (_, user) = dev.v1("GET", &format!("users/{sub}")).await;
            assert_eq!(user["grant"]["state"], "revoked", "{user}");

            b.click("#repair").await;
            b.consent("alice@example.com", &[]).await;
            b.until(
                "document.getElementById('state').textContent === 'active'",
                "the repaired grant",
            )
            .await;
            assert!(b.text("#offline").await.starts_with("yes"));
            assert!(!b.visible("#grant-banner").await);
            b.until("document.querySelector('#files li')", "the files again")
                .await;
            let (_, user) = dev.v1("GET", &format!("users/{sub}")).await;
            assert_eq!(user["grant"]["state"], "active", "{user}");

            // Disconnect: revoked at Google, tokens and sessions gone.
            let revocations = dev.emulator("GET", "stats", None).await["revocations"]
                .as_u64()
                .unwrap();
            b.click("#disconnect").await;
            b.until(
                "!document.getElementById('signed-out').hidden",
                "the signed-out page",
            )
            .await;
            assert!(b.text("#status").await.starts_with("Disconnected"));
            let stats = dev.emulator("GET", "stats", None).await;
            assert_eq!(
                stats["revocations"].as_u64().unwrap(),
                revocations + 1,
                "{stats}"
            );
            let (_, user) = dev.v1("GET", &format!("users/{sub}")).await;
            assert_eq!(user["grant"]["state"], "revoked", "{user}");
            assert_eq!(
                user["grant"]["reason"], "disconnected by the user",
                "{user}"
            );
            let (status, body) = dev.v1("POST", &format!("users/{sub}/token")).await;
            assert_eq!(status, 409, "no token is held any more: {body}");
            let me = b
                .js("fetch('/me', {credentials: 'same-origin'}).then((r) => r.status)")
                .await;
            assert_eq!(me, Value::from(401), "the session ended");
        },
    )
    .await;
}

#[tokio::test]
async fn at_phone_width_granular_consent_then_drive_access_later_and_sign_out() {
    let dev = Dev::start();
    with_browser(
        "granular_then_incremental",
        375,
        800,
        |b: Arc<Browser>| async move {
            // The person unticks Drive in Google's consent.
            sign_in(&b, &dev, "bob@example.com", &[DRIVE]).await;
            assert!(
                b.text("#status").await.contains("without drive.appdata"),
                "{}",
                b.text("#status").await
            );
            assert!(!b.text("#scopes").await.contains("drive.appdata"));
            assert!(
                b.visible("#allow-drive").await,
                "the page asks for the rest"
            );
            assert!(!b.visible("#drive-granted").await);
            b.assert_accessible("the page without Drive, 375 px").await;

            // Incremental authorization: Drive alone, the earlier scopes kept.
            b.click("#allow-drive").await;
            b.consent("bob@example.com", &[]).await;
            b.until(
                "document.getElementById('scopes').textContent.includes('drive.appdata')",
                "the Drive scope",
            )
            .await;
            let scopes = b.text("#scopes").await;
            assert!(
                scopes.contains("openid") && scopes.contains("userinfo.email"),
                "{scopes}"
            );
            b.until("document.querySelector('#files li')", "the file list")
                .await;
            assert!(!b.visible("#allow-drive").await);
            b.fill("#file-name", "phone.txt").await;
            b.click("#add").await;
            b.until(
                "document.querySelector('#files li[data-file-id]')",
                "the new file",
            )
            .await;
            b.assert_accessible("the page with Drive, 375 px").await;

            // Sign out ends the browser's session but keeps the offline grant.
            let sub = b.text("#sub").await;
            b.click("#signout").await;
            b.until(
                "!document.getElementById('signed-out').hidden",
                "the signed-out page",
            )
            .await;
            assert!(b.text("#status").await.starts_with("Signed out"));
            let (_, user) = dev.v1("GET", &format!("users/{sub}")).await;
            assert_eq!(user["grant"]["state"], "active", "{user}");
            let (status, _) = dev.v1("POST", &format!("users/{sub}/token")).await;
            assert_eq!(status, 200, "the server still acts for the user");

            // Closing Google's popup without answering changes nothing and says so.
            b.click("#signin").await;
            b.to_popup().await;
            b.client.clone().close_window().await.unwrap();
            b.to_main().await;
            b.until(
                "document.getElementById('status').textContent.includes('closed')",
                "the closed-popup message",
            )
            .await;
            assert!(b.visible("#signin").await);
        },
    )
    .await;
}

#[tokio::test]
async fn a_sign_in_without_offline_access_is_repaired_from_the_page() {
    let dev = Dev::start();
    with_browser(
        "needs_consent_repaired",
        1024,
        800,
        |b: Arc<Browser>| async move {
            b.goto(&format!("{}/", dev.url)).await;
            b.until(
                "!document.getElementById('signin').disabled",
                "Identity Services to load",
            )
            .await;
            // Carol's Android app signed her in without offline access: the server holds no
            // refresh token. (Her browser then shares that session.)
            let status = b
                .js(r#"(async () => {
                const config = JSON.parse(document.getElementById('gk-config').textContent);
                const clients = await (await fetch('/_google/_emulator/clients')).json();
                const minted = await fetch('/_google/_emulator/codes', {method: 'POST',
                  headers: {'Content-Type': 'application/json'},
                  body: JSON.stringify({email: 'carol@example.com', client_id: config.client_id,
                    azp: clients.android, scope: 'openid email profile', redirect_uri: '',
                    access_type: 'online'})});
                const code = (await minted.json()).code;
                const r = await fetch('/authcode', {method: 'POST', credentials: 'same-origin',
                  headers: {'X-Requested-With': 'XmlHttpRequest',
                    'Content-Type': 'application/x-www-form-urlencoded'},
                  body: 'authCode=' + encodeURIComponent(code)});
                return r.status;
            })()"#)
                .await;
            assert_eq!(status, Value::from(200));
            b.goto(&format!("{}/", dev.url)).await;
            b.until(
                "!document.getElementById('grant-banner').hidden",
                "the needs-consent banner",
            )
            .await;
            assert_eq!(b.text("#state").await, "needs consent");
            assert!(
                b.text("#grant-banner-text")
                    .await
                    .contains("no offline grant")
            );
            assert!(b.text("#offline").await.starts_with("no"));
            assert!(!b.visible("#drive-missing").await && !b.visible("#drive-granted").await);
            b.assert_accessible("the needs-consent state").await;

            b.click("#repair").await;
            b.consent("carol@example.com", &[]).await;
            b.until(
                "document.getElementById('state').textContent === 'active'",
                "the repaired grant",
            )
            .await;
            assert!(b.text("#offline").await.starts_with("yes"));
            let sub = b.text("#sub").await;
            let (status, token) = dev.v1("POST", &format!("users/{sub}/token")).await;
            assert_eq!(
                status, 200,
                "the server acts offline for carol now: {token}"
            );
        },
    )
    .await;
}
