#!/bin/bash
# Build the Stratus test/demo guest image: a small BIOS-bootable qcow2.
#
#   build-guest-image.sh OUT.qcow2
#
# The disk holds an MBR (syslinux mbr.bin) with one active FAT16 partition that carries syslinux, the host's
# Debian cloud kernel and a busybox-static initramfs. The initramfs /init loads the virtio drivers, gets an
# address by DHCP, reads the OpenStack metadata service and prints markers on the serial console:
#
#   STRATUS-GUEST: booted
#   STRATUS-GUEST: ip=<addr>          or  STRATUS-GUEST: no-dhcp
#   STRATUS-GUEST: hostname=<name>    and STRATUS-GUEST: ssh-key=<n>   (or STRATUS-GUEST: no-metadata)
#   STRATUS-GUEST: config-drive hostname=<name> and ssh-key=<n>   (no metadata answered, a config-2 drive did;
#                  without DHCP its network_data.json address is applied: STRATUS-GUEST: config-drive ip=<addr>)
#   STRATUS-GUEST: user-data-start ... user-data-end rc=<n>   (user data starting with #! runs as a script)
#   STRATUS-GUEST: ready
#
# No loop device, no mount, no root-only tool is needed except mknod for /dev/console (optional: /init
# mounts devtmpfs and reopens its console). The build is reproducible for a given kernel and busybox
# (fixed timestamps, --invariant FAT), so the sha256 written to OUT.qcow2.sha256 only changes with its inputs.
#
# Environment:
#   STRATUS_GUEST_KERNEL   kernel image (default: newest /boot/vmlinuz-*cloud-amd64, else newest /boot/vmlinuz-*)
#   STRATUS_GUEST_MODULES  extra modules to put in the initramfs (space-separated names)
set -euo pipefail

usage() {
    echo "usage: $0 OUT.qcow2" >&2
    exit 2
}
[ $# -eq 1 ] || usage
OUT=$1
case "$OUT" in
    *.qcow2) ;;
    *) usage ;;
esac

