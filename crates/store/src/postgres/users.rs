//! Users, grants and the grant history.

use super::statements::{
    INSERT_GRANT, INSERT_USER, SELECT_GRANT_FOR_UPDATE, SELECT_USER_AND_GRANT, UPDATE_GRANT,
    UPDATE_USER,
};
use super::{PgResult, PostgresStore, map_pg, retrying};
use crate::merge::{StateChange, merge_sign_in};
use crate::rows::{self, unix};
use crate::{
    GrantEvent, GrantRecord, Result, SignIn, SignInOutcome, StoreError, UserRecord, UserStore,
};
use async_trait::async_trait;
use sqlx::PgConnection;
use time::OffsetDateTime;

/// How often a sign-in tries to create or update its user before giving up: a second round
/// is needed only when the user was deleted between the two statements.
const UPSERT_ROUNDS: u32 = 3;

#[async_trait]
impl UserStore for PostgresStore {
    async fn record_sign_in(&self, sign_in: SignIn) -> Result<SignInOutcome> {
        retrying(|| self.sign_in_once(&sign_in)).await
    }

    async fn user(&self, sub: &str) -> Result<Option<(UserRecord, GrantRecord)>> {
        let row = sqlx::query(SELECT_USER_AND_GRANT)
            .bind(sub)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_pg)?;
        row.as_ref().map(rows::user_with_grant).transpose()
    }

    async fn grant_events(&self, sub: &str) -> Result<Vec<GrantEvent>> {
        let found = sqlx::query(
            "SELECT id, sub, from_state, to_state, reason, at
               FROM grant_events WHERE sub = $1 ORDER BY id",
        )
        .bind(sub)
        .fetch_all(&self.pool)
        .await
        .map_err(map_pg)?;
        found.iter().map(rows::grant_event).collect()
    }
}

impl PostgresStore {
    async fn sign_in_once(&self, sign_in: &SignIn) -> PgResult<SignInOutcome> {
        let sub = sign_in.profile.sub.as_str();
        let mut tx = self.begin().await?;
        // The user row, inserted or updated, stays locked until commit: a concurrent sign-in
        // of the same user (here or in another process) waits here, then merges into what
        // this one commits, not beside it.
        let (user, created) = upsert_user(&mut tx, sign_in).await?;
        let held = lock_grant(&mut tx, sub).await?;
        let held_version = held.as_ref().map(|g| g.version);
        let merged = merge_sign_in(held, sign_in);
        let grant = write_grant(&mut tx, &merged.grant, held_version).await?;
        let event = match &merged.change {
            Some(change) => Some(append_event(&mut tx, sub, change, sign_in.at).await?),
            None => None,
        };
        tx.commit().await?;
        // Answered with what the statements returned: the rows as the database holds them.
        Ok(SignInOutcome {
            user,
            grant,
            created,
            event,
        })
    }
}

/// Creates the user or replaces their profile; true when created.
async fn upsert_user(conn: &mut PgConnection, sign_in: &SignIn) -> PgResult<(UserRecord, bool)> {
    let p = &sign_in.profile;
    let at = unix(sign_in.at);
    for _ in 0..UPSERT_ROUNDS {
        for (sql, created) in [(INSERT_USER, true), (UPDATE_USER, false)] {
            let row = sqlx::query(sql)
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
                .fetch_optional(&mut *conn)
                .await?;
            if let Some(row) = row {
                return Ok((rows::user(&row)?, created));
            }
        }
    }
    Err(StoreError::Unavailable("the user kept being deleted during sign-in".into()).into())
}

/// The grant, locked for this transaction.
pub(super) async fn lock_grant(
    conn: &mut PgConnection,
    sub: &str,
) -> PgResult<Option<GrantRecord>> {
    let row = sqlx::query(SELECT_GRANT_FOR_UPDATE)
        .bind(sub)
        .fetch_optional(conn)
        .await?;
    Ok(row.as_ref().map(rows::grant_alone).transpose()?)
}

/// Inserts the grant, or updates it if it still has `held_version` (the fence), and returns the
/// row as written.
pub(super) async fn write_grant(
    conn: &mut PgConnection,
    grant: &GrantRecord,
    held_version: Option<i64>,
) -> PgResult<GrantRecord> {
    let rt = grant.refresh_token.as_ref();
    let at = grant.access_token.as_ref();
    let query = sqlx::query(match held_version {
        None => INSERT_GRANT,
        Some(_) => UPDATE_GRANT,
    })
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
    match query.fetch_optional(conn).await? {
        Some(row) => Ok(rows::grant_alone(&row)?),
        None => Err(StoreError::Conflict.into()),
    }
}

/// Appends the event of a state change, in the transaction that writes the change. The row is
/// also the webhook's outbox entry, due at once.
pub(super) async fn append_event(
    conn: &mut PgConnection,
    sub: &str,
    change: &StateChange,
    at: OffsetDateTime,
) -> PgResult<GrantEvent> {
    let row = sqlx::query(
        "INSERT INTO grant_events (sub, from_state, to_state, reason, at, next_attempt_at)
         VALUES ($1, $2, $3, $4, $5, $5)
         RETURNING id, sub, from_state, to_state, reason, at",
    )
    .bind(sub)
    .bind(change.from.map(|s| s.as_str()))
    .bind(change.to.as_str())
    .bind(change.reason.as_str())
    .bind(unix(at))
    .fetch_one(conn)
    .await?;
    Ok(rows::grant_event(&row)?)
}
