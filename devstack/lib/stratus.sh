#!/bin/bash
# The Stratus Python services: virtualenv, configuration, schema, the service processes, bootstrap data,
# client credentials. Sourced after common.sh (and rabbitmq.sh for the transport URL).
# shellcheck disable=SC2153 # STRATUS_* settings come from common.sh

STRATUS_CONF_D=${STRATUS_CONF_D:-$STRATUS_CONF_DIR/stratus.conf.d}
STRATUS_ADMIN_PASSWORD_FILE=${STRATUS_ADMIN_PASSWORD_FILE:-$STRATUS_DATA/admin-password}
STRATUS_TOKEN_SECRET_FILE=${STRATUS_TOKEN_SECRET_FILE:-$STRATUS_DATA/token-secret}
STRATUS_DEBUG=${STRATUS_DEBUG:-false}

STRATUS_PUBLIC_ENDPOINT="http://$STRATUS_BIND:$STRATUS_LB_PORT"
STRATUS_AUTH_URL="$STRATUS_PUBLIC_ENDPOINT/identity/v3"
STRATUS_CONSOLE_SCRIPTS="stratus-api stratus-scheduler stratus-compute stratus-network stratus-manage"

# --- virtualenv ---------------------------------------------------------------------------------------
# `pip install -e REPO[test]` (the test extra brings python-openstackclient). Skipped when setup.cfg and
# pyproject.toml are unchanged since the last successful install; STRATUS_PIP_FORCE=1 forces it.
install_stratus() {
    local stamp want s
    if [ ! -x "$STRATUS_VENV/bin/python" ]; then
        log "creating virtualenv $STRATUS_VENV ($("$STRATUS_PYTHON" --version 2>&1))"
        "$STRATUS_PYTHON" -m venv "$STRATUS_VENV" || die "python3 -m venv failed (install python3-venv)"
    fi
    stamp=$STRATUS_VENV/.stratus-install-stamp
    want=$(cat "$STRATUS_REPO/setup.cfg" "$STRATUS_REPO/pyproject.toml" 2>/dev/null | sha256sum | cut -d' ' -f1)
    want="$want $STRATUS_REPO"
    if [ "${STRATUS_PIP_FORCE:-0}" != 1 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        local ok=1
        for s in $STRATUS_CONSOLE_SCRIPTS openstack; do
            [ -x "$STRATUS_VENV/bin/$s" ] || ok=0
        done
        if [ "$ok" = 1 ]; then
            log "virtualenv up to date (editable install of $STRATUS_REPO)"
            return 0
        fi
    fi
    log "pip install -e ${STRATUS_REPO}[test] (log: $STRATUS_LOGS/pip.log)"
    if ! "$STRATUS_VENV/bin/pip" install --disable-pip-version-check -e "${STRATUS_REPO}[test]" \
        >"$STRATUS_LOGS/pip.log" 2>&1; then
        tail -n 30 "$STRATUS_LOGS/pip.log" >&2
        die "pip install failed: see $STRATUS_LOGS/pip.log"
    fi
    echo "$want" >"$stamp"
}

# --- configuration ------------------------------------------------------------------------------------
# /etc/stratus/stratus.conf is rewritten on every run (local changes belong in stratus.conf.d/*.conf,
# which every service reads after it). Secrets are generated once and kept in $STRATUS_DATA.
write_stratus_config() {
    local token_secret tmp i
    # 64 characters: HS256 wants a key of at least 32 bytes (PyJWT warns below that).
    token_secret=$(persistent_secret "$STRATUS_TOKEN_SECRET_FILE" 64)
    mkdir -p "$STRATUS_CONF_DIR" "$STRATUS_CONF_D" "$STRATUS_DATA/state"
    tmp=$(mktemp "$STRATUS_CONF.XXXXXX")
    cat >"$tmp" <<EOF
# Written by devstack/stack.sh on $(date -Is); rewritten on every run.
# Put local overrides in $STRATUS_CONF_D/*.conf (read after this file).
# Each service gets its log file on the command line (--log-file $STRATUS_LOGS/<service>.log).

[DEFAULT]
host = $STRATUS_HOST
transport_url = $(rabbit_transport_url)
state_path = $STRATUS_DATA/state
debug = $STRATUS_DEBUG

[messaging]
failover_strategy = $STRATUS_FAILOVER_STRATEGY
preferred_node_check_interval = 30

[database]
connection = $(pg_dsn "$STRATUS_DB_PASSWORD")

[api]
listen_host = $STRATUS_BIND
listen_port = $STRATUS_API_PORT
public_endpoint = $STRATUS_PUBLIC_ENDPOINT
region_name = $STRATUS_REGION
token_secret = $token_secret

[compute]
virt_type = auto
connection_uri = qemu:///system

[network]
# This machine is the network node: per-network namespace with dnsmasq (DHCP/DNS) and the metadata server.
serve_dhcp = true
EOF
    chmod 640 "$tmp"
    mv -f "$tmp" "$STRATUS_CONF"
    # API nodes 2..N differ only in their port.
    rm -f "$STRATUS_CONF_DIR"/api-*.conf
    for ((i = 2; i <= STRATUS_API_NODES; i++)); do
        printf '# API node %d (devstack/stack.sh)\n[api]\nlisten_port = %d\n' "$i" $((STRATUS_API_PORT + i - 1)) \
            >"$STRATUS_CONF_DIR/api-$i.conf"
    done
    # Schedulers 2..N differ only in their host name (one services row each, so status shows each one).
    rm -f "$STRATUS_CONF_DIR"/scheduler-*.conf
    for ((i = 2; i <= STRATUS_SCHEDULERS; i++)); do
        printf '# scheduler %d (devstack/stack.sh)\n[DEFAULT]\nhost = %s-scheduler-%d\n' "$i" "$STRATUS_HOST" "$i" \
            >"$STRATUS_CONF_DIR/scheduler-$i.conf"
    done
}

# Arguments every Stratus command gets.
stratus_conf_args() {
    printf '%s\n' --config-file "$STRATUS_CONF" --config-dir "$STRATUS_CONF_D"
}

stratus_manage() {
    local -a conf_args
    mapfile -t conf_args < <(stratus_conf_args)
    "$STRATUS_VENV/bin/stratus-manage" "${conf_args[@]}" "$@"
}

db_sync() {
    stratus_manage db sync 2>&1 | tee -a "$STRATUS_LOGS/manage.log" >&2 ||
        die "stratus-manage db sync failed: see $STRATUS_LOGS/manage.log"
}

# --- guest image --------------------------------------------------------------------------------------
# Built once; rebuilt when the build script changed or STRATUS_REBUILD_IMAGE=1.
build_guest_image() {
    local script=$DEVSTACK_DIR/tools/build-guest-image.sh
    if [ "${STRATUS_REBUILD_IMAGE:-0}" != 1 ] && [ -s "$STRATUS_IMAGE_FILE" ] &&
        [ -s "$STRATUS_IMAGE_FILE.sha256" ] && [ ! "$script" -nt "$STRATUS_IMAGE_FILE" ]; then
        log "guest image $STRATUS_IMAGE_FILE already built"
        return 0
    fi
    "$script" "$STRATUS_IMAGE_FILE" 2>&1 | tee "$STRATUS_LOGS/build-guest-image.log" >&2 ||
        die "guest image build failed: see $STRATUS_LOGS/build-guest-image.log"
}

bootstrap_cloud() {
    local password
    password=$(persistent_secret "$STRATUS_ADMIN_PASSWORD_FILE")
    stratus_manage bootstrap --admin-password "$password" \
        --image-name "$STRATUS_IMAGE_NAME" --image-file "$STRATUS_IMAGE_FILE" \
        --network-name "$STRATUS_NETWORK_NAME" --subnet-cidr "$STRATUS_SUBNET_CIDR" \
        2>&1 | tee -a "$STRATUS_LOGS/manage.log" >&2 || die "stratus-manage bootstrap failed: see $STRATUS_LOGS/manage.log"
}

# --- services -----------------------------------------------------------------------------------------
# Daemon names: api (node 1), api-2 ... api-N, scheduler, scheduler-2 ... scheduler-N, compute, network. Units stratus-<name> under
# systemd; supervised processes with $STRATUS_RUN/<name>.pid otherwise. Logs: $STRATUS_LOGS/<name>.log
# (the service's own) and <name>.out (its stdout/stderr: tracebacks from before logging is set up).
api_node_name() { if [ "$1" = 1 ]; then echo api; else echo "api-$1"; fi; }
scheduler_name() { if [ "$1" = 1 ]; then echo scheduler; else echo "scheduler-$1"; fi; }

# The log-file flag: oslo.log's spelling is --log-file; an option registered as "log_file" is --log_file.
# Asked once from stratus-api --help so either spelling works.
LOG_FILE_FLAG=""
log_file_flag() {
    if [ -z "$LOG_FILE_FLAG" ]; then
        if "$STRATUS_VENV/bin/stratus-api" --help 2>/dev/null | grep -q -- '--log-file'; then
            LOG_FILE_FLAG=--log-file
        else
            LOG_FILE_FLAG=--log_file
        fi
    fi
    echo "$LOG_FILE_FLAG"
}

start_stratus_service() {
    local svc=$1 name=${2:-$1}
    local -a args
    mapfile -t args < <(stratus_conf_args)
    [ -f "$STRATUS_CONF_DIR/$name.conf" ] && args+=(--config-file "$STRATUS_CONF_DIR/$name.conf")
    log "starting stratus-$svc as $name"
    # Where this start's output begins in NAME.out (wait_for_api reads only what follows).
    mkdir -p "$STRATUS_LOGS"
    touch "$STRATUS_LOGS/$name.out"
    wc -l <"$STRATUS_LOGS/$name.out" >"$STRATUS_RUN/$name.out-offset"
    start_daemon "$name" -- "$STRATUS_VENV/bin/stratus-$svc" "${args[@]}" "$(log_file_flag)" "$STRATUS_LOGS/$name.log"
}

# How many times NAME's process exited since start_stratus_service (supervise.sh logs each exit).
service_exits() {
    local name=$1 offset=0
    if have_systemd; then
        systemctl show -p NRestarts --value "stratus-$name" 2>/dev/null || echo 0
        return 0
    fi
    [ -s "$STRATUS_RUN/$name.out-offset" ] && offset=$(cat "$STRATUS_RUN/$name.out-offset")
    tail -n "+$((offset + 1))" "$STRATUS_LOGS/$name.out" 2>/dev/null | grep -c "supervise\[$name\]: exited" || true
}

service_enabled() { [[ " $STRATUS_SERVICES " == *" $1 "* ]]; }

start_stratus_services() {
    local svc i
    # A re-run restarts everything with the current code and configuration.
    stop_stratus_services
    # Scheduler first: it hosts the conductor the computes report to.
    if service_enabled scheduler; then
        for ((i = 1; i <= STRATUS_SCHEDULERS; i++)); do
            start_stratus_service scheduler "$(scheduler_name "$i")"
        done
    fi
    for svc in network compute; do
        service_enabled "$svc" && start_stratus_service "$svc"
    done
    if service_enabled api; then
        for ((i = 1; i <= STRATUS_API_NODES; i++)); do
            start_stratus_service api "$(api_node_name "$i")"
        done
    fi
    return 0
}

# Stops every service this cloud may run, whatever STRATUS_SERVICES says now. In reverse: API nodes first,
# so no new work arrives while the workers drain.
stop_stratus_services() {
    local i name
    local -a api=()
    for ((i = 1; i <= 9; i++)); do
        name=$(api_node_name "$i")
        if daemon_running "$name" || [ -e "$STRATUS_RUN/$name.supervisor.pid" ]; then api+=("$name"); fi
    done
    [ "${#api[@]}" -eq 0 ] || stop_daemons "${api[@]}"
    stop_daemons compute network
    local -a sched=(scheduler)
    for ((i = 2; i <= 9; i++)); do
        name=$(scheduler_name "$i")
        if daemon_running "$name" || [ -e "$STRATUS_RUN/$name.supervisor.pid" ]; then sched+=("$name"); fi
    done
    stop_daemons "${sched[@]}"
}

api_healthy() {
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$STRATUS_PUBLIC_ENDPOINT/healthcheck")" = 200 ]
}

