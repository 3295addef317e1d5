//! `/v1/jobs`: bulk work over every user for the app's own services (scope `jobs`). The routes
//! read the body, call the job engine ([`grantkeeper_broker::jobs::Jobs`]) and write its answer;
//! the rules (bounds, leases, rate, skips) are the engine's. Every token a claim hands out is
//! audited as a hand-out.

use crate::apikeys::KeyScope;
use crate::app::App;
use crate::error::{ApiError, ErrorBody};
use crate::http::extract::Path;
use crate::http::extract::{api_key, read_body};
use crate::http::openapi::{KeyErrors, NoSuchJob, scope};
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
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};

/// Largest request body of these routes (a report of a thousand items fits).
const BODY_LIMIT: usize = 256 * 1024;

/// The routes' part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(create, list, show, claim, report, cancel))]
pub(super) struct Api;

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

/// A job as the API answers it.
#[derive(Serialize, ToSchema)]
#[schema(as = Job)]
struct JobJson {
    id: i64,
    /// For people.
    name: String,
    /// `api` for jobs made through this API; grantkeeper's own are `keepalive`, `run`,
    /// `sweep:refresh` and `sweep:drive-appdata`.
    #[schema(schema_with = job_kind_schema)]
    kind: String,
    /// `running` until no user is pending or in flight (`finished`), or until cancelled.
    #[schema(schema_with = job_state_schema)]
    state: &'static str,
    /// The users are those whose grant holds every one of these (none: every user).
    scopes: Vec<String>,
    /// Upstream refreshes a second at most, across all instances.
    rate: Option<f64>,
    /// Seconds a worker holds a claimed user before it is offered again.
    lease: u32,
    /// Seconds every handed-out token stays valid at least.
    min_ttl: u32,
    /// Offers of a user before it counts as failed.
    max_attempts: u32,
    /// The API key (or grantkeeper's part) that made it.
    created_by: String,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    finished_at: Option<String>,
    progress: ProgressJson,
    /// `GET /v1/jobs/{id}` only: the last 20 users failed or skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    failures: Option<Vec<FailureJson>>,
}

/// How a job's users stand.
#[derive(Serialize, ToSchema)]
#[schema(as = JobProgress)]
struct ProgressJson {
    total: u64,
    pending: u64,
    in_flight: u64,
    done: u64,
    failed: u64,
    skipped: u64,
    /// Skipped users by reason: `revoked`, `needs_consent`, `scope_not_granted`,
    /// `invalid_grant`, `deleted`.
    skipped_by: BTreeMap<String, u64>,
    /// Users settled a second over the last minute.
    rate: f64,
    /// When the rest would be done at that rate; null when unknown.
    #[schema(format = DateTime)]
    eta: Option<String>,
}

/// A user of a job that failed or was skipped.
#[derive(Serialize, ToSchema)]
#[schema(as = JobFailure)]
struct FailureJson {
    sub: String,
    /// `failed` or `skipped`.
    state: &'static str,
    reason: Option<String>,
    /// What the worker said, for people.
    detail: Option<String>,
    #[schema(format = DateTime)]
    at: Option<String>,
}

fn job_kind_schema() -> utoipa::openapi::Object {
    super::openapi::string_enum(&[
        "api",
        "keepalive",
        "run",
        "sweep:refresh",
        "sweep:drive-appdata",
    ])
}

fn job_state_schema() -> utoipa::openapi::Object {
    super::openapi::string_enum(&["running", "finished", "cancelled"])
}

/// `GET /v1/jobs`'s answer.
#[derive(Serialize, ToSchema)]
#[schema(as = JobList)]
struct JobListJson {
    /// Newest first.
    jobs: Vec<JobJson>,
}

/// A claim's answer: the users leased, each with a fresh access token.
#[derive(Serialize, ToSchema)]
#[schema(as = Claim)]
struct ClaimJson {
    /// Names the claim: reports must carry it.
    lease: String,
    #[schema(format = DateTime)]
    lease_until: String,
    items: Vec<ClaimItemJson>,
    /// For an empty batch of a running job: seconds until a user may be due.
    retry_after: Option<f64>,
    job: JobJson,
}

/// A user leased to the caller.
#[derive(Serialize, ToSchema)]
#[schema(as = ClaimItem)]
struct ClaimItemJson {
    /// The item's id, for the report.
    id: i64,
    sub: String,
    access_token: String,
    #[schema(format = DateTime)]
    expires_at: String,
    scopes: Vec<String>,
    /// 1 for the first offer.
    attempt: u32,
}

/// What a report did.
#[derive(Serialize, ToSchema)]
#[schema(as = ReportAnswer)]
struct ReportJson {
    done: u64,
    retry: u64,
    failed: u64,
    job: JobJson,
}

