-- Stratus initial schema. Every API-visible resource: uuid id, project_id, created_at/updated_at.
-- Soft delete (deleted_at) where history matters for audit and usage.

CREATE TABLE projects (
    id          text PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    description text NOT NULL DEFAULT '',
    domain_id   text NOT NULL DEFAULT 'default',
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id                 text PRIMARY KEY,
    name               text NOT NULL UNIQUE,
    password_hash      text NOT NULL,
    default_project_id text REFERENCES projects(id),
    domain_id          text NOT NULL DEFAULT 'default',
    enabled            boolean NOT NULL DEFAULT true,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE roles (
    id   text PRIMARY KEY,
    name text NOT NULL UNIQUE
);

CREATE TABLE role_assignments (
    user_id    text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    project_id text NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    role_id    text NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, project_id, role_id)
);

CREATE TABLE flavors (
    id           text PRIMARY KEY,
    name         text NOT NULL UNIQUE,
    vcpus        integer NOT NULL CHECK (vcpus > 0),
    ram_mb       integer NOT NULL CHECK (ram_mb > 0),
    disk_gb      integer NOT NULL CHECK (disk_gb >= 0),
    ephemeral_gb integer NOT NULL DEFAULT 0,
    swap_mb      integer NOT NULL DEFAULT 0,
    rxtx_factor  real NOT NULL DEFAULT 1.0,
    is_public    boolean NOT NULL DEFAULT true,
    description  text,
    extra_specs  jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE keypairs (
    id          text PRIMARY KEY,
    user_id     text NOT NULL,
    project_id  text NOT NULL,
    name        text NOT NULL,
    public_key  text NOT NULL,
    fingerprint text NOT NULL,
    type        text NOT NULL DEFAULT 'ssh',
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, name)
);

CREATE TABLE images (
    id               text PRIMARY KEY,
    project_id       text NOT NULL,
    name             text,
    status           text NOT NULL DEFAULT 'queued',
    visibility       text NOT NULL DEFAULT 'shared',
    disk_format      text,
    container_format text,
    size             bigint,
    virtual_size     bigint,
    checksum         text,              -- md5 hex, as Glance
    os_hash_algo     text,
    os_hash_value    text,              -- sha256 hex here; the compute verifies it
    min_disk         integer NOT NULL DEFAULT 0,
    min_ram          integer NOT NULL DEFAULT 0,
    protected        boolean NOT NULL DEFAULT false,
    location         text,              -- file:// or http(s):// URL the computes download from
    properties       jsonb NOT NULL DEFAULT '{}',
    tags             jsonb NOT NULL DEFAULT '[]',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz
);

CREATE TABLE services (
    id           text PRIMARY KEY,
    host         text NOT NULL,
    "binary"     text NOT NULL,
    topic        text,
    disabled     boolean NOT NULL DEFAULT false,
    disabled_reason text,
    forced_down  boolean NOT NULL DEFAULT false,
    broker_node  text,
    version      text,
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (host, "binary")
);

