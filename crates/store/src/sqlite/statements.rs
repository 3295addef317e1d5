//! SQLite's statements that read users and grants; the rows they return are read by
//! [`crate::rows`], shared with the other backend.

/// One user and their grant. The grant's columns are null when the user has no grant row.
pub(super) const SELECT_USER_AND_GRANT: &str = concat!(
    user_and_grant_columns!(),
    " FROM users u LEFT JOIN grants g ON g.sub = u.sub WHERE u.sub = ?1"
);

/// The first page of users with their grants, ordered by `sub`; `?1` is the page size.
pub(super) const SELECT_USERS_FIRST: &str = concat!(
    user_and_grant_columns!(),
    " FROM users u JOIN grants g ON g.sub = u.sub ORDER BY u.sub LIMIT ?1"
);

/// A later page: the users after `?2`. Keyset paging walks the primary key from `?2` on, so a
/// page costs the same however deep it is.
pub(super) const SELECT_USERS_AFTER: &str = concat!(
    user_and_grant_columns!(),
    " FROM users u JOIN grants g ON g.sub = u.sub WHERE u.sub > ?2 ORDER BY u.sub LIMIT ?1"
);

/// One grant, as [`crate::rows::grant_alone`] reads it.
pub(super) const SELECT_GRANT: &str = concat!(
    "SELECT g.sub, ",
    grant_columns!(),
    " FROM grants g WHERE g.sub = ?1"
);
