#!/bin/bash
# Bring up a whole Stratus cloud on this machine: prerequisites, PostgreSQL, RabbitMQ, libvirtd, the
# Stratus services behind HAProxy, a guest image, bootstrap data and client credentials.
#
#   devstack/stack.sh
#
# Idempotent: running it again keeps data, secrets and running backing daemons (PostgreSQL, RabbitMQ,
# libvirtd), and restarts HAProxy and the Stratus services with the current code and configuration.
# Settings are environment variables (see devstack/lib/common.sh and docs/devstack.md); the ones used are
# recorded in $STRATUS_RUN/stack.env for unstack.sh. Stop everything with devstack/unstack.sh.
# shellcheck source-path=SCRIPTDIR
set -Eeuo pipefail

DEVSTACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh
source "$DEVSTACK_DIR/lib/common.sh"
# shellcheck source=lib/postgres.sh
source "$DEVSTACK_DIR/lib/postgres.sh"
# shellcheck source=lib/rabbitmq.sh
source "$DEVSTACK_DIR/lib/rabbitmq.sh"
# shellcheck source=lib/libvirt.sh
source "$DEVSTACK_DIR/lib/libvirt.sh"
# shellcheck source=lib/haproxy.sh
source "$DEVSTACK_DIR/lib/haproxy.sh"
# shellcheck source=lib/stratus.sh
source "$DEVSTACK_DIR/lib/stratus.sh"

trap 'echo "stack.sh: FAILED at line $LINENO (exit $?); logs are in $STRATUS_LOGS" >&2' ERR

require_root
T0=$(now_ms)
ensure_dirs
exec 9>"$STRATUS_RUN/stack.lock"
flock -n 9 || die "another stack.sh or unstack.sh is running (lock $STRATUS_RUN/stack.lock)"
save_stack_env
log "Stratus devstack: repo $STRATUS_REPO, data $STRATUS_DATA, $(have_systemd && echo systemd || echo 'no systemd: supervise.sh')"
log "layout: $STRATUS_RABBIT_NODES broker node(s), $STRATUS_API_NODES API node(s), $STRATUS_SCHEDULERS scheduler(s), services: $STRATUS_SERVICES"

phase "prerequisites (apt)" "$DEVSTACK_DIR/tools/install-prereqs.sh"
phase "virtualenv + pip install" install_stratus
phase "postgresql" start_postgres
phase "rabbitmq ($STRATUS_RABBIT_NODES node(s))" start_rabbitmq
phase "libvirtd + virtlogd" start_libvirt
phase "stratus.conf" write_stratus_config
phase "db sync" db_sync
phase "guest image" build_guest_image
phase "bootstrap" bootstrap_cloud
phase "stratus services" start_stratus_services
phase "haproxy" start_haproxy
phase "api healthy via haproxy" wait_for_api
phase "clouds.yaml + openrc" eval 'write_clouds_yaml && write_openrc'
phase "compute host registered" wait_for_compute

echo
echo "================================================================================"
echo " Stratus is up"
echo "================================================================================"
echo " Public endpoint  $STRATUS_PUBLIC_ENDPOINT (HAProxy) -> API node(s) $(haproxy_api_servers "$STRATUS_API_NODES" | awk '{print $3}' | paste -sd' ' -)"
echo " Identity         $STRATUS_AUTH_URL   user admin / project admin"
echo " Admin password   $STRATUS_ADMIN_PASSWORD_FILE"
echo " Broker           $(rabbit_transport_url)"
echo " Database         $(pg_dsn "***") (TCP: $STRATUS_BIND:$STRATUS_PG_PORT)"
echo " Config           $STRATUS_CONF (+ $STRATUS_CONF_D/*.conf)"
echo " Logs             $STRATUS_LOGS"
echo " Guest image      $STRATUS_IMAGE_FILE ($STRATUS_IMAGE_NAME)"
echo " Credentials      $STRATUS_OPENRC, $STRATUS_CLOUDS_YAML (cloud 'stratus')"
echo
echo " Try it:"
echo "   source $STRATUS_OPENRC"
echo "   openstack server create --flavor m1.tiny --image $STRATUS_IMAGE_NAME --network $STRATUS_NETWORK_NAME --wait demo"
echo "   openstack console log show demo | grep STRATUS-GUEST"
echo " Stop:  $DEVSTACK_DIR/unstack.sh   (--purge also deletes data)"
echo
echo " Timings:"
print_phase_times
printf '  %-28s %8s\n' "total" "$(fmt_ms $(($(now_ms) - T0)))"
