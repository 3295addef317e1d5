//! The revocation queue: entries wait sealed until due, failures push them back and count, a
//! revocation queued with its grant's state change commits with it or not at all, and entries
//! outlive their user.

use super::{signed_in, t};
use grantkeeper_core::GrantState;
use grantkeeper_store::{
    PendingRevocation, RevocationTokenKind, SharedStore, StateUpdate, StoreError,
};

/// An entry created at t(0), due at t(due); its sealed bytes include bytes no text encoding
/// would keep.
fn entry(id: &str, sub: &str, due: i64) -> PendingRevocation {
    let mut token = vec![1, 0, 0, 0, 1, 0x00, 0xff, 0xfe];
    token.extend_from_slice(id.as_bytes());
    PendingRevocation {
        id: id.to_owned(),
        sub: sub.to_owned(),
        token,
        token_kind: RevocationTokenKind::Refresh,
        created_at: t(0),
        attempts: 0,
        next_attempt_at: t(due),
        last_error: None,
    }
}

fn ids(due: &[PendingRevocation]) -> Vec<&str> {
    due.iter().map(|r| r.id.as_str()).collect()
}

fn revoked(at: i64) -> StateUpdate {
    StateUpdate {
        state: GrantState::Revoked,
        reason: "disconnected by the user (revocation at Google queued)".to_owned(),
        error: Some("the provider is unavailable (HTTP 503)".to_owned()),
        drop_tokens: true,
        at: t(at),
    }
}

pub async fn revocations_are_due_in_order_of_their_next_attempt(store: SharedStore) {
    assert_eq!(store.count_revocations().await.unwrap(), 0);
    assert!(store.due_revocations(t(1000), 10).await.unwrap().is_empty());
    let mut access = entry("rev_c", "bo", 10);
    access.token_kind = RevocationTokenKind::Access;
    for e in [
        entry("rev_b", "ana", 10),
        entry("rev_a", "ana", 20),
        access.clone(),
    ] {
        store.enqueue_revocation(e).await.unwrap();
    }
    assert_eq!(store.count_revocations().await.unwrap(), 3);

    // Not before their time.
    assert!(store.due_revocations(t(9), 10).await.unwrap().is_empty());
    let due = store.due_revocations(t(10), 10).await.unwrap();
    assert_eq!(ids(&due), ["rev_b", "rev_c"]);
    // Every column comes back as written.
    assert_eq!(due[0], entry("rev_b", "ana", 10));
    assert_eq!(due[1], access);
    assert_eq!(
        ids(&store.due_revocations(t(1000), 10).await.unwrap()),
        ["rev_b", "rev_c", "rev_a"]
    );
    assert_eq!(
        ids(&store.due_revocations(t(1000), 1).await.unwrap()),
        ["rev_b"]
    );
}

pub async fn failed_revocations_wait_and_count_their_attempts(store: SharedStore) {
    store
        .enqueue_revocation(entry("rev_1", "ana", 0))
        .await
        .unwrap();
    store
        .enqueue_revocation(entry("rev_2", "ana", 5))
        .await
        .unwrap();
    store
        .mark_revocation_failed("rev_1", t(100), "the provider is unavailable (HTTP 503)")
        .await
        .unwrap();
    assert_eq!(
        ids(&store.due_revocations(t(50), 10).await.unwrap()),
        ["rev_2"]
    );
    store
        .mark_revocation_failed("rev_1", t(300), "the provider is rate limiting")
        .await
        .unwrap();
    assert_eq!(
        ids(&store.due_revocations(t(299), 10).await.unwrap()),
        ["rev_2"]
    );
    let due = store.due_revocations(t(300), 10).await.unwrap();
    assert_eq!(ids(&due), ["rev_2", "rev_1"]);
    let failed = &due[1];
    assert_eq!(failed.attempts, 2);
    assert_eq!(failed.next_attempt_at, t(300));
    assert_eq!(
        failed.last_error.as_deref(),
        Some("the provider is rate limiting")
    );
    // What failing does not touch.
    let first = entry("rev_1", "ana", 0);
    assert_eq!(
        (&failed.token, failed.created_at, &failed.sub),
        (&first.token, first.created_at, &first.sub)
    );
    assert!(matches!(
        store
            .mark_revocation_failed("rev_unknown", t(10), "x")
            .await
            .unwrap_err(),
        StoreError::NotFound
    ));
    assert_eq!(store.count_revocations().await.unwrap(), 2);
}

