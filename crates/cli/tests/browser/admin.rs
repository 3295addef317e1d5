//! The admin console in a browser: signed in with an API key, its tables fit at 1280 px and
//! become cards at 375 px, revoking asks once and says what happened, the Drive call that met
//! a revocation is in the audit trail, chart labels never overlap, and signing out says so.

use crate::harness::{Browser, Dev};
use serde_json::Value;

/// Signs in to the console with the dev key, after a wrong key is refused.
pub async fn console_sign_in(b: &Browser, dev: &Dev) {
    b.goto(&format!("{}/admin", dev.url)).await;
    b.assert_accessible("the console's sign-in").await;
    b.fill("#api-key", "gk_not_a_key").await;
    b.click("#login").await;
    b.until("document.getElementById('login-error')", "the refusal")
        .await;
    b.fill("#api-key", &dev.api_key).await;
    b.click("#login").await;
    b.until("document.getElementById('users')", "the users")
        .await;
}

/// At phone width, every visible table cell is at least 8 characters wide, and the page no
/// wider than the window: no column squeezed into a tower of broken words.
async fn assert_cells_fit(b: &Browser, what: &str) {
    let narrow = b
        .js(r#"(() => {
            const out = [];
            for (const td of document.querySelectorAll('main table td')) {
              if (td.getClientRects().length === 0 || td.closest('.vh')) continue;
              const probe = document.createElement('span');
              probe.textContent = '00000000';
              probe.style.cssText = 'position:absolute;visibility:hidden;white-space:nowrap';
              td.append(probe);
              const eight = probe.getBoundingClientRect().width;
              probe.remove();
              const cs = getComputedStyle(td);
              const room = td.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
              if (room + 0.5 < eight) out.push(td.dataset.label + ': ' + Math.round(room) + ' < ' + Math.round(eight));
            }
            return out;
        })()"#)
        .await;
    assert_eq!(
        narrow,
        Value::Array(vec![]),
        "{what}: cells narrower than 8 characters"
    );
    b.assert_accessible(what).await;
}