# Healthy, or give up early (status 2) when API node 1 has already crashed 3 times.
api_healthy_or_crashing() {
    api_healthy && return 0
    [ "$(service_exits api)" -lt 3 ] || return 2
    return 1
}

wait_for_api() {
    service_enabled api || return 0
    local deadline rc=1
    deadline=$(($(now_ms) + STRATUS_API_TIMEOUT * 1000))
    while [ "$(now_ms)" -lt "$deadline" ]; do
        rc=0
        api_healthy_or_crashing || rc=$?
        [ "$rc" = 1 ] || break
        sleep 0.3
    done
    if [ "$rc" != 0 ]; then
        local f
        for f in "$STRATUS_LOGS/api.log" "$STRATUS_LOGS/api.out" "$STRATUS_LOGS/haproxy.out"; do
            [ -s "$f" ] || continue
            echo "----- last lines of $f -----" >&2
            tail -n 25 "$f" >&2
        done
        echo "----- curl -i $STRATUS_PUBLIC_ENDPOINT/healthcheck -----" >&2
        curl -s -i --max-time 2 "$STRATUS_PUBLIC_ENDPOINT/healthcheck" >&2 || true
        echo >&2
        [ "$rc" = 2 ] && die "stratus-api keeps exiting (3 times already): see the log lines above"
        die "the API did not become healthy within ${STRATUS_API_TIMEOUT}s (STRATUS_API_TIMEOUT)"
    fi
}

