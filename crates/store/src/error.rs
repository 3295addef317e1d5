//! Store errors, already in the domain's terms: callers never match on database messages.

#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    /// A fenced write found the row changed since it was read.
    #[error("the row changed since it was read")]
    Conflict,
    #[error("store configuration: {0}")]
    Config(String),
    /// The database could not be reached or did not answer in time: retryable.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A stored value could not be read back (corrupt row, unknown state).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(String),
    #[error("migration failed: {0}")]
    Migration(String),
    /// A sealed value names a data key that is not the store's active one (a rotation made
    /// another key active since the writer read its keyring): nothing was written. The writer
    /// reads the keyring again, seals anew and writes again.
    #[error("a sealed value names a data key that is not the active one")]
    InactiveKey,
}
