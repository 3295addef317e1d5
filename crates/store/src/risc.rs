//! What Cross-Account Protection needs from the store: the ids of the security events already
//! received (Google redelivers; an event must act once), sign-in blocks of accounts Google
//! disabled as hijacked, and the lookups that turn an event's subject into our users (by
//! email, or by a refresh token's fingerprint). The traits and records are here; each
//! backend's statements are in its `risc` module.

use crate::rows::Columns;
use crate::{Result, StoreError};
use async_trait::async_trait;
use time::OffsetDateTime;

/// The most subs one lookup of [`RiscStore::subs_by_email`] or
/// [`RiscStore::subs_by_refresh_token`] answers.
pub const MAX_SUBJECT_MATCHES: u32 = 100;

/// A refusal of sign-in for one Google account, until Google says it is enabled again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignInBlock {
    /// The account's `sub`. Not tied to a user row: an event may precede the first sign-in,
    /// and the block must hold for it.
    pub sub: String,
    /// Why, for people (e.g. `account-disabled: hijacking`).
    pub reason: String,
    pub blocked_at: OffsetDateTime,
}

/// How a `token-revoked` event names a refresh token, as [`crate::TokenFingerprint`] keeps
/// it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenLookup {
    /// Matches [`crate::TokenFingerprint::hash`] (base64 of SHA-512(SHA-512(token))).
    Hash(String),
    /// Matches [`crate::TokenFingerprint::prefix_hash`] (hex SHA-256 of the first 16
    /// characters).
    PrefixHash(String),
}

#[async_trait]
pub trait RiscStore: Send + Sync {
    /// Records that the security event `jti` (of type `event`, a short name) was received at
    /// `at`. True when it is new; false when it was recorded before (a redelivery, or the same
    /// event arriving at two instances at once: exactly one of them gets true).
    async fn record_security_event(
        &self,
        jti: &str,
        event: &str,
        at: OffsetDateTime,
    ) -> Result<bool>;
    /// Forgets a recorded event, so that its redelivery acts (the first receipt could not
    /// finish acting on it). Returns false when it was not recorded.
    async fn forget_security_event(&self, jti: &str) -> Result<bool>;
    /// Deletes the events received before `before`; returns how many.
    async fn prune_security_events(&self, before: OffsetDateTime) -> Result<u64>;

    /// Blocks sign-in for `block.sub`; a block already held takes the new reason and time.
    async fn block_sign_in(&self, block: SignInBlock) -> Result<()>;
    /// Lifts the block of `sub`; false when none was held.
    async fn lift_sign_in_block(&self, sub: &str) -> Result<bool>;
    /// The block of `sub`, if one is held.
    async fn sign_in_block(&self, sub: &str) -> Result<Option<SignInBlock>>;

    /// The users whose stored email is exactly `email` and was verified by the provider,
    /// ordered by `sub`, at most [`MAX_SUBJECT_MATCHES`]. An unverified email proves nothing
    /// of who holds the address, so it never names a user.
    async fn subs_by_email(&self, email: &str) -> Result<Vec<String>>;
    /// The users whose held refresh token has this fingerprint, ordered by `sub`, at most
    /// [`MAX_SUBJECT_MATCHES`]. A hash names one token; a prefix may name several.
    async fn subs_by_refresh_token(&self, lookup: &TokenLookup) -> Result<Vec<String>>;
}

/// Columns: sub, reason, blocked_at.
pub(crate) fn block(row: &dyn Columns) -> Result<SignInBlock> {
    Ok(SignInBlock {
        sub: row.text("sub")?,
        reason: row.text("reason")?,
        blocked_at: OffsetDateTime::from_unix_timestamp(row.int("blocked_at")?)
            .map_err(|_| StoreError::Corrupt("sign_in_blocks.blocked_at is out of range".into()))?,
    })
}
