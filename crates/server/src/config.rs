//! grantkeeper.toml, read once at start-up, validated, and turned into typed [`Settings`].
//!
//! Every key may be overridden from the environment as `GRANTKEEPER_SECTION__KEY` (lists
//! comma-separated). Unknown keys are refused, so a typo fails loudly instead of being ignored.
//! Secrets are read into [`SecretString`]s and never printed; errors name the key and the fix.

use grantkeeper_core::{MasterKey, SecretString};
use grantkeeper_provider::ProviderSettings;
use ipnet::IpNet;
use secrecy::ExposeSecret;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";
pub const GOOGLE_API_BASE: &str = "https://www.googleapis.com";

/// A configuration problem, with the key at fault and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {problem}. {fix}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
    pub fix: String,
}

pub(crate) fn err(key: &str, problem: impl Into<String>, fix: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_owned(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub provider: ProviderSection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub vault: VaultSection,
    #[serde(default)]
    pub broker: BrokerSection,
    #[serde(default)]
    pub events: EventsSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub jobs: JobsSection,
}

/// `[jobs]`: the keep-alive job `serve` runs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsSection {
    /// Grants not refreshed for this long are refreshed; "0s" turns keep-alive off.
    pub keepalive_after: Option<DurationValue>,
    /// How often a keep-alive job is made, and the time its users are spread over.
    pub keepalive_every: Option<DurationValue>,
    /// Refreshes a second at most, across every instance.
    pub keepalive_rate: Option<f64>,
    /// How often each instance looks for keep-alive work.
    pub keepalive_poll: Option<DurationValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub addr: Option<String>,
    pub public_url: Option<String>,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Seconds, or a number with a unit: `45s`, `30m`, `12h`, `30d`.
    pub session_ttl: Option<DurationValue>,
    /// How often expired sessions are deleted (at least 1 s).
    pub session_purge_interval: Option<DurationValue>,
    /// Serve the demo web page at `/` (always on in `dev`).
    pub demo_page: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSection {
    pub issuer: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretString>,
    pub web_redirect_uri: Option<String>,
    pub mobile_redirect_uri: Option<String>,
    #[serde(default)]
    pub authorized_parties: Vec<String>,
    pub api_base: Option<String>,
    pub google_quirks: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// A PostgreSQL URL may carry a password: kept secret, like every credential here.
    pub url: Option<SecretString>,
    /// PostgreSQL: connections per instance.
    pub max_connections: Option<u32>,
    /// PostgreSQL: longest a statement may run.
    pub statement_timeout: Option<DurationValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultSection {
    pub master_key_file: Option<PathBuf>,
    pub master_key: Option<SecretString>,
    /// How often a server reads the store's data keys again (a rotation's new key is sealed
    /// under within this time); `keys rotate --grace` must be at least twice this.
    pub reload_interval: Option<DurationValue>,
    /// Google Cloud KMS: the CryptoKey that wraps the data keys, instead of a local key.
    pub kms_key: Option<String>,
    /// Cloud KMS's endpoint (the emulator's base URL in development).
    pub kms_endpoint: Option<String>,
    /// A service account key file; Application Default Credentials when absent.
    pub kms_credentials_file: Option<PathBuf>,
    /// PKCS#11: the RFC 7512 URI of an AES key in a token, instead of a local key.
    pub pkcs11: Option<String>,
    /// The HSM's PKCS#11 library.
    pub pkcs11_module: Option<PathBuf>,
    /// A file holding the token's user PIN (or GRANTKEEPER_VAULT__PKCS11_PIN).
    pub pkcs11_pin_file: Option<PathBuf>,
    pub pkcs11_pin: Option<SecretString>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSection {
    pub min_ttl: Option<DurationValue>,
    pub refresh_concurrency: Option<usize>,
    /// Upstream requests per second across all grants.
    pub upstream_rate: Option<f64>,
    /// After a refresh caused by a Google API's 401, further 401s for that grant within this
    /// time are passed back without refreshing; "0s": every 401 is worth a refresh.
    pub rejection_cooldown: Option<DurationValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsSection {
    /// Receives every grant state change as signed JSON.
    pub webhook_url: Option<String>,
    /// Key of the HMAC-SHA256 signature in `X-Grantkeeper-Signature`.
    pub webhook_secret: Option<SecretString>,
}

/// Rate limits, the inbound request timeout and the proxied body limit. A rate of 0 turns
/// that limit off.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Sign-in attempts (`POST /authcode`, `POST /admin/login`) per client IP and minute.
    pub authcode_per_minute: Option<u32>,
    /// How many sign-in attempts one IP may make at once before the rate applies.
    pub authcode_burst: Option<u32>,
    /// `/v1` requests per API key and second.
    pub v1_per_second: Option<u32>,
    /// How many `/v1` requests one key may make at once before the rate applies.
    pub v1_burst: Option<u32>,
    /// Longest an inbound request may take to be answered (its headers; a streamed body may
    /// take longer).
    pub request_timeout: Option<DurationValue>,
    /// Largest request body, in bytes, passed to a Google API by the proxy.
    pub proxy_body_limit: Option<u64>,
    /// The load balancers and proxies in front (addresses and CIDR ranges): when the peer is one
    /// of them, the sign-in limit's client IP is the right-most `X-Forwarded-For` address that
    /// is not one of them.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Replaced by `trusted_proxies`: `false` (what leaving it out meant) is accepted with a
    /// warning, `true` refused with the way to `trusted_proxies`: it took the left-most address,
    /// which the client writes.
    pub trust_forwarded_for: Option<bool>,
}

/// A duration written as whole seconds or as a number with a unit.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum DurationValue {
    Seconds(u64),
    Text(String),
}

impl DurationValue {
    fn resolve(&self, key: &str) -> Result<Duration, ConfigError> {
        match self {
            DurationValue::Seconds(s) => Ok(Duration::from_secs(*s)),
            DurationValue::Text(t) => parse_duration(t).ok_or_else(|| {
                err(
                    key,
                    format!("{t:?} is not a duration"),
                    "write seconds, or e.g. 45s, 30m, 12h, 30d",
                )
            }),
        }
    }
}

/// Parses `90`, `45s`, `30m`, `12h`, `30d`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(mult).map(Duration::from_secs)
}

/// How often expired sessions are deleted unless `server.session_purge_interval` says.
pub const DEFAULT_SESSION_PURGE: Duration = Duration::from_secs(3600);

/// The validated configuration the server runs with.
#[derive(Debug)]
pub struct Settings {
    pub addr: SocketAddr,
    pub public_url: Option<Url>,
    /// Origins (`scheme://host[:port]`) allowed to call the sign-in endpoints from a browser.
    pub allowed_origins: Vec<String>,
    pub session_ttl: Duration,
    /// How often expired sessions (of users and of operators) are deleted
    /// (`server.session_purge_interval`).
    pub session_purge: Duration,
    /// Serve the demo web page at `/` and its `/demo/*` calls.
    pub demo_page: bool,
    /// Set the Secure attribute on cookies (off only in `dev`, which serves plain HTTP).
    pub secure_cookies: bool,
    pub provider: ProviderSettings,
    pub web_redirect_uri: String,
    pub mobile_redirect_uri: String,
    pub api_base: Url,
    /// `store.url`, which may carry the database's password: never printed.
    pub store_url: SecretString,
    pub store: grantkeeper_store::StoreOptions,
    /// How often the vault's data keys are read again (`vault.reload_interval`).
    pub keyring_reload: Duration,
    pub broker: BrokerSettings,
    pub webhook: Option<WebhookSettings>,
    pub limits: LimitSettings,
    /// Keep-alive of idle grants; None when turned off.
    pub keepalive: Option<KeepAliveSettings>,
    /// What the configuration should change without being wrong (a deprecated key, a database
    /// reached without TLS verification): `check` prints them, `serve` logs them.
    pub warnings: Vec<String>,
}

/// How `serve` keeps idle grants alive (`[jobs]`).
#[derive(Debug, Clone, PartialEq)]
pub struct KeepAliveSettings {
    /// Grants not refreshed for this long are refreshed.
    pub after: Duration,
    /// A new keep-alive job at most this often; its users are spread over this time.
    pub every: Duration,
    /// Refreshes a second at most, across every instance.
    pub rate: f64,
    /// How often each instance looks for work.
    pub poll: Duration,
}

impl Default for KeepAliveSettings {
    fn default() -> Self {
        KeepAliveSettings {
            after: Duration::from_secs(30 * 86_400),
            every: Duration::from_secs(86_400),
            rate: 2.0,
            poll: Duration::from_secs(60),
        }
    }
}

/// How often a server reads the vault's data keys again unless `vault.reload_interval` says.
pub const DEFAULT_KEYRING_RELOAD: Duration = Duration::from_secs(30);

/// A token bucket's shape: `rate` requests per `per`, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSettings {
    pub rate: u32,
    pub per: Duration,
    pub burst: u32,
}

