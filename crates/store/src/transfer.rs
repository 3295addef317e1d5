//! Exports and imports, for every backend: which table each [`ExportKind`] is, its columns and
//! how each travels as JSON, and the statements that page through a table and insert rows into
//! it. Both schemas give each column the same name and a type that decodes to the same Rust
//! value, and both compare keys in byte order, so both backends cut the same pages of the same
//! rows in the same shape: an export of one imports into the other. The backends only run the
//! statements, inside their own transactions.
//!
//! A row travels as a JSON object of every column of its table but the backend's own
//! bookkeeping (PostgreSQL's `api_keys.seq`): times and other integers as numbers, booleans as
//! booleans, sealed values and wrapped keys as standard base64, NULL as null. A row that does
//! not fit its table is refused naming the column, never quoting the value. A row without a
//! column that may be NULL is read as NULL there: an export made before a migration added a
//! nullable column (`data_keys.retired_at`, `data_keys.wrapped_by`) still imports, and so does one without a column added
//! with a default (`audit.times`, 1). An export made before a kind was exported (the revocation
//! queue, sign-in blocks, security events, activity) imports as it is: none of the other kinds
//! refers to those rows.
//!
//! What is not exported is transient, remade or given up without loss by a new store: sessions
//! of users and of operators (everyone signs in again), refresh leases (they end by themselves)
//! and jobs (a sweep starts afresh).

use crate::rows::Columns;
use crate::sql::{Arg, Engine};
use crate::{ExportKind, ExportRecord, ImportCounts, Result, StoreError, page_limit};
use ColumnType::{Bool, Bytes, Int, OptBytes, OptInt, OptText, Text};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

/// Turns off, for the import's own transaction, the rule that sealed values name the active
/// data key (migration 0011): an export holds values as they were, some under keys a rotation
/// had not retired yet. [`IMPORT_DONE`] ends it before the commit, so no other writer sees it.
pub(crate) const IMPORT_UNDER_WAY: &str = "INSERT INTO imports_under_way (id) VALUES (1)";
pub(crate) const IMPORT_DONE: &str = "DELETE FROM imports_under_way";

/// How a column's values travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ColumnType {
    Text,
    OptText,
    Int,
    OptInt,
    Bool,
    Bytes,
    OptBytes,
}

pub(crate) struct Column {
    pub name: &'static str,
    pub ty: ColumnType,
    /// What a row that lacks this column (an export made before the migration that added it)
    /// holds there, for a column that is not nullable.
    pub default: Option<i64>,
}

const fn column(name: &'static str, ty: ColumnType) -> Column {
    Column {
        name,
        ty,
        default: None,
    }
}

const fn int_or(name: &'static str, default: i64) -> Column {
    Column {
        name,
        ty: Int,
        default: Some(default),
    }
}

/// The table of one kind of record.
pub(crate) struct Table {
    pub kind: ExportKind,
    pub name: &'static str,
    /// The columns a row is known by (its primary key), in the order pages are cut by: `sub`,
    /// `id`, or activity's `minute, series`. Each is an `Int` or a `Text` column (compared as
    /// bytes).
    pub key: &'static [&'static str],
    /// The store assigns the key, a single `id`, from a sequence (PostgreSQL: an identity column,
    /// which an import must override and then move past what it wrote; SQLite's AUTOINCREMENT
    /// follows inserted ids by itself).
    pub sequence: bool,
    pub columns: &'static [Column],
}

const DATA_KEYS: Table = Table {
    kind: ExportKind::DataKey,
    name: "data_keys",
    key: &["id"],
    // PostgreSQL's data key ids are chosen by the vault, not by a sequence.
    sequence: false,
    columns: &[
        column("id", Int),
        column("wrapped", Bytes),
        column("created_at", Int),
        column("active", Bool),
        column("retired_at", OptInt),
        column("wrapped_by", OptText),
    ],
};

const USERS: Table = Table {
    kind: ExportKind::User,
    name: "users",
    key: &["sub"],
    sequence: false,
    columns: &[
        column("sub", Text),
        column("email", OptText),
        column("email_verified", Bool),
        column("name", OptText),
        column("picture", OptText),
        column("given_name", OptText),
        column("family_name", OptText),
        column("locale", OptText),
        column("hd", OptText),
        column("created_at", Int),
        column("updated_at", Int),
        column("last_sign_in_at", OptInt),
    ],
};

