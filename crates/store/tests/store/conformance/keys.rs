//! The vault's data keys: the first start of a deployment inserts exactly one active key,
//! however many instances race to do it.

use super::t;
use grantkeeper_store::{DataKeyRecord, SharedStore};
use std::collections::HashSet;

fn candidate(tag: u8) -> DataKeyRecord {
    DataKeyRecord {
        // Every starting instance proposes the first id; one of them wins.
        id: 1,
        wrapped: vec![0, 0, 0, 0, tag, 0xff, 0x00, tag],
        created_at: t(i64::from(tag)),
        active: false,
        wrapped_by: Some(format!(
            "kms:projects/p/locations/l/keyRings/r/cryptoKeys/k{tag}"
        )),
    }
}

pub async fn ensure_data_key_inserts_once(store: SharedStore) {
    assert!(store.data_keys().await.unwrap().is_empty());

    let keys = store.ensure_data_key(candidate(1)).await.unwrap();
    let expected = vec![DataKeyRecord {
        id: 1,
        wrapped: candidate(1).wrapped,
        created_at: t(1),
        active: true,
        wrapped_by: candidate(1).wrapped_by,
    }];
    assert_eq!(keys, expected);

    // An active key exists: a later candidate is not inserted.
    assert_eq!(store.ensure_data_key(candidate(2)).await.unwrap(), expected);
    assert_eq!(store.data_keys().await.unwrap(), expected);
}

pub async fn concurrent_ensure_data_key_has_one_winner(store: SharedStore) {
    race(&[store.clone(), store]).await;
}

pub async fn ensure_data_key_race_across_instances(first: SharedStore, second: SharedStore) {
    race(&[first, second]).await;
}

async fn race(stores: &[SharedStore]) {
    const TASKS: u8 = 24;
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        let store = stores[usize::from(i) % stores.len()].clone();
        tasks.push(tokio::spawn(async move {
            store.ensure_data_key(candidate(i)).await.unwrap()
        }));
    }
    let mut answers = HashSet::new();
    for task in tasks {
        let keys = task.await.unwrap();
        assert_eq!(keys.len(), 1, "{keys:?}");
        answers.insert(keys[0].wrapped.clone());
        assert_eq!(keys[0].id, 1);
        assert!(keys[0].active);
    }
    // Every caller was told the same winner.
    assert_eq!(answers.len(), 1);
    let winner = answers.into_iter().next().unwrap();
    assert!((0..TASKS).any(|i| candidate(i).wrapped == winner));
    for store in stores {
        let keys = store.data_keys().await.unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].wrapped, winner);
    }
}
