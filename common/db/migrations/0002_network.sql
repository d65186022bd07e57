-- Networking for the walking skeleton: port ownership for deallocation, DNS names, revision numbers, indexes.

-- true: made by allocate_for_instance, so deallocate_for_instance deletes it; false: made by a user (or another
-- service) and only passed to a server, so deallocation unbinds it and leaves it for the user.
ALTER TABLE ports ADD COLUMN auto_delete boolean NOT NULL DEFAULT false;
-- the guest's host name; dnsmasq will serve it (forward and reverse DNS) for the port's addresses
ALTER TABLE ports ADD COLUMN dns_name text NOT NULL DEFAULT '';

-- Neutron's revision_number: bumped by every update, so clients can do compare-and-swap later.
ALTER TABLE networks ADD COLUMN revision_number integer NOT NULL DEFAULT 0;
ALTER TABLE subnets ADD COLUMN revision_number integer NOT NULL DEFAULT 0;
ALTER TABLE ports ADD COLUMN revision_number integer NOT NULL DEFAULT 0;

ALTER TABLE subnets ADD CONSTRAINT subnets_ip_version_check CHECK (ip_version IN (4, 6));
ALTER TABLE ports ADD CONSTRAINT ports_status_check CHECK (status IN ('ACTIVE', 'DOWN', 'BUILD', 'ERROR'));

CREATE INDEX networks_project_idx ON networks (project_id);
CREATE INDEX networks_name_idx ON networks (name);
CREATE INDEX subnets_network_idx ON subnets (network_id);
CREATE INDEX ports_network_idx ON ports (network_id);
CREATE INDEX ports_project_idx ON ports (project_id);