# --- clients ------------------------------------------------------------------------------------------
write_clouds_yaml() {
    local password
    password=$(persistent_secret "$STRATUS_ADMIN_PASSWORD_FILE")
    mkdir -p "$(dirname "$STRATUS_CLOUDS_YAML")"
    # Merge the "stratus" entry into an existing clouds.yaml (PyYAML comes with openstacksdk).
    CLOUDS_YAML=$STRATUS_CLOUDS_YAML AUTH_URL=$STRATUS_AUTH_URL PASSWORD=$password REGION=$STRATUS_REGION \
        "$STRATUS_VENV/bin/python" - <<'EOF' || die "could not write $STRATUS_CLOUDS_YAML"
import os
import yaml

path = os.environ["CLOUDS_YAML"]
try:
    with open(path) as f:
        data = yaml.safe_load(f) or {}
except FileNotFoundError:
    data = {}
data.setdefault("clouds", {})["stratus"] = {
    "auth": {
        "auth_url": os.environ["AUTH_URL"],
        "username": "admin",
        "password": os.environ["PASSWORD"],
        "project_name": "admin",
        "user_domain_name": "Default",
        "project_domain_name": "Default",
    },
    "region_name": os.environ["REGION"],
    "identity_api_version": 3,
    "interface": "public",
}
tmp = path + ".tmp"
with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
    f.write("# The 'stratus' cloud is written by Stratus devstack/stack.sh.\n")
    yaml.safe_dump(data, f, default_flow_style=False, sort_keys=False)
os.replace(tmp, path)
EOF
}

