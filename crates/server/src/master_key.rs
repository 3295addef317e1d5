//! Which master key a deployment names in `[vault]`, checked at start-up and opened as the
//! vault's [`MasterKeySource`]: a key file or `GRANTKEEPER_VAULT__MASTER_KEY` (the local master
//! key), a Google Cloud KMS key (`kms_key`), or an AES key in a PKCS#11 token (`pkcs11`, an
//! RFC 7512 URI). Exactly one of them; the settings of the others are refused beside it.
//!
//! The same three can be named on the command line (`grantkeeper keys rewrap --to`):
//! `file:PATH`, `kms:projects/...` (or the bare key name), or a `pkcs11:` URI.

use crate::config::{ConfigError, VaultSection, err, refuse_shared};
use grantkeeper_core::master::MasterKeyError;
use grantkeeper_core::{MasterKey, MasterKeySource, SecretString, SettingProblem, SharedClock};
use grantkeeper_keysource::{CloudKms, Credentials, GOOGLE_ENDPOINT, Pkcs11Key, Pkcs11Settings};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zeroize::Zeroize;

/// The master key a deployment uses. Its `Debug` shows no secret.
pub enum MasterKeySettings {
    /// The local master key.
    Local(MasterKey),
    /// A Cloud KMS key.
    Kms {
        key: String,
        endpoint: String,
        /// A service account key file; Application Default Credentials when None.
        credentials_file: Option<PathBuf>,
    },
    /// A key in a PKCS#11 token.
    Pkcs11 {
        uri: String,
        module: Option<PathBuf>,
        pin: Option<SecretString>,
        /// Where the PIN came from, named when the token refuses it.
        pin_setting: &'static str,
    },
}

impl fmt::Debug for MasterKeySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

fn from_problem(p: SettingProblem) -> ConfigError {
    ConfigError {
        key: p.setting,
        problem: p.problem,
        fix: p.fix,
    }
}

/// Reads a secret from a file (a PIN), trimmed; the file's text is wiped.
fn read_secret(path: &Path, key: &str, what: &str) -> Result<SecretString, ConfigError> {
    refuse_shared(path, key)?;
    let mut text = std::fs::read_to_string(path).map_err(|e| {
        err(
            key,
            format!("cannot read {}: {e}", path.display()),
            format!("write the {what} in that file, readable by this user only (mode 0600)"),
        )
    })?;
    let secret = SecretString::from(text.trim().to_owned());
    text.zeroize();
    Ok(secret)
}

/// Refuses more than one master key, and the settings of a kind of key not chosen.
fn refuse_mixed(vault: &VaultSection) -> Result<(), ConfigError> {
    let local = vault.master_key.is_some() || vault.master_key_file.is_some();
    let chosen = [local, vault.kms_key.is_some(), vault.pkcs11.is_some()]
        .iter()
        .filter(|c| **c)
        .count();
    if chosen > 1 {
        return Err(err(
            "vault",
            "more than one master key is named (master_key_file or \
             GRANTKEEPER_VAULT__MASTER_KEY, kms_key, pkcs11)",
            "keep one: the master key that wraps the store's data keys (moving them to \
             another is `grantkeeper keys rewrap --to`)",
        ));
    }
    let stray = |set: bool, key: &str, needs: &str| {
        if set {
            Err(err(
                key,
                format!("it applies to {needs} only, which is not set"),
                format!("set {needs}, or remove {key}"),
            ))
        } else {
            Ok(())
        }
    };
    if vault.kms_key.is_none() {
        stray(
            vault.kms_endpoint.is_some(),
            "vault.kms_endpoint",
            "vault.kms_key",
        )?;
        stray(
            vault.kms_credentials_file.is_some(),
            "vault.kms_credentials_file",
            "vault.kms_key",
        )?;
    }
    if vault.pkcs11.is_none() {
        stray(
            vault.pkcs11_module.is_some(),
            "vault.pkcs11_module",
            "vault.pkcs11",
        )?;
        stray(
            vault.pkcs11_pin_file.is_some(),
            "vault.pkcs11_pin_file",
            "vault.pkcs11",
        )?;
        stray(
            vault.pkcs11_pin.is_some(),
            "vault.pkcs11_pin",
            "vault.pkcs11",
        )?;
    }
    Ok(())
}

