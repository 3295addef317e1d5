//! The jobs pages: every job newest first with a progress bar each (users done, failed,
//! skipped, in flight, of its total), and one job with its settings and its last failures.
//! What they show is the job engine's (`Jobs::list`, `Jobs::detail`), as `/v1/jobs` answers it.

use super::auth::{Signed, signed};
use super::html::{self, Section, esc, path_segment, scope_list, time, time_or_never};
use super::{PageError, html_response, see_other};
use crate::app::App;
use crate::error::ApiError;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use grantkeeper_broker::jobs::{JobError, JobView};
use grantkeeper_store::JobState;
use std::fmt::Write;
use time::OffsetDateTime;

/// Jobs the list shows.
pub const PAGE: u32 = 50;

fn page_error(e: JobError) -> PageError {
    match e {
        JobError::NotFound => ApiError::NotFound("There is no job with this id.".to_owned()),
        other => ApiError::from(other),
    }
    .into()
}

/// A job state as a badge whose text says it.
fn state_badge(state: JobState) -> String {
    format!(r#"<span class="badge job-{0}">{0}</span>"#, state.as_str())
}

/// A share of the total as a CSS width.
fn percent(n: u64, total: u64) -> String {
    if total == 0 {
        return "0%".to_owned();
    }
    format!("{:.2}%", n as f64 * 100.0 / total as f64)
}

/// The job's bar: one segment per outcome (done, failed, skipped, in flight) on the track of
/// its total, and the same in words (the colours only repeat them).
fn progress_bar(view: &JobView) -> String {
    let c = &view.counts;
    let total = view.job.total;
    let settled = c.settled();
    let words = format!(
        "{settled} of {total} settled: {} done, {} failed, {} skipped, {} in flight",
        c.done,
        c.failed,
        c.skipped_total(),
        c.in_flight
    );
    let mut out = format!(
        r#"<div class="meter" role="progressbar" aria-valuemin="0" aria-valuemax="{total}" aria-valuenow="{settled}" aria-label="{}" data-done="{}" data-failed="{}" data-skipped="{}" data-total="{total}">"#,
        esc(&words),
        c.done,
        c.failed,
        c.skipped_total()
    );
    for (class, n) in [
        ("done", c.done),
        ("failed", c.failed),
        ("skipped", c.skipped_total()),
        ("flight", c.in_flight),
    ] {
        if n > 0 {
            let _ = write!(
                out,
                r#"<span class="{class}" style="width:{}"></span>"#,
                percent(n, total)
            );
        }
    }
    let _ = write!(
        out,
        r#"</div><span class="meter-text">{}</span>"#,
        esc(&words)
    );
    out
}

/// Users a second and the estimated end, or what stands instead.
fn speed(view: &JobView, now: OffsetDateTime) -> String {
    match (view.job.state, view.eta) {
        (JobState::Running, Some(eta)) => {
            format!("{:.1} users/s, done {}", view.rate, time(eta, now))
        }
        (JobState::Running, None) => "waiting for workers".to_owned(),
        _ => format!("ended {}", time_or_never(view.job.finished_at, now)),
    }
}

/// `GET /admin/jobs`.
pub async fn jobs(State(app): State<App>, headers: HeaderMap) -> Result<Response, PageError> {
    let operator = match signed(&app, &headers).await? {
        Signed::In(operator) => operator,
        Signed::Out(_) => return Ok(see_other("/admin")),
    };
    let views = app.jobs().list(None, PAGE).await.map_err(page_error)?;
    let now = app.clock().now();
    let mut body = String::with_capacity(8 * 1024);
    body.push_str("<h1>Jobs</h1>\n");
    let _ = write!(
        body,
        r#"<p class="muted" id="job-count">{} job{}, newest first (at most {PAGE}).</p>"#,
        views.len(),
        if views.len() == 1 { "" } else { "s" }
    );
    body.push_str(
        r#"<div class="scroll"><table id="jobs" class="cards"><thead><tr><th scope="col">Job</th><th scope="col">State</th><th scope="col" class="col-progress">Progress</th><th scope="col">Failed</th><th scope="col">Skipped</th><th scope="col">Speed</th><th scope="col">Created</th></tr></thead><tbody>"#,
    );
    for view in &views {
        let j = &view.job;
        let _ = write!(
            body,
            r#"<tr class="linked" data-job="{id}" data-state="{state}"><td class="user-cell" data-label="Job"><a class="row-link" href="/admin/jobs/{id}">{name}</a><span class="sub mono">{kind} · #{id}</span></td><td class="lead nowrap" data-label="State">{badge}</td><td data-label="Progress">{bar}</td><td data-label="Failed">{failed}</td><td data-label="Skipped">{skipped}</td><td data-label="Speed">{speed}</td><td class="nowrap" data-label="Created">{created}</td></tr>"#,
            id = j.id,
            state = j.state.as_str(),
            name = esc(&j.name),
            kind = esc(&j.kind),
            badge = state_badge(j.state),
            bar = progress_bar(view),
            failed = view.counts.failed,
            skipped = view.counts.skipped_total(),
            speed = speed(view, now),
            created = time(j.created_at, now),
        );
    }
    if views.is_empty() {
        body.push_str(
            r#"<tr><td colspan="7" class="empty">No jobs yet: the app's services make them through <code>/v1/jobs</code>, operators with <code>grantkeeper jobs run</code>.</td></tr>"#,
        );
    }
    body.push_str("</tbody></table></div>");
    Ok(html_response(
        StatusCode::OK,
        html::page("Jobs", Some(&operator.shell(Section::Jobs)), &body),
    ))
}

/// `GET /admin/jobs/{id}`.
pub async fn job(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let operator = match signed(&app, &headers).await? {
        Signed::In(operator) => operator,
        Signed::Out(_) => return Ok(see_other("/admin")),
    };
    let id = id
        .parse::<i64>()
        .map_err(|_| PageError::from(ApiError::NotFound("There is no job with this id.".into())))?;
    let detail = app.jobs().detail(id).await.map_err(page_error)?;
    let now = app.clock().now();
    let view = &detail.view;
    let j = &view.job;
    let mut body = String::with_capacity(8 * 1024);
    let _ = write!(
        body,
        r#"<p><a href="/admin/jobs">← Jobs</a></p><h1 id="job" data-job="{}">{}</h1>"#,
        j.id,
        esc(&j.name)
    );
    let _ = write!(
        body,
        r#"<dl id="job-facts"><dt>State</dt><dd>{}</dd><dt>Progress</dt><dd>{}</dd><dt>Speed</dt><dd>{}</dd>"#,
        state_badge(j.state),
        progress_bar(view),
        speed(view, now)
    );
    let fact = |out: &mut String, term: &str, value: &str| {
        let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", esc(term), esc(value));
    };
    fact(&mut body, "Kind", &j.kind);
    let _ = write!(
        body,
        "<dt>Users</dt><dd>{}</dd>",
        if j.scopes.is_empty() {
            "every user".to_owned()
        } else {
            format!("grants holding {}", scope_list(j.scopes.iter()))
        }
    );
    fact(
        &mut body,
        "Rate",
        &j.rate
            .map(|r| format!("{r} refreshes a second at most"))
            .unwrap_or_else(|| "no limit".to_owned()),
    );
    fact(&mut body, "Lease", &format!("{} s", j.lease_secs));
    fact(
        &mut body,
        "Attempts",
        &format!("at most {}", j.max_attempts),
    );
    fact(&mut body, "Made by", &j.created_by);
    let _ = write!(
        body,
        "<dt>Created</dt><dd>{}</dd><dt>Ended</dt><dd>{}</dd></dl>",
        time(j.created_at, now),
        time_or_never(j.finished_at, now)
    );
    body.push_str(
        r#"<h2>Last failures</h2><div class="scroll"><table id="failures" class="cards"><thead><tr><th scope="col">User</th><th scope="col">Outcome</th><th scope="col">Reason</th><th scope="col" class="col-error">Detail</th><th scope="col">When</th></tr></thead><tbody>"#,
    );
    for f in &detail.failures {
        let _ = write!(
            body,
            r#"<tr data-sub="{sub}" data-outcome="{state}"><td class="user-cell" data-label="User"><a href="/admin/users/{link}" class="mono">{sub}</a></td><td class="lead nowrap" data-label="Outcome">{state}</td><td data-label="Reason">{reason}</td><td class="wrap" data-label="Detail">{detail}</td><td class="nowrap" data-label="When">{at}</td></tr>"#,
            sub = esc(&f.sub),
            link = path_segment(&f.sub),
            state = f.state.as_str(),
            reason = esc(f.reason.as_deref().unwrap_or("—")),
            detail = esc(f.detail.as_deref().unwrap_or("—")),
            at = time_or_never(f.at, now),
        );
    }
    if detail.failures.is_empty() {
        body.push_str(
            r#"<tr><td colspan="5" class="empty">No user failed or was skipped.</td></tr>"#,
        );
    }
    body.push_str("</tbody></table></div>");
    Ok(html_response(
        StatusCode::OK,
        html::page(&j.name, Some(&operator.shell(Section::Jobs)), &body),
    ))
}
