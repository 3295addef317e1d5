//! The broker's and operators' grant writes (`GrantStore`): fenced refreshes, state changes with
//! their events, listing users by pages and deleting them.

use super::{DRIVE, OPENID_EMAIL, access, refresh, sign_in, signed_in, state_update, t};
use grantkeeper_core::{GrantState, Scopes};
use grantkeeper_store::{
    AuditFilter, AuditRecord, DEFAULT_PAGE, GrantRecord, RefreshSuccess, SessionRecord,
    SharedStore, StoreError,
};
use std::collections::HashSet;

const REFRESHED: &str = "refresh succeeded";

fn refreshed(tag: &str, at: i64) -> RefreshSuccess {
    RefreshSuccess {
        access_token: access(tag, t(at + 3599)),
        refresh_token: None,
        scopes: None,
        at: t(at),
    }
}

async fn events(store: &SharedStore, sub: &str) -> Vec<(Option<GrantState>, GrantState)> {
    store
        .grant_events(sub)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.from, e.to))
        .collect()
}

async fn read(store: &SharedStore, sub: &str) -> GrantRecord {
    store.grant(sub).await.unwrap().expect("the grant exists")
}

pub async fn grant_is_the_users_grant(store: SharedStore) {
    let signed = signed_in(&store, "abe").await;
    assert_eq!(read(&store, "abe").await, signed);
    let (_, grant) = store.user("abe").await.unwrap().unwrap();
    assert_eq!(grant, signed);
    assert_eq!(store.grant("nobody").await.unwrap(), None);
}

pub async fn refresh_is_recorded(store: SharedStore) {
    let held = signed_in(&store, "ben").await;
    let out = store
        .record_refresh("ben", held.version, refreshed("ben-a2", 100))
        .await
        .unwrap();

    assert_eq!(out.access_token, Some(access("ben-a2", t(3699))));
    assert_eq!(out.last_refresh_at, Some(t(100)));
    assert_eq!(out.updated_at, t(100));
    assert_eq!(out.version, held.version + 1);
    // What the refresh did not bring stays.
    assert_eq!(out.state, GrantState::Active);
    assert_eq!(out.refresh_token, held.refresh_token);
    assert_eq!(out.refresh_token_received_at, Some(t(0)));
    assert_eq!(out.scopes, held.scopes);
    assert_eq!(out.reason, held.reason);
    assert_eq!(out.state_changed_at, t(0));
    assert_eq!(out.last_error, None);
    // The row as written is the row as read; active to active is no event.
    assert_eq!(read(&store, "ben").await, out);
    assert_eq!(events(&store, "ben").await, [(None, GrantState::Active)]);
}

pub async fn refresh_replaces_refresh_token_and_scopes_when_given(store: SharedStore) {
    let held = signed_in(&store, "cy").await;
    let mut with = refreshed("cy-a2", 50);
    with.refresh_token = Some(refresh("cy-2"));
    with.scopes = Some(Scopes::parse(&format!("openid {DRIVE}")));
    let out = store
        .record_refresh("cy", held.version, with)
        .await
        .unwrap();
    assert_eq!(out.refresh_token, Some(refresh("cy-2")));
    assert_eq!(out.refresh_token_received_at, Some(t(50)));
    assert_eq!(out.scopes, Scopes::parse(&format!("openid {DRIVE}")));

    // An empty `scope` says nothing about the grant.
    let mut empty = refreshed("cy-a3", 60);
    empty.scopes = Some(Scopes::parse(""));
    let out = store
        .record_refresh("cy", out.version, empty)
        .await
        .unwrap();
    assert_eq!(out.scopes, Scopes::parse(&format!("openid {DRIVE}")));
    assert_eq!(out.refresh_token, Some(refresh("cy-2")));
    assert_eq!(read(&store, "cy").await, out);
}

