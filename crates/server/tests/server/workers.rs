//! The background tasks stop with the app: what they hold is written, and each ends in time.

use super::harness::{Options, TestApp};
use grantkeeper_server::workers::STOP_WAIT;
use grantkeeper_store::AuditFilter;
use std::sync::{Arc, Mutex};

/// A sign-in leaves an audit row in memory, a webhook event in the outbox and counted
/// activity; shutting down right after writes and delivers them all, and every task (keep-alive
/// too) ends within the bound.
#[tokio::test]
async fn shutdown_writes_what_the_workers_hold_and_waits_for_each() {
    let received: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = received.clone();
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, receiver).into_future());
    let t = TestApp::start_with(Options {
        webhook: Some((hook, "a-webhook-secret-of-some-length".to_owned())),
        keepalive: Some(("1d", "1d", "1h")),
        ..Default::default()
    })
    .await;
    t.app.start_keepalive();
    let store = t.app.store().clone();
    let since = t.app.clock().now() - time::Duration::minutes(1);

    let sub = t.signed_in("stopping@example.com").await;
    // Nothing of the sign-in is written yet: the audit writer waits for its window, and
    // activity is written every 10 s.
    assert!(t.app.metrics().pending_activity() > 0);

    let stopped = t.app.shutdown().await;
    assert!(stopped.unfinished.is_empty(), "{stopped:?}");
    assert!(stopped.took < STOP_WAIT, "{stopped:?}");
    let mut finished = stopped.finished.clone();
    finished.sort_unstable();
    assert_eq!(
        finished,
        [
            "activity",
            "audit",
            "keep-alive",
            "keyring",
            "revocations",
            "sessions",
            "webhook"
        ],
        "{stopped:?}"
    );

    let audit = store
        .audit(AuditFilter {
            sub: Some(sub.clone()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert!(
        audit
            .iter()
            .any(|r| r.action == "sign_in" && r.outcome == "ok"),
        "{audit:?}"
    );
    let now = t.app.clock().now();
    let activity = store
        .activity(since, now + time::Duration::minutes(1))
        .await
        .unwrap();
    assert!(!activity.is_empty(), "the sign-in's activity is written");
    assert_eq!(t.app.metrics().pending_activity(), 0);
    assert!(
        store.due_events(now, 100).await.unwrap().is_empty(),
        "every event due was delivered"
    );
    let delivered = received.lock().unwrap().clone();
    assert!(
        delivered.iter().any(|body| body.contains(&sub)),
        "{delivered:?}"
    );

    // Stopping again finds nothing left to wait for.
    let again = t.app.shutdown().await;
    assert!(
        again.finished.is_empty() && again.unfinished.is_empty(),
        "{again:?}"
    );
}
