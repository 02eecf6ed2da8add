-- The committee's counts of cases whose personal data were erased or
-- purged: their rows are gone, their part of the counts stays (a recount of
-- the remaining cases adds these). No case is named here.
CREATE TABLE erased_statistics (
    measure TEXT NOT NULL,
    month TEXT NOT NULL,
    office TEXT NOT NULL,
    network TEXT NOT NULL,
    breakdown TEXT NOT NULL,
    value BIGINT NOT NULL,
    PRIMARY KEY (measure, month, office, network, breakdown)
);

-- Cases whose personal data were erased (the case identifier is the
-- pseudonym the audit log already holds): when the case ended, when and
-- why its data went, and whether its consent records are still kept.
CREATE TABLE erased_cases (
    case_id TEXT PRIMARY KEY,
    ended_at BIGINT,
    erased_at BIGINT NOT NULL,
    reason TEXT NOT NULL,
    consents_kept BIGINT NOT NULL
);

-- Cases whose processing is restricted (GDPR art. 18): their data are only
-- kept, nothing else is done with them, until the restriction is lifted.
CREATE TABLE restrictions (
    case_id TEXT PRIMARY KEY,
    since BIGINT NOT NULL
);

-- Objections to a processing carried out on a public task (GDPR art. 21),
-- per case and purpose: crossings of that purpose about the case stop.
CREATE TABLE objections (
    case_id TEXT NOT NULL,
    purpose TEXT NOT NULL,
    objected_at BIGINT NOT NULL,
    PRIMARY KEY (case_id, purpose)
);
