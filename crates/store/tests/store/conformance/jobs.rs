//! Jobs (`JobStore`): items made with their job, leased to one claim at a time and offered
//! again when the lease ends, settled only by the lease that holds them (all or none), retries
//! bounded by `max_attempts`, keyed jobs joined, and refresh slots taken in order.

use super::{DRIVE, OPENID_EMAIL, refresh, sign_in, signed_in, state_update, t};
use grantkeeper_core::{GrantState, Scopes};
use grantkeeper_store::{
    ItemClaim, ItemState, JobState, NewJob, Selection, Settle, SharedStore, StoreError,
};
use std::collections::HashSet;

fn ms(seconds: i64) -> i64 {
    t(seconds).unix_timestamp() * 1000
}

fn new_job(selection: Selection, scopes: &str) -> NewJob {
    NewJob {
        name: "nightly".into(),
        kind: "api".into(),
        key: None,
        scopes: Scopes::parse(scopes),
        selection,
        rate: Some(10.0),
        lease_secs: 30,
        min_ttl_secs: 300,
        max_attempts: 2,
        spread_secs: 0,
        created_by: "key_test".into(),
        at: t(0),
    }
}

fn claim(job_id: i64, lease: &str, max: u32, now: i64) -> ItemClaim {
    ItemClaim {
        job_id,
        lease: lease.into(),
        owner: format!("worker-{lease}"),
        max,
        now_ms: ms(now),
        lease_until_ms: ms(now + 30),
    }
}

async fn users(store: &SharedStore, n: usize) -> Vec<String> {
    let mut subs = Vec::new();
    for i in 0..n {
        let sub = format!("job-user-{i:02}");
        signed_in(store, &sub).await;
        subs.push(sub);
    }
    subs
}

pub async fn a_job_holds_the_users_whose_grant_holds_its_scopes(store: SharedStore) {
    store
        .record_sign_in(sign_in(
            "drive-a",
            &format!("{OPENID_EMAIL} {DRIVE}"),
            Some(refresh("a")),
            t(0),
        ))
        .await
        .unwrap();
    signed_in(&store, "openid-b").await;
    store
        .record_sign_in(sign_in(
            "drive-c",
            &format!("{OPENID_EMAIL} {DRIVE}"),
            Some(refresh("c")),
            t(0),
        ))
        .await
        .unwrap();
    store
        .update_grant_state(
            "drive-c",
            None,
            state_update(GrantState::Revoked, "gone", None, 1),
        )
        .await
        .unwrap();
    let job = store
        .create_job(new_job(Selection::Holding, DRIVE))
        .await
        .unwrap();
    assert_eq!(job.total, 2);
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.rate, Some(10.0));
    assert_eq!(job.scopes, Scopes::parse(DRIVE));
    let counts = store.job_counts(job.id, ms(1)).await.unwrap();
    assert_eq!(counts.pending, 1);
    assert_eq!(counts.skipped.get("revoked"), Some(&1));
    let failures = store.job_failures(job.id, 20).await.unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].sub, "drive-c");
    assert_eq!(failures[0].state, ItemState::Skipped);
    // The revoked user is never offered.
    let got = store.claim_items(claim(job.id, "l1", 10, 1)).await.unwrap();
    let subs: Vec<_> = got.items.iter().map(|i| i.sub.as_str()).collect();
    assert_eq!(subs, ["drive-a"]);
    let grant = got.items[0].grant.as_ref().unwrap();
    assert_eq!(grant.sub, "drive-a");
    assert!(grant.refresh_token.is_some());

    // Without scopes, every user; an unknown job is not found.
    let all = store
        .create_job(new_job(Selection::Holding, ""))
        .await
        .unwrap();
    assert_eq!(all.total, 3);
    assert!(matches!(
        store.claim_items(claim(9999, "l", 1, 1)).await,
        Err(StoreError::NotFound)
    ));
    assert!(store.job(9999).await.unwrap().is_none());
}

