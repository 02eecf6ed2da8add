-- The partner's audit chain heads, as it sent them: with them the partner
-- cannot rewrite its own log unnoticed (its verification compares them).
CREATE TABLE partner_audit_anchors (
    seq BIGINT PRIMARY KEY,
    hash TEXT NOT NULL,
    anchored_at BIGINT NOT NULL,
    received_at BIGINT NOT NULL
);

-- The last head of this service's own log sent to the partner.
CREATE TABLE own_audit_anchor (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    sent_at BIGINT NOT NULL
);
