-- The support period: renewals granted, when it ends, the review it requires.
ALTER TABLE cases ADD COLUMN renewals BIGINT NOT NULL DEFAULT 0;
ALTER TABLE cases ADD COLUMN ends_at BIGINT;
ALTER TABLE cases ADD COLUMN review_due_at BIGINT;
CREATE INDEX cases_active_by_counsellor ON cases (counsellor) WHERE state = 'active';
CREATE INDEX cases_active_by_social_worker ON cases (social_worker) WHERE state = 'active';
