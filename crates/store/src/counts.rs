//! Grants counted by state without a scan: the table `grant_counts`, kept by triggers on
//! `grants` (migration 13 of each backend), summed over its shards when read.

use crate::sql::{Engine, first};
use crate::{Result, StoreError, activity};
use grantkeeper_core::GrantState;

/// Every state of [`GrantState::ALL`] in order, with its count (zero when none).
pub(crate) async fn grants_by_state(engine: &impl Engine) -> Result<Vec<(GrantState, u64)>> {
    let sql = "SELECT state, CAST(SUM(n) AS BIGINT) AS n FROM grant_counts GROUP BY state";
    let found = engine
        .read_rows(sql.into(), Vec::new(), |r| {
            Ok((r.text("state")?, r.int("n")?))
        })
        .await?;
    activity::grants_by_state(found)
}

/// How many users there are (for progress bars: a count of the table's rows).
pub(crate) async fn users(engine: &impl Engine) -> Result<u64> {
    let sql = "SELECT COUNT(*) AS n FROM users";
    let found = engine
        .read_rows(sql.into(), Vec::new(), |r| r.int("n"))
        .await?;
    u64::try_from(first(found).unwrap_or(0))
        .map_err(|_| StoreError::Corrupt("the user count is negative".into()))
}
