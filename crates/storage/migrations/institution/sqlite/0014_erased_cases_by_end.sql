-- Each housekeeping pass looks for erased cases whose consent records are
-- kept and due for the purge: through this index it reads only those ended
-- long enough ago, in the order it takes them, not every case ever erased.
CREATE INDEX erased_cases_keeping_consents ON erased_cases (ended_at, case_id) WHERE consents_kept = 1;
