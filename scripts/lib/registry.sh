# shellcheck shell=bash
# The registry clients Gantry's registry is tested with, and a private peer registry (CNCF
# Distribution 2.8, Debian's docker-registry) to compare it with. Source this file; it defines
# functions only.
#
#   gantry_registry_install   install Debian's skopeo, buildah, umoci and docker-registry when
#                             missing (apt-get); the package's own service is kept stopped and
#                             disabled (our scripts start their own instance)
#   gantry_registry_install_oras  PyPI's oras (the Python SDK of ORAS) in a venv under the
#                             cache dir; exports GANTRY_TEST_ORAS_PYTHON, the venv's python
#   gantry_registry_start     start (or reuse) the private registry, export GANTRY_TEST_REGISTRY
#                             (host:port); `--user PID` registers PID as a user of it
#   gantry_registry_release   PID: unregister; stop the registry when no user is left
#   gantry_registry_stop      stop it by PID and wait for it to exit
#   gantry_registry_status    print state; returns 0 when it answers, 3 otherwise
#   gantry_registry_env       print `export GANTRY_TEST_REGISTRY=127.0.0.1:PORT` for eval
#   gantry_registry_addr      print 127.0.0.1:PORT alone
#   gantry_registry_reset     stop it and delete the whole state dir (every blob with it)
#
# The registry: `docker-registry serve $state/config.yml`, filesystem storage in $state/data,
# listening on 127.0.0.1 on a port picked free at its first start and kept in $state/port
# (GANTRY_REGISTRY_PORT chooses it), no authentication, deletes enabled, no TLS (clients reach
# it as an insecure registry: docker does so by itself for 127.0.0.0/8; skopeo and buildah
# need --tls-verify=false). It is never the system service of the package (port 5000,
# /var/lib/docker-registry). Logs in $state/registry.log.
#
# Sharing works as for the private dockerd (scripts/lib/dockerd.sh): runs register with
# `--user $$` and release at exit; the last live user stops the registry unless it is pinned
# ($state/pinned, made by `scripts/registry start`, removed by `scripts/registry stop`).
# GANTRY_REGISTRY_FRESH is 1 after a start that launched it, 0 after one that reused it.
#
# Environment (all optional):
#   GANTRY_REGISTRY_STATE        state dir (default /tmp/gantry-test-registry)
#   GANTRY_REGISTRY_PORT         TCP port on 127.0.0.1 (default: a free one, kept in $state/port)
#   GANTRY_REGISTRY_LOG_LEVEL    the registry's log level (default info; the bench uses warn)
#   GANTRY_REGISTRY_ACCESS_LOG   1 (default) logs every request, 0 turns the access log off
#   GANTRY_REGISTRY_TIMEOUT      seconds to wait for it to answer (default 30)

# shellcheck disable=SC2034 # read by the scripts that source this file
GANTRY_REGISTRY_FRESH=0

# shellcheck source=scripts/lib/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

_gantry_reg_log() { printf 'registry: %s\n' "$*" >&2; }

gantry_registry_state_dir() { printf '%s\n' "${GANTRY_REGISTRY_STATE:-/tmp/gantry-test-registry}"; }

# The clients and the peer. Debian's docker-registry enables and starts its own service
# (0.0.0.0:5000, /var/lib/docker-registry) from its maintainer scripts: gantry_apt_install_missing
# keeps it from starting (policy-rc.d), and here it is disabled for later boots and stopped
# should it run all the same (a machine where it was installed by hand).
gantry_registry_install() {
    gantry_apt_install_missing skopeo buildah umoci docker-registry || return
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
        gantry_as_root systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
    elif [[ -x /etc/init.d/docker-registry ]]; then
        gantry_as_root update-rc.d docker-registry disable >/dev/null 2>&1 || true
        if gantry_as_root /etc/init.d/docker-registry status >/dev/null 2>&1; then
            _gantry_reg_log "stopping the docker-registry system service (our scripts start their own)"
            gantry_as_root /etc/init.d/docker-registry stop >/dev/null 2>&1 || true
        fi
    fi
}

# PyPI's oras (OCI artifacts: files pushed and pulled without an image config), in a venv of
# its own under the cache directory; Debian's python3-venv only when venvs cannot be made.
gantry_registry_install_oras() {
    local venv="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/gantry/oras-venv"
    if ! "$venv/bin/python" -c 'import oras.client' 2>/dev/null; then
        python3 -c 'import ensurepip, venv' 2>/dev/null || gantry_apt_install_missing python3-venv || return
        rm -rf "$venv"
        python3 -m venv "$venv" && "$venv/bin/python" -m pip install --quiet oras || return
    fi
    export GANTRY_TEST_ORAS_PYTHON="$venv/bin/python"
}

_gantry_reg_read() {
    local -n _gantry_reg_read_into=$1
    _gantry_reg_read_into=""
    IFS= read -r _gantry_reg_read_into 2>/dev/null <"$2" || [[ -n $_gantry_reg_read_into ]]
}

