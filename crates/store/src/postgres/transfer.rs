//! Exports and imports; the tables, shapes and statements are [`crate::transfer`]'s.

use super::{PgResult, PostgresStore, retrying};
use crate::transfer::{self, ROWS_PER_INSERT, Rows};
use crate::{ExportKind, ExportRecord, ImportCounts, Result, TransferStore};
use async_trait::async_trait;
use sqlx::{Postgres, QueryBuilder};

#[async_trait]
impl TransferStore for PostgresStore {
    async fn export_page(
        &self,
        kind: ExportKind,
        after: Option<String>,
        limit: u32,
    ) -> Result<(Vec<ExportRecord>, Option<String>)> {
        transfer::export_page(self, kind, after, limit).await
    }

    async fn import(&self, records: Vec<ExportRecord>) -> Result<ImportCounts> {
        let plan = transfer::import_plan(records)?;
        if plan.is_empty() {
            return Ok(ImportCounts::default());
        }
        retrying(|| self.import_once(&plan)).await
    }
}

impl PostgresStore {
    async fn import_once(&self, plan: &[Rows]) -> PgResult<ImportCounts> {
        let mut counts = ImportCounts::default();
        let mut tx = self.begin().await?;
        sqlx::query(transfer::IMPORT_UNDER_WAY)
            .execute(&mut *tx)
            .await?;
        for rows in plan {
            let table = rows.table;
            if table.sequence {
                // No row may take an id from the sequence while imported ids go in and the
                // sequence moves past them: writers of this table wait for the commit (readers
                // do not). The lock conflicts with itself, so two imports take turns too.
                QueryBuilder::<Postgres>::new(format!(
                    "LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE",
                    table.name
                ))
                .build()
                .execute(&mut *tx)
                .await?;
            }
            for chunk in rows.rows.chunks(ROWS_PER_INSERT) {
                let (sql, args) = transfer::insert(table, chunk, table.sequence);
                let done = super::bound(&sql.into(), &args)
                    // An import runs once in a while: not worth a place in the statement cache.
                    .persistent(false)
                    .execute(&mut *tx)
                    .await?;
                let inserted = done.rows_affected();
                counts.inserted += inserted;
                counts.present += (chunk.len() as u64).saturating_sub(inserted);
            }
            if let (Some(key), Some(max_id)) = (table.sequence_key(), rows.max_id) {
                // Past the largest imported id, never back: a sequence that is further on
                // (rows since deleted) keeps its place, so no id is ever given twice. setval is
                // not undone by a rollback: an import that fails after it leaves the sequence
                // further on, which skips ids and repeats none.
                let mut setval = QueryBuilder::<Postgres>::new("SELECT setval(s.seq, ");
                setval
                    .push_bind(max_id)
                    .push(format!(
                        ") FROM (SELECT pg_get_serial_sequence('{}', '{}')::regclass AS seq) AS s
                          WHERE ",
                        table.name, key
                    ))
                    .push_bind(max_id)
                    .push(" > COALESCE(pg_sequence_last_value(s.seq), 0)");
                setval.build().execute(&mut *tx).await?;
            }
        }
        sqlx::query(transfer::IMPORT_DONE).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(counts)
    }
}