/// The validated `[limits]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitSettings {
    /// Per client IP on `POST /authcode` and `POST /admin/login`; `None`: no limit.
    pub sign_in: Option<RateSettings>,
    /// Per API key on `/v1/*`; `None`: no limit.
    pub v1: Option<RateSettings>,
    pub request_timeout: Duration,
    pub proxy_body_limit: u64,
    /// Peers whose `X-Forwarded-For` is read (`limits.trusted_proxies`); empty: none.
    pub trusted_proxies: Vec<IpNet>,
}

/// Sign-in attempts per IP: 10 a minute, 20 at once.
pub const DEFAULT_SIGN_IN_RATE: RateSettings = RateSettings {
    rate: 10,
    per: Duration::from_secs(60),
    burst: 20,
};
/// `/v1` requests per key: 50 a second, 200 at once.
pub const DEFAULT_V1_RATE: RateSettings = RateSettings {
    rate: 50,
    per: Duration::from_secs(1),
    burst: 200,
};

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            sign_in: Some(DEFAULT_SIGN_IN_RATE),
            v1: Some(DEFAULT_V1_RATE),
            request_timeout: Duration::from_secs(30),
            proxy_body_limit: 32 * 1024 * 1024,
            trusted_proxies: Vec::new(),
        }
    }
}

impl LimitSettings {
    /// Validates `[limits]`; what is left out keeps its default.
    pub fn from_section(l: &LimitsSection) -> Result<LimitSettings, ConfigError> {
        let defaults = LimitSettings::default();
        let rate = |rate: Option<u32>,
                    burst: Option<u32>,
                    d: RateSettings,
                    keys: (&str, &str)|
         -> Result<Option<RateSettings>, ConfigError> {
            let rate = rate.unwrap_or(d.rate);
            if rate == 0 {
                return Ok(None);
            }
            let burst = burst.unwrap_or(d.burst);
            if burst == 0 {
                return Err(err(
                    keys.1,
                    format!(
                        "a burst of 0 lets no request through while {} is {rate}",
                        keys.0
                    ),
                    format!(
                        "write 1 or more, or set {} = 0 to turn the limit off",
                        keys.0
                    ),
                ));
            }
            Ok(Some(RateSettings {
                rate,
                per: d.per,
                burst,
            }))
        };
        let sign_in = rate(
            l.authcode_per_minute,
            l.authcode_burst,
            DEFAULT_SIGN_IN_RATE,
            ("limits.authcode_per_minute", "limits.authcode_burst"),
        )?;
        let v1 = rate(
            l.v1_per_second,
            l.v1_burst,
            DEFAULT_V1_RATE,
            ("limits.v1_per_second", "limits.v1_burst"),
        )?;
        let request_timeout = duration_or(
            l.request_timeout.as_ref(),
            "limits.request_timeout",
            defaults.request_timeout,
        )?;
        if request_timeout.is_zero() {
            return Err(err(
                "limits.request_timeout",
                "a timeout of 0 answers every request with an error",
                "write e.g. 30s (the default)",
            ));
        }
        let proxy_body_limit = l.proxy_body_limit.unwrap_or(defaults.proxy_body_limit);
        if proxy_body_limit == 0 {
            return Err(err(
                "limits.proxy_body_limit",
                "a limit of 0 bytes refuses every proxied body",
                "write the largest body in bytes, e.g. 33554432 (32 MiB, the default)",
            ));
        }
        if l.trust_forwarded_for == Some(true) {
            return Err(err(
                "limits.trust_forwarded_for",
                "this key was replaced by limits.trusted_proxies: it took the client's address \
                 from the left-most X-Forwarded-For entry, which the client itself writes",
                "remove it and list the addresses or CIDR ranges of your load balancers, e.g. \
                 trusted_proxies = [\"10.0.0.0/8\"]: the client is then the right-most address \
                 that is not one of them",
            ));
        }
        let mut trusted_proxies = Vec::new();
        for text in &l.trusted_proxies {
            trusted_proxies.push(parse_proxy(text).ok_or_else(|| {
                err(
                    "limits.trusted_proxies",
                    format!("{text:?} is not an address or a CIDR range"),
                    "write e.g. \"10.0.0.7\", \"10.0.0.0/8\" or \"2001:db8::/32\"",
                )
            })?);
        }
        Ok(LimitSettings {
            sign_in,
            v1,
            request_timeout,
            proxy_body_limit,
            trusted_proxies,
        })
    }

