-- Scheduler: server groups, host aggregates (metadata, availability zone, allocation-ratio overrides),
-- scheduler hints kept with the instance so a reschedule honours them too.

CREATE TABLE server_groups (
    id          text PRIMARY KEY,
    project_id  text NOT NULL,
    user_id     text NOT NULL,
    name        text NOT NULL,
    policy      text NOT NULL CHECK (policy IN ('affinity', 'anti-affinity', 'soft-affinity', 'soft-anti-affinity')),
    rules       jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
CREATE INDEX server_groups_project_idx ON server_groups (project_id) WHERE deleted_at IS NULL;

CREATE TABLE server_group_members (
    group_id    text NOT NULL REFERENCES server_groups(id),
    instance_id text NOT NULL REFERENCES instances(id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, instance_id)
);
CREATE INDEX server_group_members_instance_idx ON server_group_members (instance_id);

CREATE TABLE aggregates (
    id                serial PRIMARY KEY,
    uuid              text NOT NULL UNIQUE,
    name              text NOT NULL,
    availability_zone text,
    metadata          jsonb NOT NULL DEFAULT '{}',
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    deleted_at        timestamptz
);
CREATE UNIQUE INDEX aggregates_name_idx ON aggregates (name) WHERE deleted_at IS NULL;

CREATE TABLE aggregate_hosts (
    aggregate_id integer NOT NULL REFERENCES aggregates(id) ON DELETE CASCADE,
    host         text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_id, host)
);
CREATE INDEX aggregate_hosts_host_idx ON aggregate_hosts (host);

ALTER TABLE instances ADD COLUMN scheduler_hints jsonb NOT NULL DEFAULT '{}';
