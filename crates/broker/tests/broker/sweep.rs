//! `sweep`: every usable grant once, skips counted, interruption and resumption, the rate
//! limit; each check on a SQLite file and on PostgreSQL.

use super::harness::{Code, Env, email};
use grantkeeper_broker::sweep::{Job, Outcome, SweepEvent, SweepOptions, run_sweep};
use grantkeeper_broker::{Broker, BrokerSettings};
use grantkeeper_core::GrantState;
use grantkeeper_store::{ItemClaim, JobState};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use url::Url;

struct Population {
    /// email -> sub
    usable: BTreeMap<String, String>,
    skipped: BTreeMap<String, String>,
}

/// 50 users: 44 usable, 3 that never granted offline access, 3 revoked.
async fn population(env: &Env, broker: &Broker) -> Population {
    let mut usable = BTreeMap::new();
    let mut skipped = BTreeMap::new();
    for n in 0..50 {
        let e = email(n);
        if n % 17 == 5 {
            let sub = env
                .sign_in_with(Code {
                    online_native: true,
                    ..Code::web(&e)
                })
                .await;
            skipped.insert(e, sub);
        } else if n % 17 == 9 {
            let sub = env.sign_in(&e).await;
            broker.revoke_grant(&sub, "test").await.unwrap();
            skipped.insert(e, sub);
        } else {
            let sub = env.sign_in(&e).await;
            usable.insert(e, sub);
        }
    }
    assert_eq!((usable.len(), skipped.len()), (44, 6));
    Population { usable, skipped }
}

fn recorder() -> (
    Arc<Mutex<Vec<SweepEvent>>>,
    impl Fn(&SweepEvent) + Send + Sync,
) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    (events, move |e: &SweepEvent| {
        sink.lock().unwrap().push(e.clone())
    })
}

fn api_base(env: &Env) -> Url {
    Url::parse(&env.emulator_url).unwrap()
}

on_every_store!(
    refresh_sweep_refreshes_every_usable_grant_once,
    an_interrupted_sweep_resumes_where_it_stopped,
    a_resumed_sweep_counts_the_whole_run,
    the_rate_limit_bounds_how_many_start,
    a_stopped_sweep_gives_back_the_users_claimed_ahead_unrefreshed,
    drive_appdata_sweep_lists_each_users_folder_and_retries_a_refused_token_once,
);

async fn refresh_sweep_refreshes_every_usable_grant_once(env: Env) {
    let broker = env.broker();
    let people = population(&env, &broker).await;
    let (events, on_event) = recorder();
    let (_stop_tx, stop) = watch::channel(false);
    let summary = run_sweep(
        &broker,
        env.store.clone(),
        env.http.clone(),
        api_base(&env),
        Job::Refresh,
        SweepOptions {
            concurrency: 8,
            rate_per_sec: None,
            page_size: 10,
            ..SweepOptions::default()
        },
        stop,
        &on_event,
    )
    .await
    .unwrap();

    assert!(!summary.interrupted);
    assert_eq!(summary.resumed_from, None);
    assert_eq!(summary.counts.get(&Outcome::Ok), Some(&44));
    assert_eq!(summary.counts.get(&Outcome::Skipped), Some(&6));
    assert_eq!(summary.counts.get(&Outcome::Failing), None);
    let events = events.lock().unwrap().clone();
    assert_eq!(events.len(), 50);
    assert!(events.iter().all(|e| e.total == 50));
    assert_eq!(events.last().unwrap().done, 50);
    for (e, sub) in &people.usable {
        assert_eq!(env.refreshes_of(e).await, 1, "{e}");
        assert_eq!(env.grant(sub).await.state, GrantState::Active);
    }
    for (e, sub) in &people.skipped {
        assert_eq!(env.refreshes_of(e).await, 0, "{e}");
        let ev = events.iter().find(|ev| &ev.sub == sub).unwrap();
        assert_eq!(ev.outcome, Outcome::Skipped);
    }

    // The run is finished: the next one starts from the beginning.
    let (_stop_tx, stop) = watch::channel(false);
    let again = run_sweep(
        &broker,
        env.store.clone(),
        env.http.clone(),
        api_base(&env),
        Job::Refresh,
        SweepOptions::default(),
        stop,
        &|_| {},
    )
    .await
    .unwrap();
    assert_eq!(again.resumed_from, None);
    assert_eq!(again.counts.get(&Outcome::Ok), Some(&44));
}

