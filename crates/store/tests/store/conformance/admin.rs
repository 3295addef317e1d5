//! The admin console's store: operators' sessions (found with their API key until they expire,
//! gone with the key) and the user search (email substring ignoring ASCII case, sub prefix,
//! state, keyset pages).

use super::{OPENID_EMAIL, profile, refresh, sign_in, signed_in, state_update, t};
use grantkeeper_core::GrantState;
use grantkeeper_store::{
    AdminSessionRecord, ApiKeyRecord, SharedStore, SignIn, StoreError, UserSearch,
};

fn key(id: &str) -> ApiKeyRecord {
    ApiKeyRecord {
        id: id.to_owned(),
        name: format!("operator {id}"),
        hash: format!("sha256-of-{id}"),
        scopes: vec!["users:read".to_owned(), "users:write".to_owned()],
        created_at: t(0),
        revoked_at: None,
    }
}

fn session(id_hash: &str, key_id: &str, expires_at: i64) -> AdminSessionRecord {
    AdminSessionRecord {
        id_hash: id_hash.to_owned(),
        key_id: key_id.to_owned(),
        created_at: t(1),
        expires_at: t(expires_at),
    }
}

pub async fn admin_session_lifecycle(store: SharedStore) {
    let k = key("key_ops");
    store.create_api_key(k.clone()).await.unwrap();
    let s = session("admin-hash-1", "key_ops", 3600);
    store.create_admin_session(s.clone()).await.unwrap();

    assert_eq!(
        store.admin_session("admin-hash-1", t(10)).await.unwrap(),
        Some((s.clone(), k.clone()))
    );
    assert_eq!(
        store.admin_session("admin-hash-2", t(10)).await.unwrap(),
        None
    );
    // Expiry is exclusive.
    assert!(
        store
            .admin_session("admin-hash-1", t(3599))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        store.admin_session("admin-hash-1", t(3600)).await.unwrap(),
        None
    );

    // A revoked key still comes with its session: the caller sees it revoked.
    assert!(store.revoke_api_key("key_ops", t(20)).await.unwrap());
    let (_, held) = store
        .admin_session("admin-hash-1", t(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.revoked_at, Some(t(20)));

    assert!(store.delete_admin_session("admin-hash-1").await.unwrap());
    assert!(!store.delete_admin_session("admin-hash-1").await.unwrap());
    assert_eq!(
        store.admin_session("admin-hash-1", t(30)).await.unwrap(),
        None
    );
}

pub async fn admin_session_of_unknown_key_is_not_found(store: SharedStore) {
    let err = store
        .create_admin_session(session("admin-x", "key_ghost", 100))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    assert_eq!(store.admin_session("admin-x", t(0)).await.unwrap(), None);
}

pub async fn duplicate_admin_session_already_exists(store: SharedStore) {
    store.create_api_key(key("key_a")).await.unwrap();
    store
        .create_admin_session(session("admin-d", "key_a", 100))
        .await
        .unwrap();
    let err = store
        .create_admin_session(session("admin-d", "key_a", 200))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists), "{err:?}");
    let (kept, _) = store.admin_session("admin-d", t(0)).await.unwrap().unwrap();
    assert_eq!(kept.expires_at, t(100));
}

pub async fn purge_expired_admin_sessions(store: SharedStore) {
    store.create_api_key(key("key_p")).await.unwrap();
    for (id, expires) in [("p-10", 10), ("p-20", 20), ("p-30", 30)] {
        store
            .create_admin_session(session(id, "key_p", expires))
            .await
            .unwrap();
    }
    assert_eq!(store.purge_expired_admin_sessions(t(5)).await.unwrap(), 0);
    assert_eq!(store.purge_expired_admin_sessions(t(20)).await.unwrap(), 2);
    assert_eq!(store.purge_expired_admin_sessions(t(20)).await.unwrap(), 0);
    assert!(store.admin_session("p-30", t(20)).await.unwrap().is_some());
    assert!(!store.delete_admin_session("p-10").await.unwrap());
}

/// A user with this sub and email, signed in with a refresh token (`active`).
async fn user(store: &SharedStore, sub: &str, email: &str) {
    let mut s: SignIn = sign_in(sub, OPENID_EMAIL, Some(refresh(sub)), t(0));
    s.profile = grantkeeper_core::UserProfile {
        email: Some(email.to_owned()),
        ..profile(sub)
    };
    store.record_sign_in(s).await.unwrap();
}

fn text(text: &str) -> UserSearch {
    UserSearch {
        text: Some(text.to_owned()),
        ..UserSearch::default()
    }
}

async fn subs(store: &SharedStore, search: UserSearch) -> Vec<String> {
    store
        .search_users(&search)
        .await
        .unwrap()
        .users
        .into_iter()
        .map(|(user, _)| user.profile.sub)
        .collect()
}

pub async fn search_users_by_email_ignoring_ascii_case(store: SharedStore) {
    user(&store, "101", "Alice.Smith@Example.com").await;
    user(&store, "102", "bob@example.com").await;
    user(&store, "103", "ALICIA@corp.example").await;
    user(&store, "104", "Émile@example.com").await;

    assert_eq!(subs(&store, text("alice")).await, ["101"]);
    assert_eq!(subs(&store, text("ALI")).await, ["101", "103"]);
    assert_eq!(
        subs(&store, text("EXAMPLE.COM")).await,
        ["101", "102", "104"]
    );
    assert_eq!(subs(&store, text("corp.")).await, ["103"]);
    // Non-ASCII letters are matched as they are, on both backends.
    assert_eq!(subs(&store, text("Émile")).await, ["104"]);
    assert_eq!(subs(&store, text("émile")).await, Vec::<String>::new());
    assert_eq!(subs(&store, text("nobody")).await, Vec::<String>::new());
}

