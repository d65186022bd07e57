-- Revocation events (Keystone's model): a token is refused when an event matches it. An event names a token by
-- its audit id, or every token of a user (on one project, or on all when project_id is NULL) issued before
-- issued_before. API nodes keep the live events in memory and reload them every [api]
-- revocation_refresh_interval seconds; an event outlives the tokens it can match by expires_at.
CREATE TABLE revocation_events (
    id bigserial PRIMARY KEY,
    user_id text,
    project_id text,
    audit_id text,
    issued_before timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at timestamptz NOT NULL,
    reason text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (audit_id IS NOT NULL OR user_id IS NOT NULL)
);
CREATE INDEX revocation_events_expires_at ON revocation_events (expires_at);
