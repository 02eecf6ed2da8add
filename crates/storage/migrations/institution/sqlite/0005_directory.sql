-- The resource directory (axe 1), in the data·inclusion schema: each record
-- is kept whole (`body`, JSON) with the columns search filters on. Public
-- data: nothing here is about a person.
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
    -- Name, description and structure name, lower case without accents.
    search_text TEXT NOT NULL,
    -- ',thematique,thematique,' so a category matches with LIKE.
    thematiques TEXT NOT NULL,
    code_insee TEXT,
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
