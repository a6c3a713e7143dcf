# shellcheck shell=bash
# Private PostgreSQL for Gantry's tests. Source this file; it defines functions only.
#
#   gantry_postgres_install   install Debian's postgresql when no initdb/pg_ctl is found (apt-get)
#   gantry_postgres_start     start (or reuse) the private cluster, create the gantry_test
#                             database, export GANTRY_TEST_POSTGRES_URL;
#                             `--user PID` registers PID as a user of the cluster
#   gantry_postgres_release   PID: unregister; stop the cluster when no user is left
#   gantry_postgres_stop      stop it (pg_ctl on our data dir, then its postmaster.pid) and wait
#   gantry_postgres_status    print state; returns 0 when the server answers, 3 otherwise
#   gantry_postgres_env       print `export GANTRY_TEST_POSTGRES_URL=...` for eval
#   gantry_postgres_url       print the URL alone
#   gantry_postgres_reset     stop and delete the whole state dir (the cluster with it)
#
# Sharing works as for the private dockerd (scripts/lib/dockerd.sh): runs register with
# `--user $$` and release at exit; the last live user stops the cluster unless it is pinned
# ($state/pinned, made by `scripts/postgres start`, removed by `scripts/postgres stop`).
# GANTRY_POSTGRES_FRESH is 1 after a start that launched the server, 0 after one that reused it.
#
# The cluster is never the system one: Debian's binaries (/usr/lib/postgresql/MAJOR/bin, the
# highest installed major) run directly, without pg_ctlcluster, on a data dir, socket dir, log
# and port of our own. It listens on 127.0.0.1 only and trusts every local connection (a test
# database on a developer's machine, nothing more); the superuser `postgres` may create
# databases, which the tests do, one per test. Durability is off (fsync, synchronous_commit,
# full_page_writes): a crash loses the cluster, which a test cluster can afford.
# initdb refuses to run as root: as root everything runs as the `postgres` OS user (which the
# Debian package creates) and the state dir belongs to it; as anyone else, as that user.
#
# Stopping only ever touches our own postmaster: `pg_ctl stop -D $state/data`, and, should that
# fail, the PID in $state/data/postmaster.pid once /proc shows it is a `postgres` process
# started on that data dir. Never pkill, never the system cluster.
#
# Environment (all optional):
#   GANTRY_POSTGRES_STATE         state dir (default /tmp/gantry-test-postgres); keep it short,
#                                 the unix socket path under it must stay below 108 bytes
#   GANTRY_POSTGRES_PORT          TCP port on 127.0.0.1 (default 55432)
#   GANTRY_POSTGRES_TIMEOUT       seconds to wait for the server to answer (default 60)
#   GANTRY_POSTGRES_STOP_TIMEOUT  seconds to wait for it to exit (default 30)
#   GANTRY_POSTGRES_EXTRA_ARGS    extra server options, word-split (e.g. "-c log_statement=all")

GANTRY_POSTGRES_DB=gantry_test
GANTRY_POSTGRES_SUPERUSER=postgres

# 1 after a gantry_postgres_start that launched the server, 0 after one that reused it.
# shellcheck disable=SC2034 # read by the scripts that source this file
GANTRY_POSTGRES_FRESH=0

# shellcheck source=scripts/lib/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

_gantry_pg_log() { printf 'postgres: %s\n' "$*" >&2; }

gantry_postgres_state_dir() { printf '%s\n' "${GANTRY_POSTGRES_STATE:-/tmp/gantry-test-postgres}"; }
gantry_postgres_port() { printf '%s\n' "${GANTRY_POSTGRES_PORT:-55432}"; }

gantry_postgres_url() {
    printf 'postgres://%s@127.0.0.1:%s/%s\n' "$GANTRY_POSTGRES_SUPERUSER" \
        "$(gantry_postgres_port)" "$GANTRY_POSTGRES_DB"
}

gantry_postgres_env() { printf 'export GANTRY_TEST_POSTGRES_URL=%s\n' "$(gantry_postgres_url)"; }

