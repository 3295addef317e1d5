//! The activity page: what every instance did over the last hour, day or week, from the
//! store's per-minute counts, in buckets, drawn as charts; and the grants by state.

use super::auth::{Signed, signed};
use super::charts::{self, Bar, Line, LineChart};
use super::html::{self, Section, esc, state_text};
use super::{PageError, html_response, see_other};
use crate::app::App;
use crate::error::ApiError;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use grantkeeper_core::GrantState;
use grantkeeper_core::metrics::Warning;
use grantkeeper_store::{ActivityPoint, series};
use serde::Deserialize;
use std::fmt::Write;
use time::macros::format_description;
use time::{Duration, OffsetDateTime};

/// The ranges the page offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Range {
    Hour,
    Day,
    Week,
}

impl Range {
    const ALL: [Range; 3] = [Range::Hour, Range::Day, Range::Week];

    fn param(self) -> &'static str {
        match self {
            Range::Hour => "1h",
            Range::Day => "24h",
            Range::Week => "7d",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Range::Hour => "1 hour",
            Range::Day => "24 hours",
            Range::Week => "7 days",
        }
    }

    fn parse(text: &str) -> Option<Range> {
        Range::ALL.into_iter().find(|r| r.param() == text)
    }

    /// Seconds per bucket.
    pub fn bucket_secs(self) -> i64 {
        match self {
            Range::Hour => 60,
            Range::Day => 30 * 60,
            Range::Week => 6 * 3600,
        }
    }

    fn buckets(self) -> usize {
        match self {
            Range::Hour => 60,
            Range::Day => 48,
            Range::Week => 28,
        }
    }

    /// A bucket's start as the charts' descriptions name it.
    fn bucket_label(self, t: OffsetDateTime) -> String {
        let format = match self {
            Range::Week => {
                format_description!("[month repr:short] [day padding:none] [hour]:[minute]")
            }
            _ => format_description!("[hour]:[minute]"),
        };
        t.format(format).unwrap_or_default()
    }

    /// The buckets the time axis may label: every 10 minutes of the hour, every 4 hours of the
    /// day (both with the latest bucket), each midnight of the week.
    fn ticks(self, starts: &[OffsetDateTime]) -> Vec<(usize, String)> {
        let mut ticks: Vec<(usize, String)> = starts
            .iter()
            .enumerate()
            .filter(|(_, t)| match self {
                Range::Hour => t.minute() % 10 == 0,
                Range::Day => t.minute() == 0 && t.hour() % 4 == 0,
                Range::Week => t.hour() == 0,
            })
            .map(|(i, t)| {
                let label = match self {
                    Range::Week => {
                        t.format(format_description!("[month repr:short] [day padding:none]"))
                    }
                    _ => t.format(format_description!("[hour]:[minute]")),
                };
                (i, label.unwrap_or_default())
            })
            .collect();
        if self != Range::Week
            && let Some(last) = starts.len().checked_sub(1)
            && ticks.last().is_none_or(|(i, _)| *i != last)
            && let Some(t) = starts.get(last)
        {
            ticks.push((last, self.bucket_label(*t)));
        }
        ticks
    }

    fn per(self) -> &'static str {
        match self {
            Range::Hour => "per minute",
            Range::Day => "per 30 minutes",
            Range::Week => "per 6 hours",
        }
    }
}

/// The buckets of a range ending with the one that holds `now`; bucket boundaries are
/// multiples of the bucket size since the epoch, so that every load cuts alike.
pub fn window(range: Range, now: OffsetDateTime) -> (OffsetDateTime, OffsetDateTime) {
    let size = range.bucket_secs();
    let secs = now.unix_timestamp();
    let end = secs - secs.rem_euclid(size) + size;
    let start = end - size * range.buckets() as i64;
    let at = |s: i64| OffsetDateTime::from_unix_timestamp(s).unwrap_or(now);
    (at(start), at(end))
}

/// Sums per bucket of the series the charts draw.
#[derive(Debug, Default, PartialEq)]
pub struct Buckets {
    pub sign_ins: Vec<u64>,
    pub tokens: Vec<u64>,
    pub refreshes: Vec<u64>,
    pub failed_refreshes: Vec<u64>,
    /// Refresh attempts (successful or not) and the sum and maximum of their durations.
    pub refresh_count: Vec<u64>,
    pub refresh_total_ms: Vec<u64>,
    pub refresh_max_ms: Vec<u64>,
}

