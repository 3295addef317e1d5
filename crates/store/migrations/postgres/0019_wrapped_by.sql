-- Master key sources (PostgreSQL), the twin of migrations/sqlite/0019_wrapped_by.sql: which
-- master key wraps each data key. A label such as `local` (the key of a file or of the
-- environment), `kms:projects/P/locations/L/keyRings/R/cryptoKeys/K` (Google Cloud KMS) or
-- `pkcs11:token=T;object=O` (an HSM), never a secret. NULL is a key wrapped before sources were
-- recorded, or imported from such an export: the local master key wrapped every one of those.
ALTER TABLE data_keys ADD COLUMN wrapped_by TEXT;
UPDATE data_keys SET wrapped_by = 'local';
