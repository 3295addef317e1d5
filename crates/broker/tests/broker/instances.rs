//! Several instances on one database (invariant 4 across instances, and sweeps shared by
//! several processes), each check run on SQLite and on PostgreSQL. Every instance opens the
//! database on its own, as another process would.

use super::harness::{Env, email};
use grantkeeper_broker::jobs::Jobs;
use grantkeeper_broker::sweep::{
    self, Job, Outcome, SweepEvent, SweepOptions, SweepSummary, run_sweep,
};
use grantkeeper_broker::{Broker, TokenRequest};
use grantkeeper_core::ExposeSecret;
use grantkeeper_store::{ItemClaim, JobRecord, Settle, SharedStore, StoreError};
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use url::Url;

on_every_store!(
    two_hundred_demands_on_two_instances_cause_one_refresh,
    a_dead_lease_holder_delays_the_other_instance_only_until_its_lease_ends,
    two_sweeps_at_once_share_one_run,
    a_stopped_sweep_is_continued_by_another_instance_without_redoing_saved_work,
    an_abandoned_batch_is_taken_over_once_its_lease_ends,
);

fn secs(n: i64) -> time::Duration {
    time::Duration::seconds(n)
}

async fn two_hundred_demands_on_two_instances_cause_one_refresh(env: Env) {
    let sub = env.sign_in("crowd@example.com").await;
    let first = env.broker_on(env.open_store().await);
    let second = env.broker_on(env.open_store().await);
    env.advance(3700);
    // A slow token endpoint keeps the refresh in flight while the crowd arrives.
    env.faults(json!({"token": {"latency_ms": 300}})).await;

    let barrier = Arc::new(tokio::sync::Barrier::new(200));
    let mut tasks = Vec::new();
    for n in 0..200 {
        let broker = if n % 2 == 0 { &first } else { &second }.clone();
        let sub = sub.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            broker.access_token(&sub, &TokenRequest::default()).await
        }));
    }
    let mut tokens = HashSet::new();
    for t in tasks {
        tokens.insert(t.await.unwrap().unwrap().token.expose_secret().to_owned());
    }
    assert_eq!(
        tokens.len(),
        1,
        "every caller of both instances gets the one token"
    );
    assert_eq!(env.refreshes().await, 1);
    let persisted = env.open_access(&env.grant(&sub).await).unwrap();
    assert!(tokens.contains(&persisted));
    // Both instances gave the lease back: anyone may take it now.
    let now = env.now();
    assert!(
        env.store
            .try_lease_refresh(&sub, "a third instance", now + secs(5), now)
            .await
            .unwrap()
    );
}