pub async fn search_users_by_sub_prefix(store: SharedStore) {
    user(&store, "Ab12", "one@example.com").await;
    user(&store, "ab12", "two@example.com").await;
    user(&store, "ab34", "three@example.com").await;
    user(&store, "xab", "four@example.com").await;

    // A prefix, exactly (case matters for subs), not a substring.
    assert_eq!(subs(&store, text("ab")).await, ["ab12", "ab34"]);
    assert_eq!(subs(&store, text("Ab")).await, ["Ab12"]);
    assert_eq!(subs(&store, text("ab12")).await, ["ab12"]);
    // The email or the sub: "two" is in one email only.
    assert_eq!(subs(&store, text("two")).await, ["ab12"]);
}

pub async fn search_text_has_no_wildcards(store: SharedStore) {
    user(&store, "u1", "a_b@example.com").await;
    user(&store, "u2", "axb@example.com").await;
    user(&store, "u3", "100%@example.com").await;
    user(&store, "u4", "back\\slash@example.com").await;
    user(&store, "u_5", "five@example.com").await;

    assert_eq!(subs(&store, text("a_b")).await, ["u1"]);
    assert_eq!(subs(&store, text("0%@")).await, ["u3"]);
    assert_eq!(subs(&store, text("%")).await, ["u3"]);
    assert_eq!(subs(&store, text("k\\s")).await, ["u4"]);
    // A sub prefix with an underscore is literal too.
    assert_eq!(subs(&store, text("u_")).await, ["u_5"]);
}

pub async fn search_users_by_state(store: SharedStore) {
    for sub in ["s1", "s2", "s3", "s4"] {
        signed_in(&store, sub).await;
    }
    // A user who never gave a refresh token needs consent.
    store
        .record_sign_in(sign_in("s5", OPENID_EMAIL, None, t(0)))
        .await
        .unwrap();
    store
        .update_grant_state(
            "s2",
            None,
            state_update(GrantState::Failing, "5xx", None, 10),
        )
        .await
        .unwrap();
    store
        .update_grant_state(
            "s3",
            None,
            state_update(GrantState::Revoked, "invalid_grant", None, 10),
        )
        .await
        .unwrap();

    let by_state = |state| UserSearch {
        state: Some(state),
        ..UserSearch::default()
    };
    assert_eq!(
        subs(&store, by_state(GrantState::Active)).await,
        ["s1", "s4"]
    );
    assert_eq!(subs(&store, by_state(GrantState::Failing)).await, ["s2"]);
    assert_eq!(subs(&store, by_state(GrantState::Revoked)).await, ["s3"]);
    assert_eq!(
        subs(&store, by_state(GrantState::NeedsConsent)).await,
        ["s5"]
    );

    // Conditions combine: s4's email is s4@example.com.
    let both = UserSearch {
        text: Some("S4@".to_owned()),
        state: Some(GrantState::Active),
        ..UserSearch::default()
    };
    assert_eq!(subs(&store, both).await, ["s4"]);
    let neither = UserSearch {
        text: Some("s4@".to_owned()),
        state: Some(GrantState::Revoked),
        ..UserSearch::default()
    };
    assert_eq!(subs(&store, neither).await, Vec::<String>::new());

    // The grant comes with its user.
    let page = store
        .search_users(&by_state(GrantState::Revoked))
        .await
        .unwrap();
    let (user, grant) = &page.users[0];
    assert_eq!(user.profile.email.as_deref(), Some("s3@example.com"));
    assert_eq!(grant.state, GrantState::Revoked);
    assert_eq!(grant.reason.as_deref(), Some("invalid_grant"));
}

pub async fn search_users_pages_by_sub(store: SharedStore) {
    for i in 0..7 {
        user(&store, &format!("p{i}"), &format!("match{i}@example.com")).await;
        user(&store, &format!("q{i}"), &format!("other{i}@example.com")).await;
    }
    let mut search = UserSearch {
        text: Some("MATCH".to_owned()),
        limit: 3,
        ..UserSearch::default()
    };
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = store.search_users(&search).await.unwrap();
        pages += 1;
        assert!(page.users.len() <= 3);
        seen.extend(page.users.iter().map(|(u, _)| u.profile.sub.clone()));
        match page.next {
            Some(next) => {
                assert_eq!(Some(&next), seen.last());
                search.after = Some(next);
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ["p0", "p1", "p2", "p3", "p4", "p5", "p6"]);

    // A page that ends exactly at the last match says so.
    let exact = UserSearch {
        text: Some("match".to_owned()),
        after: Some("p3".to_owned()),
        limit: 3,
        ..UserSearch::default()
    };
    let page = store.search_users(&exact).await.unwrap();
    assert_eq!(page.users.len(), 3);
    assert_eq!(page.next, None);
}

pub async fn search_without_conditions_lists_every_user(store: SharedStore) {
    for sub in ["b", "a", "d", "c"] {
        signed_in(&store, sub).await;
    }
    let all = store.search_users(&UserSearch::default()).await.unwrap();
    assert_eq!(all, store.list_users(None, 0).await.unwrap());
    assert_eq!(all.users.len(), 4);
    assert_eq!(all.next, None);
    let after_b = UserSearch {
        after: Some("b".to_owned()),
        limit: 1,
        ..UserSearch::default()
    };
    let page = store.search_users(&after_b).await.unwrap();
    assert_eq!(page, store.list_users(Some("b"), 1).await.unwrap());
    assert_eq!(page.next.as_deref(), Some("c"));
}
