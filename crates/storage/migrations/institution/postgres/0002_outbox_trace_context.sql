-- W3C trace context of the call that queued the message, so its delivery
-- joins the same trace.
ALTER TABLE outbox ADD COLUMN trace_context TEXT;