pub async fn refresh_is_fenced(store: SharedStore) {
    let held = signed_in(&store, "dot").await;
    // Another instance wrote meanwhile (a sign-in here).
    let current = store
        .record_sign_in(sign_in("dot", OPENID_EMAIL, Some(refresh("dot-2")), t(10)))
        .await
        .unwrap()
        .grant;
    for stale in [held.version, current.version + 1, 0] {
        let err = store
            .record_refresh("dot", stale, refreshed("dot-late", 20))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict), "{err:?}");
    }
    // Nothing written: not the token, not the version, no event.
    assert_eq!(read(&store, "dot").await, current);
    assert_eq!(events(&store, "dot").await.len(), 1);

    let out = store
        .record_refresh("dot", current.version, refreshed("dot-a", 30))
        .await
        .unwrap();
    assert_eq!(out.version, current.version + 1);
    assert_eq!(out.refresh_token, Some(refresh("dot-2")));
}

pub async fn refresh_revives_a_failing_grant(store: SharedStore) {
    let held = signed_in(&store, "eli").await;
    let (failing, _) = store
        .update_grant_state(
            "eli",
            Some(held.version),
            state_update(GrantState::Failing, "upstream 503", Some("HTTP 503"), 10),
        )
        .await
        .unwrap();
    assert_eq!(failing.state, GrantState::Failing);

    let out = store
        .record_refresh("eli", failing.version, refreshed("eli-a", 40))
        .await
        .unwrap();
    assert_eq!(out.state, GrantState::Active);
    assert_eq!(out.reason.as_deref(), Some(REFRESHED));
    assert_eq!(out.state_changed_at, t(40));
    assert_eq!(out.last_error, None);
    assert_eq!(out.version, held.version + 2);
    assert_eq!(read(&store, "eli").await, out);

    let history = store.grant_events("eli").await.unwrap();
    assert_eq!(
        history.iter().map(|e| (e.from, e.to)).collect::<Vec<_>>(),
        [
            (None, GrantState::Active),
            (Some(GrantState::Active), GrantState::Failing),
            (Some(GrantState::Failing), GrantState::Active),
        ]
    );
    let last = &history[2];
    assert_eq!(last.reason, REFRESHED);
    assert_eq!(last.at, t(40));
    assert_eq!(last.sub, "eli");
}

pub async fn refresh_does_not_revive_a_revoked_grant(store: SharedStore) {
    signed_in(&store, "fox").await;
    let (revoked, _) = store
        .update_grant_state(
            "fox",
            None,
            state_update(GrantState::Revoked, "RISC tokens-revoked", None, 10),
        )
        .await
        .unwrap();
    // A refresh that raced the revocation but read its version: only consent revives a grant.
    let out = store
        .record_refresh("fox", revoked.version, refreshed("fox-a", 20))
        .await
        .unwrap();
    assert_eq!(out.state, GrantState::Revoked);
    assert_eq!(out.reason.as_deref(), Some("RISC tokens-revoked"));
    assert_eq!(out.state_changed_at, t(10));
    assert_eq!(events(&store, "fox").await.len(), 2);
}

/// Instances that all read one version and all refreshed: exactly one write lands, the others
/// are told to re-read.
pub async fn concurrent_refreshes_one_wins(store: SharedStore) {
    concurrent_refreshes(&[store.clone(), store]).await;
}

pub async fn concurrent_refreshes_across_instances(first: SharedStore, second: SharedStore) {
    concurrent_refreshes(&[first, second]).await;
}