fn job_json(view: &JobView) -> JobJson {
    let j = &view.job;
    let c = &view.counts;
    JobJson {
        id: j.id,
        name: j.name.clone(),
        kind: j.kind.clone(),
        state: j.state.as_str(),
        scopes: j.scopes.to_vec(),
        rate: j.rate,
        lease: j.lease_secs,
        min_ttl: j.min_ttl_secs,
        max_attempts: j.max_attempts,
        created_by: j.created_by.clone(),
        created_at: rfc3339(j.created_at),
        finished_at: j.finished_at.map(rfc3339),
        progress: ProgressJson {
            total: j.total,
            pending: c.pending,
            in_flight: c.in_flight,
            done: c.done,
            failed: c.failed,
            skipped: c.skipped_total(),
            skipped_by: c.skipped.clone(),
            rate: (view.rate * 100.0).round() / 100.0,
            eta: view.eta.map(rfc3339),
        },
        failures: None,
    }
}

fn failure_json(item: &SettledItem) -> FailureJson {
    FailureJson {
        sub: item.sub.clone(),
        state: item.state.as_str(),
        reason: item.reason.clone(),
        detail: item.detail.clone(),
        at: item.at.map(rfc3339),
    }
}

fn detail_json(detail: &JobDetail) -> JobJson {
    JobJson {
        failures: Some(detail.failures.iter().map(failure_json).collect()),
        ..job_json(&detail.view)
    }
}

/// A job as the API answers it (also each line of `jobs list --json`).
pub fn job_answer(view: &JobView) -> Value {
    serde_json::to_value(job_json(view)).unwrap_or_default()
}

/// A job with its last failures (`GET /v1/jobs/{id}`, `jobs show --json`).
pub fn detail_answer(detail: &JobDetail) -> Value {
    serde_json::to_value(detail_json(detail)).unwrap_or_default()
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

/// A job to make. Unknown fields are refused.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = JobRequest)]
struct CreateBody {
    /// For people, 1 to 100 characters.
    #[schema(required = true, min_length = 1, max_length = 100)]
    name: Option<String>,
    /// The users are those whose grant holds every one of these (none: every user), fixed now.
    scopes: Option<Vec<String>>,
    /// Upstream refreshes a second at most, across all instances (default 10).
    #[schema(minimum = 0.01, maximum = 1000)]
    rate: Option<f64>,
    /// Seconds a worker holds a claimed user (default 300).
    #[schema(minimum = 1, maximum = 86400)]
    lease: Option<i64>,
    /// Seconds every handed-out token stays valid at least (default 300).
    #[schema(minimum = 0, maximum = 3600)]
    min_ttl: Option<i64>,
    /// Offers of a user before it counts as failed (default 5).
    #[schema(minimum = 1, maximum = 100)]
    max_attempts: Option<i64>,
}

/// Makes a job over every user whose grant holds the scopes.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    operation_id = "create_job",
    tag = "jobs",
    summary = "Make a job over every user whose grant holds the scopes (scope jobs)",
    description = "Users whose grant is revoked or needs consent now are skipped at once.",
    security(("apiKey" = ["jobs"])),
    request_body = CreateBody,
    responses(
        (status = 201, description = "The job", body = JobJson),
        KeyErrors<scope::Jobs>,
        (status = 400, description = "`invalid_request`: a field out of range, of the wrong type or unknown", body = ErrorBody),
    )
)]
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
    Ok((StatusCode::CREATED, Json(job_json(&view))).into_response())
}

#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only the jobs in this state.
    #[param(schema_with = job_state_schema)]
    state: Option<String>,
    /// At most this many (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    limit: Option<String>,
}

/// Lists jobs, newest first.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    operation_id = "list_jobs",
    tag = "jobs",
    summary = "Jobs, newest first (scope jobs)",
    security(("apiKey" = ["jobs"])),
    params(ListQuery),
    responses(
        (status = 200, description = "Jobs", body = JobListJson),
        KeyErrors<scope::Jobs>,
        (status = 400, description = "`invalid_request`: an unknown state, or a limit out of range", body = ErrorBody),
    )
)]
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
    Ok(Json(JobListJson {
        jobs: views.iter().map(job_json).collect(),
    })
    .into_response())
}

/// One job with its last failures.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    operation_id = "get_job",
    tag = "jobs",
    summary = "A job, its progress and its last failures (scope jobs)",
    security(("apiKey" = ["jobs"])),
    params(("id" = i64, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job, with `failures`", body = JobJson),
        KeyErrors<scope::Jobs>,
        NoSuchJob,
    )
)]
async fn show(
    State(app): State<App>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    api_key(&app, request.headers(), KeyScope::Jobs).await?;
    let detail = app.jobs().detail(job_id(&id)?).await?;
    Ok(Json(detail_json(&detail)).into_response())
}

