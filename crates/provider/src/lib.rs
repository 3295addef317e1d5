//! grantkeeper's client of the OpenID Connect provider (Google, or the emulator standing in
//! for it).
//!
//! Owns: discovery, the token endpoint (code exchange and refresh), revocation, the
//! classification of the provider's errors into what a caller can act on (dead grant,
//! operator mistake, transient), ID-token verification through a kid-indexed JWKS cache
//! that honours the provider's cache headers, and the verification of the security event
//! tokens of Cross-Account Protection ([`risc`]) through a cache of the same kind.
//!
//! Leaves to others: retries and backoff (the broker decides; a code is single use), storing
//! or sealing anything (the store and the vault), HTTP routes (the server), and the HTTP
//! client's timeouts and redirect policy (the caller builds the one shared
//! [`reqwest::Client`]). Time comes from the injected [`grantkeeper_core::Clock`]; nothing
//! here reads the system clock.
//!
//! Secrets (codes, tokens, the client secret) travel as [`SecretString`] and never reach an
//! error message, a log line or a `Debug` output.

mod claims;
mod discovery;
mod error;
mod http;
mod keystore;
mod provider;
pub mod risc;
mod settings;
mod token;

pub use claims::IdTokenClaims;
pub use discovery::Discovery;
pub use error::{IdTokenError, ProviderError};
pub use keystore::KeyStoreStats;
pub use provider::Provider;
pub use risc::{SecurityEvent, SecurityEventError, SecurityEventVerifier};
pub use settings::ProviderSettings;
pub use token::TokenResponse;

pub use grantkeeper_core::SecretString;
