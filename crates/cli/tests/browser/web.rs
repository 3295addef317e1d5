//! The demo page: sign in through Google Identity Services' popup, Drive on the offline path,
//! granular and incremental consent, a revoked grant shown once and repaired, disconnect and
//! sign-out; what the page says at each step, and where.

use crate::harness::{Browser, Dev};
use serde_json::Value;

pub const DRIVE: &str = "https://www.googleapis.com/auth/drive.appdata";

/// Loads the page and waits until Google Identity Services is ready.
pub async fn open_page(b: &Browser, dev: &Dev) {
    b.goto(&format!("{}/", dev.url)).await;
    b.until(
        "!document.getElementById('signin').disabled",
        "Identity Services to load",
    )
    .await;
}

/// Signs in from the page as `email`, unticking `untick` in the consent popup.
pub async fn sign_in(b: &Browser, dev: &Dev, email: &str, untick: &[&str]) {
    open_page(b, dev).await;
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
        .js("Array.from(document.querySelectorAll('#files li[data-file-id] .name')).map((s) => s.textContent)")
        .await;
    serde_json::from_value(v).unwrap()
}

/// Files in the user's app folder, as the emulator holds them.
async fn drive_files(dev: &Dev, email: &str) -> Vec<Value> {
    let drive = dev
        .emulator("GET", &format!("drive?email={email}"), None)
        .await;
    drive["files"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|f| {
            f["name"] != "appDataFolder" && f["mimeType"] != "application/vnd.google-apps.folder"
        })
        .collect()
}

pub async fn a_signed_out_load_logs_no_error_and_the_consent_popup_shows_allow(
    b: &Browser,
    dev: &Dev,
) {
    open_page(b, dev).await;
    // The page asks nothing it knows would be refused, and the browser finds its icon.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(b.console_errors().await, Vec::<String>::new());
    assert!(b.messages().await.is_empty(), "{:?}", b.messages().await);
    // The header's text starts where the page's does, at both widths.
    for (width, height) in [(1280, 900), (375, 812)] {
        b.resize(width, height).await;
        let lefts = b
            .js("[document.querySelector('.brand').getBoundingClientRect().left, document.getElementById('welcome').getBoundingClientRect().left]")
            .await;
        assert_eq!(lefts[0], lefts[1], "header and page at {width} px");
    }
    b.resize(1280, 900).await;

    // Google Identity Services' popup is 500 x 600: the consent page keeps Allow in view, and
    // names the app as a person knows it.
    b.click("#signin").await;
    b.to_popup().await;
    b.resize(500, 600).await;
    b.until("document.getElementById('allow')", "the consent page")
        .await;
    let heading = b.text("h1").await;
    assert_eq!(
        heading,
        "grantkeeper demo wants access to your Google Account"
    );
    let allow = b
        .js("(() => { const r = document.getElementById('allow').getBoundingClientRect(); return r.top >= 0 && r.bottom <= window.innerHeight; })()")
        .await;
    assert_eq!(allow, Value::Bool(true), "Allow is below the fold");
    b.client.clone().close_window().await.unwrap();
    b.to_main().await;
    b.until(
        "document.getElementById('signin-msg').textContent.includes('closed')",
        "the closed-popup message",
    )
    .await;
    assert_eq!(
        b.messages().await,
        ["Google's window was closed; nothing changed."]
    );
    assert!(
        !b.js("document.getElementById('signin').disabled")
            .await
            .as_bool()
            .unwrap()
    );
}

