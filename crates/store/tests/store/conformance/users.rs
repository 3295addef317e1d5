//! Users, grants and the sign-in merge rules of `UserStore::record_sign_in`.

use super::{DRIVE, OPENID_EMAIL, access, profile, refresh, sign_in, state_update, t};
use grantkeeper_core::{GrantState, Scopes};
use grantkeeper_store::{SharedStore, SignInOutcome};

const GOT_TOKEN: &str = "refresh token received at sign-in";
const NO_TOKEN: &str = "signed in without a refresh token";

pub async fn sign_in_creates_user_and_grant(store: SharedStore) {
    let first = sign_in("alice", OPENID_EMAIL, Some(refresh("a1")), t(0));
    let out = store.record_sign_in(first.clone()).await.unwrap();

    assert!(out.created);
    assert_eq!(out.user.profile, profile("alice"));
    assert_eq!(out.user.created_at, t(0));
    assert_eq!(out.user.updated_at, t(0));
    assert_eq!(out.user.last_sign_in_at, Some(t(0)));

    let grant = &out.grant;
    assert_eq!(grant.sub, "alice");
    assert_eq!(grant.state, GrantState::Active);
    assert_eq!(grant.scopes, Scopes::parse(OPENID_EMAIL));
    assert_eq!(grant.refresh_token, Some(refresh("a1")));
    assert_eq!(grant.refresh_token_received_at, Some(t(0)));
    assert_eq!(grant.access_token, first.access_token);
    assert_eq!(grant.reason.as_deref(), Some(GOT_TOKEN));
    assert_eq!(grant.state_changed_at, t(0));
    assert_eq!(grant.updated_at, t(0));
    assert_eq!(grant.last_refresh_at, None);
    assert_eq!(grant.last_error, None);
    assert_eq!(grant.version, 1);
    assert!(!grant.needs_consent());

    let event = out.event.clone().expect("a new grant is a change of state");
    assert_eq!(event.sub, "alice");
    assert_eq!(event.from, None);
    assert_eq!(event.to, GrantState::Active);
    assert_eq!(event.reason, GOT_TOKEN);
    assert_eq!(event.at, t(0));

    // What was answered is what is read back.
    let (user, read_grant) = store.user("alice").await.unwrap().expect("user exists");
    assert_eq!(user, out.user);
    assert_eq!(read_grant, out.grant);
    assert_eq!(store.grant_events("alice").await.unwrap(), vec![event]);
}

pub async fn sign_in_without_refresh_token_needs_consent(store: SharedStore) {
    let out = store
        .record_sign_in(sign_in("bob", OPENID_EMAIL, None, t(0)))
        .await
        .unwrap();
    assert!(out.created);
    assert_eq!(out.grant.state, GrantState::NeedsConsent);
    assert_eq!(out.grant.refresh_token, None);
    assert_eq!(out.grant.refresh_token_received_at, None);
    assert_eq!(out.grant.scopes, Scopes::parse(OPENID_EMAIL));
    assert_eq!(out.grant.reason.as_deref(), Some(NO_TOKEN));
    assert_eq!(out.grant.version, 1);
    assert!(out.grant.needs_consent());
    let event = out.event.expect("a new grant is a change of state");
    assert_eq!((event.from, event.to), (None, GrantState::NeedsConsent));
    assert_eq!(event.reason, NO_TOKEN);
}

pub async fn sign_in_without_refresh_token_keeps_the_held_one(store: SharedStore) {
    store
        .record_sign_in(sign_in("carol", OPENID_EMAIL, Some(refresh("c1")), t(0)))
        .await
        .unwrap();
    let again = sign_in("carol", OPENID_EMAIL, None, t(60));
    let out = store.record_sign_in(again.clone()).await.unwrap();

    assert!(!out.created);
    assert_eq!(out.grant.state, GrantState::Active);
    // Byte for byte, with its fingerprint and the time it was received.
    assert_eq!(out.grant.refresh_token, Some(refresh("c1")));
    assert_eq!(out.grant.refresh_token_received_at, Some(t(0)));
    assert_eq!(out.grant.reason.as_deref(), Some(GOT_TOKEN));
    assert_eq!(out.grant.state_changed_at, t(0));
    assert_eq!(out.grant.updated_at, t(60));
    assert_eq!(out.grant.access_token, again.access_token);
    assert_eq!(out.event, None);

    let (_, grant) = store.user("carol").await.unwrap().unwrap();
    assert_eq!(grant.refresh_token, Some(refresh("c1")));
    assert_eq!(grant, out.grant);
}

