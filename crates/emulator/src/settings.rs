//! Knobs the control API turns: lifetimes, caps, the testing-mode switch, the issuer spelling,
//! a clock offset, and the faults injected into each endpoint.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum IssStyle {
    /// `iss` is the base URL, as `https://accounts.google.com`.
    Url,
    /// `iss` is the base URL without its scheme, as `accounts.google.com`.
    Bare,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Settings {
    pub(crate) access_token_ttl_secs: i64,
    pub(crate) code_ttl_secs: i64,
    pub(crate) jwks_max_age_secs: i64,
    pub(crate) refresh_token_cap: usize,
    pub(crate) testing_mode: bool,
    pub(crate) id_token_iss: IssStyle,
    pub(crate) clock_offset_secs: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            access_token_ttl_secs: 3600,
            code_ttl_secs: 600,
            jwks_max_age_secs: 21_600,
            refresh_token_cap: 100,
            testing_mode: false,
            id_token_iss: IssStyle::Url,
            clock_offset_secs: 0,
        }
    }
}

/// A partial update of [`Settings`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SettingsPatch {
    access_token_ttl_secs: Option<i64>,
    code_ttl_secs: Option<i64>,
    jwks_max_age_secs: Option<i64>,
    refresh_token_cap: Option<usize>,
    testing_mode: Option<bool>,
    id_token_iss: Option<IssStyle>,
    clock_offset_secs: Option<i64>,
}

impl Settings {
    pub(crate) fn apply(&mut self, p: SettingsPatch) -> Result<(), String> {
        let mut next = self.clone();
        if let Some(v) = p.access_token_ttl_secs {
            if v < 1 {
                return Err("access_token_ttl_secs must be at least 1".into());
            }
            next.access_token_ttl_secs = v;
        }
        if let Some(v) = p.code_ttl_secs {
            if v < 1 {
                return Err("code_ttl_secs must be at least 1".into());
            }
            next.code_ttl_secs = v;
        }
        if let Some(v) = p.jwks_max_age_secs {
            if v < 0 {
                return Err("jwks_max_age_secs must not be negative".into());
            }
            next.jwks_max_age_secs = v;
        }
        if let Some(v) = p.refresh_token_cap {
            if v < 1 {
                return Err("refresh_token_cap must be at least 1".into());
            }
            next.refresh_token_cap = v;
        }
        if let Some(v) = p.testing_mode {
            next.testing_mode = v;
        }
        if let Some(v) = p.id_token_iss {
            next.id_token_iss = v;
        }
        if let Some(v) = p.clock_offset_secs {
            next.clock_offset_secs = v;
        }
        *self = next;
        Ok(())
    }
}

/// The endpoints faults can be injected into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Token,
    Revoke,
    Certs,
    Discovery,
    Userinfo,
    Tokeninfo,
    Drive,
    /// Cloud KMS's encrypt and decrypt.
    Kms,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FaultBody {
    /// An OAuth-style JSON error body chosen by status.
    Json,
    /// A Google front-end HTML error page.
    Html,
    /// Bytes that are not JSON, labelled as JSON.
    Garbage,
    Empty,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) latency_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) retry_after_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) body: Option<FaultBody>,
    /// Cloud KMS only: the answer arrives with a byte of its ciphertext or plaintext changed
    /// and its CRC32C not (corruption in transit, which the checksums are there to catch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) corrupt: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Tamper {
    BadSignature,
    AlgNone,
    Hs256,
    WrongAud,
    ExtraAud,
    WrongIss,
    NoSub,
    Expired,
    IatFuture,
    UnknownKid,
    AzpUnauthorized,
    Missing,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IdTokenFault {
    pub(crate) tamper: Tamper,
    /// How many ID tokens to spoil; unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) count: Option<u64>,
}

/// The whole fault configuration, as `PUT /_emulator/faults` takes it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultsConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) token: Option<FaultSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) revoke: Option<FaultSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) certs: Option<FaultSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) discovery: Option<FaultSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) userinfo: Option<FaultSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tokeninfo: Option<FaultSpec>,
    /// Every Drive API call (metadata and upload endpoints alike).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) drive: Option<FaultSpec>,
    /// Every Cloud KMS call (an outage of the key service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kms: Option<FaultSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) id_token: Option<IdTokenFault>,
}

impl FaultsConfig {
    pub(crate) fn validate(&self) -> Result<(), String> {
        for (name, spec) in [
            ("token", &self.token),
            ("revoke", &self.revoke),
            ("certs", &self.certs),
            ("discovery", &self.discovery),
            ("userinfo", &self.userinfo),
            ("tokeninfo", &self.tokeninfo),
            ("drive", &self.drive),
            ("kms", &self.kms),
        ] {
            let Some(spec) = spec else { continue };
            if let Some(r) = spec.error_rate
                && !(0.0..=1.0).contains(&r)
            {
                return Err(format!("{name}.error_rate must be between 0 and 1"));
            }
            if let Some(s) = spec.status
                && !(100..=599).contains(&s)
            {
                return Err(format!("{name}.status must be an HTTP status"));
            }
            if spec.corrupt.is_some() && name != "kms" {
                return Err(format!("{name}.corrupt applies to kms only"));
            }
        }
        Ok(())
    }
}