pub async fn revoked_entries_are_deleted_once(store: SharedStore) {
    store
        .enqueue_revocation(entry("rev_1", "ana", 0))
        .await
        .unwrap();
    store
        .enqueue_revocation(entry("rev_2", "ana", 0))
        .await
        .unwrap();
    assert!(store.delete_revocation("rev_1").await.unwrap());
    assert!(!store.delete_revocation("rev_1").await.unwrap());
    assert!(!store.delete_revocation("rev_unknown").await.unwrap());
    assert_eq!(store.count_revocations().await.unwrap(), 1);
    assert_eq!(
        ids(&store.due_revocations(t(10), 10).await.unwrap()),
        ["rev_2"]
    );
}

pub async fn duplicate_revocation_id_already_exists(store: SharedStore) {
    store
        .enqueue_revocation(entry("rev_1", "ana", 0))
        .await
        .unwrap();
    assert!(matches!(
        store
            .enqueue_revocation(entry("rev_1", "bo", 5))
            .await
            .unwrap_err(),
        StoreError::AlreadyExists
    ));
    let due = store.due_revocations(t(10), 10).await.unwrap();
    assert_eq!(due, [entry("rev_1", "ana", 0)]);
}

pub async fn a_revocation_queued_with_its_state_change_commits_with_it(store: SharedStore) {
    let before = signed_in(&store, "ana").await;
    let (grant, event) = store
        .enqueue_revocation_with_state(entry("rev_1", "ana", 10), revoked(5))
        .await
        .unwrap();
    assert_eq!(grant.state, GrantState::Revoked);
    assert!(grant.refresh_token.is_none() && grant.access_token.is_none());
    assert_eq!(grant.version, before.version + 1);
    assert_eq!(
        grant.reason.as_deref(),
        Some("disconnected by the user (revocation at Google queued)")
    );
    let event = event.expect("a change of state");
    assert_eq!(
        (event.from, event.to),
        (Some(GrantState::Active), GrantState::Revoked)
    );
    assert_eq!(store.grant("ana").await.unwrap().unwrap(), grant);
    assert_eq!(
        store.due_revocations(t(10), 10).await.unwrap(),
        [entry("rev_1", "ana", 10)]
    );
}

pub async fn a_revocation_queued_with_its_state_change_fails_with_it(store: SharedStore) {
    // No such user: nothing is queued.
    assert!(matches!(
        store
            .enqueue_revocation_with_state(entry("rev_1", "nobody", 0), revoked(5))
            .await
            .unwrap_err(),
        StoreError::NotFound
    ));
    assert_eq!(store.count_revocations().await.unwrap(), 0);

    // The entry cannot be queued (its id is taken): the grant is left as it was.
    let before = signed_in(&store, "ana").await;
    store
        .enqueue_revocation(entry("rev_1", "bo", 0))
        .await
        .unwrap();
    assert!(matches!(
        store
            .enqueue_revocation_with_state(entry("rev_1", "ana", 0), revoked(5))
            .await
            .unwrap_err(),
        StoreError::AlreadyExists
    ));
    assert_eq!(store.grant("ana").await.unwrap().unwrap(), before);
    assert_eq!(store.grant_events("ana").await.unwrap().len(), 1);
    assert_eq!(store.count_revocations().await.unwrap(), 1);
}

pub async fn queued_revocations_outlive_their_user(store: SharedStore) {
    signed_in(&store, "ana").await;
    store
        .enqueue_revocation_with_state(entry("rev_1", "ana", 0), revoked(5))
        .await
        .unwrap();
    assert!(store.delete_user("ana").await.unwrap());
    assert!(store.user("ana").await.unwrap().is_none());
    assert_eq!(
        store.due_revocations(t(10), 10).await.unwrap(),
        [entry("rev_1", "ana", 0)]
    );
}

/// Two instances retrying one entry: one deletes it; the other's bookkeeping finds it gone.
pub async fn an_entry_revoked_by_another_instance_is_gone_for_both(
    store: SharedStore,
    second: SharedStore,
) {
    store
        .enqueue_revocation(entry("rev_1", "ana", 0))
        .await
        .unwrap();
    assert_eq!(
        ids(&second.due_revocations(t(10), 10).await.unwrap()),
        ["rev_1"]
    );
    assert!(second.delete_revocation("rev_1").await.unwrap());
    assert!(!store.delete_revocation("rev_1").await.unwrap());
    assert!(matches!(
        store
            .mark_revocation_failed("rev_1", t(20), "the provider is unavailable")
            .await
            .unwrap_err(),
        StoreError::NotFound
    ));
    assert_eq!(store.count_revocations().await.unwrap(), 0);
}
