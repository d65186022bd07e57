-- Security groups with rules, and which groups each port is in. A port with no row in port_security_groups is
-- in its project's 'default' group (created on first use, with a derived id, so API nodes agree).
CREATE TABLE security_groups (
    id              text PRIMARY KEY,
    project_id      text NOT NULL,
    name            text NOT NULL DEFAULT '',
    description     text NOT NULL DEFAULT '',
    stateful        boolean NOT NULL DEFAULT true,
    revision_number integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX security_groups_project_idx ON security_groups (project_id);

CREATE TABLE security_group_rules (
    id                text PRIMARY KEY,
    security_group_id text NOT NULL REFERENCES security_groups(id) ON DELETE CASCADE,
    project_id        text NOT NULL,
    direction         text NOT NULL CHECK (direction IN ('ingress', 'egress')),
    ethertype         text NOT NULL DEFAULT 'IPv4' CHECK (ethertype IN ('IPv4', 'IPv6')),
    protocol          text,
    port_range_min    integer CHECK (port_range_min BETWEEN 0 AND 65535),
    port_range_max    integer CHECK (port_range_max BETWEEN 0 AND 65535),
    remote_ip_prefix  cidr,
    remote_group_id   text REFERENCES security_groups(id) ON DELETE CASCADE,
    description       text NOT NULL DEFAULT '',
    revision_number   integer NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (remote_ip_prefix IS NULL OR remote_group_id IS NULL)
);
CREATE INDEX security_group_rules_group_idx ON security_group_rules (security_group_id);
-- The same rule twice is a 409, whatever the concurrency.
CREATE UNIQUE INDEX security_group_rules_unique_idx ON security_group_rules (
    security_group_id, direction, ethertype, COALESCE(protocol, ''), COALESCE(port_range_min, -1),
    COALESCE(port_range_max, -1), COALESCE(remote_ip_prefix, '0.0.0.0/32'::cidr), COALESCE(remote_group_id, ''));

CREATE TABLE port_security_groups (
    port_id           text NOT NULL REFERENCES ports(id) ON DELETE CASCADE,
    security_group_id text NOT NULL REFERENCES security_groups(id),
    PRIMARY KEY (port_id, security_group_id)
);
CREATE INDEX port_security_groups_group_idx ON port_security_groups (security_group_id);
