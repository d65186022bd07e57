import xml.etree.ElementTree as ET

from services.compute.virt.libvirt import config as vconfig

UUID = "8d3c1a52-3f6e-4a8e-9a57-0b9b6f4c2d11"


def spec(**kw):
    base = dict(
        virt_type="qemu",
        uuid=UUID,
        memory_mb=256,
        vcpus=2,
        disk=vconfig.DiskSpec(path=f"/var/lib/stratus/instances/{UUID}/disk"),
        console_log=f"/var/lib/stratus/instances/{UUID}/console.log",
        interfaces=(
            vconfig.InterfaceSpec(mac="fa:16:3e:00:00:01", bridge="brq1234", target_dev="tapabcdefghijk", mtu=1450),
            vconfig.InterfaceSpec(mac="fa:16:3e:00:00:02", bridge="brq5678", target_dev="tap22222222222"),
        ),
        metadata=vconfig.GuestMetadata(flavor_name="m1.small", disk_gb=5, image_id="img-1", project_id="p1"),
    )
    base.update(kw)
    return vconfig.DomainSpec(**base)


def test_domain_identity_size_and_lifecycle():
    root = ET.fromstring(vconfig.to_xml(spec()))
    assert root.get("type") == "qemu"
    assert root.findtext("name") == f"instance-{UUID}"
    assert root.findtext("uuid") == UUID
    assert root.find("memory").attrib == {"unit": "MiB"} and root.findtext("memory") == "256"
    assert root.findtext("vcpu") == "2"
    assert root.findtext("on_poweroff") == "destroy"
    assert root.findtext("on_reboot") == "restart"
    assert root.find("features/acpi") is not None


def test_bios_boot_from_the_virtio_qcow2_disk():
    root = ET.fromstring(vconfig.to_xml(spec()))
    assert root.find("os/type").attrib == {"arch": "x86_64", "machine": "pc"}
    assert root.findtext("os/type") == "hvm"
    assert root.find("os/boot").get("dev") == "hd"
    assert root.find("os/kernel") is None  # BIOS boot, no direct kernel
    disks = root.findall("devices/disk")
    assert len(disks) == 1
    assert disks[0].find("driver").attrib == {"name": "qemu", "type": "qcow2"}
    assert disks[0].find("source").get("file") == f"/var/lib/stratus/instances/{UUID}/disk"
    assert disks[0].find("target").attrib == {"dev": "vda", "bus": "virtio"}


def test_one_virtio_bridge_nic_per_port():
    root = ET.fromstring(vconfig.to_xml(spec()))
    nics = root.findall("devices/interface")
    assert [n.get("type") for n in nics] == ["bridge", "bridge"]
    first, second = nics
    assert first.find("mac").get("address") == "fa:16:3e:00:00:01"
    assert first.find("source").get("bridge") == "brq1234"
    assert first.find("target").get("dev") == "tapabcdefghijk"
    assert first.find("model").get("type") == "virtio"
    assert first.find("mtu").get("size") == "1450"
    assert second.find("mtu") is None  # no MTU given: libvirt takes the bridge's


def test_serial_console_goes_to_the_log_file():
    root = ET.fromstring(vconfig.to_xml(spec()))
    log = f"/var/lib/stratus/instances/{UUID}/console.log"
    serial = root.find("devices/serial")
    assert serial.get("type") == "file"
    assert serial.find("source").attrib == {"path": log, "append": "off"}
    console = root.find("devices/console")
    assert console.find("target").attrib == {"type": "serial", "port": "0"}
    assert console.find("source").get("path") == log


def test_cpu_passthrough_only_for_kvm():
    assert ET.fromstring(vconfig.to_xml(spec(virt_type="kvm"))).find("cpu").get("mode") == "host-passthrough"
    assert ET.fromstring(vconfig.to_xml(spec(virt_type="qemu"))).find("cpu") is None


def test_metadata_round_trips_through_parse_domain():
    summary = vconfig.parse_domain(vconfig.to_xml(spec()))
    assert summary.uuid == UUID
    assert summary.is_stratus
    assert (summary.vcpus, summary.memory_mb) == (2, 256)
    assert summary.metadata == vconfig.GuestMetadata("m1.small", 5, "img-1", "p1")


def test_parse_domain_of_a_foreign_domain_in_kib():
    xml = "<domain><name>test</name><uuid>u</uuid><memory unit='KiB'>8388608</memory><vcpu>2</vcpu></domain>"
    summary = vconfig.parse_domain(xml)
    assert not summary.is_stratus
    assert summary.memory_mb == 8192
    assert summary.metadata == vconfig.GuestMetadata()


CAPS = """<capabilities>
  <host><cpu><arch>x86_64</arch><model>Skylake</model><vendor>Intel</vendor>
    <topology sockets='1' dies='1' cores='2' threads='1'/><feature name='vmx'/><feature name='aes'/></cpu></host>
  <guest><os_type>hvm</os_type><arch name='i686'><emulator>/usr/bin/qemu-system-i386</emulator>
    <domain type='qemu'/></arch></guest>
  <guest><os_type>hvm</os_type><arch name='x86_64'><emulator>/usr/bin/qemu-system-x86_64</emulator>
    <domain type='qemu'/><domain type='kvm'/></arch></guest>
</capabilities>"""


def test_parse_capabilities():
    caps = vconfig.parse_capabilities(CAPS)
    assert caps.emulator == "/usr/bin/qemu-system-x86_64"
    assert caps.kvm_offered
    assert caps.cpu_info == {
        "arch": "x86_64",
        "model": "Skylake",
        "vendor": "Intel",
        "topology": {"sockets": 1, "dies": 1, "cores": 2, "threads": 1},
        "features": ["aes", "vmx"],
    }


def test_parse_capabilities_without_kvm():
    caps = vconfig.parse_capabilities(CAPS.replace("<domain type='kvm'/>", ""))
    assert not caps.kvm_offered


def test_config_drive_is_a_read_only_raw_ide_cdrom_after_the_boot_disk():
    path = f"/var/lib/stratus/instances/{UUID}/disk.config"
    root = ET.fromstring(vconfig.to_xml(spec(cdrom=vconfig.CdromSpec(path=path))))
    disk, cdrom = root.findall("devices/disk")
    assert disk.get("device") == "disk" and disk.find("target").get("dev") == "vda"
    assert cdrom.attrib == {"type": "file", "device": "cdrom"}
    assert cdrom.find("driver").attrib == {"name": "qemu", "type": "raw"}
    assert cdrom.find("source").get("file") == path
    assert cdrom.find("target").attrib == {"dev": "hdd", "bus": "ide"}
    assert cdrom.find("readonly") is not None
    assert root.find("os/boot").get("dev") == "hd"  # still boots from the virtio disk
