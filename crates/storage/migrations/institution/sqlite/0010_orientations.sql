-- Orientations into a parcours (law for full employment), oldest first per
-- case: this side's decisions with their grid (origin 'local'), the
-- partner's without (origin 'partner', received with a referral or as a
-- change of parcours). They may precede the case: a person is oriented
-- before being referred.
CREATE TABLE orientations (
    case_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    origin TEXT NOT NULL,
    decided_at BIGINT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (case_id, seq)
);