log() { printf '[build-guest-image] %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

for tool in cpio gzip sfdisk mkfs.vfat mcopy syslinux qemu-img sha256sum; do
    command -v "$tool" >/dev/null || die "$tool not found (run devstack/tools/install-prereqs.sh)"
done
SYSLINUX_MBR=/usr/lib/syslinux/mbr/mbr.bin
[ -r "$SYSLINUX_MBR" ] || die "$SYSLINUX_MBR missing (package syslinux-common)"
# busybox-static's binary: a dynamically linked busybox would need its libraries in the initramfs.
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || die "/bin/busybox missing (package busybox-static)"

# --- kernel -------------------------------------------------------------------------------------------
pick_kernel() {
    if [ -n "${STRATUS_GUEST_KERNEL:-}" ]; then
        echo "$STRATUS_GUEST_KERNEL"
        return
    fi
    local k
    k=$(find /boot -maxdepth 1 -name 'vmlinuz-*cloud-amd64' | sort -V | tail -n 1)
    [ -n "$k" ] || k=$(find /boot -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n 1)
    echo "$k"
}
KERNEL=$(pick_kernel)
{ [ -n "$KERNEL" ] && [ -r "$KERNEL" ]; } || die "no kernel in /boot (install linux-image-cloud-amd64)"
KVER=${KERNEL##*/vmlinuz-}
MODDIR=/lib/modules/$KVER
[ -r "$MODDIR/modules.dep" ] || die "$MODDIR/modules.dep missing for kernel $KVER"
log "kernel $KERNEL ($KVER)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/stratus-guest.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

ROOT=$WORK/initramfs
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,root/.ssh,var/run,etc/acpi/PWRF}
mkdir -p "$ROOT/lib/modules/$KVER"
chmod 700 "$ROOT/root" "$ROOT/root/.ssh"
chmod 1777 "$ROOT/tmp"

# --- userland: busybox-static and its applet links ----------------------------------------------------
cp "$BUSYBOX" "$ROOT/bin/busybox"
while read -r applet; do
    [ "$applet" = "bin/busybox" ] && continue
    mkdir -p "$ROOT/$(dirname "$applet")"
    ln -sf /bin/busybox "$ROOT/$applet"
done < <("$BUSYBOX" --list-full)
ln -sf /bin/busybox "$ROOT/bin/sh"

# /dev/console lets the kernel give /init a console before devtmpfs is mounted. Needs CAP_MKNOD; /init
# copes without it.
mknod -m 600 "$ROOT/dev/console" c 5 1 2>/dev/null || log "mknod /dev/console not permitted; /init will reopen it"

# --- kernel modules: the virtio drivers and everything they depend on, in load order ------------------
# modules.dep lists each module's full dependency closure; a depth-first walk gives a load order with
# dependencies first. Modules built into the kernel (modules.builtin) need nothing.
# ata_piix, sr_mod, cdrom and isofs read a config drive (an ISO 9660 image on the pc machine's IDE cdrom).
WANTED="virtio_pci virtio_blk virtio_net net_failover failover virtio_rng virtio_console button evdev"
WANTED="$WANTED ata_piix sr_mod cdrom isofs ${STRATUS_GUEST_MODULES:-}"
declare -A DEP_OF=() PATH_OF=() SEEN=()
ORDER=()
while IFS= read -r line; do
    path=${line%%:*}
    deps=${line#*:}
    name=${path##*/}
    name=${name%%.ko*}
    name=${name//-/_}
    PATH_OF[$name]=$path
    DEP_OF[$name]=$deps
done <"$MODDIR/modules.dep"

visit() {
    local name=$1 dep dname
    [ -n "${SEEN[$name]:-}" ] && return 0
    SEEN[$name]=1
    # shellcheck disable=SC2086 # word splitting of the dependency list is intended
    for dep in ${DEP_OF[$name]}; do
        dname=${dep##*/}
        dname=${dname%%.ko*}
        visit "${dname//-/_}"
    done
    ORDER+=("$name")
}
for m in $WANTED; do
    m=${m//-/_}
    if [ -n "${PATH_OF[$m]:-}" ]; then
        visit "$m"
    elif grep -q "/${m}\.ko" "$MODDIR/modules.builtin" 2>/dev/null || grep -q "/${m//_/-}\.ko" "$MODDIR/modules.builtin" 2>/dev/null; then
        log "module $m is built into $KVER"
    else
        log "module $m not found for $KVER (skipped)"
    fi
done

: >"$ROOT/etc/modules.order"
for name in "${ORDER[@]}"; do
    src=$MODDIR/${PATH_OF[$name]}
    dst=$ROOT/lib/modules/$KVER/$name.ko
    case "$src" in
        *.ko.xz) xz -dc "$src" >"$dst" ;;
        *.ko.zst) zstd -qdc "$src" >"$dst" ;;
        *.ko.gz) gzip -dc "$src" >"$dst" ;;
        *) cp "$src" "$dst" ;;
    esac
    echo "/lib/modules/$KVER/$name.ko" >>"$ROOT/etc/modules.order"
done
log "modules: ${ORDER[*]}"

# --- guest scripts ------------------------------------------------------------------------------------
cat >"$ROOT/init" <<'EOF'
#!/bin/sh
# Stratus test guest init (PID 1). Prints STRATUS-GUEST: markers on the serial console.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || mdev -s
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts 2>/dev/null
# The kernel may have had no /dev/console to give us: reopen it now that devtmpfs is there.
exec </dev/console >/dev/console 2>&1
# Kernel messages from here on would interleave with the markers.
dmesg -n 1 2>/dev/null
marker() { echo "STRATUS-GUEST: $*"; }
marker booted

hostname stratus-guest
echo "127.0.0.1 localhost" >/etc/hosts
while read -r mod; do
    insmod "$mod" 2>/dev/null
done </etc/modules.order
ip link set lo up

# acpid turns the ACPI power button (virsh shutdown) into a clean power-off.
[ -e /dev/input/event0 ] && acpid -c /etc/acpi -l /tmp/acpid.log 2>/dev/null

# virtio_net probes asynchronously: if there is a virtio network device (id 0x0001), give eth0 up to 3 s.
i=30
grep -qx 0x0001 /sys/bus/virtio/devices/*/device 2>/dev/null && i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 30 ]; do
    usleep 100000
    i=$((i + 1))
done

have_ip=0
if [ -e /sys/class/net/eth0 ]; then
    ip link set eth0 up
    # 5 discover attempts 1 s apart; on a lease udhcpc runs the script and stays in the background to renew.
    # -O staticroutes: ask for option 121 (the route to 169.254.169.254 via the network's DHCP port).
    if udhcpc -i eth0 -s /etc/udhcpc.script -O staticroutes -t 5 -T 1 -A 1 -n -p /run/udhcpc.pid >/tmp/udhcpc.log 2>&1; then
        have_ip=1
    else
        marker no-dhcp
    fi
else
    marker no-dhcp
fi

# apply_meta JSON: hostname and ssh keys from an OpenStack meta_data.json (one line); markers uuid and ssh-key.
apply_meta() {
    name=$(echo "$1" | sed -n 's/.*"hostname": *"\([^"]*\)".*/\1/p')
    [ -n "$name" ] || name=$(echo "$1" | sed -n 's/.*"name": *"\([^"]*\)".*/\1/p')
    uuid=$(echo "$1" | sed -n 's/.*"uuid": *"\([^"]*\)".*/\1/p')
    if [ -n "$name" ]; then
        hostname "${name%%.*}"
        echo "127.0.1.1 $name ${name%%.*}" >>/etc/hosts
    fi
    # public_keys is a {"name": "key", ...} object: every 4th "-separated field is a key.
    echo "$1" | awk '{
        i = index($0, "\"public_keys\""); if (!i) exit
        s = substr($0, i + 13); j = index(s, "{"); if (!j) exit
        s = substr(s, j + 1); k = index(s, "}"); s = substr(s, 1, k - 1)
        n = split(s, a, "\""); for (m = 4; m <= n; m += 4) print a[m]
    }' >/root/.ssh/authorized_keys
    chmod 600 /root/.ssh/authorized_keys
    [ -n "$uuid" ] && marker "uuid=$uuid"
}

