-- The store of one institution's service (employment or social side).
-- Instants are microseconds since the Unix epoch; flags are 0/1 integers.

CREATE TABLE consents (
    consent_id TEXT PRIMARY KEY,
    case_id TEXT NOT NULL,
    purposes TEXT NOT NULL,
    recipients TEXT NOT NULL,
    categories TEXT NOT NULL,
    evidence_kind TEXT NOT NULL,
    evidence_sha256 TEXT NOT NULL,
    evidence_signed_at BIGINT NOT NULL,
    evidence_collected_by TEXT NOT NULL,
    valid_from BIGINT NOT NULL,
    valid_until BIGINT NOT NULL,
    state TEXT NOT NULL,
    state_changed_at BIGINT NOT NULL,
    holder TEXT NOT NULL
);
CREATE INDEX consents_by_case ON consents (case_id);

-- The referral form; `body` holds the identity and contact it carries.
CREATE TABLE referrals (
    case_id TEXT PRIMARY KEY,
    referring_network TEXT NOT NULL,
    referred_at BIGINT NOT NULL,
    origin TEXT NOT NULL,
    body TEXT NOT NULL
);

CREATE TABLE diagnoses (
    case_id TEXT NOT NULL,
    author_institution TEXT NOT NULL,
    agreement TEXT NOT NULL,
    recorded_at BIGINT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (case_id, author_institution)
);

-- LOCAL_ONLY: free-text notes of this institution's agents. Never sent.
CREATE TABLE local_notes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id TEXT NOT NULL,
    author TEXT NOT NULL,
    topic TEXT NOT NULL,
    note TEXT NOT NULL,
    written_at BIGINT NOT NULL
);
CREATE INDEX local_notes_by_case ON local_notes (case_id);

CREATE TABLE cases (
    case_id TEXT PRIMARY KEY,
    track TEXT NOT NULL,
    state TEXT NOT NULL,
    counsellor TEXT,
    social_worker TEXT,
    referring_network TEXT NOT NULL,
    referred_at BIGINT NOT NULL,
    diagnosed_at BIGINT,
    entered_at BIGINT,
    exited_at BIGINT,
    exit_reason TEXT,
    -- The institution where the person signed: it reports the entry.
    entry_recorded_by TEXT
);
CREATE INDEX cases_by_state ON cases (state);

-- Transactional outbox: written with the change it reports, relayed in order.
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_key TEXT NOT NULL UNIQUE,
    case_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    delivered_at BIGINT,
    abandoned_at BIGINT
);
CREATE INDEX outbox_pending ON outbox (id) WHERE delivered_at IS NULL AND abandoned_at IS NULL;

-- Idempotency of every mutating RPC, local or crossing: (method, key) is
-- answered once; a replay returns the stored response.
CREATE TABLE idempotency (
    method TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_sha256 TEXT NOT NULL,
    response BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (method, idempotency_key)
);

-- Append-only, hash-chained audit log of every crossing and denial.
CREATE TABLE audit_log (
    seq INTEGER PRIMARY KEY,
    at BIGINT NOT NULL,
    method TEXT NOT NULL,
    case_id TEXT,
    decision TEXT NOT NULL,
    entry_json TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE
);
CREATE INDEX audit_by_case ON audit_log (case_id);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