pub async fn a_revocation_shows_once_and_the_repair_clears_it(b: &Browser, dev: &Dev) {
    sign_in(b, dev, "ann@example.com", &[]).await;
    assert_eq!(b.text("#state").await, "active");
    b.until("document.querySelector('#files li')", "the file list")
        .await;
    assert!(b.messages().await.is_empty(), "{:?}", b.messages().await);
    let sub = b.text("#sub").await;

    // The offline job refreshes at Google and says when the new token expires.
    let before = dev.emulator("GET", "stats", None).await["refreshes"]
        .as_u64()
        .unwrap();
    b.click("#run-job").await;
    b.until(
        "document.getElementById('drive-msg').textContent.startsWith('The job refreshed')",
        "the job",
    )
    .await;
    assert_eq!(
        dev.emulator("GET", "stats", None).await["refreshes"],
        before + 1
    );
    // The refresh time is shown as a person reads it, the exact time on hover.
    let refreshed = b
        .js("(() => { const t = document.querySelector('#last-refresh time'); return t && [t.textContent, t.title]; })()")
        .await;
    assert!(
        refreshed[0]
            .as_str()
            .is_some_and(|t| !t.contains('T') && !t.is_empty()),
        "{refreshed}"
    );
    assert!(refreshed[1].as_str().is_some_and(|t| !t.is_empty()));

    // Google revokes every grant of the user; the next Drive call finds out.
    b.click("#emulator-revoke").await;
    b.until(
        "document.getElementById('emulator-msg').textContent.startsWith('Google revoked')",
        "the emulator's revocation",
    )
    .await;
    // On a phone, scrolled down to the button, as a person is when they press it.
    b.resize(375, 812).await;
    b.js("document.getElementById('reload-files').scrollIntoView({block: 'end'})")
        .await;
    b.click("#reload-files").await;
    b.until(
        "!document.getElementById('grant-notice').hidden",
        "the revoked notice",
    )
    .await;
    assert_eq!(b.text("#state").await, "revoked");
    // Where the person is looking, not out of sight.
    assert!(b.in_view("#grant-notice").await);
    b.resize(1280, 900).await;
    // One message: the grant's state in the Drive card, in words meant for the person, with
    // the one action that repairs it; the server's detail only behind "Details".
    let shown = b.messages().await;
    assert_eq!(shown.len(), 1, "{shown:?}");
    let notice = &shown[0];
    assert!(
        notice.starts_with("Google no longer lets this app act for you"),
        "{notice}"
    );
    for internal in ["invalid_grant", "grant_revoked", "100", "they must"] {
        assert!(!notice.contains(internal), "{internal} in {notice}");
    }
    assert!(b.visible("#repair").await);
    assert!(b.visible("#grant-notice-details summary").await);
    let detail = b
        .js("document.getElementById('grant-notice-reason').textContent")
        .await;
    assert!(
        detail
            .as_str()
            .is_some_and(|d| d.contains("revoked at Google")),
        "{detail}"
    );
    assert!(
        !b.visible("#drive-granted").await && !b.visible("#drive-missing").await,
        "no Drive controls on a dead grant"
    );
    assert!(!b.visible("#scopes").await);
    assert!(b.text("#no-scopes").await.starts_with("None"));
    assert!(b.text("#offline").await.starts_with("no"));
    b.assert_accessible("the revoked state").await;
    let (_, user) = dev.v1("GET", &format!("users/{sub}")).await;
    assert_eq!(user["grant"]["state"], "revoked", "{user}");

    // The repair: consent again; no message is left once it worked.
    b.click("#repair").await;
    b.consent("ann@example.com", &[]).await;
    b.until(
        "document.getElementById('state').textContent === 'active'",
        "the repaired grant",
    )
    .await;
    b.until("document.querySelector('#files li')", "the files again")
        .await;
    assert_eq!(b.messages().await, Vec::<String>::new());
    assert!(b.text("#offline").await.starts_with("yes"));
    assert!(b.text("#scopes").await.contains("drive.appdata"));
    let (_, user) = dev.v1("GET", &format!("users/{sub}")).await;
    assert_eq!(user["grant"]["state"], "active", "{user}");
}

pub async fn a_double_click_adds_one_file_and_deleting_asks_once(b: &Browser, dev: &Dev) {
    sign_in(b, dev, "dora@example.com", &[]).await;
    b.until("document.querySelector('#files li')", "the file list")
        .await;
    assert_eq!(b.text("#files").await, "No files yet.");
    b.fill("#file-name", "once.txt").await;
    b.double_click("#add").await;
    b.until(
        "document.getElementById('drive-msg').textContent === 'Added once.txt.'",
        "the file to be added",
    )
    .await;
    // Said where the person is looking.
    assert!(b.in_view("#drive-msg").await);
    // Let a second request, were there one, land too.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(drive_files(dev, "dora@example.com").await.len(), 1);
    assert_eq!(file_names(b).await, ["once.txt"]);
    // The size and time in words, not an ISO timestamp.
    let meta = b.text("#files li[data-file-id] .meta").await;
    assert!(meta.contains("bytes") && !meta.contains('Z'), "{meta}");

    // Deleting asks once, in the row; keeping it changes nothing.
    b.click("#files li[data-file-id] button.delete").await;
    assert!(
        b.text("#files li[data-file-id]")
            .await
            .contains("Delete once.txt?")
    );
    b.click("#files li[data-file-id] button[aria-label='Keep once.txt']")
        .await;
    assert_eq!(drive_files(dev, "dora@example.com").await.len(), 1);
    b.click("#files li[data-file-id] button.delete").await;
    b.click("#files li[data-file-id] button[aria-label='Yes, delete once.txt']")
        .await;
    b.until(
        "!document.querySelector('#files li[data-file-id]')",
        "the file to go",
    )
    .await;
    assert_eq!(b.messages().await, ["Deleted once.txt."]);
    assert!(drive_files(dev, "dora@example.com").await.is_empty());
    b.assert_accessible("the page with Drive").await;
}

