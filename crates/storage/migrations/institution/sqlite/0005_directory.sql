-- The resource directory (axe 1), in the data·inclusion schema: each record
-- is kept whole (`body`, JSON); the hosting service searches an in-memory
-- index built from it. Public data: nothing here is about a person.
CREATE TABLE directory_structures (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE directory_services (
    id TEXT PRIMARY KEY,
    structure_id TEXT NOT NULL,
    body TEXT NOT NULL,
    -- Naming it to the partner would reveal something of health or justice.
    sensitive BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX directory_services_by_structure ON directory_services (structure_id);

-- Who changed what, when: every write, in order.
CREATE TABLE directory_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    collection TEXT NOT NULL,
    record_id TEXT NOT NULL,
    action TEXT NOT NULL,
    body TEXT,
    changed_by TEXT NOT NULL,
    changed_at BIGINT NOT NULL
);
CREATE INDEX directory_history_by_record ON directory_history (collection, record_id);

-- The named contact point of each agency and each local social office.
CREATE TABLE directory_contact_points (
    office_code TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    phone TEXT NOT NULL,
    email TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Bumped by every directory write, so each replica knows when its in-memory
-- search index is stale.
CREATE TABLE directory_meta (
    singleton BIGINT PRIMARY KEY,
    version BIGINT NOT NULL
);
INSERT INTO directory_meta (singleton, version) VALUES (1, 0);