pub async fn an_item_goes_to_one_claim_and_again_when_its_lease_ends(store: SharedStore) {
    users(&store, 5).await;
    let job = store
        .create_job(new_job(Selection::Holding, ""))
        .await
        .unwrap();
    let a = store.claim_items(claim(job.id, "a", 3, 1)).await.unwrap();
    let b = store.claim_items(claim(job.id, "b", 10, 2)).await.unwrap();
    assert_eq!(a.items.len(), 3);
    assert_eq!(b.items.len(), 2);
    let ids: HashSet<i64> = a.items.iter().chain(&b.items).map(|i| i.id).collect();
    assert_eq!(ids.len(), 5);
    assert!(a.items.iter().all(|i| i.attempt == 1));
    // Nothing is due until a lease ends (a's, at 31 s).
    let none = store.claim_items(claim(job.id, "c", 10, 10)).await.unwrap();
    assert!(none.items.is_empty());
    assert_eq!(none.next_due_ms, Some(ms(31)));
    let counts = store.job_counts(job.id, ms(10)).await.unwrap();
    assert_eq!((counts.pending, counts.in_flight), (0, 5));
    // a's lease ended at 31 s, b's runs until 32 s: a's items count as pending again.
    let counts = store.job_counts(job.id, ms(31)).await.unwrap();
    assert_eq!((counts.pending, counts.in_flight), (3, 2));
    // a's lease ended: its items are offered again, to c, a second time.
    let again = store.claim_items(claim(job.id, "c", 10, 31)).await.unwrap();
    let mut again_ids: Vec<i64> = again.items.iter().map(|i| i.id).collect();
    let mut a_ids: Vec<i64> = a.items.iter().map(|i| i.id).collect();
    again_ids.sort_unstable();
    a_ids.sort_unstable();
    assert_eq!(again_ids, a_ids);
    assert!(again.items.iter().all(|i| i.attempt == 2));
    // a no longer holds them.
    let late = vec![(a.items[0].id, Settle::Done)];
    assert!(matches!(
        store.settle_items(job.id, "a", late, ms(32)).await,
        Err(StoreError::Conflict)
    ));
}

