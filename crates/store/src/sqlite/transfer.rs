//! Exports and imports; the tables, shapes and statements are [`crate::transfer`]'s.

use super::SqliteStore;
use crate::transfer;
use crate::{ExportKind, ExportRecord, ImportCounts, Result, TransferStore};
use async_trait::async_trait;

#[async_trait]
impl TransferStore for SqliteStore {
    async fn export_page(
        &self,
        kind: ExportKind,
        after: Option<String>,
        limit: u32,
    ) -> Result<(Vec<ExportRecord>, Option<String>)> {
        transfer::export_page(self, kind, after, limit).await
    }

    async fn import(&self, records: Vec<ExportRecord>) -> Result<ImportCounts> {
        transfer::import_plain(self, transfer::import_plan(records)?).await
    }
}
