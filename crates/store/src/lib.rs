//! grantkeeper's persistence.
//!
//! Owns: users, grants (state, scopes, sealed tokens, fencing version), grant state history
//! (which is also the webhook's outbox), sessions (of users, and of operators in the admin
//! console, with its user search), the wrapped data keys of the vault, API keys, the audit
//! trail, jobs with their items (the sweeps' among them) and per-minute activity counts (summed across instances,
//! for the console's charts), Cross-Account Protection's received event ids and sign-in blocks
//! ([`RiscStore`]), behind narrow async traits split by capability, so
//! each caller asks only for what it needs. For instances sharing a database
//! it also owns refresh leases (one refresher of a grant at a time); and exports and imports, which move a deployment from one
//! store to another of either backend. SQLite is the embedded backend; PostgreSQL serves
//! several instances sharing one database. Both satisfy the same traits and pass the same
//! conformance suite; each keeps its own migrations, and the rules of what a write becomes
//! (`merge`), of what a row must hold (`rows`) and of what an export carries (`transfer`) are
//! shared.
//!
//! Leaves to others: sealing and opening (values arrive sealed and leave sealed; the store
//! never sees a plaintext token), deciding what a grant's state should be beyond the rules
//! documented on [`UserStore::record_sign_in`] and [`GrantStore`], delivering webhooks, and
//! HTTP.
//!
//! It also keeps the revocation queue ([`RevocationQueueStore`]): tokens of grants revoked or
//! deleted here whose revocation at the provider has not got through yet, until a retry does.
//!
//! Sealed values, each bound by its AAD to its row (what re-sealing under a new data key must
//! cover): `grants.refresh_token` (`Aad::refresh_token(sub)`), `grants.access_token`
//! (`Aad::access_token(sub)`), `pending_revocations.token` (`Aad::pending_revocation(id)`); and
//! `data_keys.wrapped`, wrapped by the master key (`data_key/<id>`).
//!
//! Times are whole seconds since the Unix epoch in the database, [`OffsetDateTime`] here.
// Indexing that may panic is refused outside tests (`get`, patterns, `split_at_checked`); not in
// [workspace.lints], which would reach the helpers of the integration tests too.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

// First: their macros (column lists, argument lists) are used by the modules below.
#[macro_use]
mod rows;
#[macro_use]
mod sql;
mod activity;
mod admin;
mod common;
mod counts;
mod error;
mod jobs;
mod merge;
mod postgres;
mod revocations;
mod risc;
mod rotation;
mod sqlite;
mod statements;
mod transfer;

pub use admin::{AdminSessionRecord, AdminSessionStore, UserSearch, UserSearchStore};
pub use error::StoreError;
pub use jobs::{
    ClaimedItem, ClaimedItems, ItemClaim, ItemState, JobCounts, JobRecord, JobState, JobStore,
    NewJob, SKIP_REASONS, Selection, Settle, SettleCounts, SettledItem, Slots, SubProgress,
    slot_us,
};
pub use postgres::PostgresStore;
pub use revocations::{PendingRevocation, RevocationQueueStore, RevocationTokenKind};
pub use risc::{MAX_SUBJECT_MATCHES, RiscStore, SignInBlock, TokenLookup};
pub use rotation::{
    DataKeyStatus, KeyRotationStore, Reseal, SealedColumn, SealedCounts, SealedValue,
};
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use grantkeeper_core::{GrantState, Scopes, SharedClock, UserProfile};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The most rows one page of [`GrantStore::list_users`], [`AuditStore::audit`] or
/// [`TransferStore::export_page`] holds; a larger `limit` is lowered to it.
pub const MAX_PAGE: u32 = 1000;
/// The page size of a `limit` of 0 (as in `AuditFilter::default()`).
pub const DEFAULT_PAGE: u32 = 100;

/// The page size a `limit` asks for.
pub(crate) fn page_limit(limit: u32) -> u32 {
    match limit {
        0 => DEFAULT_PAGE,
        limit => limit.min(MAX_PAGE),
    }
}

/// A page of [`GrantStore::list_users`] from up to `limit + 1` users read in order: one row
/// more than asked says whether another page follows.
pub(crate) fn user_page(mut users: Vec<(UserRecord, GrantRecord)>, limit: u32) -> UserPage {
    let limit = limit as usize;
    let next = if users.len() > limit {
        users.truncate(limit);
        users.last().map(|(user, _)| user.profile.sub.clone())
    } else {
        None
    };
    UserPage { users, next }
}

