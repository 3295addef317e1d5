//! Sessions: kept by hash, found until they expire, deleted one by one, per user, or in bulk.

use super::{OPENID_EMAIL, sign_in, t};
use grantkeeper_store::{SessionRecord, SharedStore, StoreError};

fn session(id_hash: &str, sub: &str, expires_at: i64) -> SessionRecord {
    SessionRecord {
        id_hash: id_hash.to_owned(),
        sub: sub.to_owned(),
        created_at: t(0),
        expires_at: t(expires_at),
    }
}

async fn user(store: &SharedStore, sub: &str) {
    store
        .record_sign_in(sign_in(sub, OPENID_EMAIL, None, t(0)))
        .await
        .unwrap();
}

pub async fn session_lifecycle(store: SharedStore) {
    user(&store, "sam").await;
    let s = session("hash-1", "sam", 3600);
    store.create_session(s.clone()).await.unwrap();

    assert_eq!(store.session("hash-1", t(10)).await.unwrap(), Some(s));
    assert_eq!(store.session("hash-2", t(10)).await.unwrap(), None);

    assert!(store.delete_session("hash-1").await.unwrap());
    assert!(!store.delete_session("hash-1").await.unwrap());
    assert_eq!(store.session("hash-1", t(10)).await.unwrap(), None);
}

pub async fn session_expiry_is_exclusive(store: SharedStore) {
    user(&store, "sue").await;
    let s = session("hash-e", "sue", 100);
    store.create_session(s.clone()).await.unwrap();
    assert_eq!(store.session("hash-e", t(99)).await.unwrap(), Some(s));
    assert_eq!(store.session("hash-e", t(100)).await.unwrap(), None);
    assert_eq!(store.session("hash-e", t(5000)).await.unwrap(), None);
}

pub async fn session_for_unknown_user_is_not_found(store: SharedStore) {
    let err = store
        .create_session(session("hash-x", "ghost", 100))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    assert_eq!(store.session("hash-x", t(0)).await.unwrap(), None);
}

pub async fn duplicate_session_already_exists(store: SharedStore) {
    user(&store, "sid").await;
    store
        .create_session(session("hash-d", "sid", 100))
        .await
        .unwrap();
    let err = store
        .create_session(session("hash-d", "sid", 200))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists), "{err:?}");
    // The first one is untouched.
    let kept = store.session("hash-d", t(0)).await.unwrap().unwrap();
    assert_eq!(kept.expires_at, t(100));
}

pub async fn delete_user_sessions(store: SharedStore) {
    user(&store, "tom").await;
    user(&store, "tia").await;
    for i in 0..3 {
        store
            .create_session(session(&format!("tom-{i}"), "tom", 100))
            .await
            .unwrap();
    }
    store
        .create_session(session("tia-0", "tia", 100))
        .await
        .unwrap();

    assert_eq!(store.delete_user_sessions("tom").await.unwrap(), 3);
    assert_eq!(store.delete_user_sessions("tom").await.unwrap(), 0);
    assert_eq!(store.delete_user_sessions("nobody").await.unwrap(), 0);
    for i in 0..3 {
        assert_eq!(
            store.session(&format!("tom-{i}"), t(0)).await.unwrap(),
            None
        );
    }
    assert!(store.session("tia-0", t(0)).await.unwrap().is_some());
}

pub async fn purge_expired_sessions(store: SharedStore) {
    user(&store, "uma").await;
    for (id, expires) in [("u-10", 10), ("u-20", 20), ("u-30", 30)] {
        store
            .create_session(session(id, "uma", expires))
            .await
            .unwrap();
    }
    assert_eq!(store.purge_expired_sessions(t(5)).await.unwrap(), 0);
    assert_eq!(store.purge_expired_sessions(t(20)).await.unwrap(), 2);
    assert_eq!(store.purge_expired_sessions(t(20)).await.unwrap(), 0);
    assert!(store.session("u-30", t(20)).await.unwrap().is_some());
    assert!(!store.delete_session("u-10").await.unwrap());
    assert!(!store.delete_session("u-20").await.unwrap());
}
