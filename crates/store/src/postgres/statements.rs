//! PostgreSQL's statements that read and write users and grants; the rows they return are read
//! by [`crate::rows`], shared with the other backend.

/// One user and their grant. The grant's columns are null when the user has no grant row.
pub(super) const SELECT_USER_AND_GRANT: &str = concat!(
    user_and_grant_columns!(),
    " FROM users u LEFT JOIN grants g ON g.sub = u.sub WHERE u.sub = $1"
);

/// The first page of users with their grants, ordered by `sub` (byte order: the column is
/// COLLATE "C"); `$1` is the page size.
pub(super) const SELECT_USERS_FIRST: &str = concat!(
    user_and_grant_columns!(),
    " FROM users u JOIN grants g ON g.sub = u.sub ORDER BY u.sub LIMIT $1"
);

/// A later page: the users after `$2`. Keyset paging walks the primary key from `$2` on, so a
/// page costs the same however deep it is; the comparison takes the column's collation.
pub(super) const SELECT_USERS_AFTER: &str = concat!(
    user_and_grant_columns!(),
    " FROM users u JOIN grants g ON g.sub = u.sub WHERE u.sub > $2 ORDER BY u.sub LIMIT $1"
);

/// One grant, as [`crate::rows::grant_alone`] reads it.
pub(super) const SELECT_GRANT: &str = concat!(
    "SELECT g.sub, ",
    grant_columns!(),
    " FROM grants g WHERE g.sub = $1"
);

/// One grant, locked until the transaction ends: the writer that holds it decides what the row
/// becomes while every other writer of that grant, in any process, waits.
pub(super) const SELECT_GRANT_FOR_UPDATE: &str = concat!(
    "SELECT g.sub, ",
    grant_columns!(),
    " FROM grants g WHERE g.sub = $1 FOR UPDATE"
);

/// Creates the user, unless the row exists (then nothing, and no row is returned). A sign-in
/// that meets a concurrent one creating the same user waits for it to commit.
pub(super) const INSERT_USER: &str = concat!(
    "INSERT INTO users AS u (sub, email, email_verified, name, picture, given_name, family_name,
                             locale, hd, created_at, updated_at, last_sign_in_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $10)
     ON CONFLICT (sub) DO NOTHING
     RETURNING ",
    user_columns!()
);

/// Replaces the profile of an existing user (no row returned when there is none).
pub(super) const UPDATE_USER: &str = concat!(
    "UPDATE users AS u SET
         email = $2, email_verified = $3, name = $4, picture = $5, given_name = $6,
         family_name = $7, locale = $8, hd = $9, updated_at = $10, last_sign_in_at = $10
     WHERE u.sub = $1
     RETURNING ",
    user_columns!()
);

pub(super) const INSERT_GRANT: &str = concat!(
    "INSERT INTO grants AS g (sub, state, scopes, refresh_token, rt_hash, rt_prefix_hash,
                              refresh_token_received_at, access_token, access_token_expires_at,
                              reason, state_changed_at, updated_at, last_refresh_at, last_error,
                              version)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
     RETURNING g.sub, ",
    grant_columns!()
);

/// Writes the grant if it still has version `$16` (the fence).
pub(super) const UPDATE_GRANT: &str = concat!(
    "UPDATE grants AS g SET
         state = $2, scopes = $3, refresh_token = $4, rt_hash = $5, rt_prefix_hash = $6,
         refresh_token_received_at = $7, access_token = $8, access_token_expires_at = $9,
         reason = $10, state_changed_at = $11, updated_at = $12, last_refresh_at = $13,
         last_error = $14, version = $15
     WHERE g.sub = $1 AND g.version = $16
     RETURNING g.sub, ",
    grant_columns!()
);
