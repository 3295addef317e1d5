//! `grantkeeper dev` and `grantkeeper emulator`: everything on one machine, no Google project.
//!
//! `dev` keeps a whole deployment under its data dir: the master key (mode 0600), the SQLite
//! file, the dev API key, the emulator's state and client_secret.json, and a grantkeeper.toml
//! describing all of it, so that `migrate`, `check` and `serve` work on it too.

use crate::ops::CONFIG_FILE;
use crate::{local_url, serve_until_signal};
use anyhow::Context;
use grantkeeper_core::{ExposeSecret, MasterKey, SecretString, SystemClock};
use grantkeeper_emulator::{Emulator, EmulatorOptions};
use grantkeeper_server::App;
use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio::net::TcpListener;
use url::Url;

const MASTER_KEY_FILE: &str = "master.key";
const API_KEY_FILE: &str = "dev-api-key";

/// Creates `path` with mode 0600 holding `contents`, unless it exists; returns its contents.
fn read_or_create_secret(
    path: &Path,
    make: impl FnOnce() -> SecretString,
) -> anyhow::Result<SecretString> {
    if path.exists() {
        let mode = fs::metadata(path)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600))
                .with_context(|| format!("restricting {} to mode 0600", path.display()))?;
        }
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        return Ok(SecretString::from(text.trim().to_owned()));
    }
    let secret = make();
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(secret.expose_secret().as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    Ok(secret)
}

fn create_data_dir(dir: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating data dir {}", dir.display()))
}

/// The dev deployment's configuration file.
fn write_config(dir: &Path, base: &str, emulator: &Emulator) -> anyhow::Result<PathBuf> {
    let host_origin = base.to_owned();
    let port = Url::parse(base)?.port().unwrap_or(80);
    let origins = [
        host_origin,
        format!("http://localhost:{port}"),
        format!("http://127.0.0.1:{port}"),
    ];
    let text = format!(
        "# Written by `grantkeeper dev` at each start: the development deployment in this folder.\n\
         [server]\naddr = {addr:?}\nallowed_origins = {origins:?}\n\n\
         [provider]\nissuer = {issuer:?}\nclient_secret_file = \"client_secret.json\"\n\
         authorized_parties = [{android:?}, {ios:?}]\napi_base = {issuer:?}\ngoogle_quirks = true\n\n\
         [store]\nurl = \"sqlite://grantkeeper.db\"\n\n\
         [vault]\nmaster_key_file = {MASTER_KEY_FILE:?}\n\n\
         # Development serves one person on loopback: no rate limits.\n\
         [limits]\nauthcode_per_minute = 0\nv1_per_second = 0\n",
        addr = base.trim_start_matches("http://"),
        origins = origins,
        issuer = emulator.base_url().as_str().trim_end_matches('/'),
        android = emulator.android_client_id(),
        ios = emulator.ios_client_id(),
    );
    let path = dir.join(CONFIG_FILE);
    fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

pub async fn run(addr: SocketAddr, data_dir: PathBuf) -> anyhow::Result<()> {
    create_data_dir(&data_dir)?;
    let master_text =
        read_or_create_secret(&data_dir.join(MASTER_KEY_FILE), MasterKey::generate_base64)?;
    MasterKey::from_base64(&master_text).context("master.key does not hold base64 of 32 bytes")?;
    let api_key = read_or_create_secret(&data_dir.join(API_KEY_FILE), || {
        SecretString::from(format!(
            "gk_dev_{}",
            grantkeeper_core::random::token::<24>()
        ))
    })?;

    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let bound = listener.local_addr()?;
    let base = local_url(bound);
    let clock = SystemClock::shared();
    let emulator = Emulator::open(EmulatorOptions {
        base_url: Url::parse(&format!("{base}/_google"))?,
        data_dir: Some(data_dir.clone()),
        clock: clock.clone(),
        control_api: true,
    })
    .await
    .context("starting the Google emulator")?;
    let config_path = write_config(&data_dir, &base, &emulator)?;

    let (mut settings, master) = crate::ops::load(&config_path)?;
    settings.secure_cookies = false; // dev serves plain HTTP
    let store = grantkeeper_store::open_with(&settings.store_url, &settings.store)
        .await
        .context("opening the store")?;
    grantkeeper_server::apikeys::ensure_api_key(
        store.as_ref(),
        clock.as_ref(),
        "key_dev",
        "dev",
        &api_key,
    )
    .await
    .context("registering the dev API key")?;
    let app = App::new(settings, store, &master, clock).await?.into_dev();
    let router = grantkeeper_server::http::router(app.clone()).nest("/_google", emulator.router());

    println!("grantkeeper dev: data in {}", data_dir.display());
    println!(
        "dev API key (also in {}): {}",
        data_dir.join(API_KEY_FILE).display(),
        api_key.expose_secret()
    );
    println!("sign in at {base}/ ; the Google emulator is at {base}/_google");
    println!("listening on http://{bound}");
    let served = serve_until_signal(listener, router).await;
    app.shutdown().await;
    served
}

pub async fn emulator(addr: SocketAddr, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    if let Some(dir) = &data_dir {
        create_data_dir(dir)?;
    }
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let bound = listener.local_addr()?;
    let emulator = Emulator::open(EmulatorOptions {
        base_url: Url::parse(&local_url(bound))?,
        data_dir: data_dir.clone(),
        clock: SystemClock::shared(),
        control_api: true,
    })
    .await
    .context("starting the Google emulator")?;
    if let Some(dir) = &data_dir {
        println!(
            "client_secret.json: {}",
            dir.join("client_secret.json").display()
        );
    }
    println!("listening on http://{bound}");
    serve_until_signal(listener, emulator.router()).await
}