async fn an_interrupted_sweep_resumes_where_it_stopped(env: Env) {
    interrupted_then_resumed(env, 10).await;
}

/// The stop lands inside the run's only batch: the batch's users done before it still count
/// in the run's counts once it is resumed and finished.
async fn a_resumed_sweep_counts_the_whole_run(env: Env) {
    interrupted_then_resumed(env, 500).await;
}

async fn interrupted_then_resumed(env: Env, page_size: u32) {
    let broker = env.broker();
    let people = population(&env, &broker).await;
    // Slow refreshes, so that the stop lands with work left, and a report is told well within
    // one refresh.
    env.faults(json!({"token": {"latency_ms": 400}})).await;
    let opts = SweepOptions {
        concurrency: 8,
        rate_per_sec: None,
        page_size,
        ..SweepOptions::default()
    };

    let (stop_tx, stop) = watch::channel(false);
    let first_events = Arc::new(Mutex::new(Vec::<SweepEvent>::new()));
    let sink = first_events.clone();
    let on_event = move |e: &SweepEvent| {
        sink.lock().unwrap().push(e.clone());
        if e.done == 20 {
            let _ = stop_tx.send(true);
        }
    };
    let first = run_sweep(
        &broker,
        env.store.clone(),
        env.http.clone(),
        api_base(&env),
        Job::Refresh,
        opts.clone(),
        stop,
        &on_event,
    )
    .await
    .unwrap();
    assert!(first.interrupted);
    let first_events = first_events.lock().unwrap().clone();
    // The stop left users to the second run. What was in flight at it finished and was
    // reported (how many depends on how soon reports are told: a place is filled as soon as
    // its user ends, before the report); what was claimed and not started was given back, and
    // is done once, by the second run (below).
    assert!(
        first_events.len() >= 20 && first_events.len() < 50,
        "{}",
        first_events.len()
    );

    let (events, on_event) = recorder();
    let (_stop_tx, stop) = watch::channel(false);
    let second = run_sweep(
        &broker,
        env.store.clone(),
        env.http.clone(),
        api_base(&env),
        Job::Refresh,
        opts,
        stop,
        &on_event,
    )
    .await
    .unwrap();
    assert!(!second.interrupted);
    // Stopped, the run is not finished; its counts are those of the users under the saved
    // progress, none of them counted twice.
    assert!(!first.run_finished);
    assert!(first.run_counts.values().sum::<u64>() <= first_events.len() as u64);
    // Resumed and finished, the run counts every user once.
    assert!(second.run_finished);
    assert_eq!(second.run_counts.get(&Outcome::Ok), Some(&44), "{second:?}");
    assert_eq!(
        second.run_counts.get(&Outcome::Skipped),
        Some(&6),
        "{second:?}"
    );
    assert_eq!(second.run_counts.values().sum::<u64>(), 50);
    let cursor = second.resumed_from.clone().expect("the second run resumes");
    let second_events = events.lock().unwrap().clone();
    // Everybody after the saved watermark, nobody before it.
    assert!(second_events.iter().all(|e| e.sub > cursor));
    assert!(first_events.iter().all(|e| e.sub <= cursor));
    assert_eq!(first_events.len() + second_events.len(), 50);
    assert_eq!(second_events.last().unwrap().done, 50);

    let mut total: HashMap<Outcome, u64> = HashMap::new();
    for counts in [&first.counts, &second.counts] {
        for (o, n) in counts {
            *total.entry(*o).or_default() += n;
        }
    }
    assert_eq!(total.get(&Outcome::Ok), Some(&44));
    assert_eq!(total.get(&Outcome::Skipped), Some(&6));
    for e in people.usable.keys() {
        assert_eq!(env.refreshes_of(e).await, 1, "{e}");
    }
    for e in people.skipped.keys() {
        assert_eq!(env.refreshes_of(e).await, 0, "{e}");
    }

    // The store's run is finished: nothing of it is left.
    let run = env
        .store
        .latest_job_with_key("sweep:refresh")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.state, JobState::Finished);
    let left = env.store.settled_through(run.id).await.unwrap();
    assert_eq!(left.first_open, None);
}

