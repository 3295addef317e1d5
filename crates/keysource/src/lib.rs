//! Homes of grantkeeper's master key off the host: Google Cloud KMS ([`CloudKms`], with the
//! Application Default Credentials of [`adc`]) and a key in an HSM reached through PKCS#11
//! ([`Pkcs11Key`], named by an RFC 7512 URI, [`Pkcs11Uri`]).
//!
//! Each is a [`grantkeeper_core::MasterKeySource`]: it wraps and unwraps the vault's data keys,
//! bound to their ids, and the master key never leaves the service or the token that holds
//! it. The vault asks its source only when a data key is made or loaded; the source says what
//! went wrong in terms of the setting at fault and the fix.
//!
//! Leaves to others: which source a deployment uses (grantkeeper-server's configuration), the
//! data keys themselves and when they are loaded (the vault and the server's keyring), and the
//! file or environment master key (grantkeeper-core's `MasterKey`).
// Indexing that may panic is refused outside tests (`get`, patterns, `split_at_checked`); not in
// [workspace.lints], which would reach the helpers of the integration tests too.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

pub mod adc;
mod kms;
mod pkcs11;
mod uri;

pub use adc::Credentials;
pub use kms::{CloudKms, GOOGLE_ENDPOINT, parse_key_name};
pub use pkcs11::{Pkcs11Key, Pkcs11Settings, Wrapping};
pub use uri::Pkcs11Uri;