/// Puts each point into its bucket; points outside the window are ignored.
pub fn bucketize(
    points: &[ActivityPoint],
    start: OffsetDateTime,
    bucket_secs: i64,
    n: usize,
) -> Buckets {
    let mut b = Buckets {
        sign_ins: vec![0; n],
        tokens: vec![0; n],
        refreshes: vec![0; n],
        failed_refreshes: vec![0; n],
        refresh_count: vec![0; n],
        refresh_total_ms: vec![0; n],
        refresh_max_ms: vec![0; n],
    };
    for p in points {
        let offset = (p.minute - start).whole_seconds();
        if offset < 0 {
            continue;
        }
        let Ok(i) = usize::try_from(offset / bucket_secs) else {
            continue;
        };
        if i >= n {
            continue;
        }
        let add = |v: &mut Vec<u64>, x: u64| {
            if let Some(slot) = v.get_mut(i) {
                *slot = slot.saturating_add(x);
            }
        };
        match p.series.as_str() {
            series::SIGN_IN => add(&mut b.sign_ins, p.count),
            series::TOKEN => add(&mut b.tokens, p.count),
            series::REFRESH | series::REFRESH_FAILED => {
                if p.series == series::REFRESH {
                    add(&mut b.refreshes, p.count);
                } else {
                    add(&mut b.failed_refreshes, p.count);
                }
                add(&mut b.refresh_count, p.count);
                add(&mut b.refresh_total_ms, p.total_ms);
                if let Some(slot) = b.refresh_max_ms.get_mut(i) {
                    *slot = (*slot).max(p.max_ms);
                }
            }
            _ => {}
        }
    }
    b
}

fn counts(values: &[u64]) -> Vec<Option<f64>> {
    values.iter().map(|v| Some(*v as f64)).collect()
}

#[derive(Deserialize, Default)]
struct ActivityQuery {
    range: Option<String>,
}

/// One warning's count and latest minute within the page's window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WarningTally {
    pub count: u64,
    pub last: Option<OffsetDateTime>,
}

/// How often each of [`Warning::ALL`] was counted among `points`, and when last.
pub fn warning_tallies(points: &[ActivityPoint]) -> [WarningTally; 3] {
    let mut tallies = [WarningTally::default(); 3];
    for (warning, tally) in Warning::ALL.iter().zip(tallies.iter_mut()) {
        for p in points.iter().filter(|p| p.series == warning.series()) {
            tally.count = tally.count.saturating_add(p.count);
            tally.last = tally.last.max(Some(p.minute));
        }
    }
    tallies
}

/// The warnings section: one row per kind, the ones seen first-class, with what to do.
fn warnings_section(tallies: &[WarningTally; 3], per_range: &str, now: OffsetDateTime) -> String {
    let mut out = String::new();
    let seen = tallies.iter().filter(|t| t.count > 0).count();
    let _ = write!(
        out,
        r#"<section id="warnings" aria-labelledby="warnings-title">
<h2 id="warnings-title">Warnings</h2>
<p class="muted">{}</p>
<div class="scroll"><table id="warnings-table" class="cards"><thead><tr><th scope="col">Warning</th><th scope="col">In the last {}</th><th scope="col">Last</th><th scope="col">What to do</th></tr></thead><tbody>"#,
        if seen == 0 {
            "Nothing to act on in this range."
        } else {
            "grantkeeper inferred these from Google's answers; each line says what to check."
        },
        esc(per_range),
    );
    for (warning, tally) in Warning::ALL.iter().zip(tallies) {
        let _ = write!(
            out,
            r#"<tr data-warning="{kind}" data-count="{count}"{class}><td class="lead wrap" data-label="Warning">{title}</td><td data-label="Count">{count}</td><td class="nowrap" data-label="Last">{last}</td><td class="wrap" data-label="What to do">{advice}</td></tr>"#,
            kind = warning.kind(),
            count = tally.count,
            class = if tally.count > 0 {
                r#" class="warn""#
            } else {
                ""
            },
            title = esc(warning.title()),
            last = html::time_or_never(tally.last, now),
            advice = esc(warning.advice()),
        );
    }
    out.push_str("</tbody></table></div>\n</section>");
    out
}

