//! Rotating the data keys of a store with 200 signed-in users, on SQLite and PostgreSQL: every
//! value ends under the new key and the old key is retired; a refresh writer running
//! meanwhile (as a server that has not read the new key yet would) loses nothing; a value
//! written under the old key after the rotation began is refused, and written again under the
//! new one; a rotation stopped midway resumes without a third key; a running server opens
//! values sealed under a key it had not loaded, and seals what it writes under the new key
//! even before it reads the keyring again; a grace shorter than twice the reload interval is
//! refused; and a server whose keyring cannot be read for longer than an interval stops
//! sealing, answering 503, until it can.

use crate::server::harness::{Options, TestApp};
use grantkeeper_broker::TokenRequest;
use grantkeeper_core::{
    Aad, ExposeSecret, KeyId, MasterKey, Scopes, SecretString, SystemClock, UserProfile, Vault,
    VaultHandle, fingerprint, vault::key_id_of,
};
use grantkeeper_server::apikeys::KeyScope;
use grantkeeper_server::vault::keyring::{StoreKeyring, keep_reloading, load_vault, vault_from};
use grantkeeper_server::vault::rotation::{Rotation, RotationEvent, RotationOptions};
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
                session: None,
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

/// A rotation with no server running: nothing reads the keyring, so old keys may be retired
/// at once.
fn no_grace(batch_size: u32) -> RotationOptions {
    RotationOptions {
        batch_size,
        grace: Duration::ZERO,
        reload_interval: Duration::ZERO,
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
    vault_from(&store.data_keys().await.unwrap(), master, None)
        .await
        .unwrap()
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
/// its vault has active, fenced by the version read; when the store refuses that key (a
/// rotation made another active), it reads the keyring again and writes anew. Remembers what
/// it wrote last per user.
struct Writer {
    store: SharedStore,
    vault: VaultHandle,
    written: Mutex<HashMap<String, String>>,
    writes: AtomicU64,
    conflicts: AtomicU64,
    under_old_key: AtomicU64,
    /// Writes the store refused for the key they were sealed under.
    refused: AtomicU64,
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
                Err(StoreError::InactiveKey) => {
                    self.refused.fetch_add(1, Ordering::SeqCst);
                    self.vault
                        .reload_after_refusal(vault.active().unwrap())
                        .await
                        .unwrap();
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
    let loaded = load_vault(store.as_ref(), &master, &SystemClock)
        .await
        .unwrap();
    let keyring = StoreKeyring::new(
        store.clone(),
        Arc::new(master.try_clone().unwrap()),
        &loaded,
    );
    let vault = VaultHandle::with_source(loaded, Arc::new(keyring), SystemClock::shared());
    let (_reloading, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(keep_reloading(&vault, Duration::from_millis(50), stop));
    let writer = Arc::new(Writer {
        store: store.clone(),
        vault: vault.clone(),
        written: Mutex::new(initial_tokens()),
        writes: AtomicU64::new(0),
        conflicts: AtomicU64::new(0),
        under_old_key: AtomicU64::new(0),
        refused: AtomicU64::new(0),
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
                reload_interval: Duration::from_millis(50),
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

/// A writer that read a value under the old key before its re-seal and writes after it, sealed
/// under the old key (a server that had not read the new key yet): the store refuses the
/// write, the writer reads the keyring and writes under the new key, and the rotation's first
/// verification finds nothing left under the old key.
async fn a_value_written_under_the_old_key_is_refused_and_written_again(fixture: Fixture) {
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
                        let refresh = |sealed| RefreshSuccess {
                            access_token: access.clone(),
                            refresh_token: Some(SealedRefreshToken {
                                sealed,
                                fingerprint: fingerprint(&late),
                            }),
                            scopes: None,
                            at: now(),
                        };
                        assert!(matches!(
                            store
                                .record_refresh(&sub, grant.version, refresh(sealed))
                                .await,
                            Err(StoreError::InactiveKey)
                        ));
                        assert_eq!(store.grant(&sub).await.unwrap().unwrap(), grant);
                        let fresh = fresh_vault(&store, &master).await;
                        let sealed = fresh.seal_secret(&late, Aad::refresh_token(&sub)).unwrap();
                        store
                            .record_refresh(&sub, grant.version, refresh(sealed))
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
    assert_eq!(summary.passes, 1);
    let events = events.into_inner().unwrap();
    assert!(events.contains(&RotationEvent::Verified {
        pass: 1,
        remaining: 0
    }));
    let mut expected = initial_tokens();
    expected.insert(sub(0), late.expose_secret().to_owned());
    assert_all_under(&store, &fresh_vault(&store, &master).await, 2, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_written_under_the_old_key_is_refused_and_written_again_sqlite() {
    a_value_written_under_the_old_key_is_refused_and_written_again(sqlite().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_written_under_the_old_key_is_refused_and_written_again_postgres() {
    let Some(fixture) = postgres().await else {
        return;
    };
    a_value_written_under_the_old_key_is_refused_and_written_again(fixture).await;
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

/// The scenario of a rotation with a short grace while a server runs: the rotation retires
/// the old key before the server reads the keyring again, and users then sign in and refresh
/// on that server. Each write it seals under the old key is refused by the store, and written
/// again under the new key: nothing is left under the retired key, and once the server drops
/// that key, every value still opens (no `unknown key` 500).
#[tokio::test]
async fn a_server_that_has_not_read_a_rotation_seals_what_it_writes_under_the_new_key() {
    let app = TestApp::start().await;
    let key = app.api_key(&[KeyScope::Token]).await;
    let first = app.signed_in("before@example.com").await;
    let store = app.app.store().clone();
    let master = app.master.try_clone().unwrap();
    let mut rotation = Rotation::begin(store.clone(), &master, SystemClock::shared())
        .await
        .unwrap();
    let summary = rotation
        .run(&no_grace(10), stop_never(), &|_| {})
        .await
        .unwrap();
    assert_eq!(summary.retired, [1], "{summary:?}");
    assert_eq!(app.app.vault().active(), Some(KeyId(1)), "not read yet");

    // A new user, the first one again, and a refresh: all sealed by a server that seals under
    // key 1, which the store no longer takes.
    let second = app.signed_in("after@example.com").await;
    assert_eq!(app.signed_in("before@example.com").await, first);
    let refreshed = app
        .v1(
            "POST",
            &format!("/v1/users/{first}/token"),
            Some(&key),
            Some(serde_json::json!({"min_ttl": 3600})),
        )
        .await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
    assert_eq!(app.app.vault().active(), Some(KeyId(2)), "read on refusal");
    let counts = store.count_sealed().await.unwrap();
    assert_eq!(
        counts.by_key,
        BTreeMap::from([(2, 4)]),
        "nothing under key 1"
    );

    // The server drops the retired key at its next read; every value still opens.
    app.app.vault_handle().reload().await.unwrap();
    assert_eq!(app.app.vault().key_ids(), [KeyId(2)]);
    for sub in [&first, &second] {
        let answer = app
            .v1(
                "POST",
                &format!("/v1/users/{sub}/token"),
                Some(&key),
                Some(serde_json::json!({"min_ttl": 3600})),
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
    }
    let fresh = fresh_vault(&store, &master).await;
    for sub in [&first, &second] {
        let grant = store.grant(sub).await.unwrap().unwrap();
        fresh
            .open(
                &grant.refresh_token.unwrap().sealed,
                Aad::refresh_token(sub),
            )
            .unwrap();
        fresh
            .open(&grant.access_token.unwrap().sealed, Aad::access_token(sub))
            .unwrap();
    }
}

/// Retirement waits at least twice the servers' reload interval: a shorter grace is refused
/// before anything is re-sealed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grace_shorter_than_twice_the_reload_interval_is_refused() {
    let fixture = sqlite().await.unwrap();
    let store = fixture.store.clone();
    let master = signed_in(&store).await;
    let mut rotation = Rotation::begin(store.clone(), &master, SystemClock::shared())
        .await
        .unwrap();
    for grace in [Duration::ZERO, Duration::from_secs(59)] {
        let refused = rotation
            .run(
                &RotationOptions {
                    grace,
                    ..RotationOptions::default()
                },
                stop_never(),
                &|_| panic!("nothing runs"),
            )
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("pass at least 60 s"),
            "{refused}"
        );
    }
    assert_eq!(store.count_sealed().await.unwrap().under(1), 401);
    let shorter = RotationOptions {
        grace: Duration::from_secs(2),
        reload_interval: Duration::from_secs(1),
        ..no_grace(100)
    };
    assert!(
        rotation
            .run(&shorter, stop_never(), &|_| {})
            .await
            .unwrap()
            .finished()
    );
}

/// A server whose keyring reads keep failing (here: its store's active data key is one it has
/// not loaded and the master key does not open, as when a rotation elsewhere made a key while
/// the server's Cloud KMS is down; keys it holds are not unwrapped again) stops sealing once they have failed for longer than one interval: a
/// sign-in answers 503 before its code is spent, a refresh 503 before Google is asked. Once a
/// read succeeds again, it works again.
#[tokio::test]
async fn a_server_that_cannot_read_its_keys_for_longer_than_an_interval_stops_sealing() {
    let app = TestApp::start_with(Options {
        keyring_reload: Some("1s"),
        ..Options::default()
    })
    .await;
    let key = app.api_key(&[KeyScope::Token]).await;
    let sub = app.signed_in("stale@example.com").await;
    let db = rusqlite::Connection::open(app.db_dir().join("grantkeeper.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    for statement in [
        "UPDATE data_keys SET active = 0 WHERE id = 1",
        "INSERT INTO data_keys (id, wrapped, created_at, active, wrapped_by)
         VALUES (2, x'0100000000', 0, 1, 'local')",
    ] {
        db.execute_batch(statement).unwrap();
    }
    // The first failed read is tolerated; past a second interval, nothing is sealed.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let exchanges = app.stats().await["code_exchanges"].clone();
    let refreshes = app.stats().await["refreshes"].clone();
    let code = app.web_code("stale-2@example.com").await;
    let refused = app.authcode_web(&code).await;
    refused.assert_error(503, "upstream_unavailable");
    assert!(refused.headers.contains_key("retry-after"));
    let token = app
        .v1(
            "POST",
            &format!("/v1/users/{sub}/token"),
            Some(&key),
            Some(serde_json::json!({"min_ttl": 3600})),
        )
        .await;
    token.assert_error(503, "upstream_unavailable");
    let stats = app.stats().await;
    assert_eq!(stats["code_exchanges"], exchanges, "the code was not spent");
    assert_eq!(stats["refreshes"], refreshes, "Google was not asked");

    for statement in [
        "DELETE FROM data_keys WHERE id = 2",
        "UPDATE data_keys SET active = 1 WHERE id = 1",
    ] {
        db.execute_batch(statement).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let answer = app.authcode_web(&code).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let token = app
        .v1(
            "POST",
            &format!("/v1/users/{sub}/token"),
            Some(&key),
            Some(serde_json::json!({"min_ttl": 3600})),
        )
        .await;
    assert_eq!(token.status, 200, "{}", token.text);
}