const GRANTS: Table = Table {
    kind: ExportKind::Grant,
    name: "grants",
    key: &["sub"],
    sequence: false,
    columns: &[
        column("sub", Text),
        column("state", Text),
        column("scopes", Text),
        column("refresh_token", OptBytes),
        column("rt_hash", OptText),
        column("rt_prefix_hash", OptText),
        column("refresh_token_received_at", OptInt),
        column("access_token", OptBytes),
        column("access_token_expires_at", OptInt),
        column("reason", OptText),
        column("state_changed_at", Int),
        column("updated_at", Int),
        column("last_refresh_at", OptInt),
        column("last_error", OptText),
        column("version", Int),
    ],
};

const GRANT_EVENTS: Table = Table {
    kind: ExportKind::GrantEvent,
    name: "grant_events",
    key: &["id"],
    sequence: true,
    columns: &[
        column("id", Int),
        column("sub", Text),
        column("from_state", OptText),
        column("to_state", Text),
        column("reason", Text),
        column("at", Int),
        column("delivered_at", OptInt),
        column("attempts", Int),
        column("next_attempt_at", Int),
    ],
};

const API_KEYS: Table = Table {
    kind: ExportKind::ApiKey,
    name: "api_keys",
    key: &["id"],
    sequence: false,
    columns: &[
        column("id", Text),
        column("name", Text),
        column("hash", Text),
        column("scopes", Text),
        column("created_at", Int),
        column("revoked_at", OptInt),
    ],
};

const AUDIT: Table = Table {
    kind: ExportKind::Audit,
    name: "audit",
    key: &["id"],
    sequence: true,
    columns: &[
        column("id", Int),
        column("at", Int),
        column("actor", Text),
        column("sub", OptText),
        column("action", Text),
        column("detail", Text),
        column("outcome", Text),
        int_or("times", 1),
        column("last_at", OptInt),
    ],
};

/// Tokens whose revocation at the provider waits for a retry: losing one would leave a grant
/// revoked here alive at Google. They travel sealed, with their ids (each seal is bound to its
/// row's id).
const PENDING_REVOCATIONS: Table = Table {
    kind: ExportKind::PendingRevocation,
    name: "pending_revocations",
    key: &["id"],
    sequence: false,
    columns: &[
        column("id", Text),
        column("sub", Text),
        column("token", Bytes),
        column("token_kind", Text),
        column("created_at", Int),
        column("attempts", Int),
        column("next_attempt_at", Int),
        column("last_error", OptText),
    ],
};

/// Accounts Google disabled as hijacked: losing a block would let the account sign in again.
const SIGN_IN_BLOCKS: Table = Table {
    kind: ExportKind::SignInBlock,
    name: "sign_in_blocks",
    key: &["sub"],
    sequence: false,
    columns: &[
        column("sub", Text),
        column("reason", Text),
        column("blocked_at", Int),
    ],
};

/// Security events received: their ids keep a redelivery from acting twice.
const RISC_EVENTS: Table = Table {
    kind: ExportKind::RiscEvent,
    name: "risc_events",
    key: &["jti"],
    sequence: false,
    columns: &[
        column("jti", Text),
        column("event", Text),
        column("received_at", Int),
    ],
};

/// Per-minute counts behind the admin console's charts. A minute the target already counts
/// keeps the target's row, as every kind does: an import never adds to a row.
const ACTIVITY: Table = Table {
    kind: ExportKind::Activity,
    name: "activity",
    key: &["minute", "series"],
    sequence: false,
    columns: &[
        column("minute", Int),
        column("series", Text),
        column("count", Int),
        column("total_ms", Int),
        column("max_ms", Int),
    ],
};

pub(crate) fn table(kind: ExportKind) -> &'static Table {
    match kind {
        ExportKind::DataKey => &DATA_KEYS,
        ExportKind::User => &USERS,
        ExportKind::Grant => &GRANTS,
        ExportKind::GrantEvent => &GRANT_EVENTS,
        ExportKind::ApiKey => &API_KEYS,
        ExportKind::Audit => &AUDIT,
        ExportKind::PendingRevocation => &PENDING_REVOCATIONS,
        ExportKind::SignInBlock => &SIGN_IN_BLOCKS,
        ExportKind::RiscEvent => &RISC_EVENTS,
        ExportKind::Activity => &ACTIVITY,
    }
}

