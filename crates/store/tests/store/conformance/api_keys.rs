//! API keys of app services: kept by hash, found revoked or not, listed oldest first, revoked
//! once.

use super::t;
use grantkeeper_store::{ApiKeyRecord, SharedStore, StoreError};

fn key(id: &str, created_at: i64, scopes: &[&str]) -> ApiKeyRecord {
    ApiKeyRecord {
        id: id.to_owned(),
        name: format!("service {id}"),
        // The store keeps whatever hash it is given; a readable one keeps the checks clear.
        hash: format!("sha256-of-{id}"),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        created_at: t(created_at),
        revoked_at: None,
    }
}

pub async fn api_key_lifecycle(store: SharedStore) {
    let k = key("key_3f9a", 0, &["token", "proxy", "users:read"]);
    store.create_api_key(k.clone()).await.unwrap();
    assert_eq!(
        store.api_key_by_hash(&k.hash).await.unwrap(),
        Some(k.clone())
    );
    assert_eq!(
        store.api_key_by_hash("sha256-of-other").await.unwrap(),
        None
    );

    assert!(store.revoke_api_key("key_3f9a", t(100)).await.unwrap());
    // Revoking again changes nothing: the first time stays.
    assert!(!store.revoke_api_key("key_3f9a", t(200)).await.unwrap());
    assert!(!store.revoke_api_key("key_none", t(200)).await.unwrap());

    let revoked = ApiKeyRecord {
        revoked_at: Some(t(100)),
        ..k.clone()
    };
    // Still found by hash, so that the caller can tell a revoked key from a wrong one.
    assert_eq!(
        store.api_key_by_hash(&k.hash).await.unwrap(),
        Some(revoked.clone())
    );
    assert_eq!(store.list_api_keys().await.unwrap(), vec![revoked]);

    // A key without capabilities is kept as such.
    let bare = key("key_bare", 5, &[]);
    store.create_api_key(bare.clone()).await.unwrap();
    assert_eq!(store.api_key_by_hash(&bare.hash).await.unwrap(), Some(bare));
}

pub async fn duplicate_api_key_already_exists(store: SharedStore) {
    let first = key("key_a", 0, &["token"]);
    store.create_api_key(first.clone()).await.unwrap();

    let same_id = ApiKeyRecord {
        hash: "f".repeat(64),
        ..key("key_a", 10, &["proxy"])
    };
    let err = store.create_api_key(same_id.clone()).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists), "{err:?}");
    assert_eq!(store.api_key_by_hash(&same_id.hash).await.unwrap(), None);

    let same_hash = ApiKeyRecord {
        hash: first.hash.clone(),
        ..key("key_b", 10, &["proxy"])
    };
    let err = store.create_api_key(same_hash).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists), "{err:?}");

    assert_eq!(store.list_api_keys().await.unwrap(), vec![first]);
}

pub async fn api_keys_list_oldest_first(store: SharedStore) {
    assert!(store.list_api_keys().await.unwrap().is_empty());
    let keys = [
        key("key_c", 30, &["users:write"]),
        key("key_a", 10, &["token"]),
        key("key_b", 20, &["proxy", "token"]),
        // Same second as key_b: the one created first is listed first.
        key("key_bb", 20, &["users:read"]),
    ];
    for k in &keys {
        store.create_api_key(k.clone()).await.unwrap();
    }
    let listed: Vec<String> = store
        .list_api_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(listed, ["key_a", "key_b", "key_bb", "key_c"]);
    let b = store.api_key_by_hash(&keys[2].hash).await.unwrap().unwrap();
    assert_eq!(
        b.scopes,
        ["proxy", "token"],
        "capabilities keep their order"
    );
}
