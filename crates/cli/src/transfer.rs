//! `export` and `import`: a deployment's rows as JSON lines, to move between SQLite and
//! PostgreSQL. Sealed values travel sealed, with the wrapped data keys: the target must use the
//! same master key. Importing twice changes nothing the second time. Sessions, refresh leases
//! and sweep bookkeeping are transient and stay behind (see [`ExportRecord`]).

use crate::Target;
use crate::ops::{config_path, load};
use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use grantkeeper_core::{ExposeSecret, KeyId, MasterKeySource};
use grantkeeper_server::master_key::MasterKeySettings;
use grantkeeper_store::{ExportKind, ExportRecord, ImportCounts, SharedStore};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::path::PathBuf;

const PAGE: u32 = 1000;
const FORMAT: &str = "grantkeeper-export/1";

fn progress(total: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {what}  {{msg}}"))
    {
        bar.set_style(style);
    }
    bar
}

/// The deployment's store and master key, without starting a server (which would make a data
/// key in an empty store, where an import must bring the exporter's).
async fn open_store(target: &Target) -> anyhow::Result<(SharedStore, MasterKeySettings)> {
    let (settings, master) = load(&config_path(target)?)?;
    let store = grantkeeper_store::open_with(settings.store_url.expose_secret(), &settings.store)
        .await
        .context("opening the store")?;
    Ok((store, master))
}

/// Refuses data keys that this deployment's master key cannot open, or whose id the target
/// store already uses for another key: the grants sealed under them would not open.
async fn check_data_key(
    store: &SharedStore,
    master: &dyn MasterKeySource,
    record: &ExportRecord,
) -> anyhow::Result<()> {
    let id = record
        .row
        .get("id")
        .and_then(serde_json::Value::as_u64)
        .context("a data key without an id")?;
    let id = u32::try_from(id).context("a data key id out of range")?;
    let wrapped = record
        .row
        .get("wrapped")
        .and_then(serde_json::Value::as_str)
        .context("a data key without its wrapped bytes")?;
    let wrapped = STANDARD
        .decode(wrapped)
        .context("a data key's wrapped bytes are not base64")?;
    // An export made before sources were recorded holds keys of the local master key.
    let wrapped_by = record
        .row
        .get("wrapped_by")
        .and_then(serde_json::Value::as_str)
        .unwrap_or(grantkeeper_core::LOCAL_SOURCE);
    if wrapped_by != master.label() {
        bail!(
            "data key {id} of the export is wrapped by {wrapped_by}, but [vault] names {}: name \
             the exporter's master key in [vault] (then `keys rewrap --to` may move them)",
            master.label()
        );
    }
    master.unwrap(KeyId(id), &wrapped).await.map_err(|e| match e {
        grantkeeper_core::MasterKeyError::Unwrap => anyhow::anyhow!(
            "this deployment's master key does not open data key {id} of the export: use the exporter's master key"
        ),
        other => anyhow::anyhow!("data key {id} of the export: {other}"),
    })?;
    let held = store.data_keys().await?;
    if held.iter().any(|k| k.id == id && k.wrapped != wrapped) {
        bail!("the target store already has another data key {id}: import into a new, empty store");
    }
    Ok(())
}

/// `path`, created or emptied, readable and writable by its owner alone: an export holds the
/// sealed tokens, the wrapped data keys and the API key hashes.
fn private_file(path: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    // A file that existed keeps its mode through open: narrow it too.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {} to mode 0600", path.display()))?;
    Ok(file)
}

pub async fn export(target: &Target, output: Option<PathBuf>) -> anyhow::Result<()> {
    let (store, _) = open_store(target).await?;
    let store = &store;
    let out: Box<dyn Write> = match &output {
        Some(path) => Box::new(private_file(path)?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::new(out);
    writeln!(
        out,
        "{}",
        json!({"format": FORMAT, "backend": store.backend()})
    )?;
    let bar = progress(store.count_users().await?, "users");
    let mut counts = Vec::new();
    for kind in ExportKind::ALL {
        let mut after = None;
        let mut n = 0u64;
        loop {
            let (records, next) = store.export_page(kind, after, PAGE).await?;
            for record in &records {
                serde_json::to_writer(&mut out, record)?;
                out.write_all(b"\n")?;
            }
            n += records.len() as u64;
            if kind == ExportKind::User {
                bar.inc(records.len() as u64);
            }
            match next {
                Some(position) => after = Some(position),
                None => break,
            }
        }
        counts.push(format!("{n} {}", kind_name(kind)));
    }
    out.flush()?;
    bar.finish_and_clear();
    eprintln!("exported {}", counts.join(", "));
    Ok(())
}

fn kind_name(kind: ExportKind) -> &'static str {
    match kind {
        ExportKind::DataKey => "data keys",
        ExportKind::User => "users",
        ExportKind::Grant => "grants",
        ExportKind::GrantEvent => "grant events",
        ExportKind::ApiKey => "API keys",
        ExportKind::Audit => "audit rows",
        ExportKind::PendingRevocation => "queued revocations",
        ExportKind::SignInBlock => "sign-in blocks",
        ExportKind::RiscEvent => "security events",
        ExportKind::Activity => "activity minutes",
    }
}

pub async fn import(target: &Target, input: Option<PathBuf>) -> anyhow::Result<()> {
    let (store, master) = open_store(target).await?;
    let master = crate::ops::open_master(&master).await?;
    let store = &store;
    let (reader, size): (Box<dyn BufRead>, u64) = match &input {
        Some(path) => {
            let file =
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let size = file.metadata().map(|m| m.len()).unwrap_or(0);
            (Box::new(BufReader::new(file)), size)
        }
        None => (Box::new(BufReader::new(std::io::stdin())), 0),
    };
    let bar = progress(size, "bytes");
    let mut lines = reader.lines();
    let header = lines.next().context("the input is empty")??;
    bar.inc(header.len() as u64 + 1);
    let header: serde_json::Value =
        serde_json::from_str(&header).context("the first line is not an export header")?;
    if header.get("format").and_then(serde_json::Value::as_str) != Some(FORMAT) {
        bail!("not a grantkeeper export (its first line must name {FORMAT})");
    }
    let mut total = ImportCounts::default();
    let mut batch = Vec::with_capacity(500);
    // The header was line 1.
    for (line_no, line) in (2u64..).zip(lines) {
        let line = line?;
        bar.inc(line.len() as u64 + 1);
        if line.trim().is_empty() {
            continue;
        }
        let record: ExportRecord = serde_json::from_str(&line)
            .with_context(|| format!("line {line_no} is not an export record"))?;
        if record.kind == ExportKind::DataKey {
            check_data_key(store, master.as_ref(), &record).await?;
        }
        // A batch holds one kind only, so that every row a later kind refers to is written first.
        if batch
            .first()
            .is_some_and(|r: &ExportRecord| r.kind != record.kind)
            || batch.len() >= 500
        {
            add(
                &mut total,
                store
                    .import(std::mem::take(&mut batch))
                    .await
                    .with_context(|| format!("importing before line {line_no}"))?,
            );
        }
        batch.push(record);
    }
    if !batch.is_empty() {
        add(
            &mut total,
            store
                .import(batch)
                .await
                .context("importing the last rows")?,
        );
    }
    bar.finish_and_clear();
    println!(
        "imported {} rows; {} were already present",
        total.inserted, total.present
    );
    Ok(())
}

fn add(total: &mut ImportCounts, more: ImportCounts) {
    total.inserted += more.inserted;
    total.present += more.present;
}
