//! grantkeeper's persistence.
//!
//! Owns: users, grants (state, scopes, sealed tokens, fencing version), grant state history,
//! sessions and the wrapped data keys of the vault, behind narrow async traits split by
//! capability, so each caller asks only for what it needs. SQLite is the embedded backend;
//! a PostgreSQL backend satisfies the same traits. Each backend keeps its own migrations.
//!
//! Leaves to others: sealing and opening (values arrive sealed and leave sealed; the store
//! never sees a plaintext token), deciding what a grant's state should be beyond the sign-in
//! merge rules documented on [`UserStore::record_sign_in`], and HTTP.
//!
//! Times are whole seconds since the Unix epoch in the database, [`OffsetDateTime`] here.

mod error;
mod merge;
mod sqlite;

pub use error::StoreError;
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use grantkeeper_core::{GrantState, Scopes, UserProfile};
use std::sync::Arc;
use time::OffsetDateTime;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A user row.
#[derive(Clone, Debug, PartialEq)]
pub struct UserRecord {
    pub profile: UserProfile,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub last_sign_in_at: Option<OffsetDateTime>,
}

/// Fingerprints of a refresh token, so a RISC `token-revoked` event can find its grant
/// without the store holding the token: `hash` is base64(SHA-512(SHA-512(token))) as Google
/// sends it; `prefix_hash` is hex SHA-256 of the token's first 16 characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenFingerprint {
    pub hash: String,
    pub prefix_hash: String,
}

/// A refresh token, sealed by the vault for this user's row, with its fingerprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedRefreshToken {
    pub sealed: Vec<u8>,
    pub fingerprint: TokenFingerprint,
}

/// An access token sealed by the vault, with its expiry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedAccessToken {
    pub sealed: Vec<u8>,
    pub expires_at: OffsetDateTime,
}

/// A user's offline grant. One per user.
#[derive(Clone, Debug, PartialEq)]
pub struct GrantRecord {
    pub sub: String,
    pub state: GrantState,
    /// Scopes the held grant covers, normalised.
    pub scopes: Scopes,
    pub refresh_token: Option<SealedRefreshToken>,
    /// When the held refresh token was received.
    pub refresh_token_received_at: Option<OffsetDateTime>,
    pub access_token: Option<SealedAccessToken>,
    /// Why the grant is in its state (free text for people, never a token).
    pub reason: Option<String>,
    pub state_changed_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub last_refresh_at: Option<OffsetDateTime>,
    pub last_error: Option<String>,
    /// Incremented by every write to the row; a writer that read version `v` may write only
    /// if the row still has `v` (fencing across instances).
    pub version: i64,
}

impl GrantRecord {
    /// True when no usable refresh token is held and the user must consent again.
    pub fn needs_consent(&self) -> bool {
        self.refresh_token.is_none() || !self.state.is_usable()
    }
}

/// One change of a grant's state.
#[derive(Clone, Debug, PartialEq)]
pub struct GrantEvent {
    pub id: i64,
    pub sub: String,
    pub from: Option<GrantState>,
    pub to: GrantState,
    pub reason: String,
    pub at: OffsetDateTime,
}

/// What a verified sign-in brings to the store.
#[derive(Clone, Debug)]
pub struct SignIn {
    pub profile: UserProfile,
    /// The `scope` field of the token response: what the user actually granted.
    pub granted_scopes: Scopes,
    pub refresh_token: Option<SealedRefreshToken>,
    pub access_token: Option<SealedAccessToken>,
    pub at: OffsetDateTime,
}

/// What [`UserStore::record_sign_in`] committed.
#[derive(Clone, Debug, PartialEq)]
pub struct SignInOutcome {
    pub user: UserRecord,
    pub grant: GrantRecord,
    /// True when this sign-in created the user.
    pub created: bool,
    /// The state change it recorded, if the state changed.
    pub event: Option<GrantEvent>,
}

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Upserts the user and merges the grant in one transaction, committed before it returns.
    ///
    /// Merge rules:
    /// - the profile replaces the stored one (`sub` never changes); `last_sign_in_at = at`;
    /// - with a refresh token: it replaces the held one; the state becomes `active`; scopes
    ///   become the granted scopes, united with the held ones when the old grant was usable
    ///   (`active` or `failing`);
    /// - without one: the held refresh token is kept, never erased; scopes are united when the
    ///   grant is usable; a new grant without a token starts in `needs_consent`; a
    ///   `needs_consent` or `revoked` grant keeps its state and takes the granted scopes;
    /// - a new refresh token also clears `last_error`, which belonged to the token it replaces;
    /// - an access token, when given, replaces the held one;
    /// - every change of state appends a [`GrantEvent`]; `version` is incremented.
    async fn record_sign_in(&self, sign_in: SignIn) -> Result<SignInOutcome>;

    /// The user and their grant.
    async fn user(&self, sub: &str) -> Result<Option<(UserRecord, GrantRecord)>>;

    /// The state history of one grant, oldest first.
    async fn grant_events(&self, sub: &str) -> Result<Vec<GrantEvent>>;
}

/// A browser or app session. Only a hash of the session secret is stored.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionRecord {
    pub id_hash: String,
    pub sub: String,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Fails with [`StoreError::NotFound`] when the user does not exist.
    async fn create_session(&self, session: SessionRecord) -> Result<()>;
    /// The session, if it exists and has not expired at `now`.
    async fn session(&self, id_hash: &str, now: OffsetDateTime) -> Result<Option<SessionRecord>>;
    /// Returns true when a session was deleted.
    async fn delete_session(&self, id_hash: &str) -> Result<bool>;
    async fn delete_user_sessions(&self, sub: &str) -> Result<u64>;
    async fn purge_expired_sessions(&self, now: OffsetDateTime) -> Result<u64>;
}

/// A data key of the vault, wrapped by the master key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataKeyRecord {
    pub id: u32,
    pub wrapped: Vec<u8>,
    pub created_at: OffsetDateTime,
    pub active: bool,
}

#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Every data key, oldest first.
    async fn data_keys(&self) -> Result<Vec<DataKeyRecord>>;
    /// Inserts `candidate` as the active key only if no key is active yet (the first start of
    /// a deployment; several instances may race here and exactly one wins), then returns
    /// every key. The caller chooses `candidate.id` (its wrapping binds that id), normally one
    /// more than the highest id; an id already taken means the race was lost and nothing is
    /// inserted.
    async fn ensure_data_key(&self, candidate: DataKeyRecord) -> Result<Vec<DataKeyRecord>>;
}

/// Everything the server needs from a store.
#[async_trait]
pub trait Store: UserStore + SessionStore + KeyStore + Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// Checks that the database answers (readiness).
    async fn ping(&self) -> Result<()>;
}

pub type SharedStore = Arc<dyn Store>;

/// Opens the store named by `url` (`sqlite://path`, `sqlite::memory:`), creating the database
/// file if needed and applying pending migrations.
pub async fn open(url: &str) -> Result<SharedStore> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url).await?))
    } else {
        // The URL is not echoed: a database URL may carry a password.
        let scheme = url.split_once(':').map_or("(none)", |(scheme, _)| scheme);
        Err(StoreError::Config(format!(
            "store.url scheme {scheme:?} is not supported: use sqlite://PATH"
        )))
    }
}