pub async fn new_refresh_token_replaces_the_held_one(store: SharedStore) {
    store
        .record_sign_in(sign_in("dave", OPENID_EMAIL, Some(refresh("d1")), t(0)))
        .await
        .unwrap();
    let out = store
        .record_sign_in(sign_in("dave", OPENID_EMAIL, Some(refresh("d2")), t(30)))
        .await
        .unwrap();
    assert_eq!(out.grant.refresh_token, Some(refresh("d2")));
    assert_eq!(out.grant.refresh_token_received_at, Some(t(30)));
    assert_eq!(out.grant.state, GrantState::Active);
    assert_eq!(out.event, None, "active to active is no change of state");
    let (_, grant) = store.user("dave").await.unwrap().unwrap();
    assert_eq!(grant.refresh_token, Some(refresh("d2")));
}

pub async fn scopes_unite_while_usable(store: SharedStore) {
    store
        .record_sign_in(sign_in("erin", OPENID_EMAIL, Some(refresh("e1")), t(0)))
        .await
        .unwrap();
    // Incremental authorization: the new consent adds Drive; the old scopes stay.
    let out = store
        .record_sign_in(sign_in(
            "erin",
            &format!("openid {DRIVE}"),
            Some(refresh("e2")),
            t(10),
        ))
        .await
        .unwrap();
    assert_eq!(
        out.grant.scopes,
        Scopes::parse(&format!("openid email {DRIVE}"))
    );
    // Without a token too.
    let out = store
        .record_sign_in(sign_in("erin", "openid profile", None, t(20)))
        .await
        .unwrap();
    assert_eq!(
        out.grant.scopes,
        Scopes::parse(&format!("openid email profile {DRIVE}"))
    );
    let (_, grant) = store.user("erin").await.unwrap().unwrap();
    assert_eq!(grant.scopes, out.grant.scopes);
}

pub async fn needs_consent_takes_the_granted_scopes(store: SharedStore) {
    store
        .record_sign_in(sign_in("fay", &format!("openid email {DRIVE}"), None, t(0)))
        .await
        .unwrap();
    let out = store
        .record_sign_in(sign_in("fay", OPENID_EMAIL, None, t(10)))
        .await
        .unwrap();
    assert_eq!(out.grant.state, GrantState::NeedsConsent);
    assert_eq!(out.grant.scopes, Scopes::parse(OPENID_EMAIL));
    assert_eq!(out.event, None);

    // Consent at last: the grant covers what this consent granted, nothing older.
    let out = store
        .record_sign_in(sign_in("fay", "openid profile", Some(refresh("f1")), t(20)))
        .await
        .unwrap();
    assert_eq!(out.grant.state, GrantState::Active);
    assert_eq!(out.grant.scopes, Scopes::parse("openid profile"));
    assert_eq!(out.grant.state_changed_at, t(20));
    assert_eq!(out.grant.reason.as_deref(), Some(GOT_TOKEN));
    let event = out.event.expect("needs_consent to active");
    assert_eq!(
        (event.from, event.to),
        (Some(GrantState::NeedsConsent), GrantState::Active)
    );
}

pub async fn access_token_replaced_only_when_given(store: SharedStore) {
    let mut first = sign_in("gus", OPENID_EMAIL, Some(refresh("g1")), t(0));
    first.access_token = Some(access("g-a1", t(3600)));
    store.record_sign_in(first).await.unwrap();

    let mut without = sign_in("gus", OPENID_EMAIL, None, t(10));
    without.access_token = None;
    let out = store.record_sign_in(without).await.unwrap();
    assert_eq!(out.grant.access_token, Some(access("g-a1", t(3600))));

    let mut with = sign_in("gus", OPENID_EMAIL, None, t(20));
    with.access_token = Some(access("g-a2", t(3620)));
    let out = store.record_sign_in(with).await.unwrap();
    assert_eq!(out.grant.access_token, Some(access("g-a2", t(3620))));
    let (_, grant) = store.user("gus").await.unwrap().unwrap();
    assert_eq!(grant.access_token, Some(access("g-a2", t(3620))));
}