async fn concurrent_refreshes(stores: &[SharedStore]) {
    const TASKS: usize = 16;
    let held = signed_in(&stores[0], "gil").await;
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        let store = stores[i % stores.len()].clone();
        tasks.push(tokio::spawn(async move {
            let tag = format!("gil-a{i}");
            let out = store
                .record_refresh("gil", held.version, refreshed(&tag, 10))
                .await;
            (tag, out)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (tag, Ok(grant)) => winners.push((tag, grant)),
            (_, Err(StoreError::Conflict)) => {}
            (_, Err(other)) => panic!("{other:?}"),
        }
    }
    let won_by: Vec<_> = winners.iter().map(|(tag, g)| (tag, g.version)).collect();
    assert_eq!(winners.len(), 1, "{won_by:?}");
    let (tag, won) = winners.remove(0);
    assert_eq!(won.access_token, Some(access(&tag, t(3609))));
    assert_eq!(won.version, held.version + 1);
    for store in stores {
        assert_eq!(read(store, "gil").await, won);
    }
}

pub async fn state_update_to_failing(store: SharedStore) {
    let held = signed_in(&store, "hal").await;
    let (out, event) = store
        .update_grant_state(
            "hal",
            Some(held.version),
            state_update(
                GrantState::Failing,
                "upstream 503 at refresh",
                Some("HTTP 503"),
                10,
            ),
        )
        .await
        .unwrap();
    assert_eq!(out.state, GrantState::Failing);
    assert_eq!(out.reason.as_deref(), Some("upstream 503 at refresh"));
    assert_eq!(out.last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(out.state_changed_at, t(10));
    assert_eq!(out.updated_at, t(10));
    assert_eq!(out.version, held.version + 1);
    // Still usable: the tokens stay.
    assert_eq!(out.refresh_token, held.refresh_token);
    assert_eq!(out.access_token, held.access_token);
    assert!(!out.needs_consent());
    assert_eq!(read(&store, "hal").await, out);

    let event = event.expect("active to failing");
    assert_eq!(
        (event.from, event.to),
        (Some(GrantState::Active), GrantState::Failing)
    );
    assert_eq!(event.reason, "upstream 503 at refresh");
    assert_eq!(event.at, t(10));
    assert_eq!(event.sub, "hal");
    assert_eq!(
        store.grant_events("hal").await.unwrap().last(),
        Some(&event)
    );

    // Failing again: the new error is kept; the state, its reason and its time are not new.
    let (again, event) = store
        .update_grant_state(
            "hal",
            Some(out.version),
            state_update(
                GrantState::Failing,
                "timeout at refresh",
                Some("timeout"),
                20,
            ),
        )
        .await
        .unwrap();
    assert_eq!(event, None);
    assert_eq!(again.last_error.as_deref(), Some("timeout"));
    assert_eq!(again.reason.as_deref(), Some("upstream 503 at refresh"));
    assert_eq!(again.state_changed_at, t(10));
    assert_eq!(again.updated_at, t(20));
    assert_eq!(again.version, out.version + 1);

    // No error given: the held one stays.
    let (kept, _) = store
        .update_grant_state(
            "hal",
            None,
            state_update(GrantState::Failing, "still failing", None, 30),
        )
        .await
        .unwrap();
    assert_eq!(kept.last_error.as_deref(), Some("timeout"));
}

pub async fn state_update_to_revoked_keeps_tokens(store: SharedStore) {
    let held = signed_in(&store, "ida").await;
    let (out, event) = store
        .update_grant_state(
            "ida",
            Some(held.version),
            state_update(
                GrantState::Revoked,
                "invalid_grant at refresh: Token has been expired or revoked.",
                Some("invalid_grant"),
                10,
            ),
        )
        .await
        .unwrap();
    assert_eq!(out.state, GrantState::Revoked);
    assert_eq!(out.refresh_token, held.refresh_token);
    assert_eq!(out.refresh_token_received_at, Some(t(0)));
    assert_eq!(out.access_token, held.access_token);
    assert_eq!(out.last_error.as_deref(), Some("invalid_grant"));
    assert!(out.needs_consent());
    let event = event.expect("active to revoked");
    assert_eq!(
        (event.from, event.to),
        (Some(GrantState::Active), GrantState::Revoked)
    );
    assert_eq!(read(&store, "ida").await, out);
}

pub async fn state_update_to_revoked_drops_tokens(store: SharedStore) {
    let held = signed_in(&store, "jan").await;
    assert!(held.refresh_token.is_some() && held.access_token.is_some());
    let mut update = state_update(GrantState::Revoked, "disconnected by the user", None, 10);
    update.drop_tokens = true;
    let (out, event) = store
        .update_grant_state("jan", Some(held.version), update)
        .await
        .unwrap();
    assert_eq!(out.state, GrantState::Revoked);
    assert_eq!(out.refresh_token, None);
    assert_eq!(out.refresh_token_received_at, None);
    assert_eq!(out.access_token, None);
    assert_eq!(out.reason.as_deref(), Some("disconnected by the user"));
    // The scopes are history, not secrets.
    assert_eq!(out.scopes, held.scopes);
    assert!(out.needs_consent());
    assert!(event.is_some());
    assert_eq!(read(&store, "jan").await, out);

    // A later consent brings the grant back.
    let back = store
        .record_sign_in(sign_in("jan", OPENID_EMAIL, Some(refresh("jan-2")), t(20)))
        .await
        .unwrap();
    assert_eq!(back.grant.state, GrantState::Active);
    assert_eq!(back.grant.refresh_token, Some(refresh("jan-2")));
}

pub async fn state_update_is_fenced(store: SharedStore) {
    let held = signed_in(&store, "kai").await;
    let (moved, _) = store
        .update_grant_state(
            "kai",
            Some(held.version),
            state_update(GrantState::Failing, "503", Some("503"), 10),
        )
        .await
        .unwrap();
    let err = store
        .update_grant_state(
            "kai",
            Some(held.version),
            state_update(
                GrantState::Revoked,
                "invalid_grant",
                Some("invalid_grant"),
                20,
            ),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
    assert_eq!(read(&store, "kai").await, moved);
    assert_eq!(events(&store, "kai").await.len(), 2);

    // Unfenced (RISC, an operator): written over whatever is there.
    let (out, event) = store
        .update_grant_state(
            "kai",
            None,
            state_update(GrantState::Revoked, "RISC account-disabled", None, 30),
        )
        .await
        .unwrap();
    assert_eq!(out.state, GrantState::Revoked);
    assert_eq!(out.version, moved.version + 1);
    assert_eq!(out.last_error.as_deref(), Some("503"));
    assert!(event.is_some());
}

pub async fn state_update_events_only_on_change(store: SharedStore) {
    signed_in(&store, "lou").await;
    let steps = [
        (GrantState::Failing, true),
        (GrantState::Failing, false),
        (GrantState::Active, true),
        (GrantState::Active, false),
        (GrantState::Revoked, true),
        (GrantState::Revoked, false),
    ];
    let mut recorded = Vec::new();
    let mut version = 1;
    for (i, (state, changes)) in steps.into_iter().enumerate() {
        let at = 10 * (i as i64 + 1);
        let (out, event) = store
            .update_grant_state(
                "lou",
                Some(version),
                state_update(state, &format!("step {i}"), None, at),
            )
            .await
            .unwrap();
        assert_eq!(out.state, state, "step {i}");
        assert_eq!(out.version, version + 1, "step {i}");
        version = out.version;
        assert_eq!(event.is_some(), changes, "step {i}");
        if let Some(event) = event {
            assert_eq!(event.reason, format!("step {i}"));
            assert_eq!(event.at, t(at));
            recorded.push(event);
        }
    }
    let history = store.grant_events("lou").await.unwrap();
    assert_eq!(history.len(), 1 + recorded.len());
    assert_eq!(history[1..], recorded[..]);
}

pub async fn state_update_guards(store: SharedStore) {
    // A transient failure does not revive a revoked grant.
    signed_in(&store, "max").await;
    store
        .update_grant_state(
            "max",
            None,
            state_update(
                GrantState::Revoked,
                "invalid_grant",
                Some("invalid_grant"),
                10,
            ),
        )
        .await
        .unwrap();
    let (out, event) = store
        .update_grant_state(
            "max",
            None,
            state_update(GrantState::Failing, "503", Some("HTTP 503"), 20),
        )
        .await
        .unwrap();
    assert_eq!(out.state, GrantState::Revoked);
    assert_eq!(out.reason.as_deref(), Some("invalid_grant"));
    assert_eq!(out.last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(event, None);

    // Nor a grant that never had a token.
    store
        .record_sign_in(sign_in("ned", OPENID_EMAIL, None, t(0)))
        .await
        .unwrap();
    let (out, event) = store
        .update_grant_state(
            "ned",
            None,
            state_update(GrantState::Failing, "503", None, 10),
        )
        .await
        .unwrap();
    assert_eq!(out.state, GrantState::NeedsConsent);
    assert_eq!(event, None);

    // A grant without a refresh token cannot be usable: it needs consent.
    let (out, event) = store
        .update_grant_state(
            "ned",
            None,
            state_update(GrantState::Active, "operator", None, 20),
        )
        .await
        .unwrap();
    assert_eq!(out.state, GrantState::NeedsConsent);
    assert_eq!(event, None);

    signed_in(&store, "ora").await;
    let mut update = state_update(GrantState::Failing, "tokens dropped", None, 10);
    update.drop_tokens = true;
    let (out, event) = store.update_grant_state("ora", None, update).await.unwrap();
    assert_eq!(out.state, GrantState::NeedsConsent);
    assert_eq!(out.refresh_token, None);
    assert_eq!(out.reason.as_deref(), Some("tokens dropped"));
    let event = event.expect("active to needs_consent");
    assert_eq!(
        (event.from, event.to),
        (Some(GrantState::Active), GrantState::NeedsConsent)
    );

    // With a token held, an operator may set a revoked grant active again.
    signed_in(&store, "pia").await;
    store
        .update_grant_state(
            "pia",
            None,
            state_update(GrantState::Revoked, "by mistake", None, 10),
        )
        .await
        .unwrap();
    let (out, event) = store
        .update_grant_state(
            "pia",
            None,
            state_update(GrantState::Active, "restored by an operator", None, 20),
        )
        .await
        .unwrap();
    assert_eq!(out.state, GrantState::Active);
    assert!(event.is_some());
}

pub async fn unknown_user_is_not_found(store: SharedStore) {
    signed_in(&store, "quin").await;
    let err = store
        .record_refresh("ghost", 1, refreshed("ghost-a", 10))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    for expected in [None, Some(1)] {
        let err = store
            .update_grant_state(
                "ghost",
                expected,
                state_update(GrantState::Revoked, "RISC", None, 10),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound), "{err:?}");
    }
    assert!(store.user("ghost").await.unwrap().is_none());
    assert!(store.grant_events("ghost").await.unwrap().is_empty());
    assert!(!store.delete_user("ghost").await.unwrap());
    assert_eq!(store.count_users().await.unwrap(), 1);
}

pub async fn list_users_pages_by_sub(store: SharedStore) {
    const USERS: usize = 25;
    assert_eq!(store.count_users().await.unwrap(), 0);
    let empty = store.list_users(None, 10).await.unwrap();
    assert!(empty.users.is_empty());
    assert_eq!(empty.next, None);

    // Created out of order, so that the order of the pages is the store's doing.
    let mut subs: Vec<String> = (0..USERS)
        .map(|i| format!("user-{:02}", (i * 7) % USERS))
        .collect();
    for (i, sub) in subs.iter().enumerate() {
        let token = (i % 3 != 0).then(|| refresh(sub));
        store
            .record_sign_in(sign_in(sub, OPENID_EMAIL, token, t(i as i64)))
            .await
            .unwrap();
    }
    subs.sort();
    assert_eq!(store.count_users().await.unwrap(), USERS as u64);

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_users(after.as_deref(), 10).await.unwrap();
        sizes.push(page.users.len());
        for (user, grant) in &page.users {
            assert_eq!(user.profile.sub, grant.sub);
            // Each row is what the user's own read answers.
            let (u, g) = store.user(&user.profile.sub).await.unwrap().unwrap();
            assert_eq!((&u, &g), (user, grant));
            seen.push(user.profile.sub.clone());
        }
        match page.next {
            Some(next) => {
                assert_eq!(Some(&next), seen.last(), "next is the page's last sub");
                after = Some(next);
            }
            None => break,
        }
    }
    assert_eq!(sizes, [10, 10, 5]);
    assert_eq!(seen, subs, "every user once, in order");
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), USERS);

    // A page that ends exactly at the last user says so.
    let exact = store.list_users(Some(&subs[14]), 10).await.unwrap();
    assert_eq!(exact.users.len(), 10);
    assert_eq!(exact.next, None);
    let all = store.list_users(None, USERS as u32).await.unwrap();
    assert_eq!(all.users.len(), USERS);
    assert_eq!(all.next, None);

    // `after` need not be a user; past the end is an empty last page.
    let between = store.list_users(Some("user-04x"), 3).await.unwrap();
    let firsts: Vec<_> = between
        .users
        .iter()
        .map(|(u, _)| u.profile.sub.as_str())
        .collect();
    assert_eq!(firsts, ["user-05", "user-06", "user-07"]);
    assert_eq!(between.next.as_deref(), Some("user-07"));
    let past = store.list_users(Some("zzz"), 10).await.unwrap();
    assert!(past.users.is_empty());
    assert_eq!(past.next, None);
    let last = store.list_users(Some(&subs[USERS - 1]), 10).await.unwrap();
    assert!(last.users.is_empty());
    assert_eq!(last.next, None);
}