/// A claim. Unknown fields are refused.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ClaimRequest)]
struct ClaimBody {
    /// Users to lease at most (default 50).
    #[schema(minimum = 1, maximum = 500)]
    max: Option<i64>,
    /// Seconds to hold them (default: the job's).
    #[schema(minimum = 1, maximum = 86400)]
    lease: Option<i64>,
    /// The worker's name, for people.
    worker: Option<String>,
}

/// Leases users of a job, each with a fresh access token.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/claim",
    operation_id = "claim",
    tag = "jobs",
    summary = "Lease up to max users of the job, each with a fresh access token (scope jobs)",
    description = "Each token stays valid for at least the job's min_ttl. Grants that cannot give a token are skipped; users Google cannot refresh now, or beyond the job's rate for the next second, are offered again later (a smaller batch). An empty batch of a running job says retry_after; of a job no longer running, job.state says so. Answered with Cache-Control: no-store.",
    security(("apiKey" = ["jobs"])),
    params(("id" = i64, Path, description = "The job's id")),
    request_body(content = Option<ClaimBody>, description = "Optional: an empty body takes the defaults"),
    responses(
        (status = 200, description = "A batch (Cache-Control: no-store)", body = ClaimJson),
        KeyErrors<scope::Jobs>,
        NoSuchJob,
        (status = 400, description = "`invalid_request`: max or lease out of range, a field of the wrong type or unknown; nothing is leased", body = ErrorBody),
    )
)]
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
        Json(claim_json(&batch, &view)),
    )
        .into_response())
}

fn claim_json(batch: &Batch, view: &JobView) -> ClaimJson {
    ClaimJson {
        lease: batch.lease.clone(),
        lease_until: rfc3339(batch.lease_until),
        items: batch
            .items
            .iter()
            .map(|i| ClaimItemJson {
                id: i.id,
                sub: i.sub.clone(),
                access_token: i.token.token.expose_secret().to_owned(),
                expires_at: rfc3339(i.token.expires_at),
                scopes: i.token.scopes.to_vec(),
                attempt: i.attempt,
            })
            .collect(),
        retry_after: batch
            .retry_after
            .map(|d| (d.as_secs_f64() * 10.0).ceil() / 10.0),
        job: job_json(view),
    }
}

/// A report on users of one claim. Unknown fields are refused.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Report)]
struct ReportBody {
    /// The claim's `lease`.
    #[schema(required = true)]
    lease: Option<String>,
    #[schema(required = true)]
    items: Option<Vec<ReportItem>>,
}

/// What became of one user.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReportItem {
    /// The item's id, as the claim gave it.
    id: i64,
    /// `done`, `retry` (offered again after `delay`; failed when it was the last attempt) or
    /// `failed`.
    #[schema(schema_with = outcome_schema)]
    outcome: String,
    /// Seconds before a `retry` is offered again (default 60).
    #[schema(minimum = 0, maximum = 86400)]
    delay: Option<i64>,
    /// For people; never put a token in it.
    #[schema(max_length = 500)]
    detail: Option<String>,
}

fn outcome_schema() -> utoipa::openapi::Object {
    super::openapi::string_enum(&["done", "retry", "failed"])
}

/// Settles users of one claim.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/reports",
    operation_id = "report",
    tag = "jobs",
    summary = "Settle users of one claim: done, retry (after delay seconds) or failed (scope jobs)",
    description = "All or none: an item the lease does not hold (its lease ran out, another worker's, settled already) answers 409 not_held and nothing changes. A job whose users are all settled is finished.",
    security(("apiKey" = ["jobs"])),
    params(("id" = i64, Path, description = "The job's id")),
    request_body = ReportBody,
    responses(
        (status = 200, description = "What the report did", body = ReportJson),
        KeyErrors<scope::Jobs>,
        NoSuchJob,
        (status = 400, description = "`invalid_request`: no lease, the same user twice, an unknown outcome, a delay out of range", body = ErrorBody),
        (status = 409, description = "`not_held`: an item this lease does not hold; nothing was changed", body = ErrorBody),
    )
)]
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
    Ok(Json(ReportJson {
        done: summary.counts.done,
        retry: summary.counts.retry,
        failed: summary.counts.failed,
        job: job_json(&view),
    })
    .into_response())
}

/// Cancels a job.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/cancel",
    operation_id = "cancel_job",
    tag = "jobs",
    summary = "Cancel a job: nothing more is handed out (scope jobs)",
    description = "Reports of users held are still recorded.",
    security(("apiKey" = ["jobs"])),
    params(("id" = i64, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job", body = JobJson),
        KeyErrors<scope::Jobs>,
        NoSuchJob,
    )
)]
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
    Ok(Json(job_json(&result?)).into_response())
}
