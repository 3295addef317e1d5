//! The capabilities made of single statements, implemented once for every backend over its
//! [`Engine`]: sessions, API keys, the console's sessions and search, the audit trail, the
//! webhook outbox, Cross-Account Protection's records and activity; and the
//! single statements of the revocation queue. The statements are written once, with `$N`
//! placeholders, in SQL that both SQLite and PostgreSQL read alike.

use crate::admin::{self, AdminSessionRecord, AdminSessionStore, UserSearch, UserSearchStore};
use crate::revocations::{self, PendingRevocation, RevocationQueueStore};
use crate::risc::{self, MAX_SUBJECT_MATCHES, RiscStore, SignInBlock, TokenLookup};
use crate::rows;
use crate::sql::{Arg, Engine, Units, first};
use crate::statements::{
    LEASE_REFRESH, RELEASE_LEASE, SELECT_GRANT, SELECT_USER_AND_GRANT, SELECT_USERS_AFTER,
    SELECT_USERS_FIRST,
};
use crate::{
    ActivityPoint, ActivityStore, ApiKeyRecord, ApiKeyStore, AuditFilter, AuditRecord, AuditStore,
    DataKeyRecord, GrantEvent, GrantRecord, GrantStore, KeyStore, OutboxStore, PendingEvent,
    RefreshLeaseStore, RefreshSuccess, Result, SessionRecord, SessionStore, SignIn, SignInOutcome,
    SignInRecorded, StateUpdate, StoreError, UserPage, UserRecord, UserStore, activity, page_limit,
    user_page,
};
use async_trait::async_trait;
use grantkeeper_core::GrantState;
use time::OffsetDateTime;

/// Most rows per INSERT of [`AuditStore::append_audit`]: 1,024 bound values, far below either
/// backend's limit. A power of two: see [`audit_chunks`].
const AUDIT_ROWS_PER_INSERT: usize = 128;

/// The sizes of the INSERTs that write `rows` audit rows: as many of the largest as fit, then
/// the powers of two that make up the rest, largest first (100 rows: 64, 32 and 4). A statement
/// of each size is prepared once per connection and then found in its cache; one text per batch
/// size would be parsed afresh at nearly every write, and SQLite's parse of numbered parameters
/// grows with the square of their number.
fn audit_chunks(rows: usize) -> impl Iterator<Item = usize> {
    let full = rows / AUDIT_ROWS_PER_INSERT;
    let rest = rows % AUDIT_ROWS_PER_INSERT;
    let powers = (0..AUDIT_ROWS_PER_INSERT.trailing_zeros())
        .rev()
        .map(|bit| 1 << bit)
        .filter(move |size| rest & size != 0);
    std::iter::repeat_n(AUDIT_ROWS_PER_INSERT, full).chain(powers)
}

fn count(n: i64, what: &str) -> Result<u64> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("the {what} count is negative")))
}

