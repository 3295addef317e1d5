//! `keys rotate`, `keys rewrap` and `keys list`: the vault's data keys of a deployment, rotated
//! or moved to another master key while its servers run (the rules are grantkeeper-server's
//! `rotation` and `rewrap`).

use crate::Target;
use crate::ops::{config_path, load};
use crate::output::{listing, when, when_json};
use anyhow::{Context, anyhow, bail};
use grantkeeper_core::{ExposeSecret, SystemClock};
use grantkeeper_server::master_key::{MasterKeySettings, SpecOptions};
use grantkeeper_server::vault::rewrap::{RewrapEvent, rewrap as rewrap_keys};
use grantkeeper_server::vault::rotation::{
    Rotation, RotationEvent, RotationOptions, RotationSummary,
};
use grantkeeper_store::SharedStore;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::io::IsTerminal;
use std::time::Duration;

async fn open_store(target: &Target) -> anyhow::Result<(SharedStore, MasterKeySettings)> {
    let (settings, master) = load(&config_path(target)?)?;
    let store = grantkeeper_store::open_with(settings.store_url.expose_secret(), &settings.store)
        .await
        .context("opening the store")?;
    Ok((store, master))
}

/// One line per data key: id, when it was made, whether it is active, when it was retired,
/// how many sealed values name it, and which master key wraps it.
pub async fn list(target: &Target, json: bool) -> anyhow::Result<()> {
    let (store, _) = open_store(target).await?;
    let statuses = store.data_key_statuses().await?;
    let counts = store.count_sealed().await?;
    let rows: Vec<Vec<String>> = statuses
        .iter()
        .map(|k| {
            vec![
                k.id.to_string(),
                when(k.created_at),
                if k.active { "yes" } else { "no" }.to_owned(),
                k.retired_at.map(when).unwrap_or_else(|| "-".to_owned()),
                k.sealed_values.to_string(),
                wrapped_by(k.wrapped_by.as_deref()).to_owned(),
            ]
        })
        .collect();
    let objects: Vec<serde_json::Value> = statuses
        .iter()
        .map(|k| {
            json!({"id": k.id, "created_at": when(k.created_at), "active": k.active,
                   "retired_at": when_json(k.retired_at), "sealed_values": k.sealed_values,
                   "wrapped_by": wrapped_by(k.wrapped_by.as_deref())})
        })
        .collect();
    print!(
        "{}",
        listing(
            json,
            &["ID", "CREATED", "ACTIVE", "RETIRED", "VALUES", "WRAPPED BY"],
            &rows,
            &objects
        )
    );
    let known: u64 = statuses.iter().map(|k| k.sealed_values).sum();
    let stray = counts.total() - known.min(counts.total());
    if stray > 0 {
        eprintln!(
            "{stray} sealed values name no data key of this store ({} malformed): they do not open",
            counts.malformed
        );
    }
    Ok(())
}

/// `keys rotate`: begins (or resumes) a rotation and runs it to its end, or until Ctrl-C.
pub async fn rotate(
    target: &Target,
    batch_size: u32,
    grace: Option<Duration>,
) -> anyhow::Result<()> {
    let (settings, master) = load(&config_path(target)?)?;
    let options = RotationOptions {
        batch_size,
        reload_interval: settings.keyring_reload,
        grace: grace.unwrap_or(settings.keyring_reload.saturating_mul(2)),
        ..RotationOptions::default()
    };
    if options.grace < options.min_grace() {
        bail!(
            "--grace {} s is shorter than twice vault.reload_interval ({} s): a running server \
             may still seal under the old key when it is retired; pass at least --grace {}s",
            options.grace.as_secs_f64(),
            settings.keyring_reload.as_secs_f64(),
            options.min_grace().as_secs()
        );
    }
    let store = grantkeeper_store::open_with(settings.store_url.expose_secret(), &settings.store)
        .await
        .context("opening the store")?;
    let master = crate::ops::open_master(&master).await?;
    let mut rotation = Rotation::begin(store, master.as_ref(), SystemClock::shared()).await?;
    let old: Vec<String> = rotation.old_keys().iter().map(u32::to_string).collect();
    let from = if old.is_empty() {
        String::new()
    } else {
        format!(" (from key {})", old.join(", "))
    };
    // What a person reads goes to stderr; stdout, when it is not a terminal, carries JSON
    // lines and nothing else.
    if rotation.resumed() {
        eprintln!("resuming rotation to key {}{from}", rotation.key());
    } else {
        eprintln!("rotating to key {}{from}", rotation.key());
    }

    let stop_rx =
        crate::stop_on_ctrl_c("stopping after the batch under way (Ctrl-C again to quit at once)")?;
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(0);
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {pos}/{len} values  {per_sec}  eta {eta}  {msg}")
        {
            bar.set_style(style);
        }
        bar
    });
    let lines = !std::io::stdout().is_terminal();
    let on_event = |e: &RotationEvent| {
        if let Some(bar) = &bar {
            show(bar, e);
        }
        if lines {
            println!("{}", json_line(e));
        }
    };
    let summary = rotation.run(&options, stop_rx, &on_event).await?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if lines {
        println!(
            "{}",
            json!({"event": "summary", "key": summary.key, "resumed": summary.resumed,
                   "resealed": summary.resealed, "skipped": summary.skipped,
                   "unreadable": summary.unreadable, "remaining": summary.remaining,
                   "retired": summary.retired, "kept": summary.kept,
                   "interrupted": summary.interrupted, "finished": summary.finished()})
        );
    }
    report(&summary)
}

