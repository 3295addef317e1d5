//! What the admin console needs from the store: its operators' sessions and a search over the
//! users. The traits and records are here with the rules both backends share (the session row
//! reader, the LIKE pattern of a search); each backend's statements are in its `admin` module.

use crate::rows::{self, Columns};
use crate::{ApiKeyRecord, Result, StoreError, UserPage};
use async_trait::async_trait;
use grantkeeper_core::GrantState;
use time::OffsetDateTime;

/// A session of the admin console, opened with an API key. Only a hash of the session secret
/// is stored; the session dies with its key (deleting the key deletes it, and the console
/// refuses a session whose key is revoked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminSessionRecord {
    /// Hex SHA-256 of the session secret.
    pub id_hash: String,
    /// The API key the operator signed in with.
    pub key_id: String,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

#[async_trait]
pub trait AdminSessionStore: Send + Sync {
    /// [`StoreError::NotFound`] when no API key has `key_id`; [`StoreError::AlreadyExists`]
    /// when the hash is taken.
    async fn create_admin_session(&self, session: AdminSessionRecord) -> Result<()>;
    /// The session, if it exists and has not expired at `now`, with the API key it was opened
    /// with as the store holds it now (revoked or not: the caller decides what that means).
    async fn admin_session(
        &self,
        id_hash: &str,
        now: OffsetDateTime,
    ) -> Result<Option<(AdminSessionRecord, ApiKeyRecord)>>;
    /// Returns true when a session was deleted.
    async fn delete_admin_session(&self, id_hash: &str) -> Result<bool>;
    /// Deletes the sessions expired at `now`; returns how many.
    async fn purge_expired_admin_sessions(&self, now: OffsetDateTime) -> Result<u64>;
}

/// What the console's users page asks for. The conditions given combine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserSearch {
    /// Users whose email contains this text, ignoring the case of ASCII letters, or whose
    /// `sub` starts with it (exactly). Wildcards (`%`, `_`) and backslashes are plain text.
    pub text: Option<String>,
    /// Users whose grant is in this state.
    pub state: Option<GrantState>,
    /// Only users with a larger `sub` (the `next` of the previous page).
    pub after: Option<String>,
    /// Capped at [`crate::MAX_PAGE`]; 0 means [`crate::DEFAULT_PAGE`].
    pub limit: u32,
}

#[async_trait]
pub trait UserSearchStore: Send + Sync {
    /// Users with their grants matching `search`, ordered by `sub`, one page.
    ///
    /// Matching ignores the case of ASCII letters only, alike on both backends (SQLite's
    /// `lower` knows no other letters); e-mail addresses are ASCII in practice. The search
    /// walks users in `sub` order and stops at a page's worth of matches, so it needs no
    /// index of its own: a substring cannot use a B-tree index anyway.
    async fn search_users(&self, search: &UserSearch) -> Result<UserPage>;
}

/// The LIKE pattern (with `\` as its escape character) of "the email contains `text`", the
/// text lowered as the statements lower the email: ASCII letters only.
pub(crate) fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c.to_ascii_lowercase());
    }
    pattern.push('%');
    pattern
}

/// Columns: id_hash, key_id, session_created_at, expires_at, then the API key's columns as
/// [`rows::api_key`] reads them (id, name, hash, scopes, created_at, revoked_at).
pub(crate) fn session_with_key(row: &dyn Columns) -> Result<(AdminSessionRecord, ApiKeyRecord)> {
    let time = |column: &'static str| {
        OffsetDateTime::from_unix_timestamp(row.int(column)?)
            .map_err(|_| StoreError::Corrupt(format!("admin_sessions.{column} is out of range")))
    };
    let session = AdminSessionRecord {
        id_hash: row.text("id_hash")?,
        key_id: row.text("key_id")?,
        created_at: time("session_created_at")?,
        expires_at: time("expires_at")?,
    };
    Ok((session, rows::api_key(row)?))
}
