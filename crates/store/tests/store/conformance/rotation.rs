//! Rotation of the vault's data keys: sealed values are counted by the key id in their header,
//! a new key becomes the active one only over the key its caller saw active, re-seals skip a
//! value replaced since it was read and move no fence, a key is retired only when nothing
//! names it, and no new value is written under a key that is not the active one.
//!
//! Values under old keys are written while the store has no key yet (nothing is checked
//! then): a store with an active key takes new values under that key only.

use super::{OPENID_EMAIL, profile, t};
use grantkeeper_core::{GrantState, Scopes};
use grantkeeper_store::{
    DataKeyRecord, ExportKind, PendingRevocation, RefreshSuccess, Reseal, RevocationTokenKind,
    SealedAccessToken, SealedColumn, SealedRefreshToken, SealedValue, SharedStore, SignIn,
    StateUpdate, StoreError, TokenFingerprint,
};
use std::collections::BTreeMap;

/// Bytes shaped as the vault seals them under key `key` (version 1, key id big-endian), with
/// bytes no text encoding would keep.
fn sealed(key: u32, tag: &str) -> Vec<u8> {
    let mut bytes = vec![1];
    bytes.extend_from_slice(&key.to_be_bytes());
    bytes.extend_from_slice(&[0x00, 0xff, 0xfe]);
    bytes.extend_from_slice(tag.as_bytes());
    bytes
}

fn refresh_token(sealed: Vec<u8>, tag: &str) -> SealedRefreshToken {
    SealedRefreshToken {
        sealed,
        fingerprint: TokenFingerprint {
            hash: format!("hash-of-{tag}"),
            prefix_hash: format!("prefix-of-{tag}"),
        },
    }
}

/// A user whose refresh token is under key `rt` and access token under key `at` (none when
/// None).
async fn user(store: &SharedStore, sub: &str, rt: u32, at: Option<u32>) {
    store
        .record_sign_in(SignIn {
            profile: profile(sub),
            granted_scopes: Scopes::parse(OPENID_EMAIL),
            refresh_token: Some(refresh_token(sealed(rt, &format!("rt-{sub}")), sub)),
            access_token: at.map(|key| SealedAccessToken {
                sealed: sealed(key, &format!("at-{sub}")),
                expires_at: t(3600),
            }),
            at: t(0),
            session: None,
        })
        .await
        .unwrap();
}

async fn queued(store: &SharedStore, id: &str, key: u32) {
    store
        .enqueue_revocation(PendingRevocation {
            id: id.to_owned(),
            sub: "gone".to_owned(),
            token: sealed(key, id),
            token_kind: RevocationTokenKind::Refresh,
            created_at: t(0),
            attempts: 0,
            next_attempt_at: t(0),
            last_error: None,
        })
        .await
        .unwrap();
}

fn key(id: u32, at: i64) -> DataKeyRecord {
    DataKeyRecord {
        id,
        wrapped: vec![0, 0, 0, 0, id as u8, 0xff, 0x00],
        created_at: t(at),
        active: false,
        wrapped_by: Some("local".into()),
    }
}

/// Key 1 active, then key 2 made active over it.
async fn two_keys(store: &SharedStore) {
    store.ensure_data_key(key(1, 0)).await.unwrap();
    store.rotate_data_key(key(2, 10), 1).await.unwrap();
}

pub async fn sealed_values_are_counted_by_key_id(store: SharedStore) {
    user(&store, "ada", 1, Some(1)).await;
    user(&store, "bo", 1, Some(2)).await;
    user(&store, "cy", 2, None).await;
    user(&store, "di", 0x0102_0304, Some(2)).await;
    queued(&store, "rev_1", 2).await;
    two_keys(&store).await;
    // A value that is not of the vault's format.
    store
        .record_refresh(
            "ada",
            1,
            RefreshSuccess {
                access_token: SealedAccessToken {
                    sealed: vec![9, 9],
                    expires_at: t(7200),
                },
                refresh_token: None,
                scopes: None,
                at: t(5),
            },
        )
        .await
        .unwrap();

    let counts = store.count_sealed().await.unwrap();
    assert_eq!(
        counts.by_key,
        BTreeMap::from([(1, 2), (2, 4), (0x0102_0304, 1)])
    );
    assert_eq!(counts.malformed, 1);
    assert_eq!(counts.outside(2), 4);

    let statuses = store.data_key_statuses().await.unwrap();
    let shown: Vec<_> = statuses
        .iter()
        .map(|k| (k.id, k.active, k.retired_at, k.sealed_values, k.created_at))
        .collect();
    assert_eq!(
        shown,
        [(1, false, None, 2, t(0)), (2, true, None, 4, t(10))]
    );
}