fn show(bar: &ProgressBar, e: &RotationEvent) {
    match e {
        RotationEvent::Batch { done, total, .. } => {
            bar.set_length(*total);
            bar.set_position(*done);
        }
        RotationEvent::Waiting { remaining } => bar.set_message(format!(
            "waiting {} s for running servers to load the new key",
            seconds(*remaining)
        )),
        RotationEvent::Verified { remaining, .. } => {
            bar.set_message(format!("{remaining} values left under old keys"))
        }
        // Said once the run ends.
        RotationEvent::Retired { .. } => {}
    }
}

fn json_line(e: &RotationEvent) -> serde_json::Value {
    match e {
        RotationEvent::Batch {
            column,
            resealed,
            skipped,
            unreadable,
            done,
            total,
        } => json!({"event": "batch", "column": column.as_str(), "resealed": resealed,
                    "skipped": skipped, "unreadable": unreadable, "done": done, "total": total}),
        RotationEvent::Waiting { remaining } => {
            json!({"event": "waiting", "seconds": seconds(*remaining)})
        }
        RotationEvent::Verified { pass, remaining } => {
            json!({"event": "verified", "pass": pass, "remaining": remaining})
        }
        RotationEvent::Retired { key } => json!({"event": "retired", "key": key}),
    }
}

/// The source of a key recorded before sources were: the local master key.
fn wrapped_by(label: Option<&str>) -> &str {
    label.unwrap_or(grantkeeper_core::LOCAL_SOURCE)
}

/// `keys rewrap --to`: wraps every data key with another master key, key by key, until done
/// or Ctrl-C; running it again resumes.
pub async fn rewrap(target: &Target, to: &str, options: &SpecOptions) -> anyhow::Result<()> {
    let (store, from) = open_store(target).await?;
    let to = MasterKeySettings::from_spec(to, options)?;
    let from = crate::ops::open_master(&from).await?;
    let to = crate::ops::open_master(&to).await?;
    eprintln!(
        "rewrapping the data keys from {} to {}",
        from.label(),
        to.label()
    );
    let stop_rx =
        crate::stop_on_ctrl_c("stopping after the key under way (Ctrl-C again to quit at once)")?;
    let lines = !std::io::stdout().is_terminal();
    let on_event = |e: &RewrapEvent| {
        let (event, key) = match e {
            RewrapEvent::Rewrapped { key } => ("rewrapped", key),
            RewrapEvent::Already { key } => ("already", key),
            RewrapEvent::Changed { key } => ("changed", key),
        };
        if lines {
            println!("{}", json!({"event": event, "key": key}));
        } else {
            eprintln!("key {key}: {event}");
        }
    };
    let summary = rewrap_keys(&store, from.as_ref(), to.as_ref(), &stop_rx, &on_event).await?;
    if lines {
        println!(
            "{}",
            json!({"event": "summary", "to": summary.to, "rewrapped": summary.rewrapped,
                   "already": summary.already, "changed": summary.changed,
                   "interrupted": summary.interrupted, "finished": summary.finished()})
        );
    }
    eprintln!(
        "{} data keys rewrapped, {} already wrapped by {}",
        summary.rewrapped.len(),
        summary.already.len(),
        summary.to
    );
    if summary.interrupted {
        eprintln!("interrupted: run `grantkeeper keys rewrap` again to resume");
        return Ok(());
    }
    if !summary.changed.is_empty() {
        bail!(
            "key(s) {:?} were rewrapped by another run meanwhile: run `grantkeeper keys rewrap` \
             again to check them",
            summary.changed
        );
    }
    eprintln!(
        "every data key is wrapped by {}: name it in [vault] and restart the servers (before the \
         next `keys rotate`)",
        summary.to
    );
    Ok(())
}

/// Whole seconds, rounded up (a wait of 0.4 s is not "0 s").
fn seconds(d: Duration) -> u64 {
    u64::try_from(d.as_millis().div_ceil(1000)).unwrap_or(u64::MAX)
}

/// What a person reads at the end (on stderr); an error when values are left unsealed.
fn report(summary: &RotationSummary) -> anyhow::Result<()> {
    eprintln!(
        "re-sealed {} values under key {} ({} rewritten meanwhile by a running server, {} that do not open)",
        summary.resealed, summary.key, summary.skipped, summary.unreadable
    );
    for key in &summary.retired {
        eprintln!("retired key {key}");
    }
    if summary.interrupted {
        eprintln!("interrupted: run `grantkeeper keys rotate` again to resume");
        return Ok(());
    }
    if summary.finished() {
        eprintln!("rotation to key {} finished", summary.key);
        return Ok(());
    }
    let kept: Vec<String> = summary.kept.iter().map(u32::to_string).collect();
    if summary.remaining > 0 {
        bail!(
            "{} values are still not sealed under key {} after {} passes; key(s) {} kept. Values \
             that do not open were logged by row; run `grantkeeper keys rotate` again to resume",
            summary.remaining,
            summary.key,
            summary.passes,
            if kept.is_empty() {
                "-".to_owned()
            } else {
                kept.join(", ")
            }
        );
    }
    Err(anyhow!(
        "key(s) {} still seal values written meanwhile; run `grantkeeper keys rotate` again to resume",
        kept.join(", ")
    ))
}