/// `vault.kms_key` with its endpoint and credentials.
fn kms_settings(
    key: &str,
    vault: &VaultSection,
    base: &Path,
) -> Result<MasterKeySettings, ConfigError> {
    let key = grantkeeper_keysource::parse_key_name(key).map_err(from_problem)?;
    let endpoint = vault
        .kms_endpoint
        .clone()
        .unwrap_or_else(|| GOOGLE_ENDPOINT.to_owned());
    match url::Url::parse(&endpoint) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
        _ => {
            return Err(err(
                "vault.kms_endpoint",
                "not an http(s) URL",
                format!("leave it out for {GOOGLE_ENDPOINT}"),
            ));
        }
    }
    let credentials_file = vault.kms_credentials_file.as_ref().map(|f| base.join(f));
    if let Some(file) = &credentials_file {
        refuse_shared(file, "vault.kms_credentials_file")?;
    }
    Ok(MasterKeySettings::Kms {
        key,
        endpoint,
        credentials_file,
    })
}

/// `vault.pkcs11` with its module and PIN.
fn pkcs11_settings(
    uri: &str,
    vault: &VaultSection,
    base: &Path,
) -> Result<MasterKeySettings, ConfigError> {
    let parsed = grantkeeper_keysource::Pkcs11Uri::parse(uri).map_err(|problem| {
        err(
            "vault.pkcs11",
            problem,
            "write it as pkcs11:token=TOKEN;object=KEY_LABEL (RFC 7512)",
        )
    })?;
    if vault.pkcs11_module.is_none() && parsed.module_path.is_none() {
        return Err(err(
            "vault.pkcs11_module",
            "no PKCS#11 module",
            "set it to the HSM's PKCS#11 library (SoftHSM2: \
             /usr/lib/softhsm/libsofthsm2.so)",
        ));
    }
    let (pin, pin_setting) = pkcs11_pin(vault, parsed.pin_source.is_some(), base)?;
    Ok(MasterKeySettings::Pkcs11 {
        uri: uri.to_owned(),
        module: vault.pkcs11_module.as_ref().map(|m| base.join(m)),
        pin,
        pin_setting,
    })
}

/// The token's PIN and the setting it came from; None when the URI names its source.
fn pkcs11_pin(
    vault: &VaultSection,
    uri_has_pin_source: bool,
    base: &Path,
) -> Result<(Option<SecretString>, &'static str), ConfigError> {
    match (&vault.pkcs11_pin, &vault.pkcs11_pin_file) {
        (Some(_), Some(_)) => Err(err(
            "vault.pkcs11_pin_file",
            "the PIN is given twice (pkcs11_pin_file and GRANTKEEPER_VAULT__PKCS11_PIN)",
            "keep one",
        )),
        (Some(pin), None) => Ok((Some(pin.clone()), "GRANTKEEPER_VAULT__PKCS11_PIN")),
        (None, Some(file)) => Ok((
            Some(read_secret(
                &base.join(file),
                "vault.pkcs11_pin_file",
                "token's user PIN",
            )?),
            "vault.pkcs11_pin_file",
        )),
        (None, None) if uri_has_pin_source => Ok((None, "vault.pkcs11")),
        (None, None) => Err(err(
            "vault.pkcs11_pin_file",
            "no PIN for the token",
            "set vault.pkcs11_pin_file to a file holding the user PIN (mode 0600), \
             or GRANTKEEPER_VAULT__PKCS11_PIN",
        )),
    }
}

impl MasterKeySettings {
    /// Validates `[vault]`; `base` is the directory relative paths start from.
    pub fn from_section(
        vault: &VaultSection,
        base: &Path,
    ) -> Result<MasterKeySettings, ConfigError> {
        refuse_mixed(vault)?;
        if let Some(key) = &vault.kms_key {
            return kms_settings(key, vault, base);
        }
        if let Some(uri) = &vault.pkcs11 {
            return pkcs11_settings(uri, vault, base);
        }
        crate::config::master_key(vault, base).map(MasterKeySettings::Local)
    }

