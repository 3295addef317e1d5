//! Rotation of the vault's data keys: sealed values are counted by the key id in their header,
//! a new key becomes the active one only over the key its caller saw active, re-seals skip a
//! value replaced since it was read and move no fence, and a key is retired only when nothing
//! names it.

use super::{OPENID_EMAIL, profile, t};
use grantkeeper_core::Scopes;
use grantkeeper_store::{
    DataKeyRecord, ExportKind, PendingRevocation, RefreshSuccess, Reseal, RevocationTokenKind,
    SealedAccessToken, SealedColumn, SealedRefreshToken, SealedValue, SharedStore, SignIn,
    StoreError, TokenFingerprint,
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
    two_keys(&store).await;
    user(&store, "ada", 1, Some(1)).await;
    user(&store, "bo", 1, Some(2)).await;
    user(&store, "cy", 2, None).await;
    user(&store, "di", 0x0102_0304, Some(2)).await;
    queued(&store, "rev_1", 2).await;
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
    two_keys(&store).await;
    for (sub, rt) in [("a", 1), ("b", 2), ("c", 1), ("d", 1), ("e", 2)] {
        user(&store, sub, rt, Some(2)).await;
    }
    queued(&store, "rev_b", 1).await;
    queued(&store, "rev_a", 1).await;
    queued(&store, "rev_c", 2).await;

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
    two_keys(&store).await;
    for sub in ["a", "b", "c"] {
        user(&store, sub, 1, Some(1)).await;
    }
    queued(&store, "rev_a", 1).await;
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

    // A refresh elsewhere replaces b's refresh token (under the old key: it has not reloaded).
    let theirs = sealed(1, "rt-b-new");
    store
        .record_refresh(
            "b",
            before[1].version,
            RefreshSuccess {
                access_token: SealedAccessToken {
                    sealed: sealed(1, "at-b-new"),
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
    two_keys(&store).await;
    user(&store, "a", 2, Some(1)).await;
    queued(&store, "rev_a", 1).await;
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