/// `GET /admin/activity`.
pub async fn activity(
    State(app): State<App>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, PageError> {
    let operator = match signed(&app, &headers).await? {
        Signed::In(operator) => operator,
        Signed::Out(_) => return Ok(see_other("/admin")),
    };
    let range = requested_range(raw.as_deref())?;
    // This instance's latest counts first; other instances' arrive within their flush period.
    if let Err(e) = app.flush_activity().await {
        tracing::warn!(error = %e, "could not write activity before charting it");
    }
    let now = app.clock().now();
    let (start, end) = window(range, now);
    let points = app.store().activity(start, end).await?;
    let by_state = app.store().count_grants_by_state().await?;
    let b = bucketize(&points, start, range.bucket_secs(), range.buckets());

    let mut body = String::with_capacity(32 * 1024);
    body.push_str("<h1>Activity</h1>\n");
    range_nav(&mut body, range);
    let _ = write!(
        body,
        r#"
<p class="muted">From {} to {}, {}, across every instance sharing this store; times on the charts are UTC. Latency covers every refresh attempt, failed ones too.</p>
"#,
        esc(&html::utc(start)),
        esc(&html::utc(end)),
        esc(range.per()),
    );
    charts_section(&mut body, range, start, &b, &by_state);
    body.push('\n');
    body.push_str(&warnings_section(
        &warning_tallies(&points),
        range.label(),
        now,
    ));
    Ok(html_response(
        StatusCode::OK,
        html::page("Activity", Some(&operator.shell(Section::Activity)), &body),
    ))
}

/// The `range` of the query string; a day when absent.
fn requested_range(raw: Option<&str>) -> Result<Range, PageError> {
    let q: ActivityQuery = match raw {
        None | Some("") => ActivityQuery::default(),
        Some(q) => serde_urlencoded::from_str(q).map_err(|_| {
            PageError::from(ApiError::InvalidRequest(
                "The address's query string could not be read.".to_owned(),
            ))
        })?,
    };
    match q.range.as_deref() {
        None | Some("") => Ok(Range::Day),
        Some(r) => Range::parse(r).ok_or_else(|| {
            PageError::from(ApiError::InvalidRequest(
                "The range must be 1h, 24h or 7d.".to_owned(),
            ))
        }),
    }
}

/// The links to the other ranges, the current one marked.
fn range_nav(body: &mut String, current: Range) {
    body.push_str("<nav class=\"ranges\" aria-label=\"Range\">");
    for r in Range::ALL {
        let mark = if r == current {
            r#" aria-current="page""#
        } else {
            ""
        };
        let _ = write!(
            body,
            r#"<a id="range-{p}" href="/admin/activity?range={p}"{mark}>{label}</a>"#,
            p = r.param(),
            label = r.label(),
        );
    }
    body.push_str("</nav>");
}

/// The three charts, each line chart followed by its data as a table.
fn charts_section(
    body: &mut String,
    range: Range,
    start: OffsetDateTime,
    b: &Buckets,
    by_state: &[(GrantState, u64)],
) {
    let starts: Vec<OffsetDateTime> = (0..range.buckets())
        .map(|i| start + Duration::seconds(range.bucket_secs() * i as i64))
        .collect();
    let short: Vec<String> = starts.iter().map(|t| range.bucket_label(*t)).collect();
    let ticks = range.ticks(&starts);
    let full: Vec<String> = starts.iter().map(|t| html::utc(*t)).collect();
    let per = range.per();
    let activity_lines = activity_lines(b);
    let activity_chart = LineChart {
        id: "chart-activity",
        title: "Sign-ins, token hand-outs and refreshes",
        unit: per,
        axis_unit: per,
        totals: true,
        x_labels: &short,
        ticks: &ticks,
        lines: &activity_lines,
    };
    let latency_lines = latency_lines(b);
    let latency_unit = format!("milliseconds per refresh at the token endpoint, {per}");
    let latency_chart = LineChart {
        id: "chart-latency",
        title: "Refresh latency (ms)",
        unit: &latency_unit,
        axis_unit: "ms",
        totals: false,
        x_labels: &short,
        ticks: &ticks,
        lines: &latency_lines,
    };
    let bars: Vec<Bar<'_>> = by_state
        .iter()
        .map(|(state, count)| Bar {
            label: state_text(*state),
            color: state_color(*state),
            value: *count,
        })
        .collect();
    let _ = write!(
        body,
        r#"<div class="charts">
<figure><figcaption>Sign-ins, token hand-outs and refreshes</figcaption>{}{}</figure>
<figure><figcaption>Refresh latency (milliseconds)</figcaption>{}{}</figure>
<figure><figcaption>Grants by state (now)</figcaption>{}</figure>
</div>"#,
        charts::line_chart(&activity_chart),
        charts::data_table(&activity_chart, &full),
        charts::line_chart(&latency_chart),
        charts::data_table(&latency_chart, &full),
        charts::bar_chart("chart-states", "Grants by state", "No grants yet", &bars),
    );
}

/// The activity chart's lines: counts per bucket.
fn activity_lines(b: &Buckets) -> [Line<'static>; 4] {
    [
        Line {
            label: "Sign-ins",
            color: "#1b5fbf",
            dash: None,
            values: counts(&b.sign_ins),
        },
        Line {
            label: "Token hand-outs",
            color: "#2f855a",
            dash: Some("7 3"),
            values: counts(&b.tokens),
        },
        Line {
            label: "Refreshes",
            color: "#805ad5",
            dash: Some("2 3"),
            values: counts(&b.refreshes),
        },
        Line {
            label: "Failed refreshes",
            color: "#b42318",
            dash: Some("10 3 2 3"),
            values: counts(&b.failed_refreshes),
        },
    ]
}

/// The latency chart's lines: average and maximum per bucket, none where nothing refreshed.
fn latency_lines(b: &Buckets) -> [Line<'static>; 2] {
    [
        Line {
            label: "Average",
            color: "#1b5fbf",
            dash: None,
            values: b
                .refresh_count
                .iter()
                .zip(&b.refresh_total_ms)
                .map(|(c, t)| (*c > 0).then(|| *t as f64 / *c as f64))
                .collect(),
        },
        Line {
            label: "Maximum",
            color: "#b42318",
            dash: Some("7 3"),
            values: b
                .refresh_count
                .iter()
                .zip(&b.refresh_max_ms)
                .map(|(c, m)| (*c > 0).then_some(*m as f64))
                .collect(),
        },
    ]
}

/// The colours of the states' badges, darker for bars.
fn state_color(state: GrantState) -> &'static str {
    match state {
        GrantState::Active => "#2f855a",
        GrantState::Failing => "#b7791f",
        GrantState::NeedsConsent => "#3b5bdb",
        GrantState::Revoked => "#b42318",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn point(
        minute: OffsetDateTime,
        series: &str,
        count: u64,
        total: u64,
        max: u64,
    ) -> ActivityPoint {
        ActivityPoint {
            minute,
            series: series.to_owned(),
            count,
            total_ms: total,
            max_ms: max,
        }
    }

    #[test]
    fn windows_end_with_the_bucket_holding_now() {
        let now = datetime!(2025-03-01 12:34:56 UTC);
        assert_eq!(
            window(Range::Hour, now),
            (
                datetime!(2025-03-01 11:35 UTC),
                datetime!(2025-03-01 12:35 UTC)
            )
        );
        assert_eq!(
            window(Range::Day, now),
            (
                datetime!(2025-02-28 13:00 UTC),
                datetime!(2025-03-01 13:00 UTC)
            )
        );
        assert_eq!(
            window(Range::Week, now),
            (
                datetime!(2025-02-22 18:00 UTC),
                datetime!(2025-03-01 18:00 UTC)
            )
        );
    }

    #[test]
    fn points_are_summed_into_their_buckets() {
        let start = datetime!(2025-03-01 12:00 UTC);
        let points = [
            point(start, series::SIGN_IN, 2, 0, 0),
            point(start + Duration::minutes(29), series::SIGN_IN, 1, 0, 0),
            point(start + Duration::minutes(30), series::TOKEN, 5, 0, 0),
            point(start + Duration::minutes(31), series::REFRESH, 2, 200, 150),
            point(
                start + Duration::minutes(40),
                series::REFRESH_FAILED,
                1,
                900,
                900,
            ),
            point(start + Duration::minutes(40), series::PROXY, 9, 90, 10),
            // Outside the window: before it and after it.
            point(start - Duration::minutes(1), series::SIGN_IN, 7, 0, 0),
            point(start + Duration::minutes(60), series::SIGN_IN, 7, 0, 0),
        ];
        let b = bucketize(&points, start, 30 * 60, 2);
        assert_eq!(b.sign_ins, [3, 0]);
        assert_eq!(b.tokens, [0, 5]);
        assert_eq!(b.refreshes, [0, 2]);
        assert_eq!(b.failed_refreshes, [0, 1]);
        assert_eq!(b.refresh_count, [0, 3]);
        assert_eq!(b.refresh_total_ms, [0, 1100]);
        assert_eq!(b.refresh_max_ms, [0, 900]);
    }
}
