//! Rotating the data keys of a store with 200 signed-in users, on SQLite and PostgreSQL: every
//! value ends under the new key and the old key is retired; a refresh writer running
//! meanwhile (as a server that has not read the new key yet would) loses nothing; a rotation
//! stopped midway resumes without a third key; and a running server opens values sealed under
//! a key it had not loaded.

use crate::server::harness::TestApp;
use grantkeeper_broker::{TokenRequest, fingerprint};
use grantkeeper_core::{
    Aad, ExposeSecret, KeyId, MasterKey, Scopes, SecretString, SystemClock, UserProfile, Vault,
    VaultHandle, vault::key_id_of,
};
use grantkeeper_server::keys::{StoreKeyring, load_vault, spawn_reloader, vault_from};
use grantkeeper_server::rotation::{Rotation, RotationEvent, RotationOptions};
use grantkeeper_store::{
    PendingRevocation, RefreshSuccess, RevocationTokenKind, SealedAccessToken, SealedRefreshToken,
    SharedStore, SignIn, StoreError,
};
use grantkeeper_testkit::postgres::TestDatabase;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;

const USERS: usize = 200;

/// A store to rotate, and what keeps it alive.
struct Fixture {
    store: SharedStore,
    _keep: Box<dyn std::any::Any + Send>,
}

async fn sqlite() -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("grantkeeper.db").display());
    Some(Fixture {
        store: grantkeeper_store::open(&url).await.unwrap(),
        _keep: Box::new(dir),
    })
}

async fn postgres() -> Option<Fixture> {
    let database = TestDatabase::migrated().await?;
    Some(Fixture {
        store: grantkeeper_store::open(&database.url).await.unwrap(),
        _keep: Box::new(database),
    })
}

fn sub(i: usize) -> String {
    format!("user-{i:03}")
}

fn now() -> OffsetDateTime {
    use grantkeeper_core::Clock;
    SystemClock.now()
}

/// 200 users signed in with a refresh and an access token sealed under the store's first key,
/// and one queued revocation; returns the master key.
async fn signed_in(store: &SharedStore) -> MasterKey {
    let master = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
    let vault = load_vault(store.as_ref(), &master, &SystemClock)
        .await
        .unwrap();
    for i in 0..USERS {
        let sub = sub(i);
        let rt = SecretString::from(format!("1//rt-{i}"));
        store
            .record_sign_in(SignIn {
                profile: UserProfile {
                    sub: sub.clone(),
                    email: Some(format!("{sub}@example.com")),
                    email_verified: true,
                    name: None,
                    picture: None,
                    given_name: None,
                    family_name: None,
                    locale: None,
                    hd: None,
                },
                granted_scopes: Scopes::parse("openid email"),
                refresh_token: Some(SealedRefreshToken {
                    sealed: vault.seal_secret(&rt, Aad::refresh_token(&sub)).unwrap(),
                    fingerprint: fingerprint(&rt),
                }),
                access_token: Some(SealedAccessToken {
                    sealed: vault
                        .seal(format!("ya29.at-{i}").as_bytes(), Aad::access_token(&sub))
                        .unwrap(),
                    expires_at: now() + time::Duration::hours(1),
                }),
                at: now(),
            })
            .await
            .unwrap();
    }
    store
        .enqueue_revocation(PendingRevocation {
            id: "rev_1".to_owned(),
            sub: "gone".to_owned(),
            token: vault
                .seal(b"1//revoke-me", Aad::pending_revocation("rev_1"))
                .unwrap(),
            token_kind: RevocationTokenKind::Refresh,
            created_at: now(),
            attempts: 0,
            next_attempt_at: now() + time::Duration::hours(1),
            last_error: None,
        })
        .await
        .unwrap();
    master
}

fn no_grace(batch_size: u32) -> RotationOptions {
    RotationOptions {
        batch_size,
        grace: Duration::ZERO,
        ..RotationOptions::default()
    }
}

fn stop_never() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    // Kept open for the life of the test: a closed channel is not a stop.
    std::mem::forget(tx);
    rx
}

/// The store's keys as a freshly started server loads them (retired keys are not).
async fn fresh_vault(store: &SharedStore, master: &MasterKey) -> Vault {
    vault_from(&store.data_keys().await.unwrap(), master).unwrap()
}

