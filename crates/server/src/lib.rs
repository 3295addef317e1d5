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
pub mod drops;
pub mod error;
pub mod http;
pub mod keepalive;
pub mod keys;
pub mod limits;
pub mod master_key;
pub mod metrics;
pub mod revocations;
pub mod rewrap;
pub mod risc;
pub mod rotation;
pub mod session;
pub mod signin;
pub mod webhook;

#[doc(hidden)]
pub mod fuzzing {
    //! Entry points for the fuzz targets under `fuzz/`; not part of the library's interface.
    //! The configuration parsers are public already ([`crate::config::parse_config`],
    //! [`crate::config::parse_client_secret`]).

    use crate::{ApiError, Platform};
    use grantkeeper_core::SecretString;

    /// The content types `POST /authcode` reads a body as.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum AuthcodeBody {
        /// `application/octet-stream` or `text/plain`: the code itself.
        Raw,
        /// `application/x-www-form-urlencoded`: `authCode=` or `code=`, and `platform=`.
        Form,
        /// `application/json`: `{"code", "platform"}`.
        Json,
    }

    /// The code and platform of an `/authcode` body, as the handler reads them; the platform
    /// in the query string, if any, wins over the body's.
    pub fn parse_authcode(
        kind: AuthcodeBody,
        body: &[u8],
        query_platform: Option<String>,
    ) -> Result<(SecretString, Platform), ApiError> {
        // Defined next to the handler, in a module the router keeps private.
        kind.parse(body, query_platform)
    }
}

pub use app::App;
pub use config::Settings;
pub use error::ApiError;
pub use signin::Platform;
