//! The hand-out: a fresh access token of a user for an app service, from the broker's cache
//! when one is good enough, audited under the service's key.

use crate::app::App;
use crate::ops::api_keys::Caller;
use crate::ops::broker_code;
use grantkeeper_broker::{AccessToken, BrokerError, TokenRequest};
use std::sync::Arc;

/// Hands `caller` an access token of `sub` covering `request`'s scopes for at least its
/// `min_ttl`, refreshing at Google when the held one will not do. Audited as `token` under the
/// caller's key id (detail: the scopes asked for; outcome `ok` or the error's code); a success
/// is counted in the metrics.
pub async fn hand_out(
    app: &App,
    caller: &Caller,
    sub: &str,
    request: &TokenRequest,
) -> Result<Arc<AccessToken>, BrokerError> {
    let result = app.broker().access_token(sub, request).await;
    let detail = request
        .scopes
        .as_ref()
        .map(|s| s.to_string())
        .unwrap_or_default();
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => broker_code(e),
    };
    app.audit()
        .record(caller.key_id(), Some(sub), "token", detail, outcome)
        .await;
    if result.is_ok() {
        app.metrics().token_handout();
    }
    result
}
