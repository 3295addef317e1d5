//! The revocation queue: tokens whose revocation at the provider has not got through yet.
//!
//! When a grant is revoked or its user deleted here while the provider cannot be reached (or
//! refuses grantkeeper's request), the grant is revoked here at once and its token waits in
//! this queue, sealed, until a retry revokes it at the provider. The traits and records are
//! here; each backend's statements are in its `revocations` module.
//!
//! The queued token is sealed by the vault under `Aad::pending_revocation(id)`, with the
//! entry's own `id` (chosen by the caller before the insert, `rev_<random>`); the store never
//! opens it, as for every sealed value.

use crate::rows::Columns;
use crate::{GrantEvent, GrantRecord, Result, StateUpdate, StoreError};
use async_trait::async_trait;
use time::OffsetDateTime;

/// Which of a grant's tokens a queued revocation holds: the refresh token, or the access token
/// of a grant that held no refresh token. Revoking either at Google ends the whole grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevocationTokenKind {
    Refresh,
    Access,
}

impl RevocationTokenKind {
    /// As the `token_kind` column keeps it.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationTokenKind::Refresh => "refresh",
            RevocationTokenKind::Access => "access",
        }
    }

    fn parse(text: &str) -> Result<Self> {
        match text {
            "refresh" => Ok(RevocationTokenKind::Refresh),
            "access" => Ok(RevocationTokenKind::Access),
            _ => Err(StoreError::Corrupt(
                "pending_revocations.token_kind holds an unknown kind".into(),
            )),
        }
    }
}

/// A revocation at the provider waiting for its next attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRevocation {
    /// Chosen by the caller (`rev_<random>`); the token's seal is bound to it.
    pub id: String,
    /// Whose grant the token was. Not tied to a user row: the user may be deleted meanwhile.
    pub sub: String,
    /// The token, sealed under `Aad::pending_revocation(id)`.
    pub token: Vec<u8>,
    pub token_kind: RevocationTokenKind,
    pub created_at: OffsetDateTime,
    /// Retries that failed so far.
    pub attempts: u32,
    pub next_attempt_at: OffsetDateTime,
    /// Why the last attempt failed, for people; never a token.
    pub last_error: Option<String>,
}

#[async_trait]
pub trait RevocationQueueStore: Send + Sync {
    /// Queues a revocation as given. [`StoreError::AlreadyExists`] when the id is taken.
    async fn enqueue_revocation(&self, revocation: PendingRevocation) -> Result<()>;

    /// Queues a revocation and changes the grant of `revocation.sub` as
    /// [`crate::GrantStore::update_grant_state`] does without a fence, in one transaction:
    /// either both are committed or neither is. Unknown user: [`StoreError::NotFound`], and
    /// nothing is queued.
    async fn enqueue_revocation_with_state(
        &self,
        revocation: PendingRevocation,
        update: StateUpdate,
    ) -> Result<(GrantRecord, Option<GrantEvent>)>;

    /// The entries due at `now` (`next_attempt_at <= now`), the longest due first (then by
    /// id). `limit` is capped at [`crate::MAX_PAGE`]; 0 means [`crate::DEFAULT_PAGE`].
    async fn due_revocations(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<PendingRevocation>>;

    /// Counts a failed attempt (`attempts + 1`), records `error` as `last_error` and schedules
    /// the next attempt. Unknown id (another instance revoked it meanwhile):
    /// [`StoreError::NotFound`].
    async fn mark_revocation_failed(
        &self,
        id: &str,
        next_attempt_at: OffsetDateTime,
        error: &str,
    ) -> Result<()>;

    /// Removes an entry once its token is revoked. False when there was none with this id.
    async fn delete_revocation(&self, id: &str) -> Result<bool>;

    /// How many entries wait.
    async fn count_revocations(&self) -> Result<u64>;
}

/// Columns: id, sub, token, token_kind, created_at, attempts, next_attempt_at, last_error.
pub(crate) fn pending_revocation(row: &dyn Columns) -> Result<PendingRevocation> {
    let time = |column: &'static str| -> Result<OffsetDateTime> {
        OffsetDateTime::from_unix_timestamp(row.int(column)?).map_err(|_| {
            StoreError::Corrupt(format!("pending_revocations.{column} is out of range"))
        })
    };
    Ok(PendingRevocation {
        id: row.text("id")?,
        sub: row.text("sub")?,
        token: row.bytes("token")?,
        token_kind: RevocationTokenKind::parse(&row.text("token_kind")?)?,
        created_at: time("created_at")?,
        attempts: u32::try_from(row.int("attempts")?).map_err(|_| {
            StoreError::Corrupt("pending_revocations.attempts is out of range".into())
        })?,
        next_attempt_at: time("next_attempt_at")?,
        last_error: row.opt_text("last_error")?,
    })
}
