-- Exports page security events by `jti` (SQLite), the twin of
-- migrations/postgres/0010_export_order.sql, which puts that column in byte order. SQLite
-- compares TEXT as bytes already, so this migration changes nothing (the statement below does
-- nothing); it keeps both backends' migrations numbered alike.
SELECT 1;