pub async fn events_only_on_state_change(store: SharedStore) {
    let steps = [
        (None, Some((None, GrantState::NeedsConsent, NO_TOKEN))),
        (None, None),
        (
            Some("h1"),
            Some((
                Some(GrantState::NeedsConsent),
                GrantState::Active,
                GOT_TOKEN,
            )),
        ),
        (Some("h2"), None),
        (None, None),
    ];
    let mut recorded = Vec::new();
    for (i, (token, expected)) in steps.into_iter().enumerate() {
        let at = t(i as i64 * 10);
        let out = store
            .record_sign_in(sign_in("hana", OPENID_EMAIL, token.map(refresh), at))
            .await
            .unwrap();
        match expected {
            None => assert_eq!(out.event, None, "step {i}"),
            Some((from, to, reason)) => {
                let event = out.event.expect("a change of state");
                assert_eq!((event.from, event.to), (from, to), "step {i}");
                assert_eq!(event.reason, reason);
                assert_eq!(event.at, at);
                assert_eq!(event.sub, "hana");
                recorded.push(event);
            }
        }
    }
    let events = store.grant_events("hana").await.unwrap();
    assert_eq!(events, recorded);
    assert!(events[0].id < events[1].id);
}

pub async fn version_increments_on_every_sign_in(store: SharedStore) {
    for i in 0..5 {
        let token = (i % 2 == 0).then(|| refresh(&format!("i{i}")));
        let out = store
            .record_sign_in(sign_in("ivan", OPENID_EMAIL, token, t(i)))
            .await
            .unwrap();
        assert_eq!(out.grant.version, i + 1);
    }
    let (_, grant) = store.user("ivan").await.unwrap().unwrap();
    assert_eq!(grant.version, 5);
}

pub async fn profile_is_replaced(store: SharedStore) {
    store
        .record_sign_in(sign_in("jo", OPENID_EMAIL, Some(refresh("j1")), t(0)))
        .await
        .unwrap();
    let mut changed = sign_in("jo", OPENID_EMAIL, None, t(100));
    changed.profile.email = Some("jo@work.example".into());
    changed.profile.email_verified = false;
    changed.profile.name = Some("Jo Changed".into());
    changed.profile.picture = None;
    changed.profile.locale = Some("fr".into());
    changed.profile.hd = Some("work.example".into());
    let out = store.record_sign_in(changed.clone()).await.unwrap();

    assert!(!out.created);
    assert_eq!(out.user.profile, changed.profile);
    assert_eq!(out.user.created_at, t(0));
    assert_eq!(out.user.updated_at, t(100));
    assert_eq!(out.user.last_sign_in_at, Some(t(100)));
    let (user, _) = store.user("jo").await.unwrap().unwrap();
    assert_eq!(user, out.user);
    // Other users are not touched.
    assert!(store.user("jo2").await.unwrap().is_none());
}

pub async fn unknown_user_is_none(store: SharedStore) {
    assert!(store.user("nobody").await.unwrap().is_none());
    assert!(store.grant_events("nobody").await.unwrap().is_empty());
    store
        .record_sign_in(sign_in("somebody", OPENID_EMAIL, None, t(0)))
        .await
        .unwrap();
    assert!(store.user("nobody").await.unwrap().is_none());
}

pub async fn revoked_stays_revoked_without_refresh_token(store: SharedStore) {
    store
        .record_sign_in(sign_in(
            "kim",
            &format!("openid email {DRIVE}"),
            Some(refresh("k1")),
            t(0),
        ))
        .await
        .unwrap();
    store
        .update_grant_state(
            "kim",
            None,
            state_update(
                GrantState::Revoked,
                "invalid_grant",
                Some("invalid_grant"),
                5,
            ),
        )
        .await
        .unwrap();

    let out = store
        .record_sign_in(sign_in("kim", OPENID_EMAIL, None, t(10)))
        .await
        .unwrap();
    assert_eq!(out.grant.state, GrantState::Revoked);
    assert_eq!(out.grant.scopes, Scopes::parse(OPENID_EMAIL));
    // Never erased, even from a revoked grant; it is just not usable.
    assert_eq!(out.grant.refresh_token, Some(refresh("k1")));
    assert!(out.grant.needs_consent());
    assert_eq!(out.event, None);
    assert_eq!(out.grant.version, 3, "sign-in, revocation, sign-in");

    let out = store
        .record_sign_in(sign_in("kim", "openid profile", Some(refresh("k2")), t(20)))
        .await
        .unwrap();
    assert_eq!(out.grant.state, GrantState::Active);
    assert_eq!(out.grant.scopes, Scopes::parse("openid profile"));
    assert_eq!(out.grant.refresh_token, Some(refresh("k2")));
    assert_eq!(out.grant.last_error, None);
    let event = out.event.expect("revoked to active");
    assert_eq!(
        (event.from, event.to),
        (Some(GrantState::Revoked), GrantState::Active)
    );
    assert_eq!(event.reason, GOT_TOKEN);
}

