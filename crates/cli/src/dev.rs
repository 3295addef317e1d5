//! `grantkeeper dev` and `grantkeeper emulator`: everything on one machine, no Google project.
//!
//! `dev` keeps a whole deployment under its data dir: the master key (mode 0600), the SQLite
//! file, the dev API key, the emulator's state and client_secret.json, and a grantkeeper.toml
//! describing all of it, so that `migrate`, `check` and `serve` work on it too.
//!
//! `dev --kms` keeps the master key in the emulated Cloud KMS instead (a key of the emulator's
//! project, called with a service account's key file, `kms-service-account.json`): no master
//! key file is made. Switching a data dir between the two moves its data keys (`keys rewrap`).

use crate::ops::CONFIG_FILE;
use crate::{local_url, serve_until_signal};
use anyhow::Context;
use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use grantkeeper_core::{
    ExposeSecret, MasterKey, MasterKeySource, SecretString, SharedClock, SystemClock,
};
use grantkeeper_emulator::{Emulator, EmulatorOptions};
use grantkeeper_server::App;
use grantkeeper_server::master_key::{MasterKeySettings, SpecOptions};
use grantkeeper_store::SharedStore;
use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use tokio::net::TcpListener;
use tower::ServiceExt;
use url::Url;

const MASTER_KEY_FILE: &str = "master.key";
const API_KEY_FILE: &str = "dev-api-key";
const KMS_CREDENTIALS_FILE: &str = "kms-service-account.json";

/// Where `dev` keeps its master key.
enum DevKey {
    /// `master.key` in the data dir.
    File,
    /// A key of the emulated Cloud KMS.
    Kms { key: String, endpoint: String },
}

impl DevKey {
    fn vault_section(&self) -> String {
        match self {
            DevKey::File => format!("[vault]\nmaster_key_file = {MASTER_KEY_FILE:?}\n"),
            DevKey::Kms { key, endpoint } => format!(
                "# The master key is in the emulated Cloud KMS, at /_google of this server.\n\
                 [vault]\nkms_key = {key:?}\nkms_endpoint = {endpoint:?}\n\
                 kms_credentials_file = {KMS_CREDENTIALS_FILE:?}\n"
            ),
        }
    }
}

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

/// Writes `path` (replacing it) readable by its owner only.
fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}

fn create_data_dir(dir: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating data dir {}", dir.display()))
}

/// The dev deployment's configuration file.
fn write_config(
    dir: &Path,
    base: &str,
    emulator: &Emulator,
    key: &DevKey,
) -> anyhow::Result<PathBuf> {
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
         {vault}\n\
         # Development serves one person on loopback: no rate limits.\n\
         [limits]\nauthcode_per_minute = 0\nv1_per_second = 0\n",
        addr = base.trim_start_matches("http://"),
        origins = origins,
        issuer = emulator.base_url().as_str().trim_end_matches('/'),
        android = emulator.android_client_id(),
        ios = emulator.ios_client_id(),
        vault = key.vault_section(),
    );
    let path = dir.join(CONFIG_FILE);
    fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// `dev` listens on loopback unless the operator accepts, by name, that whoever reaches the
/// address can drive the emulator's control API (client secrets, issued tokens, codes).
fn check_dev_addr(addr: SocketAddr, expose_emulator_control: bool) -> anyhow::Result<()> {
    if addr.ip().is_loopback() || expose_emulator_control {
        return Ok(());
    }
    anyhow::bail!(
        "dev refuses --addr {addr}: it is not a loopback address, and whoever reaches it could \
         drive the Google emulator's control API (it hands out client secrets and issued tokens, \
         mints codes and revokes users). Use --addr 127.0.0.1:PORT, or pass \
         --expose-emulator-control to accept that risk"
    )
}

pub async fn run(
    addr: SocketAddr,
    data_dir: PathBuf,
    kms: bool,
    expose_emulator_control: bool,
) -> anyhow::Result<()> {
    check_dev_addr(addr, expose_emulator_control)?;
    create_data_dir(&data_dir)?;
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
    let emulator = start_emulator(
        &base,
        bound,
        &data_dir,
        clock.clone(),
        expose_emulator_control,
    )
    .await?;
    let key = dev_master_key(kms, &emulator, &data_dir, &base).await?;
    point_credentials_at(&data_dir, &base)?;
    let config_path = write_config(&data_dir, &base, &emulator, &key)?;

    // The emulator answers from now on (the server's master key may be in its Cloud KMS); the
    // server's own paths wait for it to be built.
    let app_router: Arc<OnceLock<Router>> = Arc::new(OnceLock::new());
    let router = dev_router(&emulator, app_router.clone());
    let served = tokio::spawn(serve_until_signal(listener, router));

    let (mut settings, master) = crate::ops::load(&config_path)?;
    settings.secure_cookies = false; // dev serves plain HTTP
    let store = grantkeeper_store::open_with(settings.store_url.expose_secret(), &settings.store)
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
    let master = crate::ops::open_master(&master).await?;
    move_keys(&store, &data_dir, &base, &key, master.as_ref()).await?;
    let app = App::new(settings, store, master, clock).await?.into_dev();
    let _ = app_router.set(grantkeeper_server::http::router(app.clone()));

    println!("grantkeeper dev: data in {}", data_dir.display());
    if let DevKey::Kms { key, .. } = &key {
        println!("master key: kms:{key} (the emulated Cloud KMS)");
    }
    println!(
        "dev API key (also in {}): {}",
        data_dir.join(API_KEY_FILE).display(),
        api_key.expose_secret()
    );
    println!("sign in at {base}/ ; the Google emulator is at {base}/_google");
    println!("listening on http://{bound}");
    let served = served.await.context("serving HTTP")?;
    app.shutdown().await;
    served
}

