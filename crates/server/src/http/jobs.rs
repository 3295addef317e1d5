//! `/v1/jobs`: bulk work over every user for the app's own services (scope `jobs`). The routes
//! read the body, call the job engine ([`grantkeeper_broker::jobs::Jobs`]) and write its answer;
//! the rules (bounds, leases, rate, skips) are the engine's. Every token a claim hands out is
//! audited as a hand-out.

use crate::apikeys::KeyScope;
use crate::app::App;
use crate::error::ApiError;
use crate::http::extract::Path;
use crate::http::extract::{api_key, read_body};
use axum::extract::{RawQuery, Request, State};
use axum::http::StatusCode;
use axum::http::header::CACHE_CONTROL;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use grantkeeper_broker::jobs::{
    Batch, ClaimRequest, JobDetail, JobSpec, JobView, MAX_LEASE, Report,
};
use grantkeeper_core::{ExposeSecret, Scopes};
use grantkeeper_store::{JobState, SettledItem};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Largest request body of these routes (a report of a thousand items fits).
const BODY_LIMIT: usize = 256 * 1024;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/jobs", post(create).get(list))
        .route("/v1/jobs/{id}", get(show))
        .route("/v1/jobs/{id}/claim", post(claim))
        .route("/v1/jobs/{id}/reports", post(report))
        .route("/v1/jobs/{id}/cancel", post(cancel))
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// A job as the API answers it (also each line of `jobs list --json`).
pub fn job_answer(view: &JobView) -> Value {
    let j = &view.job;
    let c = &view.counts;
    json!({
        "id": j.id,
        "name": j.name,
        "kind": j.kind,
        "state": j.state.as_str(),
        "scopes": j.scopes.iter().collect::<Vec<_>>(),
        "rate": j.rate,
        "lease": j.lease_secs,
        "min_ttl": j.min_ttl_secs,
        "max_attempts": j.max_attempts,
        "created_by": j.created_by,
        "created_at": rfc3339(j.created_at),
        "finished_at": j.finished_at.map(rfc3339),
        "progress": {
            "total": j.total,
            "pending": c.pending,
            "in_flight": c.in_flight,
            "done": c.done,
            "failed": c.failed,
            "skipped": c.skipped_total(),
            "skipped_by": c.skipped,
            "rate": (view.rate * 100.0).round() / 100.0,
            "eta": view.eta.map(rfc3339),
        },
    })
}

/// A failed or skipped user, as a job's `failures` lists it.
pub fn failure_answer(item: &SettledItem) -> Value {
    json!({
        "sub": item.sub,
        "state": item.state.as_str(),
        "reason": item.reason,
        "detail": item.detail,
        "at": item.at.map(rfc3339),
    })
}

/// A job with its last failures (`GET /v1/jobs/{id}`, `jobs show --json`).
pub fn detail_answer(detail: &JobDetail) -> Value {
    let mut answer = job_answer(&detail.view);
    if let Some(fields) = answer.as_object_mut() {
        fields.insert(
            "failures".to_owned(),
            detail.failures.iter().map(failure_answer).collect(),
        );
    }
    answer
}

/// The body as `T`, refused with the contract's 400 when it is not.
async fn body<T: DeserializeOwned + Default>(
    request: Request,
    example: &str,
) -> Result<T, ApiError> {
    let bytes = read_body(request.into_body(), BODY_LIMIT).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::InvalidRequest(format!(
            "the body must be JSON like {example} ({})",
            match e.classify() {
                serde_json::error::Category::Data => format!("{e}"),
                _ => "malformed JSON".to_owned(),
            }
        ))
    })
}

fn job_id(text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::NotFound("no job with this id".to_owned()))
}

