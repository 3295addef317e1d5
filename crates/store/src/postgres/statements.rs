//! PostgreSQL's own statements: the row lock of a fenced write and the calls of the functions
//! that make each hot path one round trip (migrations 14 and 28).

/// One grant, locked until the transaction ends: the writer that holds it decides what the row
/// becomes while every other writer of that grant, in any process, waits.
pub(super) const SELECT_GRANT_FOR_UPDATE: &str = concat!(
    "SELECT g.sub, ",
    grant_columns!("g."),
    " FROM grants g WHERE g.sub = $1 FOR UPDATE"
);

/// A sign-in: user, grant, event and session in one call (`grantkeeper_sign_in`).
pub(super) const SIGN_IN: &str = "SELECT * FROM grantkeeper_sign_in(
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)";

/// The same, refused when sign-in is blocked for the user (`grantkeeper_sign_in_unless_blocked`,
/// migration 28): its arguments, and its row's columns with `blocked_reason` and `blocked_at`.
pub(super) const SIGN_IN_UNLESS_BLOCKED: &str = "SELECT * FROM grantkeeper_sign_in_unless_blocked(
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)";

/// A refresh lease with the grant read under it (`grantkeeper_lease_refresh`).
pub(super) const LEASE_REFRESH_READING: &str =
    "SELECT * FROM grantkeeper_lease_refresh($1, $2, $3, $4)";

/// A recorded refresh, its lease given back when `$10` names an owner
/// (`grantkeeper_record_refresh`).
pub(super) const RECORD_REFRESH: &str = "SELECT * FROM grantkeeper_record_refresh(
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