pub async fn the_console_fits_both_widths_and_says_what_happened(b: &Browser, dev: &Dev) {
    // Two users: one whose grant Google revoked, found by a Drive call of the page; one
    // active, to revoke from the console.
    let (cookie, gone) = dev.sign_in("hank@example.com").await;
    assert_eq!(dev.list_files(&cookie).await, 200);
    dev.emulator("POST", "users/hank@example.com/revoke", None)
        .await;
    assert_eq!(dev.list_files(&cookie).await, 409);
    let (_, active) = dev.sign_in("ivy@example.com").await;

    console_sign_in(b, dev).await;
    let header = b.text("header .who").await;
    assert_eq!(header, "Signed in with key dev");
    // At 1280 px every column of the users table is in view, without scrolling.
    let fits = b
        .js(r#"(() => { const t = document.getElementById('users'); const box = t.parentElement;
            return [t.scrollWidth, box.clientWidth, t.getBoundingClientRect().right <= window.innerWidth]; })()"#)
        .await;
    assert!(
        fits[0].as_f64().unwrap() <= fits[1].as_f64().unwrap() && fits[2] == true,
        "the users table overflows at 1280 px: {fits}"
    );
    let headers = b
        .js("Array.from(document.querySelectorAll('#users th')).map((th) => th.textContent)")
        .await;
    assert_eq!(
        headers,
        serde_json::json!([
            "User",
            "Grant",
            "Scopes",
            "Last refresh",
            "Last error",
            "Updated"
        ])
    );
    let row = format!("tr[data-sub='{gone}']");
    assert_eq!(
        b.js(&format!("document.querySelector(\"{row}\").dataset.state"))
            .await,
        "revoked"
    );
    // Times in words, the exact time on hover.
    let updated = b
        .js(&format!("(() => {{ const t = document.querySelector(\"{row} td[data-label=Updated] time\"); return [t.textContent, t.title]; }})()"))
        .await;
    assert!(
        updated[0]
            .as_str()
            .is_some_and(|t| t.contains("now") || t.contains("ago") || t.contains("second")),
        "{updated}"
    );
    assert!(
        updated[1].as_str().is_some_and(|t| t.contains(':')),
        "{updated}"
    );
    b.assert_accessible("the users page at 1280 px").await;

    // The whole row leads to the user: a click on its scopes opens the page.
    b.press(&format!("{row} td[data-label=Scopes]")).await;
    b.until("document.getElementById('history')", "the user's page")
        .await;
    let history = b.text("#history").await;
    assert!(
        history.contains("active") && history.contains("revoked"),
        "{history}"
    );
    // The Drive call that met the revocation is in the trail, with scopes shortened.
    let audit = b.text("#audit").await;
    assert!(audit.contains("grant_revoked"), "{audit}");
    assert!(audit.contains("GET drive/v3/files"), "{audit}");
    assert!(
        !audit.contains("https://www.googleapis.com/auth/"),
        "{audit}"
    );
    assert!(audit.contains("drive.appdata"), "{audit}");
    // A revoked grant is not offered for revoking.
    assert!(!b.visible("#revoke").await && !b.visible("#revoke-ask").await);
    assert!(
        b.text("#revoke-why")
            .await
            .starts_with("The grant is revoked")
    );
    b.assert_accessible("a revoked user's page at 1280 px")
        .await;

    // At phone width the tables are cards with the state first, none squeezed.
    b.resize(375, 812).await;
    assert_cells_fit(b, "a user's page at 375 px").await;
    let first = b
        .js("(() => { const tr = document.querySelector('#history tbody tr'); const cells = Array.from(tr.children).filter((td) => td.getClientRects().length); cells.sort((a, c) => a.getBoundingClientRect().top - c.getBoundingClientRect().top); return cells[0].dataset.label; })()")
        .await;
    assert_eq!(first, "To", "the state a change led to comes first");
    b.goto(&format!("{}/admin/users", dev.url)).await;
    assert_cells_fit(b, "the users page at 375 px").await;
    let first = b
        .js(&format!("(() => {{ const tr = document.querySelector(\"{row}\"); const cells = Array.from(tr.children); cells.sort((a, c) => a.getBoundingClientRect().top - c.getBoundingClientRect().top); return cells[0].dataset.label; }})()"))
        .await;
    assert_eq!(first, "Grant", "the state first");
    b.goto(&format!("{}/admin/activity?range=24h", dev.url))
        .await;
    assert_cells_fit(b, "the activity page at 375 px").await;
    // Chart text stays readable on a phone.
    let smallest = b
        .js("Math.min(...Array.from(document.querySelectorAll('.charts svg text')).filter((t) => t.getClientRects().length).map((t) => t.getBoundingClientRect().height))")
        .await;
    assert!(
        smallest.as_f64().unwrap() >= 11.0,
        "chart text {smallest} px high at 375 px"
    );
    // The latency chart names its unit on screen.
    let unit = b
        .js("Array.from(document.querySelectorAll('#chart-latency text')).some((t) => t.textContent === 'ms')")
        .await;
    assert_eq!(unit, Value::Bool(true));

    // Revoking asks once, then says what happened.
    b.resize(1280, 900).await;
    b.goto(&format!("{}/admin/users/{active}", dev.url)).await;
    assert!(
        !b.visible("#revoke").await,
        "the form waits behind its question"
    );
    b.click("#revoke-ask").await;
    assert!(b.text("#revoke-confirm").await.contains("ivy@example.com"));
    let revocations = dev.emulator("GET", "stats", None).await["revocations"]
        .as_u64()
        .unwrap();
    b.click("#revoke").await;
    b.until("document.getElementById('flash')", "the outcome")
        .await;
    assert_eq!(
        b.text("#flash").await,
        "Revoked: Google confirmed the revocation, and the grant is marked revoked here."
    );
    assert_eq!(
        dev.emulator("GET", "stats", None).await["revocations"],
        revocations + 1
    );
    assert!(!b.visible("#revoke-ask").await);

    // Signing out says so.
    b.click("#logout").await;
    b.until("document.getElementById('api-key')", "the sign-in form")
        .await;
    assert_eq!(
        b.text("#login-note").await,
        "You signed out of the console."
    );
}

/// The positions of the visible tick labels of a chart, sorted by their left edge.
async fn tick_boxes(b: &Browser, chart: &str) -> Vec<(f64, f64, String)> {
    let v = b
        .js(&format!(
            "Array.from(document.querySelectorAll('#{chart} text.tick')).map((t) => {{ const r = t.getBoundingClientRect(); return [r.left, r.right, t.textContent]; }})"
        ))
        .await;
    let mut boxes: Vec<(f64, f64, String)> = serde_json::from_value(v).unwrap();
    boxes.sort_by(|a, c| a.0.total_cmp(&c.0));
    boxes
}