CREATE TABLE compute_nodes (
    id                    text PRIMARY KEY,
    host                  text NOT NULL UNIQUE,
    hypervisor_hostname   text NOT NULL,
    hypervisor_type       text NOT NULL DEFAULT 'QEMU',
    hypervisor_version    integer NOT NULL DEFAULT 0,
    virt_type             text NOT NULL DEFAULT 'qemu',
    cpu_info              jsonb NOT NULL DEFAULT '{}',
    vcpus                 integer NOT NULL,
    memory_mb             integer NOT NULL,
    local_gb              integer NOT NULL,
    -- used_* are the sum of allocations (claims), maintained by the claim statements, never by reports
    vcpus_used            integer NOT NULL DEFAULT 0 CHECK (vcpus_used >= 0),
    memory_mb_used        integer NOT NULL DEFAULT 0 CHECK (memory_mb_used >= 0),
    local_gb_used         integer NOT NULL DEFAULT 0 CHECK (local_gb_used >= 0),
    running_vms           integer NOT NULL DEFAULT 0,
    cpu_allocation_ratio  real NOT NULL DEFAULT 16.0,
    ram_allocation_ratio  real NOT NULL DEFAULT 1.5,
    disk_allocation_ratio real NOT NULL DEFAULT 1.0,
    reserved_host_memory_mb integer NOT NULL DEFAULT 0,
    reserved_host_disk_gb integer NOT NULL DEFAULT 0,
    reserved_host_cpus    integer NOT NULL DEFAULT 0,
    availability_zone     text NOT NULL DEFAULT 'nova',
    last_report_at        timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE instances (
    id                text PRIMARY KEY,
    project_id        text NOT NULL,
    user_id           text NOT NULL,
    name              text NOT NULL,
    hostname          text NOT NULL,
    flavor_id         text NOT NULL,
    flavor            jsonb NOT NULL,       -- snapshot at boot time
    image_id          text,
    image             jsonb NOT NULL DEFAULT '{}',
    requested_networks jsonb NOT NULL DEFAULT '[]',
    vm_state          text NOT NULL,
    task_state        text,
    power_state       integer NOT NULL DEFAULT 0,
    host              text,
    node              text,
    availability_zone text,
    key_name          text,
    key_data          text,
    user_data         text,
    metadata          jsonb NOT NULL DEFAULT '{}',
    reservation_id    text,
    launch_index      integer NOT NULL DEFAULT 0,
    attempt           integer NOT NULL DEFAULT 0,
    access_ip_v4      text,
    launched_at       timestamptz,
    terminated_at     timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    deleted_at        timestamptz
);
CREATE INDEX instances_project_idx ON instances (project_id) WHERE deleted_at IS NULL;
CREATE INDEX instances_host_idx ON instances (host) WHERE deleted_at IS NULL;

CREATE TABLE instance_faults (
    id          bigserial PRIMARY KEY,
    instance_id text NOT NULL REFERENCES instances(id),
    code        integer NOT NULL DEFAULT 500,
    message     text NOT NULL,
    details     text NOT NULL DEFAULT '',
    host        text,
    request_id  text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX instance_faults_instance_idx ON instance_faults (instance_id, id DESC);

-- One row per claimed instance; the compute node's used_* move in the same transaction.
CREATE TABLE allocations (
    instance_id     text PRIMARY KEY REFERENCES instances(id),
    compute_node_id text NOT NULL REFERENCES compute_nodes(id),
    vcpus           integer NOT NULL,
    memory_mb       integer NOT NULL,
    disk_gb         integer NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX allocations_node_idx ON allocations (compute_node_id);

CREATE TABLE instance_actions (
    id          bigserial PRIMARY KEY,
    instance_id text NOT NULL REFERENCES instances(id),
    request_id  text NOT NULL,
    action      text NOT NULL,
    project_id  text NOT NULL,
    user_id     text NOT NULL,
    message     text,
    start_time  timestamptz NOT NULL DEFAULT now(),
    finish_time timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (instance_id, request_id)
);

CREATE TABLE instance_action_events (
    id          bigserial PRIMARY KEY,
    action_id   bigint NOT NULL REFERENCES instance_actions(id),
    event       text NOT NULL,
    host        text,
    result      text,
    details     text,
    start_time  timestamptz NOT NULL DEFAULT now(),
    finish_time timestamptz
);
CREATE INDEX instance_action_events_action_idx ON instance_action_events (action_id);

CREATE TABLE networks (
    id             text PRIMARY KEY,
    project_id     text NOT NULL,
    name           text NOT NULL DEFAULT '',
    description    text NOT NULL DEFAULT '',
    shared         boolean NOT NULL DEFAULT false,
    external       boolean NOT NULL DEFAULT false,
    admin_state_up boolean NOT NULL DEFAULT true,
    status         text NOT NULL DEFAULT 'ACTIVE',
    mtu            integer NOT NULL DEFAULT 1500,
    dns_domain     text NOT NULL DEFAULT '',
    bridge         text NOT NULL UNIQUE,    -- the Linux bridge guests on this network attach to
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE subnets (
    id               text PRIMARY KEY,
    network_id       text NOT NULL REFERENCES networks(id),
    project_id       text NOT NULL,
    name             text NOT NULL DEFAULT '',
    description      text NOT NULL DEFAULT '',
    ip_version       integer NOT NULL DEFAULT 4,
    cidr             cidr NOT NULL,
    gateway_ip       inet,
    enable_dhcp      boolean NOT NULL DEFAULT true,
    allocation_pools jsonb NOT NULL DEFAULT '[]',   -- [{"start": "...", "end": "..."}]
    dns_nameservers  jsonb NOT NULL DEFAULT '[]',
    host_routes      jsonb NOT NULL DEFAULT '[]',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ports (
    id             text PRIMARY KEY,
    network_id     text NOT NULL REFERENCES networks(id),
    project_id     text NOT NULL,
    name           text NOT NULL DEFAULT '',
    description    text NOT NULL DEFAULT '',
    mac_address    macaddr NOT NULL UNIQUE,
    admin_state_up boolean NOT NULL DEFAULT true,
    status         text NOT NULL DEFAULT 'DOWN',
    device_id      text NOT NULL DEFAULT '',
    device_owner   text NOT NULL DEFAULT '',
    binding_host   text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ports_device_idx ON ports (device_id);

-- The primary key makes double allocation of an address impossible, whatever the concurrency.
CREATE TABLE ip_allocations (
    subnet_id  text NOT NULL REFERENCES subnets(id),
    ip_address inet NOT NULL,
    port_id    text NOT NULL REFERENCES ports(id) ON DELETE CASCADE,
    network_id text NOT NULL,
    PRIMARY KEY (subnet_id, ip_address)
);
CREATE INDEX ip_allocations_port_idx ON ip_allocations (port_id);
