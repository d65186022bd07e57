#!/bin/bash
# Install what Stratus needs on a Debian 12 host: distribution packages and the users/groups libvirtd
# insists on. Used by stack.sh and by tox, so it is idempotent and fast when all is present (one dpkg-query,
# no apt-get). Package maintainer scripts are kept from starting daemons (stack.sh starts its own).
#
#   install-prereqs.sh [--check]     --check: report what is missing, install nothing (exit 1 if anything is)
#
# Environment: STRATUS_EXTRA_PACKAGES  more packages to install.
set -euo pipefail

PACKAGES=(
    # services' backing daemons
    postgresql rabbitmq-server haproxy
    # hypervisor
    libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils
    # building libvirt-python into the venv
    libvirt-dev pkg-config python3-venv python3-dev gcc
    # guest image (devstack/tools/build-guest-image.sh)
    linux-image-cloud-amd64 syslinux syslinux-common mtools dosfstools busybox-static fdisk cpio
    # network service (dnsmasq-utils: dhcp_release, which frees a lease when its port goes)
    dnsmasq-base dnsmasq-utils nftables iproute2
    # config drives (ISO 9660, config-2) and isoinfo for their tests
    genisoimage
    # scripts: envsubst, curl, pgrep/ps, runuser/setsid/flock
    gettext-base curl ca-certificates procps util-linux
)
# shellcheck disable=SC2206 # a space-separated list is the documented format
[ -n "${STRATUS_EXTRA_PACKAGES:-}" ] && PACKAGES+=($STRATUS_EXTRA_PACKAGES)

log() { printf '[install-prereqs] %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

CHECK_ONLY=0
[ "${1:-}" = --check ] && CHECK_ONLY=1

command -v dpkg-query >/dev/null || die "this script supports Debian/Ubuntu (dpkg/apt) only"

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        SUDO=(__need_root__)
    fi
fi
as_root() {
    [ "${SUDO[0]:-}" = __need_root__ ] && die "missing prerequisites need root: run $0 as root (or with passwordless sudo)"
    "${SUDO[@]}" "$@"
}

missing_packages() {
    # "ii" = installed; anything else (not installed, half-configured, removed with config) counts as missing.
    dpkg-query -W -f='${db:Status-Abbrev} ${binary:Package}\n' "${PACKAGES[@]}" 2>/dev/null |
        awk '$1 == "ii" { sub(/:.*/, "", $2); print $2 }' >"$INSTALLED" || true # unknown names make dpkg-query fail
    local p
    for p in "${PACKAGES[@]}"; do
        grep -qxF "$p" "$INSTALLED" || echo "$p"
    done
}

missing_accounts() {
    getent group kvm >/dev/null || echo "group:kvm"
    getent group libvirt >/dev/null || echo "group:libvirt"
    getent group libvirt-qemu >/dev/null || echo "group:libvirt-qemu"
    getent passwd libvirt-qemu >/dev/null || echo "user:libvirt-qemu"
}

INSTALLED=$(mktemp)
POLICY_RC_CREATED=0
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    rm -f "$INSTALLED"
    if [ "$POLICY_RC_CREATED" = 1 ]; then
        as_root rm -f /usr/sbin/policy-rc.d
    fi
}
trap cleanup EXIT

mapfile -t MISSING < <(missing_packages)
mapfile -t MISSING_ACCOUNTS < <(missing_accounts)

if [ "${#MISSING[@]}" -eq 0 ] && [ "${#MISSING_ACCOUNTS[@]}" -eq 0 ]; then
    exit 0
fi
if [ "$CHECK_ONLY" = 1 ]; then
    log "missing: ${MISSING[*]} ${MISSING_ACCOUNTS[*]}"
    exit 1
fi

if [ "${#MISSING[@]}" -gt 0 ]; then
    log "installing: ${MISSING[*]}"
    # policy-rc.d exiting 101 tells invoke-rc.d not to start daemons from package scripts. An existing one
    # (a container's) is left as it is.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# Created by Stratus install-prereqs.sh for the duration of apt-get\nexit 101\n' |
            as_root tee /usr/sbin/policy-rc.d >/dev/null
        as_root chmod 755 /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=1
    fi
    apt_get() {
        as_root env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=300 \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
    }
    # Refresh the package lists once, first, when they are missing or older than a day; else only if the
    # install fails (a stale list naming versions the mirror no longer has).
    if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mtime -1 2>/dev/null | head -n 1)" ]; then
        apt_get update
        apt_get install --no-install-recommends "${MISSING[@]}"
    elif ! apt_get install --no-install-recommends "${MISSING[@]}"; then
        apt_get update
        apt_get install --no-install-recommends "${MISSING[@]}"
    fi
    mapfile -t STILL < <(missing_packages)
    [ "${#STILL[@]}" -eq 0 ] || die "still missing after apt-get install: ${STILL[*]}"
fi

# libvirtd refuses to start without the qemu user/group it was built for, even with user = "root" in
# qemu.conf (libvirt-daemon-system normally creates them).
for a in $(missing_accounts); do
    case "$a" in
        group:*) as_root groupadd --system "${a#group:}" ;;
        user:libvirt-qemu)
            as_root useradd --system --gid kvm --no-create-home --home-dir /var/lib/libvirt \
                --shell /usr/sbin/nologin --comment "Libvirt Qemu" libvirt-qemu
            ;;
    esac
    log "created $a"
done
exit 0