pub async fn a_new_key_becomes_active_only_over_the_key_seen_active(store: SharedStore) {
    two_keys(&store).await;
    let keys = store.data_keys().await.unwrap();
    assert_eq!(
        keys.iter().map(|k| (k.id, k.active)).collect::<Vec<_>>(),
        [(1, false), (2, true)]
    );
    assert_eq!(keys[1].wrapped, key(2, 10).wrapped);
    assert_eq!(keys[1].created_at, t(10));

    // Another rotation made key 2 active since this caller looked: nothing changes.
    assert!(matches!(
        store.rotate_data_key(key(3, 20), 1).await,
        Err(StoreError::Conflict)
    ));
    // An id already taken.
    assert!(matches!(
        store.rotate_data_key(key(2, 20), 2).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(store.data_keys().await.unwrap(), keys);

    let keys = store.rotate_data_key(key(3, 20), 2).await.unwrap();
    assert_eq!(
        keys.iter().map(|k| (k.id, k.active)).collect::<Vec<_>>(),
        [(1, false), (2, false), (3, true)]
    );
}

pub async fn concurrent_rotations_have_one_winner(store: SharedStore) {
    rotation_race(&[store.clone(), store]).await;
}

pub async fn concurrent_rotations_across_instances(first: SharedStore, second: SharedStore) {
    rotation_race(&[first, second]).await;
}

async fn rotation_race(stores: &[SharedStore]) {
    stores[0].ensure_data_key(key(1, 0)).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let store = stores[usize::from(i) % stores.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut candidate = key(2, i64::from(i));
            candidate.wrapped.push(i);
            store.rotate_data_key(candidate, 1).await
        }));
    }
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(keys) => {
                won += 1;
                assert_eq!(keys.len(), 2);
            }
            Err(StoreError::Conflict) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(won, 1);
    for store in stores {
        let keys = store.data_keys().await.unwrap();
        assert_eq!(
            keys.iter().map(|k| (k.id, k.active)).collect::<Vec<_>>(),
            [(1, false), (2, true)]
        );
    }
}

