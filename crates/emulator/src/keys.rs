//! The emulator's RSA keys: the ID token signing keys (published as a JWK set and as Google's
//! v1 `kid -> X.509 PEM` map) and the separate key that signs security event tokens.
//!
//! Like Google, a rotated-out key stays published for a day (longer than any ID token it
//! signed lives), with at most three keys listed at once. Private keys are kept as PKCS#8 PEM
//! files of mode 0600 under `DIR/emulator/keys/`.

use crate::util::{self, b64url, write_private};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{self, KeyPair as _};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use time::OffsetDateTime;

/// How long a retired key stays published: every ID token it signed (one hour) has expired.
const RETIRED_KEY_SECS: i64 = 86_400;
/// At most this many keys are published at once.
const MAX_PUBLISHED: usize = 3;

/// One RSA 2048 key with its derived public forms.
pub(crate) struct SigningKey {
    pub(crate) kid: String,
    pair: KeyPair,
    /// RFC 8017 `RSAPublicKey` DER, for verification.
    public_der: Vec<u8>,
    n: String,
    e: String,
    pkcs8_pem: String,
}

impl SigningKey {
    /// Generates a fresh key. Slow (tens of milliseconds): call it off the async threads.
    pub(crate) fn generate() -> anyhow::Result<SigningKey> {
        let pair = KeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| anyhow::anyhow!("RSA key generation failed"))?;
        Self::from_pair(pair)
    }

    fn from_pkcs8_pem(pem: &str) -> anyhow::Result<SigningKey> {
        let der = pem_decode(pem).ok_or_else(|| anyhow::anyhow!("not a PEM private key"))?;
        let pair =
            KeyPair::from_pkcs8(&der).map_err(|e| anyhow::anyhow!("bad RSA private key: {e}"))?;
        Self::from_pair(pair)
    }

    fn from_pair(pair: KeyPair) -> anyhow::Result<SigningKey> {
        let public = pair.public_key();
        let public_der = public.as_ref().to_vec();
        let n = b64url(public.modulus().big_endian_without_leading_zero());
        let e = b64url(public.exponent().big_endian_without_leading_zero());
        // Google's kids are 40 hex characters; a digest of the public key keeps ours stable.
        let kid = hex::encode(util::sha256(&public_der).get(..20).unwrap_or_default());
        let der = pair
            .as_der()
            .map_err(|_| anyhow::anyhow!("cannot export the RSA key"))?;
        let pkcs8_pem = pem_encode("PRIVATE KEY", der.as_ref());
        Ok(SigningKey {
            kid,
            pair,
            public_der,
            n,
            e,
            pkcs8_pem,
        })
    }

    /// RS256 (RSASSA-PKCS1-v1_5 with SHA-256) signature of `message`.
    pub(crate) fn sign(&self, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut sig = vec![0u8; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message,
                &mut sig,
            )
            .map_err(|_| anyhow::anyhow!("RSA signing failed"))?;
        Ok(sig)
    }

    pub(crate) fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &self.public_der)
            .verify(message, sig)
            .is_ok()
    }

    /// The private key, PKCS#8 PEM (a service account's key file holds it).
    pub(crate) fn pkcs8_pem(&self) -> &str {
        &self.pkcs8_pem
    }

    /// The public key as an HMAC secret: what an `alg` confusion attack would sign with.
    pub(crate) fn public_der(&self) -> &[u8] {
        &self.public_der
    }

    pub(crate) fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": self.kid,
            "n": self.n,
            "e": self.e,
        })
    }

    /// A self-signed certificate for this key, as Google publishes at `/oauth2/v1/certs`.
    fn certificate(&self, now: OffsetDateTime) -> anyhow::Result<String> {
        let key =
            rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&self.pkcs8_pem, &rcgen::PKCS_RSA_SHA256)?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(
            rcgen::DnType::CommonName,
            "federated-signon.system.gserviceaccount.com",
        );
        params.distinguished_name = dn;
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(16);
        Ok(params.self_signed(&key)?.pem())
    }

    fn save(&self, path: &Path) -> anyhow::Result<()> {
        write_private(path, self.pkcs8_pem.as_bytes())?;
        Ok(())
    }
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn pem_decode(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    STANDARD.decode(body).ok()
}

#[derive(Serialize, Deserialize, Clone)]
struct KeyMeta {
    kid: String,
    created_at: i64,
    #[serde(default)]
    retired_at: Option<i64>,
}

#[derive(Serialize, Deserialize, Default)]
struct KeysFile {
    signing: Vec<KeyMeta>,
}

struct Published {
    key: Arc<SigningKey>,
    meta: KeyMeta,
    cert_pem: String,
}

/// The ID token signing keys, newest first; the first one signs.
pub(crate) struct KeyRing {
    keys: Vec<Published>,
    dir: Option<PathBuf>,
    /// When the published set last changed: the origin of the certs responses' `Age`.
    pub(crate) changed_at: i64,
}

