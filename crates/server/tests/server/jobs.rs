//! `/v1/jobs` over real HTTP: a job's users handed out in leased batches with fresh tokens and
//! reported back; the contract's refusals (400, 401, 403, 404, 409 `not_held` changing nothing);
//! Google unavailable while claiming (a smaller batch, never a stale token); the rate budget
//! counted per second at the emulator; keep-alive of idle grants. Each check runs on SQLite and
//! on PostgreSQL.

use super::harness::{Answer, Backend, Options, TestApp};
use grantkeeper_core::ManualClock;
use grantkeeper_server::apikeys::KeyScope;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const DRIVE: &str = "https://www.googleapis.com/auth/drive.appdata";

on_both_stores!(
    a_job_hands_out_each_user_once_with_a_fresh_token_until_it_is_finished,
    bad_claims_and_reports_are_refused_with_the_contract_body_and_change_nothing,
    google_unavailable_while_claiming_makes_a_smaller_batch_never_a_stale_token,
    claims_never_refresh_faster_than_the_jobs_rate_counted_per_second_at_google,
    keep_alive_refreshes_the_idle_grants_once_spread_over_its_period,
);

async fn sign_in_many(t: &TestApp, prefix: &str, n: usize) -> Vec<String> {
    let mut subs = Vec::new();
    for i in 0..n {
        subs.push(t.signed_in(&format!("{prefix}{i}@example.com")).await);
    }
    subs
}

async fn make(t: &TestApp, key: &str, body: Value) -> Value {
    let a = t.v1("POST", "/v1/jobs", Some(key), Some(body)).await;
    assert_eq!(a.status, 201, "{}", a.text);
    a.body
}

async fn claim(t: &TestApp, key: &str, id: i64, body: Value) -> Answer {
    t.v1(
        "POST",
        &format!("/v1/jobs/{id}/claim"),
        Some(key),
        Some(body),
    )
    .await
}

async fn report(t: &TestApp, key: &str, id: i64, lease: &str, items: Value) -> Answer {
    t.v1(
        "POST",
        &format!("/v1/jobs/{id}/reports"),
        Some(key),
        Some(json!({"lease": lease, "items": items})),
    )
    .await
}

fn expires(item: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(item["expires_at"].as_str().unwrap(), &Rfc3339).unwrap()
}

