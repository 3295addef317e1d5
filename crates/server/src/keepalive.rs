//! Keep-alive without cron: Google lets a refresh token that goes unused for six months die, so
//! `serve` refreshes every usable grant not refreshed for `[jobs] keepalive_after`, as a job of
//! the job engine (kind `keepalive`). One instance makes the job about every `keepalive_every`
//! (the store's unique key makes a second running one impossible, so instances starting together
//! join the same), its users due one after another spread over that time, and every instance
//! works on it: each user is leased to one instance, so each grant is refreshed once.
//!
//! A background task ([`crate::workers`], started by
//! [`App::start_keepalive`](crate::App::start_keepalive)); told to stop, it finishes the
//! refreshes under way.

use crate::config::KeepAliveSettings;
use crate::workers::StopSignal;
use grantkeeper_broker::jobs::worker::{self, WorkOutcome, WorkerOptions};
use grantkeeper_broker::jobs::{JobSpec, Jobs, Kind};
use grantkeeper_core::{Scopes, SharedClock};
use grantkeeper_store::{JobState, Selection};
use std::time::Duration;
use tokio::sync::watch;

/// The key (and name) of keep-alive jobs.
pub const KEY: &str = "keepalive";
/// The name of its background task ([`crate::workers`]).
pub(crate) const TASK: &str = "keep-alive";

/// Logs what keep-alive does, then looks for keep-alive work every `settings.poll` until told
/// to stop.
pub(crate) async fn run(
    jobs: Jobs,
    settings: KeepAliveSettings,
    clock: SharedClock,
    mut stop: StopSignal,
) {
    tracing::info!(
        after_days = settings.after.as_secs() / 86_400,
        "keep-alive: grants not refreshed for this long are refreshed ([jobs] keepalive_after = \"0s\" turns it off)"
    );
    loop {
        if *stop.borrow() {
            return;
        }
        match due_job(&jobs, &settings, &clock).await {
            Ok(Some(id)) => work(&jobs, id, &settings, stop.clone()).await,
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "keep-alive could not look for work"),
        }
        tokio::select! {
            () = tokio::time::sleep(settings.poll) => {}
            _ = stop.changed() => return,
        }
    }
}

/// The running keep-alive job, made when the last one is older than `every`.
async fn due_job(
    jobs: &Jobs,
    settings: &KeepAliveSettings,
    clock: &SharedClock,
) -> Result<Option<i64>, grantkeeper_broker::jobs::JobError> {
    let now = clock.now();
    if let Some(last) = jobs.latest_with_key(KEY).await? {
        if last.state == JobState::Running {
            return Ok(Some(last.id));
        }
        let every = time::Duration::try_from(settings.every).unwrap_or(time::Duration::DAY);
        if last.created_at + every > now {
            return Ok(None);
        }
    }
    let idle = time::Duration::try_from(settings.after).unwrap_or(time::Duration::DAY);
    let spec = JobSpec {
        name: "keep-alive".to_owned(),
        kind: Kind::KeepAlive,
        key: Some(KEY.to_owned()),
        scopes: Scopes::default(),
        selection: Selection::IdleSince(now - idle),
        rate: Some(settings.rate),
        lease: Duration::from_secs(120),
        min_ttl: Duration::ZERO,
        max_attempts: 3,
        spread: settings.every,
    };
    let (view, made) = jobs.create_or_join(spec, "serve").await?;
    if made {
        tracing::info!(
            job = view.job.id,
            grants = view.job.total,
            "keep-alive: made a job refreshing the idle grants, spread over the coming period"
        );
    }
    Ok((view.job.state == JobState::Running).then_some(view.job.id))
}

/// Works on what is due now: the claim refreshes each user (a refresh is the use that keeps
/// the token alive), so the work itself only confirms it.
async fn work(jobs: &Jobs, id: i64, settings: &KeepAliveSettings, stop: watch::Receiver<bool>) {
    let opts = WorkerOptions {
        concurrency: 4,
        batch: u32::try_from((settings.rate.ceil() as u64).clamp(1, 100)).unwrap_or(1),
        lease: None,
        start_rate: None,
        name: "keep-alive".to_owned(),
        linger: false,
        max_wait: settings.poll,
        // Stopped (`serve` shutting down), users already refreshed are reported, not redone.
        work_in_claim: true,
        refresh_in_worker: false,
    };
    let result = worker::run(
        jobs,
        id,
        opts,
        stop,
        |_item| async { WorkOutcome::Done("refreshed".to_owned()) },
        &|event| {
            tracing::debug!(sub = %event.sub, state = ?event.state, "keep-alive");
        },
    )
    .await;
    match result {
        Ok(summary) if summary.settled > 0 => tracing::info!(
            job = id,
            refreshed = summary.settled,
            "keep-alive: refreshed idle grants"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(job = id, error = %e, "keep-alive: working on the job failed"),
    }
}