# User data that is a script runs once, its output on the console between markers (cloud-init's runcmd, in
# small): tests drive a guest through it.
run_user_data() {
    if [ -s "$1" ] && head -c 2 "$1" | grep -q '^#!'; then
        marker user-data-start
        sh "$1" 2>&1
        marker "user-data-end rc=$?"
    fi
}

# The config drive: an ISO 9660 volume labelled config-2 (the label is at byte 32808 of the volume). The IDE
# cdrom is probed asynchronously: give it up to 2 s to appear. Mounted on /mnt/config; 1 when there is none.
mount_config_drive() {
    i=0
    while [ $i -lt 20 ]; do
        for dev in /dev/sr0 /dev/sr1 /dev/hdc /dev/hdd; do
            [ -b "$dev" ] || continue
            label=$(dd if="$dev" bs=1 skip=32808 count=8 2>/dev/null)
            if [ "$label" = config-2 ]; then
                mkdir -p /mnt/config
                mount -t iso9660 -o ro "$dev" /mnt/config && return 0
            fi
        done
        usleep 100000
        i=$((i + 1))
    done
    return 1
}

md=
if [ $have_ip = 1 ]; then
    for try in 1 2 3; do
        # Debian's busybox 1.35 is built without wget -T (the option segfaults it): bound it with timeout.
        md=$(timeout 3 wget -q -O - http://169.254.169.254/openstack/latest/meta_data.json 2>/dev/null) && break
        md=
        sleep 1
    done
    if [ -n "$md" ]; then
        apply_meta "$(echo "$md" | tr -d '\n')"
        marker "hostname=$(hostname)"
        marker "ssh-key=$(grep -c . /root/.ssh/authorized_keys)"
        timeout 5 wget -q -O /tmp/user-data http://169.254.169.254/openstack/latest/user_data 2>/dev/null &&
            run_user_data /tmp/user-data
    else
        marker no-metadata
        ip -4 route  # for diagnosis: is there a route to 169.254.169.254?
    fi
fi

if [ -z "$md" ] && mount_config_drive; then
    cd_dir=/mnt/config/openstack/latest
    # No DHCP: the first address of network_data.json, on eth0, with its default route.
    if [ $have_ip = 0 ] && [ -e /sys/class/net/eth0 ] && [ -r $cd_dir/network_data.json ]; then
        nd=$(tr -d '\n' <$cd_dir/network_data.json)
        addr=$(echo "$nd" | sed -n 's/.*"ip_address": *"\([^"]*\)".*/\1/p')
        mask=$(echo "$nd" | sed -n 's/.*"netmask": *"\([^"]*\)".*/\1/p')
        gw=$(echo "$nd" | sed -n 's/.*"gateway": *"\([^"]*\)".*/\1/p')
        if [ -n "$addr" ] && ifconfig eth0 "$addr" netmask "${mask:-255.255.255.0}" up; then
            [ -n "$gw" ] && route add default gw "$gw" eth0 2>/dev/null
            marker "config-drive ip=$addr"
        fi
    fi
    apply_meta "$(tr -d '\n' <$cd_dir/meta_data.json)"
    marker "config-drive hostname=$(hostname)"
    marker "ssh-key=$(grep -c . /root/.ssh/authorized_keys)"
    run_user_data $cd_dir/user_data
fi

marker ready
# Stay up: a shell on the serial console, restarted if it exits. PID 1 must never exit.
while :; do
    setsid cttyhack sh -l
    sleep 1
done
EOF
chmod 755 "$ROOT/init"

cat >"$ROOT/etc/udhcpc.script" <<'EOF'
#!/bin/sh
# udhcpc event script: apply address, routes and DNS; announce the address on the console.
event=$1
case "$event" in
deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
bound | renew)
    ip -4 addr flush dev "$interface"
    ip -4 addr add "$ip/${mask:-24}" ${broadcast:+broadcast "$broadcast"} dev "$interface"
    [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
    for r in $router; do
        ip -4 route replace default via "$r" dev "$interface" && break
    done
    # classless static routes (option 121): "dest/len gw dest/len gw ..."
    set -- $staticroutes
    while [ $# -ge 2 ]; do
        ip -4 route replace "$1" via "$2" dev "$interface"
        shift 2
    done
    : >/etc/resolv.conf
    [ -n "$domain" ] && echo "search $domain" >>/etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
    [ "$event" = bound ] && echo "STRATUS-GUEST: ip=$ip" >/dev/console
    ;;
esac
exit 0
EOF
chmod 755 "$ROOT/etc/udhcpc.script"

# busybox acpid runs <confdir>/PWRF/00000080 for the power button.
cat >"$ROOT/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
echo "STRATUS-GUEST: poweroff" >/dev/console
sync
poweroff -f
EOF
chmod 755 "$ROOT/etc/acpi/PWRF/00000080"

cat >"$ROOT/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
EOF
cat >"$ROOT/etc/group" <<'EOF'
root:x:0:
EOF
echo 'export PS1="\h:\w# "' >"$ROOT/etc/profile"

# --- initramfs ------------------------------------------------------------------------------------------
EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
export SOURCE_DATE_EPOCH=$EPOCH # mtools and syslinux stamp FAT entries with it
find "$ROOT" -exec touch -h -d "@$EPOCH" {} +
(cd "$ROOT" && find . -print0 | LC_ALL=C sort -z |
    cpio --null --create --format=newc --owner=0:0 --reproducible --quiet) | gzip -9 -n >"$WORK/initrd.gz"
log "initramfs $(du -k "$WORK/initrd.gz" | cut -f1) KiB"

# --- disk: MBR + one active FAT16 partition at 1 MiB ------------------------------------------------
cat >"$WORK/syslinux.cfg" <<'EOF'
SERIAL 0 115200
DEFAULT stratus
PROMPT 0
TIMEOUT 0
NOESCAPE 1
LABEL stratus
  KERNEL /vmlinuz
  INITRD /initrd.gz
  APPEND console=ttyS0,115200 panic=10
EOF
cp "$KERNEL" "$WORK/vmlinuz"
touch -d "@$EPOCH" "$WORK/vmlinuz" "$WORK/initrd.gz" "$WORK/syslinux.cfg"

PART_START=2048 # sectors
payload_kib=$(( ($(stat -c %s "$WORK/vmlinuz") + $(stat -c %s "$WORK/initrd.gz")) / 1024 ))
# payload + 25% + 4 MiB for FAT structures and syslinux, rounded up to whole MiB; FAT16 needs >= 16 MiB.
part_mib=$(( (payload_kib * 5 / 4 + 4096 + 1023) / 1024 ))
[ "$part_mib" -ge 20 ] || part_mib=20
part_sectors=$((part_mib * 2048))
disk_bytes=$(( (PART_START + part_sectors) * 512 ))
RAW=$WORK/disk.raw
truncate -s "$disk_bytes" "$RAW"

printf 'label: dos\nlabel-id: 0x53545241\nstart=%s, size=%s, type=e, bootable\n' "$PART_START" "$part_sectors" |
    sfdisk --quiet "$RAW" >/dev/null
mkfs.vfat -F 16 -n STRATUS --invariant --offset="$PART_START" -h "$PART_START" "$RAW" $((part_sectors / 2)) >/dev/null
IMG="$RAW@@$((PART_START * 512))"
export MTOOLS_SKIP_CHECK=1
mcopy -m -i "$IMG" "$WORK/vmlinuz" "$WORK/initrd.gz" "$WORK/syslinux.cfg" ::/
syslinux --offset $((PART_START * 512)) --install "$RAW"
dd if="$SYSLINUX_MBR" of="$RAW" bs=440 count=1 conv=notrunc status=none

mkdir -p "$(dirname "$OUT")"
TMP_OUT="$OUT.tmp.$$"
qemu-img convert -q -f raw -O qcow2 "$RAW" "$TMP_OUT"
mv -f "$TMP_OUT" "$OUT"
(cd "$(dirname "$OUT")" && sha256sum "$(basename "$OUT")") >"$OUT.sha256"
log "wrote $OUT ($(du -k "$OUT" | cut -f1) KiB on disk, virtual $((disk_bytes / 1048576)) MiB), sha256 $(cut -d' ' -f1 "$OUT.sha256")"