async fn a_job_hands_out_each_user_once_with_a_fresh_token_until_it_is_finished(on: Backend) {
    let Some(t) = TestApp::start_on(on, Options::default()).await else {
        return;
    };
    let key = t.api_key(&[KeyScope::Jobs]).await;
    let subs = sign_in_many(&t, "job-flow", 3).await;
    // One user without Drive: not in the job. One revoked: skipped at once, counted.
    let code = t
        .mint(super::harness::Code {
            scope: "openid email",
            ..super::harness::Code::web("job-flow-nodrive@example.com")
        })
        .await;
    assert_eq!(t.authcode_web(&code).await.status, 200);
    t.emulator_call("POST", "users/job-flow2@example.com/revoke", None)
        .await;
    let revoked = &subs[2];
    t.app
        .broker()
        .refresh_now(revoked)
        .await
        .expect_err("revoked at Google");

    let job = make(
        &t,
        &key,
        json!({"name": "drive backup", "scopes": [DRIVE], "min_ttl": 600}),
    )
    .await;
    let id = job["id"].as_i64().unwrap();
    assert_eq!(job["state"], "running");
    assert_eq!(job["kind"], "api");
    assert_eq!(job["rate"], 10.0);
    assert_eq!(job["progress"]["total"], 3);
    assert_eq!(job["progress"]["skipped_by"]["revoked"], 1);
    assert_eq!(job["progress"]["pending"], 2);

    let first = claim(&t, &key, id, json!({"max": 1, "worker": "w1"})).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.headers["cache-control"], "no-store");
    let items = first.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    let now = t.app.clock().now();
    // Valid for at least the job's min_ttl, and the token the user's grant holds at Google.
    assert!(expires(&items[0]) >= now + time::Duration::seconds(590));
    let token = items[0]["access_token"].as_str().unwrap();
    let sub0 = items[0]["sub"].as_str().unwrap().to_owned();
    let drive = t
        .http
        .get(format!(
            "{}/drive/v3/files?spaces=appDataFolder",
            t.emulator_url
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(drive.status(), 200);
    assert_eq!(first.body["job"]["progress"]["in_flight"], 1);

    let second = claim(&t, &key, id, json!({"max": 50})).await;
    let items2 = second.body["items"].as_array().unwrap();
    assert_eq!(items2.len(), 1);
    assert_ne!(items2[0]["sub"], sub0.as_str());
    // Nothing left to hand out while both are held: an empty batch, and when to try again.
    let third = claim(&t, &key, id, json!({"max": 50})).await;
    assert!(third.body["items"].as_array().unwrap().is_empty());
    assert!(third.body["retry_after"].as_f64().unwrap() > 200.0);

    let lease1 = first.body["lease"].as_str().unwrap();
    let lease2 = second.body["lease"].as_str().unwrap();
    let done = report(
        &t,
        &key,
        id,
        lease1,
        json!([{"id": items[0]["id"], "outcome": "done"}]),
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.text);
    assert_eq!(done.body["done"], 1);
    let failed = report(
        &t,
        &key,
        id,
        lease2,
        json!([{"id": items2[0]["id"], "outcome": "failed", "detail": "Drive quota"}]),
    )
    .await;
    assert_eq!(failed.body["failed"], 1);
    assert_eq!(failed.body["job"]["state"], "finished");

    let shown = t
        .v1("GET", &format!("/v1/jobs/{id}"), Some(&key), None)
        .await;
    assert_eq!(shown.status, 200);
    let p = &shown.body["progress"];
    assert_eq!(
        (
            p["done"].as_u64(),
            p["failed"].as_u64(),
            p["skipped"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );
    let failures = shown.body["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 2);
    assert!(
        failures
            .iter()
            .any(|f| f["detail"] == "Drive quota" && f["reason"] == "worker")
    );
    assert!(
        failures
            .iter()
            .any(|f| f["sub"] == revoked.as_str() && f["state"] == "skipped")
    );
    let listed = t
        .v1("GET", "/v1/jobs?state=finished", Some(&key), None)
        .await;
    assert_eq!(listed.body["jobs"][0]["id"], id);
    // Each hand-out is audited like a token's.
    t.app.audit().flush().await;
    let rows = t
        .app
        .store()
        .audit(grantkeeper_store::AuditFilter {
            sub: Some(sub0.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        rows.iter()
            .any(|r| r.action == "token" && r.detail == format!("job {id}"))
    );
    // No token in the logs.
    assert!(!super::harness::captured_logs().contains(token));
}

async fn bad_claims_and_reports_are_refused_with_the_contract_body_and_change_nothing(on: Backend) {
    let clock = ManualClock::new();
    let Some(t) = TestApp::start_on(
        on,
        Options {
            clock: Some(clock.clone()),
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let key = t.api_key(&[KeyScope::Jobs]).await;
    let other = t.api_key(&[KeyScope::Token, KeyScope::UsersRead]).await;
    sign_in_many(&t, "job-bad", 2).await;
    let job = make(&t, &key, json!({"name": "checks", "lease": 1})).await;
    let id = job["id"].as_i64().unwrap();

    for body in [
        json!({"max": 501}),
        json!({"max": 0}),
        json!({"max": -3}),
        json!({"max": 5, "lease": -1}),
        json!({"max": 5, "lease": 0}),
        json!({"max": 5, "lease": 86401}),
        json!({"max": "many"}),
        json!({"max": 5, "extra": true}),
    ] {
        claim(&t, &key, id, body)
            .await
            .assert_error(400, "invalid_request");
    }
    let raw = t
        .http
        .post(format!("{}/v1/jobs/{id}/claim", t.url))
        .bearer_auth(&key)
        .body("{not json")
        .send()
        .await
        .unwrap();
    Answer::from_response(raw)
        .await
        .assert_error(400, "invalid_request");
    for body in [
        json!({"name": ""}),
        json!({"name": "x", "rate": 0}),
        json!({"name": "x", "lease": -5}),
        json!({"name": "x", "min_ttl": 7200}),
        json!({"scopes": []}),
    ] {
        t.v1("POST", "/v1/jobs", Some(&key), Some(body))
            .await
            .assert_error(400, "invalid_request");
    }
    claim(&t, &key, 99_999, json!({"max": 1}))
        .await
        .assert_error(404, "not_found");
    t.v1("GET", "/v1/jobs/abc", Some(&key), None)
        .await
        .assert_error(404, "not_found");
    claim(&t, &other, id, json!({"max": 1}))
        .await
        .assert_error(403, "forbidden");
    t.v1("GET", "/v1/jobs", None, None)
        .await
        .assert_error(401, "unauthorized");
    // Nothing was leased by any of them.
    let before = t
        .v1("GET", &format!("/v1/jobs/{id}"), Some(&key), None)
        .await;
    assert_eq!(before.body["progress"]["pending"], 2);

    let a = claim(&t, &key, id, json!({"max": 1, "lease": 30})).await;
    let b = claim(&t, &key, id, json!({"max": 1, "lease": 1})).await;
    let (a_item, b_item) = (&a.body["items"][0]["id"], &b.body["items"][0]["id"]);
    let (a_lease, b_lease) = (
        a.body["lease"].as_str().unwrap(),
        b.body["lease"].as_str().unwrap(),
    );
    // Another worker's item, alone or beside one's own: 409, nothing changes.
    report(
        &t,
        &key,
        id,
        a_lease,
        json!([{"id": b_item, "outcome": "done"}]),
    )
    .await
    .assert_error(409, "not_held");
    report(
        &t,
        &key,
        id,
        a_lease,
        json!([{"id": a_item, "outcome": "done"}, {"id": b_item, "outcome": "done"}]),
    )
    .await
    .assert_error(409, "not_held");
    let after = t
        .v1("GET", &format!("/v1/jobs/{id}"), Some(&key), None)
        .await;
    assert_eq!(after.body["progress"]["done"], 0);
    assert_eq!(after.body["progress"]["in_flight"], 2);
    // Bad reports: 400.
    for items in [
        json!([{"id": a_item, "outcome": "maybe"}]),
        json!([{"id": a_item, "outcome": "retry", "delay": -1}]),
        json!([{"id": a_item, "outcome": "done"}, {"id": a_item, "outcome": "done"}]),
        json!([]),
    ] {
        report(&t, &key, id, a_lease, items)
            .await
            .assert_error(400, "invalid_request");
    }
    // b's lease runs out: its report is refused, and the user is offered again.
    clock.advance(time::Duration::milliseconds(1300));
    report(
        &t,
        &key,
        id,
        b_lease,
        json!([{"id": b_item, "outcome": "done"}]),
    )
    .await
    .assert_error(409, "not_held");
    let again = claim(&t, &key, id, json!({"max": 5})).await;
    assert_eq!(&again.body["items"][0]["id"], b_item);
    assert_eq!(again.body["items"][0]["attempt"], 2);
    // a still holds its own.
    let ok = report(
        &t,
        &key,
        id,
        a_lease,
        json!([{"id": a_item, "outcome": "retry", "delay": 0}]),
    )
    .await;
    assert_eq!(ok.body["retry"], 1, "{}", ok.text);

    let cancelled = t
        .v1("POST", &format!("/v1/jobs/{id}/cancel"), Some(&key), None)
        .await;
    assert_eq!(cancelled.body["state"], "cancelled");
    let none = claim(&t, &key, id, json!({"max": 5})).await;
    assert!(none.body["items"].as_array().unwrap().is_empty());
    assert_eq!(none.body["job"]["state"], "cancelled");
}

async fn google_unavailable_while_claiming_makes_a_smaller_batch_never_a_stale_token(on: Backend) {
    let Some(t) = TestApp::start_on(on, Options::default()).await else {
        return;
    };
    let key = t.api_key(&[KeyScope::Jobs]).await;
    // Tokens held live 20 s, and the job needs 10 minutes: every hand-out refreshes.
    t.emulator_call(
        "PUT",
        "settings",
        Some(json!({"access_token_ttl_secs": 20})),
    )
    .await;
    sign_in_many(&t, "job-down", 3).await;
    // Refreshed tokens live an hour again: a token handed out must be one of those.
    t.emulator_call(
        "PUT",
        "settings",
        Some(json!({"access_token_ttl_secs": 3600})),
    )
    .await;
    let job = make(
        &t,
        &key,
        json!({"name": "down", "min_ttl": 600, "rate": 100}),
    )
    .await;
    let id = job["id"].as_i64().unwrap();
    t.emulator_call(
        "PUT",
        "faults",
        Some(json!({"token": {"error_rate": 1.0, "status": 503, "retry_after_secs": 1}})),
    )
    .await;
    let down = claim(&t, &key, id, json!({"max": 10})).await;
    assert_eq!(down.status, 200, "{}", down.text);
    assert!(
        down.body["items"].as_array().unwrap().is_empty(),
        "{}",
        down.text
    );
    // Offered again later, not failed, not skipped.
    let p = &down.body["job"]["progress"];
    assert_eq!(
        (
            p["failed"].as_u64(),
            p["skipped"].as_u64(),
            p["pending"].as_u64()
        ),
        (Some(0), Some(0), Some(3))
    );

    t.set_faults(json!({})).await;
    let mut handed = Vec::new();
    for _ in 0..40 {
        let c = claim(&t, &key, id, json!({"max": 10})).await;
        for item in c.body["items"].as_array().unwrap() {
            // Fresh for the job's ten minutes: refreshed, never the 20-second one.
            assert!(
                expires(item) > t.app.clock().now() + time::Duration::seconds(590),
                "{item}"
            );
            handed.push(item["sub"].as_str().unwrap().to_owned());
        }
        if handed.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(handed.iter().collect::<HashSet<_>>().len(), 3, "{handed:?}");
}

async fn claims_never_refresh_faster_than_the_jobs_rate_counted_per_second_at_google(on: Backend) {
    let Some(t) = TestApp::start_on(on, Options::default()).await else {
        return;
    };
    let key = t.api_key(&[KeyScope::Jobs]).await;
    t.emulator_call(
        "PUT",
        "settings",
        Some(json!({"access_token_ttl_secs": 30})),
    )
    .await;
    let n = 16;
    sign_in_many(&t, "job-rate", n).await;
    t.emulator_call(
        "PUT",
        "settings",
        Some(json!({"access_token_ttl_secs": 3600})),
    )
    .await;
    let before = t.stats().await["refreshes"].as_u64().unwrap();
    let job = make(
        &t,
        &key,
        json!({"name": "paced", "min_ttl": 600, "rate": 4}),
    )
    .await;
    let id = job["id"].as_i64().unwrap();
    // Three workers claiming at once, as fast as they can.
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..3 {
        let (http, url, key) = (t.http.clone(), t.url.clone(), key.clone());
        workers.spawn(async move {
            let mut got = 0;
            for _ in 0..200 {
                let c: Value = http
                    .post(format!("{url}/v1/jobs/{id}/claim"))
                    .bearer_auth(&key)
                    .json(&json!({"max": 5, "worker": format!("w{w}")}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let items = c["items"].as_array().unwrap();
                got += items.len();
                if !items.is_empty() {
                    let reports: Vec<Value> = items
                        .iter()
                        .map(|i| json!({"id": i["id"], "outcome": "done"}))
                        .collect();
                    http.post(format!("{url}/v1/jobs/{id}/reports"))
                        .bearer_auth(&key)
                        .json(&json!({"lease": c["lease"], "items": reports}))
                        .send()
                        .await
                        .unwrap();
                }
                if c["job"]["state"] != "running" {
                    break;
                }
                if items.is_empty() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            got
        });
    }
    let mut total = 0;
    while let Some(got) = workers.join_next().await {
        total += got.unwrap();
    }
    assert_eq!(total, n);
    let stats = t.stats().await;
    assert_eq!(stats["refreshes"].as_u64().unwrap() - before, n as u64);
    // The sign-ins made no refresh; every refresh of the job is in these seconds.
    let by_second = stats["refreshes_by_second"].as_object().unwrap();
    let counted: u64 = by_second.values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(counted, n as u64);
    for (second, count) in by_second {
        assert!(
            count.as_u64().unwrap() <= 4,
            "{count} refreshes in second {second}: {by_second:?}"
        );
    }
    // And so it took about n / rate seconds.
    assert!(by_second.len() >= 4, "{by_second:?}");
}

async fn keep_alive_refreshes_the_idle_grants_once_spread_over_its_period(on: Backend) {
    let clock = ManualClock::new();
    let Some(t) = TestApp::start_on(
        on,
        Options {
            keepalive: Some(("1s", "2s", "1s")),
            clock: Some(clock.clone()),
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let subs = sign_in_many(&t, "job-idle", 3).await;
    let before = t.stats().await;
    // Two seconds pass: each grant's last use (whole seconds) is older than keepalive_after.
    clock.advance(time::Duration::milliseconds(2100));
    t.app.start_keepalive();
    let mut refreshed = 0;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        refreshed =
            t.stats().await["refreshes"].as_u64().unwrap() - before["refreshes"].as_u64().unwrap();
        if refreshed >= 3 {
            break;
        }
    }
    assert_eq!(refreshed, 3);
    let stats = t.stats().await;
    for i in 0..3 {
        assert_eq!(
            stats["refreshes_by_email"][format!("job-idle{i}@example.com")].as_u64(),
            Some(1),
            "{stats}"
        );
    }
    // Spread over the period (2 s): not all in one second.
    assert!(
        stats["refreshes_by_second"].as_object().unwrap().len() >= 2,
        "{stats}"
    );
    let jobs = t.app.jobs().list(None, 10).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].job.kind, "keepalive");
    assert_eq!(jobs[0].job.total, subs.len() as u64);
    t.app.shutdown().await;
}