/// A user row.
#[derive(Clone, Debug, PartialEq)]
pub struct UserRecord {
    pub profile: UserProfile,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub last_sign_in_at: Option<OffsetDateTime>,
}

/// Kept with the sealed refresh token; defined in core, where it is computed.
pub use grantkeeper_core::TokenFingerprint;

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
    /// if the row still has `v` (fencing across instances). Re-sealing a token under another
    /// data key changes no value and leaves it as it is ([`KeyRotationStore::reseal`]).
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
    /// The session the sign-in opens, written in its transaction (None: no session).
    pub session: Option<SessionRecord>,
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

/// What [`UserStore::record_sign_in_unless_blocked`] did.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // the sign-in's common answer, moved once: no box to allocate
pub enum SignInRecorded {
    /// The sign-in was committed, as [`UserStore::record_sign_in`] commits it.
    Recorded(SignInOutcome),
    /// Sign-in is blocked for the user ([`RiscStore::block_sign_in`]): nothing was written.
    Blocked(SignInBlock),
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
    /// - every change of state appends a [`GrantEvent`]; `version` is incremented;
    /// - the session, when given, is created in the same transaction, which also deletes the
    ///   user's expired sessions and the oldest beyond [`MAX_SESSIONS_PER_USER`].
    async fn record_sign_in(&self, sign_in: SignIn) -> Result<SignInOutcome>;

    /// As [`UserStore::record_sign_in`], unless sign-in is blocked for the user
    /// ([`RiscStore::block_sign_in`]): then nothing is written and the block is answered. The
    /// check is made in the transaction of the writes, in the same round trip.
    async fn record_sign_in_unless_blocked(&self, sign_in: SignIn) -> Result<SignInRecorded>;

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

/// The most live sessions one user keeps. Writing a session (a sign-in's, or
/// [`SessionStore::create_session`]) deletes, in the same statement, the user's sessions expired
/// by the new one's `created_at` and the oldest others (by `created_at`, then by hash) beyond
/// this many with the new one, which is always kept (migration 25 on both backends).
pub const MAX_SESSIONS_PER_USER: usize = 20;

#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Fails with [`StoreError::NotFound`] when the user does not exist. Bounds the user's
    /// sessions as [`MAX_SESSIONS_PER_USER`] says.
    async fn create_session(&self, session: SessionRecord) -> Result<()>;
    /// The session, if it exists and has not expired at `now`.
    async fn session(&self, id_hash: &str, now: OffsetDateTime) -> Result<Option<SessionRecord>>;
    /// Returns true when a session was deleted.
    async fn delete_session(&self, id_hash: &str) -> Result<bool>;
    async fn delete_user_sessions(&self, sub: &str) -> Result<u64>;
    /// Deletes every session expired at `now` (`expires_at <= now`); returns how many.
    async fn purge_expired_sessions(&self, now: OffsetDateTime) -> Result<u64>;
}

/// A data key of the vault, wrapped by the master key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataKeyRecord {
    pub id: u32,
    pub wrapped: Vec<u8>,
    pub created_at: OffsetDateTime,
    pub active: bool,
    /// The label of the master key source that wrapped it (`local`, `kms:projects/...`,
    /// `pkcs11:...`); None for a key recorded before sources were (the local master key's).
    pub wrapped_by: Option<String>,
}

#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Every data key that is not retired (see [`KeyRotationStore::retire_data_key`]), oldest
    /// first.
    async fn data_keys(&self) -> Result<Vec<DataKeyRecord>>;
    /// Inserts `candidate` as the active key only if no key is active yet (the first start of
    /// a deployment; several instances may race here and exactly one wins), then returns
    /// every key. The caller chooses `candidate.id` (its wrapping binds that id), normally one
    /// more than the highest id; an id already taken means the race was lost and nothing is
    /// inserted.
    async fn ensure_data_key(&self, candidate: DataKeyRecord) -> Result<Vec<DataKeyRecord>>;
}

/// A page of users, ordered by `sub`.
#[derive(Clone, Debug, PartialEq)]
pub struct UserPage {
    pub users: Vec<(UserRecord, GrantRecord)>,
    /// The `sub` to pass as `after` for the next page; None on the last page.
    pub next: Option<String>,
}

