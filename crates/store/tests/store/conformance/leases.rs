//! Refresh leases (`RefreshLeaseStore`): one instance at a time may refresh a grant; a lease
//! ends by itself, or when its holder gives it back; the grant itself is not written.

use super::{access, signed_in, state_update, t};
use grantkeeper_core::GrantState;
use grantkeeper_store::{RefreshSuccess, SharedStore, StoreError};
use std::collections::HashSet;

async fn take(store: &SharedStore, sub: &str, owner: &str, until: i64, now: i64) -> bool {
    store
        .try_lease_refresh(sub, owner, t(until), t(now))
        .await
        .unwrap()
}

pub async fn refresh_lease_is_exclusive_until_it_ends(store: SharedStore) {
    let held = signed_in(&store, "lea").await;
    assert!(take(&store, "lea", "instance-a", 30, 0).await);
    // Held by another, unexpired: not taken.
    assert!(!take(&store, "lea", "instance-b", 40, 10).await);
    // Its holder may take it again, and moves its end.
    assert!(take(&store, "lea", "instance-a", 45, 20).await);
    assert!(!take(&store, "lea", "instance-b", 90, 44).await);
    // Ended at its end (45 <= now): the next owner takes it, and the old one no longer holds it.
    assert!(take(&store, "lea", "instance-b", 90, 45).await);
    assert!(!take(&store, "lea", "instance-a", 100, 46).await);
    assert!(take(&store, "lea", "instance-b", 100, 46).await);

    // A lease is beside the grant, not in it: same row, same version, no event.
    assert_eq!(store.grant("lea").await.unwrap(), Some(held.clone()));
    assert_eq!(store.grant_events("lea").await.unwrap().len(), 1);
    // So a fenced write of what was read before the lease still goes through.
    let (after, _) = store
        .update_grant_state(
            "lea",
            Some(held.version),
            state_update(GrantState::Failing, "503", None, 50),
        )
        .await
        .unwrap();
    assert_eq!(after.version, held.version + 1);
}

pub async fn refresh_lease_is_free_once_released(store: SharedStore) {
    signed_in(&store, "rel").await;
    assert!(take(&store, "rel", "instance-a", 600, 0).await);
    // Only the holder gives it back: another's release changes nothing.
    store
        .release_refresh_lease("rel", "instance-b")
        .await
        .unwrap();
    assert!(!take(&store, "rel", "instance-b", 600, 1).await);

    store
        .release_refresh_lease("rel", "instance-a")
        .await
        .unwrap();
    // Free at once, long before the end it had.
    assert!(take(&store, "rel", "instance-b", 600, 2).await);
    // A late release by the old holder leaves the new holder's lease alone.
    store
        .release_refresh_lease("rel", "instance-a")
        .await
        .unwrap();
    assert!(!take(&store, "rel", "instance-c", 600, 3).await);
    // Giving back twice is harmless.
    for _ in 0..2 {
        store
            .release_refresh_lease("rel", "instance-b")
            .await
            .unwrap();
    }
    assert!(take(&store, "rel", "instance-c", 600, 4).await);
}

/// A refresh recorded with the lease given back in the same transaction: both or neither.
pub async fn refresh_recorded_with_its_lease_given_back(store: SharedStore) {
    let held = signed_in(&store, "rwl").await;
    let refreshed = |tag: &str, at: i64| RefreshSuccess {
        access_token: access(tag, t(at + 3599)),
        refresh_token: None,
        scopes: None,
        at: t(at),
    };
    assert!(take(&store, "rwl", "instance-a", 600, 0).await);
    // A stale version: nothing written, and the lease is still held.
    let err = store
        .record_refresh_releasing("rwl", held.version - 1, refreshed("x", 1), "instance-a")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
    assert_eq!(store.grant("rwl").await.unwrap(), Some(held.clone()));
    assert!(!take(&store, "rwl", "instance-b", 600, 1).await);

    let written = store
        .record_refresh_releasing("rwl", held.version, refreshed("a1", 2), "instance-a")
        .await
        .unwrap();
    assert_eq!(written.version, held.version + 1);
    assert_eq!(written.access_token, Some(access("a1", t(2 + 3599))));
    assert_eq!(store.grant("rwl").await.unwrap(), Some(written.clone()));
    // Given back: another instance takes it at once, long before its end.
    assert!(take(&store, "rwl", "instance-b", 600, 3).await);

    // Written by one that does not hold the lease: the token lands, the holder's lease stays.
    let again = store
        .record_refresh_releasing("rwl", written.version, refreshed("a2", 4), "instance-a")
        .await
        .unwrap();
    assert_eq!(again.version, written.version + 1);
    assert!(!take(&store, "rwl", "instance-c", 600, 5).await);
    assert!(matches!(
        store
            .record_refresh_releasing("ghost", 1, refreshed("g", 6), "instance-a")
            .await,
        Err(StoreError::NotFound)
    ));
}