/// Every value of the store opens with `vault`, under key `key`: the refresh tokens to
/// `expected` (sub -> token).
async fn assert_all_under(
    store: &SharedStore,
    vault: &Vault,
    key: u32,
    expected: &HashMap<String, String>,
) {
    for i in 0..USERS {
        let sub = sub(i);
        let grant = store.grant(&sub).await.unwrap().unwrap();
        let rt = grant.refresh_token.unwrap().sealed;
        let at = grant.access_token.unwrap().sealed;
        assert_eq!(key_id_of(&rt).unwrap(), KeyId(key), "{sub}");
        assert_eq!(key_id_of(&at).unwrap(), KeyId(key), "{sub}");
        let opened = vault.open_secret(&rt, Aad::refresh_token(&sub)).unwrap();
        assert_eq!(opened.expose_secret(), expected[&sub], "{sub}");
        vault.open(&at, Aad::access_token(&sub)).unwrap();
    }
    let queued = store
        .due_revocations(now() + time::Duration::days(1), 10)
        .await
        .unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(key_id_of(&queued[0].token).unwrap(), KeyId(key));
    assert_eq!(
        &*vault
            .open(&queued[0].token, Aad::pending_revocation("rev_1"))
            .unwrap(),
        b"1//revoke-me"
    );
}

fn initial_tokens() -> HashMap<String, String> {
    (0..USERS).map(|i| (sub(i), format!("1//rt-{i}"))).collect()
}