/// What a successful refresh brings to a grant.
#[derive(Clone, Debug)]
pub struct RefreshSuccess {
    pub access_token: SealedAccessToken,
    /// Google does not rotate refresh tokens, but one that arrives replaces the held one.
    pub refresh_token: Option<SealedRefreshToken>,
    /// The `scope` of the refresh response, when it had one.
    pub scopes: Option<Scopes>,
    pub at: OffsetDateTime,
}

/// A change of a grant's state decided by the broker, RISC, disconnect or an operator.
#[derive(Clone, Debug)]
pub struct StateUpdate {
    pub state: GrantState,
    /// Why, for people: e.g. "invalid_grant at refresh: Token has been expired or revoked."
    pub reason: String,
    /// Recorded as `last_error` (None leaves it as it is).
    pub error: Option<String>,
    /// Erase the held refresh and access tokens (revocation: they are dead anyway).
    pub drop_tokens: bool,
    pub at: OffsetDateTime,
}

#[async_trait]
pub trait GrantStore: Send + Sync {
    /// The grant of one user.
    async fn grant(&self, sub: &str) -> Result<Option<GrantRecord>>;

    /// Records a refresh, fenced: written only if the grant still has `expected_version`,
    /// else [`StoreError::Conflict`] (another instance wrote meanwhile: re-read and use its
    /// token). A `failing` grant becomes `active` (with an event); `last_error` is cleared;
    /// `last_refresh_at = at`; version incremented. Returns the row as written.
    async fn record_refresh(
        &self,
        sub: &str,
        expected_version: i64,
        refresh: RefreshSuccess,
    ) -> Result<GrantRecord>;

    /// Changes a grant's state (appending an event when the state changes) and records the
    /// error. With `expected_version`, fenced as [`GrantStore::record_refresh`]. Unknown user:
    /// [`StoreError::NotFound`].
    ///
    /// Two guards keep the states meaningful: `failing` does not revive a `revoked` or
    /// `needs_consent` grant (it keeps its state; the error is recorded), and `active` or
    /// `failing` without a held refresh token (none held, or `drop_tokens`) becomes
    /// `needs_consent`. `reason` becomes the grant's reason when the state changes; version
    /// incremented; `updated_at = at`.
    async fn update_grant_state(
        &self,
        sub: &str,
        expected_version: Option<i64>,
        update: StateUpdate,
    ) -> Result<(GrantRecord, Option<GrantEvent>)>;

    /// Users with their grants, ordered by `sub`, starting after `after`. `limit` is capped at
    /// [`MAX_PAGE`]; 0 means [`DEFAULT_PAGE`].
    async fn list_users(&self, after: Option<&str>, limit: u32) -> Result<UserPage>;

    /// Deletes a user with their grant, sessions and history. Returns false when unknown.
    async fn delete_user(&self, sub: &str) -> Result<bool>;

    /// How many users there are (for progress bars).
    async fn count_users(&self) -> Result<u64>;

    /// How many grants are in each state: every state of [`GrantState::ALL`], in that order,
    /// zero when none (the `grantkeeper_grants` gauge and the admin console).
    async fn count_grants_by_state(&self) -> Result<Vec<(GrantState, u64)>>;
}

/// An API key of an app service. Only a SHA-256 of the secret is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Public identifier, shown in listings and audit rows (e.g. `key_3f9a...`).
    pub id: String,
    pub name: String,
    /// Hex SHA-256 of the secret.
    pub hash: String,
    /// Capabilities: `token`, `proxy`, `users:read`, `users:write`.
    pub scopes: Vec<String>,
    pub created_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
}

#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    /// [`StoreError::AlreadyExists`] when the id or hash is taken.
    async fn create_api_key(&self, key: ApiKeyRecord) -> Result<()>;
    /// The key with this hash, revoked or not.
    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>>;
    /// Every key, oldest first.
    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>>;
    /// Returns false when no unrevoked key has this id.
    async fn revoke_api_key(&self, id: &str, at: OffsetDateTime) -> Result<bool>;
}

/// One audited act of an app service or operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    /// Assigned by the store; ignored on append.
    pub id: i64,
    pub at: OffsetDateTime,
    /// Who: an API key id, or `cli`, `risc`, `session`.
    pub actor: String,
    /// Which user, when one.
    pub sub: Option<String>,
    /// What: `token`, `proxy`, `delete_user`, `revoke`, ...
    pub action: String,
    /// Scopes handed out, or `METHOD path` of a proxied call; never a token or a query string.
    pub detail: String,
    /// `ok`, or the error code answered (`grant_revoked`, `upstream_error`, ...).
    pub outcome: String,
    /// How many identical acts (same actor, user, action, detail and outcome) this row stands
    /// for: the server's audit writer keeps repeats within its window as one row. At least 1.
    pub times: u32,
    /// When the last of those acts happened: `at` when `times` is 1.
    pub last_at: OffsetDateTime,
}

