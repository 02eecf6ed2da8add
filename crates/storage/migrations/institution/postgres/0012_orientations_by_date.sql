-- The housekeeping pass looks for people oriented and never referred whose
-- last orientation is due for the retention purge: through this index it
-- reads only the orientations old enough, not every one.
CREATE INDEX orientations_by_date ON orientations (decided_at);
