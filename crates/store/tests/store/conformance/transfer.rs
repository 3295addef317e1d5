//! Exports and imports (`TransferStore`): a deployment copied row by row into another store,
//! which then holds the same rows, pages them alike and keeps working.

use super::{OPENID_EMAIL, access, refresh, sign_in, signed_in, state_update, t};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use grantkeeper_core::GrantState;
use grantkeeper_store::{
    ActivityPoint, ApiKeyRecord, AuditFilter, AuditRecord, DataKeyRecord, ExportKind, ExportRecord,
    ImportCounts, PendingRevocation, RefreshSuccess, RevocationTokenKind, SessionRecord,
    SharedStore, SignInBlock, StateUpdate, StoreError,
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
        ExportKind::PendingRevocation => "pending_revocations",
        ExportKind::SignInBlock => "sign_in_blocks",
        ExportKind::RiscEvent => "risc_events",
        ExportKind::Activity => "activity",
    }
}

/// The kinds an export held before the revocation queue, sign-in blocks, security events and
/// activity were exported.
pub const OLDER_KINDS: [ExportKind; 6] = [
    ExportKind::DataKey,
    ExportKind::User,
    ExportKind::Grant,
    ExportKind::GrantEvent,
    ExportKind::ApiKey,
    ExportKind::Audit,
];

/// The queued revocations [`populate`] writes, in id (byte) order: both token kinds, retried
/// and not, one whose user was deleted since (its `sub` names no user).
pub fn queued_revocations() -> Vec<PendingRevocation> {
    let entry = |id: &str, sub: &str, kind, attempts: u32, error: Option<&str>| {
        let mut token = vec![1, 0, 0, 0, 1, 0x00, 0xff, 0xfe];
        token.extend_from_slice(id.as_bytes());
        PendingRevocation {
            id: id.to_owned(),
            sub: sub.to_owned(),
            token,
            token_kind: kind,
            created_at: t(300 + i64::from(attempts)),
            attempts,
            next_attempt_at: t(800 + i64::from(attempts) * 60),
            last_error: error.map(str::to_owned),
        }
    };
    vec![
        entry("rev_A", "ava", RevocationTokenKind::Refresh, 0, None),
        entry(
            "rev_a",
            "gone",
            RevocationTokenKind::Access,
            3,
            Some("HTTP 503"),
        ),
        entry(
            "rev_b-1",
            "bo",
            RevocationTokenKind::Refresh,
            1,
            Some("timeout"),
        ),
        entry("rev_b_1", "bo", RevocationTokenKind::Refresh, 0, None),
    ]
}

/// The sign-in blocks [`populate`] writes, in sub order: of users and of accounts that never
/// signed in.
pub fn sign_in_blocks() -> Vec<SignInBlock> {
    [("Ava", 610), ("never-seen", 620), ("zoë", 630)]
        .into_iter()
        .map(|(sub, at)| SignInBlock {
            sub: sub.to_owned(),
            reason: format!("account-disabled: hijacking ({sub})"),
            blocked_at: t(at),
        })
        .collect()
}

/// The ids of the security events [`populate`] records, in the order it records them; their
/// byte order differs from a locale's (case, `-` and `_`).
pub const SECURITY_EVENTS: [&str; 5] = ["b-1", "B_1", "a_2", "A-2", "a-1"];

/// The activity [`populate`] adds: three minutes of a few series, summed where they repeat.
pub fn activity_points() -> Vec<ActivityPoint> {
    let point = |minute: i64, series: &str, count: u64, total_ms: u64, max_ms: u64| ActivityPoint {
        minute: t(minute * 60),
        series: series.to_owned(),
        count,
        total_ms,
        max_ms,
    };
    vec![
        point(0, "sign_in", 2, 0, 0),
        point(0, "handout", 5, 40, 12),
        point(1, "Refresh", 1, 250, 250),
        point(1, "handout", 3, 30, 20),
        point(1, "handout", 1, 5, 5),
        point(2, "proxy", 9, 900, 300),
        point(2, "sign_in", 1, 0, 0),
    ]
}

/// The columns of the first exported row of `kind`, sorted.
pub async fn exported_columns(store: &SharedStore, kind: ExportKind) -> Vec<String> {
    let (records, _) = store.export_page(kind, None, 1).await.unwrap();
    let mut columns: Vec<String> = records[0].row.keys().cloned().collect();
    columns.sort_unstable();
    columns
}

