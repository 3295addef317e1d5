//! Cross-Account Protection: received security events, sign-in blocks, subject lookups.

use super::{PostgresStore, map_pg, retrying};
use crate::Result;
use crate::risc::{self, MAX_SUBJECT_MATCHES, RiscStore, SignInBlock, TokenLookup};
use crate::rows::{Columns, unix};
use async_trait::async_trait;
use time::OffsetDateTime;

#[async_trait]
impl RiscStore for PostgresStore {
    async fn record_security_event(
        &self,
        jti: &str,
        event: &str,
        at: OffsetDateTime,
    ) -> Result<bool> {
        // Two instances receiving the same event at once: the primary key lets one insert win.
        retrying(|| async {
            let done = sqlx::query(
                "INSERT INTO risc_events (jti, event, received_at) VALUES ($1, $2, $3)
                 ON CONFLICT (jti) DO NOTHING",
            )
            .bind(jti)
            .bind(event)
            .bind(unix(at))
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    async fn forget_security_event(&self, jti: &str) -> Result<bool> {
        retrying(|| async {
            let done = sqlx::query("DELETE FROM risc_events WHERE jti = $1")
                .bind(jti)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    async fn prune_security_events(&self, before: OffsetDateTime) -> Result<u64> {
        retrying(|| async {
            let done = sqlx::query("DELETE FROM risc_events WHERE received_at < $1")
                .bind(unix(before))
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected())
        })
        .await
    }

    async fn block_sign_in(&self, block: SignInBlock) -> Result<()> {
        retrying(|| async {
            sqlx::query(
                "INSERT INTO sign_in_blocks (sub, reason, blocked_at) VALUES ($1, $2, $3)
                 ON CONFLICT (sub) DO UPDATE
                    SET reason = excluded.reason, blocked_at = excluded.blocked_at",
            )
            .bind(&block.sub)
            .bind(&block.reason)
            .bind(unix(block.blocked_at))
            .execute(&self.pool)
            .await?;
            Ok(())
        })
        .await
    }

    async fn lift_sign_in_block(&self, sub: &str) -> Result<bool> {
        retrying(|| async {
            let done = sqlx::query("DELETE FROM sign_in_blocks WHERE sub = $1")
                .bind(sub)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    async fn sign_in_block(&self, sub: &str) -> Result<Option<SignInBlock>> {
        let row = sqlx::query("SELECT sub, reason, blocked_at FROM sign_in_blocks WHERE sub = $1")
            .bind(sub)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_pg)?;
        row.as_ref().map(risc::block).transpose()
    }

    async fn subs_by_email(&self, email: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT sub FROM users WHERE email = $1 AND email_verified ORDER BY sub LIMIT $2",
        )
        .bind(email)
        .bind(i64::from(MAX_SUBJECT_MATCHES))
        .fetch_all(&self.pool)
        .await
        .map_err(map_pg)?;
        rows.iter().map(|r| r.text("sub")).collect()
    }

    async fn subs_by_refresh_token(&self, lookup: &TokenLookup) -> Result<Vec<String>> {
        let (sql, value) = match lookup {
            TokenLookup::Hash(hash) => (
                "SELECT sub FROM grants WHERE rt_hash = $1 ORDER BY sub LIMIT $2",
                hash,
            ),
            TokenLookup::PrefixHash(hash) => (
                "SELECT sub FROM grants WHERE rt_prefix_hash = $1 ORDER BY sub LIMIT $2",
                hash,
            ),
        };
        let rows = sqlx::query(sql)
            .bind(value)
            .bind(i64::from(MAX_SUBJECT_MATCHES))
            .fetch_all(&self.pool)
            .await
            .map_err(map_pg)?;
        rows.iter().map(|r| r.text("sub")).collect()
    }
}