async fn a_dead_lease_holder_delays_the_other_instance_only_until_its_lease_ends(env: Env) {
    let sub = env.sign_in("orphan@example.com").await;
    let store = env.open_store().await;
    let broker = env.broker_on(store.clone());
    env.advance(3700);

    // An instance took the lease and died: it never gives it back.
    let now = env.now();
    assert!(
        store
            .try_lease_refresh(&sub, "dead instance", now + secs(60), now)
            .await
            .unwrap()
    );
    let demand = {
        let (broker, sub) = (broker.clone(), sub.clone());
        tokio::spawn(async move { broker.access_token(&sub, &TokenRequest::default()).await })
    };
    // While its lease lasts, the token endpoint is not asked.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!demand.is_finished());
    assert_eq!(env.refreshes().await, 0);
    // Its lease runs out: the waiting instance refreshes.
    env.advance(61);
    let token = demand.await.unwrap().unwrap();
    assert_eq!(env.refreshes().await, 1);
    assert_eq!(
        env.open_access(&env.grant(&sub).await).unwrap(),
        token.token.expose_secret()
    );

    // A holder that gives its lease back without a token (its refresh failed) lets the
    // waiting instance refresh at once.
    env.advance(3700);
    let now = env.now();
    assert!(
        store
            .try_lease_refresh(&sub, "failing instance", now + secs(60), now)
            .await
            .unwrap()
    );
    let demand = {
        let (broker, sub) = (broker.clone(), sub.clone());
        tokio::spawn(async move { broker.access_token(&sub, &TokenRequest::default()).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!demand.is_finished());
    assert_eq!(env.refreshes().await, 1);
    store
        .release_refresh_lease(&sub, "failing instance")
        .await
        .unwrap();
    let again = demand.await.unwrap().unwrap();
    assert_ne!(again.token.expose_secret(), token.token.expose_secret());
    assert_eq!(env.refreshes().await, 2);
    // The broker gave its own lease back after committing.
    let now = env.now();
    assert!(
        store
            .try_lease_refresh(&sub, "dead instance", now + secs(5), now)
            .await
            .unwrap()
    );
}

fn api_base(env: &Env) -> Url {
    Url::parse(&env.emulator_url).unwrap()
}

type Events = Arc<Mutex<Vec<SweepEvent>>>;

/// A refresh sweep on `broker`, recording its events.
async fn sweep(
    env: &Env,
    broker: &Broker,
    store: &SharedStore,
    opts: SweepOptions,
    stop: watch::Receiver<bool>,
    events: Events,
    stop_after: Option<(u64, watch::Sender<bool>)>,
) -> SweepSummary {
    let on_event = move |e: &SweepEvent| {
        let mut events = events.lock().unwrap();
        events.push(e.clone());
        if let Some((n, stop)) = &stop_after
            && events.len() as u64 == *n
        {
            let _ = stop.send(true);
        }
    };
    run_sweep(
        broker,
        store.clone(),
        env.http.clone(),
        api_base(env),
        Job::Refresh,
        opts,
        stop,
        &on_event,
    )
    .await
    .unwrap()
}

/// The refresh sweep's run: its running job, joined, or made.
async fn start_or_join_run(env: &Env) -> JobRecord {
    Jobs::new(env.broker(), env.store.clone())
        .create_or_join(
            sweep::job_spec(Job::Refresh, &SweepOptions::default()),
            "test",
        )
        .await
        .unwrap()
        .0
        .job
}

fn ms(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap()
}

fn ok(summary: &SweepSummary) -> u64 {
    summary.counts.get(&Outcome::Ok).copied().unwrap_or(0)
}

/// How often the emulator refreshed each user.
async fn refreshes_by_email(env: &Env) -> BTreeMap<String, u64> {
    serde_json::from_value(env.stats().await["refreshes_by_email"].clone()).unwrap()
}

async fn two_sweeps_at_once_share_one_run(env: Env) {
    let emails: Vec<String> = (0..500).map(email).collect();
    env.sign_in_all(&emails).await;
    let run = start_or_join_run(&env).await;
    let (store_a, store_b) = (env.open_store().await, env.open_store().await);
    let (a, b) = (
        env.broker_on(store_a.clone()),
        env.broker_on(store_b.clone()),
    );
    // Slow enough refreshes that both processes have batches in flight together.
    env.faults(json!({"token": {"latency_ms": 5}})).await;
    let opts = SweepOptions {
        concurrency: 8,
        rate_per_sec: None,
        page_size: 25,
        ..SweepOptions::default()
    };
    let (events_a, events_b): (Events, Events) = Default::default();
    let (_stop_tx, stop) = watch::channel(false);
    let (first, second) = tokio::join!(
        sweep(
            &env,
            &a,
            &store_a,
            opts.clone(),
            stop.clone(),
            events_a.clone(),
            None
        ),
        sweep(&env, &b, &store_b, opts, stop, events_b.clone(), None),
    );

    assert!(!first.interrupted && !second.interrupted);
    assert_eq!(ok(&first) + ok(&second), 500);
    let mut swept: Vec<String> = events_a
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.sub.clone())
        .collect();
    swept.extend(events_b.lock().unwrap().iter().map(|e| e.sub.clone()));
    let distinct: HashSet<&String> = swept.iter().collect();
    assert_eq!(
        (swept.len(), distinct.len()),
        (500, 500),
        "each user once, by one process"
    );
    let refreshed = refreshes_by_email(&env).await;
    assert_eq!(refreshed.len(), 500);
    assert!(refreshed.values().all(|n| *n == 1), "{refreshed:?}");
    for events in [&events_a, &events_b] {
        assert!(events.lock().unwrap().iter().all(|e| e.total == 500));
    }
    // The run is finished: the job's next run is a new one.
    let next = start_or_join_run(&env).await;
    assert_ne!(next.id, run.id);
    assert_eq!(next.finished_at, None);
}

async fn a_stopped_sweep_is_continued_by_another_instance_without_redoing_saved_work(env: Env) {
    let emails: Vec<String> = (0..60).map(email).collect();
    env.sign_in_all(&emails).await;
    let run = start_or_join_run(&env).await;
    let (store_a, store_b) = (env.open_store().await, env.open_store().await);
    let (a, b) = (
        env.broker_on(store_a.clone()),
        env.broker_on(store_b.clone()),
    );
    // Slow refreshes, so that the stop lands with work left, and a report is told well within
    // one refresh.
    env.faults(json!({"token": {"latency_ms": 400}})).await;
    let opts = SweepOptions {
        concurrency: 4,
        rate_per_sec: None,
        page_size: 10,
        ..SweepOptions::default()
    };

    let (stop_tx, stop) = watch::channel(false);
    let first_events: Events = Default::default();
    let first = sweep(
        &env,
        &a,
        &store_a,
        opts.clone(),
        stop,
        first_events.clone(),
        Some((25, stop_tx)),
    )
    .await;
    assert!(first.interrupted);
    let first_events = first_events.lock().unwrap().clone();
    // The stop left users to the other process. What was in flight at it finished and was
    // reported (how many depends on how soon reports are told: a place is filled as soon as
    // its user ends, before the report); nobody is refreshed twice (below).
    assert!(
        (25..60).contains(&first_events.len()),
        "{}",
        first_events.len()
    );

    let second_events: Events = Default::default();
    let (_stop_tx, stop) = watch::channel(false);
    let second = sweep(&env, &b, &store_b, opts, stop, second_events.clone(), None).await;
    assert!(!second.interrupted);
    let cursor = second
        .resumed_from
        .clone()
        .expect("the second process resumes");
    let second_events = second_events.lock().unwrap().clone();
    // Everybody after the saved progress, nobody before it, nobody twice.
    assert!(first_events.iter().all(|e| e.sub <= cursor));
    assert!(second_events.iter().all(|e| e.sub > cursor));
    assert_eq!(first_events.len() + second_events.len(), 60);
    assert_eq!(second_events.last().unwrap().done, 60);
    assert_eq!(ok(&first) + ok(&second), 60);
    let refreshed = refreshes_by_email(&env).await;
    assert_eq!(refreshed.len(), 60);
    assert!(refreshed.values().all(|n| *n == 1), "{refreshed:?}");
    // The run is finished: the job's next run is a new one.
    let next = start_or_join_run(&env).await;
    assert_ne!(next.id, run.id);
}

async fn an_abandoned_batch_is_taken_over_once_its_lease_ends(env: Env) {
    let emails: Vec<String> = (0..30).map(email).collect();
    let subs = env.sign_in_all(&emails).await;
    let mut by_sub: Vec<(String, String)> =
        subs.iter().cloned().zip(emails.iter().cloned()).collect();
    by_sub.sort();
    let run = start_or_join_run(&env).await;
    // A process claimed the first ten users, did four, and died.
    let now = env.now();
    let batch = env
        .store
        .claim_items(ItemClaim {
            job_id: run.id,
            lease: "dead sweeper's".to_owned(),
            owner: "dead sweeper".to_owned(),
            max: 10,
            now_ms: ms(now),
            lease_until_ms: ms(now + secs(20)),
        })
        .await
        .unwrap();
    let claimed: Vec<&String> = batch.items.iter().map(|i| &i.sub).collect();
    let first_ten: Vec<&String> = by_sub[..10].iter().map(|(sub, _)| sub).collect();
    assert_eq!(claimed, first_ten);
    let last = by_sub[9].0.clone();
    let progress = by_sub[3].0.clone();
    env.store
        .settle_items(
            run.id,
            "dead sweeper's",
            batch.items[..4]
                .iter()
                .map(|i| (i.id, Settle::Done))
                .collect(),
            ms(now),
        )
        .await
        .unwrap();

    let store = env.open_store().await;
    let broker = env.broker_on(store.clone());
    let opts = SweepOptions {
        concurrency: 4,
        rate_per_sec: None,
        page_size: 10,
        ..SweepOptions::default()
    };
    // While its lease lasts, the batch is left alone: the others are done, and the sweep waits
    // for the batch (here it is stopped once the other 20 users are done).
    let events: Events = Default::default();
    let (stop_tx, stop) = watch::channel(false);
    let early = sweep(
        &env,
        &broker,
        &store,
        opts.clone(),
        stop,
        events.clone(),
        Some((20, stop_tx)),
    )
    .await;
    assert!(early.interrupted);
    assert_eq!(early.resumed_from, None);
    assert_eq!(ok(&early), 20);
    assert!(events.lock().unwrap().iter().all(|e| e.sub > last));
    let unfinished = start_or_join_run(&env).await;
    assert_eq!(unfinished.id, run.id);

    // Its lease ends: the next sweep continues it after its progress and finishes the run.
    env.advance(21);
    let events: Events = Default::default();
    let (_stop_tx, stop) = watch::channel(false);
    let late = sweep(&env, &broker, &store, opts, stop, events.clone(), None).await;
    assert_eq!(late.resumed_from.as_deref(), Some(progress.as_str()));
    assert_eq!(ok(&late), 6);
    let events = events.lock().unwrap().clone();
    let swept: Vec<&String> = events.iter().map(|e| &e.sub).collect();
    let expected: Vec<&String> = by_sub[4..10].iter().map(|(sub, _)| sub).collect();
    let mut sorted = swept.clone();
    sorted.sort();
    assert_eq!(sorted, expected);
    // The users before its progress count as done, by the process that died; the run's
    // counts cover all 30 users once.
    assert_eq!(events.iter().map(|e| e.done).max(), Some(30));
    assert!(late.run_finished);
    assert_eq!(late.run_counts.get(&Outcome::Ok).copied(), Some(30));
    assert_eq!(late.run_counts.values().sum::<u64>(), 30);
    let refreshed = refreshes_by_email(&env).await;
    for (n, (_, e)) in by_sub.iter().enumerate() {
        let expected = u64::from(n >= 4);
        assert_eq!(refreshed.get(e).copied().unwrap_or(0), expected, "{e}");
    }
    // The dead process, were it to wake, holds nothing any more.
    let now = env.now();
    assert!(matches!(
        env.store
            .settle_items(
                run.id,
                "dead sweeper's",
                vec![(batch.items[5].id, Settle::Done)],
                ms(now)
            )
            .await,
        Err(StoreError::Conflict)
    ));
    let next = start_or_join_run(&env).await;
    assert_ne!(next.id, run.id);
}

mod two_sweeps_on_two_pools_with_the_cli_settings {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if let Some(env) = super::Env::start_postgres().await {
            super::two_sweeps_on_two_pools_with_the_cli_settings(env).await;
        }
    }
}