impl Table {
    /// The column a sequence assigns: the key of a table with `sequence`.
    pub(crate) fn sequence_key(&self) -> Option<&'static str> {
        match self.key {
            [key] if self.sequence => Some(key),
            _ => None,
        }
    }

    /// The sequence-assigned id among a row's cells.
    fn sequence_id(&self, cells: &[Cell]) -> Option<i64> {
        let key = self.sequence_key()?;
        let index = self.columns.iter().position(|c| c.name == key)?;
        match cells.get(index) {
            Some(Arg::Int(id)) => *id,
            _ => None,
        }
    }

    /// Whether the key column `name` is an integer (else text).
    fn numeric(&self, name: &str) -> bool {
        self.columns
            .iter()
            .any(|c| c.name == name && matches!(c.ty, Int))
    }

    /// `a, b, c`: the columns in their order.
    fn column_list(&self) -> String {
        let names: Vec<&str> = self.columns.iter().map(|c| c.name).collect();
        names.join(", ")
    }

    /// `a, b`: the key columns in their order.
    fn key_list(&self) -> String {
        self.key.join(", ")
    }
}

/// Where a page starts: after this key, one value per key column.
enum Position {
    Text(String),
    Int(i64),
}

/// The position an export caller passed back, as the key it stands for: the value of a
/// one-column key (an integer in decimal), or a JSON array of the values of a key of several
/// columns.
fn position(table: &Table, after: String) -> Result<Vec<Position>> {
    let wrong = || {
        StoreError::Corrupt(format!(
            "the export position for {} is not one this store gave",
            table.name
        ))
    };
    if let [key] = table.key {
        let value = if table.numeric(key) {
            Position::Int(after.parse().map_err(|_| wrong())?)
        } else {
            Position::Text(after)
        };
        return Ok(vec![value]);
    }
    let values: Vec<Value> = serde_json::from_str(&after).map_err(|_| wrong())?;
    if values.len() != table.key.len() {
        return Err(wrong());
    }
    table
        .key
        .iter()
        .zip(values)
        .map(|(key, value)| match (table.numeric(key), value) {
            (true, Value::Number(number)) => number.as_i64().map(Position::Int).ok_or_else(wrong),
            (false, Value::String(text)) => Ok(Position::Text(text)),
            _ => Err(wrong()),
        })
        .collect()
}

/// The position after `row`, as [`position`] reads it back.
fn position_after(table: &Table, row: &Map<String, Value>) -> Option<String> {
    if let [key] = table.key {
        return match row.get(*key)? {
            Value::String(text) => Some(text.clone()),
            Value::Number(number) => Some(number.to_string()),
            _ => None,
        };
    }
    let values: Option<Vec<Value>> = table.key.iter().map(|key| row.get(*key).cloned()).collect();
    Some(Value::Array(values?).to_string())
}

/// `SELECT` of up to `fetch` rows of `table` after `after`, in key order (byte order for text:
/// SQLite's order, and PostgreSQL's for these COLLATE "C" columns; a key of several columns
/// compared as a row value, column by column).
pub(crate) fn select_page(
    table: &Table,
    after: Option<String>,
    fetch: i64,
) -> Result<(String, Vec<Arg>)> {
    let mut sql = format!("SELECT {} FROM {}", table.column_list(), table.name);
    let mut args = Vec::new();
    let keys = table.key_list();
    if let Some(after) = after {
        let mut holes = Vec::new();
        for value in position(table, after)? {
            args.push(match value {
                Position::Text(text) => Arg::from(text),
                Position::Int(int) => Arg::from(int),
            });
            holes.push(format!("${}", args.len()));
        }
        sql.push_str(&format!(" WHERE ({keys}) > ({})", holes.join(", ")));
    }
    args.push(Arg::from(fetch));
    sql.push_str(&format!(" ORDER BY {keys} LIMIT ${}", args.len()));
    Ok((sql, args))
}

