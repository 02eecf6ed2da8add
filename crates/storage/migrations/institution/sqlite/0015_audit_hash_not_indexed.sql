-- The audit chain's hashes lose their UNIQUE index. Nothing looks a record
-- up by its hash (the chain is read by sequence number), and the index
-- guarded nothing the chain does not: a fork appends two different records
-- after one head, whose hashes differ anyway. It cost every append a write
-- to a random leaf of an index as large as the log: a batch of 64 records
-- dirtied some 64 pages of it, each written to the WAL, then copied into
-- the database file. SQLite cannot drop a column's UNIQUE: the table is
-- rebuilt (dropping a table does not fire its triggers), with its index by
-- case and its append-only triggers.
CREATE TABLE audit_log_rebuilt (
    seq INTEGER PRIMARY KEY,
    at BIGINT NOT NULL,
    method TEXT NOT NULL,
    case_id TEXT,
    decision TEXT NOT NULL,
    entry_json TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_log_rebuilt (seq, at, method, case_id, decision, entry_json, prev_hash, hash)
SELECT seq, at, method, case_id, decision, entry_json, prev_hash, hash FROM audit_log ORDER BY seq;
DROP TABLE audit_log;
ALTER TABLE audit_log_rebuilt RENAME TO audit_log;
CREATE INDEX audit_by_case ON audit_log (case_id);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