async fn rotation_reseals_everything_and_retires_the_old_key(fixture: Fixture) {
    let store = fixture.store.clone();
    let master = signed_in(&store).await;
    let mut rotation = Rotation::begin(store.clone(), &master, SystemClock::shared())
        .await
        .unwrap();
    assert_eq!((rotation.key(), rotation.resumed()), (2, false));
    assert_eq!(rotation.old_keys(), [1]);
    let events = Mutex::new(Vec::new());
    let summary = rotation
        .run(&no_grace(37), stop_never(), &|e| {
            events.lock().unwrap().push(e.clone())
        })
        .await
        .unwrap();
    assert!(summary.finished(), "{summary:?}");
    assert_eq!(summary.resealed, 2 * USERS as u64 + 1);
    assert_eq!((summary.skipped, summary.unreadable), (0, 0));
    assert_eq!(summary.retired, [1]);
    let events = events.into_inner().unwrap();
    let batches = events
        .iter()
        .filter(|e| matches!(e, RotationEvent::Batch { .. }))
        .count();
    // 200 refresh tokens and 200 access tokens by 37, one queued revocation.
    assert_eq!(batches, 6 + 6 + 1);
    assert!(events.contains(&RotationEvent::Verified {
        pass: 1,
        remaining: 0
    }));
    assert_eq!(events.last(), Some(&RotationEvent::Retired { key: 1 }));
    let last_batch = events
        .iter()
        .rev()
        .find_map(|e| match e {
            RotationEvent::Batch { done, total, .. } => Some((*done, *total)),
            _ => None,
        })
        .unwrap();
    assert_eq!(last_batch, (401, 401));

    let counts = store.count_sealed().await.unwrap();
    assert_eq!(counts.by_key, BTreeMap::from([(2, 401)]));
    let statuses = store.data_key_statuses().await.unwrap();
    assert_eq!(
        statuses
            .iter()
            .map(|k| (k.id, k.active, k.retired_at.is_some(), k.sealed_values))
            .collect::<Vec<_>>(),
        [(1, false, true, 0), (2, true, false, 401)]
    );
    let vault = fresh_vault(&store, &master).await;
    assert_eq!(vault.key_ids(), [KeyId(2)]);
    assert_all_under(&store, &vault, 2, &initial_tokens()).await;

    // A finished rotation is not resumed: the next one makes key 3.
    let next = Rotation::begin(store.clone(), &master, SystemClock::shared())
        .await
        .unwrap();
    assert_eq!((next.key(), next.resumed()), (3, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_reseals_everything_and_retires_the_old_key_sqlite() {
    rotation_reseals_everything_and_retires_the_old_key(sqlite().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_reseals_everything_and_retires_the_old_key_postgres() {
    let Some(fixture) = postgres().await else {
        return;
    };
    rotation_reseals_everything_and_retires_the_old_key(fixture).await;
}

/// A server's refresh loop: reads a grant, opens its refresh token (reading the keyring again
/// when it is under a key not loaded yet), and writes a new refresh token, sealed under the key
/// its vault has active, fenced by the version read. Remembers what it wrote last per user.
struct Writer {
    store: SharedStore,
    vault: VaultHandle,
    written: Mutex<HashMap<String, String>>,
    writes: AtomicU64,
    conflicts: AtomicU64,
    under_old_key: AtomicU64,
    stop: AtomicBool,
}

impl Writer {
    async fn run(self: Arc<Self>) {
        let mut n = 0usize;
        while !self.stop.load(Ordering::SeqCst) {
            n += 1;
            let sub = sub(n * 7 % USERS);
            let grant = self.store.grant(&sub).await.unwrap().unwrap();
            let held = grant.refresh_token.unwrap();
            let opened = self
                .vault
                .open_secret(&held.sealed, Aad::refresh_token(&sub))
                .await
                .unwrap();
            {
                let written = self.written.lock().unwrap();
                assert_eq!(opened.expose_secret(), written[&sub], "{sub} lost a write");
            }
            let new = SecretString::from(format!("1//rt-{sub}-{n}"));
            let vault = self.vault.get();
            let sealed = vault.seal_secret(&new, Aad::refresh_token(&sub)).unwrap();
            if key_id_of(&sealed).unwrap() == KeyId(1) {
                self.under_old_key.fetch_add(1, Ordering::SeqCst);
            }
            let refresh = RefreshSuccess {
                access_token: SealedAccessToken {
                    sealed: vault
                        .seal(format!("ya29.{n}").as_bytes(), Aad::access_token(&sub))
                        .unwrap(),
                    expires_at: now() + time::Duration::hours(1),
                },
                refresh_token: Some(SealedRefreshToken {
                    sealed,
                    fingerprint: fingerprint(&new),
                }),
                scopes: None,
                at: now(),
            };
            match self
                .store
                .record_refresh(&sub, grant.version, refresh)
                .await
            {
                Ok(_) => {
                    self.written
                        .lock()
                        .unwrap()
                        .insert(sub, new.expose_secret().to_owned());
                    self.writes.fetch_add(1, Ordering::SeqCst);
                }
                Err(StoreError::Conflict) => {
                    self.conflicts.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
}

async fn a_refresh_during_rotation_is_never_overwritten(fixture: Fixture) {
    let store = fixture.store.clone();
    let master = signed_in(&store).await;
    // The "server" loaded its keyring before the rotation, and reads it again every 50 ms (as a
    // server does every 30 s) or when it meets an unknown key.
    let vault = VaultHandle::with_source(
        load_vault(store.as_ref(), &master, &SystemClock)
            .await
            .unwrap(),
        Arc::new(StoreKeyring::new(store.clone(), &master).unwrap()),
    );
    spawn_reloader(&vault, Duration::from_millis(50));
    let writer = Arc::new(Writer {
        store: store.clone(),
        vault: vault.clone(),
        written: Mutex::new(initial_tokens()),
        writes: AtomicU64::new(0),
        conflicts: AtomicU64::new(0),
        under_old_key: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let running = tokio::spawn(writer.clone().run());
    // The writer is under way before the new key exists.
    while writer.writes.load(Ordering::SeqCst) < 20 {
        assert!(!running.is_finished(), "the writer stopped");
        tokio::task::yield_now().await;
    }

    let mut rotation = Rotation::begin(store.clone(), &master, SystemClock::shared())
        .await
        .unwrap();
    let before = writer.writes.load(Ordering::SeqCst);
    let summary = rotation
        .run(
            &RotationOptions {
                batch_size: 10,
                // Longer than the writer needs to read the keyring again.
                grace: Duration::from_secs(1),
                passes: 5,
            },
            stop_never(),
            &|_| {},
        )
        .await
        .unwrap();
    let during = writer.writes.load(Ordering::SeqCst) - before;
    writer.stop.store(true, Ordering::SeqCst);
    running.await.unwrap();

    assert!(summary.finished(), "{summary:?}");
    assert_eq!(summary.retired, [1]);
    assert!(during > 0, "the writer wrote while the rotation ran");
    assert_eq!(
        writer.conflicts.load(Ordering::SeqCst),
        0,
        "a re-seal never moves the fence a refresh holds"
    );
    assert_eq!(
        vault.get().active(),
        Some(KeyId(2)),
        "the server switched keys"
    );
    // Every refresh token opens, with the new key alone, to what the writer wrote last.
    let fresh = fresh_vault(&store, &master).await;
    assert_eq!(fresh.key_ids(), [KeyId(2)]);
    let written = writer.written.lock().unwrap().clone();
    assert_all_under(&store, &fresh, 2, &written).await;
    assert_eq!(store.count_sealed().await.unwrap().outside(2), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_during_rotation_is_never_overwritten_sqlite() {
    a_refresh_during_rotation_is_never_overwritten(sqlite().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_during_rotation_is_never_overwritten_postgres() {
    let Some(fixture) = postgres().await else {
        return;
    };
    a_refresh_during_rotation_is_never_overwritten(fixture).await;
}

async fn a_stopped_rotation_resumes_without_a_third_key(fixture: Fixture) {
    let store = fixture.store.clone();
    let master = signed_in(&store).await;
    let mut rotation = Rotation::begin(store.clone(), &master, SystemClock::shared())
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let summary = rotation
        .run(&no_grace(25), stopped, &|e| {
            if matches!(e, RotationEvent::Batch { .. }) {
                stop.send_replace(true);
            }
        })
        .await
        .unwrap();
    assert!(summary.interrupted && !summary.finished(), "{summary:?}");
    assert_eq!((summary.resealed, summary.retired.len()), (25, 0));
    let counts = store.count_sealed().await.unwrap();
    assert_eq!(counts.by_key, BTreeMap::from([(1, 376), (2, 25)]));

    let mut resumed = Rotation::begin(store.clone(), &master, SystemClock::shared())
        .await
        .unwrap();
    assert_eq!((resumed.key(), resumed.resumed()), (2, true));
    let summary = resumed
        .run(&no_grace(25), stop_never(), &|_| {})
        .await
        .unwrap();
    assert!(summary.finished() && summary.resumed, "{summary:?}");
    assert_eq!(summary.resealed, 376);
    assert_eq!(summary.retired, [1]);
    let statuses = store.data_key_statuses().await.unwrap();
    assert_eq!(
        statuses.iter().map(|k| k.id).collect::<Vec<_>>(),
        [1, 2],
        "no third key"
    );
    assert_all_under(
        &store,
        &fresh_vault(&store, &master).await,
        2,
        &initial_tokens(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_rotation_resumes_without_a_third_key_sqlite() {
    a_stopped_rotation_resumes_without_a_third_key(sqlite().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_rotation_resumes_without_a_third_key_postgres() {
    let Some(fixture) = postgres().await else {
        return;
    };
    a_stopped_rotation_resumes_without_a_third_key(fixture).await;
}

/// A server started before the rotation hands out tokens afterwards: it opens values sealed
/// under a key it never loaded (reading the keyring again on the spot, long before its
/// periodic reload), and seals what it refreshes under the new key.
#[tokio::test]
async fn a_running_server_opens_values_under_a_key_it_had_not_loaded() {
    let app = TestApp::start().await;
    let mut subs = Vec::new();
    for i in 0..5 {
        let code = app.web_code(&format!("rot{i}@example.com")).await;
        let answer = app.authcode_web(&code).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        subs.push(answer.body["user"]["sub"].as_str().unwrap().to_owned());
    }
    assert_eq!(app.app.vault().key_ids(), [KeyId(1)]);

    // Another process rotates the keys of the server's store, with the server's master key.
    let store = app.app.store().clone();
    let master = app.master.try_clone().unwrap();
    let mut rotation = Rotation::begin(store.clone(), &master, SystemClock::shared())
        .await
        .unwrap();
    let summary = rotation
        .run(&no_grace(2), stop_never(), &|_| {})
        .await
        .unwrap();
    assert!(summary.finished(), "{summary:?}");
    assert_eq!(app.app.vault().key_ids(), [KeyId(1)], "not loaded yet");

    for sub in &subs {
        // Longer than the held token lasts: the stored grant is read and refreshed.
        let token = app
            .app
            .broker()
            .access_token(
                sub,
                &TokenRequest {
                    scopes: None,
                    min_ttl: Some(Duration::from_secs(3600)),
                },
            )
            .await
            .unwrap();
        assert!(token.token.expose_secret().starts_with("ya29."));
    }
    assert_eq!(app.app.vault().key_ids(), [KeyId(2)], "read again, once");
    assert_eq!(app.app.vault().active(), Some(KeyId(2)));
    // What the server wrote since is sealed under the new key.
    let counts = store.count_sealed().await.unwrap();
    assert_eq!(counts.by_key, BTreeMap::from([(2, 2 * subs.len() as u64)]));
}

/// A writer that read a value under the old key before its re-seal and writes after it (a
/// server that had not read the new key yet): the verification pass counts that value and the
/// next pass re-seals it, keeping what the writer wrote.
async fn a_value_written_under_the_old_key_is_taken_by_another_pass(fixture: Fixture) {
    let store = fixture.store.clone();
    let master = signed_in(&store).await;
    let old_vault = load_vault(store.as_ref(), &master, &SystemClock)
        .await
        .unwrap();
    let mut rotation = Rotation::begin(store.clone(), &master, SystemClock::shared())
        .await
        .unwrap();
    let late = SecretString::from("1//written-late");
    let written = AtomicBool::new(false);
    let events = Mutex::new(Vec::new());
    let summary = rotation
        .run(&no_grace(50), stop_never(), &|e| {
            events.lock().unwrap().push(e.clone());
            let refresh_tokens_done = matches!(
                e,
                RotationEvent::Batch {
                    column: grantkeeper_store::SealedColumn::AccessToken,
                    ..
                }
            );
            if refresh_tokens_done && !written.swap(true, Ordering::SeqCst) {
                // Every refresh token is under key 2 now; user 0's is replaced under key 1.
                tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current().block_on(async {
                        let sub = sub(0);
                        let grant = store.grant(&sub).await.unwrap().unwrap();
                        let sealed = old_vault
                            .seal_secret(&late, Aad::refresh_token(&sub))
                            .unwrap();
                        let access = grant.access_token.clone().unwrap();
                        store
                            .record_refresh(
                                &sub,
                                grant.version,
                                RefreshSuccess {
                                    access_token: access,
                                    refresh_token: Some(SealedRefreshToken {
                                        sealed,
                                        fingerprint: fingerprint(&late),
                                    }),
                                    scopes: None,
                                    at: now(),
                                },
                            )
                            .await
                            .unwrap();
                    })
                });
            }
        })
        .await
        .unwrap();
    assert!(written.load(Ordering::SeqCst));
    assert!(summary.finished(), "{summary:?}");
    assert_eq!(summary.passes, 2);
    let events = events.into_inner().unwrap();
    assert!(events.contains(&RotationEvent::Verified {
        pass: 1,
        remaining: 1
    }));
    assert!(events.contains(&RotationEvent::Verified {
        pass: 2,
        remaining: 0
    }));
    let mut expected = initial_tokens();
    expected.insert(sub(0), late.expose_secret().to_owned());
    assert_all_under(&store, &fresh_vault(&store, &master).await, 2, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_written_under_the_old_key_is_taken_by_another_pass_sqlite() {
    a_value_written_under_the_old_key_is_taken_by_another_pass(sqlite().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_written_under_the_old_key_is_taken_by_another_pass_postgres() {
    let Some(fixture) = postgres().await else {
        return;
    };
    a_value_written_under_the_old_key_is_taken_by_another_pass(fixture).await;
}

/// A value that does not open (here: copied into another user's row) is reported, and its key
/// is kept, never retired; once the value is gone, a rerun resumes and retires the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_does_not_open_keeps_its_key() {
    let fixture = sqlite().await.unwrap();
    let store = fixture.store.clone();
    let master = signed_in(&store).await;
    let stolen = store
        .grant(&sub(1))
        .await
        .unwrap()
        .unwrap()
        .refresh_token
        .unwrap();
    let victim = store.grant(&sub(2)).await.unwrap().unwrap();
    store
        .record_refresh(
            &sub(2),
            victim.version,
            RefreshSuccess {
                access_token: victim.access_token.clone().unwrap(),
                refresh_token: Some(stolen),
                scopes: None,
                at: now(),
            },
        )
        .await
        .unwrap();

    let mut rotation = Rotation::begin(store.clone(), &master, SystemClock::shared())
        .await
        .unwrap();
    let summary = rotation
        .run(&no_grace(64), stop_never(), &|_| {})
        .await
        .unwrap();
    assert!(!summary.finished() && !summary.interrupted, "{summary:?}");
    assert_eq!(summary.remaining, 1);
    assert_eq!(summary.kept, [1]);
    assert!(summary.retired.is_empty());
    // Every pass met it again.
    assert_eq!(summary.unreadable, u64::from(summary.passes));
    let statuses = store.data_key_statuses().await.unwrap();
    assert_eq!(
        statuses
            .iter()
            .map(|k| (k.id, k.retired_at.is_some(), k.sealed_values))
            .collect::<Vec<_>>(),
        [(1, false, 1), (2, false, 400)]
    );

    assert!(store.delete_user(&sub(2)).await.unwrap());
    let mut resumed = Rotation::begin(store.clone(), &master, SystemClock::shared())
        .await
        .unwrap();
    assert_eq!((resumed.key(), resumed.resumed()), (2, true));
    let summary = resumed
        .run(&no_grace(64), stop_never(), &|_| {})
        .await
        .unwrap();
    assert!(summary.finished(), "{summary:?}");
    assert_eq!((summary.resealed, summary.retired.clone()), (0, vec![1]));
}