/// A page of an export, as [`crate::TransferStore::export_page`] answers it, on any backend.
pub(crate) async fn export_page(
    engine: &impl Engine,
    kind: ExportKind,
    after: Option<String>,
    limit: u32,
) -> Result<(Vec<ExportRecord>, Option<String>)> {
    let table = table(kind);
    let limit = page_limit(limit);
    let (sql, args) = select_page(table, after, i64::from(limit) + 1)?;
    let map: crate::sql::RowMap<ExportRecord> = match kind {
        ExportKind::DataKey => |r| export_row(&DATA_KEYS, r),
        ExportKind::User => |r| export_row(&USERS, r),
        ExportKind::Grant => |r| export_row(&GRANTS, r),
        ExportKind::GrantEvent => |r| export_row(&GRANT_EVENTS, r),
        ExportKind::ApiKey => |r| export_row(&API_KEYS, r),
        ExportKind::Audit => |r| export_row(&AUDIT, r),
        ExportKind::PendingRevocation => |r| export_row(&PENDING_REVOCATIONS, r),
        ExportKind::SignInBlock => |r| export_row(&SIGN_IN_BLOCKS, r),
        ExportKind::RiscEvent => |r| export_row(&RISC_EVENTS, r),
        ExportKind::Activity => |r| export_row(&ACTIVITY, r),
    };
    let records = engine.read_rows(sql.into(), args, map).await?;
    Ok(page(table, records, limit))
}

/// An import in one transaction of the engine's (SQLite: AUTOINCREMENT keeps the largest id
/// ever inserted, imported ones too, so later events and audit rows are numbered after them).
pub(crate) async fn import_plain(engine: &impl Engine, plan: Vec<Rows>) -> Result<ImportCounts> {
    let mut sizes = Vec::new();
    let mut statements: Vec<(crate::sql::Sql, Vec<Arg>)> =
        vec![(IMPORT_UNDER_WAY.into(), Vec::new())];
    for rows in &plan {
        for chunk in rows.rows.chunks(ROWS_PER_INSERT) {
            sizes.push(chunk.len() as u64);
            let (sql, args) = insert(rows.table, chunk, false);
            statements.push((sql.into(), args));
        }
    }
    statements.push((IMPORT_DONE.into(), Vec::new()));
    let done = engine.execute_all(statements).await?;
    let mut counts = ImportCounts::default();
    // The first and last statements turn the rule of migration 0011 off and on again.
    for (inserted, size) in done.into_iter().skip(1).zip(sizes) {
        counts.inserted += inserted;
        counts.present += size.saturating_sub(inserted);
    }
    Ok(counts)
}

/// One row read by [`select_page`], as an export carries it.
pub(crate) fn export_row(table: &Table, row: &dyn Columns) -> Result<ExportRecord> {
    let mut out = Map::new();
    for column in table.columns {
        let name = column.name;
        let value = match column.ty {
            Text => Value::from(row.text(name)?),
            OptText => row.opt_text(name)?.map_or(Value::Null, Value::from),
            Int => Value::from(row.int(name)?),
            OptInt => row.opt_int(name)?.map_or(Value::Null, Value::from),
            Bool => Value::from(row.flag(name)?),
            Bytes => Value::from(STANDARD.encode(row.bytes(name)?)),
            OptBytes => row
                .opt_bytes(name)?
                .map_or(Value::Null, |bytes| Value::from(STANDARD.encode(bytes))),
        };
        out.insert(name.to_owned(), value);
    }
    Ok(ExportRecord {
        kind: table.kind,
        row: out,
    })
}

/// A page of up to `limit` records from `limit + 1` read in key order, and the position after
/// its last record when more follow.
pub(crate) fn page(
    table: &Table,
    mut records: Vec<ExportRecord>,
    limit: u32,
) -> (Vec<ExportRecord>, Option<String>) {
    let limit = limit as usize;
    if records.len() <= limit {
        return (records, None);
    }
    records.truncate(limit);
    let next = records
        .last()
        .and_then(|record| position_after(table, &record.row));
    (records, next)
}

/// One column's value of a row to import: bound as it is.
pub(crate) type Cell = Arg;

/// The rows of one table to import, each as its table's columns in order.
pub(crate) struct Rows {
    pub table: &'static Table,
    pub rows: Vec<Vec<Cell>>,
    /// The largest key among the rows, for a table whose keys come from a sequence.
    pub max_id: Option<i64>,
}