/// What to do to one request.
#[derive(Debug, Default)]
pub(crate) struct FaultAction {
    pub(crate) latency_ms: u64,
    /// Replace the answer with this failure.
    pub(crate) fail: Option<Failure>,
    /// Corrupt the answer's payload (Cloud KMS).
    pub(crate) corrupt: bool,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Failure {
    pub(crate) status: u16,
    pub(crate) body: FaultBody,
    pub(crate) retry_after_secs: Option<u64>,
}

/// The configuration plus the per-endpoint request counters that make `error_rate`
/// deterministic.
#[derive(Default)]
pub(crate) struct Faults {
    pub(crate) config: FaultsConfig,
    counters: [u64; 8],
}

impl Faults {
    pub(crate) fn set(&mut self, config: FaultsConfig) {
        self.config = config;
        self.counters = [0; 8];
    }

    /// Decides the fate of the next request to `ep`: request number n (from 0) fails when
    /// `floor((n+1)*rate) > floor(n*rate)`, so a test can count exactly which ones fail.
    pub(crate) fn decide(&mut self, ep: Endpoint) -> FaultAction {
        let (spec, idx) = match ep {
            Endpoint::Token => (&self.config.token, 0),
            Endpoint::Revoke => (&self.config.revoke, 1),
            Endpoint::Certs => (&self.config.certs, 2),
            Endpoint::Discovery => (&self.config.discovery, 3),
            Endpoint::Userinfo => (&self.config.userinfo, 4),
            Endpoint::Tokeninfo => (&self.config.tokeninfo, 5),
            Endpoint::Drive => (&self.config.drive, 6),
            Endpoint::Kms => (&self.config.kms, 7),
        };
        let Some(spec) = spec else {
            return FaultAction::default();
        };
        let Some(counter) = self.counters.get_mut(idx) else {
            return FaultAction::default();
        };
        let n = *counter;
        *counter += 1;
        let corrupting = spec.corrupt == Some(true);
        let active = spec.status.is_some() || spec.body.is_some() || corrupting;
        let rate = spec.error_rate.unwrap_or(if active { 1.0 } else { 0.0 });
        // Exact for the rates tests use; f64 has 53 bits, far beyond any request count here.
        #[allow(clippy::cast_precision_loss)]
        let hit = ((n + 1) as f64 * rate).floor() > (n as f64 * rate).floor();
        if corrupting {
            return FaultAction {
                latency_ms: spec.latency_ms.unwrap_or(0),
                fail: None,
                corrupt: hit,
            };
        }
        let fail = hit.then(|| {
            let body = spec.body.unwrap_or(FaultBody::Json);
            let status = spec.status.unwrap_or(match body {
                FaultBody::Garbage => 200,
                FaultBody::Html => 403,
                FaultBody::Json | FaultBody::Empty => 503,
            });
            let retry_after_secs = spec.retry_after_secs.or((status == 429).then_some(1));
            Failure {
                status,
                body,
                retry_after_secs,
            }
        });
        FaultAction {
            latency_ms: spec.latency_ms.unwrap_or(0),
            fail,
            corrupt: false,
        }
    }

    /// The tampering to apply to the next ID token, counting it down.
    pub(crate) fn take_tamper(&mut self) -> Option<Tamper> {
        let fault = self.config.id_token.as_mut()?;
        let tamper = fault.tamper;
        match &mut fault.count {
            None => {}
            Some(0) => {
                self.config.id_token = None;
                return None;
            }
            Some(n) => {
                *n -= 1;
                if *n == 0 {
                    self.config.id_token = None;
                }
            }
        }
        Some(tamper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_rate_is_deterministic() {
        let mut f = Faults::default();
        f.set(FaultsConfig {
            token: Some(FaultSpec {
                error_rate: Some(0.25),
                status: Some(503),
                ..FaultSpec::default()
            }),
            ..FaultsConfig::default()
        });
        let hits: Vec<bool> = (0..8)
            .map(|_| f.decide(Endpoint::Token).fail.is_some())
            .collect();
        assert_eq!(
            hits,
            vec![false, false, false, true, false, false, false, true]
        );
    }

    #[test]
    fn settings_patch_validates() {
        let mut s = Settings::default();
        let bad: SettingsPatch = serde_json::from_str(r#"{"refresh_token_cap": 0}"#).unwrap();
        assert!(s.apply(bad).is_err());
        assert_eq!(s.refresh_token_cap, 100);
        let good: SettingsPatch = serde_json::from_str(r#"{"refresh_token_cap": 3}"#).unwrap();
        s.apply(good).unwrap();
        assert_eq!(s.refresh_token_cap, 3);
    }
}
