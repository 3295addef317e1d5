//! The grantkeeper server as a library.
//!
//! Owns: configuration ([`config`]), the assembled [`App`] with its operations (sign-in,
//! sessions), the mapping of failures to HTTP answers ([`error`]), the axum routers
//! ([`http`]), the writing of counted activity to the store ([`metrics`]), and the data keys:
//! loading them and keeping them current in a running server ([`keys`]), and rotating them
//! ([`rotation`]); and retrying the revocations at the provider that did not get through
//! ([`revocations`]). Another Rust service can embed it: build [`App::new`] and mount
//! [`http::router`], or call [`App::sign_in`] directly.
//!
//! Leaves to others: the provider protocol and ID-token checks (grantkeeper-provider),
//! persistence (grantkeeper-store), sealing (grantkeeper-core's vault), and the Google emulator,
//! which this crate never links.

pub mod apikeys;
pub mod app;
pub mod audit;
pub mod config;
pub mod error;
pub mod http;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod revocations;
pub mod risc;
pub mod rotation;
pub mod session;
pub mod signin;
pub mod webhook;

pub use app::App;
pub use config::Settings;
pub use error::ApiError;
pub use signin::Platform;