    /// A master key named on the command line: `file:PATH`, `kms:KEY` (or `projects/...`), or
    /// a `pkcs11:` URI, with the options that go with it.
    pub fn from_spec(spec: &str, options: &SpecOptions) -> Result<MasterKeySettings, ConfigError> {
        let key = "--to";
        if let Some(path) = spec.strip_prefix("file:") {
            let section = VaultSection {
                master_key_file: Some(PathBuf::from(path)),
                ..VaultSection::default()
            };
            return Self::from_section(&section, Path::new(".")).map_err(|e| ConfigError {
                key: key.into(),
                ..e
            });
        }
        if spec.starts_with("pkcs11:") {
            let section = VaultSection {
                pkcs11: Some(spec.to_owned()),
                pkcs11_module: options.pkcs11_module.clone(),
                pkcs11_pin_file: options.pkcs11_pin_file.clone(),
                ..VaultSection::default()
            };
            return Self::from_section(&section, Path::new("."));
        }
        let name = spec.strip_prefix("kms:").unwrap_or(spec);
        if name.starts_with("projects/") {
            let section = VaultSection {
                kms_key: Some(name.to_owned()),
                kms_endpoint: options.kms_endpoint.clone(),
                kms_credentials_file: options.kms_credentials_file.clone(),
                ..VaultSection::default()
            };
            return Self::from_section(&section, Path::new("."));
        }
        Err(err(
            key,
            "not a master key",
            "name file:PATH (a key file), kms:projects/P/locations/L/keyRings/R/cryptoKeys/K, or \
             a pkcs11: URI",
        ))
    }

    /// Which master key, for people (never a secret).
    pub fn describe(&self) -> String {
        match self {
            MasterKeySettings::Local(_) => {
                "local (a key file or GRANTKEEPER_VAULT__MASTER_KEY)".into()
            }
            MasterKeySettings::Kms { key, endpoint, .. } => {
                if endpoint == GOOGLE_ENDPOINT {
                    format!("kms:{key}")
                } else {
                    format!("kms:{key} at {endpoint}")
                }
            }
            MasterKeySettings::Pkcs11 { uri, .. } => grantkeeper_keysource::Pkcs11Uri::parse(uri)
                .map(|u| u.label())
                .unwrap_or_else(|_| "pkcs11".into()),
        }
    }

    /// Opens the source: for a KMS key nothing is asked yet (the first data key loaded asks);
    /// a PKCS#11 token is logged in. `env` reads Application Default Credentials' variables.
    pub async fn open(
        &self,
        clock: SharedClock,
        env: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<Arc<dyn MasterKeySource>, MasterKeyError> {
        match self {
            MasterKeySettings::Local(key) => {
                let key = key.try_clone().map_err(|_| {
                    MasterKeyError::Refused(SettingProblem::new(
                        "vault.master_key",
                        "the master key cannot be used",
                        "check it",
                    ))
                })?;
                Ok(Arc::new(key))
            }
            MasterKeySettings::Kms {
                key,
                endpoint,
                credentials_file,
            } => {
                let credentials = match credentials_file {
                    Some(file) => Credentials::key_file(file, "vault.kms_credentials_file")?,
                    None => Credentials::from_env(env)?,
                };
                Ok(Arc::new(CloudKms::new(key, endpoint, credentials, clock)?))
            }
            MasterKeySettings::Pkcs11 {
                uri,
                module,
                pin,
                pin_setting,
            } => {
                let key = Pkcs11Key::open(Pkcs11Settings {
                    uri: uri.clone(),
                    module: module.clone(),
                    pin: pin.clone(),
                    pin_setting,
                    wrapping: None,
                })
                .await?;
                Ok(Arc::new(key))
            }
        }
    }
}

/// What goes with a master key named on the command line.
#[derive(Clone, Debug, Default)]
pub struct SpecOptions {
    pub kms_endpoint: Option<String>,
    pub kms_credentials_file: Option<PathBuf>,
    pub pkcs11_module: Option<PathBuf>,
    pub pkcs11_pin_file: Option<PathBuf>,
}

/// The process's environment, for Application Default Credentials.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_config;

    fn settings(toml: &str) -> Result<MasterKeySettings, ConfigError> {
        let file = parse_config(toml).unwrap();
        MasterKeySettings::from_section(&file.vault, Path::new("."))
    }

    const KEY: &str = "projects/p/locations/global/keyRings/r/cryptoKeys/k";