_gantry_reg_alive() {
    local stat
    _gantry_reg_read stat "/proc/$1/stat" || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

# A TCP port on 127.0.0.1 nobody listens on right now.
_gantry_reg_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The port: GANTRY_REGISTRY_PORT, else the one kept in $state/port, else a free one (kept).
gantry_registry_port() {
    local state port=""
    if [[ -n ${GANTRY_REGISTRY_PORT:-} ]]; then
        printf '%s\n' "$GANTRY_REGISTRY_PORT"
        return 0
    fi
    state=$(gantry_registry_state_dir)
    if _gantry_reg_read port "$state/port" && [[ $port =~ ^[0-9]+$ ]]; then
        printf '%s\n' "$port"
        return 0
    fi
    port=$(_gantry_reg_free_port) || return 1
    mkdir -p "$state" && printf '%s\n' "$port" >"$state/port"
    printf '%s\n' "$port"
}

gantry_registry_addr() { printf '127.0.0.1:%s\n' "$(gantry_registry_port)"; }

gantry_registry_env() { printf 'export GANTRY_TEST_REGISTRY=%s\n' "$(gantry_registry_addr)"; }

# The PID of our registry: from $state/registry.pid, when /proc shows a live docker-registry
# whose command line names our config file (a recycled PID or the system service never is).
_gantry_registry_pid() {
    local state pid name
    state=$(gantry_registry_state_dir)
    _gantry_reg_read pid "$state/registry.pid" || return 1
    [[ $pid =~ ^[0-9]+$ ]] && _gantry_reg_alive "$pid" || return 1
    _gantry_reg_read name "/proc/$pid/comm" && [[ $name == docker-registry ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$state/config.yml" || return 1
    printf '%s\n' "$pid"
}

_gantry_registry_answers() {
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
        "http://$(gantry_registry_addr)/v2/" 2>/dev/null) == 200 ]]
}

_gantry_registry_log_tail() {
    local log
    log="$(gantry_registry_state_dir)/registry.log"
    _gantry_reg_log "last lines of $log:"
    tail -n 30 "$log" >&2 2>/dev/null || true
}

# Writes $state/config.yml (see the top of this file).
_gantry_registry_config() {
    local state access=false
    state=$(gantry_registry_state_dir)
    [[ ${GANTRY_REGISTRY_ACCESS_LOG:-1} == 1 ]] || access=true
    cat >"$state/config.yml" <<EOF
# Written by scripts/lib/registry.sh: Gantry's private peer registry.
version: 0.1
log:
  level: ${GANTRY_REGISTRY_LOG_LEVEL:-info}
  accesslog:
    disabled: $access
  fields:
    service: gantry-test-registry
storage:
  filesystem:
    rootdirectory: $state/data
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
  redirect:
    disable: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $(gantry_registry_addr)
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: false
EOF
}

# Starts the private registry unless ours already runs; exports GANTRY_TEST_REGISTRY either way.
gantry_registry_start() {
    local state timeout pid lockfd user=""
    if [[ ${1:-} == --user ]]; then
        user=${2:?--user needs a PID}
    fi
    GANTRY_REGISTRY_FRESH=0
    state=$(gantry_registry_state_dir)
    timeout=${GANTRY_REGISTRY_TIMEOUT:-30}
    if ! command -v docker-registry >/dev/null 2>&1; then
        _gantry_reg_log "docker-registry not found; run gantry_registry_install (scripts/registry install)"
        return 1
    fi
    mkdir -p "$state/data"
    exec {lockfd}>"$state/lock"
    if ! flock -w "$((timeout + 30))" "$lockfd"; then
        exec {lockfd}>&-
        _gantry_reg_log "timed out waiting for the lock on $state/lock"
        return 1
    fi

    local rc=0
    if pid=$(_gantry_registry_pid); then
        local deadline=$((SECONDS + timeout))
        until _gantry_registry_answers; do
            if ((SECONDS >= deadline)) || ! _gantry_reg_alive "$pid"; then
                _gantry_reg_log "our registry (pid $pid) does not answer on $(gantry_registry_addr)"
                rc=1
                break
            fi
            sleep 0.1
        done
        ((rc)) || _gantry_reg_log "reusing running registry (pid $pid)"
    else
        # The kept port may have been taken since: pick another one.
        if [[ -z ${GANTRY_REGISTRY_PORT:-} ]] &&
            ! python3 -c 'import socket,sys; s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1])))' \
                "$(gantry_registry_port)" 2>/dev/null; then
            rm -f "$state/port"
        fi
        if _gantry_registry_answers; then
            _gantry_reg_log "something else answers on $(gantry_registry_addr); leaving it alone (set GANTRY_REGISTRY_PORT)"
            rc=1
        else
            _gantry_registry_config
            if [[ $(stat -c %s "$state/registry.log" 2>/dev/null || echo 0) -gt 10485760 ]]; then
                mv -f "$state/registry.log" "$state/registry.log.1"
            fi
            printf '\n==== %s starting: docker-registry serve %s (%s)\n' "$(date -u +%FT%TZ)" \
                "$state/config.yml" "$(gantry_registry_addr)" >>"$state/registry.log"
            # A session of its own (a Ctrl-C meant for the caller does not reach it); the lock's
            # fd is not inherited.
            setsid docker-registry serve "$state/config.yml" \
                </dev/null >>"$state/registry.log" 2>&1 {lockfd}>&- &
            pid=$!
            printf '%s\n' "$pid" >"$state/registry.pid"
            local deadline=$((SECONDS + timeout))
            until _gantry_registry_answers; do
                if ! _gantry_reg_alive "$pid"; then
                    _gantry_reg_log "docker-registry exited before answering on $(gantry_registry_addr)"
                    rc=1
                    break
                fi
                if ((SECONDS >= deadline)); then
                    _gantry_reg_log "docker-registry did not answer on $(gantry_registry_addr) within ${timeout}s"
                    rc=1
                    break
                fi
                sleep 0.1
            done
            if ((rc)); then
                _gantry_registry_log_tail
                gantry_registry_stop >/dev/null 2>&1 || true
            else
                # shellcheck disable=SC2034 # read by the scripts that source this file
                GANTRY_REGISTRY_FRESH=1
                rm -rf "$state/users"
                _gantry_reg_log "started docker-registry (pid $pid, $(gantry_registry_addr), storage $state/data, log $state/registry.log)"
            fi
        fi
    fi
    if ((rc == 0)) && [[ -n $user ]]; then
        mkdir -p "$state/users" && : >"$state/users/$user"
    fi
    exec {lockfd}>&-
    ((rc == 0)) || return "$rc"
    GANTRY_TEST_REGISTRY=$(gantry_registry_addr)
    export GANTRY_TEST_REGISTRY
}