fn found(rows_affected: u64) -> Result<()> {
    if rows_affected == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

#[async_trait]
impl<E: Engine> SessionStore for E {
    async fn create_session(&self, session: SessionRecord) -> Result<()> {
        // An unknown user fails the foreign key, which the error mapping calls NotFound.
        self.execute(INSERT_SESSION.into(), session_args(&session))
            .await
            .map(drop)
    }

    async fn session(&self, id_hash: &str, now: OffsetDateTime) -> Result<Option<SessionRecord>> {
        let sql = "SELECT id_hash, sub, created_at, expires_at
                     FROM sessions WHERE id_hash = $1 AND expires_at > $2";
        let found = self
            .read_rows(sql.into(), args![id_hash, now], rows::session)
            .await?;
        Ok(first(found))
    }

    async fn delete_session(&self, id_hash: &str) -> Result<bool> {
        let sql = "DELETE FROM sessions WHERE id_hash = $1";
        Ok(self.execute(sql.into(), args![id_hash]).await? > 0)
    }

    async fn delete_user_sessions(&self, sub: &str) -> Result<u64> {
        self.execute("DELETE FROM sessions WHERE sub = $1".into(), args![sub])
            .await
    }

    async fn purge_expired_sessions(&self, now: OffsetDateTime) -> Result<u64> {
        let sql = "DELETE FROM sessions WHERE expires_at <= $1";
        self.execute(sql.into(), args![now]).await
    }
}

/// The sign-in block of `$1` (`risc::block`'s columns).
pub(crate) const SELECT_SIGN_IN_BLOCK: &str =
    "SELECT sub, reason, blocked_at FROM sign_in_blocks WHERE sub = $1";

/// Inserts a session (`session_args`).
pub(crate) const INSERT_SESSION: &str =
    "INSERT INTO sessions (id_hash, sub, created_at, expires_at) VALUES ($1, $2, $3, $4)";

pub(crate) fn session_args(session: &SessionRecord) -> Vec<Arg> {
    args![
        session.id_hash.as_str(),
        session.sub.as_str(),
        session.created_at,
        session.expires_at
    ]
}

const API_KEY_COLUMNS: &str = "SELECT id, name, hash, scopes, created_at, revoked_at FROM api_keys";

#[async_trait]
impl<E: Engine> ApiKeyStore for E {
    async fn create_api_key(&self, key: ApiKeyRecord) -> Result<()> {
        // A taken id or hash fails a unique index, which the error mapping calls AlreadyExists.
        // Capabilities are single words, kept in the order given.
        let sql = "INSERT INTO api_keys (id, name, hash, scopes, created_at, revoked_at)
                   VALUES ($1, $2, $3, $4, $5, $6)";
        let args = args![
            key.id,
            key.name,
            key.hash,
            key.scopes.join(" "),
            key.created_at,
            key.revoked_at
        ];
        self.execute(sql.into(), args).await.map(drop)
    }

    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>> {
        let sql = format!("{API_KEY_COLUMNS} WHERE hash = $1");
        let found = self
            .read_rows(sql.into(), args![hash], rows::api_key)
            .await?;
        Ok(first(found))
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        // The insertion order breaks ties between keys created in the same second.
        let sql = format!(
            "{API_KEY_COLUMNS} ORDER BY created_at, {}",
            E::API_KEY_INSERTION_ORDER
        );
        self.read_rows(sql.into(), Vec::new(), rows::api_key).await
    }

    async fn revoke_api_key(&self, id: &str, at: OffsetDateTime) -> Result<bool> {
        // A revoked key keeps the time it was first revoked.
        let sql = "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL";
        Ok(self.execute(sql.into(), args![id, at]).await? > 0)
    }
}

#[async_trait]
impl<E: Engine> AdminSessionStore for E {
    async fn create_admin_session(&self, session: AdminSessionRecord) -> Result<()> {
        // An unknown key fails the foreign key, which the error mapping calls NotFound.
        let sql = "INSERT INTO admin_sessions (id_hash, key_id, created_at, expires_at)
                   VALUES ($1, $2, $3, $4)";
        let args = args![
            session.id_hash,
            session.key_id,
            session.created_at,
            session.expires_at
        ];
        self.execute(sql.into(), args).await.map(drop)
    }

    async fn admin_session(
        &self,
        id_hash: &str,
        now: OffsetDateTime,
    ) -> Result<Option<(AdminSessionRecord, ApiKeyRecord)>> {
        let sql = "SELECT s.id_hash, s.key_id, s.created_at AS session_created_at, s.expires_at,
                          k.id, k.name, k.hash, k.scopes, k.created_at, k.revoked_at
                     FROM admin_sessions s JOIN api_keys k ON k.id = s.key_id
                    WHERE s.id_hash = $1 AND s.expires_at > $2";
        let found = self
            .read_rows(sql.into(), args![id_hash, now], admin::session_with_key)
            .await?;
        Ok(first(found))
    }

    async fn delete_admin_session(&self, id_hash: &str) -> Result<bool> {
        let sql = "DELETE FROM admin_sessions WHERE id_hash = $1";
        Ok(self.execute(sql.into(), args![id_hash]).await? > 0)
    }

    async fn purge_expired_admin_sessions(&self, now: OffsetDateTime) -> Result<u64> {
        let sql = "DELETE FROM admin_sessions WHERE expires_at <= $1";
        self.execute(sql.into(), args![now]).await
    }
}

#[async_trait]
impl<E: Engine> UserSearchStore for E {
    async fn search_users(&self, search: &UserSearch) -> Result<UserPage> {
        let limit = page_limit(search.limit);
        // Only the conditions given are written, so that an unfiltered page walks the primary
        // key exactly as `list_users` does.
        let mut sql = String::from(concat!(
            user_and_grant_columns!(),
            " FROM users u JOIN grants g ON g.sub = u.sub WHERE TRUE"
        ));
        let mut args = Vec::new();
        let mut bind = |sql: &mut String, arg: Arg| {
            args.push(arg);
            sql.push_str(&format!("${}", args.len()));
        };
        if let Some(text) = &search.text {
            // ASCII letters folded, as the pattern is folded.
            sql.push_str(&format!(" AND ({} LIKE ", E::ASCII_LOWER_EMAIL));
            bind(&mut sql, Arg::from(admin::contains_pattern(text)));
            sql.push_str(" ESCAPE '\\' OR substr(u.sub, 1, length(");
            bind(&mut sql, Arg::from(text.as_str()));
            sql.push_str(")) = ");
            bind(&mut sql, Arg::from(text.as_str()));
            sql.push(')');
        }
        if let Some(state) = search.state {
            sql.push_str(" AND g.state = ");
            bind(&mut sql, Arg::from(state.as_str()));
        }
        if let Some(after) = &search.after {
            sql.push_str(" AND u.sub > ");
            bind(&mut sql, Arg::from(after.as_str()));
        }
        sql.push_str(" ORDER BY u.sub LIMIT ");
        bind(&mut sql, Arg::from(i64::from(limit) + 1));
        let users = self
            .read_rows(sql.into(), args, rows::user_with_grant)
            .await?;
        Ok(user_page(users, limit))
    }
}

#[async_trait]
impl<E: Engine> AuditStore for E {
    async fn append_audit(&self, records: Vec<AuditRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        // One transaction for the batch (one commit, one flush), and as few statements as the
        // batch allows.
        let mut rest = records.as_slice();
        let statements = audit_chunks(records.len())
            .filter_map(|size| {
                let (chunk, after) = rest.split_at_checked(size)?;
                rest = after;
                Some(chunk)
            })
            .map(|chunk| {
                let mut sql = String::from(
                    "INSERT INTO audit (at, actor, sub, action, detail, outcome, times, last_at)
                     VALUES ",
                );
                let mut args = Vec::with_capacity(chunk.len() * 8);
                for (i, record) in chunk.iter().enumerate() {
                    let n = i * 8;
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    let holes: Vec<String> = (1..=8).map(|k| format!("${}", n + k)).collect();
                    sql.push_str(&format!("({})", holes.join(", ")));
                    args.extend(args![
                        record.at,
                        record.actor.as_str(),
                        record.sub.as_deref(),
                        record.action.as_str(),
                        record.detail.as_str(),
                        record.outcome.as_str(),
                        i64::from(record.times.max(1)),
                        record.last_at.max(record.at)
                    ]);
                }
                (sql.into(), args)
            })
            .collect();
        self.execute_all(statements).await.map(drop)
    }

    async fn audit(&self, filter: AuditFilter) -> Result<Vec<AuditRecord>> {
        // Only the filters given become conditions, so that the database can pick the index
        // that fits (sub, id) or (at) instead of scanning past `x IS NULL OR` guards.
        let mut sql = String::from(
            "SELECT id, at, actor, sub, action, detail, outcome, times, last_at FROM audit WHERE TRUE",
        );
        let mut args = Vec::new();
        if let Some(sub) = filter.sub {
            args.push(Arg::from(sub));
            sql.push_str(&format!(" AND sub = ${}", args.len()));
        }
        if let Some(since) = filter.since {
            args.push(Arg::from(since));
            sql.push_str(&format!(" AND at >= ${}", args.len()));
        }
        if let Some(before_id) = filter.before_id {
            args.push(Arg::from(before_id));
            sql.push_str(&format!(" AND id < ${}", args.len()));
        }
        args.push(Arg::from(i64::from(page_limit(filter.limit))));
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", args.len()));
        self.read_rows(sql.into(), args, rows::audit).await
    }
}

#[async_trait]
impl<E: Engine> OutboxStore for E {
    async fn due_events(&self, now: OffsetDateTime, limit: u32) -> Result<Vec<PendingEvent>> {
        // The partial index grant_events_due holds only undelivered rows, by due time.
        let sql = "SELECT id, sub, from_state, to_state, reason, at, attempts, next_attempt_at
                     FROM grant_events
                    WHERE delivered_at IS NULL AND next_attempt_at <= $1
                    ORDER BY id LIMIT $2";
        let args = args![now, i64::from(limit)];
        self.read_rows(sql.into(), args, rows::pending_event).await
    }

    async fn mark_delivered(&self, event_id: i64, at: OffsetDateTime) -> Result<()> {
        // Marking twice keeps the first delivery's time. An unknown id is NotFound.
        let sql = "UPDATE grant_events SET delivered_at = COALESCE(delivered_at, $2) WHERE id = $1";
        found(self.execute(sql.into(), args![event_id, at]).await?)
    }

    async fn mark_failed(&self, event_id: i64, next_attempt_at: OffsetDateTime) -> Result<()> {
        // A late failure report of an event already delivered (a duplicate attempt) changes
        // nothing. An unknown id is NotFound.
        let sql = "UPDATE grant_events
                      SET attempts = attempts + CASE WHEN delivered_at IS NULL THEN 1 ELSE 0 END,
                          next_attempt_at =
                              CASE WHEN delivered_at IS NULL THEN $2 ELSE next_attempt_at END
                    WHERE id = $1";
        found(
            self.execute(sql.into(), args![event_id, next_attempt_at])
                .await?,
        )
    }
}

#[async_trait]
impl<E: Engine> RiscStore for E {
    async fn record_security_event(
        &self,
        jti: &str,
        event: &str,
        at: OffsetDateTime,
    ) -> Result<bool> {
        let sql = "INSERT INTO risc_events (jti, event, received_at) VALUES ($1, $2, $3)
                   ON CONFLICT (jti) DO NOTHING";
        Ok(self.execute(sql.into(), args![jti, event, at]).await? > 0)
    }

    async fn forget_security_event(&self, jti: &str) -> Result<bool> {
        let sql = "DELETE FROM risc_events WHERE jti = $1";
        Ok(self.execute(sql.into(), args![jti]).await? > 0)
    }

    async fn prune_security_events(&self, before: OffsetDateTime) -> Result<u64> {
        let sql = "DELETE FROM risc_events WHERE received_at < $1";
        self.execute(sql.into(), args![before]).await
    }

    async fn block_sign_in(&self, block: SignInBlock) -> Result<()> {
        let sql = "INSERT INTO sign_in_blocks (sub, reason, blocked_at) VALUES ($1, $2, $3)
                   ON CONFLICT (sub) DO UPDATE
                      SET reason = excluded.reason, blocked_at = excluded.blocked_at";
        let args = args![block.sub, block.reason, block.blocked_at];
        self.execute(sql.into(), args).await.map(drop)
    }

    async fn lift_sign_in_block(&self, sub: &str) -> Result<bool> {
        let sql = "DELETE FROM sign_in_blocks WHERE sub = $1";
        Ok(self.execute(sql.into(), args![sub]).await? > 0)
    }

    async fn sign_in_block(&self, sub: &str) -> Result<Option<SignInBlock>> {
        Ok(first(
            self.read_rows(SELECT_SIGN_IN_BLOCK.into(), args![sub], risc::block)
                .await?,
        ))
    }

    async fn subs_by_email(&self, email: &str) -> Result<Vec<String>> {
        // An unverified email proves nothing of who holds the address.
        let sql = "SELECT sub FROM users WHERE email = $1 AND email_verified ORDER BY sub LIMIT $2";
        let args = args![email, MAX_SUBJECT_MATCHES];
        self.read_rows(sql.into(), args, |r| r.text("sub")).await
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
        let args = args![value, MAX_SUBJECT_MATCHES];
        self.read_rows(sql.into(), args, |r| r.text("sub")).await
    }
}

#[async_trait]
impl<E: Engine> ActivityStore for E {
    async fn add_activity(&self, points: Vec<ActivityPoint>) -> Result<()> {
        let rows = activity::rows_of(points);
        if rows.is_empty() {
            return Ok(());
        }
        // One transaction for the batch: a flush that fails leaves nothing half-added for the
        // caller to add again. Rows in key order, so concurrent writers lock them in one order.
        let sql = "INSERT INTO activity AS a (minute, series, count, total_ms, max_ms)
                   VALUES ($1, $2, $3, $4, $5)
                   ON CONFLICT (minute, series) DO UPDATE
                      SET count = a.count + excluded.count,
                          total_ms = a.total_ms + excluded.total_ms,
                          max_ms = CASE WHEN a.max_ms > excluded.max_ms
                                        THEN a.max_ms ELSE excluded.max_ms END";
        let statements = rows
            .into_iter()
            .map(|row| {
                let args = args![row.minute, row.series, row.count, row.total_ms, row.max_ms];
                (sql.into(), args)
            })
            .collect();
        self.execute_all(statements).await.map(drop)
    }

    async fn activity(
        &self,
        since: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<Vec<ActivityPoint>> {
        let sql = "SELECT minute, series, count, total_ms, max_ms FROM activity
                    WHERE minute >= $1 AND minute < $2
                    ORDER BY minute, series";
        let args = args![since, until];
        self.read_rows(sql.into(), args, activity::point).await
    }

    async fn prune_activity(&self, before: OffsetDateTime) -> Result<u64> {
        let sql = "DELETE FROM activity WHERE minute < $1";
        self.execute(sql.into(), args![before]).await
    }
}

/// Queues a revocation (`queue_args`).
pub(crate) const INSERT_REVOCATION: &str = "INSERT INTO pending_revocations
         (id, sub, token, token_kind, created_at, attempts, next_attempt_at, last_error)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

pub(crate) fn queue_args(r: &PendingRevocation) -> Vec<Arg> {
    args![
        r.id.as_str(),
        r.sub.as_str(),
        r.token.as_slice(),
        r.token_kind.as_str(),
        r.created_at,
        r.attempts,
        r.next_attempt_at,
        r.last_error.as_deref()
    ]
}

#[async_trait]
impl<E: Units> RevocationQueueStore for E {
    async fn enqueue_revocation(&self, revocation: PendingRevocation) -> Result<()> {
        self.execute(INSERT_REVOCATION.into(), queue_args(&revocation))
            .await
            .map(drop)
    }

    async fn enqueue_revocation_with_state(
        &self,
        revocation: PendingRevocation,
        update: StateUpdate,
    ) -> Result<(GrantRecord, Option<GrantEvent>)> {
        self.queue_with_state(revocation, update).await
    }

    async fn due_revocations(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<PendingRevocation>> {
        let sql = "SELECT id, sub, token, token_kind, created_at, attempts, next_attempt_at,
                          last_error
                     FROM pending_revocations
                    WHERE next_attempt_at <= $1
                    ORDER BY next_attempt_at, id LIMIT $2";
        let args = args![now, page_limit(limit)];
        self.read_rows(sql.into(), args, revocations::pending_revocation)
            .await
    }

    async fn mark_revocation_failed(
        &self,
        id: &str,
        next_attempt_at: OffsetDateTime,
        error: &str,
    ) -> Result<()> {
        let sql = "UPDATE pending_revocations
                      SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3
                    WHERE id = $1";
        found(
            self.execute(sql.into(), args![id, next_attempt_at, error])
                .await?,
        )
    }

    async fn delete_revocation(&self, id: &str) -> Result<bool> {
        let sql = "DELETE FROM pending_revocations WHERE id = $1";
        Ok(self.execute(sql.into(), args![id]).await? > 0)
    }

    async fn count_revocations(&self) -> Result<u64> {
        let sql = "SELECT COUNT(*) AS n FROM pending_revocations";
        let found = self
            .read_rows(sql.into(), Vec::new(), |r| r.int("n"))
            .await?;
        count(first(found).unwrap_or(0), "revocation")
    }
}

#[async_trait]
impl<E: Units> UserStore for E {
    async fn record_sign_in(&self, sign_in: SignIn) -> Result<SignInOutcome> {
        match self.sign_in(sign_in, false).await? {
            SignInRecorded::Recorded(outcome) => Ok(outcome),
            // Not asked for: a backend that answers it is wrong, and wrote nothing.
            SignInRecorded::Blocked(_) => Err(StoreError::Database(
                "a sign-in not checked for a block was answered as blocked".into(),
            )),
        }
    }

    async fn record_sign_in_unless_blocked(&self, sign_in: SignIn) -> Result<SignInRecorded> {
        self.sign_in(sign_in, true).await
    }

    async fn user(&self, sub: &str) -> Result<Option<(UserRecord, GrantRecord)>> {
        let found = self
            .read_rows(
                SELECT_USER_AND_GRANT.into(),
                args![sub],
                rows::user_with_grant,
            )
            .await?;
        Ok(first(found))
    }

    async fn grant_events(&self, sub: &str) -> Result<Vec<GrantEvent>> {
        let sql = "SELECT id, sub, from_state, to_state, reason, at
                     FROM grant_events WHERE sub = $1 ORDER BY id";
        self.read_rows(sql.into(), args![sub], rows::grant_event)
            .await
    }
}

#[async_trait]
impl<E: Units> GrantStore for E {
    async fn grant(&self, sub: &str) -> Result<Option<GrantRecord>> {
        let found = self
            .read_rows(SELECT_GRANT.into(), args![sub], rows::grant_alone)
            .await?;
        Ok(first(found))
    }

    async fn record_refresh(
        &self,
        sub: &str,
        expected_version: i64,
        refresh: RefreshSuccess,
    ) -> Result<GrantRecord> {
        self.refresh(sub, expected_version, refresh, None).await
    }

    async fn update_grant_state(
        &self,
        sub: &str,
        expected_version: Option<i64>,
        update: StateUpdate,
    ) -> Result<(GrantRecord, Option<GrantEvent>)> {
        self.change_state(sub, expected_version, update).await
    }

    async fn list_users(&self, after: Option<&str>, limit: u32) -> Result<UserPage> {
        let limit = page_limit(limit);
        let fetch = i64::from(limit) + 1;
        let (sql, args) = match after {
            None => (SELECT_USERS_FIRST, args![fetch]),
            Some(after) => (SELECT_USERS_AFTER, args![fetch, after]),
        };
        let users = self
            .read_rows(sql.into(), args, rows::user_with_grant)
            .await?;
        Ok(user_page(users, limit))
    }

    async fn delete_user(&self, sub: &str) -> Result<bool> {
        // The foreign keys cascade to the grant, its events (undelivered ones too) and the
        // sessions, all in this statement's transaction. Audit rows name the user without a
        // foreign key: they are history and stay.
        let sql = "DELETE FROM users WHERE sub = $1";
        Ok(self.execute(sql.into(), args![sub]).await? > 0)
    }

    async fn count_users(&self) -> Result<u64> {
        crate::counts::users(self).await
    }

    async fn count_grants_by_state(&self) -> Result<Vec<(GrantState, u64)>> {
        crate::counts::grants_by_state(self).await
    }
}

#[async_trait]
impl<E: Units> RefreshLeaseStore for E {
    async fn try_lease_refresh(
        &self,
        sub: &str,
        owner: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool> {
        // One statement, so one decision: instances racing for a grant nobody holds queue on
        // the key; the first inserts, the others then see its lease, unexpired and not theirs.
        // An unknown user fails the foreign key, which the error mapping calls NotFound. The
        // grant's row is not written, so its version does not move.
        let args = args![sub, owner, until, now];
        Ok(self.lease_statement(LEASE_REFRESH, args).await? == 1)
    }

    async fn try_lease_refresh_reading(
        &self,
        sub: &str,
        owner: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Option<GrantRecord>> {
        self.lease_reading(args![sub, owner, until, now]).await
    }

    async fn release_refresh_lease(&self, sub: &str, owner: &str) -> Result<()> {
        // Another owner's lease (this one's ran out and was taken) stays.
        self.lease_statement(RELEASE_LEASE, args![sub, owner])
            .await
            .map(drop)
    }

    async fn record_refresh_releasing(
        &self,
        sub: &str,
        expected_version: i64,
        refresh: RefreshSuccess,
        owner: &str,
    ) -> Result<GrantRecord> {
        self.refresh(sub, expected_version, refresh, Some(owner))
            .await
    }
}

/// Retired keys are left out: they seal nothing, and no vault loads them again.
pub(crate) const SELECT_KEYS: &str =
    "SELECT id, wrapped, created_at, active, wrapped_by FROM data_keys WHERE retired_at IS NULL
      ORDER BY id";

#[async_trait]
impl<E: Engine> KeyStore for E {
    async fn data_keys(&self) -> Result<Vec<DataKeyRecord>> {
        self.read_rows(SELECT_KEYS.into(), Vec::new(), rows::data_key)
            .await
    }

    async fn ensure_data_key(&self, candidate: DataKeyRecord) -> Result<Vec<DataKeyRecord>> {
        // Instances starting together all try. One that finds no active key inserts its
        // candidate; another's insert of an active key (or of the same id) under way makes
        // this one wait for it (the write lock, or the unique indexes) and then insert nothing.
        // The read that follows sees whatever committed meanwhile: the winner's key.
        let sql = "INSERT INTO data_keys (id, wrapped, created_at, active, wrapped_by)
                   SELECT $3, $1, $2, TRUE, $4
                    WHERE NOT EXISTS (SELECT 1 FROM data_keys WHERE active)
                   ON CONFLICT DO NOTHING";
        let args = args![
            candidate.wrapped,
            candidate.created_at,
            candidate.id,
            candidate.wrapped_by
        ];
        self.execute(sql.into(), args).await?;
        self.write_rows(SELECT_KEYS.into(), Vec::new(), rows::data_key)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::{AUDIT_ROWS_PER_INSERT, audit_chunks};

    #[test]
    fn audit_batches_are_written_in_few_sizes() {
        let sizes = |rows| audit_chunks(rows).collect::<Vec<_>>();
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(1), [1]);
        assert_eq!(sizes(100), [64, 32, 4]);
        assert_eq!(sizes(128), [128]);
        assert_eq!(sizes(300), [128, 128, 32, 8, 4]);
        let mut seen = std::collections::BTreeSet::new();
        for rows in 0..=1000 {
            let chunks = sizes(rows);
            assert_eq!(chunks.iter().sum::<usize>(), rows, "{rows}");
            assert!(chunks.iter().all(|&n| n <= AUDIT_ROWS_PER_INSERT));
            seen.extend(chunks);
        }
        // One statement text per power of two up to the largest: eight in all.
        assert_eq!(seen.len(), 8);
    }
}