    #[test]
    fn one_master_key_is_named() {
        let kms = settings(&format!("[vault]\nkms_key = \"{KEY}\"\n")).unwrap();
        assert!(
            matches!(&kms, MasterKeySettings::Kms { endpoint, credentials_file: None, .. }
            if endpoint == GOOGLE_ENDPOINT)
        );
        assert_eq!(kms.describe(), format!("kms:{KEY}"));

        let e = settings(&format!(
            "[vault]\nkms_key = \"{KEY}\"\nmaster_key = \"{}\"\n",
            "A".repeat(44)
        ))
        .unwrap_err();
        assert_eq!(e.key, "vault");
        let e = settings("[vault]\nkms_endpoint = \"http://127.0.0.1:1\"\n").unwrap_err();
        assert_eq!(e.key, "vault.kms_endpoint");
        let e = settings("[vault]\nkms_key = \"projects/p\"\n").unwrap_err();
        assert_eq!(e.key, "vault.kms_key");
        let e = settings(&format!(
            "[vault]\nkms_key = \"{KEY}\"\nkms_endpoint = \"ftp://x\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "vault.kms_endpoint");
        let e = settings("").unwrap_err();
        assert_eq!(e.key, "vault.master_key_file");
    }

    #[test]
    fn a_pkcs11_key_needs_a_module_and_a_pin() {
        let uri = "pkcs11:token=t;object=o";
        let e = settings(&format!(
            "[vault]\npkcs11 = \"{uri}\"\npkcs11_pin = \"1\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "vault.pkcs11_module");
        let e = settings(&format!(
            "[vault]\npkcs11 = \"{uri}\"\npkcs11_module = \"/m.so\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "vault.pkcs11_pin_file");
        let ok = settings(&format!(
            "[vault]\npkcs11 = \"{uri}\"\npkcs11_module = \"/m.so\"\npkcs11_pin = \"123456\"\n"
        ))
        .unwrap();
        assert_eq!(ok.describe(), uri);
        assert!(!format!("{ok:?}").contains("123456"));
        let e = settings("[vault]\npkcs11 = \"pkcs11:object=o?pin-value=99\"\n").unwrap_err();
        assert_eq!(e.key, "vault.pkcs11");
        assert!(!e.to_string().contains("99"));
        let e = settings("[vault]\npkcs11_module = \"/m.so\"\n").unwrap_err();
        assert_eq!(e.key, "vault.pkcs11_module");
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("pin");
        let e = settings(&format!(
            "[vault]\npkcs11 = \"{uri}\"\npkcs11_module = \"/m.so\"\npkcs11_pin_file = {:?}\n",
            missing.display().to_string()
        ))
        .unwrap_err();
        assert_eq!(e.key, "vault.pkcs11_pin_file");
        // A PIN file others may read is refused, as the master key file is.
        let shared = dir.path().join("shared-pin");
        std::fs::write(&shared, "123456\n").unwrap();
        let e = settings(&format!(
            "[vault]\npkcs11 = \"{uri}\"\npkcs11_module = \"/m.so\"\npkcs11_pin_file = {:?}\n",
            shared.display().to_string()
        ))
        .unwrap_err();
        assert_eq!(e.key, "vault.pkcs11_pin_file");
        assert!(e.fix.contains("chmod 600"), "{e}");
        assert!(!e.to_string().contains("123456"));
    }

    #[test]
    fn sources_named_on_the_command_line() {
        let options = SpecOptions {
            kms_endpoint: Some("http://127.0.0.1:9".into()),
            ..SpecOptions::default()
        };
        for spec in [format!("kms:{KEY}"), KEY.to_owned()] {
            let s = MasterKeySettings::from_spec(&spec, &options).unwrap();
            assert_eq!(s.describe(), format!("kms:{KEY} at http://127.0.0.1:9"));
        }
        let e = MasterKeySettings::from_spec("file:/nonexistent/master.key", &options).unwrap_err();
        assert_eq!(e.key, "--to");
        let e = MasterKeySettings::from_spec("s3://bucket", &options).unwrap_err();
        assert_eq!(e.key, "--to");
        let e = MasterKeySettings::from_spec("pkcs11:object=o", &options).unwrap_err();
        assert_eq!(e.key, "vault.pkcs11_module");
    }
}