# gantry_registry_release PID: unregisters PID; when no live user is left and the registry is
# not pinned, stops it. Users that died without releasing (killed runs) do not count.
gantry_registry_release() {
    local me=${1:?gantry_registry_release needs a PID} state lockfd entry others=() rc=0
    state=$(gantry_registry_state_dir)
    [[ -d $state ]] || return 0
    exec {lockfd}>"$state/lock"
    flock -w 60 "$lockfd" || _gantry_reg_log "could not take $state/lock; releasing anyway"
    rm -f "$state/users/$me"
    for entry in "$state"/users/*; do
        [[ -e $entry ]] || continue
        if _gantry_reg_alive "${entry##*/}"; then
            others+=("${entry##*/}")
        else
            rm -f "$entry"
        fi
    done
    if ((${#others[@]})); then
        _gantry_reg_log "leaving the registry running: still used by pid(s) ${others[*]}"
    elif [[ -e $state/pinned ]]; then
        _gantry_reg_log "leaving the registry running: pinned by \`scripts/registry start\` (\`scripts/registry stop\` stops it)"
    else
        gantry_registry_stop || rc=$?
    fi
    exec {lockfd}>&-
    return "$rc"
}

# Stops our registry (SIGTERM, then SIGKILL after 10 s) and waits for it to exit. Succeeds when
# nothing was running.
gantry_registry_stop() {
    local state pid deadline
    state=$(gantry_registry_state_dir)
    rm -rf "$state/users"
    pid=$(_gantry_registry_pid) || {
        rm -f "$state/registry.pid"
        return 0
    }
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 10))
    while _gantry_reg_alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
    if _gantry_reg_alive "$pid"; then
        _gantry_reg_log "docker-registry (pid $pid) ignored SIGTERM for 10s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
        if _gantry_reg_alive "$pid"; then
            _gantry_reg_log "docker-registry (pid $pid) did not exit"
            return 1
        fi
    fi
    rm -f "$state/registry.pid"
    _gantry_reg_log "stopped docker-registry (pid $pid)"
}

gantry_registry_status() {
    local pid state
    state=$(gantry_registry_state_dir)
    if pid=$(_gantry_registry_pid) && _gantry_registry_answers; then
        printf 'running: pid %s, %s, storage %s, log %s%s\n' "$pid" "$(gantry_registry_addr)" \
            "$state/data" "$state/registry.log" "$([[ -e $state/pinned ]] && echo ', pinned')"
        return 0
    elif [[ -n ${pid:-} ]]; then
        printf 'starting or unresponsive: pid %s (log %s)\n' "$pid" "$state/registry.log"
        return 3
    fi
    printf 'not running (state dir %s)\n' "$state"
    return 3
}

# Stops the registry and deletes its state dir (every stored blob, the log, the port).
gantry_registry_reset() {
    local state
    state=$(gantry_registry_state_dir)
    gantry_registry_stop || return 1
    [[ -d $state ]] || return 0
    rm -rf --one-file-system "$state"
    _gantry_reg_log "removed $state"
}
