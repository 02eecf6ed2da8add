-- The steering service's store: aggregates only. No table here may hold a
-- per-person row; the end-to-end tests inspect this schema and its rows.

-- One pull of one institution's indicators.
CREATE TABLE indicator_snapshots (
    id BIGSERIAL PRIMARY KEY,
    source TEXT NOT NULL,
    computed_at BIGINT NOT NULL,
    fetched_at BIGINT NOT NULL,
    entry_delay_days_sum BIGINT NOT NULL,
    entry_delay_count BIGINT NOT NULL
);

-- Exact counts as received; secrecy is applied when the dashboard is published.
CREATE TABLE indicator_cells (
    snapshot_id BIGINT NOT NULL REFERENCES indicator_snapshots (id),
    metric TEXT NOT NULL,
    cell_key TEXT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (snapshot_id, metric, cell_key)
);

CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    method TEXT NOT NULL,
    case_id TEXT,
    decision TEXT NOT NULL,
    entry_json TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE
);

CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();