pub async fn values_outside_a_key_are_paged_by_row(store: SharedStore) {
    for (sub, rt) in [("a", 1), ("b", 2), ("c", 1), ("d", 1), ("e", 2)] {
        user(&store, sub, rt, Some(2)).await;
    }
    queued(&store, "rev_b", 1).await;
    queued(&store, "rev_a", 1).await;
    queued(&store, "rev_c", 2).await;
    two_keys(&store).await;

    let rows =
        |values: Vec<SealedValue>| -> Vec<String> { values.into_iter().map(|v| v.row).collect() };
    let first = store
        .sealed_outside(SealedColumn::RefreshToken, 2, None, 2)
        .await
        .unwrap();
    assert_eq!(first[0].sealed, sealed(1, "rt-a"));
    assert_eq!(first[0].column, SealedColumn::RefreshToken);
    assert_eq!(rows(first), ["a", "c"]);
    let rest = store
        .sealed_outside(SealedColumn::RefreshToken, 2, Some("c"), 2)
        .await
        .unwrap();
    assert_eq!(rows(rest), ["d"]);
    assert!(
        store
            .sealed_outside(SealedColumn::AccessToken, 2, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        rows(
            store
                .sealed_outside(SealedColumn::AccessToken, 1, None, 10)
                .await
                .unwrap()
        ),
        ["a", "b", "c", "d", "e"]
    );
    let pending = store
        .sealed_outside(SealedColumn::PendingRevocation, 2, None, 10)
        .await
        .unwrap();
    assert_eq!(pending[0].sealed, sealed(1, "rev_a"));
    assert_eq!(rows(pending), ["rev_a", "rev_b"]);
}

pub async fn a_reseal_skips_a_value_replaced_since_it_was_read(store: SharedStore) {
    for sub in ["a", "b", "c"] {
        user(&store, sub, 1, Some(1)).await;
    }
    queued(&store, "rev_a", 1).await;
    two_keys(&store).await;
    let before: Vec<_> = {
        let mut grants = Vec::new();
        for sub in ["a", "b", "c"] {
            grants.push(store.grant(sub).await.unwrap().unwrap());
        }
        grants
    };
    let read = store
        .sealed_outside(SealedColumn::RefreshToken, 2, None, 10)
        .await
        .unwrap();
    assert_eq!(read.len(), 3);

    // A refresh elsewhere replaces b's refresh token.
    let theirs = sealed(2, "rt-b-new");
    store
        .record_refresh(
            "b",
            before[1].version,
            RefreshSuccess {
                access_token: SealedAccessToken {
                    sealed: sealed(2, "at-b-new"),
                    expires_at: t(7200),
                },
                refresh_token: Some(refresh_token(theirs.clone(), "b-new")),
                scopes: None,
                at: t(30),
            },
        )
        .await
        .unwrap();

    let mut reseals: Vec<Reseal> = read
        .iter()
        .map(|v| Reseal {
            column: v.column,
            row: v.row.clone(),
            from: v.sealed.clone(),
            to: sealed(2, &format!("rt-{}-again", v.row)),
        })
        .collect();
    reseals.push(Reseal {
        column: SealedColumn::PendingRevocation,
        row: "rev_a".to_owned(),
        from: sealed(1, "rev_a"),
        to: sealed(2, "rev_a-again"),
    });
    // A row that is gone.
    reseals.push(Reseal {
        column: SealedColumn::AccessToken,
        row: "nobody".to_owned(),
        from: sealed(1, "at-nobody"),
        to: sealed(2, "at-nobody"),
    });
    assert_eq!(store.reseal(reseals).await.unwrap(), 3);
    assert_eq!(store.reseal(Vec::new()).await.unwrap(), 0);

    let a = store.grant("a").await.unwrap().unwrap();
    assert_eq!(a.refresh_token.unwrap().sealed, sealed(2, "rt-a-again"));
    // A re-seal moves no fence and no time: what the value opens to did not change.
    assert_eq!(a.version, before[0].version);
    assert_eq!(a.updated_at, before[0].updated_at);
    assert_eq!(a.access_token.unwrap().sealed, sealed(1, "at-a"));
    let b = store.grant("b").await.unwrap().unwrap();
    assert_eq!(
        b.refresh_token.unwrap().sealed,
        theirs,
        "the writer's value stays"
    );
    let pending = store
        .sealed_outside(SealedColumn::PendingRevocation, 1, None, 10)
        .await
        .unwrap();
    assert_eq!(pending[0].sealed, sealed(2, "rev_a-again"));

    // The refresh that read the fence before the re-seal still writes.
    store
        .record_refresh(
            "c",
            before[2].version,
            RefreshSuccess {
                access_token: SealedAccessToken {
                    sealed: sealed(2, "at-c-new"),
                    expires_at: t(7200),
                },
                refresh_token: None,
                scopes: None,
                at: t(40),
            },
        )
        .await
        .unwrap();
    let c = store.grant("c").await.unwrap().unwrap();
    assert_eq!(c.refresh_token.unwrap().sealed, sealed(2, "rt-c-again"));
}

pub async fn a_key_is_retired_only_when_it_seals_nothing(store: SharedStore) {
    user(&store, "a", 2, Some(1)).await;
    queued(&store, "rev_a", 1).await;
    two_keys(&store).await;
    let retired = |store: SharedStore| async move {
        store
            .data_key_statuses()
            .await
            .unwrap()
            .iter()
            .map(|k| (k.id, k.retired_at))
            .collect::<Vec<_>>()
    };

    // Still sealing a token, and a queued revocation.
    assert!(!store.retire_data_key(1, t(50)).await.unwrap());
    let at = store
        .grant("a")
        .await
        .unwrap()
        .unwrap()
        .access_token
        .unwrap();
    store
        .reseal(vec![Reseal {
            column: SealedColumn::AccessToken,
            row: "a".to_owned(),
            from: at.sealed,
            to: sealed(2, "at-a"),
        }])
        .await
        .unwrap();
    assert!(!store.retire_data_key(1, t(50)).await.unwrap());
    assert_eq!(retired(store.clone()).await, [(1, None), (2, None)]);
    assert!(store.delete_revocation("rev_a").await.unwrap());

    // The active key, a key that does not exist: never.
    assert!(!store.retire_data_key(2, t(50)).await.unwrap());
    assert!(!store.retire_data_key(9, t(50)).await.unwrap());

    assert!(store.retire_data_key(1, t(60)).await.unwrap());
    assert!(!store.retire_data_key(1, t(70)).await.unwrap(), "once");
    assert_eq!(retired(store.clone()).await, [(1, Some(t(60))), (2, None)]);
    // No vault loads it again; its id stays taken.
    let keys = store.data_keys().await.unwrap();
    assert_eq!(keys.iter().map(|k| k.id).collect::<Vec<_>>(), [2]);
    assert!(matches!(
        store.rotate_data_key(key(1, 80), 2).await,
        Err(StoreError::Conflict)
    ));
    let keys = store.rotate_data_key(key(3, 80), 2).await.unwrap();
    assert_eq!(keys.iter().map(|k| k.id).collect::<Vec<_>>(), [2, 3]);
}

/// An export carries a key's retirement; an export made before keys could be retired (no
/// `retired_at`) imports as keys that are not.
pub async fn a_retired_key_moves_with_an_export(source: SharedStore, target: SharedStore) {
    two_keys(&source).await;
    assert!(source.retire_data_key(1, t(60)).await.unwrap());
    let (keys, next) = source
        .export_page(ExportKind::DataKey, None, 10)
        .await
        .unwrap();
    assert_eq!(next, None);
    assert_eq!(keys[0].row["retired_at"], t(60).unix_timestamp());
    target.import(keys.clone()).await.unwrap();
    assert_eq!(
        target.data_key_statuses().await.unwrap(),
        source.data_key_statuses().await.unwrap()
    );
    assert_eq!(
        target.data_keys().await.unwrap(),
        source.data_keys().await.unwrap()
    );

    let older: Vec<_> = keys
        .into_iter()
        .map(|mut record| {
            record.row.remove("retired_at");
            record
        })
        .collect();
    // Imported again without the column: present already, and left as it is.
    let counts = target.import(older).await.unwrap();
    assert_eq!((counts.inserted, counts.present), (0, 2));
    assert_eq!(
        target.data_key_statuses().await.unwrap()[0].retired_at,
        Some(t(60))
    );
}

pub async fn an_export_without_retirements_imports(source: SharedStore, target: SharedStore) {
    two_keys(&source).await;
    let (keys, _) = source
        .export_page(ExportKind::DataKey, None, 10)
        .await
        .unwrap();
    let older: Vec<_> = keys
        .into_iter()
        .map(|mut record| {
            assert!(record.row.remove("retired_at").is_some());
            record
        })
        .collect();
    let counts = target.import(older).await.unwrap();
    assert_eq!((counts.inserted, counts.present), (2, 0));
    assert_eq!(
        target.data_keys().await.unwrap(),
        source.data_keys().await.unwrap()
    );
    assert!(
        target
            .data_key_statuses()
            .await
            .unwrap()
            .iter()
            .all(|k| k.retired_at.is_none())
    );
}

/// Moving a key to another master key replaces its wrapping and its source only where it is
/// still wrapped as read; the key itself, and what it seals, stay.
pub async fn a_rewrap_is_fenced_by_the_wrapping_read(store: SharedStore) {
    two_keys(&store).await;
    user(&store, "ada", 2, Some(2)).await;
    assert!(store.retire_data_key(1, t(60)).await.unwrap());
    let before = store.count_sealed().await.unwrap();
    let kms = "kms:projects/p/locations/global/keyRings/r/cryptoKeys/k";

    let old = key(2, 10).wrapped;
    assert!(
        store
            .rewrap_data_key(2, &old, &[7, 7, 7], kms)
            .await
            .unwrap()
    );
    // A second rewrap from the same bytes read finds them replaced and writes nothing.
    assert!(
        !store
            .rewrap_data_key(2, &old, &[8, 8, 8], "local")
            .await
            .unwrap()
    );
    // Nor does one of a key that does not exist.
    assert!(!store.rewrap_data_key(9, &old, &[8], kms).await.unwrap());
    let keys = store.data_keys().await.unwrap();
    let rewrapped = keys.iter().find(|k| k.id == 2).unwrap();
    assert_eq!(rewrapped.wrapped, [7, 7, 7]);
    assert_eq!(rewrapped.wrapped_by.as_deref(), Some(kms));
    assert!(rewrapped.active);
    assert_eq!(rewrapped.created_at, t(10));
    let statuses = store.data_key_statuses().await.unwrap();
    let shown: Vec<_> = statuses
        .iter()
        .map(|k| (k.id, k.wrapped_by.as_deref()))
        .collect();
    assert_eq!(shown, [(1, Some("local")), (2, Some(kms))]);
    // A retired key is rewrapped too (it stays retired).
    assert!(
        store
            .rewrap_data_key(1, &key(1, 0).wrapped, &[6], kms)
            .await
            .unwrap()
    );
    assert_eq!(
        store.data_key_statuses().await.unwrap()[0].retired_at,
        Some(t(60))
    );
    assert_eq!(store.count_sealed().await.unwrap(), before);
}

/// An export made before sources were recorded (no `wrapped_by`) imports as keys of no
/// recorded source: the local master key wrapped every one of them.
pub async fn an_export_without_sources_imports_as_local_keys(
    source: SharedStore,
    target: SharedStore,
) {
    two_keys(&source).await;
    let (keys, _) = source
        .export_page(ExportKind::DataKey, None, 10)
        .await
        .unwrap();
    assert_eq!(keys[0].row["wrapped_by"], "local");
    let older: Vec<_> = keys
        .into_iter()
        .map(|mut record| {
            assert!(record.row.remove("wrapped_by").is_some());
            record
        })
        .collect();
    let counts = target.import(older).await.unwrap();
    assert_eq!((counts.inserted, counts.present), (2, 0));
    let imported = target.data_keys().await.unwrap();
    assert_eq!(imported.len(), 2);
    assert!(imported.iter().all(|k| k.wrapped_by.is_none()));
    assert_eq!(imported[1].wrapped, key(2, 10).wrapped);
}

/// Whatever writes it (a sign-in, a refresh, a queued revocation, a re-seal), a new value under
/// a key other than the active one is refused and nothing of the write is kept; values under
/// the active key, values not of the vault's format, and writes that leave an old value as it
/// is go through.
pub async fn a_value_under_a_key_that_is_not_active_is_refused(store: SharedStore) {
    user(&store, "old", 1, Some(1)).await;
    two_keys(&store).await;

    // A first sign-in: neither the user nor the grant is written.
    let mut sign_in = SignIn {
        profile: profile("new"),
        granted_scopes: Scopes::parse(OPENID_EMAIL),
        refresh_token: Some(refresh_token(sealed(1, "rt-new"), "new")),
        access_token: Some(SealedAccessToken {
            sealed: sealed(2, "at-new"),
            expires_at: t(3600),
        }),
        at: t(20),
        session: None,
    };
    assert!(refused(store.record_sign_in(sign_in.clone()).await));
    assert!(store.user("new").await.unwrap().is_none());
    // Another sign-in of a known user: the profile is not replaced either.
    let mut again = sign_in.clone();
    again.profile = profile("old");
    again.profile.name = Some("Renamed".into());
    again.refresh_token = None;
    again.access_token = Some(SealedAccessToken {
        sealed: sealed(1, "at-old-2"),
        expires_at: t(3600),
    });
    assert!(refused(store.record_sign_in(again).await));
    let (old_user, old) = store.user("old").await.unwrap().unwrap();
    assert_eq!(old_user.profile, profile("old"));
    assert_eq!(
        old.refresh_token.clone().unwrap().sealed,
        sealed(1, "rt-old")
    );

    // A refresh, fenced or under a lease.
    let refresh = |rt: u32, at: u32| RefreshSuccess {
        access_token: SealedAccessToken {
            sealed: sealed(at, "at-refreshed"),
            expires_at: t(7200),
        },
        refresh_token: Some(refresh_token(sealed(rt, "rt-refreshed"), "refreshed")),
        scopes: None,
        at: t(30),
    };
    assert!(refused(
        store
            .record_refresh("old", old.version, refresh(2, 1))
            .await
    ));
    assert!(refused(
        store
            .record_refresh("old", old.version, refresh(1, 2))
            .await
    ));
    assert!(
        store
            .try_lease_refresh("old", "me", t(100), t(30))
            .await
            .unwrap()
    );
    assert!(refused(
        store
            .record_refresh_releasing("old", old.version, refresh(1, 1), "me")
            .await
    ));
    assert_eq!(store.grant("old").await.unwrap().unwrap(), old);

    // A queued revocation, alone or with its grant's state change.
    let entry = |key: u32| PendingRevocation {
        id: format!("rev_{key}"),
        sub: "old".to_owned(),
        token: sealed(key, "rev"),
        token_kind: RevocationTokenKind::Refresh,
        created_at: t(40),
        attempts: 0,
        next_attempt_at: t(40),
        last_error: None,
    };
    assert!(refused(store.enqueue_revocation(entry(1)).await));
    let revoke = StateUpdate {
        state: GrantState::Revoked,
        reason: "test".to_owned(),
        error: None,
        drop_tokens: true,
        at: t(40),
    };
    assert!(refused(
        store
            .enqueue_revocation_with_state(entry(1), revoke.clone())
            .await
    ));
    assert_eq!(store.grant("old").await.unwrap().unwrap(), old);
    assert!(
        store
            .sealed_outside(SealedColumn::PendingRevocation, 9, None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // A re-seal to anything but the active key.
    let held = old.refresh_token.clone().unwrap().sealed;
    assert!(refused(
        store
            .reseal(vec![Reseal {
                column: SealedColumn::RefreshToken,
                row: "old".to_owned(),
                from: held.clone(),
                to: sealed(1, "rt-old-again"),
            }])
            .await
    ));

    // What is under the active key goes through, and so does a change that keeps a value
    // sealed under an old key as it is.
    let (changed, _) = store
        .update_grant_state(
            "old",
            Some(old.version),
            StateUpdate {
                state: GrantState::Failing,
                reason: "test".to_owned(),
                error: Some("upstream 503".to_owned()),
                drop_tokens: false,
                at: t(50),
            },
        )
        .await
        .unwrap();
    assert_eq!(changed.refresh_token.unwrap().sealed, held);
    store
        .record_refresh("old", changed.version, refresh(2, 2))
        .await
        .unwrap();
    sign_in.refresh_token = Some(refresh_token(sealed(2, "rt-new"), "new"));
    store.record_sign_in(sign_in).await.unwrap();
    store.enqueue_revocation(entry(2)).await.unwrap();
    // Not of the vault's format: the store cannot tell its key, and lets it be.
    store
        .record_refresh(
            "new",
            1,
            RefreshSuccess {
                access_token: SealedAccessToken {
                    sealed: vec![9, 9],
                    expires_at: t(7200),
                },
                refresh_token: None,
                scopes: None,
                at: t(60),
            },
        )
        .await
        .unwrap();
    assert_eq!(store.count_sealed().await.unwrap().outside(2), 1);
    // A revocation of the grant that drops its tokens writes no new value.
    store.update_grant_state("new", None, revoke).await.unwrap();
}

/// An import writes values as the export holds them, under any key the export carries (a
/// rotation may have been under way); afterwards the target refuses new values under a key
/// that is not its active one, as any store does.
/// True when the write was refused for the key its value is sealed under.
fn refused<T>(written: Result<T, StoreError>) -> bool {
    matches!(written, Err(StoreError::InactiveKey))
}

pub async fn an_import_keeps_values_under_keys_not_yet_retired(
    source: SharedStore,
    target: SharedStore,
) {
    user(&source, "a", 1, Some(2)).await;
    user(&source, "b", 2, Some(1)).await;
    queued(&source, "rev_a", 1).await;
    two_keys(&source).await;
    let mut records = Vec::new();
    for kind in ExportKind::ALL {
        let (page, next) = source.export_page(kind, None, 100).await.unwrap();
        assert_eq!(next, None);
        records.extend(page);
    }
    target.import(records).await.unwrap();
    assert_eq!(
        target.count_sealed().await.unwrap(),
        source.count_sealed().await.unwrap()
    );
    assert_eq!(target.count_sealed().await.unwrap().under(1), 3);
    let grant = target.grant("b").await.unwrap().unwrap();
    assert!(matches!(
        target
            .record_refresh(
                "b",
                grant.version,
                RefreshSuccess {
                    access_token: SealedAccessToken {
                        sealed: sealed(1, "at-b-new"),
                        expires_at: t(7200),
                    },
                    refresh_token: None,
                    scopes: None,
                    at: t(30),
                },
            )
            .await,
        Err(StoreError::InactiveKey)
    ));
}
