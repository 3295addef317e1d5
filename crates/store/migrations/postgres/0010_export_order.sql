-- Exports page security events by `jti` (PostgreSQL), the twin of
-- migrations/sqlite/0010_export_order.sql: in byte order, as SQLite orders them, so that both
-- backends cut the same pages (as 0003 did for api_keys.id). The column's type stays TEXT; only
-- its primary key index is rebuilt, and the table holds only recent events.
ALTER TABLE risc_events ALTER COLUMN jti SET DATA TYPE TEXT COLLATE "C";
