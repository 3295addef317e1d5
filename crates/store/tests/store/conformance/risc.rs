//! Cross-Account Protection: security events recorded once, sign-in blocks, and the lookups
//! from an event's subject to users.

use super::{OPENID_EMAIL, profile, refresh, sign_in, signed_in, state_update, t};
use grantkeeper_core::GrantState;
use grantkeeper_store::{
    MAX_SUBJECT_MATCHES, SessionRecord, SharedStore, SignInBlock, SignInRecorded, TokenLookup,
};

pub async fn security_events_are_recorded_once(store: SharedStore) {
    assert!(
        store
            .record_security_event("jti-1", "sessions-revoked", t(0))
            .await
            .unwrap()
    );
    // A redelivery, even of another type or at another time, is the same event.
    assert!(
        !store
            .record_security_event("jti-1", "tokens-revoked", t(5))
            .await
            .unwrap()
    );
    assert!(
        store
            .record_security_event("jti-2", "sessions-revoked", t(0))
            .await
            .unwrap()
    );

    // Forgotten (its action failed), it is new again.
    assert!(store.forget_security_event("jti-1").await.unwrap());
    assert!(!store.forget_security_event("jti-1").await.unwrap());
    assert!(
        store
            .record_security_event("jti-1", "sessions-revoked", t(10))
            .await
            .unwrap()
    );
}

pub async fn security_events_are_pruned_by_age(store: SharedStore) {
    for (jti, at) in [("old", 0), ("edge", 100), ("new", 200)] {
        assert!(store.record_security_event(jti, "x", t(at)).await.unwrap());
    }
    assert_eq!(store.prune_security_events(t(100)).await.unwrap(), 1);
    assert_eq!(store.prune_security_events(t(100)).await.unwrap(), 0);
    // Pruned: it would be new again; kept: still a duplicate.
    assert!(
        store
            .record_security_event("old", "x", t(300))
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_security_event("edge", "x", t(300))
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_security_event("new", "x", t(300))
            .await
            .unwrap()
    );
}

pub async fn concurrent_receipts_of_one_event_record_it_once(store: SharedStore) {
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .record_security_event("same-jti", "tokens-revoked", t(0))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut new = 0;
    for task in tasks {
        if task.await.unwrap() {
            new += 1;
        }
    }
    assert_eq!(new, 1);
}

fn block(sub: &str, reason: &str, at: i64) -> SignInBlock {
    SignInBlock {
        sub: sub.to_owned(),
        reason: reason.to_owned(),
        blocked_at: t(at),
    }
}

pub async fn sign_in_block_lifecycle(store: SharedStore) {
    signed_in(&store, "hana").await;
    assert_eq!(store.sign_in_block("hana").await.unwrap(), None);

    store
        .block_sign_in(block("hana", "account-disabled: hijacking", 10))
        .await
        .unwrap();
    assert_eq!(
        store.sign_in_block("hana").await.unwrap(),
        Some(block("hana", "account-disabled: hijacking", 10))
    );
    // Blocking again takes the new reason and time.
    store
        .block_sign_in(block("hana", "again", 20))
        .await
        .unwrap();
    assert_eq!(
        store.sign_in_block("hana").await.unwrap(),
        Some(block("hana", "again", 20))
    );

    assert!(store.lift_sign_in_block("hana").await.unwrap());
    assert!(!store.lift_sign_in_block("hana").await.unwrap());
    assert_eq!(store.sign_in_block("hana").await.unwrap(), None);
}

pub async fn sign_in_block_needs_no_user_and_outlives_one(store: SharedStore) {
    // The event may precede the account's first sign-in.
    store
        .block_sign_in(block("stranger", "hijacking", 0))
        .await
        .unwrap();
    assert_eq!(
        store.sign_in_block("stranger").await.unwrap(),
        Some(block("stranger", "hijacking", 0))
    );

    signed_in(&store, "ivo").await;
    store
        .block_sign_in(block("ivo", "hijacking", 0))
        .await
        .unwrap();
    assert!(store.delete_user("ivo").await.unwrap());
    assert!(store.sign_in_block("ivo").await.unwrap().is_some());
    // Other users are not blocked.
    assert_eq!(store.sign_in_block("ivx").await.unwrap(), None);
}

/// A sign-in checked for a block writes nothing for a blocked account (a first sign-in or a
/// known user's: no user, grant, event or session) and answers the block; unblocked, it records
/// as `record_sign_in` does.
pub async fn a_blocked_sign_in_writes_nothing(store: SharedStore) {
    let session = |sub: &str, hash: &str| SessionRecord {
        id_hash: hash.to_owned(),
        sub: sub.to_owned(),
        created_at: t(5),
        expires_at: t(3600),
    };
    store
        .block_sign_in(block("newcomer", "hijacking", 1))
        .await
        .unwrap();
    let mut first = sign_in("newcomer", OPENID_EMAIL, Some(refresh("newcomer")), t(5));
    first.session = Some(session("newcomer", "s-new"));
    assert_eq!(
        store
            .record_sign_in_unless_blocked(first.clone())
            .await
            .unwrap(),
        SignInRecorded::Blocked(block("newcomer", "hijacking", 1))
    );
    assert_eq!(store.user("newcomer").await.unwrap(), None);
    assert_eq!(store.session("s-new", t(6)).await.unwrap(), None);

    let held = signed_in(&store, "known").await;
    store
        .block_sign_in(block("known", "account-disabled: hijacking", 2))
        .await
        .unwrap();
    let mut again = sign_in("known", OPENID_EMAIL, None, t(5));
    again.session = Some(session("known", "s-known"));
    assert_eq!(
        store
            .record_sign_in_unless_blocked(again.clone())
            .await
            .unwrap(),
        SignInRecorded::Blocked(block("known", "account-disabled: hijacking", 2))
    );
    let (_, grant) = store.user("known").await.unwrap().unwrap();
    assert_eq!(grant, held, "the grant is as it was");
    assert_eq!(store.grant_events("known").await.unwrap().len(), 1);
    assert_eq!(store.session("s-known", t(6)).await.unwrap(), None);

    // Lifted, the same sign-ins record.
    assert!(store.lift_sign_in_block("newcomer").await.unwrap());
    let SignInRecorded::Recorded(outcome) =
        store.record_sign_in_unless_blocked(first).await.unwrap()
    else {
        panic!("an unblocked sign-in is recorded");
    };
    assert!(outcome.created);
    assert_eq!(outcome.grant.state, GrantState::Active);
    assert_eq!(
        store.session("s-new", t(6)).await.unwrap().map(|s| s.sub),
        Some("newcomer".to_owned())
    );
    assert!(store.lift_sign_in_block("known").await.unwrap());
    let SignInRecorded::Recorded(outcome) =
        store.record_sign_in_unless_blocked(again).await.unwrap()
    else {
        panic!("an unblocked sign-in is recorded");
    };
    assert!(!outcome.created);
    assert_eq!(outcome.grant.version, held.version + 1);
}