impl AuditRecord {
    /// One act at `at` (`id` assigned by the store on append).
    pub fn single(
        at: OffsetDateTime,
        actor: impl Into<String>,
        sub: Option<String>,
        action: impl Into<String>,
        detail: impl Into<String>,
        outcome: impl Into<String>,
    ) -> AuditRecord {
        AuditRecord {
            id: 0,
            at,
            actor: actor.into(),
            sub,
            action: action.into(),
            detail: detail.into(),
            outcome: outcome.into(),
            times: 1,
            last_at: at,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub sub: Option<String>,
    pub since: Option<OffsetDateTime>,
    /// Only rows with a smaller id (paging backwards).
    pub before_id: Option<i64>,
    pub limit: u32,
}

#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends many rows in one transaction (the server batches them off the hot path).
    async fn append_audit(&self, records: Vec<AuditRecord>) -> Result<()>;
    /// Newest first; the filters combine. `limit` is capped at [`MAX_PAGE`]; 0 means
    /// [`DEFAULT_PAGE`].
    async fn audit(&self, filter: AuditFilter) -> Result<Vec<AuditRecord>>;
}

/// A grant event waiting for (or given to) the webhook. The grant_events table is the outbox:
/// an event is committed with the state change it describes, so none is lost.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingEvent {
    pub event: GrantEvent,
    pub attempts: u32,
    pub next_attempt_at: OffsetDateTime,
}

#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Undelivered events due at `now`, oldest first.
    async fn due_events(&self, now: OffsetDateTime, limit: u32) -> Result<Vec<PendingEvent>>;
    /// Marking again keeps the first time. Unknown event: [`StoreError::NotFound`].
    async fn mark_delivered(&self, event_id: i64, at: OffsetDateTime) -> Result<()>;
    /// Counts a failed attempt and schedules the next (nothing changes for an event already
    /// delivered). Unknown event: [`StoreError::NotFound`].
    async fn mark_failed(&self, event_id: i64, next_attempt_at: OffsetDateTime) -> Result<()>;
}

/// A short exclusive right to refresh one grant, across every instance sharing the store.
/// It expires by itself, so a crashed holder blocks the others no longer than the lease.
#[async_trait]
pub trait RefreshLeaseStore: Send + Sync {
    /// Takes the grant's refresh lease for `owner` until `until`, if nobody else holds an
    /// unexpired one at `now` (the holder may extend its own). Returns whether `owner` holds it
    /// now. Unknown user: [`StoreError::NotFound`]. Does not change the grant's `version`.
    async fn try_lease_refresh(
        &self,
        sub: &str,
        owner: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool>;
    /// [`RefreshLeaseStore::try_lease_refresh`], answering the grant as it is under the lease
    /// when `owner` holds it (None when another owner does): read after the lease is taken, so
    /// whatever the previous holder committed is in it. SQLite reads it in the lease's own
    /// transaction; PostgreSQL reads it right after the lease's commit.
    async fn try_lease_refresh_reading(
        &self,
        sub: &str,
        owner: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Option<GrantRecord>>;
    /// Gives the lease back if `owner` holds it.
    async fn release_refresh_lease(&self, sub: &str, owner: &str) -> Result<()>;
    /// [`GrantStore::record_refresh`], with the lease of `owner` given back in the same
    /// transaction: one commit where the two calls take two. When the fenced write fails,
    /// nothing changes and the lease stays held.
    async fn record_refresh_releasing(
        &self,
        sub: &str,
        expected_version: i64,
        refresh: RefreshSuccess,
        owner: &str,
    ) -> Result<GrantRecord>;
}

/// The kinds of records an export holds, in the order an import needs them. An export made
/// before a kind was exported holds none of it, and still imports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportKind {
    DataKey,
    User,
    Grant,
    GrantEvent,
    ApiKey,
    Audit,
    /// A queued revocation at the provider ([`RevocationQueueStore`]).
    PendingRevocation,
    /// A sign-in refused by Cross-Account Protection ([`RiscStore::block_sign_in`]).
    SignInBlock,
    /// A received security event's id ([`RiscStore::record_security_event`]).
    RiscEvent,
    /// A minute of one activity series ([`ActivityStore`]).
    Activity,
}

impl ExportKind {
    pub const ALL: [ExportKind; 10] = [
        ExportKind::DataKey,
        ExportKind::User,
        ExportKind::Grant,
        ExportKind::GrantEvent,
        ExportKind::ApiKey,
        ExportKind::Audit,
        ExportKind::PendingRevocation,
        ExportKind::SignInBlock,
        ExportKind::RiscEvent,
        ExportKind::Activity,
    ];
}

/// One row of a deployment, as an export carries it: every column, times as Unix seconds,
/// sealed values and wrapped keys as standard base64 (still sealed: the target needs the same
/// master key). Not exported, as transient: sessions of users and operators, refresh leases
/// and jobs (a job is work under way, not the deployment).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExportRecord {
    pub kind: ExportKind,
    /// The row's columns by name.
    pub row: serde_json::Map<String, serde_json::Value>,
}

