//! The operator's commands on a deployment's store: API keys, users, the audit log and sweeps.

use crate::Target;
use crate::ops::{config_path, load};
use crate::output::{listing, table, when, when_json};
use anyhow::{Context, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use grantkeeper_broker::RevocationOutcome;
use grantkeeper_broker::sweep::{self, Job, Outcome, SweepEvent, SweepOptions, SweepSummary};
use grantkeeper_core::{ExposeSecret, GrantState, SystemClock};
use grantkeeper_server::App;
use grantkeeper_server::apikeys::{KeyScope, create_api_key};
use grantkeeper_store::{AuditFilter, UserSearch};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Opens the deployment named by `target` as the server would.
pub async fn open_app(target: &Target) -> anyhow::Result<App> {
    let (settings, master) = load(&config_path(target)?)?;
    let store = grantkeeper_store::open_with(settings.store_url.expose_secret(), &settings.store)
        .await
        .context("opening the store")?;
    let master = crate::ops::open_master(&master).await?;
    Ok(App::new(settings, store, master, SystemClock::shared()).await?)
}

/// Writes `text` to stdout as it is (listings end their lines themselves).
fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

pub async fn api_keys_create(target: &Target, name: &str, scopes: &[String]) -> anyhow::Result<()> {
    let scopes: Vec<KeyScope> = if scopes.is_empty() {
        vec![KeyScope::Token, KeyScope::Proxy, KeyScope::UsersRead]
    } else {
        scopes
            .iter()
            .map(|s| s.parse().map_err(|e: String| anyhow!(e)))
            .collect::<Result<_, _>>()?
    };
    let app = open_app(target).await?;
    let (record, secret) =
        create_api_key(app.store().as_ref(), app.clock().as_ref(), name, &scopes).await?;
    println!(
        "created API key {} ({}) with scopes {}",
        record.id,
        record.name,
        record.scopes.join(" ")
    );
    println!("it is shown once; store it now:");
    println!("{}", secret.expose_secret());
    Ok(())
}

pub async fn api_keys_list(target: &Target, json: bool) -> anyhow::Result<()> {
    let app = open_app(target).await?;
    let keys = app.store().list_api_keys().await?;
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.id.clone(),
                k.name.clone(),
                k.scopes.join(" "),
                when(k.created_at),
                k.revoked_at.map(when).unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    let objects: Vec<Value> = keys
        .iter()
        .map(|k| {
            json!({"id": k.id, "name": k.name, "scopes": k.scopes,
                   "created_at": when(k.created_at), "revoked_at": when_json(k.revoked_at)})
        })
        .collect();
    print(&listing(
        json,
        &["ID", "NAME", "SCOPES", "CREATED", "REVOKED"],
        &rows,
        &objects,
    ))
}

pub async fn api_keys_revoke(target: &Target, id: &str) -> anyhow::Result<()> {
    let app = open_app(target).await?;
    if !app.store().revoke_api_key(id, app.clock().now()).await? {
        bail!("no active API key has the id {id}");
    }
    if app.store().backend() == "postgres" {
        println!("revoked {id}; running servers stop accepting it at once");
    } else {
        println!(
            "revoked {id}; running servers stop accepting it within {} s",
            grantkeeper_server::app::API_KEY_CACHE_TTL.as_secs()
        );
    }
    Ok(())
}

/// What `users list` shows: the console's filters, a page size and where to go on from.
#[derive(Clone, Debug, Default)]
pub struct UserFilter {
    /// Part of an email, or the start of a sub.
    pub email: Option<String>,
    pub state: Option<String>,
    pub limit: u32,
    /// A `next_cursor` of an earlier listing (or of `GET /v1/users`).
    pub cursor: Option<String>,
}

/// Users read from the store per query.
const USERS_PER_QUERY: u32 = 500;

/// The users a filter selects, in `sub` order, and the cursor of the next page when more
/// follow.
async fn select_users(
    app: &App,
    filter: &UserFilter,
) -> anyhow::Result<(
    Vec<(
        grantkeeper_store::UserRecord,
        grantkeeper_store::GrantRecord,
    )>,
    Option<String>,
)> {
    let state = match filter.state.as_deref() {
        None => None,
        Some(s) => Some(s.parse::<GrantState>().map_err(|_| {
            anyhow!("--state takes active, failing, needs_consent or revoked, not {s:?}")
        })?),
    };
    let mut after = match filter.cursor.as_deref() {
        None => None,
        Some(c) => Some(
            URL_SAFE_NO_PAD
                .decode(c)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| anyhow!("--cursor takes a next cursor a listing gave"))?,
        ),
    };
    let text = filter
        .email
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    let mut users = Vec::new();
    let mut more = true;
    while more && users.len() < filter.limit as usize {
        let want = (filter.limit as usize - users.len()).min(USERS_PER_QUERY as usize);
        let page = app
            .store()
            .search_users(&UserSearch {
                text: text.clone(),
                state,
                after: after.clone(),
                limit: u32::try_from(want).unwrap_or(USERS_PER_QUERY),
            })
            .await?;
        more = page.next.is_some();
        after = page.next;
        users.extend(page.users);
    }
    let next = (more && !users.is_empty())
        .then(|| {
            users
                .last()
                .map(|(u, _)| URL_SAFE_NO_PAD.encode(&u.profile.sub))
        })
        .flatten();
    Ok((users, next))
}

