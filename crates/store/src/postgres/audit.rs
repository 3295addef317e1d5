//! The audit trail: appended in batches by the server's background writer, read newest first.

use super::{PostgresStore, map_pg, retrying};
use crate::rows::{self, unix};
use crate::{AuditFilter, AuditRecord, AuditStore, Result, page_limit};
use async_trait::async_trait;
use sqlx::{Postgres, QueryBuilder};

#[async_trait]
impl AuditStore for PostgresStore {
    async fn append_audit(&self, records: Vec<AuditRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        // The batch travels as one array per column into one statement, prepared once per
        // connection whatever the batch's size: one round trip and one commit for the batch.
        // WITH ORDINALITY keeps the batch's order in the ids it is given.
        let at: Vec<i64> = records.iter().map(|r| unix(r.at)).collect();
        let actor: Vec<&str> = records.iter().map(|r| r.actor.as_str()).collect();
        let sub: Vec<Option<&str>> = records.iter().map(|r| r.sub.as_deref()).collect();
        let action: Vec<&str> = records.iter().map(|r| r.action.as_str()).collect();
        let detail: Vec<&str> = records.iter().map(|r| r.detail.as_str()).collect();
        let outcome: Vec<&str> = records.iter().map(|r| r.outcome.as_str()).collect();
        let times: Vec<i64> = records.iter().map(|r| i64::from(r.times.max(1))).collect();
        let last_at: Vec<i64> = records.iter().map(|r| unix(r.last_at.max(r.at))).collect();
        retrying(|| async {
            sqlx::query(
                "INSERT INTO audit (at, actor, sub, action, detail, outcome, times, last_at)
                 SELECT at, actor, sub, action, detail, outcome, times, last_at
                   FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
                               $6::TEXT[], $7::BIGINT[], $8::BIGINT[])
                        WITH ORDINALITY
                        AS batch (at, actor, sub, action, detail, outcome, times, last_at, n)
                  ORDER BY n",
            )
            .bind(&at)
            .bind(&actor)
            .bind(&sub)
            .bind(&action)
            .bind(&detail)
            .bind(&outcome)
            .bind(&times)
            .bind(&last_at)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
        .await
    }

    async fn audit(&self, filter: AuditFilter) -> Result<Vec<AuditRecord>> {
        // Only the filters given become conditions, so that the planner can pick the index
        // that fits (sub, id) or (at) instead of scanning past `x IS NULL OR` guards.
        let mut query = QueryBuilder::<Postgres>::new(
            "SELECT id, at, actor, sub, action, detail, outcome, times, last_at FROM audit WHERE TRUE",
        );
        if let Some(sub) = filter.sub {
            query.push(" AND sub = ").push_bind(sub);
        }
        if let Some(since) = filter.since {
            query.push(" AND at >= ").push_bind(unix(since));
        }
        if let Some(before_id) = filter.before_id {
            query.push(" AND id < ").push_bind(before_id);
        }
        query
            .push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(page_limit(filter.limit)));
        let found = query.build().fetch_all(&self.pool).await.map_err(map_pg)?;
        found.iter().map(rows::audit).collect()
    }
}