    /// What an operator should change in `[limits]`, without it being wrong.
    fn warnings(l: &LimitsSection) -> Vec<String> {
        match l.trust_forwarded_for {
            Some(false) => vec![
                "limits.trust_forwarded_for is deprecated and will be refused in a later \
                 release: remove it (behind load balancers, list them in \
                 limits.trusted_proxies)"
                    .to_owned(),
            ],
            _ => Vec::new(),
        }
    }
}

/// An address (a network of one) or a CIDR range; the bits a range leaves free must be zero
/// (`10.0.0.1/8` is a mistake more likely than a wish for `10.0.0.0/8`).
fn parse_proxy(text: &str) -> Option<IpNet> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<std::net::IpAddr>() {
        return Some(IpNet::from(ip.to_canonical()));
    }
    let net = text.parse::<IpNet>().ok()?;
    (net.trunc() == net).then_some(net)
}

/// Where grant state changes are delivered.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub url: Url,
    pub secret: SecretString,
}

#[derive(Debug, Clone)]
pub struct BrokerSettings {
    pub min_ttl: Duration,
    pub refresh_concurrency: usize,
    pub upstream_rate: Option<f64>,
    /// `broker.rejection_cooldown`.
    pub rejection_cooldown: Duration,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        BrokerSettings {
            min_ttl: Duration::from_secs(300),
            refresh_concurrency: 64,
            upstream_rate: None,
            rejection_cooldown: Duration::from_secs(30),
        }
    }
}

/// `[jobs]`: keep-alive, or None when `keepalive_after` is zero.
fn keepalive_settings(j: &JobsSection) -> Result<Option<KeepAliveSettings>, ConfigError> {
    let d = KeepAliveSettings::default();
    let after = duration_or(j.keepalive_after.as_ref(), "jobs.keepalive_after", d.after)?;
    if after.is_zero() {
        return Ok(None);
    }
    let every = duration_or(j.keepalive_every.as_ref(), "jobs.keepalive_every", d.every)?;
    if every < Duration::from_secs(1) {
        return Err(err(
            "jobs.keepalive_every",
            "a keep-alive job more than once a second cannot be",
            "write e.g. 1d (the default)",
        ));
    }
    let poll = duration_or(j.keepalive_poll.as_ref(), "jobs.keepalive_poll", d.poll)?;
    if poll.is_zero() {
        return Err(err(
            "jobs.keepalive_poll",
            "instances must wait between looks for work",
            "write e.g. 60s (the default)",
        ));
    }
    let rate = j.keepalive_rate.unwrap_or(d.rate);
    if !(rate.is_finite() && (0.01..=1000.0).contains(&rate)) {
        return Err(err(
            "jobs.keepalive_rate",
            format!("{rate} is not a rate from 0.01 to 1000"),
            "write refreshes per second, e.g. 2 (the default)",
        ));
    }
    Ok(Some(KeepAliveSettings {
        after,
        every,
        rate,
        poll,
    }))
}

/// The environment variables that name a configuration key: `GRANTKEEPER_SECTION__KEY`. Other
/// `GRANTKEEPER_*` variables (a test database URL, say) are not configuration and are ignored.
fn config_variables(vars: impl Iterator<Item = (String, String)>) -> config::Map<String, String> {
    vars.filter(|(k, _)| {
        k.strip_prefix("GRANTKEEPER_")
            .is_some_and(|rest| rest.contains("__"))
    })
    .collect()
}

/// Reads the file and the environment.
pub fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    if !path.exists() {
        return Err(err(
            "--config",
            format!("{} does not exist", path.display()),
            "pass the path of grantkeeper.toml (see README, \"Running against Google\")",
        ));
    }
    let file = config::File::from(path).format(config::FileFormat::Toml);
    read_config(file, std::env::vars())
}

/// Reads a configuration from TOML text alone, with no environment variables applied: what
/// [`load_file`] does with the file's contents in an empty environment.
pub fn parse_config(text: &str) -> Result<FileConfig, ConfigError> {
    let file = config::File::from_str(text, config::FileFormat::Toml);
    read_config(file, std::iter::empty())
}

/// The TOML source, overridden by the `GRANTKEEPER_SECTION__KEY` variables among `vars`.
fn read_config(
    file: impl config::Source + Send + Sync + 'static,
    vars: impl Iterator<Item = (String, String)>,
) -> Result<FileConfig, ConfigError> {
    let list_keys = [
        "server.allowed_origins",
        "provider.authorized_parties",
        "limits.trusted_proxies",
    ];
    let mut env = config::Environment::with_prefix("GRANTKEEPER")
        .prefix_separator("_")
        .separator("__")
        .list_separator(",")
        .try_parsing(true)
        .source(Some(config_variables(vars)));
    for k in list_keys {
        env = env.with_list_parse_key(k);
    }
    let raw = config::Config::builder()
        .add_source(file)
        .add_source(env)
        .build()
        .map_err(|e| {
            err(
                "config",
                without_source_lines(&e.to_string()),
                "fix the file or the GRANTKEEPER_* variable named",
            )
        })?;
    raw.try_deserialize::<FileConfig>().map_err(|e| {
        err(
            "config",
            e.to_string(),
            "see the configuration section of design docs (docs/design.md)",
        )
    })
}