pub async fn users_list(target: &Target, filter: &UserFilter, json: bool) -> anyhow::Result<()> {
    let app = open_app(target).await?;
    let (users, next) = select_users(&app, filter).await?;
    let rows: Vec<Vec<String>> = users
        .iter()
        .map(|(u, g)| {
            vec![
                u.profile.sub.clone(),
                u.profile.email.clone().unwrap_or_else(|| "-".to_owned()),
                g.state.to_string(),
                g.last_refresh_at
                    .map(when)
                    .unwrap_or_else(|| "-".to_owned()),
                g.scopes.len().to_string(),
            ]
        })
        .collect();
    let objects: Vec<Value> = users
        .iter()
        .map(|(u, g)| grantkeeper_server::http::user_answer(u, g))
        .collect();
    print(&listing(
        json,
        &["SUB", "EMAIL", "STATE", "LAST REFRESH", "SCOPES"],
        &rows,
        &objects,
    ))?;
    if let Some(next) = next {
        eprintln!(
            "more users follow: run again with --cursor {next} (at most --limit {} a time)",
            filter.limit
        );
    }
    Ok(())
}

pub async fn users_show(target: &Target, sub: &str, json: bool) -> anyhow::Result<()> {
    let app = open_app(target).await?;
    let (u, g) = app
        .store()
        .user(sub)
        .await?
        .ok_or_else(|| anyhow!("no user with sub {sub}"))?;
    let events = app.store().grant_events(sub).await?;
    if json {
        let mut answer = grantkeeper_server::http::user_answer(&u, &g);
        let history = events
            .iter()
            .map(|e| {
                json!({"at": when(e.at), "from": e.from.map(GrantState::as_str),
                       "to": e.to.as_str(), "reason": e.reason})
            })
            .collect();
        if let Some(fields) = answer.as_object_mut() {
            fields.insert("history".to_owned(), history);
        }
        return print(&format!("{answer}\n"));
    }
    let p = &u.profile;
    println!("sub:           {}", p.sub);
    println!(
        "email:         {}{}",
        p.email.clone().unwrap_or_default(),
        if p.email_verified { " (verified)" } else { "" }
    );
    println!("name:          {}", p.name.clone().unwrap_or_default());
    println!("created:       {}", when(u.created_at));
    println!(
        "last sign-in:  {}",
        u.last_sign_in_at.map(when).unwrap_or_default()
    );
    println!(
        "grant:         {} ({})",
        g.state,
        g.reason.clone().unwrap_or_default()
    );
    println!(
        "refresh token: {}",
        if g.refresh_token.is_some() {
            "held, sealed"
        } else {
            "none"
        }
    );
    println!(
        "last refresh:  {}",
        g.last_refresh_at
            .map(when)
            .unwrap_or_else(|| "-".to_owned())
    );
    println!(
        "last error:    {}",
        g.last_error.clone().unwrap_or_else(|| "-".to_owned())
    );
    println!("scopes:");
    for s in g.scopes.iter() {
        println!("  {s}");
    }
    println!("history:");
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                when(e.at),
                e.from
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "-".to_owned()),
                e.to.to_string(),
                e.reason.clone(),
            ]
        })
        .collect();
    print(&table(&["AT", "FROM", "TO", "REASON"], &rows))
}