write_openrc() {
    local password tmp
    password=$(persistent_secret "$STRATUS_ADMIN_PASSWORD_FILE")
    tmp=$(mktemp "$STRATUS_OPENRC.XXXXXX")
    cat >"$tmp" <<EOF
# Stratus admin credentials and the venv's openstack CLI. Usage: source $STRATUS_OPENRC
# (written by devstack/stack.sh)
export OS_AUTH_TYPE=password
export OS_AUTH_URL=$STRATUS_AUTH_URL
export OS_IDENTITY_API_VERSION=3
export OS_USERNAME=admin
export OS_PASSWORD=$password
export OS_PROJECT_NAME=admin
export OS_USER_DOMAIN_NAME=Default
export OS_PROJECT_DOMAIN_NAME=Default
export OS_REGION_NAME=$STRATUS_REGION
export OS_INTERFACE=public
unset OS_CLOUD
case ":\$PATH:" in
    *":$STRATUS_VENV/bin:"*) ;;
    *) export PATH="$STRATUS_VENV/bin:\$PATH" ;;
esac
EOF
    chmod 600 "$tmp"
    mv -f "$tmp" "$STRATUS_OPENRC"
}

# Wait (not fatal) until the compute host has reported to the scheduler's conductor, so that a server
# create right after stack.sh finds a host.
compute_listed() {
    OS_CLOUD=stratus OS_CLIENT_CONFIG_FILE=$STRATUS_CLOUDS_YAML \
        "$STRATUS_VENV/bin/openstack" hypervisor list -f value -c "Hypervisor Hostname" 2>/dev/null | grep -q .
}

wait_for_compute() {
    { service_enabled compute && service_enabled api; } || return 0
    wait_for "a compute host in 'openstack hypervisor list'" "${STRATUS_COMPUTE_TIMEOUT:-60}" compute_listed ||
        warn "no hypervisor listed yet: check $STRATUS_LOGS/compute.log and scheduler.log"
}

stratus_status() {
    stratus_manage status 2>&1 || warn "stratus-manage status reports a problem (above)"
}
