//! The grantkeeper server as a library.
//!
//! Owns: configuration ([`config`]), the assembled [`App`], the operations ([`ops`]: sign-in,
//! sessions, users, hand-outs, security events, API keys), the mapping of their failures to
//! HTTP answers ([`error`]), the thin axum routers on top ([`http`]), the writing of counted
//! activity to the store ([`metrics`]), and the data keys: loading, reloading, rotating and
//! retiring them ([`vault`]); and the background tasks, started and stopped in one place
//! ([`workers`]), among them the broker's retrier of the revocations at the provider that did
//! not get through.
//!
//! Another Rust service can embed it: build [`App::new`] (inside a Tokio runtime) and mount
//! [`http::router`], or call the operations directly: [`ops::sign_in`], [`ops::hand_out`],
//! [`ops::delete_user`], [`ops::disconnect`], [`ops::receive_security_event`],
//! [`ops::authenticate`]. Each does all that its route does (audit row, session, metrics), so
//! both ways in leave the same trace. Building the app starts the same
//! background work as `grantkeeper serve` (audit writer, activity, queued revocations, webhook
//! delivery, keyring reload, session purge, and on PostgreSQL the drops listener);
//! [`App::start_keepalive`] adds keep-alive. Before exiting, once the last request is served,
//! call [`App::shutdown`]: it writes what is held in memory and waits a bounded time
//! ([`workers::STOP_WAIT`]) for every task, returning which did not finish:
//!
//! ```no_run
//! # async fn embed(
//! #     settings: grantkeeper_server::Settings,
//! #     store: grantkeeper_store::SharedStore,
//! #     master_key: std::sync::Arc<dyn grantkeeper_core::MasterKeySource>,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! use grantkeeper_server::App;
//! let app = App::new(settings, store, master_key, grantkeeper_core::SystemClock::shared()).await?;
//! app.start_keepalive();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! // The peer address feeds the per-IP sign-in limit.
//! let router = grantkeeper_server::http::router(app.clone());
//! axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>())
//!     .with_graceful_shutdown(async { let _ = tokio::signal::ctrl_c().await; })
//!     .await?;
//! let stopped = app.shutdown().await;
//! assert!(stopped.unfinished.is_empty(), "{:?} did not finish", stopped.unfinished);
//! # Ok(())
//! # }
//! ```
//!
//! Leaves to others: the provider protocol and ID-token checks (grantkeeper-provider),
//! persistence (grantkeeper-store), sealing (grantkeeper-core's vault), and the Google emulator,
//! which this crate never links.
// Indexing that may panic is refused outside tests (`get`, patterns, `split_at_checked`); not in
// [workspace.lints], which would reach the helpers of the integration tests too.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

pub mod apikeys;
pub mod app;
pub mod audit;
pub mod config;
pub mod drops;
pub mod error;
pub mod http;
pub mod keepalive;
pub mod limits;
pub mod master_key;
pub mod metrics;
pub mod ops;
pub mod session;
pub mod vault;
pub mod webhook;
pub mod workers;

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
pub use ops::Platform;
