//! Activity (`ActivityStore`): per-minute points that instances add to, read by range, pruned
//! by age; and grants counted by state.

use super::{OPENID_EMAIL, sign_in, signed_in, state_update, t};
use grantkeeper_core::GrantState;
use grantkeeper_store::{ActivityPoint, SharedStore, series};

fn point(minute: i64, series: &str, count: u64, total_ms: u64, max_ms: u64) -> ActivityPoint {
    ActivityPoint {
        minute: t(minute),
        series: series.to_owned(),
        count,
        total_ms,
        max_ms,
    }
}

async fn everything(store: &SharedStore) -> Vec<ActivityPoint> {
    store.activity(t(-86_400), t(86_400)).await.unwrap()
}

pub async fn activity_adds_sum_counts_and_max_durations(store: SharedStore) {
    store.add_activity(Vec::new()).await.unwrap();
    assert_eq!(everything(&store).await, []);

    store
        .add_activity(vec![
            point(0, series::REFRESH, 2, 300, 200),
            point(0, series::TOKEN, 5, 0, 0),
        ])
        .await
        .unwrap();
    // A second instance's flush of the same minute: counts and totals add up, the maximum is
    // the larger one, whichever comes second.
    store
        .add_activity(vec![
            point(0, series::REFRESH, 3, 450, 150),
            point(0, series::TOKEN, 1, 0, 0),
        ])
        .await
        .unwrap();
    store
        .add_activity(vec![point(0, series::REFRESH, 1, 900, 900)])
        .await
        .unwrap();
    assert_eq!(
        everything(&store).await,
        [
            point(0, series::REFRESH, 6, 1650, 900),
            point(0, series::TOKEN, 6, 0, 0),
        ]
    );
}

pub async fn activity_batches_merge_and_minutes_are_whole(store: SharedStore) {
    // Within one batch, the same minute and series twice (and a minute given mid-way, which
    // counts for the minute that holds it) become one row.
    store
        .add_activity(vec![
            point(0, series::PROXY, 1, 40, 40),
            point(59, series::PROXY, 2, 100, 70),
            point(60, series::PROXY, 1, 5, 5),
            point(17, series::SIGN_IN, 1, 0, 0),
        ])
        .await
        .unwrap();
    assert_eq!(
        everything(&store).await,
        [
            point(0, series::PROXY, 3, 140, 70),
            point(0, series::SIGN_IN, 1, 0, 0),
            point(60, series::PROXY, 1, 5, 5),
        ]
    );
    // Numbers beyond what the columns hold are held at the largest they do.
    store
        .add_activity(vec![point(120, series::TOKEN, u64::MAX, 0, 0)])
        .await
        .unwrap();
    let big = store.activity(t(120), t(180)).await.unwrap();
    assert_eq!(big, [point(120, series::TOKEN, i64::MAX as u64, 0, 0)]);
}

pub async fn activity_range_is_half_open_and_ordered(store: SharedStore) {
    // Written out of order, read by minute then series.
    store
        .add_activity(vec![
            point(180, series::TOKEN, 4, 0, 0),
            point(60, series::TOKEN, 2, 0, 0),
            point(60, series::REFRESH_FAILED, 1, 30, 30),
            point(120, series::SIGN_IN_FAILED, 1, 0, 0),
            point(0, series::SIGN_IN, 1, 0, 0),
            point(60, series::PROXY, 3, 90, 50),
        ])
        .await
        .unwrap();
    let read = store.activity(t(60), t(180)).await.unwrap();
    assert_eq!(
        read,
        [
            point(60, series::PROXY, 3, 90, 50),
            point(60, series::REFRESH_FAILED, 1, 30, 30),
            point(60, series::TOKEN, 2, 0, 0),
            point(120, series::SIGN_IN_FAILED, 1, 0, 0),
        ]
    );
    // `since` inside a minute: that minute began before it, so it is left out.
    let read = store.activity(t(1), t(181)).await.unwrap();
    let minutes: Vec<i64> = read
        .iter()
        .map(|p| (p.minute - t(0)).whole_seconds())
        .collect();
    assert_eq!(minutes, [60, 60, 60, 120, 180]);
    assert_eq!(store.activity(t(60), t(60)).await.unwrap(), []);
    assert_eq!(store.activity(t(240), t(600)).await.unwrap(), []);
}