/// Revokes here at once; when Google cannot be reached, its revocation there is queued, and the
/// running servers retry it (this process ends too soon to).
pub async fn users_revoke(target: &Target, sub: &str) -> anyhow::Result<()> {
    let app = open_app(target).await?;
    let revoked = app
        .broker()
        .revoke_or_queue(sub, "revoked by an operator")
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let outcome = match revoked {
        RevocationOutcome::Revoked => "ok",
        RevocationOutcome::Queued => "queued",
    };
    app.audit()
        .record("cli", Some(sub), "revoke", String::new(), outcome)
        .await;
    app.audit().flush().await;
    match revoked {
        RevocationOutcome::Revoked => println!("revoked the grant of {sub} at Google and here"),
        RevocationOutcome::Queued => println!(
            "revoked the grant of {sub} here; the revocation at Google is queued and retried \
             by the running servers"
        ),
    }
    Ok(())
}

/// `--since`: an RFC 3339 time, or a duration back from now (`24h`, `7d`).
fn parse_since(text: &str, now: OffsetDateTime) -> anyhow::Result<OffsetDateTime> {
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t);
    }
    let d = grantkeeper_server::config::parse_duration(text)
        .ok_or_else(|| anyhow!("--since takes an RFC 3339 time or a duration like 24h or 7d"))?;
    Ok(now - d)
}

pub async fn audit(
    target: &Target,
    user: Option<String>,
    since: Option<String>,
    limit: u32,
    json: bool,
) -> anyhow::Result<()> {
    let app = open_app(target).await?;
    let since = since
        .map(|s| parse_since(&s, app.clock().now()))
        .transpose()?;
    let rows = app
        .store()
        .audit(AuditFilter {
            sub: user,
            since,
            before_id: None,
            limit,
        })
        .await?;
    let objects: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({"id": r.id, "at": when(r.at), "actor": r.actor, "sub": r.sub,
                   "action": r.action, "detail": r.detail, "outcome": r.outcome,
                   "times": r.times, "last_at": when(r.last_at)})
        })
        .collect();
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                when(r.at),
                r.actor.clone(),
                r.sub.clone().unwrap_or_else(|| "-".to_owned()),
                r.action.clone(),
                if r.detail.is_empty() {
                    "-".to_owned()
                } else {
                    r.detail.clone()
                },
                r.outcome.clone(),
                times(r),
            ]
        })
        .collect();
    print(&listing(
        json,
        &["AT", "WHO", "USER", "ACTION", "WHAT", "OUTCOME", "TIMES"],
        &rows,
        &objects,
    ))
}

/// How many identical acts a row stands for, and until when when more than one.
fn times(r: &grantkeeper_store::AuditRecord) -> String {
    if r.times > 1 {
        format!("{} (last {})", r.times, when(r.last_at))
    } else {
        "1".to_owned()
    }
}

/// `--rate`: `R` or `R/s` upstream starts per second.
pub fn parse_rate(text: &str) -> anyhow::Result<f64> {
    let n = text.trim().trim_end_matches("/s");
    let r: f64 = n
        .parse()
        .map_err(|_| anyhow!("--rate takes a number of calls per second, like 50/s"))?;
    if !(r > 0.0 && r.is_finite()) {
        bail!("--rate must be above 0");
    }
    Ok(r)
}

