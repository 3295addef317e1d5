//! The audit trail: batches appended whole, read newest first through filters that combine.

use super::t;
use grantkeeper_store::{AuditFilter, AuditRecord, DEFAULT_PAGE, MAX_PAGE, SharedStore};

/// Row `i` of a batch: one second apart, users `u0`..`u4` in turn, every tenth without a user.
fn row(i: i64) -> AuditRecord {
    AuditRecord {
        // Ignored on append.
        id: -1,
        at: t(i),
        actor: format!("key_{}", i % 3),
        sub: (i % 10 != 9).then(|| format!("u{}", i % 5)),
        action: if i % 2 == 0 { "token" } else { "proxy" }.to_owned(),
        detail: if i % 2 == 0 {
            "openid email".to_owned()
        } else {
            format!("GET drive/v3/files/{i}")
        },
        outcome: if i % 7 == 0 { "upstream_error" } else { "ok" }.to_owned(),
        // Every third row stands for several identical acts, the last some seconds later.
        times: if i % 3 == 0 {
            1 + (i % 11) as u32 * 1000
        } else {
            1
        },
        last_at: t(i + if i % 3 == 0 { i % 11 } else { 0 }),
    }
}

fn filter(limit: u32) -> AuditFilter {
    AuditFilter {
        limit,
        ..AuditFilter::default()
    }
}

/// The appended rows as they should read back: ids assigned in order of the batch.
fn as_stored(rows: &[AuditRecord], first_id: i64) -> Vec<AuditRecord> {
    rows.iter()
        .enumerate()
        .map(|(n, r)| AuditRecord {
            id: first_id + n as i64,
            ..r.clone()
        })
        .collect()
}

pub async fn audit_batch_is_appended_in_order(store: SharedStore) {
    store.append_audit(Vec::new()).await.unwrap();
    assert!(store.audit(filter(10)).await.unwrap().is_empty());

    let batch: Vec<AuditRecord> = (0..1000).map(row).collect();
    store.append_audit(batch.clone()).await.unwrap();

    let read = store.audit(filter(1000)).await.unwrap();
    assert_eq!(read.len(), 1000);
    let first_id = read.last().unwrap().id;
    let mut expected = as_stored(&batch, first_id);
    expected.reverse();
    assert_eq!(read, expected, "newest first, every field kept");

    // A second batch, not a whole number of the store's chunks, follows the first in order.
    let second: Vec<AuditRecord> = (1000..1250).map(row).collect();
    store.append_audit(second.clone()).await.unwrap();
    let mut expected = as_stored(&batch, first_id);
    expected.extend(as_stored(&second, first_id + 1000));
    expected.reverse();
    let mut read = store.audit(filter(1000)).await.unwrap();
    read.extend(
        store
            .audit(AuditFilter {
                before_id: Some(read.last().unwrap().id),
                limit: 1000,
                ..AuditFilter::default()
            })
            .await
            .unwrap(),
    );
    assert_eq!(read, expected);
    assert_eq!(read[0].at, t(1249));
}

pub async fn audit_filters_combine(store: SharedStore) {
    let batch: Vec<AuditRecord> = (0..200).map(row).collect();
    store.append_audit(batch.clone()).await.unwrap();
    let all = store.audit(filter(1000)).await.unwrap();
    assert_eq!(all.len(), 200);

    let check = |f: AuditFilter| {
        let expected: Vec<AuditRecord> = all
            .iter()
            .filter(|r| f.sub.is_none() || r.sub == f.sub)
            .filter(|r| f.since.is_none_or(|since| r.at >= since))
            .filter(|r| f.before_id.is_none_or(|before| r.id < before))
            .take(f.limit as usize)
            .cloned()
            .collect();
        let store = store.clone();
        async move {
            let read = store.audit(f.clone()).await.unwrap();
            assert_eq!(read, expected, "{f:?}");
            read
        }
    };

    let by_sub = check(AuditFilter {
        sub: Some("u3".into()),
        limit: 1000,
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(by_sub.len(), 40, "u3 is every fifth row");
    assert!(by_sub.iter().all(|r| r.sub.as_deref() == Some("u3")));

    // `since` is inclusive.
    let since = check(AuditFilter {
        since: Some(t(150)),
        limit: 1000,
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(since.len(), 50);
    assert_eq!(since.last().unwrap().at, t(150));

    // Paging backwards by id: pages of 7 over one user's rows, no gaps, no repeats.
    let mut paged = Vec::new();
    let mut before_id = None;
    loop {
        let page = check(AuditFilter {
            sub: Some("u3".into()),
            before_id,
            limit: 7,
            ..AuditFilter::default()
        })
        .await;
        let Some(last) = page.last() else { break };
        before_id = Some(last.id);
        paged.extend(page);
    }
    assert_eq!(paged, by_sub);

    let combined = check(AuditFilter {
        sub: Some("u1".into()),
        since: Some(t(50)),
        before_id: Some(all[40].id),
        limit: 5,
    })
    .await;
    assert_eq!(combined.len(), 5);
    assert!(combined.iter().all(|r| r.at >= t(50) && r.at < t(160)));

    // Rows without a user are found by the other filters only.
    let no_user = all.iter().filter(|r| r.sub.is_none()).count();
    assert_eq!(no_user, 20);
    check(AuditFilter {
        sub: Some("nobody".into()),
        limit: 10,
        ..AuditFilter::default()
    })
    .await;
    check(AuditFilter {
        before_id: Some(all[199].id),
        limit: 10,
        ..AuditFilter::default()
    })
    .await;
}

pub async fn audit_limits(store: SharedStore) {
    let rows = MAX_PAGE as i64 + 10;
    store
        .append_audit((0..rows).map(row).collect())
        .await
        .unwrap();
    // 0, as in AuditFilter::default(), asks for the default page.
    let default = store.audit(AuditFilter::default()).await.unwrap();
    assert_eq!(default.len(), DEFAULT_PAGE as usize);
    assert_eq!(default[0].at, t(rows - 1));
    assert_eq!(store.audit(filter(1)).await.unwrap().len(), 1);
    assert_eq!(
        store.audit(filter(u32::MAX)).await.unwrap().len(),
        MAX_PAGE as usize
    );
}
