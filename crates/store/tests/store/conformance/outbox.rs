//! The webhook outbox: every grant event is committed with its change of state and stays due
//! until delivered; failures wait for their next attempt.

use super::{OPENID_EMAIL, refresh, sign_in, signed_in, state_update, t};
use grantkeeper_core::GrantState;
use grantkeeper_store::{PendingEvent, SharedStore, StoreError};

fn ids(pending: &[PendingEvent]) -> Vec<i64> {
    pending.iter().map(|p| p.event.id).collect()
}

/// Three events at t(0), t(10), t(20): ana's sign-in, bo's sign-in, ana's failure.
async fn three_events(store: &SharedStore) -> Vec<i64> {
    let a = store
        .record_sign_in(sign_in("ana", OPENID_EMAIL, Some(refresh("ana")), t(0)))
        .await
        .unwrap();
    let b = store
        .record_sign_in(sign_in("bo", OPENID_EMAIL, None, t(10)))
        .await
        .unwrap();
    let (_, c) = store
        .update_grant_state(
            "ana",
            Some(a.grant.version),
            state_update(GrantState::Failing, "upstream 503", None, 20),
        )
        .await
        .unwrap();
    [a.event, b.event, c]
        .into_iter()
        .map(|e| e.expect("each is a change of state").id)
        .collect()
}

pub async fn events_are_due_at_once_oldest_first(store: SharedStore) {
    assert!(store.due_events(t(1000), 10).await.unwrap().is_empty());
    let events = three_events(&store).await;
    assert!(events[0] < events[1] && events[1] < events[2]);

    // Due from their own time on, not before.
    assert!(store.due_events(t(-1), 10).await.unwrap().is_empty());
    assert_eq!(ids(&store.due_events(t(0), 10).await.unwrap()), events[..1]);
    assert_eq!(
        ids(&store.due_events(t(15), 10).await.unwrap()),
        events[..2]
    );

    let due = store.due_events(t(1000), 10).await.unwrap();
    assert_eq!(ids(&due), events);
    // The outbox entry is the event itself, as the grant's history has it.
    let history = store.grant_events("ana").await.unwrap();
    assert_eq!(due[0].event, history[0]);
    assert_eq!(due[2].event, history[1]);
    assert_eq!(due[2].event.from, Some(GrantState::Active));
    assert_eq!(due[2].event.to, GrantState::Failing);
    for (pending, at) in due.iter().zip([0, 10, 20]) {
        assert_eq!(pending.attempts, 0);
        assert_eq!(pending.next_attempt_at, t(at));
        assert_eq!(pending.event.at, t(at));
    }

    assert_eq!(
        ids(&store.due_events(t(1000), 2).await.unwrap()),
        events[..2]
    );
}

pub async fn failed_events_wait_for_their_next_attempt(store: SharedStore) {
    let events = three_events(&store).await;
    store.mark_failed(events[0], t(100)).await.unwrap();

    assert_eq!(
        ids(&store.due_events(t(50), 10).await.unwrap()),
        events[1..]
    );
    // Due again at its next attempt, in its place: oldest first.
    let due = store.due_events(t(100), 10).await.unwrap();
    assert_eq!(ids(&due), events);
    assert_eq!(due[0].attempts, 1);
    assert_eq!(due[0].next_attempt_at, t(100));
    assert_eq!(due[1].attempts, 0);

    store.mark_failed(events[0], t(300)).await.unwrap();
    store.mark_failed(events[2], t(200)).await.unwrap();
    assert_eq!(
        ids(&store.due_events(t(150), 10).await.unwrap()),
        events[1..2]
    );
    assert_eq!(
        ids(&store.due_events(t(250), 10).await.unwrap()),
        events[1..]
    );
    let due = store.due_events(t(300), 10).await.unwrap();
    assert_eq!(ids(&due), events);
    assert_eq!(
        due.iter().map(|p| p.attempts).collect::<Vec<_>>(),
        [2, 0, 1]
    );
}

pub async fn delivered_events_are_done(store: SharedStore) {
    let events = three_events(&store).await;
    store.mark_delivered(events[1], t(30)).await.unwrap();
    store.mark_failed(events[0], t(100)).await.unwrap();
    store.mark_delivered(events[0], t(100)).await.unwrap();

    assert_eq!(
        ids(&store.due_events(t(1000), 10).await.unwrap()),
        events[2..]
    );
    // Delivered twice (a retry that crossed the answer), or failed late: still done.
    store.mark_delivered(events[1], t(40)).await.unwrap();
    store.mark_failed(events[1], t(50)).await.unwrap();
    assert_eq!(
        ids(&store.due_events(t(1000), 10).await.unwrap()),
        events[2..]
    );

    store.mark_delivered(events[2], t(60)).await.unwrap();
    assert!(store.due_events(t(1000), 10).await.unwrap().is_empty());
    // Delivery leaves the history as it was.
    assert_eq!(store.grant_events("ana").await.unwrap().len(), 2);

    // A later change is a new entry, due at once.
    let (_, event) = store
        .update_grant_state(
            "bo",
            None,
            state_update(GrantState::Revoked, "RISC tokens-revoked", None, 70),
        )
        .await
        .unwrap();
    let due = store.due_events(t(70), 10).await.unwrap();
    assert_eq!(ids(&due), [event.unwrap().id]);
}

pub async fn outbox_unknown_event_is_not_found(store: SharedStore) {
    signed_in(&store, "cid").await;
    let err = store.mark_delivered(999_999, t(0)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    let err = store.mark_failed(999_999, t(0)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    assert_eq!(store.due_events(t(0), 10).await.unwrap().len(), 1);
}
