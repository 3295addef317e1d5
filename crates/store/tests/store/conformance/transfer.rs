//! Exports and imports (`TransferStore`): a deployment copied row by row into another store,
//! which then holds the same rows, pages them alike and keeps working.

use super::{OPENID_EMAIL, access, refresh, sign_in, signed_in, state_update, t};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use grantkeeper_core::GrantState;
use grantkeeper_store::{
    ApiKeyRecord, AuditFilter, AuditRecord, DataKeyRecord, ExportKind, ExportRecord, ImportCounts,
    RefreshSuccess, SessionRecord, SharedStore, StateUpdate, StoreError,
};
use serde_json::{Value, json};

/// The table each kind of record is a row of.
pub fn table_of(kind: ExportKind) -> &'static str {
    match kind {
        ExportKind::DataKey => "data_keys",
        ExportKind::User => "users",
        ExportKind::Grant => "grants",
        ExportKind::GrantEvent => "grant_events",
        ExportKind::ApiKey => "api_keys",
        ExportKind::Audit => "audit",
    }
}

/// The columns of the first exported row of `kind`, sorted.
pub async fn exported_columns(store: &SharedStore, kind: ExportKind) -> Vec<String> {
    let (records, _) = store.export_page(kind, None, 1).await.unwrap();
    let mut columns: Vec<String> = records[0].row.keys().cloned().collect();
    columns.sort_unstable();
    columns
}

/// A deployment with a row of every kind, and rows of each shape: tokens held or not, states,
/// delivered and failed events, revoked keys, audit rows with and without a user.
pub async fn populate(store: &SharedStore) {
    store
        .ensure_data_key(DataKeyRecord {
            id: 1,
            wrapped: vec![0, 1, 2, 0xfe, 0xff, 0, 9],
            created_at: t(-100),
            active: true,
        })
        .await
        .unwrap();
    for (i, sub) in ["107", "Ava", "ava", "bo", "zoë", "日本"]
        .iter()
        .enumerate()
    {
        signed_in(store, sub).await;
        store
            .record_refresh(
                sub,
                1,
                RefreshSuccess {
                    access_token: access(&format!("{sub}-2"), t(4000 + i as i64)),
                    refresh_token: None,
                    scopes: None,
                    at: t(400 + i as i64),
                },
            )
            .await
            .unwrap();
    }
    // Signed in without consent: no refresh token.
    store
        .record_sign_in(sign_in("noconsent", OPENID_EMAIL, None, t(5)))
        .await
        .unwrap();
    store
        .update_grant_state(
            "bo",
            None,
            state_update(GrantState::Failing, "upstream 503", Some("HTTP 503"), 500),
        )
        .await
        .unwrap();
    store
        .update_grant_state(
            "ava",
            None,
            StateUpdate {
                drop_tokens: true,
                ..state_update(GrantState::Revoked, "RISC tokens-revoked", None, 600)
            },
        )
        .await
        .unwrap();
    let due = store.due_events(t(10_000), 100).await.unwrap();
    assert!(due.len() >= 8, "{due:?}");
    store.mark_delivered(due[0].event.id, t(700)).await.unwrap();
    store.mark_failed(due[1].event.id, t(900)).await.unwrap();
    for (i, id) in ["key_b", "key_a", "key_c"].iter().enumerate() {
        store
            .create_api_key(ApiKeyRecord {
                id: (*id).into(),
                name: format!("service {id}"),
                hash: format!("{i:064x}"),
                scopes: vec!["token".into(), "users:read".into()],
                created_at: t(10 + i as i64),
                revoked_at: (i == 1).then(|| t(20)),
            })
            .await
            .unwrap();
    }
    let audit = (0..25)
        .map(|i| AuditRecord {
            id: 0,
            at: t(1000 + i),
            actor: "key_a".into(),
            sub: (i % 4 != 0).then(|| "bo".to_owned()),
            action: "token".into(),
            detail: OPENID_EMAIL.into(),
            outcome: if i % 5 == 0 { "upstream_error" } else { "ok" }.into(),
            // Coalesced rows travel with their count and last time.
            times: 1 + (i % 3) as u32 * 20,
            last_at: t(1000 + i + (i % 3) * 7),
        })
        .collect();
    store.append_audit(audit).await.unwrap();
}