# The bin dir of the highest PostgreSQL major installed from Debian (has initdb and pg_ctl).
_gantry_pg_bindir() {
    local dir best=""
    for dir in /usr/lib/postgresql/*/bin; do
        [[ -x $dir/initdb && -x $dir/pg_ctl && -x $dir/postgres ]] || continue
        if [[ -z $best ]] || [[ $(printf '%s\n%s\n' "$best" "$dir" | sort -V | tail -n1) == "$dir" ]]; then
            best=$dir
        fi
    done
    [[ -n $best ]] || return 1
    printf '%s\n' "$best"
}

_gantry_pg_as_root() { gantry_as_root "$@"; }

# Debian's postgresql (the server binaries and psql), when no server binaries are installed.
# The package's maintainer scripts would create and start the system cluster on port 5432:
# a policy-rc.d that refuses every start keeps it from running (its files stay unused).
gantry_postgres_install() {
    _gantry_pg_bindir >/dev/null && command -v psql >/dev/null 2>&1 && return 0
    gantry_apt_install_missing postgresql postgresql-client || return
    _gantry_pg_bindir >/dev/null || {
        _gantry_pg_log "postgresql is installed but no /usr/lib/postgresql/*/bin/initdb was found"
        return 1
    }
}

# The OS user the server runs as: `postgres` when we are root (initdb refuses root), else us.
_gantry_pg_os_user() {
    if [[ $(id -u) -eq 0 ]]; then
        printf 'postgres\n'
    else
        id -un
    fi
}

# _gantry_pg_run CMD...: CMD as the server's OS user, from the state dir (root's home or the
# caller's cwd may be unreadable to `postgres`).
_gantry_pg_run() {
    local state
    state=$(gantry_postgres_state_dir)
    if [[ $(id -u) -eq 0 ]]; then
        (cd "$state" && runuser -u postgres -- "$@")
    else
        (cd "$state" && "$@")
    fi
}

_gantry_pg_read() {
    local -n _gantry_pg_read_into=$1
    _gantry_pg_read_into=""
    IFS= read -r _gantry_pg_read_into 2>/dev/null <"$2" || [[ -n $_gantry_pg_read_into ]]
}

