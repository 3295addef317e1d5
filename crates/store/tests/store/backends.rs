//! Between the backends: a deployment exported from SQLite imports into PostgreSQL and back,
//! row for row and byte for byte, and each copy keeps working.

use crate::conformance::transfer::{
    assert_same_queue_blocks_events_and_activity, export_all, import_all, populate,
};
use crate::conformance::{OPENID_EMAIL, sign_in, t};
use crate::{postgres, sqlite};
use grantkeeper_store::{AuditFilter, AuditRecord, ExportKind, ImportCounts, SharedStore};

const SUBS: [&str; 7] = ["107", "Ava", "ava", "bo", "noconsent", "zoë", "日本"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_postgres_and_back_keeps_every_row() {
    let Some(pg) = postgres::fresh().await else {
        return;
    };
    let source = sqlite::fresh_file().await;
    let back = sqlite::fresh_file().await;
    populate(&source.store).await;
    // A page size that cuts every kind mid-way.
    let pages = export_all(&source.store, 3).await;
    let total: u64 = pages.iter().map(|(records, _)| records.len() as u64).sum();

    let into_pg = import_all(&pg.store, &pages).await;
    assert_eq!(
        into_pg,
        ImportCounts {
            inserted: total,
            present: 0
        }
    );
    // PostgreSQL exports the same rows in the same shape, cut at the same places.
    let from_pg = export_all(&pg.store, 3).await;
    assert_eq!(from_pg, pages);

    let into_back = import_all(&back.store, &from_pg).await;
    assert_eq!(
        into_back,
        ImportCounts {
            inserted: total,
            present: 0
        }
    );
    assert_eq!(export_all(&back.store, 3).await, pages);

    // Read through the stores: the same users and grants, sealed bytes and fingerprints
    // included, the same events, keys and audit rows, the same queued revocations (sealed
    // tokens included), sign-in blocks, security events and activity.
    for store in [&pg.store, &back.store] {
        for sub in SUBS {
            assert_eq!(
                store.user(sub).await.unwrap(),
                source.store.user(sub).await.unwrap(),
                "{sub} on {}",
                store.backend()
            );
            assert_eq!(
                store.grant_events(sub).await.unwrap(),
                source.store.grant_events(sub).await.unwrap()
            );
        }
        assert_eq!(
            store.data_keys().await.unwrap(),
            source.store.data_keys().await.unwrap()
        );
        assert_eq!(
            store.list_api_keys().await.unwrap(),
            source.store.list_api_keys().await.unwrap()
        );
        let everything = AuditFilter {
            limit: 100,
            ..AuditFilter::default()
        };
        assert_eq!(
            store.audit(everything.clone()).await.unwrap(),
            source.store.audit(everything).await.unwrap()
        );
        assert_same_queue_blocks_events_and_activity(store, &source.store).await;
    }

    // Each copy numbers its new rows after the imported ones, and merges sign-ins as usual.
    let audit_max = max_id(&pages, ExportKind::Audit);
    let event_max = max_id(&pages, ExportKind::GrantEvent);
    for store in [&pg.store, &back.store] {
        keeps_working(store, audit_max, event_max).await;
    }
}

fn max_id(
    pages: &[(Vec<grantkeeper_store::ExportRecord>, Option<String>)],
    kind: ExportKind,
) -> i64 {
    pages
        .iter()
        .flat_map(|(records, _)| records)
        .filter(|record| record.kind == kind)
        .filter_map(|record| record.row["id"].as_i64())
        .max()
        .unwrap()
}

async fn keeps_working(store: &SharedStore, audit_max: i64, event_max: i64) {
    store
        .append_audit(vec![AuditRecord {
            id: 0,
            at: t(9000),
            actor: "cli".into(),
            sub: Some("bo".into()),
            action: "import".into(),
            detail: String::new(),
            outcome: "ok".into(),
            times: 1,
            last_at: t(9000),
        }])
        .await
        .unwrap();
    let newest = store.audit(AuditFilter::default()).await.unwrap();
    assert_eq!(
        (newest[0].id, newest[0].action.as_str()),
        (audit_max + 1, "import"),
        "{}",
        store.backend()
    );
    let (_, held) = store.user("日本").await.unwrap().unwrap();
    let out = store
        .record_sign_in(sign_in("日本", OPENID_EMAIL, None, t(9001)))
        .await
        .unwrap();
    assert_eq!(out.grant.refresh_token, held.refresh_token);
    assert_eq!(out.grant.version, held.version + 1);
    assert_eq!(out.event, None);
    let out = store
        .record_sign_in(sign_in("newcomer", OPENID_EMAIL, None, t(9002)))
        .await
        .unwrap();
    assert!(out.created);
    assert_eq!(out.event.unwrap().id, event_max + 1, "{}", store.backend());
}