pub async fn chart_labels_never_overlap(b: &Browser, dev: &Dev) {
    console_sign_in(b, dev).await;
    for (width, height) in [(1280, 900), (375, 812)] {
        b.resize(width, height).await;
        for range in ["1h", "24h", "7d"] {
            b.goto(&format!("{}/admin/activity?range={range}", dev.url))
                .await;
            for chart in ["chart-activity", "chart-latency"] {
                let boxes = tick_boxes(b, chart).await;
                assert!(boxes.len() >= 2, "{range} {chart} at {width}: {boxes:?}");
                for pair in boxes.windows(2) {
                    assert!(
                        pair[0].1 + 2.0 <= pair[1].0,
                        "{range} {chart} at {width} px: {:?} overlaps {:?}",
                        pair[0],
                        pair[1]
                    );
                }
                // Inside the drawing.
                let svg = b
                    .js(&format!("(() => {{ const r = document.getElementById('{chart}').getBoundingClientRect(); return [r.left, r.right]; }})()"))
                    .await;
                let (left, right) = (svg[0].as_f64().unwrap(), svg[1].as_f64().unwrap());
                assert!(
                    boxes.first().unwrap().0 >= left - 0.5
                        && boxes.last().unwrap().1 <= right + 0.5,
                    "{range} {chart} at {width} px: labels cut at the edge: {boxes:?} in {svg}"
                );
            }
            b.assert_accessible(&format!("the {range} activity at {width} px"))
                .await;
        }
    }
}

/// The jobs page: each job's bar drawn (its segments' widths come from style attributes, which
/// the console's policy must admit), at both widths, and one job's failures.
pub async fn the_jobs_page_draws_each_job_s_bar(b: &Browser, dev: &Dev) {
    for email in ["jack@example.com", "kim@example.com", "lou@example.com"] {
        dev.sign_in(email).await;
    }
    let http = reqwest::Client::new();
    let call = |path: &str, body: Value| {
        http.post(format!("{}/v1/{path}", dev.url))
            .bearer_auth(&dev.api_key)
            .json(&body)
            .send()
    };
    let job: Value = call("jobs", serde_json::json!({"name": "nightly backup"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = job["id"].as_i64().unwrap();
    let claim: Value = call(&format!("jobs/{id}/claim"), serde_json::json!({"max": 2}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = claim["items"].as_array().unwrap();
    let reported = call(
        &format!("jobs/{id}/reports"),
        serde_json::json!({"lease": claim["lease"], "items": [
            {"id": items[0]["id"], "outcome": "done"},
            {"id": items[1]["id"], "outcome": "failed", "detail": "quota exceeded"},
        ]}),
    )
    .await
    .unwrap();
    assert_eq!(reported.status(), 200);

    console_sign_in(b, dev).await;
    // The sign-in's refused key logged its 401: read from here on.
    b.console_errors().await;
    b.click("#nav-jobs").await;
    b.until("document.getElementById('jobs')", "the jobs").await;
    // Each segment drawn as wide as its share of the job's users (the dev server holds the
    // other scenarios' users too).
    let bar = b
        .js(r#"(() => { const m = document.querySelector('.meter'); const w = m.getBoundingClientRect().width; const share = (n) => Math.round(Number(m.dataset[n]) / Number(m.dataset.total) * 100); return [Array.from(m.children).map((s) => [s.className, Math.round(s.getBoundingClientRect().width / w * 100)]), ['done', 'failed'].map((n) => [n, share(n)])]; })()"#)
        .await;
    let drawn = bar[0].as_array().unwrap();
    assert!(drawn.len() >= 2, "{bar}");
    assert_eq!(
        drawn[..2],
        bar[1].as_array().unwrap()[..],
        "the bar's segments: {bar}"
    );
    assert!(bar[1][0][1].as_i64().unwrap() > 0, "{bar}");
    assert_eq!(
        b.console_errors().await,
        Vec::<String>::new(),
        "no refusal by the page's policy"
    );
    b.assert_accessible("the jobs at 1280 px").await;
    b.resize(375, 812).await;
    assert_cells_fit(b, "the jobs at 375 px").await;
    b.resize(1280, 900).await;
    b.click("#jobs a.row-link").await;
    b.until("document.getElementById('failures')", "the job's failures")
        .await;
    assert!(b.text("#failures").await.contains("quota exceeded"));
    assert_cells_fit(b, "one job at 1280 px").await;
}