/// Whole seconds in `0..=max`, named `field` in the refusal.
fn seconds(value: Option<i64>, field: &str, min: i64) -> Result<Option<Duration>, ApiError> {
    let max = i64::try_from(MAX_LEASE.as_secs()).unwrap_or(i64::MAX);
    match value {
        None => Ok(None),
        Some(v) if (min..=max).contains(&v) => Ok(Some(Duration::from_secs(v.unsigned_abs()))),
        Some(_) => Err(ApiError::InvalidRequest(format!(
            "{field} must be {min} to {max} seconds"
        ))),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: Option<String>,
    scopes: Option<Vec<String>>,
    rate: Option<f64>,
    lease: Option<i64>,
    min_ttl: Option<i64>,
    max_attempts: Option<i64>,
}

async fn create(State(app): State<App>, request: Request) -> Result<Response, ApiError> {
    let caller = api_key(&app, request.headers(), KeyScope::Jobs).await?;
    let b: CreateBody = body(request, r#"{"name": "nightly sync", "scopes": ["..."]}"#).await?;
    let name = b
        .name
        .ok_or_else(|| ApiError::InvalidRequest("name is required".to_owned()))?;
    let mut spec = JobSpec::api(name);
    if let Some(scopes) = b.scopes {
        spec.scopes = Scopes::from_iter(scopes);
    }
    if let Some(rate) = b.rate {
        spec.rate = Some(rate);
    }
    if let Some(lease) = seconds(b.lease, "lease", 1)? {
        spec.lease = lease;
    }
    if let Some(min_ttl) = b.min_ttl {
        spec.min_ttl = u64::try_from(min_ttl)
            .ok()
            .map(Duration::from_secs)
            .ok_or_else(|| ApiError::InvalidRequest("min_ttl must be 0 to 3600 seconds".into()))?;
    }
    if let Some(n) = b.max_attempts {
        spec.max_attempts = u32::try_from(n)
            .map_err(|_| ApiError::InvalidRequest("max_attempts must be 1 to 100".into()))?;
    }
    let made = app.jobs().create(spec, caller.key_id()).await;
    let outcome = match &made {
        Ok(_) => "ok",
        Err(_) => "invalid_request",
    };
    let detail = made
        .as_ref()
        .map(|v| format!("job {} {}", v.job.id, v.job.name))
        .unwrap_or_default();
    app.audit()
        .record(caller.key_id(), None, "job_create", detail, outcome)
        .await;
    let view = made?;
    tracing::info!(job = view.job.id, users = view.job.total, "job made");
    Ok((StatusCode::CREATED, Json(job_answer(&view))).into_response())
}

#[derive(Deserialize, Default)]
struct ListQuery {
    state: Option<String>,
    limit: Option<String>,
}

async fn list(
    State(app): State<App>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Result<Response, ApiError> {
    api_key(&app, request.headers(), KeyScope::Jobs).await?;
    let q: ListQuery = serde_urlencoded::from_str(query.as_deref().unwrap_or_default())
        .map_err(|_| ApiError::InvalidRequest("the query string is malformed".to_owned()))?;
    let state = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(s.parse::<JobState>().map_err(|_| {
            ApiError::InvalidRequest("state must be running, finished or cancelled".to_owned())
        })?),
    };
    let limit = match q.limit.as_deref() {
        None | Some("") => 100,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| ApiError::InvalidRequest("limit must be 1 to 500".to_owned()))?,
    };
    let views = app.jobs().list(state, limit).await?;
    Ok(Json(json!({"jobs": views.iter().map(job_answer).collect::<Vec<_>>()})).into_response())
}

async fn show(
    State(app): State<App>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    api_key(&app, request.headers(), KeyScope::Jobs).await?;
    let detail = app.jobs().detail(job_id(&id)?).await?;
    Ok(Json(detail_answer(&detail)).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ClaimBody {
    max: Option<i64>,
    lease: Option<i64>,
    worker: Option<String>,
}

async fn claim(
    State(app): State<App>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let caller = api_key(&app, request.headers(), KeyScope::Jobs).await?;
    let id = job_id(&id)?;
    let b: ClaimBody = body(request, r#"{"max": 50, "lease": 300}"#).await?;
    let max = match b.max {
        None => 50,
        Some(n) => u32::try_from(n)
            .ok()
            .filter(|n| (1..=grantkeeper_broker::jobs::MAX_CLAIM).contains(n))
            .ok_or_else(|| {
                ApiError::InvalidRequest(format!(
                    "max must be 1 to {}",
                    grantkeeper_broker::jobs::MAX_CLAIM
                ))
            })?,
    };
    let lease = seconds(b.lease, "lease", 1)?;
    let batch = app
        .jobs()
        .claim(
            id,
            ClaimRequest {
                max,
                lease,
                worker: b.worker,
            },
        )
        .await?;
    for item in &batch.items {
        app.metrics().token_handout();
        app.audit()
            .record(
                caller.key_id(),
                Some(&item.sub),
                "token",
                format!("job {id}"),
                "ok",
            )
            .await;
    }
    let view = app.jobs().progress(id).await?;
    Ok((
        [(CACHE_CONTROL, "no-store")],
        Json(claim_answer(&batch, &view)),
    )
        .into_response())
}

fn claim_answer(batch: &Batch, view: &JobView) -> Value {
    json!({
        "lease": batch.lease,
        "lease_until": rfc3339(batch.lease_until),
        "items": batch.items.iter().map(|i| json!({
            "id": i.id,
            "sub": i.sub,
            "access_token": i.token.token.expose_secret(),
            "expires_at": rfc3339(i.token.expires_at),
            "scopes": i.token.scopes.iter().collect::<Vec<_>>(),
            "attempt": i.attempt,
        })).collect::<Vec<_>>(),
        "retry_after": batch.retry_after.map(|d| (d.as_secs_f64() * 10.0).ceil() / 10.0),
        "job": job_answer(view),
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReportBody {
    lease: Option<String>,
    items: Option<Vec<ReportItem>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportItem {
    id: i64,
    outcome: String,
    delay: Option<i64>,
    detail: Option<String>,
}

async fn report(
    State(app): State<App>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    api_key(&app, request.headers(), KeyScope::Jobs).await?;
    let id = job_id(&id)?;
    let b: ReportBody = body(
        request,
        r#"{"lease": "...", "items": [{"id": 1, "outcome": "done"}]}"#,
    )
    .await?;
    let lease = b
        .lease
        .filter(|l| !l.is_empty())
        .ok_or_else(|| ApiError::InvalidRequest("lease is required: the claim's".to_owned()))?;
    let mut reports = Vec::new();
    for item in b.items.unwrap_or_default() {
        let report = match item.outcome.as_str() {
            "done" => Report::Done,
            "retry" => Report::Retry {
                delay: seconds(item.delay, "delay", 0)?,
                detail: item.detail,
            },
            "failed" => Report::Failed {
                detail: item.detail,
            },
            other => {
                return Err(ApiError::InvalidRequest(format!(
                    "outcome must be done, retry or failed, not {:?}",
                    other.chars().take(20).collect::<String>()
                )));
            }
        };
        reports.push((item.id, report));
    }
    let summary = app.jobs().report(id, &lease, reports).await?;
    let view = app.jobs().progress(summary.job.id).await?;
    Ok(Json(json!({
        "done": summary.counts.done,
        "retry": summary.counts.retry,
        "failed": summary.counts.failed,
        "job": job_answer(&view),
    }))
    .into_response())
}

async fn cancel(
    State(app): State<App>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let caller = api_key(&app, request.headers(), KeyScope::Jobs).await?;
    let id = job_id(&id)?;
    let result = app.jobs().cancel(id).await;
    let outcome = if result.is_ok() { "ok" } else { "not_found" };
    app.audit()
        .record(
            caller.key_id(),
            None,
            "job_cancel",
            format!("job {id}"),
            outcome,
        )
        .await;
    Ok(Json(job_answer(&result?)).into_response())
}