/// A lease taken with the grant read under it: what the previous holder wrote is in the read,
/// and a lease that is not taken reads nothing and changes nothing.
pub async fn refresh_lease_taken_with_the_grant_read_under_it(store: SharedStore) {
    let held = signed_in(&store, "lrd").await;
    let read = store
        .try_lease_refresh_reading("lrd", "instance-a", t(600), t(0))
        .await
        .unwrap();
    assert_eq!(read, Some(held.clone()));
    // Held: another owner gets None, and the lease stays instance-a's.
    assert_eq!(
        store
            .try_lease_refresh_reading("lrd", "instance-b", t(600), t(1))
            .await
            .unwrap(),
        None
    );
    assert!(!take(&store, "lrd", "instance-c", 600, 1).await);

    // The holder refreshes and gives the lease back in one commit; the next one to take the
    // lease reads that refresh.
    let written = store
        .record_refresh_releasing(
            "lrd",
            held.version,
            RefreshSuccess {
                access_token: access("r1", t(3601)),
                refresh_token: None,
                scopes: None,
                at: t(2),
            },
            "instance-a",
        )
        .await
        .unwrap();
    let read = store
        .try_lease_refresh_reading("lrd", "instance-b", t(600), t(3))
        .await
        .unwrap()
        .expect("the lease was given back");
    assert_eq!(read, written);
    assert_eq!(read.access_token, Some(access("r1", t(3601))));
    assert!(!take(&store, "lrd", "instance-a", 600, 4).await);
    // The holder may take it again, and reads the same grant: a lease is not a write.
    assert_eq!(
        store
            .try_lease_refresh_reading("lrd", "instance-b", t(700), t(5))
            .await
            .unwrap(),
        Some(written)
    );

    let err = store
        .try_lease_refresh_reading("ghost", "instance-a", t(30), t(0))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

pub async fn refresh_lease_of_unknown_user_is_not_found(store: SharedStore) {
    signed_in(&store, "kim").await;
    let err = store
        .try_lease_refresh("ghost", "instance-a", t(30), t(0))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    // Nothing to give back is not an error.
    store
        .release_refresh_lease("ghost", "instance-a")
        .await
        .unwrap();

    // A deleted user's lease goes with them: the user signing in again starts free.
    assert!(take(&store, "kim", "instance-a", 600, 0).await);
    assert!(store.delete_user("kim").await.unwrap());
    let err = store
        .try_lease_refresh("kim", "instance-b", t(600), t(1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    signed_in(&store, "kim").await;
    assert!(take(&store, "kim", "instance-b", 600, 2).await);
}

pub async fn refresh_lease_race_one_wins(store: SharedStore) {
    lease_race(&[store.clone(), store]).await;
}

pub async fn refresh_lease_race_across_instances(first: SharedStore, second: SharedStore) {
    lease_race(&[first, second]).await;
}

/// Many owners want one grant's lease at once, round after round: each round exactly one gets
/// it, until it gives it back.
async fn lease_race(stores: &[SharedStore]) {
    const OWNERS: usize = 16;
    const ROUNDS: i64 = 3;
    let held = signed_in(&stores[0], "ray").await;
    for round in 0..ROUNDS {
        let mut tasks = Vec::new();
        for i in 0..OWNERS {
            let store = stores[i % stores.len()].clone();
            tasks.push(tokio::spawn(async move {
                let owner = format!("instance-{i}");
                let won = store
                    .try_lease_refresh("ray", &owner, t(round * 100 + 60), t(round * 100))
                    .await
                    .unwrap();
                (owner, won)
            }));
        }
        let mut winners = HashSet::new();
        for task in tasks {
            let (owner, won) = task.await.unwrap();
            if won {
                winners.insert(owner);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let winner = winners.into_iter().next().unwrap();
        // The others are still shut out; the winner holds it.
        for store in stores {
            assert!(
                !store
                    .try_lease_refresh(
                        "ray",
                        "someone-else",
                        t(round * 100 + 60),
                        t(round * 100 + 1)
                    )
                    .await
                    .unwrap()
            );
        }
        assert!(
            stores[1 % stores.len()]
                .try_lease_refresh("ray", &winner, t(round * 100 + 60), t(round * 100 + 1))
                .await
                .unwrap()
        );
        stores[0]
            .release_refresh_lease("ray", &winner)
            .await
            .unwrap();
    }
    assert_eq!(
        stores[1 % stores.len()].grant("ray").await.unwrap(),
        Some(held)
    );
}