pub async fn with_the_network_down_the_files_stay_and_the_page_says_so(b: &Browser, dev: &Dev) {
    sign_in(b, dev, "nina@example.com", &[]).await;
    b.until("document.querySelector('#files li')", "the file list")
        .await;
    b.fill("#file-name", "kept.txt").await;
    b.click("#add").await;
    b.until(
        "document.querySelector('#files li[data-file-id]')",
        "the new file",
    )
    .await;

    b.set_offline(true).await;
    b.click("#reload-files").await;
    b.until(
        "document.getElementById('drive-msg').classList.contains('error')",
        "the failure",
    )
    .await;
    let shown = b.messages().await;
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert!(
        shown[0].starts_with("Could not reach the server. Check your connection"),
        "{shown:?}"
    );
    assert!(!shown[0].contains("refused"), "{shown:?}");
    // The files are not gone: they stay listed until the server can be asked again.
    assert_eq!(file_names(b).await, ["kept.txt"]);
    assert!(b.visible("#drive-granted").await);
    assert_eq!(b.text("#state").await, "active");

    // Back online, the next reload clears the failure.
    b.set_offline(false).await;
    b.click("#reload-files").await;
    b.until(
        "document.getElementById('drive-msg').textContent === 'Files reloaded from Drive.'",
        "the reload",
    )
    .await;
    assert_eq!(b.messages().await, ["Files reloaded from Drive."]);
    assert_eq!(file_names(b).await, ["kept.txt"]);
}

pub async fn granular_consent_then_drive_for_this_account_only(b: &Browser, dev: &Dev) {
    // The person unticks Drive in Google's consent: the Drive card asks for it.
    sign_in(b, dev, "bob@example.com", &[DRIVE]).await;
    assert!(!b.text("#scopes").await.contains("drive.appdata"));
    assert!(
        b.visible("#allow-drive").await,
        "the page asks for the rest"
    );
    assert!(!b.visible("#drive-granted").await);
    assert!(b.messages().await.is_empty(), "{:?}", b.messages().await);
    b.assert_accessible("the page without Drive, 375 px").await;
    let sub = b.text("#sub").await;

    // In the incremental popup the person picks another account: refused, and the page stays
    // Bob's.
    b.click("#allow-drive").await;
    b.consent("carol@example.com", &[]).await;
    b.until(
        "document.getElementById('drive-msg').textContent.includes('another account')",
        "the refusal",
    )
    .await;
    let shown = b.messages().await;
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert!(
        shown[0].starts_with(
            "Google's window returned another account. Choose bob@example.com there to continue."
        ),
        "{shown:?}"
    );
    assert_eq!(b.text("#sub").await, sub);
    assert!(b.text("#email").await.starts_with("bob@example.com"));
    let me = b
        .js("fetch('/me', {credentials: 'same-origin'}).then((r) => r.json()).then((m) => m.user.email)")
        .await;
    assert_eq!(me, "bob@example.com", "the session is still Bob's");
    b.assert_accessible("the refusal, 375 px").await;

    // Drive for Bob: the earlier scopes are kept, and the message says what changed.
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
    assert_eq!(
        b.messages().await,
        ["Drive access granted: the server can now reach your app folder."]
    );
    // At phone width the form's labels sit above their inputs.
    let stacked = b
        .js("(() => { const l = document.querySelector('label[for=file-content]').getBoundingClientRect(); const i = document.getElementById('file-content').getBoundingClientRect(); return l.bottom <= i.top + 1; })()")
        .await;
    assert_eq!(
        stacked,
        Value::Bool(true),
        "the Content label is above its input"
    );
    b.assert_accessible("the page with Drive, 375 px").await;

    // Sign out ends the browser's session but keeps the offline grant.
    b.click("#signout").await;
    b.until(
        "!document.getElementById('signed-out').hidden",
        "the signed-out page",
    )
    .await;
    assert_eq!(
        b.messages().await,
        ["Signed out. The server keeps its offline access until you disconnect."]
    );
    let (_, user) = dev.v1("GET", &format!("users/{sub}")).await;
    assert_eq!(user["grant"]["state"], "active", "{user}");
    let (status, _) = dev.v1("POST", &format!("users/{sub}/token")).await;
    assert_eq!(status, 200, "the server still acts for the user");
}

