-- The employment side's jobseeker register, fed by its information system;
-- the monthly RSA jobseeker list (LRSA-DE) fixed from it; and the
-- habilitations of Département agents to read the list and the files (DUDE).
CREATE TABLE jobseekers (
    jobseeker_number TEXT PRIMARY KEY,
    first_name TEXT NOT NULL,
    last_name TEXT NOT NULL,
    birth_date TEXT NOT NULL,
    registration_date TEXT NOT NULL,
    registration_category TEXT NOT NULL,
    agency_code TEXT NOT NULL,
    support_modality TEXT NOT NULL,
    rsa_beneficiary BIGINT NOT NULL,
    -- Profile, PPAE items and job-search history (JSON): the file DUDE shows.
    file TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE rsa_lists (
    month TEXT PRIMARY KEY,
    row_count BIGINT NOT NULL,
    published_by TEXT NOT NULL,
    published_at BIGINT NOT NULL
);

-- Only the fields the agreement needs, fixed at publication.
CREATE TABLE rsa_list_rows (
    month TEXT NOT NULL,
    seq BIGINT NOT NULL,
    jobseeker_number TEXT NOT NULL,
    first_name TEXT NOT NULL,
    last_name TEXT NOT NULL,
    birth_date TEXT NOT NULL,
    registration_date TEXT NOT NULL,
    registration_category TEXT NOT NULL,
    agency_code TEXT NOT NULL,
    support_modality TEXT NOT NULL,
    PRIMARY KEY (month, seq)
);

CREATE TABLE habilitations (
    agent TEXT NOT NULL,
    scope TEXT NOT NULL,
    granted_by TEXT NOT NULL,
    granted_at BIGINT NOT NULL,
    revoked_by TEXT,
    revoked_at BIGINT,
    PRIMARY KEY (agent, scope)
);

CREATE TABLE habilitation_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agent TEXT NOT NULL,
    scope TEXT NOT NULL,
    habilitate BIGINT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_at BIGINT NOT NULL,
    resolved_at BIGINT
);
