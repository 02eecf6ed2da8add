-- The audit chain's hashes lose their UNIQUE index. Nothing looks a record
-- up by its hash (the chain is read by sequence number), and the index
-- guarded nothing the chain does not: a fork appends two different records
-- after one head, whose hashes differ anyway (the chain's lock prevents
-- forks). It cost every append a write to a random leaf of an index as
-- large as the log: a batch of records dirtied as many pages of it.
ALTER TABLE audit_log DROP CONSTRAINT IF EXISTS audit_log_hash_key;
