//! Sessions, kept by the hash of their secret.

use super::{SqliteStore, map_sqlx};
use crate::rows::{self, unix};
use crate::{Result, SessionRecord, SessionStore};
use async_trait::async_trait;
use time::OffsetDateTime;

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create_session(&self, session: SessionRecord) -> Result<()> {
        // An unknown user fails the foreign key, which the error mapping calls NotFound. Every
        // sign-in makes one: committed with the other sign-ins' writes.
        self.group
            .write(move |conn| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO sessions (id_hash, sub, created_at, expires_at)
                         VALUES (?1, ?2, ?3, ?4)",
                    )
                    .bind(&session.id_hash)
                    .bind(&session.sub)
                    .bind(unix(session.created_at))
                    .bind(unix(session.expires_at))
                    .execute(conn)
                    .await
                    .map_err(map_sqlx)?;
                    Ok(())
                })
            })
            .await
    }

    async fn session(&self, id_hash: &str, now: OffsetDateTime) -> Result<Option<SessionRecord>> {
        let row = sqlx::query(
            "SELECT id_hash, sub, created_at, expires_at
               FROM sessions WHERE id_hash = ?1 AND expires_at > ?2",
        )
        .bind(id_hash)
        .bind(unix(now))
        .fetch_optional(&self.read)
        .await
        .map_err(map_sqlx)?;
        row.as_ref().map(rows::session).transpose()
    }

    async fn delete_session(&self, id_hash: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM sessions WHERE id_hash = ?1")
            .bind(id_hash)
            .execute(&self.write)
            .await
            .map_err(map_sqlx)?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_user_sessions(&self, sub: &str) -> Result<u64> {
        let done = sqlx::query("DELETE FROM sessions WHERE sub = ?1")
            .bind(sub)
            .execute(&self.write)
            .await
            .map_err(map_sqlx)?;
        Ok(done.rows_affected())
    }

    async fn purge_expired_sessions(&self, now: OffsetDateTime) -> Result<u64> {
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= ?1")
            .bind(unix(now))
            .execute(&self.write)
            .await
            .map_err(map_sqlx)?;
        Ok(done.rows_affected())
    }
}