pub async fn list_users_limits(store: SharedStore) {
    let users = DEFAULT_PAGE as usize + 5;
    for i in 0..users {
        store
            .record_sign_in(sign_in(&format!("u{i:04}"), OPENID_EMAIL, None, t(0)))
            .await
            .unwrap();
    }
    // 0 asks for the default page.
    let page = store.list_users(None, 0).await.unwrap();
    assert_eq!(page.users.len(), DEFAULT_PAGE as usize);
    assert_eq!(
        page.next.as_deref(),
        Some(format!("u{:04}", DEFAULT_PAGE - 1).as_str())
    );
    let page = store.list_users(None, 1).await.unwrap();
    assert_eq!(page.users.len(), 1);
    assert_eq!(page.next.as_deref(), Some("u0000"));
    let page = store.list_users(None, u32::MAX).await.unwrap();
    assert_eq!(page.users.len(), users);
    assert_eq!(page.next, None);
}

pub async fn delete_user_cascades_but_keeps_audit(store: SharedStore) {
    let held = signed_in(&store, "rex").await;
    signed_in(&store, "roy").await;
    store
        .update_grant_state(
            "rex",
            Some(held.version),
            state_update(GrantState::Failing, "503", None, 5),
        )
        .await
        .unwrap();
    for (id, sub) in [("rex-1", "rex"), ("rex-2", "rex"), ("roy-1", "roy")] {
        store
            .create_session(SessionRecord {
                id_hash: id.into(),
                sub: sub.into(),
                created_at: t(0),
                expires_at: t(3600),
            })
            .await
            .unwrap();
    }
    let audited = |sub: &str, action: &str| AuditRecord {
        id: 0,
        at: t(7),
        actor: "key_ops".into(),
        sub: Some(sub.into()),
        action: action.into(),
        detail: "openid email".into(),
        outcome: "ok".into(),
        times: 1,
        last_at: t(7),
    };
    store
        .append_audit(vec![audited("rex", "token"), audited("roy", "token")])
        .await
        .unwrap();
    store
        .append_audit(vec![audited("rex", "delete_user")])
        .await
        .unwrap();
    assert_eq!(store.grant_events("rex").await.unwrap().len(), 2);

    assert!(store.delete_user("rex").await.unwrap());
    assert!(store.user("rex").await.unwrap().is_none());
    assert!(store.grant("rex").await.unwrap().is_none());
    assert!(store.grant_events("rex").await.unwrap().is_empty());
    for id in ["rex-1", "rex-2"] {
        assert_eq!(store.session(id, t(1)).await.unwrap(), None);
        assert!(!store.delete_session(id).await.unwrap());
    }
    let due = store.due_events(t(100), 100).await.unwrap();
    assert!(due.iter().all(|p| p.event.sub != "rex"), "{due:?}");
    // History stays.
    let kept = store
        .audit(AuditFilter {
            sub: Some("rex".into()),
            limit: 10,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        kept.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
        ["delete_user", "token"]
    );
    assert!(!store.delete_user("rex").await.unwrap());
    assert_eq!(store.count_users().await.unwrap(), 1);

    // The other user is untouched.
    assert!(store.user("roy").await.unwrap().is_some());
    assert!(store.session("roy-1", t(1)).await.unwrap().is_some());
    assert_eq!(store.grant_events("roy").await.unwrap().len(), 1);

    // The sub is free again: a new sign-in starts a new user.
    let again = store
        .record_sign_in(sign_in("rex", OPENID_EMAIL, None, t(50)))
        .await
        .unwrap();
    assert!(again.created);
    assert_eq!(again.grant.version, 1);
    assert_eq!(again.user.created_at, t(50));
}