pub async fn a_report_settles_only_what_its_lease_holds(store: SharedStore) {
    users(&store, 4).await;
    let job = store
        .create_job(new_job(Selection::Holding, ""))
        .await
        .unwrap();
    let a = store.claim_items(claim(job.id, "a", 2, 1)).await.unwrap();
    let b = store.claim_items(claim(job.id, "b", 2, 1)).await.unwrap();
    let before = store.job_counts(job.id, ms(2)).await.unwrap();
    // One of b's among a's: nothing changes.
    let mixed = vec![(a.items[0].id, Settle::Done), (b.items[0].id, Settle::Done)];
    assert!(matches!(
        store.settle_items(job.id, "a", mixed, ms(2)).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(store.job_counts(job.id, ms(2)).await.unwrap(), before);
    // A lease that ended holds nothing.
    let expired = vec![(b.items[0].id, Settle::Done)];
    assert!(matches!(
        store.settle_items(job.id, "b", expired, ms(31)).await,
        Err(StoreError::Conflict)
    ));
    // Its own items, settled.
    let counts = store
        .settle_items(
            job.id,
            "a",
            vec![
                (a.items[0].id, Settle::Done),
                (
                    a.items[1].id,
                    Settle::Failed {
                        reason: "worker".into(),
                        detail: Some("Drive said 500".into()),
                    },
                ),
            ],
            ms(3),
        )
        .await
        .unwrap();
    assert_eq!((counts.done, counts.failed), (1, 1));
    // Settled: not held any more.
    assert!(matches!(
        store
            .settle_items(job.id, "a", vec![(a.items[0].id, Settle::Done)], ms(4))
            .await,
        Err(StoreError::Conflict)
    ));
    // The job's counts moved with its items: b's two still leased, one done, one failed.
    let counts = store.job_counts(job.id, ms(4)).await.unwrap();
    assert_eq!(
        (counts.pending, counts.in_flight, counts.done, counts.failed),
        (0, 2, 1, 1)
    );
    assert_eq!(counts.settled_last_minute, 2);
    let failures = store.job_failures(job.id, 10).await.unwrap();
    assert_eq!(failures[0].detail.as_deref(), Some("Drive said 500"));
    assert_eq!(failures[0].reason.as_deref(), Some("worker"));
    assert_eq!(failures[0].at, Some(t(3)));
}

pub async fn retries_end_in_failure_on_the_last_attempt(store: SharedStore) {
    users(&store, 2).await;
    let job = store
        .create_job(new_job(Selection::Holding, ""))
        .await
        .unwrap();
    let first = store.claim_items(claim(job.id, "a", 2, 1)).await.unwrap();
    let [x, y] = [first.items[0].id, first.items[1].id];
    let counts = store
        .settle_items(
            job.id,
            "a",
            vec![
                (
                    x,
                    Settle::Retry {
                        at_ms: ms(100),
                        detail: Some("busy".into()),
                    },
                ),
                // Given back unworked: its attempt does not count.
                (y, Settle::Release { at_ms: ms(1) }),
            ],
            ms(2),
        )
        .await
        .unwrap();
    assert_eq!((counts.retry, counts.released), (1, 1));
    let second = store.claim_items(claim(job.id, "b", 5, 3)).await.unwrap();
    assert_eq!(second.items.len(), 1);
    assert_eq!((second.items[0].id, second.items[0].attempt), (y, 1));
    store
        .settle_items(job.id, "b", vec![(y, Settle::Done)], ms(4))
        .await
        .unwrap();
    // x is due at 100 s, on its second and last attempt.
    let third = store.claim_items(claim(job.id, "c", 5, 100)).await.unwrap();
    assert_eq!((third.items[0].id, third.items[0].attempt), (x, 2));
    let counts = store
        .settle_items(
            job.id,
            "c",
            vec![(
                x,
                Settle::Retry {
                    at_ms: ms(200),
                    detail: None,
                },
            )],
            ms(101),
        )
        .await
        .unwrap();
    assert_eq!((counts.retry, counts.failed), (0, 1));
    let failures = store.job_failures(job.id, 10).await.unwrap();
    assert_eq!(failures[0].reason.as_deref(), Some("attempts"));
    // The last item settled: the job is finished.
    let ended = store.job(job.id).await.unwrap().unwrap();
    assert_eq!(ended.state, JobState::Finished);
    assert_eq!(ended.finished_at, Some(t(101)));
    let counts = store.job_counts(job.id, ms(103)).await.unwrap();
    assert_eq!((counts.done, counts.failed, counts.pending), (1, 1, 0));
    // Only x was settled within the last minute.
    assert_eq!(counts.settled_last_minute, 1);
}

pub async fn a_lease_that_runs_out_on_the_last_attempt_fails(store: SharedStore) {
    users(&store, 1).await;
    let job = store
        .create_job(new_job(Selection::Holding, ""))
        .await
        .unwrap();
    store.claim_items(claim(job.id, "a", 1, 1)).await.unwrap();
    let second = store.claim_items(claim(job.id, "b", 1, 31)).await.unwrap();
    assert_eq!(second.items[0].attempt, 2);
    // b dies too: at the end of its lease the item fails, and the job is finished.
    let none = store.claim_items(claim(job.id, "c", 1, 61)).await.unwrap();
    assert!(none.items.is_empty());
    assert_eq!(none.next_due_ms, None);
    let failures = store.job_failures(job.id, 10).await.unwrap();
    assert_eq!(failures[0].reason.as_deref(), Some("lease_expired"));
    let counts = store.job_counts(job.id, ms(61)).await.unwrap();
    assert_eq!((counts.pending, counts.in_flight, counts.failed), (0, 0, 1));
    assert_eq!(
        store.job(job.id).await.unwrap().unwrap().state,
        JobState::Finished
    );
}

pub async fn a_lease_is_renewed_by_its_holder_only(store: SharedStore) {
    users(&store, 2).await;
    let job = store
        .create_job(new_job(Selection::Holding, ""))
        .await
        .unwrap();
    store.claim_items(claim(job.id, "a", 2, 1)).await.unwrap();
    assert_eq!(
        store
            .renew_items(job.id, "b", ms(100), ms(2))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .renew_items(job.id, "a", ms(100), ms(2))
            .await
            .unwrap(),
        2
    );
    // Past its first end, still held.
    assert!(
        store
            .claim_items(claim(job.id, "c", 2, 50))
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

pub async fn a_cancelled_job_offers_nothing(store: SharedStore) {
    users(&store, 2).await;
    let job = store
        .create_job(new_job(Selection::Holding, ""))
        .await
        .unwrap();
    let held = store.claim_items(claim(job.id, "a", 1, 1)).await.unwrap();
    let cancelled = store.cancel_job(job.id, t(2)).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert!(
        store
            .claim_items(claim(job.id, "b", 5, 3))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // What was held may still be reported.
    store
        .settle_items(job.id, "a", vec![(held.items[0].id, Settle::Done)], ms(4))
        .await
        .unwrap();
    assert_eq!(
        store.job(job.id).await.unwrap().unwrap().state,
        JobState::Cancelled
    );
    assert!(matches!(
        store.cancel_job(424242, t(5)).await,
        Err(StoreError::NotFound)
    ));
    let listed = store
        .list_jobs(Some(JobState::Cancelled), 10)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert!(
        store
            .list_jobs(Some(JobState::Running), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn a_keyed_job_is_joined_while_it_runs(store: SharedStore) {
    users(&store, 1).await;
    let keyed = NewJob {
        key: Some("sweep:refresh".into()),
        selection: Selection::Everyone,
        ..new_job(Selection::Everyone, "")
    };
    let (first, made) = store.create_or_join_job(keyed.clone()).await.unwrap();
    assert!(made);
    let (again, made) = store.create_or_join_job(keyed.clone()).await.unwrap();
    assert!(!made);
    assert_eq!(again.id, first.id);
    assert!(matches!(
        store.create_job(keyed.clone()).await,
        Err(StoreError::AlreadyExists)
    ));
    store.cancel_job(first.id, t(1)).await.unwrap();
    let (third, made) = store.create_or_join_job(keyed).await.unwrap();
    assert!(made);
    assert_ne!(third.id, first.id);
    assert_eq!(
        store
            .latest_job_with_key("sweep:refresh")
            .await
            .unwrap()
            .map(|j| j.id),
        Some(third.id)
    );
    // A job of no users is finished at once.
    let empty = store
        .create_job(new_job(Selection::Holding, "https://example.com/none"))
        .await
        .unwrap();
    assert_eq!((empty.total, empty.state), (0, JobState::Finished));
}

pub async fn idle_grants_spread_over_time(store: SharedStore) {
    let subs = users(&store, 4).await;
    // Two refreshed lately; the others last used at t(0).
    for sub in &subs[..2] {
        let grant = store.grant(sub).await.unwrap().unwrap();
        store
            .record_refresh(
                sub,
                grant.version,
                grantkeeper_store::RefreshSuccess {
                    access_token: super::access(sub, t(5000)),
                    refresh_token: None,
                    scopes: None,
                    at: t(1000),
                },
            )
            .await
            .unwrap();
    }
    let mut idle = new_job(Selection::IdleSince(t(500)), "");
    idle.spread_secs = 100;
    idle.at = t(2000);
    let job = store.create_job(idle).await.unwrap();
    assert_eq!(job.total, 2);
    // The first is due at once, the second half the spread later.
    let now = store
        .claim_items(ItemClaim {
            now_ms: ms(2000),
            ..claim(job.id, "a", 5, 2000)
        })
        .await
        .unwrap();
    assert_eq!(now.items.len(), 1);
    assert_eq!(now.items[0].sub, subs[2]);
    store
        .settle_items(job.id, "a", vec![(now.items[0].id, Settle::Done)], ms(2001))
        .await
        .unwrap();
    let later = store
        .claim_items(claim(job.id, "b", 5, 2049))
        .await
        .unwrap();
    assert!(later.items.is_empty());
    assert_eq!(later.next_due_ms, Some(ms(2050)));
    let later = store
        .claim_items(claim(job.id, "b", 5, 2050))
        .await
        .unwrap();
    assert_eq!(later.items[0].sub, subs[3]);
}

pub async fn refresh_slots_are_taken_in_order_within_the_horizon(store: SharedStore) {
    users(&store, 1).await;
    let job = store
        .create_job(new_job(Selection::Holding, ""))
        .await
        .unwrap();
    // 10 a second: a slot every 100 ms on the grid.
    let now = 1_700_000_000_050_000; // µs, between two slots
    let a = store
        .take_refresh_slots(job.id, 4, now, 1_000_000)
        .await
        .unwrap();
    assert_eq!(
        (a.first_us, a.slot_us, a.granted),
        (1_700_000_000_100_000, 100_000, 4)
    );
    // The next take starts after them and stops at the horizon.
    let b = store
        .take_refresh_slots(job.id, 50, now, 1_000_000)
        .await
        .unwrap();
    assert_eq!((b.first_us, b.granted), (1_700_000_000_500_000, 6));
    let c = store
        .take_refresh_slots(job.id, 5, now, 1_000_000)
        .await
        .unwrap();
    assert_eq!(c.granted, 0);
    // Later, slots start from then: none is taken in the past.
    let d = store
        .take_refresh_slots(job.id, 2, now + 10_000_000, 1_000_000)
        .await
        .unwrap();
    assert_eq!((d.first_us, d.granted), (1_700_000_010_100_000, 2));
    // A job without a rate has no slots.
    let free = store
        .create_job(NewJob {
            rate: None,
            ..new_job(Selection::Holding, "")
        })
        .await
        .unwrap();
    assert!(matches!(
        store.take_refresh_slots(free.id, 1, now, 1_000_000).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn concurrent_claims_never_share_an_item(store: SharedStore) {
    users(&store, 40).await;
    let job = store
        .create_job(new_job(Selection::Holding, ""))
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .claim_items(claim(job.id, &format!("c{i}"), 7, 1))
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|item| item.id)
                .collect::<Vec<_>>()
        });
    }
    let mut all = Vec::new();
    while let Some(ids) = tasks.join_next().await {
        all.extend(ids.unwrap());
    }
    let distinct: HashSet<_> = all.iter().copied().collect();
    assert_eq!(all.len(), 40);
    assert_eq!(distinct.len(), 40);
}

pub async fn concurrent_slot_takers_share_the_rate(store: SharedStore) {
    users(&store, 1).await;
    let job = store
        .create_job(new_job(Selection::Holding, ""))
        .await
        .unwrap();
    let now = 1_700_000_000_000_000;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .take_refresh_slots(job.id, 3, now, 1_000_000)
                .await
                .unwrap()
        });
    }
    let mut slots = Vec::new();
    while let Some(s) = tasks.join_next().await {
        let s = s.unwrap();
        for k in 0..s.granted {
            slots.push(s.first_us + s.slot_us * i64::from(k));
        }
    }
    slots.sort_unstable();
    // 11 slots in [now, now + 1 s] at 10 a second, none twice.
    let expected: Vec<i64> = (0..11).map(|k| now + k * 100_000).collect();
    assert_eq!(slots, expected);
}
