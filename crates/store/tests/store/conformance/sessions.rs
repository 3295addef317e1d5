//! Sessions: kept by hash, found until they expire, deleted one by one, per user, or in bulk;
//! at most [`MAX_SESSIONS_PER_USER`] live ones per user, the oldest dropped when one is written.

use super::{OPENID_EMAIL, sign_in, t};
use grantkeeper_store::{MAX_SESSIONS_PER_USER, SessionRecord, SharedStore, StoreError};

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

/// A session of `sub` created at `created` and expiring an hour later.
fn made_at(id_hash: &str, sub: &str, created: i64) -> SessionRecord {
    SessionRecord {
        id_hash: id_hash.to_owned(),
        sub: sub.to_owned(),
        created_at: t(created),
        expires_at: t(created + 3600),
    }
}

/// How many of `ids` are still sessions at `now`.
async fn live(store: &SharedStore, ids: &[String], now: i64) -> Vec<String> {
    let mut out = Vec::new();
    for id in ids {
        if store.session(id, t(now)).await.unwrap().is_some() {
            out.push(id.clone());
        }
    }
    out
}

/// Every sign-in opens a session: the user's oldest beyond the bound go in the sign-in's own
/// unit of work, the newest stay, and another user's sessions are not touched.
pub async fn sign_in_keeps_the_newest_sessions_of_the_user(store: SharedStore) {
    user(&store, "other").await;
    store
        .create_session(made_at("other-0", "other", 0))
        .await
        .unwrap();
    let total = MAX_SESSIONS_PER_USER + 5;
    let ids: Vec<String> = (0..total).map(|i| format!("ben-{i:02}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let at = 10 + i as i64;
        let mut s = sign_in("ben", OPENID_EMAIL, None, t(at));
        s.session = Some(made_at(id, "ben", at));
        store.record_sign_in(s).await.unwrap();
    }
    let now = 10 + total as i64;
    assert_eq!(live(&store, &ids, now).await, ids[5..].to_vec());
    assert!(store.session("other-0", t(now)).await.unwrap().is_some());
    // Nothing else of ben's is left to delete: only the 20 newest remain.
    assert_eq!(
        store.delete_user_sessions("ben").await.unwrap(),
        MAX_SESSIONS_PER_USER as u64
    );
}

/// `create_session` is bounded as a sign-in is; the new session is kept even when its creation
/// time is older than the others' (another instance's clock), and the oldest of the others goes.
pub async fn created_sessions_are_bounded_too(store: SharedStore) {
    user(&store, "cal").await;
    let ids: Vec<String> = (0..MAX_SESSIONS_PER_USER)
        .map(|i| format!("cal-{i:02}"))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        store
            .create_session(made_at(id, "cal", 100 + i as i64))
            .await
            .unwrap();
    }
    assert_eq!(live(&store, &ids, 200).await, ids);
    store
        .create_session(made_at("cal-late", "cal", 50))
        .await
        .unwrap();
    assert!(store.session("cal-late", t(200)).await.unwrap().is_some());
    assert_eq!(live(&store, &ids, 200).await, ids[1..].to_vec());
}

/// A user's expired sessions go when a new one is written, even under the bound; the live ones
/// stay.
pub async fn expired_sessions_go_when_a_session_is_written(store: SharedStore) {
    user(&store, "eve").await;
    for (id, expires) in [("eve-10", 10), ("eve-20", 20), ("eve-90", 90)] {
        store
            .create_session(session(id, "eve", expires))
            .await
            .unwrap();
    }
    let mut s = sign_in("eve", OPENID_EMAIL, None, t(20));
    s.session = Some(made_at("eve-new", "eve", 20));
    store.record_sign_in(s).await.unwrap();
    // Expired at t(20): eve-10 and eve-20 (expiry is exclusive); nothing left to purge then.
    assert_eq!(store.purge_expired_sessions(t(20)).await.unwrap(), 0);
    assert!(store.session("eve-90", t(20)).await.unwrap().is_some());
    assert!(store.session("eve-new", t(20)).await.unwrap().is_some());
    assert!(!store.delete_session("eve-10").await.unwrap());
    assert!(!store.delete_session("eve-20").await.unwrap());
}

/// Sessions created in the same second are aged by their hash: of the others, the 19 with the
/// greatest hashes stay, and the new one stays whatever its hash.
pub async fn sessions_of_one_second_are_told_apart_by_hash(store: SharedStore) {
    user(&store, "tad").await;
    let ids: Vec<String> = (1..=MAX_SESSIONS_PER_USER)
        .map(|i| format!("tad-{i:02}"))
        .collect();
    // Written in no particular order: the rule looks at creation and hash, not at arrival.
    for id in ids.iter().rev().step_by(2).chain(ids.iter().step_by(2)) {
        store.create_session(made_at(id, "tad", 100)).await.unwrap();
    }
    assert_eq!(live(&store, &ids, 200).await, ids);
    store
        .create_session(made_at("tad-00", "tad", 100))
        .await
        .unwrap();
    assert!(store.session("tad-00", t(200)).await.unwrap().is_some());
    assert_eq!(live(&store, &ids, 200).await, ids[1..].to_vec());
}

/// Expired sessions are deleted and do not count: a user with 20 sessions of which 2 expired
/// keeps the 18 live ones and the new one.
pub async fn expired_sessions_do_not_count_against_the_bound(store: SharedStore) {
    user(&store, "ivy").await;
    let ids: Vec<String> = (0..MAX_SESSIONS_PER_USER)
        .map(|i| format!("ivy-{i:02}"))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        // The two newest expire first: age and expiry need not agree.
        let expires = if i >= MAX_SESSIONS_PER_USER - 2 {
            150
        } else {
            5000
        };
        store
            .create_session(SessionRecord {
                id_hash: id.clone(),
                sub: "ivy".into(),
                created_at: t(100 + i as i64),
                expires_at: t(expires),
            })
            .await
            .unwrap();
    }
    store
        .create_session(made_at("ivy-new", "ivy", 200))
        .await
        .unwrap();
    let kept = &ids[..MAX_SESSIONS_PER_USER - 2];
    assert_eq!(live(&store, &ids, 200).await, kept.to_vec());
    assert!(store.session("ivy-new", t(200)).await.unwrap().is_some());
    // The expired ones are gone, not merely past their time.
    assert_eq!(
        store.delete_user_sessions("ivy").await.unwrap(),
        MAX_SESSIONS_PER_USER as u64 - 1
    );
}
