//! Delivers grant state changes to the configured webhook, at least once.
//!
//! The events are committed with the state change they describe (the store's outbox); this
//! task posts each as JSON, signed with HMAC-SHA256 over `"{timestamp}.{body}"` in
//! `X-Grantkeeper-Signature: t=<unix seconds>,v1=<hex>`, with the event's id in
//! `X-Grantkeeper-Event-Id` for de-duplication. A receiver that does not answer 2xx is tried
//! again with exponential backoff (1 s doubling to 1 h, with jitter).

use crate::config::WebhookSettings;
use crate::workers::{StopSignal, stopped, stopping};
use aws_lc_rs::hmac;
use grantkeeper_core::{Backoff, ExposeSecret, Jitter, SharedClock};
use grantkeeper_store::{GrantEvent, OutboxStore};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use time::format_description::well_known::Rfc3339;

/// The JSON body of one event.
pub fn event_body(event: &GrantEvent) -> String {
    json!({
        "id": format!("evt_{}", event.id),
        "type": "grant.state_changed",
        "sub": event.sub,
        "from": event.from.map(|s| s.as_str()),
        "to": event.to.as_str(),
        "reason": event.reason,
        "at": event.at.format(&Rfc3339).unwrap_or_default(),
    })
    .to_string()
}

/// The signature header value for `body` at `timestamp`.
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, format!("{timestamp}.{body}").as_bytes());
    format!("t={timestamp},v1={}", hex::encode(tag.as_ref()))
}

/// The wait before the next delivery of an event that failed `attempts` times: 1 s doubling
/// to an hour, plus up to a quarter more at random.
fn backoff(attempts: u32) -> Duration {
    let backoff = Backoff {
        first: Duration::from_secs(1),
        longest: Duration::from_secs(3600),
        jitter: Jitter::UpToAQuarterMore,
    };
    backoff.delay(attempts, grantkeeper_core::random::u64())
}

/// Most passes over the due events when stopping (a store that cannot record a delivery would
/// otherwise keep the events due).
const LAST_PASSES: usize = 10;

/// Delivers the events of the outbox to the configured webhook, in the background
/// ([`crate::workers`]).
pub struct Deliverer {
    pub store: Arc<dyn OutboxStore>,
    pub settings: WebhookSettings,
    pub http: reqwest::Client,
    pub clock: SharedClock,
}

impl Deliverer {
    /// Delivers due events until told to stop; then delivers those due at that time and ends.
    pub async fn run(self, mut stop: StopSignal) {
        let Deliverer {
            store,
            settings,
            http,
            clock,
        } = self;
        loop {
            if deliver_due(&store, &settings, &http, &clock).await > 0 {
                if stopping(&stop) {
                    break;
                }
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
                () = stopped(&mut stop) => break,
            }
        }
        for _ in 0..LAST_PASSES {
            if deliver_due(&store, &settings, &http, &clock).await == 0 {
                return;
            }
        }
    }
}

/// Delivers what is due now; returns how many events were attempted.
pub async fn deliver_due(
    store: &Arc<dyn OutboxStore>,
    settings: &WebhookSettings,
    http: &reqwest::Client,
    clock: &SharedClock,
) -> usize {
    let due = match store.due_events(clock.now(), 100).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "webhook: cannot read pending events");
            return 0;
        }
    };
    let n = due.len();
    for pending in due {
        let body = event_body(&pending.event);
        let now = clock.unix();
        let result = http
            .post(settings.url.clone())
            .header("content-type", "application/json")
            .header(
                "x-grantkeeper-event-id",
                format!("evt_{}", pending.event.id),
            )
            .header(
                "x-grantkeeper-signature",
                signature(settings.secret.expose_secret(), now, &body),
            )
            .timeout(Duration::from_secs(10))
            .body(body)
            .send()
            .await;
        let ok = matches!(&result, Ok(r) if r.status().is_success());
        let outcome = if ok {
            store.mark_delivered(pending.event.id, clock.now()).await
        } else {
            let status = result
                .map(|r| r.status().as_u16().to_string())
                .unwrap_or_else(|e| {
                    if e.is_timeout() {
                        "timeout".to_owned()
                    } else {
                        "unreachable".to_owned()
                    }
                });
            let next = clock.now() + backoff(pending.attempts + 1);
            tracing::warn!(event = pending.event.id, %status, attempts = pending.attempts + 1, "webhook delivery failed; will retry");
            store.mark_failed(pending.event.id, next).await
        };
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "webhook: cannot record the delivery");
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_over_timestamp_and_body() {
        // RFC 4231 test case 2 shape: known key and message.
        let sig = signature("Jefe", 0, "what do ya want for nothing?");
        assert!(sig.starts_with("t=0,v1="));
        assert_ne!(sig, signature("Jefe", 1, "what do ya want for nothing?"));
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        let expected = hex::encode(hmac::sign(&key, b"0.what do ya want for nothing?").as_ref());
        assert_eq!(sig, format!("t=0,v1={expected}"));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) >= Duration::from_secs(2));
        assert!(backoff(30) <= Duration::from_secs(3600 + 901));
    }
}