pub async fn activity_is_pruned_by_age(store: SharedStore) {
    store
        .add_activity(vec![
            point(0, series::TOKEN, 1, 0, 0),
            point(0, series::PROXY, 1, 10, 10),
            point(60, series::TOKEN, 1, 0, 0),
            point(120, series::TOKEN, 1, 0, 0),
        ])
        .await
        .unwrap();
    assert_eq!(store.prune_activity(t(0)).await.unwrap(), 0);
    assert_eq!(store.prune_activity(t(120)).await.unwrap(), 3);
    assert_eq!(
        everything(&store).await,
        [point(120, series::TOKEN, 1, 0, 0)]
    );
    assert_eq!(store.prune_activity(t(120)).await.unwrap(), 0);
    // A pruned minute added to again starts afresh.
    store
        .add_activity(vec![point(0, series::TOKEN, 2, 0, 0)])
        .await
        .unwrap();
    assert_eq!(
        store.activity(t(0), t(60)).await.unwrap(),
        [point(0, series::TOKEN, 2, 0, 0)]
    );
}

/// Instances flushing the same minutes at the same time lose none of each other's counts.
pub async fn concurrent_activity_adds_across_instances(first: SharedStore, second: SharedStore) {
    const ROUNDS: u64 = 20;
    let flushes: Vec<_> = [first.clone(), second]
        .into_iter()
        .enumerate()
        .flat_map(|(instance, store)| {
            (0..ROUNDS).map(move |round| {
                let store = store.clone();
                tokio::spawn(async move {
                    let ms = 10 * round + instance as u64;
                    store
                        .add_activity(vec![
                            point(0, series::TOKEN, 1, 0, 0),
                            point(0, series::REFRESH, 1, ms, ms),
                            point(60, series::TOKEN, 2, 0, 0),
                        ])
                        .await
                        .unwrap();
                })
            })
        })
        .collect();
    for flush in flushes {
        flush.await.unwrap();
    }
    let sum_ms: u64 = (0..ROUNDS).map(|round| 20 * round + 1).sum();
    let max_ms = 10 * (ROUNDS - 1) + 1;
    assert_eq!(
        everything(&first).await,
        [
            point(0, series::REFRESH, 2 * ROUNDS, sum_ms, max_ms),
            point(0, series::TOKEN, 2 * ROUNDS, 0, 0),
            point(60, series::TOKEN, 4 * ROUNDS, 0, 0),
        ]
    );
}

pub async fn grants_are_counted_by_state(store: SharedStore) {
    let zero: Vec<(GrantState, u64)> = GrantState::ALL.into_iter().map(|s| (s, 0)).collect();
    assert_eq!(store.count_grants_by_state().await.unwrap(), zero);

    for sub in ["ana", "ben", "cy", "dee"] {
        signed_in(&store, sub).await;
    }
    // A sign-in without a refresh token: a new grant that needs consent.
    store
        .record_sign_in(sign_in("eve", OPENID_EMAIL, None, t(1)))
        .await
        .unwrap();
    store
        .update_grant_state(
            "ben",
            None,
            state_update(GrantState::Failing, "503", None, 2),
        )
        .await
        .unwrap();
    store
        .update_grant_state(
            "cy",
            None,
            state_update(GrantState::Revoked, "invalid_grant", None, 3),
        )
        .await
        .unwrap();
    assert_eq!(
        store.count_grants_by_state().await.unwrap(),
        [
            (GrantState::Active, 2),
            (GrantState::Failing, 1),
            (GrantState::NeedsConsent, 1),
            (GrantState::Revoked, 1),
        ]
    );

    // A revocation and the deletion of a user move the counts too.
    store
        .update_grant_state(
            "dee",
            None,
            state_update(GrantState::Revoked, "disconnect", None, 4),
        )
        .await
        .unwrap();
    assert!(store.delete_user("eve").await.unwrap());
    assert_eq!(
        store.count_grants_by_state().await.unwrap(),
        [
            (GrantState::Active, 1),
            (GrantState::Failing, 1),
            (GrantState::NeedsConsent, 0),
            (GrantState::Revoked, 2),
        ]
    );
}