#[async_trait]
pub trait TransferStore: Send + Sync {
    /// Up to `limit` rows of one kind in a stable order after `after` (the position the
    /// previous page returned), and the position after the last row (None when done).
    async fn export_page(
        &self,
        kind: ExportKind,
        after: Option<String>,
        limit: u32,
    ) -> Result<(Vec<ExportRecord>, Option<String>)>;
    /// Writes rows idempotently in one transaction: each row is inserted unless a row with the
    /// same key exists (users, grants, sign-in blocks: `sub`; data and API keys, events, audit,
    /// queued revocations: `id`; security events: `jti`; activity: `minute` and `series`), in
    /// which case it is left as it is. Identity sequences are moved past imported ids.
    async fn import(&self, records: Vec<ExportRecord>) -> Result<ImportCounts>;
}

/// How many rows an import inserted and how many it found already present.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportCounts {
    pub inserted: u64,
    pub present: u64,
}

/// Activity of one series during one minute, summed across instances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivityPoint {
    /// Start of the minute (UTC, seconds truncated to a multiple of 60).
    pub minute: OffsetDateTime,
    /// One of the [`series`] constants.
    pub series: String,
    pub count: u64,
    /// Sum and maximum of the durations of the timed series, in milliseconds (0 otherwise).
    pub total_ms: u64,
    pub max_ms: u64,
}

/// The names of the activity series (defined beside the metrics that count them). Only these
/// are written by grantkeeper itself; the store keeps any short name it is given.
pub use grantkeeper_core::metrics::series;