/// The CLI's settings (batches of 500, 16 users at once) with two processes, each on its own
/// pool of the store's default size.
async fn two_sweeps_on_two_pools_with_the_cli_settings(env: Env) {
    let emails: Vec<String> = (0..1000).map(email).collect();
    env.sign_in_all(&emails).await;
    let opts = SweepOptions {
        concurrency: 16,
        rate_per_sec: None,
        page_size: 500,
        ..SweepOptions::default()
    };
    let (events_a, events_b): (Events, Events) = Default::default();
    let (_stop_tx, stop) = watch::channel(false);
    // Each process: a runtime of its own on a thread of its own, and a pool of its own.
    let (first, second) = tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            let process = |events: Events| {
                let (env, opts, stop) = (&env, opts.clone(), stop.clone());
                scope.spawn(move || {
                    let runtime = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()
                        .unwrap();
                    runtime.block_on(async move {
                        let store = grantkeeper_store::open(&env.store_url).await.unwrap();
                        let broker = env.broker_on(store.clone());
                        sweep(env, &broker, &store, opts, stop, events, None).await
                    })
                })
            };
            let (a, b) = (process(events_a.clone()), process(events_b.clone()));
            (a.join().unwrap(), b.join().unwrap())
        })
    });
    assert!(!first.interrupted && !second.interrupted);
    let refreshed = refreshes_by_email(&env).await;
    assert_eq!(refreshed.len(), 1000);
    assert!(refreshed.values().all(|n| *n == 1), "{refreshed:?}");
    assert_eq!(ok(&first) + ok(&second), 1000);
}