_gantry_pg_alive() {
    local stat
    _gantry_pg_read stat "/proc/$1/stat" || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

# The PID of our postmaster: the first line of $state/data/postmaster.pid, when /proc shows a
# live `postgres` process whose command line names our data dir (a recycled PID, or another
# cluster's postmaster, is never taken for ours).
_gantry_postgres_pid() {
    local data pid name
    data="$(gantry_postgres_state_dir)/data"
    _gantry_pg_read pid "$data/postmaster.pid" || return 1
    [[ $pid =~ ^[0-9]+$ ]] && _gantry_pg_alive "$pid" || return 1
    _gantry_pg_read name "/proc/$pid/comm" && [[ $name == postgres ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-D $data " || return 1
    printf '%s\n' "$pid"
}

# Answers on TCP as the superuser, on the maintenance database.
_gantry_postgres_answers() {
    local bindir
    bindir=$(_gantry_pg_bindir) || return 1
    "$bindir/pg_isready" -q -h 127.0.0.1 -p "$(gantry_postgres_port)" \
        -U "$GANTRY_POSTGRES_SUPERUSER" -d postgres -t 2 2>/dev/null
}

_gantry_postgres_log_tail() {
    local log
    log="$(gantry_postgres_state_dir)/postgres.log"
    _gantry_pg_log "last lines of $log:"
    tail -n 30 "$log" >&2 2>/dev/null || true
}

# The server options, one per line (see the comment at the top of this file).
gantry_postgres_options() {
    local state
    state=$(gantry_postgres_state_dir)
    printf '%s\n' \
        -c "port=$(gantry_postgres_port)" \
        -c "listen_addresses=127.0.0.1" \
        -c "unix_socket_directories=$state/run" \
        -c fsync=off \
        -c synchronous_commit=off \
        -c full_page_writes=off \
        -c wal_level=minimal \
        -c max_wal_senders=0 \
        -c max_connections=300 \
        -c shared_buffers=128MB
}

# initdb when the data dir holds no cluster yet: superuser `postgres`, trust for local and
# loopback connections, UTF-8 with the C locale (no locale needs to be generated).
_gantry_postgres_init() {
    local state bindir
    state=$(gantry_postgres_state_dir)
    bindir=$(_gantry_pg_bindir) || return 1
    [[ -s $state/data/PG_VERSION ]] && return 0
    rm -rf "$state/data"
    _gantry_pg_log "initdb $state/data ($bindir)"
    _gantry_pg_run "$bindir/initdb" -D "$state/data" -U "$GANTRY_POSTGRES_SUPERUSER" \
        --auth-local=trust --auth-host=trust -E UTF8 --locale=C --no-sync \
        >>"$state/postgres.log" 2>&1 || {
        _gantry_pg_log "initdb failed"
        _gantry_postgres_log_tail
        return 1
    }
}

# Creates the gantry_test database unless it exists.
_gantry_postgres_create_db() {
    local bindir have
    bindir=$(_gantry_pg_bindir) || return 1
    have=$("$bindir/psql" -X -q -h 127.0.0.1 -p "$(gantry_postgres_port)" -U "$GANTRY_POSTGRES_SUPERUSER" \
        -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$GANTRY_POSTGRES_DB'") || return 1
    [[ $have == 1 ]] && return 0
    "$bindir/psql" -X -q -h 127.0.0.1 -p "$(gantry_postgres_port)" -U "$GANTRY_POSTGRES_SUPERUSER" \
        -d postgres -c "CREATE DATABASE $GANTRY_POSTGRES_DB" >/dev/null
}

# _gantry_postgres_wait_ready PID TIMEOUT: waits until the server answers; fails early, with the
# log's tail, when PID exits first.
_gantry_postgres_wait_ready() {
    local pid=$1 timeout=$2 deadline=$((SECONDS + $2))
    until _gantry_postgres_answers; do
        if ! _gantry_pg_alive "$pid"; then
            _gantry_pg_log "postgres (pid $pid) exited before answering on 127.0.0.1:$(gantry_postgres_port)"
            _gantry_postgres_log_tail
            return 1
        fi
        if ((SECONDS >= deadline)); then
            _gantry_pg_log "postgres did not answer on 127.0.0.1:$(gantry_postgres_port) within ${timeout}s"
            _gantry_postgres_log_tail
            return 1
        fi
        sleep 0.1
    done
}

# Starts the private cluster unless ours already runs; creates gantry_test; exports
# GANTRY_TEST_POSTGRES_URL either way.
gantry_postgres_start() {
    local state bindir timeout pid="" lockfd user="" os_user
    if [[ ${1:-} == --user ]]; then
        user=${2:?--user needs a PID}
    fi
    GANTRY_POSTGRES_FRESH=0
    state=$(gantry_postgres_state_dir)
    timeout=${GANTRY_POSTGRES_TIMEOUT:-60}
    if ((${#state} > 80)); then
        _gantry_pg_log "state dir '$state' is too long for a unix socket path; set a shorter GANTRY_POSTGRES_STATE"
        return 1
    fi
    if ! bindir=$(_gantry_pg_bindir); then
        _gantry_pg_log "no /usr/lib/postgresql/*/bin/initdb; run gantry_postgres_install (scripts/postgres install)"
        return 1
    fi
    os_user=$(_gantry_pg_os_user)
    if ! id -u "$os_user" >/dev/null 2>&1; then
        _gantry_pg_log "no '$os_user' OS user to run the server as (Debian's postgresql package creates it)"
        return 1
    fi
    if [[ $state == *[[:space:]]* ]]; then
        _gantry_pg_log "state dir '$state' has a space; set another GANTRY_POSTGRES_STATE"
        return 1
    fi
    # The server's OS user owns the state dir, its socket dir and the log (which both we and
    # the server append to).
    mkdir -p "$state/run"
    touch "$state/postgres.log"
    chmod 0755 "$state"
    if [[ $(id -u) -eq 0 ]]; then
        chown "$os_user:" "$state" "$state/run" "$state/postgres.log"
    fi
    # Serialise concurrent starts on the same state dir.
    exec {lockfd}>"$state/lock"
    if ! flock -w "$((timeout + 30))" "$lockfd"; then
        exec {lockfd}>&-
        _gantry_pg_log "timed out waiting for the lock on $state/lock"
        return 1
    fi

    local rc=0
    if pid=$(_gantry_postgres_pid) &&
        ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "-c port=$(gantry_postgres_port) "; then
        _gantry_pg_log "our postgres (pid $pid) runs on another port than $(gantry_postgres_port); stop it first (scripts/postgres stop)"
        rc=1
    elif [[ -n $pid ]]; then
        # A live server of ours: reuse it once it answers (it may still be starting).
        _gantry_postgres_wait_ready "$pid" "$timeout" || rc=$?
        ((rc)) || _gantry_pg_log "reusing running postgres (pid $pid)"
    elif _gantry_postgres_answers; then
        _gantry_pg_log "something else answers on 127.0.0.1:$(gantry_postgres_port) (not our postmaster); leaving it alone (set GANTRY_POSTGRES_PORT)"
        rc=1
    elif ! _gantry_postgres_init; then
        rc=1
    else
        # A postmaster.pid or socket lock without a live postmaster of ours is stale (a killed
        # server); postgres itself would trust the PID in them while it is not yet reaped.
        rm -f "$state/data/postmaster.pid" "$state/run"/.s.PGSQL.*
        if [[ $(stat -c %s "$state/postgres.log" 2>/dev/null || echo 0) -gt 10485760 ]]; then
            mv -f "$state/postgres.log" "$state/postgres.log.1"
            touch "$state/postgres.log"
            [[ $(id -u) -ne 0 ]] || chown "$os_user:" "$state/postgres.log"
        fi
        local opts extra=()
        mapfile -t opts < <(gantry_postgres_options)
        # shellcheck disable=SC2206 # word splitting of the extra options is intended
        [[ -n ${GANTRY_POSTGRES_EXTRA_ARGS:-} ]] && extra=(${GANTRY_POSTGRES_EXTRA_ARGS})
        printf '\n==== %s starting: %s/postgres -D %s %s\n' "$(date -u +%FT%TZ)" "$bindir" \
            "$state/data" "${opts[*]} ${extra[*]}" >>"$state/postgres.log"
        # pg_ctl starts the postmaster in a session of its own (a Ctrl-C meant for the caller
        # does not reach it), with its output in the log, and waits (-w) until it accepts
        # connections or exits. The lock's fd is not inherited.
        # shellcheck disable=SC2094 # pg_ctl and the server only ever append to the log
        _gantry_pg_run "$bindir/pg_ctl" start -w -t "$timeout" -D "$state/data" \
            -l "$state/postgres.log" -o "${opts[*]} ${extra[*]}" \
            >/dev/null 2>>"$state/postgres.log" {lockfd}>&- || rc=$?
        if ((rc == 0)) && ! pid=$(_gantry_postgres_pid); then
            _gantry_pg_log "pg_ctl started a server but $state/data/postmaster.pid names no postmaster of ours"
            rc=1
        fi
        ((rc)) || _gantry_postgres_wait_ready "$pid" "$timeout" || rc=$?
        if ((rc)); then
            _gantry_pg_log "could not start postgres"
            _gantry_postgres_log_tail
            # Do not leave a half-started server behind.
            gantry_postgres_stop >/dev/null 2>&1 || true
        else
            # shellcheck disable=SC2034 # read by the scripts that source this file
            GANTRY_POSTGRES_FRESH=1
            # Users registered with an earlier server are gone with it.
            rm -rf "$state/users"
            _gantry_pg_log "started postgres $("$bindir/postgres" -V | awk '{print $3}') (pid $pid, 127.0.0.1:$(gantry_postgres_port), socket dir $state/run, log $state/postgres.log)"
        fi
    fi
    if ((rc == 0)); then
        _gantry_postgres_create_db || {
            _gantry_pg_log "could not create the $GANTRY_POSTGRES_DB database"
            rc=1
        }
    fi
    if ((rc == 0)) && [[ -n $user ]]; then
        mkdir -p "$state/users" && : >"$state/users/$user"
    fi
    exec {lockfd}>&-
    ((rc == 0)) || return "$rc"
    GANTRY_TEST_POSTGRES_URL=$(gantry_postgres_url)
    export GANTRY_TEST_POSTGRES_URL
}

# gantry_postgres_release PID: unregisters PID; when no live user is left and the cluster is
# not pinned, stops it. Users that died without releasing (killed runs) do not count.
gantry_postgres_release() {
    local me=${1:?gantry_postgres_release needs a PID} state lockfd entry others=() rc=0
    state=$(gantry_postgres_state_dir)
    [[ -d $state ]] || return 0
    exec {lockfd}>"$state/lock"
    flock -w 120 "$lockfd" || _gantry_pg_log "could not take $state/lock; releasing anyway"
    rm -f "$state/users/$me"
    for entry in "$state"/users/*; do
        [[ -e $entry ]] || continue
        if _gantry_pg_alive "${entry##*/}"; then
            others+=("${entry##*/}")
        else
            rm -f "$entry"
        fi
    done
    if ((${#others[@]})); then
        _gantry_pg_log "leaving postgres running: still used by pid(s) ${others[*]}"
    elif [[ -e $state/pinned ]]; then
        _gantry_pg_log "leaving postgres running: pinned by \`scripts/postgres start\` (\`scripts/postgres stop\` stops it)"
    else
        gantry_postgres_stop || rc=$?
    fi
    exec {lockfd}>&-
    return "$rc"
}

# Stops our postmaster and waits for it to exit: `pg_ctl stop -m fast` on our data dir, then
# SIGTERM/SIGKILL to the PID of its postmaster.pid (checked against /proc) should that fail.
# Succeeds when nothing was running.
gantry_postgres_stop() {
    local state pid bindir timeout rc=0
    state=$(gantry_postgres_state_dir)
    timeout=${GANTRY_POSTGRES_STOP_TIMEOUT:-30}
    rm -rf "$state/users"
    pid=$(_gantry_postgres_pid) || return 0
    if bindir=$(_gantry_pg_bindir); then
        _gantry_pg_run "$bindir/pg_ctl" stop -D "$state/data" -m fast -w -t "$timeout" \
            >/dev/null 2>>"$state/postgres.log" || true
    fi
    if _gantry_pg_alive "$pid"; then
        _gantry_pg_log "pg_ctl could not stop postgres (pid $pid); sending SIGTERM"
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + timeout))
        while _gantry_pg_alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
        if _gantry_pg_alive "$pid"; then
            _gantry_pg_log "postgres (pid $pid) ignored SIGTERM for ${timeout}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
            _gantry_pg_alive "$pid" && rc=1
        fi
    fi
    if ((rc)); then
        _gantry_pg_log "postgres (pid $pid) did not exit"
    else
        _gantry_pg_log "stopped postgres (pid $pid)"
    fi
    return "$rc"
}

gantry_postgres_status() {
    local pid state bindir version
    state=$(gantry_postgres_state_dir)
    if pid=$(_gantry_postgres_pid) && _gantry_postgres_answers; then
        bindir=$(_gantry_pg_bindir)
        version=$("$bindir/psql" -X -h 127.0.0.1 -p "$(gantry_postgres_port)" -U "$GANTRY_POSTGRES_SUPERUSER" \
            -d postgres -tAc 'SHOW server_version' 2>/dev/null || echo '?')
        printf 'running: pid %s, PostgreSQL %s, %s, socket dir %s, log %s%s\n' "$pid" "$version" \
            "$(gantry_postgres_url)" "$state/run" "$state/postgres.log" \
            "$([[ -e $state/pinned ]] && echo ', pinned')"
        return 0
    elif [[ -n ${pid:-} ]]; then
        printf 'starting or unresponsive: pid %s (log %s)\n' "$pid" "$state/postgres.log"
        return 3
    fi
    printf 'not running (state dir %s)\n' "$state"
    return 3
}

# Stops the cluster and deletes its state dir (all databases, the log).
gantry_postgres_reset() {
    local state
    state=$(gantry_postgres_state_dir)
    gantry_postgres_stop || return 1
    [[ -d $state ]] || return 0
    rm -rf --one-file-system "$state"
    _gantry_pg_log "removed $state"
}
