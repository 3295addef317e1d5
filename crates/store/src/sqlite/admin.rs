//! The admin console's sessions and user search.

use super::{SqliteStore, map_sqlx};
use crate::admin::{self, contains_pattern};
use crate::rows::{self, unix};
use crate::{
    AdminSessionRecord, AdminSessionStore, ApiKeyRecord, Result, UserPage, UserSearch,
    UserSearchStore, page_limit, user_page,
};
use async_trait::async_trait;
use sqlx::{QueryBuilder, Sqlite};
use time::OffsetDateTime;

#[async_trait]
impl AdminSessionStore for SqliteStore {
    async fn create_admin_session(&self, session: AdminSessionRecord) -> Result<()> {
        // An unknown key fails the foreign key, which the error mapping calls NotFound.
        sqlx::query(
            "INSERT INTO admin_sessions (id_hash, key_id, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(&session.id_hash)
        .bind(&session.key_id)
        .bind(unix(session.created_at))
        .bind(unix(session.expires_at))
        .execute(&self.write)
        .await
        .map_err(map_sqlx)?;
        Ok(())
    }

    async fn admin_session(
        &self,
        id_hash: &str,
        now: OffsetDateTime,
    ) -> Result<Option<(AdminSessionRecord, ApiKeyRecord)>> {
        let row = sqlx::query(
            "SELECT s.id_hash, s.key_id, s.created_at AS session_created_at, s.expires_at,
                    k.id, k.name, k.hash, k.scopes, k.created_at, k.revoked_at
               FROM admin_sessions s JOIN api_keys k ON k.id = s.key_id
              WHERE s.id_hash = ?1 AND s.expires_at > ?2",
        )
        .bind(id_hash)
        .bind(unix(now))
        .fetch_optional(&self.read)
        .await
        .map_err(map_sqlx)?;
        row.as_ref().map(admin::session_with_key).transpose()
    }

    async fn delete_admin_session(&self, id_hash: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM admin_sessions WHERE id_hash = ?1")
            .bind(id_hash)
            .execute(&self.write)
            .await
            .map_err(map_sqlx)?;
        Ok(done.rows_affected() > 0)
    }

    async fn purge_expired_admin_sessions(&self, now: OffsetDateTime) -> Result<u64> {
        let done = sqlx::query("DELETE FROM admin_sessions WHERE expires_at <= ?1")
            .bind(unix(now))
            .execute(&self.write)
            .await
            .map_err(map_sqlx)?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl UserSearchStore for SqliteStore {
    async fn search_users(&self, search: &UserSearch) -> Result<UserPage> {
        let limit = page_limit(search.limit);
        // Only the conditions given are written, so that an unfiltered page walks the primary
        // key exactly as `list_users` does.
        let mut query = QueryBuilder::<Sqlite>::new(concat!(
            user_and_grant_columns!(),
            " FROM users u JOIN grants g ON g.sub = u.sub WHERE 1 = 1"
        ));
        if let Some(text) = &search.text {
            // lower() folds ASCII letters only, as the pattern is folded.
            query
                .push(" AND (lower(u.email) LIKE ")
                .push_bind(contains_pattern(text))
                .push(" ESCAPE '\\' OR substr(u.sub, 1, length(")
                .push_bind(text.clone())
                .push(")) = ")
                .push_bind(text.clone())
                .push(")");
        }
        if let Some(state) = search.state {
            query.push(" AND g.state = ").push_bind(state.as_str());
        }
        if let Some(after) = &search.after {
            query.push(" AND u.sub > ").push_bind(after.clone());
        }
        query
            .push(" ORDER BY u.sub LIMIT ")
            .push_bind(i64::from(limit) + 1);
        let found = query
            .build()
            .fetch_all(&self.read)
            .await
            .map_err(map_sqlx)?;
        let users = found
            .iter()
            .map(rows::user_with_grant)
            .collect::<Result<Vec<_>>>()?;
        Ok(user_page(users, limit))
    }
}