pub async fn failing_grant_stays_usable(store: SharedStore) {
    store
        .record_sign_in(sign_in("lea", OPENID_EMAIL, Some(refresh("l1")), t(0)))
        .await
        .unwrap();
    store
        .update_grant_state(
            "lea",
            None,
            state_update(GrantState::Failing, "upstream 503", Some("upstream 503"), 5),
        )
        .await
        .unwrap();

    let out = store
        .record_sign_in(sign_in("lea", &format!("openid {DRIVE}"), None, t(10)))
        .await
        .unwrap();
    assert_eq!(out.grant.state, GrantState::Failing);
    assert_eq!(
        out.grant.scopes,
        Scopes::parse(&format!("openid email {DRIVE}"))
    );
    assert_eq!(out.grant.refresh_token, Some(refresh("l1")));
    assert_eq!(out.grant.last_error.as_deref(), Some("upstream 503"));
    assert_eq!(out.event, None);

    let out = store
        .record_sign_in(sign_in("lea", "openid profile", Some(refresh("l2")), t(20)))
        .await
        .unwrap();
    assert_eq!(out.grant.state, GrantState::Active);
    assert_eq!(
        out.grant.scopes,
        Scopes::parse(&format!("openid email profile {DRIVE}"))
    );
    assert_eq!(
        out.grant.last_error, None,
        "the error belonged to the old token"
    );
    let event = out.event.expect("failing to active");
    assert_eq!(
        (event.from, event.to),
        (Some(GrantState::Failing), GrantState::Active)
    );
}

pub async fn ping_answers(store: SharedStore) {
    store.ping().await.unwrap();
    assert!(["sqlite", "postgres"].contains(&store.backend()));
}

/// Many sign-ins of one user at once, half bringing a new refresh token: each must see the
/// others' commits, so the token held at the end is the one of the last sign-in that brought
/// one, and none is ever lost to a sign-in without.
pub async fn concurrent_sign_ins_keep_the_refresh_token(store: SharedStore) {
    concurrent_sign_ins(&[store.clone(), store]).await;
}

pub async fn concurrent_sign_ins_across_instances(first: SharedStore, second: SharedStore) {
    concurrent_sign_ins(&[first, second]).await;
}

async fn concurrent_sign_ins(stores: &[SharedStore]) {
    const TASKS: i64 = 32;
    let sub = "mia";
    stores[0]
        .record_sign_in(sign_in(sub, OPENID_EMAIL, Some(refresh("m0")), t(0)))
        .await
        .unwrap();

    let mut tasks = Vec::new();
    for i in 1..=TASKS {
        let store = stores[i as usize % stores.len()].clone();
        let token = (i % 2 == 0).then(|| refresh(&format!("m{i}")));
        tasks.push(tokio::spawn(async move {
            let out = store
                .record_sign_in(sign_in(sub, OPENID_EMAIL, token.clone(), t(i)))
                .await
                .unwrap();
            (token, out)
        }));
    }
    let mut outcomes: Vec<(Option<_>, SignInOutcome)> = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }

    // Every sign-in read what the one before it committed: versions 2..=TASKS+1, no gaps.
    let mut versions: Vec<i64> = outcomes.iter().map(|(_, o)| o.grant.version).collect();
    versions.sort_unstable();
    assert_eq!(versions, (2..=TASKS + 1).collect::<Vec<_>>());

    // In commit order, each sign-in holds the token of the latest one that brought a token.
    outcomes.sort_by_key(|(_, out)| out.grant.version);
    let mut held = Some(refresh("m0"));
    for (token, out) in &outcomes {
        if token.is_some() {
            held = token.clone();
        }
        assert_eq!(out.grant.state, GrantState::Active);
        assert_eq!(
            out.grant.refresh_token, held,
            "version {}",
            out.grant.version
        );
    }
    let last = outcomes.last().map(|(_, out)| out.grant.clone()).unwrap();
    for store in stores {
        let (_, grant) = store.user(sub).await.unwrap().unwrap();
        assert_eq!(grant.refresh_token, held);
        assert_eq!(grant, last);
        assert_eq!(grant.version, TASKS + 1);
    }
    // Only the very first sign-in changed the state.
    assert_eq!(stores[0].grant_events(sub).await.unwrap().len(), 1);
}
