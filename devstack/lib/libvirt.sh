#!/bin/bash
# libvirtd + virtlogd for qemu:///system (see /work/shared/notes/LIBVIRT.md). With systemd as PID 1 the
# distribution units are used when libvirt-daemon-system installed them, else transient units; without
# systemd the daemons run as `virtlogd -d` / `libvirtd -d` with their default pid files. A libvirtd that
# was already running (someone else's) is used as it is and never stopped by unstack.sh.
# Sourced after common.sh.

LIBVIRT_URI=${LIBVIRT_URI:-qemu:///system}
LIBVIRT_QEMU_CONF=${LIBVIRT_QEMU_CONF:-/etc/libvirt/qemu.conf}
LIBVIRTD_PIDFILE=/var/run/libvirtd.pid
VIRTLOGD_PIDFILE=/var/run/virtlogd.pid

libvirt_ok() { virsh -c "$LIBVIRT_URI" version >/dev/null 2>&1; }

# Guests run as root with no security labelling: a container has no AppArmor/SELinux to label with,
# and root avoids chowning every disk. The three keys are replaced in place; the rest of the file stays.
configure_qemu_conf() {
    local f=$LIBVIRT_QEMU_CONF tmp
    mkdir -p "$(dirname "$f")"
    touch "$f"
    tmp=$(mktemp "$f.XXXXXX")
    sed -E -e '/^[[:space:]]*(user|group|security_driver)[[:space:]]*=/d' \
        -e '/^# Stratus devstack: /d' "$f" >"$tmp"
    {
        echo '# Stratus devstack: guests run as root, no security driver (devstack/lib/libvirt.sh).'
        echo 'user = "root"'
        echo 'group = "root"'
        echo 'security_driver = "none"'
    } >>"$tmp"
    if cmp -s "$tmp" "$f"; then
        rm -f "$tmp"
        return 1 # unchanged
    fi
    chmod 644 "$tmp"
    mv -f "$tmp" "$f"
    return 0
}

start_libvirt() {
    local changed=0
    mkdir -p /var/log/libvirt/qemu /var/run/libvirt /var/lib/libvirt/qemu /var/cache/libvirt
    { getent passwd libvirt-qemu >/dev/null && getent group kvm >/dev/null; } ||
        die "libvirtd needs the libvirt-qemu user and kvm group: run devstack/tools/install-prereqs.sh"
    configure_qemu_conf && changed=1

    if libvirt_ok && [ "$changed" = 0 ]; then
        log "libvirtd already running ($LIBVIRT_URI)"
        return 0
    fi
    if have_systemd; then
        if systemctl cat libvirtd.service >/dev/null 2>&1; then
            systemctl start virtlogd.service 2>/dev/null || systemctl start virtlogd.socket || true
            if [ "$changed" = 1 ]; then systemctl restart libvirtd.service; else systemctl start libvirtd.service; fi
        else
            local d
            for d in virtlogd libvirtd; do
                if [ "$changed" = 1 ] || ! systemctl is-active --quiet "stratus-$d"; then
                    systemctl stop "stratus-$d" >/dev/null 2>&1 || true
                    systemctl reset-failed "stratus-$d" >/dev/null 2>&1 || true
                    systemd-run --quiet --unit="stratus-$d" --description="Stratus $d" -p Restart=on-failure \
                        -- "/usr/sbin/$d"
                fi
            done
        fi
    else
        if ! pid_alive "$VIRTLOGD_PIDFILE" virtlogd; then
            virtlogd -d 9>&- || die "virtlogd did not start"
            touch "$STRATUS_RUN/virtlogd.started-by-stratus"
        fi
        if pid_alive "$LIBVIRTD_PIDFILE" libvirtd && [ "$changed" = 1 ]; then
            log "restarting libvirtd: $LIBVIRT_QEMU_CONF changed"
            stop_pidfile libvirtd "$LIBVIRTD_PIDFILE" libvirtd
        fi
        if ! pid_alive "$LIBVIRTD_PIDFILE" libvirtd; then
            # Errors about dnsmasq, D-Bus and DMI at start are harmless here.
            libvirtd -d >>"$STRATUS_LOGS/libvirtd.out" 2>&1 9>&- || die "libvirtd did not start: see $STRATUS_LOGS/libvirtd.out"
            touch "$STRATUS_RUN/libvirtd.started-by-stratus"
        fi
    fi
    wait_for "libvirtd ($LIBVIRT_URI)" 30 libvirt_ok || die "virsh -c $LIBVIRT_URI version fails: $(virsh -c "$LIBVIRT_URI" version 2>&1 | tail -n 3)"
    log "$(virsh -c "$LIBVIRT_URI" version 2>/dev/null | grep -E 'Running hypervisor|libvirt' | paste -sd';' -)"
}

# Stops only the daemons. Guests (domains, named by the compute service) keep running as orphaned qemu
# processes: stopping or destroying them is the compute service's job, and an operator who wants them
# gone runs `virsh destroy` before unstack.sh.
stop_libvirt() {
    if have_systemd; then
        local d
        for d in libvirtd virtlogd; do
            systemctl is-active --quiet "stratus-$d" 2>/dev/null && systemctl stop "stratus-$d"
            systemctl reset-failed "stratus-$d" >/dev/null 2>&1 || true
        done
        return 0 # distribution units (libvirt-daemon-system) are left to the distribution
    fi
    if [ -f "$STRATUS_RUN/libvirtd.started-by-stratus" ]; then
        stop_pidfile libvirtd "$LIBVIRTD_PIDFILE" libvirtd
        rm -f "$STRATUS_RUN/libvirtd.started-by-stratus"
    fi
    if [ -f "$STRATUS_RUN/virtlogd.started-by-stratus" ]; then
        stop_pidfile virtlogd "$VIRTLOGD_PIDFILE" virtlogd
        rm -f "$STRATUS_RUN/virtlogd.started-by-stratus"
    fi
}
