-- Delivered messages stay in the outbox (the record of what left, and
-- when), so it grows with every change told to the partner. Two questions
-- asked of it on every pass or change must not read all of it:
-- whether the partner was told of a case (asked by changes that need the
-- partner to hold the case), and how many messages were given up (the
-- relay's gauges).
CREATE INDEX outbox_by_case ON outbox (case_id);
CREATE INDEX outbox_abandoned ON outbox (id) WHERE abandoned_at IS NOT NULL;