pub async fn users_are_found_by_exact_email(store: SharedStore) {
    for sub in ["u2", "u1", "u3", "u4"] {
        let mut s = sign_in(sub, OPENID_EMAIL, None, t(0));
        s.profile = profile(sub);
        s.profile.email = Some(if sub == "u3" {
            "other@example.com".to_owned()
        } else {
            // Two accounts may have held one address over time.
            "shared@example.com".to_owned()
        });
        // An address the provider did not verify names nobody.
        s.profile.email_verified = sub != "u4";
        store.record_sign_in(s).await.unwrap();
    }
    assert_eq!(
        store.subs_by_email("shared@example.com").await.unwrap(),
        ["u1", "u2"]
    );
    assert_eq!(
        store.subs_by_email("other@example.com").await.unwrap(),
        ["u3"]
    );
    assert!(
        store
            .subs_by_email("nobody@example.com")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .subs_by_email("%@example.com")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .subs_by_email("SHARED@example.com")
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn users_are_found_by_refresh_token_fingerprint(store: SharedStore) {
    signed_in(&store, "ann").await;
    signed_in(&store, "bob").await;
    // `refresh(tag)` fingerprints as hash-of-TAG / prefix-of-TAG.
    let hash = |tag: &str| TokenLookup::Hash(format!("hash-of-{tag}"));
    let prefix = |tag: &str| TokenLookup::PrefixHash(format!("prefix-of-{tag}"));
    assert_eq!(
        store.subs_by_refresh_token(&hash("bob")).await.unwrap(),
        ["bob"]
    );
    assert_eq!(
        store.subs_by_refresh_token(&prefix("ann")).await.unwrap(),
        ["ann"]
    );
    // One kind of fingerprint never matches the other.
    assert!(
        store
            .subs_by_refresh_token(&TokenLookup::Hash("prefix-of-ann".into()))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .subs_by_refresh_token(&hash("cid"))
            .await
            .unwrap()
            .is_empty()
    );

    // A replaced token is no longer found; the new one is.
    store
        .record_sign_in(sign_in("ann", OPENID_EMAIL, Some(refresh("ann-2")), t(10)))
        .await
        .unwrap();
    assert!(
        store
            .subs_by_refresh_token(&hash("ann"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.subs_by_refresh_token(&hash("ann-2")).await.unwrap(),
        ["ann"]
    );

    // Dropped tokens are not found.
    let mut update = state_update(GrantState::Revoked, "RISC", None, 20);
    update.drop_tokens = true;
    store.update_grant_state("bob", None, update).await.unwrap();
    assert!(
        store
            .subs_by_refresh_token(&hash("bob"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .subs_by_refresh_token(&prefix("bob"))
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn a_shared_prefix_finds_every_grant(store: SharedStore) {
    for sub in ["p2", "p1"] {
        let mut token = refresh(sub);
        token.fingerprint.prefix_hash = "same-prefix".into();
        store
            .record_sign_in(sign_in(sub, OPENID_EMAIL, Some(token), t(0)))
            .await
            .unwrap();
    }
    assert_eq!(
        store
            .subs_by_refresh_token(&TokenLookup::PrefixHash("same-prefix".into()))
            .await
            .unwrap(),
        ["p1", "p2"]
    );
}

pub async fn concurrent_receipts_across_instances(store: SharedStore, second: SharedStore) {
    let (a, b) = tokio::join!(
        store.record_security_event("twice", "account-disabled", t(0)),
        second.record_security_event("twice", "account-disabled", t(0)),
    );
    assert!(a.unwrap() ^ b.unwrap(), "exactly one instance acts");
    // A block written by one instance is seen by the other.
    second
        .block_sign_in(block("shared-sub", "hijacking", 0))
        .await
        .unwrap();
    assert!(store.sign_in_block("shared-sub").await.unwrap().is_some());
}

pub async fn lookups_are_capped(store: SharedStore) {
    for i in 0..=MAX_SUBJECT_MATCHES {
        let sub = format!("many-{i:04}");
        let mut s = sign_in(&sub, OPENID_EMAIL, None, t(0));
        s.profile.email = Some("many@example.com".to_owned());
        store.record_sign_in(s).await.unwrap();
    }
    let found = store.subs_by_email("many@example.com").await.unwrap();
    assert_eq!(found.len(), MAX_SUBJECT_MATCHES as usize);
    assert_eq!(found[0], "many-0000");
}