/// The records of an import by table, in the order an import needs them ([`ExportKind::ALL`]:
/// users before their grants, grants before their events; the kinds after them refer to no
/// other row), each kind's records in the order given; every row checked against its table's
/// columns before anything is written.
pub(crate) fn import_plan(records: Vec<ExportRecord>) -> Result<Vec<Rows>> {
    let mut plan: Vec<Rows> = ExportKind::ALL
        .iter()
        .map(|&kind| Rows {
            table: table(kind),
            rows: Vec::new(),
            max_id: None,
        })
        .collect();
    for record in records {
        // ALL names every kind: each record finds its place.
        let Some(rows) = plan.iter_mut().find(|rows| rows.table.kind == record.kind) else {
            continue;
        };
        let cells = import_row(rows.table, record.row)?;
        if let Some(id) = rows.table.sequence_id(&cells) {
            rows.max_id = Some(rows.max_id.map_or(id, |max| max.max(id)));
        }
        rows.rows.push(cells);
    }
    plan.retain(|rows| !rows.rows.is_empty());
    Ok(plan)
}

fn import_row(table: &Table, mut row: Map<String, Value>) -> Result<Vec<Cell>> {
    let refused =
        |what: String| StoreError::Corrupt(format!("an imported {} row {what}", table.name));
    let mut cells = Vec::with_capacity(table.columns.len());
    for column in table.columns {
        let name = column.name;
        let value = match row.remove(name) {
            Some(value) => value,
            None if matches!(column.ty, OptText | OptInt | OptBytes) => Value::Null,
            None if let Some(default) = column.default => Value::from(default),
            None => return Err(refused(format!("lacks the column {name}"))),
        };
        let wrong = || refused(format!("has a value of the wrong type in {name}"));
        let cell = match (column.ty, value) {
            (OptText, Value::Null) => Arg::Text(None),
            (Text | OptText, Value::String(text)) => Arg::Text(Some(text)),
            (OptInt, Value::Null) => Arg::Int(None),
            (Int | OptInt, Value::Number(number)) => {
                Arg::Int(Some(number.as_i64().ok_or_else(wrong)?))
            }
            (Bool, Value::Bool(flag)) => Arg::Bool(flag),
            (OptBytes, Value::Null) => Arg::Bytes(None),
            (Bytes | OptBytes, Value::String(text)) => {
                Arg::Bytes(Some(STANDARD.decode(text).map_err(|_| {
                    refused(format!("has a value that is not standard base64 in {name}"))
                })?))
            }
            _ => return Err(wrong()),
        };
        cells.push(cell);
    }
    // A column this store does not know would be lost: refuse the row rather than drop it.
    if let Some(unknown) = row.keys().next() {
        return Err(refused(format!(
            "has a column this store does not know: {unknown:?}"
        )));
    }
    Ok(cells)
}

/// Rows per INSERT of an import: at most 1,500 bound values (15 columns), far below the limits
/// of both databases (SQLite 32,766, PostgreSQL 65,535).
pub(crate) const ROWS_PER_INSERT: usize = 100;

/// `INSERT` of `rows` into `table`, each left out when a row with its key exists (and counted
/// as present by the caller: the statement's rows affected are those inserted). Another unique
/// index that a row breaks (an API key's hash, a second active data key) still fails: that row
/// is not the one the store holds. `overriding`: PostgreSQL's words for writing an identity.
pub(crate) fn insert(table: &Table, rows: &[Vec<Cell>], overriding: bool) -> (String, Vec<Arg>) {
    let mut sql = format!("INSERT INTO {} ({}) ", table.name, table.column_list());
    if overriding {
        sql.push_str("OVERRIDING SYSTEM VALUE ");
    }
    sql.push_str("VALUES ");
    let mut args = Vec::with_capacity(rows.len() * table.columns.len());
    for (i, cells) in rows.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        let holes: Vec<String> = cells
            .iter()
            .map(|cell| {
                args.push(cell.clone());
                format!("${}", args.len())
            })
            .collect();
        sql.push_str(&format!("({})", holes.join(", ")));
    }
    sql.push_str(&format!(" ON CONFLICT ({}) DO NOTHING", table.key_list()));
    (sql, args)
}
