//! Sweep batches (`SweepBatchStore`): several sweep processes share one run by claiming
//! batches of users under leases; every user is in exactly one batch; a batch whose owner died
//! or gave it back is taken over where it stopped; the run is finished when its last batch is.

use super::{signed_in, t};
use grantkeeper_store::{ExportKind, SharedStore, StoreError, SweepBatch};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// `count` users, signed in as one and copied by an import (a thousand sign-ins would cost a
/// thousand commits). Returns their subs in byte order.
async fn users(store: &SharedStore, count: usize) -> Vec<String> {
    // Mixed case and lengths, so that the order is bytes', not numbers' or a locale's.
    let mut subs: Vec<String> = (0..count)
        .map(|i| match i % 3 {
            0 => format!("{i}"),
            1 => format!("User-{i}"),
            _ => format!("user-{i:05}"),
        })
        .collect();
    subs.sort();
    signed_in(store, &subs[0]).await;
    let (user, _) = store.export_page(ExportKind::User, None, 10).await.unwrap();
    let (grant, _) = store
        .export_page(ExportKind::Grant, None, 10)
        .await
        .unwrap();
    let mut copies = Vec::new();
    for template in [&user[0], &grant[0]] {
        for sub in &subs[1..] {
            let mut copy = template.clone();
            copy.row.insert("sub".into(), Value::from(sub.as_str()));
            copies.push(copy);
        }
    }
    store.import(copies).await.unwrap();
    assert_eq!(store.count_users().await.unwrap(), count as u64);
    subs
}

async fn claim(
    store: &SharedStore,
    run: i64,
    owner: &str,
    size: u32,
    now: i64,
) -> Option<SweepBatch> {
    store
        .claim_sweep_batch(run, owner, size, t(now + 60), t(now))
        .await
        .unwrap()
}

async fn run_counts(store: &SharedStore, job: &str) -> Value {
    let run = store.start_or_resume_sweep(job, t(0)).await.unwrap();
    serde_json::from_str(&run.counts).unwrap()
}

fn conflict(result: Result<(), StoreError>) {
    let err = result.unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
}