impl KeyRing {
    /// Loads the keys kept under `dir`, or makes the first one.
    pub(crate) fn open(dir: Option<&Path>, now: OffsetDateTime) -> anyhow::Result<KeyRing> {
        let mut ring = KeyRing {
            keys: Vec::new(),
            dir: dir.map(Path::to_path_buf),
            changed_at: now.unix_timestamp(),
        };
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir.join("keys"))?;
            let meta_path = dir.join("keys.json");
            if meta_path.exists() {
                let file: KeysFile = serde_json::from_slice(&std::fs::read(&meta_path)?)?;
                for meta in file.signing {
                    let path = dir.join("keys").join(format!("{}.pem", meta.kid));
                    let Ok(pem) = std::fs::read_to_string(&path) else {
                        tracing::warn!(kid = %meta.kid, "signing key file missing; key dropped");
                        continue;
                    };
                    let key = SigningKey::from_pkcs8_pem(&pem)?;
                    let cert_pem = key.certificate(now)?;
                    ring.keys.push(Published {
                        key: Arc::new(key),
                        meta,
                        cert_pem,
                    });
                }
            }
        }
        if ring.keys.iter().all(|p| p.meta.retired_at.is_some()) {
            ring.install(SigningKey::generate()?, now)?;
        } else {
            ring.prune(now.unix_timestamp());
            ring.save()?;
        }
        Ok(ring)
    }

    /// Makes `key` the signing key; the previous one stays published until it has aged out.
    pub(crate) fn install(&mut self, key: SigningKey, now: OffsetDateTime) -> anyhow::Result<()> {
        let t = now.unix_timestamp();
        for p in &mut self.keys {
            p.meta.retired_at.get_or_insert(t);
        }
        if let Some(dir) = &self.dir {
            key.save(&dir.join("keys").join(format!("{}.pem", key.kid)))?;
        }
        let cert_pem = key.certificate(now)?;
        let meta = KeyMeta {
            kid: key.kid.clone(),
            created_at: t,
            retired_at: None,
        };
        self.keys.insert(
            0,
            Published {
                key: Arc::new(key),
                meta,
                cert_pem,
            },
        );
        self.prune(t);
        self.changed_at = t;
        self.save()
    }

    fn prune(&mut self, now: i64) {
        let mut kept = 0usize;
        let dir = self.dir.clone();
        self.keys.retain(|p| {
            let fresh = p.meta.retired_at.is_none_or(|r| now - r < RETIRED_KEY_SECS);
            let keep = fresh && kept < MAX_PUBLISHED;
            if keep {
                kept += 1;
            } else if let Some(dir) = &dir {
                let _ = std::fs::remove_file(dir.join("keys").join(format!("{}.pem", p.meta.kid)));
            }
            keep
        });
    }

    fn save(&self) -> anyhow::Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let file = KeysFile {
            signing: self.keys.iter().map(|p| p.meta.clone()).collect(),
        };
        write_private(&dir.join("keys.json"), &serde_json::to_vec_pretty(&file)?)?;
        Ok(())
    }

    /// True when a retired key has aged out and [`KeyRing::expire`] would drop it.
    pub(crate) fn needs_expire(&self, now: i64) -> bool {
        self.keys.iter().any(|p| {
            p.meta
                .retired_at
                .is_some_and(|r| now - r >= RETIRED_KEY_SECS)
        })
    }

    /// Drops keys retired more than a day ago; true when the published set changed.
    pub(crate) fn expire(&mut self, now: i64) -> bool {
        let before = self.keys.len();
        self.prune(now);
        if self.keys.len() != before {
            self.changed_at = now;
            let _ = self.save();
            true
        } else {
            false
        }
    }

    pub(crate) fn current(&self) -> Option<Arc<SigningKey>> {
        self.keys.first().map(|p| p.key.clone())
    }

    pub(crate) fn published(&self) -> Vec<Arc<SigningKey>> {
        self.keys.iter().map(|p| p.key.clone()).collect()
    }

    pub(crate) fn kids(&self) -> Vec<String> {
        self.keys.iter().map(|p| p.meta.kid.clone()).collect()
    }

    pub(crate) fn jwks(&self) -> serde_json::Value {
        serde_json::json!({"keys": self.keys.iter().map(|p| p.key.jwk()).collect::<Vec<_>>()})
    }

    pub(crate) fn v1_certs(&self) -> serde_json::Value {
        let map: serde_json::Map<String, serde_json::Value> = self
            .keys
            .iter()
            .map(|p| (p.meta.kid.clone(), p.cert_pem.clone().into()))
            .collect();
        serde_json::Value::Object(map)
    }
}

/// Loads the key that signs security event tokens from `dir`, or makes (and keeps) one.
pub(crate) fn risc_key(dir: Option<&Path>) -> anyhow::Result<SigningKey> {
    let path = dir.map(|d| d.join("keys").join("risc.pem"));
    if let Some(p) = path.as_deref().filter(|p| p.exists()) {
        return SigningKey::from_pkcs8_pem(&std::fs::read_to_string(p)?);
    }
    let key = SigningKey::generate()?;
    if let Some(p) = &path {
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        key.save(p)?;
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_keeps_the_key() {
        let key = SigningKey::generate().unwrap();
        let again = SigningKey::from_pkcs8_pem(&key.pkcs8_pem).unwrap();
        assert_eq!(key.kid, again.kid);
        assert_eq!(key.kid.len(), 40);
        let sig = key.sign(b"hello").unwrap();
        assert!(again.verify(b"hello", &sig));
        assert!(!again.verify(b"hullo", &sig));
        let cert = key.certificate(OffsetDateTime::UNIX_EPOCH).unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
    }
}