/// The emulator under `{base}/_google`, its state in the data dir, its security events sent
/// to this deployment only.
async fn start_emulator(
    base: &str,
    bound: SocketAddr,
    data_dir: &Path,
    clock: SharedClock,
    expose_emulator_control: bool,
) -> anyhow::Result<Emulator> {
    let emulator = Emulator::open(EmulatorOptions {
        base_url: Url::parse(&format!("{base}/_google"))?,
        data_dir: Some(data_dir.to_owned()),
        clock,
        control_api: true,
    })
    .await
    .context("starting the Google emulator")?;
    // Security events go to this deployment's own receiver only.
    emulator.deliver_security_events_only_to(Url::parse(&format!("{base}/risc"))?);
    if expose_emulator_control {
        emulator.expose_control_api();
        tracing::warn!(
            %bound,
            "the emulator's control API answers on every address of {bound} \
             (--expose-emulator-control): whoever reaches it can read client secrets and tokens"
        );
    }
    Ok(emulator)
}

/// The master key of this run: a key of the emulated Cloud KMS with a service account's key
/// file (`--kms`), or `master.key`, each made on first use.
async fn dev_master_key(
    kms: bool,
    emulator: &Emulator,
    data_dir: &Path,
    base: &str,
) -> anyhow::Result<DevKey> {
    if !kms {
        let text =
            read_or_create_secret(&data_dir.join(MASTER_KEY_FILE), MasterKey::generate_base64)?;
        MasterKey::from_base64(&text).context("master.key does not hold base64 of 32 bytes")?;
        return Ok(DevKey::File);
    }
    let key = format!(
        "projects/{}/locations/global/keyRings/grantkeeper/cryptoKeys/dev-master",
        emulator.project_id()
    );
    emulator.ensure_kms_key(&key)?;
    if !data_dir.join(KMS_CREDENTIALS_FILE).exists() {
        let file = emulator.create_service_account("grantkeeper-dev").await?;
        write_private(
            &data_dir.join(KMS_CREDENTIALS_FILE),
            &serde_json::to_vec_pretty(&file)?,
        )?;
    }
    Ok(DevKey::Kms {
        key,
        endpoint: format!("{base}/_google"),
    })
}

/// The emulator at `/_google`; every other path goes to the server's router once it is set,
/// and is answered 503 "starting" until then.
fn dev_router(emulator: &Emulator, app_router: Arc<OnceLock<Router>>) -> Router {
    Router::new()
        .nest("/_google", emulator.router())
        .fallback(move |request: Request| {
            let pending = app_router.clone();
            async move {
                match pending.get() {
                    Some(app) => match app.clone().oneshot(request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    },
                    None => (StatusCode::SERVICE_UNAVAILABLE, "starting").into_response(),
                }
            }
        })
}

/// The service account key file of a data dir names the token endpoint of the emulator that
/// made it; `dev` may listen on another port this time.
fn point_credentials_at(data_dir: &Path, base: &str) -> anyhow::Result<()> {
    let path = data_dir.join(KMS_CREDENTIALS_FILE);
    if !path.exists() {
        return Ok(());
    }
    let mut file: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&fs::read(&path)?)
            .with_context(|| format!("{} is not JSON", path.display()))?;
    let token_uri = serde_json::Value::String(format!("{base}/_google/token"));
    if file.get("token_uri") != Some(&token_uri) {
        file.insert("token_uri".to_owned(), token_uri);
        write_private(&path, &serde_json::to_vec_pretty(&file)?)?;
    }
    Ok(())
}

/// Moves the data keys of a data dir last run with the other master key (`dev` after
/// `dev --kms`, or the reverse) to the one in use now, as `keys rewrap` does.
async fn move_keys(
    store: &SharedStore,
    data_dir: &Path,
    base: &str,
    key: &DevKey,
    to: &dyn MasterKeySource,
) -> anyhow::Result<()> {
    let records = store.data_keys().await?;
    let Some(other) = records
        .iter()
        .map(grantkeeper_server::vault::rewrap::wrapped_by)
        .find(|label| *label != to.label())
    else {
        return Ok(());
    };
    let from = match key {
        // Back from the emulated KMS: its settings are those this data dir was run with.
        DevKey::File => MasterKeySettings::from_spec(
            other,
            &SpecOptions {
                kms_endpoint: Some(format!("{base}/_google")),
                kms_credentials_file: Some(data_dir.join(KMS_CREDENTIALS_FILE)),
                ..SpecOptions::default()
            },
        )?,
        DevKey::Kms { .. } => MasterKeySettings::from_spec(
            &format!("file:{}", data_dir.join(MASTER_KEY_FILE).display()),
            &SpecOptions::default(),
        )
        .context("the data keys are wrapped by master.key, which is gone")?,
    };
    let from = crate::ops::open_master(&from).await?;
    let (_stop, never) = tokio::sync::watch::channel(false);
    let summary =
        grantkeeper_server::vault::rewrap::rewrap(store, from.as_ref(), to, &never, &|_| {})
            .await?;
    println!(
        "moved {} data keys from {} to {} (keys rewrap)",
        summary.rewrapped.len(),
        from.label(),
        to.label()
    );
    Ok(())
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
