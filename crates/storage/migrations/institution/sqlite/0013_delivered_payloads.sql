-- A delivered message keeps its row (what left, when, for which case) but
-- not the person's data it carried: the partner holds it now, and the
-- crossing is in the audit log. The relay blanks it on delivery; this
-- blanks what was delivered before.
UPDATE outbox SET payload = '' WHERE delivered_at IS NOT NULL;
