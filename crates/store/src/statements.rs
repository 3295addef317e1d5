//! Statements that read and write users and grants, written once for both backends (`$N`
//! placeholders); the rows they return are read by [`crate::rows`], and their values are bound
//! from [`crate::sql::grant_args`] and the functions beside them.

/// One user and their grant. The grant's columns are null when the user has no grant row.
pub(crate) const SELECT_USER_AND_GRANT: &str = concat!(
    user_and_grant_columns!(),
    " FROM users u LEFT JOIN grants g ON g.sub = u.sub WHERE u.sub = $1"
);

/// The first page of users with their grants, ordered by `sub` (byte order: SQLite's, and
/// PostgreSQL's for these COLLATE "C" columns); `$1` is the page size.
pub(crate) const SELECT_USERS_FIRST: &str = concat!(
    user_and_grant_columns!(),
    " FROM users u JOIN grants g ON g.sub = u.sub ORDER BY u.sub LIMIT $1"
);

/// A later page: the users after `$2`. Keyset paging walks the primary key from `$2` on, so a
/// page costs the same however deep it is.
pub(crate) const SELECT_USERS_AFTER: &str = concat!(
    user_and_grant_columns!(),
    " FROM users u JOIN grants g ON g.sub = u.sub WHERE u.sub > $2 ORDER BY u.sub LIMIT $1"
);

/// One grant, as [`crate::rows::grant_alone`] reads it.
pub(crate) const SELECT_GRANT: &str = concat!(
    "SELECT g.sub, ",
    grant_columns!("g."),
    " FROM grants g WHERE g.sub = $1"
);

/// Creates or replaces a user's profile (`crate::sql::profile_args`).
pub(crate) const UPSERT_USER: &str = concat!(
    "INSERT INTO users (sub, email, email_verified, name, picture, given_name, family_name,
                        locale, hd, created_at, updated_at, last_sign_in_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $10)
     ON CONFLICT (sub) DO UPDATE SET
         email = excluded.email,
         email_verified = excluded.email_verified,
         name = excluded.name,
         picture = excluded.picture,
         given_name = excluded.given_name,
         family_name = excluded.family_name,
         locale = excluded.locale,
         hd = excluded.hd,
         updated_at = excluded.updated_at,
         last_sign_in_at = excluded.last_sign_in_at
     RETURNING ",
    user_columns!("")
);

/// A new grant (`crate::sql::grant_args` without a fence).
pub(crate) const INSERT_GRANT: &str = concat!(
    "INSERT INTO grants AS g (sub, state, scopes, refresh_token, rt_hash, rt_prefix_hash,
                              refresh_token_received_at, access_token, access_token_expires_at,
                              reason, state_changed_at, updated_at, last_refresh_at, last_error,
                              version)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
     RETURNING sub, ",
    grant_columns!("")
);

/// Writes the grant if it still has version `$16` (the fence); no row comes back otherwise.
pub(crate) const UPDATE_GRANT: &str = concat!(
    "UPDATE grants AS g SET
         state = $2, scopes = $3, refresh_token = $4, rt_hash = $5, rt_prefix_hash = $6,
         refresh_token_received_at = $7, access_token = $8, access_token_expires_at = $9,
         reason = $10, state_changed_at = $11, updated_at = $12, last_refresh_at = $13,
         last_error = $14, version = $15
     WHERE g.sub = $1 AND g.version = $16
     RETURNING sub, ",
    grant_columns!("")
);

/// Appends the event of a state change (`crate::sql::event_args`). The row is also the
/// webhook's outbox entry, due at once.
pub(crate) const INSERT_EVENT: &str =
    "INSERT INTO grant_events (sub, from_state, to_state, reason, at, next_attempt_at)
     VALUES ($1, $2, $3, $4, $5, $5)
     RETURNING id, sub, from_state, to_state, reason, at";

/// Takes or extends a lease: inserted when none is held, taken over only when it ended by
/// `$4` or is the owner's own; otherwise no row is counted.
pub(crate) const LEASE_REFRESH: &str =
    "INSERT INTO refresh_leases AS l (sub, owner, lease_until) VALUES ($1, $2, $3)
     ON CONFLICT (sub) DO UPDATE
        SET owner = excluded.owner, lease_until = excluded.lease_until
      WHERE l.lease_until <= $4 OR l.owner = excluded.owner";

/// Gives a lease back; another owner's lease (this one's ran out and was taken) stays.
pub(crate) const RELEASE_LEASE: &str = "DELETE FROM refresh_leases WHERE sub = $1 AND owner = $2";
