-- The DHCP agent serves a port's MAC, name and addresses, for ports of its networks that are up and not its
-- own: only changes to those columns wake it. Binding a port to a host (every claim does) no longer sends a
-- notification, which cost each boot a NOTIFY at commit and a wake-up of every listener.
DROP TRIGGER ports_network_notify ON ports;
CREATE TRIGGER ports_network_notify AFTER INSERT OR DELETE OR UPDATE OF network_id, mac_address, dns_name,
    device_owner, admin_state_up ON ports
    FOR EACH ROW EXECUTE FUNCTION stratus_network_notify();
