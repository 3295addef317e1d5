//! Exports and imports; the tables, shapes and statements are [`crate::transfer`]'s.

use super::{SqliteStore, map_sqlx};
use crate::transfer::{self, ROWS_PER_INSERT};
use crate::{ExportKind, ExportRecord, ImportCounts, Result, TransferStore, page_limit};
use async_trait::async_trait;
use sqlx::Sqlite;

#[async_trait]
impl TransferStore for SqliteStore {
    async fn export_page(
        &self,
        kind: ExportKind,
        after: Option<String>,
        limit: u32,
    ) -> Result<(Vec<ExportRecord>, Option<String>)> {
        let table = transfer::table(kind);
        let limit = page_limit(limit);
        let mut query = transfer::select_page::<Sqlite>(table, after, i64::from(limit) + 1)?;
        let found = query
            .build()
            .fetch_all(&self.read)
            .await
            .map_err(map_sqlx)?;
        let records = found
            .iter()
            .map(|row| transfer::export_row(table, row))
            .collect::<Result<Vec<_>>>()?;
        Ok(transfer::page(table, records, limit))
    }

    async fn import(&self, records: Vec<ExportRecord>) -> Result<ImportCounts> {
        let plan = transfer::import_plan(records)?;
        let mut counts = ImportCounts::default();
        if plan.is_empty() {
            return Ok(counts);
        }
        // One transaction for the call. AUTOINCREMENT keeps the largest id ever inserted,
        // imported ones too, so later events and audit rows are numbered after them.
        let mut tx = self.begin_write().await?;
        sqlx::query(transfer::IMPORT_UNDER_WAY)
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        for rows in &plan {
            for chunk in rows.rows.chunks(ROWS_PER_INSERT) {
                let done = transfer::insert::<Sqlite>(rows.table, chunk, false)
                    .build()
                    // An import runs once in a while: not worth a place in the statement cache.
                    .persistent(false)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_sqlx)?;
                let inserted = done.rows_affected();
                counts.inserted += inserted;
                counts.present += (chunk.len() as u64).saturating_sub(inserted);
            }
        }
        sqlx::query(transfer::IMPORT_DONE)
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        tx.commit().await.map_err(map_sqlx)?;
        Ok(counts)
    }
}
