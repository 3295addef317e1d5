//! The vocabulary every other part of grantkeeper speaks.
//!
//! Owns: the [`Clock`] (time is a parameter, never read from the system elsewhere), secret
//! strings that redact themselves, OAuth scope sets with Google's normalisation, grant states,
//! user profiles, random identifiers, refresh-token [`fingerprint`]s, the exponential
//! [`backoff`] of stored retries, the [`vault`] that seals tokens at rest with the [`master`]
//! key source trait its data keys are wrapped through, and the process's [`metrics`]
//! (Prometheus families and per-minute activity for the store).
//!
//! Leaves to others: HTTP, storage and the provider protocol. Nothing here does I/O.
// Indexing that may panic is refused outside tests (`get`, patterns, `split_at_checked`); not in
// [workspace.lints], which would reach the helpers of the integration tests too.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

pub mod backoff;
pub mod clock;
pub mod fingerprint;
pub mod grant;
pub mod master;
pub mod metrics;
pub mod random;
pub mod scopes;
pub mod vault;

pub use backoff::{Backoff, Jitter};
pub use clock::{Clock, ManualClock, SharedClock, Stopwatch, SystemClock};
pub use fingerprint::{TokenFingerprint, fingerprint};
pub use grant::{GrantState, UserProfile};
pub use master::{LOCAL_SOURCE, MasterKeyError, MasterKeySource, SettingProblem};
pub use metrics::Metrics;
pub use scopes::Scopes;
pub use secrecy::{ExposeSecret, SecretString};
pub use vault::{
    Aad, KeyId, KeyringSource, MasterKey, Purpose, Vault, VaultError, VaultHandle, WeakVaultHandle,
};
