-- The whole life of a case: the referral's decision and expiry, the case
-- referent, the waiting list, missed appointments, follow-up after a job
-- exit, exclusive social support.
ALTER TABLE cases ADD COLUMN office_code TEXT NOT NULL DEFAULT '';
ALTER TABLE cases ADD COLUMN referral_state TEXT NOT NULL DEFAULT 'pending';
ALTER TABLE cases ADD COLUMN referral_expires_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE cases ADD COLUMN referral_decided_at BIGINT;
ALTER TABLE cases ADD COLUMN refusal_reason TEXT;
ALTER TABLE cases ADD COLUMN referent TEXT;
ALTER TABLE cases ADD COLUMN queued_at BIGINT;
-- The entry signed while the portfolio was full (JSON), applied when a place frees.
ALTER TABLE cases ADD COLUMN pending_entry TEXT;
ALTER TABLE cases ADD COLUMN missed_appointments BIGINT NOT NULL DEFAULT 0;
ALTER TABLE cases ADD COLUMN follow_up_due_at BIGINT;
ALTER TABLE cases ADD COLUMN follow_up_in_employment BIGINT;
ALTER TABLE cases ADD COLUMN exclusive_started_at BIGINT;
-- Digests of what the entry rests on (JSON); the documents stay where signed.
ALTER TABLE cases ADD COLUMN entry_evidence TEXT NOT NULL DEFAULT '[]';
CREATE INDEX cases_pending_referrals ON cases (referral_expires_at) WHERE referral_state = 'pending';
CREATE INDEX cases_by_office ON cases (office_code, state);
CREATE INDEX cases_queued_by_counsellor ON cases (counsellor, queued_at) WHERE state = 'queued';

-- The employment side's working-time register of dedicated counsellors.
CREATE TABLE counsellors (
    counsellor TEXT PRIMARY KEY,
    working_time_per_mille BIGINT NOT NULL,
    office_code TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Exclusive social support quotas an office obtained on its express request.
CREATE TABLE office_quotas (
    office_code TEXT NOT NULL,
    year BIGINT NOT NULL,
    quota BIGINT NOT NULL,
    granted_by TEXT NOT NULL,
    granted_at BIGINT NOT NULL,
    PRIMARY KEY (office_code, year)
);

-- Plans: this institution's own in full (`local`), the partner's as a
-- summary of counts (`partner`). One plan of each kind per case.
CREATE TABLE plans (
    case_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    origin TEXT NOT NULL,
    body TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (case_id, kind)
);
