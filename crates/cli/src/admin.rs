//! The operator's commands on a deployment's store: API keys, users, the audit log and sweeps.

use crate::Target;
use crate::ops::{config_path, load};
use anyhow::{Context, anyhow, bail};
use grantkeeper_broker::RevocationOutcome;
use grantkeeper_broker::sweep::{self, Job, Outcome, SweepEvent, SweepOptions};
use grantkeeper_core::{ExposeSecret, SystemClock};
use grantkeeper_server::App;
use grantkeeper_server::apikeys::{KeyScope, create_api_key};
use grantkeeper_store::AuditFilter;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Opens the deployment named by `target` as the server would.
pub async fn open_app(target: &Target) -> anyhow::Result<App> {
    let (settings, master) = load(&config_path(target)?)?;
    let store = grantkeeper_store::open_with(&settings.store_url, &settings.store)
        .await
        .context("opening the store")?;
    Ok(App::new(settings, store, &master, SystemClock::shared()).await?)
}

fn when(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// Prints rows as a left-aligned table with a header.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let text: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row.clone());
    }
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

pub async fn api_keys_list(target: &Target) -> anyhow::Result<()> {
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
    table(&["ID", "NAME", "SCOPES", "CREATED", "REVOKED"], &rows);
    Ok(())
}

pub async fn api_keys_revoke(target: &Target, id: &str) -> anyhow::Result<()> {
    let app = open_app(target).await?;
    if !app.store().revoke_api_key(id, app.clock().now()).await? {
        bail!("no active API key has the id {id}");
    }
    println!(
        "revoked {id}; running servers stop accepting it within {} s",
        grantkeeper_server::app::API_KEY_CACHE_TTL.as_secs()
    );
    Ok(())
}

pub async fn users_list(target: &Target) -> anyhow::Result<()> {
    let app = open_app(target).await?;
    let mut rows = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = app.store().list_users(after.as_deref(), 500).await?;
        for (u, g) in &page.users {
            rows.push(vec![
                u.profile.sub.clone(),
                u.profile.email.clone().unwrap_or_default(),
                g.state.to_string(),
                g.scopes.len().to_string(),
                g.last_refresh_at
                    .map(when)
                    .unwrap_or_else(|| "-".to_owned()),
            ]);
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    table(&["SUB", "EMAIL", "STATE", "SCOPES", "LAST REFRESH"], &rows);
    Ok(())
}

pub async fn users_show(target: &Target, sub: &str) -> anyhow::Result<()> {
    let app = open_app(target).await?;
    let (u, g) = app
        .store()
        .user(sub)
        .await?
        .ok_or_else(|| anyhow!("no user with sub {sub}"))?;
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
    let rows: Vec<Vec<String>> = app
        .store()
        .grant_events(sub)
        .await?
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
    table(&["AT", "FROM", "TO", "REASON"], &rows);
    Ok(())
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
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                when(r.at),
                r.actor.clone(),
                r.sub.clone().unwrap_or_else(|| "-".to_owned()),
                r.action.clone(),
                r.detail.clone(),
                r.outcome.clone(),
                times(r),
            ]
        })
        .collect();
    table(
        &["AT", "WHO", "USER", "ACTION", "WHAT", "OUTCOME", "TIMES"],
        &rows,
    );
    Ok(())
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
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("stopping: finishing the calls in flight (Ctrl-C again to quit at once)");
            let _ = stop_tx.send(true);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    let terminal = std::io::stderr().is_terminal();
    let bar = terminal.then(|| {
        let bar = ProgressBar::new(0);
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {pos}/{len} users  {per_sec}  eta {eta}  {msg}")
        {
            bar.set_style(style);
        }
        bar
    });
    let on_event = |e: &SweepEvent| match &bar {
        Some(bar) => {
            bar.set_length(e.total);
            bar.set_position(e.done);
        }
        None => println!(
            "{}",
            serde_json::json!({"sub": e.sub, "outcome": e.outcome, "detail": e.detail, "done": e.done, "total": e.total})
        ),
    };
    let summary = sweep::run_sweep(
        app.broker(),
        app.store(),
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
    let count = |o: Outcome| summary.counts.get(&o).copied().unwrap_or(0).to_string();
    if let Some(from) = &summary.resumed_from {
        println!("resumed after {from}");
    }
    table(
        &["OK", "FAILING", "REVOKED", "SKIPPED", "SECONDS"],
        &[vec![
            count(Outcome::Ok),
            count(Outcome::Failing),
            count(Outcome::Revoked),
            count(Outcome::Skipped),
            format!("{:.1}", summary.elapsed.as_secs_f64()),
        ]],
    );
    if summary.interrupted {
        println!("interrupted: run the same command again to resume");
    }
    Ok(())
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