/// A refresh sweep claims its next users while it refreshes: more users are leased than it
/// refreshes at once. Stopped, it refreshes none of those (every refresh it made is a user it
/// reported), and gives them back: nothing of the run stays leased, and another process
/// claims them at once, first.
async fn a_stopped_sweep_gives_back_the_users_claimed_ahead_unrefreshed(env: Env) {
    let broker = env.broker();
    let emails: Vec<String> = (0..40).map(email).collect();
    let subs = env.sign_in_all(&emails).await;
    let by_sub: BTreeMap<String, String> = subs.iter().cloned().zip(emails.clone()).collect();
    // Slow refreshes: the next users are claimed while the first are refreshed.
    env.faults(json!({"token": {"latency_ms": 400}})).await;
    let concurrency = 4;

    // Watches how many users of the run are leased while it runs.
    let (watching, most_leased) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicU64::new(0)));
    let watcher = {
        let (store, clock) = (env.store.clone(), env.shared_clock());
        let (watching, most_leased) = (watching.clone(), most_leased.clone());
        tokio::spawn(async move {
            while watching.load(Ordering::SeqCst) {
                if let Some(run) = store.latest_job_with_key("sweep:refresh").await.unwrap() {
                    let now_ms = (clock.now().unix_timestamp_nanos() / 1_000_000) as i64;
                    let counts = store.job_counts(run.id, now_ms).await.unwrap();
                    most_leased.fetch_max(counts.in_flight, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let (stop_tx, stop) = watch::channel(false);
    let events = Arc::new(Mutex::new(Vec::<SweepEvent>::new()));
    let sink = events.clone();
    let on_event = move |e: &SweepEvent| {
        sink.lock().unwrap().push(e.clone());
        if e.done >= 4 {
            let _ = stop_tx.send(true);
        }
    };
    let first = run_sweep(
        &broker,
        env.store.clone(),
        env.http.clone(),
        api_base(&env),
        Job::Refresh,
        SweepOptions {
            concurrency,
            rate_per_sec: None,
            page_size: 4,
            ..SweepOptions::default()
        },
        stop,
        &on_event,
    )
    .await
    .unwrap();
    watching.store(false, Ordering::SeqCst);
    watcher.await.unwrap();
    assert!(first.interrupted);
    let most_leased = most_leased.load(Ordering::SeqCst);
    assert!(
        most_leased > concurrency as u64,
        "users claimed ahead: at most {most_leased} leased at once"
    );

    // Every user refreshed was reported, and no other was refreshed.
    let events = events.lock().unwrap().clone();
    assert!(events.len() >= 4 && events.len() <= 16, "{}", events.len());
    assert!(events.iter().all(|e| e.outcome == Outcome::Ok));
    let reported: Vec<&String> = events.iter().map(|e| &e.sub).collect();
    for (sub, e) in &by_sub {
        let expected = u64::from(reported.contains(&sub));
        assert_eq!(env.refreshes_of(e).await, expected, "{e}");
    }

    // Nothing of the run is leased: the rest is claimed at once by another process, the users
    // given back first.
    let run = env
        .store
        .latest_job_with_key("sweep:refresh")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.state, JobState::Running);
    let now_ms = (env.now().unix_timestamp_nanos() / 1_000_000) as i64;
    let counts = env.store.job_counts(run.id, now_ms).await.unwrap();
    assert_eq!(counts.in_flight, 0, "{counts:?}");
    assert_eq!(counts.pending, 40 - events.len() as u64, "{counts:?}");
    let claimed = env
        .store
        .claim_items(ItemClaim {
            job_id: run.id,
            lease: "another".to_owned(),
            owner: "another process".to_owned(),
            max: 40,
            now_ms,
            lease_until_ms: now_ms + 30_000,
        })
        .await
        .unwrap();
    assert_eq!(claimed.items.len(), 40 - events.len());
    let first_left = by_sub.keys().find(|sub| !reported.contains(sub)).unwrap();
    assert_eq!(&claimed.items[0].sub, first_left);
    assert!(
        claimed.items.iter().all(|i| i.attempt == 1),
        "{:?}",
        claimed.items
    );
}

async fn the_rate_limit_bounds_how_many_start(env: Env) {
    let broker = env.broker_with(BrokerSettings::default());
    for n in 0..12 {
        env.sign_in(&email(n)).await;
    }
    let rate = 20.0;
    let (events, on_event) = recorder();
    let (_stop_tx, stop) = watch::channel(false);
    let summary = run_sweep(
        &broker,
        env.store.clone(),
        env.http.clone(),
        api_base(&env),
        Job::Refresh,
        SweepOptions {
            concurrency: 8,
            rate_per_sec: Some(rate),
            page_size: 5,
            ..SweepOptions::default()
        },
        stop,
        &on_event,
    )
    .await
    .unwrap();
    let started = events.lock().unwrap().len() as f64;
    assert_eq!(started, 12.0);
    assert_eq!(summary.counts.get(&Outcome::Ok), Some(&12));
    // At most one start at once, then one per 1/rate s.
    let allowed = 1.0 + rate * summary.elapsed.as_secs_f64();
    assert!(
        started <= allowed,
        "{started} starts in {:?}",
        summary.elapsed
    );
}

async fn drive_appdata_sweep_lists_each_users_folder_and_retries_a_refused_token_once(env: Env) {
    let broker = env.broker();
    let mut drive_users = BTreeMap::new();
    for n in 0..6 {
        let e = email(n);
        drive_users.insert(e.clone(), env.sign_in(&e).await);
    }
    for n in 6..8 {
        env.sign_in_with(Code {
            scope: "openid email",
            ..Code::web(&email(n))
        })
        .await;
    }
    env.sign_in_with(Code {
        online_native: true,
        ..Code::web(&email(8))
    })
    .await;

    // One user keeps a file in their appDataFolder.
    let first_sub = &drive_users[&email(0)];
    let token = broker
        .access_token(
            first_sub,
            &grantkeeper_broker::TokenRequest {
                scopes: Some(grantkeeper_core::Scopes::parse(
                    super::harness::DRIVE_APPDATA,
                )),
                min_ttl: None,
            },
        )
        .await
        .unwrap();
    let created = env
        .http
        .post(format!("{}/drive/v3/files", env.emulator_url))
        .bearer_auth(grantkeeper_core::ExposeSecret::expose_secret(&token.token))
        .json(&json!({"name": "prefs.json", "parents": ["appDataFolder"]}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{:?}", created.text().await);

    // The API's clock runs ahead: every token the broker holds is refused once (401), then
    // replaced.
    env.settings(json!({"clock_offset_secs": 3700})).await;
    let (events, on_event) = recorder();
    let (_stop_tx, stop) = watch::channel(false);
    let summary = run_sweep(
        &broker,
        env.store.clone(),
        env.http.clone(),
        api_base(&env),
        Job::DriveAppdata,
        SweepOptions {
            concurrency: 4,
            rate_per_sec: None,
            page_size: 4,
            ..SweepOptions::default()
        },
        stop,
        &on_event,
    )
    .await
    .unwrap();
    assert_eq!(summary.counts.get(&Outcome::Ok), Some(&6), "{:?}", events);
    assert_eq!(summary.counts.get(&Outcome::Skipped), Some(&3));
    let events = events.lock().unwrap().clone();
    let first = events.iter().find(|e| &e.sub == first_sub).unwrap();
    assert_eq!(first.detail, "1 files in appDataFolder");
    for e in drive_users.keys() {
        assert_eq!(env.refreshes_of(e).await, 1, "{e}");
    }

    // Tokens the API accepts are used as they are.
    let (_stop_tx, stop) = watch::channel(false);
    let again = run_sweep(
        &broker,
        env.store.clone(),
        env.http.clone(),
        api_base(&env),
        Job::DriveAppdata,
        SweepOptions::default(),
        stop,
        &|_| {},
    )
    .await
    .unwrap();
    assert_eq!(again.counts.get(&Outcome::Ok), Some(&6));
    for e in drive_users.keys() {
        assert_eq!(env.refreshes_of(e).await, 1, "{e}");
    }

    // An API in trouble makes the users failing, not revoked.
    env.faults(json!({"drive": {"status": 503, "error_rate": 1.0}}))
        .await;
    let (events, on_event) = recorder();
    let (_stop_tx, stop) = watch::channel(false);
    let failing = run_sweep(
        &broker,
        env.store.clone(),
        env.http.clone(),
        api_base(&env),
        Job::DriveAppdata,
        SweepOptions::default(),
        stop,
        &on_event,
    )
    .await
    .unwrap();
    assert_eq!(failing.counts.get(&Outcome::Failing), Some(&6));
    assert!(
        events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.outcome == Outcome::Failing)
            .all(|e| e.detail.contains("503"))
    );
    for sub in drive_users.values() {
        assert_ne!(env.grant(sub).await.state, GrantState::Revoked);
    }
}