/// Per-minute counts of what the instances did, kept for the admin console's charts. Every
/// instance adds its own counts; the store sums them. Exported, so that the charts of a moved
/// or restored deployment keep their history; an import leaves a minute the target already
/// counts as it is.
#[async_trait]
pub trait ActivityStore: Send + Sync {
    /// Adds the points to the stored ones (count and total_ms summed, max_ms maxed), in one
    /// transaction. A minute that is not a whole minute is truncated to its start; points of
    /// the same minute and series within `points` are added together first.
    async fn add_activity(&self, points: Vec<ActivityPoint>) -> Result<()>;
    /// Points with `since <= minute < until`, ordered by minute then series.
    async fn activity(
        &self,
        since: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<Vec<ActivityPoint>>;
    /// Deletes points with `minute < before`; returns how many.
    async fn prune_activity(&self, before: OffsetDateTime) -> Result<u64>;
}

/// Declares a bundle of capabilities, the set one consumer uses, implemented by every type that
/// has them all: a consumer takes `Arc<dyn Bundle>` (a [`SharedStore`] converts to it), and a test
/// double or another backend implements only the capabilities in it.
macro_rules! bundle {
    ($(#[$doc:meta])* $name:ident: $first:path $(, $rest:path)*) => {
        $(#[$doc])*
        pub trait $name: $first $(+ $rest)* + Send + Sync {}
        impl<T: $first $(+ $rest)* + Send + Sync + ?Sized> $name for T {}
    };
}

bundle!(
    /// What the broker uses: grants, the refresh lease shared by instances, and the queue of
    /// revocations at the provider.
    BrokerStore: GrantStore, RefreshLeaseStore, RevocationQueueStore
);
bundle!(
    /// What the job engine uses: the broker's capabilities, and jobs with their items.
    JobsStore: BrokerStore, JobStore
);
bundle!(
    /// What signing in and sessions use: users, sessions, and Cross-Account Protection's
    /// sign-in blocks and records.
    SignInStore: UserStore, SessionStore, RiscStore
);
bundle!(
    /// What the admin console uses: operators' sessions and the API keys they sign in with, the
    /// user search and users' grants and history, the audit trail and activity.
    ConsoleStore: AdminSessionStore, ApiKeyStore, UserSearchStore, UserStore, GrantStore,
        AuditStore, ActivityStore
);
bundle!(
    /// What rotating the vault's data keys uses.
    RotationStore: KeyStore, KeyRotationStore
);
bundle!(
    /// What moving a deployment (export, import) uses: its rows, and the data keys that seal
    /// them.
    MoveStore: TransferStore, KeyStore
);

/// Everything the server needs from a store: every bundle, for the one process that assembles
/// them all.
#[async_trait]
pub trait Store:
    BrokerStore
    + JobsStore
    + JobStore
    + SignInStore
    + ConsoleStore
    + RotationStore
    + MoveStore
    + UserStore
    + SessionStore
    + KeyStore
    + GrantStore
    + ApiKeyStore
    + AuditStore
    + OutboxStore
    + RefreshLeaseStore
    + TransferStore
    + ActivityStore
    + AdminSessionStore
    + UserSearchStore
    + RiscStore
    + RevocationQueueStore
    + KeyRotationStore
    + Send
    + Sync
    + 'static
{
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// Checks that the database answers (readiness).
    async fn ping(&self) -> Result<()>;
    /// What other processes on this database drop, as they drop it, for an instance to forget
    /// what it holds in memory: on PostgreSQL, heard at once (`LISTEN`) and re-read every
    /// `recheck` in case a notification was missed; None on SQLite, where one process serves
    /// and forgets what it drops itself. `clock` times how long the re-reads have failed.
    /// Needs a Tokio runtime; stops when dropped.
    fn drop_feed(&self, recheck: Duration, clock: SharedClock) -> Option<DropFeed> {
        let _ = (recheck, clock);
        None
    }
}

/// Something a process sharing the database dropped, which the others must forget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// An API key revoked or deleted: its `hash` (hex SHA-256 of the secret).
    ApiKey(String),
    /// A grant whose tokens were dropped, that can no longer hand one out, or that was deleted:
    /// its `sub`.
    Grant(String),
    /// Drops may have been missed (the database could not be read for a while): forget
    /// everything.
    Everything,
}

/// The drops of other processes, in the order heard ([`Store::drop_feed`]). Its background
/// tasks end when it is dropped.
pub struct DropFeed {
    feed: tokio::sync::mpsc::Receiver<Dropped>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl DropFeed {
    pub(crate) fn new(
        feed: tokio::sync::mpsc::Receiver<Dropped>,
        tasks: Vec<tokio::task::JoinHandle<()>>,
    ) -> DropFeed {
        DropFeed { feed, tasks }
    }

    /// The next drop; None once the feed has stopped.
    pub async fn next(&mut self) -> Option<Dropped> {
        self.feed.recv().await
    }
}

impl Drop for DropFeed {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

pub type SharedStore = Arc<dyn Store>;

/// How a store connects to a database server. SQLite keeps its own fixed pools (one writer, a
/// few readers, a busy timeout) and reads none of this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// Connections one process keeps to the database at most.
    pub max_connections: u32,
    /// Longest time one statement may run (waiting for a row lock included) before the server
    /// cancels it and the store answers [`StoreError::Unavailable`]. Zero means no limit.
    pub statement_timeout: Duration,
    /// How long a caller waits for a connection (a new one, or a pooled one while all are
    /// busy) before the store answers [`StoreError::Unavailable`].
    pub connect_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 16,
            statement_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Opens the store named by `url` with [`StoreOptions::default`]; see [`open_with`].
pub async fn open(url: &str) -> Result<SharedStore> {
    open_with(url, &StoreOptions::default()).await
}

/// Opens the store named by `url` (`sqlite://PATH`, `sqlite::memory:`, `postgres://...` or
/// `postgresql://...`) and applies pending migrations. A SQLite database file is created if
/// needed; a PostgreSQL database must exist.
pub async fn open_with(url: &str, options: &StoreOptions) -> Result<SharedStore> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::open(url, options).await?))
    } else {
        // The URL is not echoed: a database URL may carry a password.
        let scheme = url.split_once(':').map_or("(none)", |(scheme, _)| scheme);
        Err(StoreError::Config(format!(
            "store.url scheme {scheme:?} is not supported: use sqlite://PATH or postgres://..."
        )))
    }
}
