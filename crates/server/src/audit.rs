//! The audit log: who did what for which user, written off the request path.
//!
//! Handlers hand rows to a bounded channel; one task writes them in batches (one transaction
//! per batch), so that a token hand-out does not wait for a disk write. When the channel is
//! full, handlers wait: rows are never dropped.

use grantkeeper_core::SharedClock;
use grantkeeper_store::{AuditRecord, SharedStore};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

const CHANNEL: usize = 16_384;
const BATCH: usize = 512;

enum Message {
    Row(AuditRecord),
    Flush(oneshot::Sender<()>),
}

/// A handle for appending audit rows.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Message>,
    clock: SharedClock,
}

impl AuditLog {
    /// Starts the writer task.
    pub fn start(store: SharedStore, clock: SharedClock) -> AuditLog {
        let (tx, rx) = mpsc::channel(CHANNEL);
        tokio::spawn(writer(store, rx));
        AuditLog { tx, clock }
    }

    /// Appends a row (`id` and `at` are filled in).
    pub async fn record(
        &self,
        actor: &str,
        sub: Option<&str>,
        action: &str,
        detail: String,
        outcome: &str,
    ) {
        let row = AuditRecord {
            id: 0,
            at: self.clock.now(),
            actor: actor.to_owned(),
            sub: sub.map(str::to_owned),
            action: action.to_owned(),
            detail,
            outcome: outcome.to_owned(),
        };
        if self.tx.send(Message::Row(row)).await.is_err() {
            tracing::error!("the audit writer has stopped; a row was not written");
        }
    }

    /// Waits until every row appended before this call is written.
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Message::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    }
}

async fn writer(store: SharedStore, mut rx: mpsc::Receiver<Message>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut acks = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Row(row) => batch.push(row),
                Message::Flush(ack) => acks.push(ack),
            }
            if batch.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let rows = std::mem::take(&mut batch);
            let mut attempt = 0;
            loop {
                match store.append_audit(rows.clone()).await {
                    Ok(()) => break,
                    Err(e) if attempt < 5 => {
                        attempt += 1;
                        tracing::warn!(error = %e, attempt, "audit write failed; retrying");
                        tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, rows = rows.len(), "audit rows could not be written");
                        break;
                    }
                }
            }
        }
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    }
}
