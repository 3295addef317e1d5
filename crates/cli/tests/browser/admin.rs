//! The admin console in a browser: signed in with an API key, it lists the user the page
//! signed in, shows the grant's change of state, and draws its charts.

use crate::harness::{Browser, Dev, with_browser};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test]
async fn the_console_lists_the_user_shows_the_state_change_and_draws_charts() {
    let dev = Dev::start();
    with_browser("admin_console", 1280, 900, |b: Arc<Browser>| async move {
        // A person signs in on the page; Google then revokes the grant and the server finds out.
        b.goto(&format!("{}/", dev.url)).await;
        b.until("!document.getElementById('signin').disabled", "Identity Services to load").await;
        b.click("#signin").await;
        b.consent("carol@example.com", &[]).await;
        b.until("document.getElementById('state').textContent === 'active'", "the profile").await;
        let sub = b.text("#sub").await;
        b.click("#emulator-revoke").await;
        b.until("document.getElementById('status').textContent.startsWith('Google revoked')", "the revocation").await;
        b.click("#run-job").await;
        b.until("document.getElementById('state').textContent === 'revoked'", "the revoked state").await;

        // The console: a wrong key first, then the dev key.
        b.goto(&format!("{}/admin", dev.url)).await;
        b.assert_accessible("the console's sign-in").await;
        b.fill("#api-key", "gk_not_a_key").await;
        b.click("#login").await;
        b.until("document.getElementById('login-error')", "the refusal").await;
        b.fill("#api-key", &dev.api_key).await;
        b.click("#login").await;
        let row = format!("tr[data-sub='{sub}']");
        b.until(&format!("document.querySelector(\"{row}\")"), "the user's row").await;
        let state = b.js(&format!("document.querySelector(\"{row}\").dataset.state")).await;
        assert_eq!(state, "revoked");
        assert!(b.text(&row).await.contains("carol@example.com"));
        b.assert_accessible("the users page").await;

        // Search by state narrows the list; then the user's page.
        b.fill("#q", "carol").await;
        b.click("#search").await;
        b.until(&format!("document.querySelector(\"{row}\") && location.search.includes('q=carol')"), "the search").await;
        b.click(&format!("{row} a")).await;
        b.until("document.getElementById('history')", "the user's page").await;
        let history = b.text("#history").await;
        assert!(history.contains("active") && history.contains("revoked"), "{history}");
        let audit = b.text("#audit").await;
        assert!(audit.contains("sign_in") && audit.contains("offline_job"), "{audit}");
        assert!(audit.contains("grant_revoked"), "the failed job is recorded: {audit}");
        b.assert_accessible("the user's page").await;

        // The charts: the server flushes its activity every few seconds; wait for it.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            b.goto(&format!("{}/admin/activity?range=1h", dev.url)).await;
            let drawn = b
                .js("!!document.querySelector('svg#chart-activity path') && !!document.querySelector('svg#chart-states rect')")
                .await;
            if drawn == true {
                break;
            }
            assert!(Instant::now() < deadline, "the activity chart never showed the sign-in");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for chart in ["chart-activity", "chart-latency", "chart-states"] {
            let label = b
                .js(&format!("document.getElementById('{chart}').getAttribute('aria-label')"))
                .await;
            assert!(label.as_str().is_some_and(|l| !l.is_empty()), "{chart}: {label}");
            let size = b
                .js(&format!("document.getElementById('{chart}').getBoundingClientRect().width"))
                .await;
            assert!(size.as_f64().unwrap_or(0.0) > 100.0, "{chart} is drawn: {size}");
        }
        let states = b.text("#chart-states").await;
        assert!(states.contains("revoked"), "{states}");
        b.assert_accessible("the activity page").await;

        // At phone width the console still fits.
        b.client.set_window_size(375, 800).await.unwrap();
        b.goto(&format!("{}/admin/users", dev.url)).await;
        b.assert_accessible("the users page at 375 px").await;
        b.goto(&format!("{}/admin/activity", dev.url)).await;
        b.assert_accessible("the activity page at 375 px").await;

        b.click("#logout").await;
        b.until("document.getElementById('api-key')", "the sign-in form").await;
    })
    .await;
}