fn not_found(result: Result<(), StoreError>) {
    let err = result.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

pub async fn sweep_batches_cover_every_user_once(store: SharedStore) {
    sweep_with_claimers(&[store.clone(), store]).await;
}

pub async fn sweep_batches_cover_every_user_once_across_instances(
    first: SharedStore,
    second: SharedStore,
) {
    sweep_with_claimers(&[first, second]).await;
}

/// Claimers on every store handle work one run at once until nothing is left to claim.
async fn sweep_with_claimers(stores: &[SharedStore]) {
    const USERS: usize = 1000;
    const SIZE: u32 = 50;
    const CLAIMERS: usize = 8;
    const BATCHES: usize = USERS / SIZE as usize;
    let subs = users(&stores[0], USERS).await;
    let run = stores[0]
        .start_or_resume_sweep("refresh", t(0))
        .await
        .unwrap();
    // Every process finds the one run.
    for store in stores {
        assert_eq!(
            store
                .start_or_resume_sweep("refresh", t(1))
                .await
                .unwrap()
                .id,
            run.id
        );
    }

    // Counted before each finish, so that a run found finished has seen every batch counted.
    let finishing = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..CLAIMERS {
        let store = stores[i % stores.len()].clone();
        let finishing = finishing.clone();
        tasks.push(tokio::spawn(async move {
            let owner = format!("sweeper-{i}");
            let mut worked = Vec::new();
            while let Some(batch) = claim(&store, run.id, &owner, SIZE, 10).await {
                assert_eq!(
                    (batch.run_id, batch.owner.as_str()),
                    (run.id, owner.as_str())
                );
                assert_eq!(batch.progress, None);
                assert_eq!(batch.lease_until, t(70));
                // The batch's users, as the sweep reads them.
                let page = store
                    .list_users(batch.after.as_deref(), SIZE)
                    .await
                    .unwrap();
                let users: Vec<String> = page
                    .users
                    .into_iter()
                    .map(|(user, _)| user.profile.sub)
                    .filter(|sub| *sub <= batch.last)
                    .collect();
                let halfway = &users[users.len() / 2];
                store
                    .save_batch_progress(batch.id, &owner, halfway, "{}", t(80))
                    .await
                    .unwrap();
                finishing.fetch_add(1, Ordering::SeqCst);
                let counts = json!({ "ok": users.len() - 1, "failing": 1 }).to_string();
                store
                    .finish_sweep_batch(batch.id, &owner, &counts, t(20))
                    .await
                    .unwrap();
                let finished = store
                    .complete_sweep_run_if_done(run.id, t(20))
                    .await
                    .unwrap();
                if finished {
                    // Finished only once every batch had been finished.
                    assert_eq!(finishing.load(Ordering::SeqCst), BATCHES);
                }
                worked.push((batch, users, finished));
            }
            worked
        }));
    }
    let mut worked = Vec::new();
    for task in tasks {
        worked.extend(task.await.unwrap());
    }

    // Every user in exactly one batch.
    let mut seen: Vec<String> = worked
        .iter()
        .flat_map(|(_, users, _)| users.clone())
        .collect();
    seen.sort();
    assert_eq!(seen, subs);
    // Batches cut one after another, each starting where the one before ended, each full.
    let mut batches: Vec<&SweepBatch> = worked.iter().map(|(batch, _, _)| batch).collect();
    batches.sort_by(|a, b| a.last.cmp(&b.last));
    assert_eq!(batches.len(), BATCHES);
    assert_eq!(batches[0].after, None);
    for pair in batches.windows(2) {
        assert_eq!(pair[1].after.as_deref(), Some(pair[0].last.as_str()));
    }
    assert_eq!(batches[BATCHES - 1].last, subs[USERS - 1]);
    assert!(
        worked
            .iter()
            .all(|(_, users, _)| users.len() == SIZE as usize)
    );
    // The run was found finished, once the last batch was done.
    assert!(worked.iter().any(|(_, _, finished)| *finished));
    for store in stores {
        assert!(
            store
                .complete_sweep_run_if_done(run.id, t(30))
                .await
                .unwrap()
        );
        assert_eq!(claim(store, run.id, "late", SIZE, 40).await, None);
    }
    assert_ne!(
        stores[0]
            .start_or_resume_sweep("refresh", t(50))
            .await
            .unwrap()
            .id,
        run.id
    );
}

pub async fn expired_batches_are_taken_over_once(store: SharedStore) {
    taken_over_once(&[store.clone(), store]).await;
}

pub async fn expired_batches_are_taken_over_once_across_instances(
    first: SharedStore,
    second: SharedStore,
) {
    taken_over_once(&[first, second]).await;
}

/// A process claims every batch of a run and dies; many processes then take the batches over
/// at once, and each batch goes to exactly one of them, with the progress it had.
async fn taken_over_once(stores: &[SharedStore]) {
    const USERS: usize = 200;
    const SIZE: u32 = 10;
    const CLAIMERS: usize = 8;
    const BATCHES: usize = USERS / SIZE as usize;
    users(&stores[0], USERS).await;
    let run = stores[0]
        .start_or_resume_sweep("refresh", t(0))
        .await
        .unwrap();
    let mut dead = Vec::new();
    while let Some(batch) = claim(&stores[0], run.id, "dead", SIZE, 0).await {
        dead.push(batch);
    }
    assert_eq!(dead.len(), BATCHES);
    // Half of them were half done, with the counts of their users done.
    for (i, batch) in dead.iter_mut().enumerate().step_by(2) {
        assert_eq!(batch.counts, "{}", "nothing counted before any progress");
        let progress = batch.after.clone().unwrap_or_else(|| "0".into());
        let counts = json!({"ok": i, "failing": 1}).to_string();
        stores[0]
            .save_batch_progress(batch.id, "dead", &progress, &counts, t(60))
            .await
            .unwrap();
        batch.progress = Some(progress);
        batch.counts = counts;
    }

    let mut tasks = Vec::new();
    for i in 0..CLAIMERS {
        let store = stores[i % stores.len()].clone();
        tasks.push(tokio::spawn(async move {
            let owner = format!("heir-{i}");
            let mut taken = Vec::new();
            // Not finished: each stays its taker's, so no one can take it twice.
            while let Some(batch) = claim(&store, run.id, &owner, SIZE, 100).await {
                assert_eq!(batch.owner, owner);
                assert_eq!(batch.lease_until, t(160));
                taken.push(batch);
            }
            taken
        }));
    }
    let mut taken = Vec::new();
    for task in tasks {
        taken.extend(task.await.unwrap());
    }
    taken.sort_by_key(|batch| batch.id);
    assert_eq!(taken.len(), BATCHES, "each batch once, and no new batch");
    for (taken, dead) in taken.iter().zip(&dead) {
        assert_eq!(
            taken,
            &SweepBatch {
                owner: taken.owner.clone(),
                lease_until: t(160),
                ..dead.clone()
            }
        );
    }
    for batch in &dead {
        conflict(
            stores[1 % stores.len()]
                .save_batch_progress(batch.id, "dead", &batch.last, "{}", t(300))
                .await,
        );
    }
}

pub async fn sweep_run_is_finished_when_its_last_batch_is(store: SharedStore) {
    for sub in ["a", "b", "c", "d", "e"] {
        signed_in(&store, sub).await;
    }
    let run = store.start_or_resume_sweep("refresh", t(0)).await.unwrap();
    // Nothing claimed yet: users are left.
    assert!(
        !store
            .complete_sweep_run_if_done(run.id, t(1))
            .await
            .unwrap()
    );

    let b1 = claim(&store, run.id, "one", 2, 1).await.unwrap();
    let b2 = claim(&store, run.id, "two", 2, 1).await.unwrap();
    let b3 = claim(&store, run.id, "three", 2, 1).await.unwrap();
    let cuts = |b: &SweepBatch| (b.after.clone(), b.last.clone());
    assert_eq!(cuts(&b1), (None, "b".into()));
    assert_eq!(cuts(&b2), (Some("b".into()), "d".into()));
    assert_eq!(cuts(&b3), (Some("d".into()), "e".into()));
    assert!(b1.id != b2.id && b2.id != b3.id && b1.id != b3.id);
    // Every user is in a leased batch.
    assert_eq!(claim(&store, run.id, "four", 2, 2).await, None);

    store
        .finish_sweep_batch(b1.id, "one", r#"{"ok":2}"#, t(3))
        .await
        .unwrap();
    assert!(
        !store
            .complete_sweep_run_if_done(run.id, t(3))
            .await
            .unwrap()
    );
    // Counts that are not a JSON object of whole numbers are refused, and nothing changes:
    // the batch is still its owner's to finish.
    for bad in ["not json", r#"{"ok":-1}"#, r#"{"ok":1.5}"#, "[1]"] {
        let err = store
            .finish_sweep_batch(b3.id, "three", bad, t(4))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{bad}: {err:?}");
    }
    store
        .finish_sweep_batch(b3.id, "three", r#"{"ok":0,"revoked":1}"#, t(4))
        .await
        .unwrap();
    assert!(
        !store
            .complete_sweep_run_if_done(run.id, t(4))
            .await
            .unwrap()
    );
    // The run, still under way, has the counts of its finished batches added up.
    assert_eq!(
        run_counts(&store, "refresh").await,
        json!({"ok": 2, "revoked": 1})
    );

    // A user who arrived after the last cut keeps the run open once every batch is done...
    signed_in(&store, "f").await;
    store
        .finish_sweep_batch(b2.id, "two", r#"{"ok":1,"failing":1}"#, t(5))
        .await
        .unwrap();
    assert!(
        !store
            .complete_sweep_run_if_done(run.id, t(5))
            .await
            .unwrap()
    );
    // ... until a batch takes them and is done.
    let b4 = claim(&store, run.id, "four", 2, 6).await.unwrap();
    assert_eq!(cuts(&b4), (Some("e".into()), "f".into()));
    assert_eq!(
        run_counts(&store, "refresh").await,
        json!({"ok": 3, "failing": 1, "revoked": 1})
    );
    store
        .finish_sweep_batch(b4.id, "four", r#"{"skipped":1}"#, t(7))
        .await
        .unwrap();
    assert!(
        store
            .complete_sweep_run_if_done(run.id, t(8))
            .await
            .unwrap()
    );
    // Finished once; asking again says so.
    assert!(
        store
            .complete_sweep_run_if_done(run.id, t(9))
            .await
            .unwrap()
    );
    assert_eq!(claim(&store, run.id, "five", 2, 10).await, None);
    // The finished run, read back: every batch's counts, and when it ended.
    let done = store.sweep_run(run.id).await.unwrap().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&done.counts).unwrap(),
        json!({"ok": 3, "failing": 1, "revoked": 1, "skipped": 1})
    );
    assert_eq!(done.finished_at, Some(t(8)));
    assert_eq!(done.cursor.as_deref(), Some("f"));
    assert_eq!(store.sweep_run(run.id + 1000).await.unwrap(), None);
    let next = store.start_or_resume_sweep("refresh", t(11)).await.unwrap();
    assert_ne!(next.id, run.id);
    assert_eq!(next.counts, "{}");
    // A done batch is no one's any more.
    conflict(store.finish_sweep_batch(b4.id, "four", "{}", t(12)).await);
    conflict(
        store
            .save_batch_progress(b4.id, "four", "f", "{}", t(70))
            .await,
    );
    conflict(store.release_sweep_batch(b4.id, "four").await);
}

pub async fn expired_batch_is_taken_over_where_it_stopped(store: SharedStore) {
    for sub in ["a", "b", "c", "d", "e", "f"] {
        signed_in(&store, sub).await;
    }
    let run = store.start_or_resume_sweep("refresh", t(0)).await.unwrap();
    let b1 = store
        .claim_sweep_batch(run.id, "dies", 3, t(60), t(0))
        .await
        .unwrap()
        .unwrap();
    store
        .save_batch_progress(b1.id, "dies", "b", "{}", t(60))
        .await
        .unwrap();
    let b2 = store
        .claim_sweep_batch(run.id, "slow", 3, t(60), t(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((b2.after.as_deref(), b2.last.as_str()), (Some("c"), "f"));
    // Both leased until 60.
    for now in [30, 59] {
        let none = store
            .claim_sweep_batch(run.id, "heir", 3, t(now + 60), t(now))
            .await
            .unwrap();
        assert_eq!(none, None);
    }

    // The first owner's lease ended: the next claim takes its batch over, progress and all.
    let taken = store
        .claim_sweep_batch(run.id, "heir", 3, t(120), t(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        taken,
        SweepBatch {
            owner: "heir".into(),
            lease_until: t(120),
            progress: Some("b".into()),
            ..b1.clone()
        }
    );
    // The old owner, come back, holds nothing.
    conflict(
        store
            .save_batch_progress(b1.id, "dies", "c", "{}", t(200))
            .await,
    );
    conflict(
        store
            .finish_sweep_batch(b1.id, "dies", r#"{"ok":3}"#, t(61))
            .await,
    );
    conflict(store.release_sweep_batch(b1.id, "dies").await);

    // Saving progress extends a lease: the slow owner keeps its batch past its first end.
    store
        .save_batch_progress(b2.id, "slow", "d", "{}", t(200))
        .await
        .unwrap();
    store
        .finish_sweep_batch(b1.id, "heir", r#"{"ok":3}"#, t(70))
        .await
        .unwrap();
    let none = store
        .claim_sweep_batch(run.id, "late", 3, t(300), t(150))
        .await
        .unwrap();
    assert_eq!(none, None);
    let taken = store
        .claim_sweep_batch(run.id, "late", 3, t(300), t(200))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((taken.id, taken.progress.as_deref()), (b2.id, Some("d")));
    conflict(
        store
            .finish_sweep_batch(b2.id, "slow", r#"{"ok":3}"#, t(201))
            .await,
    );
    store
        .finish_sweep_batch(b2.id, "late", r#"{"ok":2,"failing":1}"#, t(210))
        .await
        .unwrap();
    // Only the finishes that held their batch were counted.
    assert_eq!(
        run_counts(&store, "refresh").await,
        json!({"ok": 5, "failing": 1})
    );
    assert!(
        store
            .complete_sweep_run_if_done(run.id, t(220))
            .await
            .unwrap()
    );

    // A batch that does not exist is not found, whoever asks.
    let ghost = b1.id + b2.id + 1000;
    not_found(
        store
            .save_batch_progress(ghost, "late", "a", "{}", t(300))
            .await,
    );
    not_found(store.finish_sweep_batch(ghost, "late", "{}", t(300)).await);
    not_found(store.release_sweep_batch(ghost, "late").await);
}

pub async fn released_batch_is_claimable_at_once(store: SharedStore) {
    for sub in ["a", "b", "c", "d"] {
        signed_in(&store, sub).await;
    }
    let run = store
        .start_or_resume_sweep("drive-appdata", t(0))
        .await
        .unwrap();
    let b1 = store
        .claim_sweep_batch(run.id, "stops", 2, t(600), t(0))
        .await
        .unwrap()
        .unwrap();
    store
        .save_batch_progress(b1.id, "stops", "a", r#"{"ok":1}"#, t(600))
        .await
        .unwrap();
    // Another claim while it is held cuts the next batch instead.
    let b2 = store
        .claim_sweep_batch(run.id, "other", 2, t(600), t(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b2.after.as_deref(), Some("b"));

    store.release_sweep_batch(b1.id, "stops").await.unwrap();
    // Taken at once, long before the lease it had would have ended.
    let taken = store
        .claim_sweep_batch(run.id, "next", 2, t(700), t(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (taken.id, taken.owner.as_str(), taken.progress.as_deref()),
        (b1.id, "next", Some("a"))
    );
    // With the counts of the users done before it was given back.
    assert_eq!(taken.counts, r#"{"ok":1}"#);
    assert_eq!(taken.lease_until, t(700));
    conflict(
        store
            .save_batch_progress(b1.id, "stops", "b", "{}", t(600))
            .await,
    );
    conflict(store.release_sweep_batch(b1.id, "stops").await);

    // A process may take back what it gave back.
    store.release_sweep_batch(b1.id, "next").await.unwrap();
    let again = store
        .claim_sweep_batch(run.id, "next", 2, t(800), t(3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.id, again.progress.as_deref()), (b1.id, Some("a")));
    assert_eq!(
        store
            .claim_sweep_batch(run.id, "idle", 2, t(800), t(4))
            .await
            .unwrap(),
        None
    );
}

pub async fn batch_claims_of_unknown_empty_and_finished_runs(store: SharedStore) {
    let err = store
        .claim_sweep_batch(4242, "one", 10, t(60), t(0))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    let err = store
        .complete_sweep_run_if_done(4242, t(0))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");

    // No users: nothing to claim, and the run is done.
    let empty = store.start_or_resume_sweep("refresh", t(0)).await.unwrap();
    assert_eq!(claim(&store, empty.id, "one", 10, 0).await, None);
    assert!(
        store
            .complete_sweep_run_if_done(empty.id, t(1))
            .await
            .unwrap()
    );
    signed_in(&store, "late").await;
    assert_eq!(claim(&store, empty.id, "one", 10, 2).await, None);

    // A run finished the old way (one process, a cursor) has nothing left to claim either.
    let run = store.start_or_resume_sweep("refresh", t(3)).await.unwrap();
    assert_ne!(run.id, empty.id);
    store
        .save_sweep_progress(run.id, "late", r#"{"ok":1}"#)
        .await
        .unwrap();
    store
        .finish_sweep(run.id, r#"{"ok":1}"#, t(4))
        .await
        .unwrap();
    assert_eq!(claim(&store, run.id, "one", 10, 5).await, None);
    assert!(
        store
            .complete_sweep_run_if_done(run.id, t(6))
            .await
            .unwrap()
    );

    // A size of 0 still makes progress: one user a batch.
    let run = store.start_or_resume_sweep("refresh", t(7)).await.unwrap();
    let batch = claim(&store, run.id, "one", 0, 8).await.unwrap();
    assert_eq!((batch.after, batch.last.as_str()), (None, "late"));
}
