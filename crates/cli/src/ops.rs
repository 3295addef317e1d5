//! `serve`, `migrate` and `check`: the commands an operator runs against a deployment.

use crate::{Target, serve_until_signal};
use anyhow::{Context, anyhow, bail};
use grantkeeper_core::{ExposeSecret, MasterKeySource, SystemClock};
use grantkeeper_server::App;
use grantkeeper_server::config::{self, Settings};
use grantkeeper_server::master_key::{MasterKeySettings, process_env};
use grantkeeper_server::vault::keyring;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpListener;

/// The configuration file `grantkeeper dev` writes into its data dir.
pub const CONFIG_FILE: &str = "grantkeeper.toml";

/// The config file of a dev data dir.
pub fn config_in(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = data_dir.join(CONFIG_FILE);
    if !path.exists() {
        bail!(
            "{} has no {CONFIG_FILE}: run `grantkeeper dev --data-dir {}` once first",
            data_dir.display(),
            data_dir.display()
        );
    }
    Ok(path)
}

/// Reads and validates a configuration file and the master key it names.
pub fn load(path: &Path) -> anyhow::Result<(Settings, MasterKeySettings)> {
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    };
    let file = config::load_file(path)?;
    let settings = Settings::from_file(&file, &base)?;
    let master = MasterKeySettings::from_section(&file.vault, &base)?;
    Ok((settings, master))
}

/// Opens the master key source (a PKCS#11 token logs in here; Cloud KMS is asked when the
/// data keys are loaded), with Application Default Credentials from this process's environment.
pub async fn open_master(master: &MasterKeySettings) -> anyhow::Result<Arc<dyn MasterKeySource>> {
    master
        .open(SystemClock::shared(), &process_env)
        .await
        .context("vault")
}

pub fn config_path(target: &Target) -> anyhow::Result<PathBuf> {
    match (&target.config, &target.data_dir) {
        (Some(c), _) => Ok(c.clone()),
        (None, Some(d)) => config_in(d),
        (None, None) => Ok(PathBuf::from("grantkeeper.toml")),
    }
}

pub async fn serve(config_path: PathBuf) -> anyhow::Result<()> {
    let (settings, master) = load(&config_path)?;
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }
    let addr = settings.addr;
    let store = grantkeeper_store::open_with(settings.store_url.expose_secret(), &settings.store)
        .await
        .context("opening the store")?;
    let app = App::new(
        settings,
        store,
        open_master(&master).await?,
        SystemClock::shared(),
    )
    .await?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let bound = listener.local_addr()?;
    println!("listening on http://{bound}");
    app.start_keepalive();
    let served = serve_until_signal(listener, grantkeeper_server::http::router(app.clone())).await;
    app.shutdown().await;
    served
}

pub async fn migrate(target: Target) -> anyhow::Result<()> {
    let (settings, _) = load(&config_path(&target)?)?;
    // Opening applies pending migrations.
    let store = grantkeeper_store::open_with(settings.store_url.expose_secret(), &settings.store)
        .await
        .context("migrating the store")?;
    println!("{} store is up to date", store.backend());
    Ok(())
}

/// Runs every check, prints one line each, and fails if any failed.
pub async fn check(target: Target) -> anyhow::Result<()> {
    let path = config_path(&target)?;
    let mut failed = 0;
    let mut report = |name: &str, result: Result<String, String>| match result {
        Ok(detail) => println!("ok    {name}: {detail}"),
        Err(problem) => {
            failed += 1;
            println!("FAIL  {name}: {problem}");
        }
    };
    let (settings, master) = match load(&path) {
        Ok(v) => v,
        Err(e) => {
            report("configuration", Err(format!("{e:#}")));
            return Err(anyhow!("1 check failed"));
        }
    };
    report("configuration", Ok(path.display().to_string()));
    for warning in &settings.warnings {
        println!("warn  configuration: {warning}");
    }
    match grantkeeper_store::open_with(settings.store_url.expose_secret(), &settings.store).await {
        Ok(store) => {
            report(
                "store",
                Ok(format!("{} reachable, migrations applied", store.backend())),
            );
            let opened = match master.open(SystemClock::shared(), &process_env).await {
                Ok(source) => match grantkeeper_core::master::round_trip(source.as_ref()).await {
                    Ok(()) => keyring::load_vault(store.as_ref(), source.as_ref(), &SystemClock)
                        .await
                        .map(|v| {
                            format!(
                                "{} answers; opens the store's data keys (active key {})",
                                source.label(),
                                v.active().map(|k| k.0).unwrap_or_default()
                            )
                        })
                        .map_err(|e| {
                            format!("{e}: use the master key this store was created with")
                        }),
                    Err(e) => Err(format!("{} does not answer: {e}", master.describe())),
                },
                Err(e) => Err(format!("{}: {e}", master.describe())),
            };
            report("master key", opened);
        }
        Err(e) => report(
            "store",
            Err(format!(
                "{e}: check store.url and that the database is reachable"
            )),
        ),
    }
    let provider = grantkeeper_server::app::http_client().map(|http| {
        grantkeeper_provider::Provider::new(settings.provider.clone(), http, SystemClock::shared())
    });
    match provider {
        Ok(p) => report(
            "provider",
            p.check()
                .await
                .map(|()| {
                    format!(
                        "discovery and signing keys of {} fetched",
                        settings.provider.issuer
                    )
                })
                .map_err(|e| {
                    format!("{e}: check provider.issuer and that this machine reaches it")
                }),
        ),
        Err(e) => report("provider", Err(e.to_string())),
    }
    if failed > 0 {
        Err(anyhow!("{failed} check(s) failed"))
    } else {
        Ok(())
    }
}
