-- The network node's DHCP agent converges on the database; these triggers wake it (channel stratus_network,
-- payload: the network id) the moment a port, an address, a subnet or a network changes.
CREATE FUNCTION stratus_network_notify() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('stratus_network', COALESCE(OLD.network_id, ''));
    ELSE
        PERFORM pg_notify('stratus_network', COALESCE(NEW.network_id, ''));
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE FUNCTION stratus_network_row_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('stratus_network', CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER ports_network_notify AFTER INSERT OR UPDATE OR DELETE ON ports
    FOR EACH ROW EXECUTE FUNCTION stratus_network_notify();
CREATE TRIGGER ip_allocations_network_notify AFTER INSERT OR UPDATE OR DELETE ON ip_allocations
    FOR EACH ROW EXECUTE FUNCTION stratus_network_notify();
CREATE TRIGGER subnets_network_notify AFTER INSERT OR UPDATE OR DELETE ON subnets
    FOR EACH ROW EXECUTE FUNCTION stratus_network_notify();
CREATE TRIGGER networks_network_notify AFTER INSERT OR UPDATE OR DELETE ON networks
    FOR EACH ROW EXECUTE FUNCTION stratus_network_row_notify();
