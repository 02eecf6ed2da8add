-- The committee's counts, kept up to date in the transaction that changes a
-- case: each case's contribution is replaced by its new one, so reading the
-- indicators never scans the cases.
CREATE TABLE statistics (
    measure TEXT NOT NULL,
    -- YYYY-MM, Europe/Paris.
    month TEXT NOT NULL,
    office TEXT NOT NULL,
    network TEXT NOT NULL,
    breakdown TEXT NOT NULL,
    value BIGINT NOT NULL,
    PRIMARY KEY (measure, month, office, network, breakdown)
);

-- Whether `statistics` holds every case: filled once from the cases at the
-- first start after this migration, then kept up to date.
CREATE TABLE statistics_state (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    built BIGINT NOT NULL
);
INSERT INTO statistics_state (id, built) VALUES (1, 0);

-- The ESF participant questionnaire (JSON) and the qualification on leaving:
-- local only, where the person signed.
ALTER TABLE cases ADD COLUMN participant TEXT;
ALTER TABLE cases ADD COLUMN qualification_gained BIGINT NOT NULL DEFAULT 0;