/// A TOML syntax error without the lines of the file it quotes (`3 | client_secret = "...`),
/// which may hold a secret; the line and column it names remain.
fn without_source_lines(message: &str) -> String {
    let quoted = |line: &str| {
        line.trim_start()
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start()
            .starts_with('|')
    };
    let mut kept = String::new();
    for line in message.lines().filter(|line| !quoted(line)).map(str::trim) {
        if !kept.is_empty() && !line.is_empty() {
            // The file's name follows the description as ` in PATH`.
            kept.push_str(if line.starts_with("in ") { " " } else { ": " });
        }
        kept.push_str(line);
    }
    kept
}

/// Refuses a file holding a secret (the master key, a PIN, a service account's private key)
/// that the group or other users may read or write, as ssh refuses such a private key: whoever
/// reads the master key and the database has every token. `key` is the setting naming it.
pub(crate) fn refuse_shared(path: &Path, key: &str) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    // A file that cannot be read says so when it is read, just after.
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(err(
            key,
            format!(
                "{} may be read by other users of this machine (mode {mode:04o})",
                path.display()
            ),
            format!(
                "run `chmod 600 {}` (owner read and write only)",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// The master key's text, from the environment or the key file.
pub fn master_key(vault: &VaultSection, base: &Path) -> Result<MasterKey, ConfigError> {
    let text = match (&vault.master_key, &vault.master_key_file) {
        (Some(k), _) => k.clone(),
        (None, Some(file)) => {
            let path = base.join(file);
            refuse_shared(&path, "vault.master_key_file")?;
            let text = std::fs::read_to_string(&path).map_err(|e| {
                err(
                    "vault.master_key_file",
                    format!("cannot read {}: {e}", path.display()),
                    "create it with `head -c32 /dev/urandom | base64 > FILE; chmod 600 FILE`",
                )
            })?;
            SecretString::from(text)
        }
        (None, None) => {
            return Err(err(
                "vault.master_key_file",
                "no master key",
                "set vault.master_key_file to a file holding base64 of 32 random bytes \
                 (`head -c32 /dev/urandom | base64`), or GRANTKEEPER_VAULT__MASTER_KEY; or keep \
                 the master key in Cloud KMS (vault.kms_key) or an HSM (vault.pkcs11)",
            ));
        }
    };
    MasterKey::from_base64(&text).map_err(|_| {
        err(
            "vault.master_key",
            "the master key is not base64 of 32 bytes",
            "generate one with `head -c32 /dev/urandom | base64`",
        )
    })
}

#[derive(Deserialize)]
struct ClientSecretFile {
    web: Option<ClientSecretEntry>,
    installed: Option<ClientSecretEntry>,
}

#[derive(Deserialize)]
struct ClientSecretEntry {
    client_id: String,
    client_secret: Option<SecretString>,
}

/// Reads `client_secret.json` as Google Cloud console downloads it.
pub fn read_client_secret_file(path: &Path) -> Result<(String, SecretString), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        err(CLIENT_SECRET_FILE_KEY, format!("cannot read {}: {e}", path.display()), "download the OAuth client's JSON from Google Cloud console (APIs & Services > Credentials)")
    })?;
    parse_client_secret(&text, path)
}

const CLIENT_SECRET_FILE_KEY: &str = "provider.client_secret_file";

/// The client id and secret in the text of a `client_secret.json`; `path` names the file in
/// errors.
pub fn parse_client_secret(text: &str, path: &Path) -> Result<(String, SecretString), ConfigError> {
    let key = CLIENT_SECRET_FILE_KEY;
    let parsed: ClientSecretFile = serde_json::from_str(text).map_err(|e| {
        err(
            key,
            format!(
                "{} is not a client secret file ({})",
                path.display(),
                e.classify_name()
            ),
            "use the file exactly as Google Cloud console downloads it",
        )
    })?;
    let entry = parsed.web.or(parsed.installed).ok_or_else(|| {
        err(
            key,
            "the file has no \"web\" client",
            "create a client of type \"Web application\" and download its JSON",
        )
    })?;
    let secret = entry.client_secret.ok_or_else(|| {
        err(
            key,
            "the client has no client_secret",
            "use a Web application client",
        )
    })?;
    Ok((entry.client_id, secret))
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}
impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => "unexpected fields",
            serde_json::error::Category::Eof => "truncated JSON",
        }
    }
}

/// Normalises an origin (`https://app.example.com:443/` -> `https://app.example.com`).
pub fn normalise_origin(text: &str) -> Option<String> {
    let url = Url::parse(text.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return None;
    }
    Some(url.origin().ascii_serialization())
}

impl Settings {
    /// Validates a file configuration; `base` resolves relative paths (the file's folder).
    pub fn from_file(file: &FileConfig, base: &Path) -> Result<Settings, ConfigError> {
        let addr = server_addr(&file.server)?;
        let (public_url, allowed_origins) = public_url_and_origins(&file.server)?;
        let session_ttl = duration_or(
            file.server.session_ttl.as_ref(),
            "server.session_ttl",
            Duration::from_secs(30 * 86_400),
        )?;
        let session_purge = session_purge_interval(&file.server)?;
        let p = &file.provider;
        let provider = provider_settings(p, base)?;
        let api_base = parse_url(
            p.api_base.as_deref().unwrap_or(GOOGLE_API_BASE),
            "provider.api_base",
            format!("leave it out for Google ({GOOGLE_API_BASE})"),
        )?;
        let store_url = resolve_sqlite_path(
            file.store
                .url
                .as_ref()
                .map_or("sqlite://grantkeeper.db", |u| u.expose_secret()),
            base,
        );
        let mut warnings = LimitSettings::warnings(&file.limits);
        warnings.extend(store_tls_warning(&store_url));
        let store = store_options(&file.store)?;
        Ok(Settings {
            addr,
            public_url,
            allowed_origins,
            session_ttl,
            session_purge,
            demo_page: file.server.demo_page.unwrap_or(false),
            secure_cookies: true,
            provider,
            web_redirect_uri: p
                .web_redirect_uri
                .clone()
                .unwrap_or_else(|| "postmessage".to_owned()),
            mobile_redirect_uri: p.mobile_redirect_uri.clone().unwrap_or_default(),
            api_base,
            store_url: SecretString::from(store_url),
            store,
            keyring_reload: keyring_reload(&file.vault)?,
            broker: broker_settings(&file.broker)?,
            webhook: webhook_settings(&file.events)?,
            limits: LimitSettings::from_section(&file.limits)?,
            keepalive: keepalive_settings(&file.jobs)?,
            warnings,
        })
    }
}