/// A deployment with a row of every kind, and rows of each shape: tokens held or not, states,
/// delivered and failed events, revoked keys, audit rows with and without a user, queued
/// revocations retried or not, sign-in blocks with and without a user, security events, and
/// activity over several minutes.
pub async fn populate(store: &SharedStore) {
    store
        .ensure_data_key(DataKeyRecord {
            id: 1,
            wrapped: vec![0, 1, 2, 0xfe, 0xff, 0, 9],
            created_at: t(-100),
            active: true,
            wrapped_by: Some("pkcs11:token=gk;object=master".into()),
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
    // Out of id order, as they are queued.
    for revocation in queued_revocations().into_iter().rev() {
        store.enqueue_revocation(revocation).await.unwrap();
    }
    for block in sign_in_blocks().into_iter().rev() {
        store.block_sign_in(block).await.unwrap();
    }
    for (i, jti) in SECURITY_EVENTS.iter().enumerate() {
        let event = if i % 2 == 0 {
            "tokens-revoked"
        } else {
            "account-disabled"
        };
        assert!(
            store
                .record_security_event(jti, event, t(700 + i as i64))
                .await
                .unwrap()
        );
    }
    store.add_activity(activity_points()).await.unwrap();
}

/// The activity [`populate`] adds, as the store reads it back.
pub async fn all_activity(store: &SharedStore) -> Vec<ActivityPoint> {
    store.activity(t(-3600), t(3600)).await.unwrap()
}

/// `target`, an import of what [`populate`] wrote into `source`, holds the same queued
/// revocations, sign-in blocks, security events and activity, every column read back through
/// the store.
pub async fn assert_same_queue_blocks_events_and_activity(
    target: &SharedStore,
    source: &SharedStore,
) {
    let due = target.due_revocations(t(100_000), 100).await.unwrap();
    assert_eq!(due, source.due_revocations(t(100_000), 100).await.unwrap());
    let mut by_id = due;
    by_id.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(by_id, queued_revocations(), "{}", target.backend());
    for block in sign_in_blocks() {
        assert_eq!(
            target.sign_in_block(&block.sub).await.unwrap(),
            Some(block),
            "{}",
            target.backend()
        );
    }
    assert_eq!(target.sign_in_block("ava").await.unwrap(), None);
    let activity = all_activity(target).await;
    assert_eq!(activity, all_activity(source).await);
    assert_eq!(activity.len(), 6, "{activity:?}");
    // A redelivered event is known to the target: it would not act twice.
    for jti in SECURITY_EVENTS {
        assert!(
            !target
                .record_security_event(jti, "tokens-revoked", t(5000))
                .await
                .unwrap(),
            "{jti} on {}",
            target.backend()
        );
    }
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
    // 1 data key, 7 users and grants, their events, 3 API keys, 25 audit rows, 4 queued
    // revocations, 3 sign-in blocks, 5 security events, 6 minutes of activity.
    assert!(total > 1 + 14 + 8 + 3 + 25 + 4 + 3 + 5 + 6, "{total}");
    for kind in ExportKind::ALL {
        assert!(
            pages
                .iter()
                .any(|(records, _)| records.iter().any(|record| record.kind == kind)),
            "{kind:?}"
        );
    }

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
    assert_same_queue_blocks_events_and_activity(&target, &source).await;

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

    // The imported queue is retried: a failure counts, a revocation that got through is gone.
    target
        .mark_revocation_failed("rev_A", t(7100), "HTTP 500")
        .await
        .unwrap();
    let due = target.due_revocations(t(7100), 100).await.unwrap();
    let retried = due.iter().find(|entry| entry.id == "rev_A").unwrap();
    assert_eq!(
        (retried.attempts, retried.last_error.as_deref()),
        (1, Some("HTTP 500"))
    );
    assert!(target.delete_revocation("rev_a").await.unwrap());
    assert_eq!(target.count_revocations().await.unwrap(), 3);
    // Blocks hold until lifted.
    assert!(target.lift_sign_in_block("zoë").await.unwrap());
    assert_eq!(target.sign_in_block("zoë").await.unwrap(), None);
    assert!(target.sign_in_block("never-seen").await.unwrap().is_some());
    // Events received before the move are pruned by their time of receipt.
    assert_eq!(
        target.prune_security_events(t(702)).await.unwrap(),
        2,
        "the two received first"
    );
    // Counts of an imported minute go on from the imported ones.
    target
        .add_activity(vec![ActivityPoint {
            minute: t(90),
            series: "handout".into(),
            count: 6,
            total_ms: 600,
            max_ms: 100,
        }])
        .await
        .unwrap();
    let minute = target.activity(t(60), t(120)).await.unwrap();
    let handout = minute.iter().find(|p| p.series == "handout").unwrap();
    assert_eq!(
        (handout.count, handout.total_ms, handout.max_ms),
        (10, 635, 100)
    );
}

/// An export made before the revocation queue, sign-in blocks, security events and activity
/// were exported imports as it is; the newer kinds imported after it go in beside its rows.
pub async fn an_export_without_the_newer_kinds_imports(source: SharedStore, target: SharedStore) {
    populate(&source).await;
    let pages = export_all(&source, 4).await;
    let older: Vec<(Vec<ExportRecord>, Option<String>)> = pages
        .iter()
        .filter(|(records, _)| {
            records
                .first()
                .is_some_and(|record| OLDER_KINDS.contains(&record.kind))
        })
        .cloned()
        .collect();
    let older_rows = rows(&older);
    assert!(older_rows < rows(&pages));

    let counts = import_all(&target, &older).await;
    assert_eq!(
        counts,
        ImportCounts {
            inserted: older_rows,
            present: 0
        }
    );
    assert_eq!(target.count_users().await.unwrap(), 7);
    assert_eq!(target.count_revocations().await.unwrap(), 0);
    assert_eq!(target.sign_in_block("Ava").await.unwrap(), None);
    assert!(all_activity(&target).await.is_empty());
    for kind in ExportKind::ALL {
        let (records, _) = target.export_page(kind, None, 10).await.unwrap();
        assert_eq!(records.is_empty(), !OLDER_KINDS.contains(&kind), "{kind:?}");
    }

    // The whole export on top: the older rows are present, the newer kinds are added.
    let counts = import_all(&target, &pages).await;
    assert_eq!(
        counts,
        ImportCounts {
            inserted: rows(&pages) - older_rows,
            present: older_rows
        }
    );
    assert_eq!(export_all(&target, 4).await, pages);
    assert_same_queue_blocks_events_and_activity(&target, &source).await;
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
               "created_at": t(-100).unix_timestamp(), "active": true, "retired_at": null,
               "wrapped_by": "pkcs11:token=gk;object=master"})
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
    // Queued revocations carry their sealed token as base64, and page by id in byte order.
    let (queued, next) = store
        .export_page(ExportKind::PendingRevocation, None, 2)
        .await
        .unwrap();
    assert_eq!(next.as_deref(), Some("rev_a"));
    let revocation = &queued_revocations()[1];
    assert_eq!(
        Value::Object(queued[1].row.clone()),
        json!({
            "id": "rev_a",
            "sub": "gone",
            "token": STANDARD.encode(&revocation.token),
            "token_kind": "access",
            "created_at": t(303).unix_timestamp(),
            "attempts": 3,
            "next_attempt_at": t(980).unix_timestamp(),
            "last_error": "HTTP 503",
        })
    );
    let (queued, next) = store
        .export_page(ExportKind::PendingRevocation, next, 10)
        .await
        .unwrap();
    let ids: Vec<&Value> = queued.iter().map(|r| &r.row["id"]).collect();
    assert_eq!(ids, ["rev_b-1", "rev_b_1"]);
    assert_eq!(queued[1].row["last_error"], Value::Null);
    assert_eq!(next, None);
    let (blocks, _) = store
        .export_page(ExportKind::SignInBlock, Some("Ava".into()), 1)
        .await
        .unwrap();
    assert_eq!(
        Value::Object(blocks[0].row.clone()),
        json!({"sub": "never-seen", "reason": "account-disabled: hijacking (never-seen)",
               "blocked_at": t(620).unix_timestamp()})
    );
    // Security events by jti in byte order: upper case first, `-` before `_`.
    let (events, next) = store
        .export_page(ExportKind::RiscEvent, None, 3)
        .await
        .unwrap();
    let jtis: Vec<&Value> = events.iter().map(|r| &r.row["jti"]).collect();
    assert_eq!(jtis, ["A-2", "B_1", "a-1"]);
    assert_eq!(next.as_deref(), Some("a-1"));
    assert_eq!(
        Value::Object(events[0].row.clone()),
        json!({"jti": "A-2", "event": "account-disabled", "received_at": t(703).unix_timestamp()})
    );
    // Activity pages by minute, then series: its position names both.
    let (minutes, next) = store
        .export_page(ExportKind::Activity, None, 2)
        .await
        .unwrap();
    assert_eq!(
        Value::Object(minutes[0].row.clone()),
        json!({"minute": t(0).unix_timestamp(), "series": "handout", "count": 5,
               "total_ms": 40, "max_ms": 12})
    );
    let position = json!([t(0).unix_timestamp(), "sign_in"]).to_string();
    assert_eq!(next.as_deref(), Some(position.as_str()));
    let (minutes, next) = store
        .export_page(ExportKind::Activity, next, 3)
        .await
        .unwrap();
    let keys: Vec<(&Value, &Value)> = minutes
        .iter()
        .map(|r| (&r.row["minute"], &r.row["series"]))
        .collect();
    let (one, two) = (t(60).unix_timestamp(), t(120).unix_timestamp());
    assert_eq!(
        keys,
        [
            (&json!(one), &json!("Refresh")),
            (&json!(one), &json!("handout")),
            (&json!(two), &json!("proxy"))
        ]
    );
    assert_eq!(
        (&minutes[1].row["count"], &minutes[1].row["total_ms"]),
        (&json!(4), &json!(35))
    );
    let (last, next) = store
        .export_page(ExportKind::Activity, next, 3)
        .await
        .unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(next, None);
    for wrong in [
        "sign_in",
        "[]",
        "[1]",
        "[\"sign_in\", 60]",
        "[60, \"sign_in\", 1]",
        "[60.5, \"sign_in\"]",
    ] {
        let err = store
            .export_page(ExportKind::Activity, Some(wrong.into()), 10)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{wrong}: {err:?}");
    }
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
