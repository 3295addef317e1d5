//! The server's operations: one function per thing grantkeeper does for someone, taking domain
//! inputs and doing all of its work (store, provider, broker, audit row, metrics, session).
//!
//! A Rust service that embeds the server calls these and gets exactly what the HTTP route
//! gives: the routes in [`crate::http`] only read the request, call one operation here and
//! write its answer (through [`crate::error`], the one map from these errors to the contract's
//! error bodies). Nothing here knows of headers, cookies or status codes.
//!
//! | family | operations |
//! |---|---|
//! | [`sign_in`](mod@sign_in) | a one-time code in: the user, grant and session recorded, audited |
//! | [`sessions`] | who a session is, ending one, opening one |
//! | [`users`] | reading users, deleting one (`DELETE /v1/users/{sub}`), the user's own disconnect |
//! | [`tokens`] | handing out an access token to an app service (`POST /v1/users/{sub}/token`) |
//! | [`security_events`] | acting on a verified Cross-Account Protection event (`POST /risc`) |
//! | [`api_keys`] | authenticating an app service's key for a scope; creating keys |
//!
//! Each family has its own error enum. Their [`code`](sign_in::SignInError::code)s are the
//! contract's error codes, which audit rows and metrics record as outcomes.
//!
//! Leaves to others: parsing requests, cookies, CSRF checks and rate limits (the HTTP layer's
//! protections against its clients), and the Google protocol (grantkeeper-provider).

pub mod api_keys;
pub mod security_events;
pub mod sessions;
pub mod sign_in;
pub mod tokens;
pub mod users;

pub use api_keys::{Caller, KeyError, authenticate};
pub use security_events::{EventError, Receipt, receive_security_event};
pub use sessions::{NewSession, SessionError};
pub use sign_in::{Platform, SignInError, SignInRequest, SignedIn, sign_in};
pub use tokens::hand_out;
pub use users::{UserError, delete_user, disconnect};

use grantkeeper_broker::BrokerError;
use grantkeeper_core::VaultError;
use grantkeeper_store::StoreError;

/// The contract's error code of a store failure.
pub(crate) fn store_code(e: &StoreError) -> &'static str {
    match e {
        StoreError::NotFound => "not_found",
        StoreError::Unavailable(_) | StoreError::InactiveKey => "upstream_unavailable",
        _ => "internal_error",
    }
}

/// The contract's error code of a vault failure while sealing or opening.
pub(crate) fn vault_code(e: &VaultError) -> &'static str {
    match e {
        VaultError::KeyringStale => "upstream_unavailable",
        _ => "internal_error",
    }
}

/// The contract's error code of a broker failure (a hand-out, a revocation).
pub(crate) fn broker_code(e: &BrokerError) -> &'static str {
    match e {
        BrokerError::UnknownUser => "not_found",
        BrokerError::ScopeNotGranted { .. } => "scope_not_granted",
        BrokerError::NeedsConsent | BrokerError::Revoked { .. } => "grant_revoked",
        BrokerError::Unavailable { .. } | BrokerError::KeysUnavailable => "upstream_unavailable",
        BrokerError::Misconfigured { .. } => "upstream_error",
        BrokerError::Store(e) => store_code(e),
        BrokerError::Vault(_) => "internal_error",
    }
}