/// A duration key's value, or `default` when the key is absent.
fn duration_or(
    value: Option<&DurationValue>,
    key: &str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    value.map_or(Ok(default), |d| d.resolve(key))
}

/// `text` as a URL, or an error naming `key` with `fix`.
fn parse_url(text: &str, key: &str, fix: impl Into<String>) -> Result<Url, ConfigError> {
    Url::parse(text).map_err(|_| err(key, format!("{text:?} is not a URL"), fix))
}

/// `server.addr`, 127.0.0.1:8080 unless set.
fn server_addr(s: &ServerSection) -> Result<SocketAddr, ConfigError> {
    let text = s.addr.as_deref().unwrap_or("127.0.0.1:8080");
    text.parse().map_err(|_| {
        err(
            "server.addr",
            format!("{text:?} is not an address"),
            "write e.g. 0.0.0.0:8080",
        )
    })
}

/// `server.public_url`, and the allowed origins normalised, the public URL's own included.
fn public_url_and_origins(s: &ServerSection) -> Result<(Option<Url>, Vec<String>), ConfigError> {
    let public_url = s
        .public_url
        .as_deref()
        .map(|u| parse_url(u, "server.public_url", "write e.g. https://app.example.com"))
        .transpose()?;
    let mut allowed_origins = Vec::new();
    for o in &s.allowed_origins {
        allowed_origins.push(normalise_origin(o).ok_or_else(|| {
            err(
                "server.allowed_origins",
                format!("{o:?} is not an origin"),
                "write scheme://host[:port], e.g. https://app.example.com",
            )
        })?);
    }
    if let Some(u) = &public_url {
        let o = u.origin().ascii_serialization();
        if !allowed_origins.contains(&o) {
            allowed_origins.push(o);
        }
    }
    Ok((public_url, allowed_origins))
}

/// `server.session_purge_interval`: at least a second.
fn session_purge_interval(s: &ServerSection) -> Result<Duration, ConfigError> {
    let purge = duration_or(
        s.session_purge_interval.as_ref(),
        "server.session_purge_interval",
        DEFAULT_SESSION_PURGE,
    )?;
    if purge < Duration::from_secs(1) {
        return Err(err(
            "server.session_purge_interval",
            "is shorter than 1 s",
            "write 1s or more, e.g. 1h (the default)",
        ));
    }
    Ok(purge)
}

/// `[provider]`: the issuer, the OAuth client and what ID tokens may say.
fn provider_settings(p: &ProviderSection, base: &Path) -> Result<ProviderSettings, ConfigError> {
    let issuer = parse_url(
        p.issuer.as_deref().unwrap_or(GOOGLE_ISSUER),
        "provider.issuer",
        format!("leave it out for Google ({GOOGLE_ISSUER})"),
    )?;
    let (client_id, client_secret) = client_credentials(p, base)?;
    let mut provider = ProviderSettings::new(issuer, client_id, client_secret);
    provider.authorized_parties = p.authorized_parties.clone();
    if let Some(q) = p.google_quirks {
        provider.google_quirks = q;
    }
    Ok(provider)
}

/// The OAuth client's id and secret: set as keys (both), or read from `client_secret.json`.
fn client_credentials(
    p: &ProviderSection,
    base: &Path,
) -> Result<(String, SecretString), ConfigError> {
    let (client_id, client_secret) = match (&p.client_secret_file, &p.client_id, &p.client_secret) {
        (_, Some(id), Some(secret)) => (id.clone(), secret.clone()),
        (Some(file), _, _) => read_client_secret_file(&base.join(file))?,
        (None, Some(_), None) => {
            return Err(err(
                "provider.client_secret",
                "client_id is set but client_secret is not",
                "set provider.client_secret (or GRANTKEEPER_PROVIDER__CLIENT_SECRET), or use provider.client_secret_file",
            ));
        }
        (None, None, _) => {
            return Err(err(
                "provider.client_secret_file",
                "no OAuth client credentials",
                "download the Web application client's JSON from Google Cloud console (APIs & Services > Credentials) and set provider.client_secret_file to its path, or set provider.client_id and provider.client_secret",
            ));
        }
    };
    if client_secret.expose_secret().is_empty() {
        return Err(err(
            "provider.client_secret",
            "the client secret is empty",
            "use the Web application client's secret",
        ));
    }
    Ok((client_id, client_secret))
}

/// `[store]`'s pool options (PostgreSQL).
fn store_options(s: &StoreSection) -> Result<grantkeeper_store::StoreOptions, ConfigError> {
    let mut store = grantkeeper_store::StoreOptions::default();
    if let Some(n) = s.max_connections {
        if n == 0 {
            return Err(err(
                "store.max_connections",
                "0 connections",
                "write 1 or more (default 16)",
            ));
        }
        store.max_connections = n;
    }
    if let Some(t) = &s.statement_timeout {
        store.statement_timeout = t.resolve("store.statement_timeout")?;
    }
    Ok(store)
}

/// `vault.reload_interval`: at least a second.
fn keyring_reload(v: &VaultSection) -> Result<Duration, ConfigError> {
    let reload = duration_or(
        v.reload_interval.as_ref(),
        "vault.reload_interval",
        DEFAULT_KEYRING_RELOAD,
    )?;
    if reload < Duration::from_secs(1) {
        return Err(err(
            "vault.reload_interval",
            "an interval under a second reads the data keys without pause",
            "write e.g. 30s (the default)",
        ));
    }
    Ok(reload)
}

