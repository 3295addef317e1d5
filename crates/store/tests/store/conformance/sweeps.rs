//! Sweep runs: an interrupted run is resumed from its cursor until it is finished.

use super::t;
use grantkeeper_store::{SharedStore, StoreError, SweepRun};
use std::collections::HashSet;

pub async fn sweep_run_resumes_until_finished(store: SharedStore) {
    let run = store.start_or_resume_sweep("refresh", t(0)).await.unwrap();
    assert_eq!(run.job, "refresh");
    assert_eq!(run.started_at, t(0));
    assert_eq!(run.finished_at, None);
    assert_eq!(run.cursor, None);
    assert_eq!(run.counts, "{}");
    // Started again before any progress: the same run.
    assert_eq!(
        store.start_or_resume_sweep("refresh", t(5)).await.unwrap(),
        run
    );

    let counts = r#"{"ok":40,"failing":1,"revoked":2,"skipped":0}"#;
    store
        .save_sweep_progress(run.id, "user-0042", counts)
        .await
        .unwrap();
    // The process died here; the next start resumes the run where it stopped.
    let resumed = store.start_or_resume_sweep("refresh", t(60)).await.unwrap();
    assert_eq!(
        resumed,
        SweepRun {
            cursor: Some("user-0042".into()),
            counts: counts.into(),
            ..run.clone()
        }
    );

    let done = r#"{"ok":99,"failing":1,"revoked":2,"skipped":0}"#;
    store.finish_sweep(run.id, done, t(120)).await.unwrap();

    // A finished run is not resumed: the next start is a new run from the beginning.
    let next = store
        .start_or_resume_sweep("refresh", t(200))
        .await
        .unwrap();
    assert_ne!(next.id, run.id);
    assert_eq!(next.started_at, t(200));
    assert_eq!(next.cursor, None);
    assert_eq!(next.counts, "{}");
    assert_eq!(next.finished_at, None);
}

pub async fn sweep_jobs_are_independent(store: SharedStore) {
    let refresh = store.start_or_resume_sweep("refresh", t(0)).await.unwrap();
    let appdata = store
        .start_or_resume_sweep("drive-appdata", t(1))
        .await
        .unwrap();
    assert_ne!(refresh.id, appdata.id);
    store
        .save_sweep_progress(appdata.id, "m", r#"{"ok":1}"#)
        .await
        .unwrap();
    store.finish_sweep(refresh.id, "{}", t(10)).await.unwrap();

    let again = store
        .start_or_resume_sweep("drive-appdata", t(20))
        .await
        .unwrap();
    assert_eq!(again.id, appdata.id);
    assert_eq!(again.cursor.as_deref(), Some("m"));
    let fresh = store.start_or_resume_sweep("refresh", t(20)).await.unwrap();
    assert_ne!(fresh.id, refresh.id);
}

pub async fn finished_sweep_takes_no_progress(store: SharedStore) {
    let run = store.start_or_resume_sweep("refresh", t(0)).await.unwrap();
    store
        .finish_sweep(run.id, r#"{"ok":3}"#, t(10))
        .await
        .unwrap();
    let err = store
        .save_sweep_progress(run.id, "late", "{}")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    let err = store.finish_sweep(run.id, "{}", t(20)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    let err = store
        .save_sweep_progress(run.id + 1000, "x", "{}")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

/// Two processes starting the same job at once share one run.
pub async fn concurrent_sweep_starts_across_instances(first: SharedStore, second: SharedStore) {
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = if i % 2 == 0 { &first } else { &second }.clone();
        tasks.push(tokio::spawn(async move {
            store.start_or_resume_sweep("refresh", t(i)).await.unwrap()
        }));
    }
    let mut ids = HashSet::new();
    for task in tasks {
        ids.insert(task.await.unwrap().id);
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
}
