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
}