/// `[broker]`, with the defaults of [`BrokerSettings`] for keys left out.
fn broker_settings(b: &BrokerSection) -> Result<BrokerSettings, ConfigError> {
    let defaults = BrokerSettings::default();
    let min_ttl = duration_or(b.min_ttl.as_ref(), "broker.min_ttl", defaults.min_ttl)?;
    let refresh_concurrency = b
        .refresh_concurrency
        .unwrap_or(defaults.refresh_concurrency)
        .max(1);
    if let Some(r) = b.upstream_rate.filter(|r| !(r.is_finite() && *r > 0.0)) {
        return Err(err(
            "broker.upstream_rate",
            format!("{r} is not a rate"),
            "write refreshes per second above 0, e.g. 50, or leave it out",
        ));
    }
    let rejection_cooldown = duration_or(
        b.rejection_cooldown.as_ref(),
        "broker.rejection_cooldown",
        defaults.rejection_cooldown,
    )?;
    Ok(BrokerSettings {
        min_ttl,
        refresh_concurrency,
        upstream_rate: b.upstream_rate,
        rejection_cooldown,
    })
}

/// `[events]`: a webhook needs both its URL and a secret of 16 characters or more.
fn webhook_settings(e: &EventsSection) -> Result<Option<WebhookSettings>, ConfigError> {
    match (&e.webhook_url, &e.webhook_secret) {
        (None, None) => Ok(None),
        (Some(u), Some(secret)) => {
            let url = parse_url(
                u,
                "events.webhook_url",
                "write e.g. https://hooks.example.com/grantkeeper",
            )?;
            if secret.expose_secret().len() < 16 {
                return Err(err(
                    "events.webhook_secret",
                    "the secret is shorter than 16 characters",
                    "use a long random secret, e.g. `head -c24 /dev/urandom | base64`",
                ));
            }
            Ok(Some(WebhookSettings {
                url,
                secret: secret.clone(),
            }))
        }
        (Some(_), None) => Err(err(
            "events.webhook_secret",
            "a webhook URL is set without a secret",
            "set events.webhook_secret (GRANTKEEPER_EVENTS__WEBHOOK_SECRET)",
        )),
        (None, Some(_)) => Err(err(
            "events.webhook_url",
            "a webhook secret is set without a URL",
            "set events.webhook_url or remove the secret",
        )),
    }
}

/// A warning for a PostgreSQL URL that reaches a database on another host without verifying
/// its certificate: without `sslmode=verify-full` (or `verify-ca`), the driver's default
/// (`prefer`) neither checks whom it speaks to nor refuses plaintext, so whoever sits on the
/// network path reads the sealed tokens and the password. Names the host, never the URL.
pub fn store_tls_warning(url: &str) -> Option<String> {
    let parsed = Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return None;
    }
    let mode = parsed
        .query_pairs()
        .filter(|(k, _)| k == "sslmode")
        .last()
        .map(|(_, v)| v.into_owned());
    if matches!(mode.as_deref(), Some("verify-full" | "verify-ca")) {
        return None;
    }
    // A Unix socket (`?host=/run/postgresql`) does not cross a network.
    let socket = parsed
        .query_pairs()
        .any(|(k, v)| k == "host" && v.starts_with('/'));
    // postgres: is not a special scheme to the URL parser: an IPv4 host stays text.
    let host = parsed.host_str().filter(|h| !h.is_empty() && !socket)?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.to_canonical().is_loopback(),
        Err(_) => bare.eq_ignore_ascii_case("localhost"),
    };
    if loopback {
        return None;
    }
    let now = match mode.as_deref() {
        Some(m) => format!("sslmode={m}"),
        None => "no sslmode (the driver's default, prefer)".to_owned(),
    };
    Some(format!(
        "store.url reaches PostgreSQL on {host} with {now}: the server's certificate is not \
         verified, so a machine on the network path can read or change what is stored; add \
         sslmode=verify-full (with sslrootcert=FILE when its CA is not a public one)"
    ))
}