pub async fn sweep(
    target: &Target,
    job: &str,
    concurrency: usize,
    rate: Option<String>,
    batch_lease: std::time::Duration,
) -> anyhow::Result<()> {
    let job: Job = job
        .parse()
        .map_err(|_| anyhow!("--job is refresh or drive-appdata"))?;
    let rate = rate.map(|r| parse_rate(&r)).transpose()?;
    let app = open_app(target).await?;
    let budget = app.settings().broker.refresh_concurrency;
    if concurrency > budget {
        eprintln!(
            "note: at most {budget} refreshes run at once ([broker] refresh_concurrency), \
             below --concurrency {concurrency}"
        );
    }
    let stop_rx = crate::stop_on_ctrl_c(
        "stopping: finishing the calls in flight (Ctrl-C again to quit at once)",
    )?;
    // A person at a terminal sees a progress bar on stderr; stdout, when it is not a terminal,
    // carries JSON lines and nothing else: one per user, then one summary.
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(0);
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {pos}/{len} users  {per_sec}  eta {eta}  {msg}")
        {
            bar.set_style(style);
        }
        bar
    });
    let lines = !std::io::stdout().is_terminal();
    let on_event = |e: &SweepEvent| {
        if let Some(bar) = &bar {
            bar.set_length(e.total);
            bar.set_position(e.done);
        }
        if lines {
            println!(
                "{}",
                json!({"sub": e.sub, "outcome": e.outcome, "detail": e.detail, "done": e.done, "total": e.total})
            );
        }
    };
    let summary = sweep::run_sweep(
        app.broker(),
        app.store().clone(),
        app.api_http().clone(),
        app.settings().api_base.clone(),
        job,
        SweepOptions {
            concurrency: concurrency.max(1),
            rate_per_sec: rate,
            page_size: 500,
            batch_lease,
        },
        stop_rx,
        &on_event,
    )
    .await
    .map_err(|e| anyhow!("{e}"))?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if lines {
        println!("{}", summary_json(job, &summary));
    }
    eprint!("{}", summary_text(&summary));
    if summary.run_cancelled && !summary.interrupted {
        bail!(
            "run {} of the {job} sweep was cancelled (jobs cancel): its users not swept yet stay so; the next sweep starts a new run",
            summary.job_id
        );
    }
    Ok(())
}

fn counts_json(counts: &BTreeMap<Outcome, u64>) -> Value {
    Outcome::ALL
        .iter()
        .map(|o| {
            (
                o.as_str().to_owned(),
                counts.get(o).copied().unwrap_or(0).into(),
            )
        })
        .collect::<serde_json::Map<String, Value>>()
        .into()
}

/// The last JSON line of a sweep: this invocation's counts and the whole run's.
fn summary_json(job: Job, s: &SweepSummary) -> Value {
    json!({"summary": {
        "job": job.as_str(),
        "interrupted": s.interrupted,
        "resumed_after": s.resumed_from,
        "seconds": (s.elapsed.as_secs_f64() * 10.0).round() / 10.0,
        "counts": counts_json(&s.counts),
        "run": {"finished": s.run_finished, "cancelled": s.run_cancelled, "counts": counts_json(&s.run_counts)},
    }})
}

/// What a person reads at the end of a sweep (on stderr).
fn summary_text(s: &SweepSummary) -> String {
    let count = |counts: &BTreeMap<Outcome, u64>, o: Outcome| {
        counts.get(&o).copied().unwrap_or(0).to_string()
    };
    let row = |what: &str, counts: &BTreeMap<Outcome, u64>| {
        let mut row = vec![what.to_owned()];
        row.extend(Outcome::ALL.iter().map(|o| count(counts, *o)));
        row
    };
    let mut out = String::new();
    if let Some(from) = &s.resumed_from {
        out.push_str(&format!("resumed after {from}\n"));
    }
    let mut rows = vec![row("this sweep", &s.counts)];
    if s.run_finished {
        rows.push(row("whole run", &s.run_counts));
    }
    out.push_str(&table(&["", "OK", "FAILING", "REVOKED", "SKIPPED"], &rows));
    out.push_str(&format!("took {:.1} s\n", s.elapsed.as_secs_f64()));
    if s.interrupted {
        out.push_str("interrupted: run the same command again to resume\n");
    } else if !s.run_finished && !s.run_cancelled {
        // (A cancelled run is told by the error that follows the summary.)
        out.push_str("other sweep processes still hold batches of this run\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_since() {
        assert_eq!(parse_rate("50/s").unwrap(), 50.0);
        assert_eq!(parse_rate("2.5").unwrap(), 2.5);
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
        let now = OffsetDateTime::from_unix_timestamp(1_000_000).unwrap();
        assert_eq!(
            parse_since("1h", now).unwrap().unix_timestamp(),
            1_000_000 - 3600
        );
        assert_eq!(
            parse_since("1970-01-01T00:00:10Z", now)
                .unwrap()
                .unix_timestamp(),
            10
        );
        assert!(parse_since("yesterday", now).is_err());
    }
}
