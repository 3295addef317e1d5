//! Users, grants and the grant history.

use super::statements::SELECT_USER_AND_GRANT;
use super::{SqliteStore, map_sqlx};
use crate::merge::{StateChange, merge_sign_in};
use crate::rows::{self, unix};
use crate::{
    GrantEvent, GrantRecord, Result, SignIn, SignInOutcome, StoreError, UserRecord, UserStore,
};
use async_trait::async_trait;
use sqlx::SqliteConnection;
use time::OffsetDateTime;

#[async_trait]
impl UserStore for SqliteStore {
    async fn record_sign_in(&self, sign_in: SignIn) -> Result<SignInOutcome> {
        // The write lock is held from the first read, so a concurrent sign-in of the same user
        // (here or in another process) merges into what this one commits, not beside it.
        self.group
            .write(move |conn| Box::pin(async move { sign_in_in(conn, sign_in).await }))
            .await
    }

    async fn user(&self, sub: &str) -> Result<Option<(UserRecord, GrantRecord)>> {
        let mut conn = self.read.acquire().await.map_err(map_sqlx)?;
        match read_user_and_grant(&mut conn, sub).await? {
            None => Ok(None),
            Some((user, Some(grant))) => Ok(Some((user, grant))),
            // Sign-in writes both rows in one transaction; nothing else creates users.
            Some((_, None)) => Err(StoreError::Corrupt("a user has no grant row".into())),
        }
    }

    async fn grant_events(&self, sub: &str) -> Result<Vec<GrantEvent>> {
        let rows = sqlx::query(
            "SELECT id, sub, from_state, to_state, reason, at
               FROM grant_events WHERE sub = ?1 ORDER BY id",
        )
        .bind(sub)
        .fetch_all(&self.read)
        .await
        .map_err(map_sqlx)?;
        rows.iter().map(rows::grant_event).collect()
    }
}

async fn read_user_and_grant(
    conn: &mut SqliteConnection,
    sub: &str,
) -> Result<Option<(UserRecord, Option<GrantRecord>)>> {
    let row = sqlx::query(SELECT_USER_AND_GRANT)
        .bind(sub)
        .fetch_optional(conn)
        .await
        .map_err(map_sqlx)?;
    row.as_ref().map(rows::user_and_grant).transpose()
}

async fn upsert_user(conn: &mut SqliteConnection, sign_in: &SignIn) -> Result<()> {
    let p = &sign_in.profile;
    let at = unix(sign_in.at);
    sqlx::query(
        "INSERT INTO users (sub, email, email_verified, name, picture, given_name, family_name,
                            locale, hd, created_at, updated_at, last_sign_in_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?10)
         ON CONFLICT (sub) DO UPDATE SET
             email = excluded.email,
             email_verified = excluded.email_verified,
             name = excluded.name,
             picture = excluded.picture,
             given_name = excluded.given_name,
             family_name = excluded.family_name,
             locale = excluded.locale,
             hd = excluded.hd,
             updated_at = excluded.updated_at,
             last_sign_in_at = excluded.last_sign_in_at",
    )
    .bind(&p.sub)
    .bind(&p.email)
    .bind(p.email_verified)
    .bind(&p.name)
    .bind(&p.picture)
    .bind(&p.given_name)
    .bind(&p.family_name)
    .bind(&p.locale)
    .bind(&p.hd)
    .bind(at)
    .execute(conn)
    .await
    .map_err(map_sqlx)?;
    Ok(())
}

/// Inserts the grant, or updates it if it still has `held_version` (the fence).
pub(super) async fn write_grant(
    conn: &mut SqliteConnection,
    grant: &GrantRecord,
    held_version: Option<i64>,
) -> Result<()> {
    let sql = match held_version {
        None => {
            "INSERT INTO grants (sub, state, scopes, refresh_token, rt_hash, rt_prefix_hash,
                                 refresh_token_received_at, access_token,
                                 access_token_expires_at, reason, state_changed_at, updated_at,
                                 last_refresh_at, last_error, version)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
        }
        Some(_) => {
            "UPDATE grants SET
                 state = ?2, scopes = ?3, refresh_token = ?4, rt_hash = ?5,
                 rt_prefix_hash = ?6, refresh_token_received_at = ?7, access_token = ?8,
                 access_token_expires_at = ?9, reason = ?10, state_changed_at = ?11,
                 updated_at = ?12, last_refresh_at = ?13, last_error = ?14, version = ?15
             WHERE sub = ?1 AND version = ?16"
        }
    };
    let rt = grant.refresh_token.as_ref();
    let at = grant.access_token.as_ref();
    let query = sqlx::query(sql)
        .bind(&grant.sub)
        .bind(grant.state.as_str())
        .bind(grant.scopes.to_string())
        .bind(rt.map(|t| t.sealed.as_slice()))
        .bind(rt.map(|t| t.fingerprint.hash.as_str()))
        .bind(rt.map(|t| t.fingerprint.prefix_hash.as_str()))
        .bind(grant.refresh_token_received_at.map(unix))
        .bind(at.map(|t| t.sealed.as_slice()))
        .bind(at.map(|t| unix(t.expires_at)))
        .bind(grant.reason.as_deref())
        .bind(unix(grant.state_changed_at))
        .bind(unix(grant.updated_at))
        .bind(grant.last_refresh_at.map(unix))
        .bind(grant.last_error.as_deref())
        .bind(grant.version);
    let query = match held_version {
        Some(version) => query.bind(version),
        None => query,
    };
    let done = query.execute(conn).await.map_err(map_sqlx)?;
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(StoreError::Conflict)
    }
}

/// Appends the event of a state change, in the transaction that writes the change. The row is
/// also the webhook's outbox entry, due at once.
pub(super) async fn append_event(
    conn: &mut SqliteConnection,
    sub: &str,
    change: &StateChange,
    at: OffsetDateTime,
) -> Result<GrantEvent> {
    let row = sqlx::query(
        "INSERT INTO grant_events (sub, from_state, to_state, reason, at, next_attempt_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5)
         RETURNING id, sub, from_state, to_state, reason, at",
    )
    .bind(sub)
    .bind(change.from.map(|s| s.as_str()))
    .bind(change.to.as_str())
    .bind(change.reason.as_str())
    .bind(unix(at))
    .fetch_one(conn)
    .await
    .map_err(map_sqlx)?;
    rows::grant_event(&row)
}

/// A sign-in's write, within the caller's transaction.
async fn sign_in_in(conn: &mut SqliteConnection, sign_in: SignIn) -> Result<SignInOutcome> {
    let sub = sign_in.profile.sub.as_str();
    let held = read_user_and_grant(conn, sub).await?;
    let created = held.is_none();
    let held_grant = held.and_then(|(_, grant)| grant);
    let held_version = held_grant.as_ref().map(|g| g.version);

    upsert_user(conn, &sign_in).await?;
    let merged = merge_sign_in(held_grant, &sign_in);
    write_grant(conn, &merged.grant, held_version).await?;
    let event = match &merged.change {
        Some(change) => Some(append_event(conn, sub, change, sign_in.at).await?),
        None => None,
    };

    // Answer with what the database holds, as it will be read later.
    let (user, grant) = match read_user_and_grant(conn, sub).await? {
        Some((user, Some(grant))) => (user, grant),
        _ => {
            return Err(StoreError::Corrupt(
                "the grant just written could not be read back".into(),
            ));
        }
    };
    Ok(SignInOutcome {
        user,
        grant,
        created,
        event,
    })
}