/// A relative SQLite path in the config file is relative to the file, not to the working
/// directory of whoever starts the server.
fn resolve_sqlite_path(url: &str, base: &Path) -> String {
    match url.strip_prefix("sqlite://") {
        Some(rest) if !rest.starts_with('/') && !rest.is_empty() => {
            format!("sqlite://{}", base.join(rest).display())
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_section_key_variables_are_configuration() {
        let vars = [
            ("GRANTKEEPER_VAULT__MASTER_KEY", "k"),
            ("GRANTKEEPER_TEST_POSTGRES", "postgres://x"),
            ("GRANTKEEPERX__Y", "z"),
            ("PATH", "/bin"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let kept = config_variables(vars.into_iter());
        assert_eq!(
            kept.keys().collect::<Vec<_>>(),
            ["GRANTKEEPER_VAULT__MASTER_KEY"]
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration("30d"), Some(Duration::from_secs(2_592_000)));
        assert_eq!(parse_duration("3w"), None);
        assert_eq!(parse_duration("h"), None);
    }

    #[test]
    fn origins_are_normalised() {
        assert_eq!(
            normalise_origin("https://App.example.com:443/x").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            normalise_origin("http://127.0.0.1:8080").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(normalise_origin("ftp://x"), None);
        assert_eq!(normalise_origin("nonsense"), None);
    }

    /// A file with client credentials and `extra` after them.
    fn load(extra: &str) -> Result<FileConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grantkeeper.toml");
        let text = format!("[provider]\nclient_id = \"id\"\nclient_secret = \"secret\"\n{extra}");
        std::fs::write(&path, text).unwrap();
        load_file(&path)
    }

    fn limits(extra: &str) -> Result<LimitSettings, ConfigError> {
        let file = load(extra).unwrap();
        Settings::from_file(&file, Path::new("/tmp")).map(|s| s.limits)
    }

    #[test]
    fn limits_have_defaults() {
        let l = limits("").unwrap();
        assert_eq!(l, LimitSettings::default());
        assert_eq!(l.sign_in, Some(DEFAULT_SIGN_IN_RATE));
        assert_eq!(l.v1, Some(DEFAULT_V1_RATE));
        assert_eq!(l.request_timeout, Duration::from_secs(30));
        assert_eq!(l.proxy_body_limit, 32 * 1024 * 1024);
        assert!(l.trusted_proxies.is_empty());
    }

    #[test]
    fn limits_are_read_from_their_section() {
        let l = limits(
            "[limits]\nauthcode_per_minute = 5\nauthcode_burst = 7\nv1_per_second = 100\n\
             v1_burst = 300\nrequest_timeout = \"2m\"\nproxy_body_limit = 1048576\n\
             trusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\", \"2001:db8::/32\", \"::1\"]\n",
        )
        .unwrap();
        assert_eq!(
            l.sign_in,
            Some(RateSettings {
                rate: 5,
                per: Duration::from_secs(60),
                burst: 7
            })
        );
        assert_eq!(
            l.v1,
            Some(RateSettings {
                rate: 100,
                per: Duration::from_secs(1),
                burst: 300
            })
        );
        assert_eq!(l.request_timeout, Duration::from_secs(120));
        assert_eq!(l.proxy_body_limit, 1_048_576);
        assert_eq!(
            l.trusted_proxies,
            ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "::1/128"]
                .map(|n| n.parse::<IpNet>().unwrap())
        );
        // Seconds as a plain number too.
        let l = limits("[limits]\nrequest_timeout = 5\n").unwrap();
        assert_eq!(l.request_timeout, Duration::from_secs(5));
    }

    #[test]
    fn the_rejection_cooldown_is_thirty_seconds_unless_set() {
        let broker = |extra: &str| {
            Settings::from_file(&load(extra).unwrap(), Path::new("/tmp")).map(|s| s.broker)
        };
        assert_eq!(
            broker("").unwrap().rejection_cooldown,
            Duration::from_secs(30)
        );
        let b = broker("[broker]\nrejection_cooldown = \"2m\"\n").unwrap();
        assert_eq!(b.rejection_cooldown, Duration::from_secs(120));
        let b = broker("[broker]\nrejection_cooldown = \"0s\"\n").unwrap();
        assert_eq!(b.rejection_cooldown, Duration::ZERO);
        let e = broker("[broker]\nrejection_cooldown = \"soon\"\n").unwrap_err();
        assert_eq!(e.key, "broker.rejection_cooldown");
    }

    #[test]
    fn a_rate_of_zero_turns_a_limit_off() {
        let l =
            limits("[limits]\nauthcode_per_minute = 0\nv1_per_second = 0\nv1_burst = 0\n").unwrap();
        assert_eq!(l.sign_in, None);
        assert_eq!(l.v1, None);
    }

    #[track_caller]
    fn refused(extra: &str, key: &str) {
        match limits(extra) {
            Ok(l) => panic!("{extra:?} was accepted: {l:?}"),
            Err(e) => {
                assert_eq!(e.key, key, "{e}");
                assert!(e.to_string().starts_with(key), "{e}");
            }
        }
    }

    #[test]
    fn bad_limits_are_refused_naming_the_key() {
        refused("[limits]\nauthcode_burst = 0\n", "limits.authcode_burst");
        refused(
            "[limits]\nv1_per_second = 10\nv1_burst = 0\n",
            "limits.v1_burst",
        );
        refused("[limits]\nrequest_timeout = 0\n", "limits.request_timeout");
        refused(
            "[limits]\nrequest_timeout = \"soon\"\n",
            "limits.request_timeout",
        );
        refused(
            "[limits]\nproxy_body_limit = 0\n",
            "limits.proxy_body_limit",
        );
        for bad in [
            "\"10.0.0.0/33\"",
            "\"10.0.0.1/8\"",
            "\"proxy.example\"",
            "\"\"",
        ] {
            refused(
                &format!("[limits]\ntrusted_proxies = [{bad}]\n"),
                "limits.trusted_proxies",
            );
        }
    }

    #[test]
    fn trust_forwarded_for_true_is_refused_naming_its_replacement() {
        let e = limits("[limits]\ntrust_forwarded_for = true\n").unwrap_err();
        assert_eq!(e.key, "limits.trust_forwarded_for", "{e}");
        assert!(e.to_string().contains("trusted_proxies = ["), "{e}");
        assert!(e.problem.contains("left-most"), "{e}");
    }

    #[test]
    fn trust_forwarded_for_false_is_accepted_with_a_warning() {
        let file = load("[limits]\ntrust_forwarded_for = false\n").unwrap();
        let s = Settings::from_file(&file, Path::new("/tmp")).unwrap();
        assert!(s.limits.trusted_proxies.is_empty());
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        assert!(s.warnings[0].contains("limits.trust_forwarded_for is deprecated"));
        assert!(s.warnings[0].contains("limits.trusted_proxies"));
        let s = Settings::from_file(&load("").unwrap(), Path::new("/tmp")).unwrap();
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    }

    #[test]
    fn trusted_proxies_from_the_environment_are_a_list() {
        let file = read_config(
            config::File::from_str(
                "[provider]\nclient_id = \"id\"\nclient_secret = \"secret\"\n",
                config::FileFormat::Toml,
            ),
            [(
                "GRANTKEEPER_LIMITS__TRUSTED_PROXIES".to_owned(),
                "10.0.0.0/8,192.0.2.7".to_owned(),
            )]
            .into_iter(),
        )
        .unwrap();
        let s = Settings::from_file(&file, Path::new("/tmp")).unwrap();
        assert_eq!(s.limits.trusted_proxies.len(), 2, "{:?}", s.limits);
    }

    #[test]
    fn unknown_or_mistyped_limit_keys_are_refused() {
        for extra in [
            "[limits]\nauthcode_per_hour = 5\n",
            "[limits]\nv1_per_second = -1\n",
            "[limits]\ntrust_forwarded_for = \"maybe\"\n",
        ] {
            let e = load(extra).unwrap_err();
            assert_eq!(e.key, "config", "{e}");
        }
        let e = load("[limits]\nauthcode_per_hour = 5\n").unwrap_err();
        assert!(e.to_string().contains("authcode_per_hour"), "{e}");
    }

    #[test]
    fn a_master_key_file_others_may_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        std::fs::write(&path, MasterKey::generate_base64().expose_secret()).unwrap();
        let section = VaultSection {
            master_key_file: Some(PathBuf::from("master.key")),
            ..VaultSection::default()
        };
        for mode in [0o644, 0o640, 0o604, 0o620, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = master_key(&section, dir.path()).unwrap_err();
            assert_eq!(e.key, "vault.master_key_file", "{e}");
            assert!(e.problem.contains(&format!("(mode {mode:04o})")), "{e}");
            assert!(e.fix.contains("chmod 600"), "{e}");
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert!(master_key(&section, dir.path()).is_ok(), "{mode:o}");
        }
    }

    #[test]
    fn a_postgres_url_off_this_host_without_certificate_checks_is_warned_of() {
        for url in [
            "postgres://gk:pw@db.example.com/gk",
            "postgresql://gk@10.0.0.5:5432/gk?sslmode=require",
            "postgres://gk@[2001:db8::5]/gk?sslmode=prefer",
            "postgres://gk@db.example.com/gk?sslmode=disable",
        ] {
            let w = store_tls_warning(url).unwrap_or_else(|| panic!("{url}"));
            assert!(w.contains("sslmode=verify-full"), "{w}");
            assert!(!w.contains("pw"), "{w}");
        }
        assert!(
            store_tls_warning("postgres://gk:pw@db.example.com/gk")
                .unwrap()
                .contains("on db.example.com with no sslmode")
        );
        for url in [
            "postgres://gk:pw@db.example.com/gk?sslmode=verify-full",
            "postgres://gk@db.example.com/gk?sslmode=verify-ca&sslrootcert=/etc/ca.pem",
            "postgres://postgres@127.0.0.1:5432/gk",
            "postgres://postgres@localhost/gk",
            "postgres://postgres@[::1]/gk",
            "postgres:///gk?host=/run/postgresql",
            "sqlite:///var/lib/gk.db",
            "sqlite::memory:",
        ] {
            assert_eq!(store_tls_warning(url), None, "{url}");
        }
    }

    #[test]
    fn a_database_password_is_never_printed_with_the_configuration() {
        let password = "s3cr3t-db-passw0rd";
        let file = load(&format!(
            "[store]\nurl = \"postgres://gk:{password}@db.example.com/gk\"\n"
        ))
        .unwrap();
        assert!(!format!("{file:?}").contains(password));
        let settings = Settings::from_file(&file, Path::new("/tmp")).unwrap();
        assert_eq!(
            settings.store_url.expose_secret(),
            format!("postgres://gk:{password}@db.example.com/gk")
        );
        assert!(!format!("{settings:?}").contains(password));
        assert!(!format!("{settings:#?}").contains(password));
        for w in &settings.warnings {
            assert!(!w.contains(password), "{w}");
        }
        assert_eq!(settings.warnings.len(), 1, "{:?}", settings.warnings);
    }

    #[test]
    fn relative_sqlite_paths_follow_the_config_file() {
        assert_eq!(
            resolve_sqlite_path("sqlite://gk.db", Path::new("/etc/gk")),
            "sqlite:///etc/gk/gk.db"
        );
        assert_eq!(
            resolve_sqlite_path("sqlite:///var/gk.db", Path::new("/etc/gk")),
            "sqlite:///var/gk.db"
        );
        assert_eq!(
            resolve_sqlite_path("sqlite::memory:", Path::new("/etc")),
            "sqlite::memory:"
        );
    }

    /// TOML syntax errors quote the offending line of the file, which may hold a secret
    /// (found by the config_toml fuzz target's no-secret-in-errors check).
    #[test]
    fn syntax_errors_do_not_quote_secrets() {
        let secret = "GOCSPX-s3cr3tValue0123456789";
        for text in [
            format!("[provider]\nclient_id = \"id\"\nclient_secret = \"{secret}\n"),
            format!("[provider]\nclient_secret = \"{secret}\"\nclient_secret = \"{secret}\"\n"),
            format!("[vault]\nmaster_key = \"{secret}\" x\n"),
            format!("[events]\nwebhook_secret = \"\"\"{secret}\n"),
        ] {
            let e = parse_config(&text).unwrap_err().to_string();
            assert!(!e.contains(secret), "{e}");
            assert!(e.contains("TOML parse error at line"), "{e}");
            assert!(!e.contains('\n'), "{e}");

            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("grantkeeper.toml");
            std::fs::write(&path, &text).unwrap();
            let e = load_file(&path).unwrap_err().to_string();
            assert!(!e.contains(secret), "{e}");
            assert!(e.contains("TOML parse error at line"), "{e}");
            assert!(e.contains("grantkeeper.toml"), "{e}");
        }
        let e = parse_config("[provider]\nclient_secret = \"x\n").unwrap_err();
        assert_eq!(e.key, "config");
        assert_eq!(
            e.problem,
            "TOML parse error at line 2, column 19: invalid basic string, expected `\"`"
        );
    }

    /// The config_toml fuzz target's input that had the webhook secret quoted back.
    const FUZZ_QUOTED_SECRET: &str = r#"[server]
addr = "0.0.0.0:8080"
public_url = "https://app.example.com"
allowed_origins = ["https://app.example.com", "http://localhost:3000"]
session_ttl = "30d"
demo_page = false

[provider]
client_id = "1234567890-abc.apps.googleusercontent.com"
client_secret = "GOCSPX-fuzz-seed-not-a-secret"
web_redirect_uri = "postmessage"
mobile_redirect_uri = "com.example.app:/oauth2redirect"
authorized_parties = ["123456789//hooks.example.com/grantkeeper"
webhook_secret = "fuzz-seed-webhook-secret"

[limits]
authcode_per_minute = 10
authcode_burst = 20
v1_per_second = 50
v1_burst = 200
request_timeout = "30s"
proxy_body_limit = 3355= "30d"
demo_pagrded_for = false
"#;

    #[test]
    fn fuzz_input_that_quoted_a_secret() {
        let e = parse_config(FUZZ_QUOTED_SECRET).unwrap_err();
        assert_eq!(e.key, "config");
        assert_eq!(
            e.problem,
            "TOML parse error at line 14, column 1: missing comma between array elements, \
             expected `,`"
        );
        assert!(!e.to_string().contains("fuzz-seed-webhook-secret"), "{e}");
    }

    #[test]
    fn without_source_lines_keeps_single_line_errors() {
        let plain = "invalid type: sequence, expected a string for key `vault.master_key`";
        assert_eq!(without_source_lines(plain), plain);
        let toml = "TOML parse error at line 3, column 1\n  |\n3 | a = 1\n  | ^\nduplicate key\n in gk.toml";
        assert_eq!(
            without_source_lines(toml),
            "TOML parse error at line 3, column 1: duplicate key in gk.toml"
        );
    }
}
