//! What both backends share of activity and counting: a batch of points becomes one row per
//! (minute, series) before it is written (PostgreSQL's upsert refuses to touch a row twice in
//! one statement, and fewer rows are fewer writes anyway), minutes are whole, counts that a
//! 64-bit signed column cannot hold are held at its maximum, and grant counts come back with
//! every state present.

use crate::rows::Columns;
use crate::{ActivityPoint, Result, StoreError};
use grantkeeper_core::GrantState;
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// One row of the activity table, as the database keeps it.
pub(crate) struct ActivityRow {
    pub minute: i64,
    pub series: String,
    pub count: i64,
    pub total_ms: i64,
    pub max_ms: i64,
}

/// The start of the minute holding `at`, in Unix seconds.
pub(crate) fn minute_of(at: OffsetDateTime) -> i64 {
    let secs = at.unix_timestamp();
    secs - secs.rem_euclid(60)
}

fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The points of one batch, one row per (minute, series), in key order (so that concurrent
/// writers lock rows in the same order).
pub(crate) fn rows_of(points: Vec<ActivityPoint>) -> Vec<ActivityRow> {
    let mut merged: BTreeMap<(i64, String), (i64, i64, i64)> = BTreeMap::new();
    for point in points {
        let entry = merged
            .entry((minute_of(point.minute), point.series))
            .or_insert((0, 0, 0));
        entry.0 = entry.0.saturating_add(clamp(point.count));
        entry.1 = entry.1.saturating_add(clamp(point.total_ms));
        entry.2 = entry.2.max(clamp(point.max_ms));
    }
    merged
        .into_iter()
        .map(
            |((minute, series), (count, total_ms, max_ms))| ActivityRow {
                minute,
                series,
                count,
                total_ms,
                max_ms,
            },
        )
        .collect()
}

fn unsigned(row: &dyn Columns, column: &'static str) -> Result<u64> {
    u64::try_from(row.int(column)?)
        .map_err(|_| StoreError::Corrupt(format!("activity.{column} is negative")))
}

/// Columns: minute, series, count, total_ms, max_ms.
pub(crate) fn point(row: &dyn Columns) -> Result<ActivityPoint> {
    let minute = OffsetDateTime::from_unix_timestamp(row.int("minute")?)
        .map_err(|_| StoreError::Corrupt("activity.minute is out of range".into()))?;
    Ok(ActivityPoint {
        minute,
        series: row.text("series")?,
        count: unsigned(row, "count")?,
        total_ms: unsigned(row, "total_ms")?,
        max_ms: unsigned(row, "max_ms")?,
    })
}

/// Every state of [`GrantState::ALL`] in order, with the count found for it (zero when none),
/// from `(state, count)` rows of a `GROUP BY state`.
pub(crate) fn grants_by_state(found: Vec<(String, i64)>) -> Result<Vec<(GrantState, u64)>> {
    let mut counts: Vec<(GrantState, u64)> = GrantState::ALL
        .into_iter()
        .map(|state| (state, 0))
        .collect();
    for (state, count) in found {
        let state: GrantState = state
            .parse()
            .map_err(|_| StoreError::Corrupt("grants.state holds an unknown grant state".into()))?;
        let count = u64::try_from(count)
            .map_err(|_| StoreError::Corrupt("a grant count is negative".into()))?;
        if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == state) {
            slot.1 = count;
        }
    }
    Ok(counts)
}

/// What the process counted becomes what the store sums.
impl From<grantkeeper_core::metrics::ActivityDelta> for ActivityPoint {
    fn from(delta: grantkeeper_core::metrics::ActivityDelta) -> Self {
        ActivityPoint {
            minute: delta.minute,
            series: delta.series.to_owned(),
            count: delta.count,
            total_ms: delta.total_ms,
            max_ms: delta.max_ms,
        }
    }
}