/// Every page of every kind, with the position each page returned.
pub async fn export_all(
    store: &SharedStore,
    limit: u32,
) -> Vec<(Vec<ExportRecord>, Option<String>)> {
    let mut pages = Vec::new();
    for kind in ExportKind::ALL {
        let mut after = None;
        loop {
            let (records, next) = store.export_page(kind, after, limit).await.unwrap();
            assert!(records.len() <= limit as usize);
            assert!(records.iter().all(|record| record.kind == kind));
            pages.push((records, next.clone()));
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    pages
}

/// Imports `pages` in order, through their JSON text as a file would carry them.
pub async fn import_all(
    store: &SharedStore,
    pages: &[(Vec<ExportRecord>, Option<String>)],
) -> ImportCounts {
    let mut total = ImportCounts::default();
    for (records, _) in pages {
        let text: Vec<String> = records
            .iter()
            .map(|record| serde_json::to_string(record).unwrap())
            .collect();
        let parsed: Vec<ExportRecord> = text
            .iter()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(&parsed, records);
        let counts = store.import(parsed).await.unwrap();
        total.inserted += counts.inserted;
        total.present += counts.present;
    }
    total
}

fn rows(pages: &[(Vec<ExportRecord>, Option<String>)]) -> u64 {
    pages.iter().map(|(records, _)| records.len() as u64).sum()
}

/// The largest id among the exported rows of one kind.
fn max_id(pages: &[(Vec<ExportRecord>, Option<String>)], kind: ExportKind) -> i64 {
    pages
        .iter()
        .flat_map(|(records, _)| records)
        .filter(|record| record.kind == kind)
        .map(|record| record.row["id"].as_i64().unwrap())
        .max()
        .unwrap()
}

pub async fn export_imports_into_a_fresh_store(source: SharedStore, target: SharedStore) {
    populate(&source).await;
    let pages = export_all(&source, 4).await;
    let total = rows(&pages);
    // 1 data key, 7 users and grants, their events, 3 API keys, 25 audit rows.
    assert!(total > 1 + 14 + 8 + 3 + 25, "{total}");

    let counts = import_all(&target, &pages).await;
    assert_eq!(
        counts,
        ImportCounts {
            inserted: total,
            present: 0
        }
    );
    // The same rows, cut into the same pages at the same positions.
    assert_eq!(export_all(&target, 4).await, pages);
    // What the store's own reads answer is the same too.
    for sub in ["107", "Ava", "ava", "bo", "noconsent", "zoë", "日本"] {
        assert_eq!(
            target.user(sub).await.unwrap(),
            source.user(sub).await.unwrap()
        );
        assert_eq!(
            target.grant_events(sub).await.unwrap(),
            source.grant_events(sub).await.unwrap()
        );
    }
    assert_eq!(
        target.data_keys().await.unwrap(),
        source.data_keys().await.unwrap()
    );
    assert_eq!(
        target.list_api_keys().await.unwrap(),
        source.list_api_keys().await.unwrap()
    );
    let everything = AuditFilter {
        limit: 100,
        ..AuditFilter::default()
    };
    assert_eq!(
        target.audit(everything.clone()).await.unwrap(),
        source.audit(everything).await.unwrap()
    );
    assert_eq!(
        target.due_events(t(10_000), 100).await.unwrap(),
        source.due_events(t(10_000), 100).await.unwrap()
    );

    // Importing again finds every row present and changes nothing.
    let again = import_all(&target, &pages).await;
    assert_eq!(
        again,
        ImportCounts {
            inserted: 0,
            present: total
        }
    );
    assert_eq!(export_all(&target, 4).await, pages);
    // Other page sizes cut the same rows.
    let flat = |pages: Vec<(Vec<ExportRecord>, Option<String>)>| -> Vec<ExportRecord> {
        pages.into_iter().flat_map(|(records, _)| records).collect()
    };
    assert_eq!(flat(export_all(&target, 1000).await), flat(pages.clone()));
}

pub async fn imported_store_keeps_working(source: SharedStore, target: SharedStore) {
    populate(&source).await;
    let pages = export_all(&source, 100).await;
    import_all(&target, &pages).await;

    // New rows are numbered after the imported ones.
    let audit_max = max_id(&pages, ExportKind::Audit);
    target
        .append_audit(vec![AuditRecord {
            id: 0,
            at: t(5000),
            actor: "cli".into(),
            sub: None,
            action: "import".into(),
            detail: String::new(),
            outcome: "ok".into(),
            times: 1,
            last_at: t(5000),
        }])
        .await
        .unwrap();
    let newest = target.audit(AuditFilter::default()).await.unwrap();
    assert_eq!(newest[0].action, "import");
    assert_eq!(newest[0].id, audit_max + 1);
    let event_max = max_id(&pages, ExportKind::GrantEvent);
    let (_, event) = target
        .update_grant_state(
            "107",
            None,
            state_update(GrantState::Failing, "upstream 503", None, 5000),
        )
        .await
        .unwrap();
    assert_eq!(event.unwrap().id, event_max + 1);

    // A sign-in merges into the imported grant as usual: the held token stays, the version
    // goes on from the imported one.
    let (_, held) = target.user("zoë").await.unwrap().unwrap();
    let out = target
        .record_sign_in(sign_in("zoë", OPENID_EMAIL, None, t(6000)))
        .await
        .unwrap();
    assert!(!out.created);
    assert_eq!(out.grant.refresh_token, Some(refresh("zoë")));
    assert_eq!(out.grant.version, held.version + 1);
    assert_eq!(out.grant.state, GrantState::Active);
    // Fenced writes see the imported version.
    let err = target
        .update_grant_state(
            "zoë",
            Some(held.version),
            state_update(GrantState::Revoked, "RISC", None, 6001),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
    // Keys and sessions work on imported rows.
    assert!(
        target
            .api_key_by_hash(&format!("{:064x}", 2))
            .await
            .unwrap()
            .is_some()
    );
    assert!(target.revoke_api_key("key_b", t(6002)).await.unwrap());
    target
        .create_session(SessionRecord {
            id_hash: "s".into(),
            sub: "bo".into(),
            created_at: t(6003),
            expires_at: t(7000),
        })
        .await
        .unwrap();
    // And a new user signs in beside the imported ones.
    signed_in(&target, "new").await;
    assert_eq!(target.count_users().await.unwrap(), 8);
}

pub async fn export_rows_have_one_shape(store: SharedStore) {
    populate(&store).await;
    let (users, _) = store
        .export_page(ExportKind::User, Some("bo".into()), 1)
        .await
        .unwrap();
    assert_eq!(
        Value::Object(users[0].row.clone()),
        json!({
            "sub": "noconsent",
            "email": "noconsent@example.com",
            "email_verified": true,
            "name": "User noconsent",
            "picture": "https://example.com/noconsent.png",
            "given_name": "User",
            "family_name": "noconsent",
            "locale": "en",
            "hd": null,
            "created_at": t(5).unix_timestamp(),
            "updated_at": t(5).unix_timestamp(),
            "last_sign_in_at": t(5).unix_timestamp(),
        })
    );
    let (grants, next) = store.export_page(ExportKind::Grant, None, 2).await.unwrap();
    assert_eq!(next.as_deref(), Some("Ava"));
    let grant = &grants[0].row;
    assert_eq!(grant["sub"], "107");
    assert_eq!(grant["state"], "active");
    assert_eq!(
        grant["refresh_token"],
        Value::from(STANDARD.encode(refresh("107").sealed))
    );
    assert_eq!(
        grant["access_token"],
        Value::from(STANDARD.encode(access("107-2", t(4000)).sealed))
    );
    assert_eq!(grant["access_token_expires_at"], t(4000).unix_timestamp());
    assert_eq!(grant["version"], 2);
    assert_eq!(grant["last_error"], Value::Null);
    let mut columns: Vec<&str> = grant.keys().map(String::as_str).collect();
    columns.sort_unstable();
    assert_eq!(
        columns,
        [
            "access_token",
            "access_token_expires_at",
            "last_error",
            "last_refresh_at",
            "reason",
            "refresh_token",
            "refresh_token_received_at",
            "rt_hash",
            "rt_prefix_hash",
            "scopes",
            "state",
            "state_changed_at",
            "sub",
            "updated_at",
            "version"
        ]
    );
    let (keys, _) = store
        .export_page(ExportKind::DataKey, None, 10)
        .await
        .unwrap();
    assert_eq!(
        Value::Object(keys[0].row.clone()),
        json!({"id": 1, "wrapped": STANDARD.encode([0, 1, 2, 0xfe, 0xff, 0, 9]),
               "created_at": t(-100).unix_timestamp(), "active": true, "retired_at": null})
    );
    // API keys page by id in byte order, whatever order they were made in.
    let (api_keys, _) = store
        .export_page(ExportKind::ApiKey, None, 10)
        .await
        .unwrap();
    let ids: Vec<&Value> = api_keys.iter().map(|k| &k.row["id"]).collect();
    assert_eq!(ids, ["key_a", "key_b", "key_c"]);
    assert_eq!(api_keys[0].row["revoked_at"], t(20).unix_timestamp());
    assert_eq!(api_keys[1].row["revoked_at"], Value::Null);
    assert_eq!(api_keys[0].row["scopes"], "token users:read");
    // Events carry their delivery state.
    let (events, _) = store
        .export_page(ExportKind::GrantEvent, None, 2)
        .await
        .unwrap();
    assert_eq!(events[0].row["delivered_at"], t(700).unix_timestamp());
    assert_eq!(events[1].row["attempts"], 1);
    assert_eq!(events[1].row["next_attempt_at"], t(900).unix_timestamp());
    // Past the end: an empty last page.
    let (none, next) = store
        .export_page(ExportKind::Audit, Some("999999".into()), 10)
        .await
        .unwrap();
    assert!(none.is_empty());
    assert_eq!(next, None);
    let err = store
        .export_page(ExportKind::Audit, Some("not a position".into()), 10)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
}

pub async fn import_refuses_what_does_not_fit(source: SharedStore, target: SharedStore) {
    populate(&source).await;
    let (users, _) = source
        .export_page(ExportKind::User, None, 100)
        .await
        .unwrap();
    let (grants, _) = source
        .export_page(ExportKind::Grant, None, 100)
        .await
        .unwrap();

    // A grant whose user is in neither the store nor the call: nothing of the call is written.
    let err = target
        .import(vec![users[0].clone(), grants[1].clone()])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    assert_eq!(target.count_users().await.unwrap(), 0);

    // Users go in before their grants, whatever order a call gives them in.
    let counts = target
        .import(vec![grants[0].clone(), users[0].clone()])
        .await
        .unwrap();
    assert_eq!(
        counts,
        ImportCounts {
            inserted: 2,
            present: 0
        }
    );
    assert_eq!(
        target.user("107").await.unwrap(),
        source.user("107").await.unwrap()
    );

    let broken = |edit: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut record = users[1].clone();
        edit(&mut record.row);
        record
    };
    let refused = [
        broken(&|row| {
            row.remove("created_at");
        }),
        broken(&|row| {
            row.insert("created_at".into(), json!("yesterday"));
        }),
        broken(&|row| {
            row.insert("email_verified".into(), json!(1));
        }),
        broken(&|row| {
            row.insert("sub".into(), Value::Null);
        }),
        broken(&|row| {
            row.insert("password".into(), json!("x"));
        }),
        {
            let mut grant = grants[1].clone();
            grant
                .row
                .insert("refresh_token".into(), json!("%%sealed?%%"));
            grant
        },
    ];
    for record in refused {
        let err = target.import(vec![record.clone()]).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{record:?}: {err:?}");
        // Only the column is named, never a value.
        assert!(!err.to_string().contains("sealed?"), "{err}");
        assert!(!err.to_string().contains("yesterday"), "{err}");
    }
    assert_eq!(target.count_users().await.unwrap(), 1);

    // An API key whose hash another key has is not the same key: refused, not "present".
    let (api_keys, _) = source
        .export_page(ExportKind::ApiKey, None, 100)
        .await
        .unwrap();
    let mut twin = api_keys[0].clone();
    target.import(vec![twin.clone()]).await.unwrap();
    twin.row.insert("id".into(), json!("key_twin"));
    let err = target.import(vec![twin]).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists), "{err:?}");
    assert_eq!(
        target.import(Vec::new()).await.unwrap(),
        ImportCounts::default()
    );

    // An audit row exported before rows were coalesced (no `times`, no `last_at`) stands for
    // one act at its time; a count below one is refused.
    let (audit, _) = source
        .export_page(ExportKind::Audit, None, 1)
        .await
        .unwrap();
    let mut old = audit[0].clone();
    old.row.remove("times");
    old.row.remove("last_at");
    let at = old.row["at"].as_i64().unwrap();
    let mut none = old.clone();
    none.row.insert("times".into(), json!(0));
    none.row.insert("id".into(), json!(424_242));
    target.import(vec![old]).await.unwrap();
    let read = target.audit(AuditFilter::default()).await.unwrap();
    assert_eq!((read[0].times, read[0].last_at.unix_timestamp()), (1, at));
    assert!(target.import(vec![none]).await.is_err());
}