pub async fn a_sign_in_without_offline_access_is_repaired_from_the_page(b: &Browser, dev: &Dev) {
    open_page(b, dev).await;
    // Erin's Android app signed her in without offline access: the server holds no refresh
    // token. (Her browser then shares that session.)
    let status = b
        .js(r#"(async () => {
            const config = JSON.parse(document.getElementById('gk-config').textContent);
            const clients = await (await fetch('/_google/_emulator/clients')).json();
            const minted = await fetch('/_google/_emulator/codes', {method: 'POST',
              headers: {'Content-Type': 'application/json'},
              body: JSON.stringify({email: 'erin@example.com', client_id: config.client_id,
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
        "!document.getElementById('grant-notice').hidden",
        "the needs-consent notice",
    )
    .await;
    assert_eq!(b.text("#state").await, "needs consent");
    let shown = b.messages().await;
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert!(shown[0].contains("no offline access"), "{shown:?}");
    assert!(b.text("#offline").await.starts_with("no"));
    assert!(!b.visible("#drive-missing").await && !b.visible("#drive-granted").await);
    b.assert_accessible("the needs-consent state").await;

    b.click("#repair").await;
    b.consent("erin@example.com", &[]).await;
    b.until(
        "document.getElementById('state').textContent === 'active'",
        "the repaired grant",
    )
    .await;
    assert!(b.text("#offline").await.starts_with("yes"));
    assert_eq!(b.messages().await, Vec::<String>::new());
    let sub = b.text("#sub").await;
    let (status, token) = dev.v1("POST", &format!("users/{sub}/token")).await;
    assert_eq!(status, 200, "the server acts offline for erin now: {token}");
}

pub async fn disconnecting_asks_once_and_the_next_person_sees_nothing_of_it(
    b: &Browser,
    dev: &Dev,
) {
    sign_in(b, dev, "fred@example.com", &[]).await;
    b.until("document.querySelector('#files li')", "the file list")
        .await;
    let sub = b.text("#sub").await;
    // Fred's grant is revoked and the page shows it.
    b.click("#emulator-revoke").await;
    b.until(
        "document.getElementById('emulator-msg').textContent.startsWith('Google revoked')",
        "the emulator's revocation",
    )
    .await;
    b.click("#run-job").await;
    b.until(
        "!document.getElementById('grant-notice').hidden",
        "the revoked notice",
    )
    .await;

    // Disconnect asks once; Cancel changes nothing.
    let revocations = dev.emulator("GET", "stats", None).await["revocations"]
        .as_u64()
        .unwrap();
    b.click("#disconnect").await;
    assert!(b.visible("#disconnect-confirm").await);
    assert!(!b.visible("#disconnect").await);
    b.assert_accessible("the disconnect question").await;
    b.click("#disconnect-no").await;
    assert!(!b.visible("#disconnect-confirm").await);
    let me = b
        .js("fetch('/me', {credentials: 'same-origin'}).then((r) => r.status)")
        .await;
    assert_eq!(me, Value::from(200), "still signed in");
    b.click("#disconnect").await;
    b.click("#disconnect-yes").await;
    b.until(
        "!document.getElementById('signed-out').hidden",
        "the signed-out page",
    )
    .await;
    let shown = b.messages().await;
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert!(shown[0].starts_with("Disconnected"), "{shown:?}");
    let (_, user) = dev.v1("GET", &format!("users/{sub}")).await;
    assert_eq!(user["grant"]["state"], "revoked", "{user}");
    let me = b
        .js("fetch('/me', {credentials: 'same-origin'}).then((r) => r.status)")
        .await;
    assert_eq!(me, Value::from(401), "the session ended");
    // The grant was revoked at Google already: nothing more to revoke there.
    assert_eq!(
        dev.emulator("GET", "stats", None).await["revocations"],
        revocations
    );

    // The next person in this tab sees nothing of Fred's trouble.
    b.click("#signin").await;
    b.consent("gina@example.com", &[]).await;
    b.until(
        "document.getElementById('email').textContent.startsWith('gina@example.com')",
        "the next person's profile",
    )
    .await;
    b.until("document.querySelector('#files li')", "the file list")
        .await;
    assert_eq!(b.messages().await, Vec::<String>::new());
    assert_eq!(b.text("#state").await, "active");
}
