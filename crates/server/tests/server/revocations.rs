//! Revocations that Google could not take at once: deleted here at once, queued sealed to
//! their queue entry, and retried (with backoff, logging no token) until Google takes them.

use crate::server::harness::{TestApp, captured_logs};
use grantkeeper_core::{Aad, ExposeSecret};
use grantkeeper_server::apikeys::KeyScope::{UsersRead, UsersWrite};
use grantkeeper_store::{AuditFilter, PendingRevocation};
use serde_json::json;

const XRW: (&str, &str) = ("x-requested-with", "XmlHttpRequest");

async fn revoke_outage(t: &TestApp) {
    t.set_faults(json!({"revoke": {"error_rate": 1.0, "status": 503}}))
        .await;
}

async fn outage_over(t: &TestApp) {
    t.set_faults(json!({})).await;
}

/// Every queued entry, whenever due.
async fn queued(t: &TestApp) -> Vec<PendingRevocation> {
    let far = t.app.clock().now() + time::Duration::days(365);
    t.app.store().due_revocations(far, 100).await.unwrap()
}

/// The HTTP status of a refresh with `refresh_token` at the emulator's token endpoint.
async fn refresh_status(t: &TestApp, refresh_token: &str) -> u16 {
    let client = t.emulator.web_client();
    t.http
        .post(format!("{}/token", t.emulator_url))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", client.client_id.as_str()),
            ("client_secret", client.client_secret.expose_secret()),
        ])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn deleting_a_user_during_a_revoke_outage_deletes_here_and_queues_the_revocation() {
    let t = TestApp::start().await;
    let sub = t.signed_in("leaving-now@example.com").await;
    let held = t.held_refresh_token(&sub).await.unwrap();
    let key = t.api_key(&[UsersRead, UsersWrite]).await;
    revoke_outage(&t).await;

    let d = t
        .v1("DELETE", &format!("/v1/users/{sub}"), Some(&key), None)
        .await;
    assert_eq!(d.status, 204, "{}", d.text);
    t.v1("GET", &format!("/v1/users/{sub}"), Some(&key), None)
        .await
        .assert_error(404, "not_found");
    assert!(t.app.store().user(&sub).await.unwrap().is_none());
    assert_eq!(t.stats().await["revocations"], 0);
    // The user is gone; their token waits, sealed to its entry.
    let entries = queued(&t).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].sub, sub);
    let opened = t
        .app
        .vault()
        .open_secret(&entries[0].token, Aad::pending_revocation(&entries[0].id))
        .unwrap();
    assert_eq!(opened.expose_secret(), held);
    t.app.audit().flush().await;
    let audit = t
        .app
        .store()
        .audit(AuditFilter {
            sub: Some(sub.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        audit
            .iter()
            .any(|r| r.action == "delete_user" && r.outcome == "queued"),
        "{audit:?}"
    );
    // Still live at Google until the retry gets through.
    assert_eq!(refresh_status(&t, &held).await, 200);

    outage_over(&t).await;
    let pass = t.app.retry_revocations_now().await.unwrap();
    assert_eq!((pass.revoked, pass.failed, pass.pending), (1, 0, 0));
    assert_eq!(t.stats().await["revocations"], 1);
    assert!(queued(&t).await.is_empty());
    assert_eq!(refresh_status(&t, &held).await, 400);
}

#[tokio::test]
async fn a_queued_token_does_not_open_under_another_entry() {
    let t = TestApp::start().await;
    let first = t
        .authcode_web(&t.web_code("one-of-two@example.com").await)
        .await;
    let second = t
        .authcode_web(&t.web_code("two-of-two@example.com").await)
        .await;
    revoke_outage(&t).await;
    for a in [&first, &second] {
        let r = t
            .post("/disconnect", Some(&a.session_cookie().unwrap()), &[XRW])
            .await;
        assert_eq!(r.status, 204, "{}", r.text);
    }
    let entries = queued(&t).await;
    assert_eq!(entries.len(), 2);
    let (a, b) = (&entries[0], &entries[1]);
    let vault = t.app.vault();
    assert!(
        vault
            .open_secret(&a.token, Aad::pending_revocation(&a.id))
            .is_ok()
    );
    assert!(
        vault
            .open_secret(&a.token, Aad::pending_revocation(&b.id))
            .is_err()
    );
    assert!(
        vault
            .open_secret(&a.token, Aad::refresh_token(&a.sub))
            .is_err()
    );

    // A's token copied into an entry of its own is never sent to Google: it does not open.
    let forged = PendingRevocation {
        id: "rev_forged".to_owned(),
        ..a.clone()
    };
    t.app
        .store()
        .enqueue_revocation(forged.clone())
        .await
        .unwrap();
    outage_over(&t).await;
    let pass = t.app.retry_revocations_now().await.unwrap();
    assert_eq!((pass.revoked, pass.failed, pass.pending), (2, 1, 1));
    assert_eq!(t.stats().await["revocations"], 2);
    let left = queued(&t).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, forged.id);
    assert_eq!(left[0].attempts, 1);
    assert!(
        left[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("does not open"),
        "{:?}",
        left[0].last_error
    );
}

#[tokio::test]
async fn a_retry_that_fails_again_backs_off_and_logs_no_token() {
    let t = TestApp::start().await;
    let email = "patient@example.com";
    let a = t.authcode_web(&t.web_code(email).await).await;
    revoke_outage(&t).await;
    let r = t
        .post("/disconnect", Some(&a.session_cookie().unwrap()), &[XRW])
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let queued_at = queued(&t).await.pop().unwrap();
    assert_eq!(queued_at.attempts, 0);

    let mut before = queued_at.clone();
    for attempt in 1..=3 {
        let pass = t.app.retry_revocations_now().await.unwrap();
        assert_eq!((pass.revoked, pass.failed, pass.pending), (0, 1, 1));
        let after = queued(&t).await.pop().unwrap();
        assert_eq!(after.id, queued_at.id);
        assert_eq!(after.attempts, attempt);
        assert!(
            after.next_attempt_at > before.next_attempt_at,
            "attempt {attempt}: {} then {}",
            before.next_attempt_at,
            after.next_attempt_at
        );
        // 10 s doubling: the third retry waits at least 80 s.
        let wait = after.next_attempt_at - t.app.clock().now();
        assert!(
            wait >= time::Duration::seconds(10 << attempt) - time::Duration::seconds(2),
            "attempt {attempt}: {wait}"
        );
        assert!(after.last_error.as_deref().unwrap().contains("503"));
        assert_eq!(after.token, queued_at.token);
        before = after;
    }
    assert_eq!(t.stats().await["revocations"], 0);
    // Not due yet: the background pass leaves it.
    assert!(
        t.app
            .store()
            .due_revocations(t.app.clock().now(), 100)
            .await
            .unwrap()
            .is_empty()
    );
    let metrics = t.get("/metrics", None).await;
    assert!(
        metrics
            .text
            .lines()
            .any(|l| l == "grantkeeper_pending_revocations 1"),
        "{}",
        metrics.text
    );

    let logs = captured_logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("WARN") && l.contains(&queued_at.id) && l.contains("503")),
        "the failed retries are logged"
    );
    let tokens = t.issued_tokens(email).await;
    assert!(!tokens.is_empty());
    for token in tokens {
        assert!(!logs.contains(&token), "a token was logged");
    }

    outage_over(&t).await;
    let pass = t.app.retry_revocations_now().await.unwrap();
    assert_eq!((pass.revoked, pass.failed, pass.pending), (1, 0, 0));
    let metrics = t.get("/metrics", None).await;
    assert!(
        metrics
            .text
            .lines()
            .any(|l| l == "grantkeeper_pending_revocations 0"),
        "{}",
        metrics.text
    );
}
