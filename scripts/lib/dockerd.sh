# shellcheck shell=bash
# Private Docker Engine for Gantry's tests. Source this file; it defines functions only.
#
#   gantry_dockerd_install   install docker.io / busybox-static / iptables when missing (apt-get)
#   gantry_dockerd_start     start (or reuse) the private daemon, export DOCKER_HOST;
#                            `--user PID` registers PID as a user of the daemon
#   gantry_dockerd_release   PID: unregister; stop the daemon when no user is left
#   gantry_dockerd_stop      stop it by PID and wait for it (and its containerd) to exit
#   gantry_dockerd_status    print state; returns 0 when the daemon answers, 3 otherwise
#   gantry_dockerd_env       print `export DOCKER_HOST=...` for eval
#   gantry_busybox_image     build gantry-test/busybox:latest from the host's busybox-static
#   gantry_dockerd_prune     remove all containers, networks and volumes (not images)
#   gantry_dockerd_reset     stop, unmount leftovers and delete the whole state dir
#
# Sharing: several runs may use one daemon at once (two `scripts/test`, or a developer's cargo
# test beside one). A run registers itself (`--user $$`) and releases at exit; the last live
# user stops the daemon, unless it is pinned ($state/pinned, made by `scripts/dockerd start`,
# removed by `scripts/dockerd stop`). GANTRY_DOCKERD_FRESH is 1 after a start that launched the
# daemon (nobody else can be using it yet), 0 after one that reused it.
#
# The daemon is never the system one: it has its own socket, data-root, exec-root, pidfile,
# config file and containerd namespace, all under $GANTRY_DOCKER_STATE. Nothing is pulled
# from a registry; the only image the tests use is built locally by gantry_busybox_image.
#
# Environment (all optional):
#   GANTRY_DOCKER_STATE          state dir (default /tmp/gantry-test-docker); keep it short,
#                                unix socket paths under it must stay below 108 bytes
#   GANTRY_DOCKERD_TIMEOUT       seconds to wait for the daemon to answer (default 60)
#   GANTRY_DOCKERD_STOP_TIMEOUT  seconds to wait for it to exit after SIGTERM (default 30)
#   GANTRY_DOCKERD_EXTRA_ARGS    extra dockerd flags, word-split (e.g. "--storage-driver vfs")

GANTRY_TEST_IMAGE="gantry-test/busybox:latest"
# Bump when the image layout below changes: an image with another label value is rebuilt.
# crates/gantry-testkit/src/lib.rs (BUSYBOX_LAYOUT) must carry the same value.
GANTRY_TEST_IMAGE_LAYOUT="1"

# 1 after a gantry_dockerd_start that launched the daemon, 0 after one that reused it.
# shellcheck disable=SC2034 # read by the scripts that source this file
GANTRY_DOCKERD_FRESH=0

# shellcheck source=scripts/lib/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

_gantry_log() { printf 'dockerd: %s\n' "$*" >&2; }

gantry_docker_state_dir() { printf '%s\n' "${GANTRY_DOCKER_STATE:-/tmp/gantry-test-docker}"; }

_gantry_as_root() { gantry_as_root "$@"; }

# Everything the Docker-backed tests need on the host.
gantry_dockerd_install() {
    local pkgs=()
    if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
        pkgs+=(docker.io)
    fi
    # The embedded DNS that resolves network aliases programs iptables inside the container's
    # network namespace, so iptables is needed even though the daemon runs with --iptables=false.
    command -v iptables >/dev/null 2>&1 || pkgs+=(iptables)
    # The test image is this static binary; the dynamic `busybox` package would not run in it.
    pkgs+=(busybox-static)
    gantry_apt_install_missing "${pkgs[@]}"
}

_gantry_docker_sock() { printf '%s/docker.sock\n' "$(gantry_docker_state_dir)"; }

# _gantry_read VAR FILE: first line of FILE into VAR; fails when FILE cannot be read or is empty.
# (Plain `read` fails on a last line without newline, which is how dockerd writes its pidfile.)
_gantry_read() {
    local -n _gantry_read_into=$1
    _gantry_read_into=""
    IFS= read -r _gantry_read_into 2>/dev/null <"$2" || [[ -n $_gantry_read_into ]]
}

# _gantry_pid_is PID COMM NEEDLE: PID is alive, is named COMM and has NEEDLE in its command line
# (so a recycled PID or the system daemon is never mistaken for ours).
_gantry_pid_is() {
    local pid=$1 comm=$2 needle=$3 name
    [[ $pid =~ ^[0-9]+$ ]] && _gantry_alive "$pid" || return 1
    _gantry_read name "/proc/$pid/comm" && [[ $name == "$comm" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$needle"
}

# The PID of our daemon: from the pidfile, or, should that be missing or wrong, the dockerd
# process whose command line names our socket.
_gantry_dockerd_pid() {
    local state pid
    state=$(gantry_docker_state_dir)
    if _gantry_read pid "$state/dockerd.pid" && _gantry_pid_is "$pid" dockerd "$state/docker.sock"; then
        printf '%s\n' "$pid"
        return 0
    fi
    _gantry_find_pid dockerd "unix://$state/docker.sock"
}

# _gantry_find_pid COMM NEEDLE: the first live process named COMM with NEEDLE in its command line.
_gantry_find_pid() {
    local dir
    for dir in /proc/[0-9]*; do
        if _gantry_pid_is "${dir#/proc/}" "$1" "$2"; then
            printf '%s\n' "${dir#/proc/}"
            return 0
        fi
    done
    return 1
}

_gantry_containerd_pid() {
    local state pid
    state=$(gantry_docker_state_dir)
    if _gantry_read pid "$state/exec/containerd/containerd.pid" &&
        _gantry_pid_is "$pid" containerd "$state/exec/containerd/"; then
        printf '%s\n' "$pid"
        return 0
    fi
    _gantry_find_pid containerd "$state/exec/containerd/containerd.toml"
}

_gantry_docker_answers() {
    docker -H "unix://$(_gantry_docker_sock)" version --format '{{.Server.APIVersion}}' \
        >/dev/null 2>&1
}

# _gantry_alive PID: the process exists and is not a zombie. (A daemon whose starter has exited
# is reparented to PID 1, which may take a while to reap it; a zombie has exited all the same.)
_gantry_alive() {
    local stat
    _gantry_read stat "/proc/$1/stat" || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

# _gantry_wait_gone PID SECONDS: 0 once PID has exited, 1 on timeout.
_gantry_wait_gone() {
    local pid=$1 deadline=$((SECONDS + $2))
    while _gantry_alive "$pid"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

_gantry_kill_and_wait() {
    local pid=$1 what=$2 timeout=$3
    kill -TERM "$pid" 2>/dev/null || return 0
    if ! _gantry_wait_gone "$pid" "$timeout"; then
        _gantry_log "$what (pid $pid) ignored SIGTERM for ${timeout}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        _gantry_wait_gone "$pid" 10 || {
            _gantry_log "$what (pid $pid) did not exit"
            return 1
        }
    fi
}

# Removes what a daemon that died without cleaning up leaves behind: its pidfile and socket,
# and an orphaned containerd (dockerd would otherwise trust a recycled PID in containerd.pid).
_gantry_dockerd_clean_stale() {
    local state pid
    state=$(gantry_docker_state_dir)
    if _gantry_docker_answers; then
        _gantry_log "a daemon answers on $state/docker.sock but no dockerd process of ours was found; leaving it alone"
        return 1
    fi
    if pid=$(_gantry_containerd_pid); then
        _gantry_log "stopping orphaned containerd (pid $pid)"
        _gantry_kill_and_wait "$pid" containerd 10 || true
    fi
    rm -f "$state/dockerd.pid" "$state/docker.sock" "$state/exec/containerd/containerd.pid"
}

_gantry_dockerd_log_tail() {
    local log
    log="$(gantry_docker_state_dir)/dockerd.log"
    _gantry_log "last lines of $log:"
    tail -n 40 "$log" >&2 2>/dev/null || true
}

# The flags the private daemon runs with (see the comment in gantry_dockerd_start).
gantry_dockerd_flags() {
    local state
    state=$(gantry_docker_state_dir)
    printf '%s\n' \
        -H "unix://$state/docker.sock" \
        --data-root "$state/data" \
        --exec-root "$state/exec" \
        --pidfile "$state/dockerd.pid" \
        --config-file "$state/daemon.json" \
        --containerd-namespace gantry-test \
        --containerd-plugins-namespace gantry-test-plugins \
        --bridge=none \
        --iptables=false \
        --ip-masq=false \
        --ip-forward=false \
        --shutdown-timeout 5
}

# Starts the private daemon unless a live one already answers; exports DOCKER_HOST either way.
#
# Flags, and why:
#   -H/--data-root/--exec-root/--pidfile  everything private, under the state dir
#   --config-file (an empty {})           ignore /etc/docker/daemon.json of the machine
#   --containerd-namespace(s)             dockerd 20.10 reuses a running system containerd
#                                         when /run/containerd/containerd.sock exists; a
#                                         namespace of our own keeps us apart from it
#   --bridge=none                         no default docker0 bridge: nothing to clash with a
#                                         system daemon, nothing left on the host after stop.
#                                         User-defined networks (per-job networks with
#                                         aliases and the embedded DNS) still work
#   --iptables=false --ip-masq=false      leave the host's firewall and NAT alone
#   --ip-forward=false                    do not turn on host routing: container traffic stays
#                                         on its bridge and cannot leave the machine
#   --shutdown-timeout 5                  stop quickly even when a test leaked a container
gantry_dockerd_start() {
    local state sock timeout pid lockfd user=""
    if [[ ${1:-} == --user ]]; then
        user=${2:?--user needs a PID}
    fi
    GANTRY_DOCKERD_FRESH=0
    state=$(gantry_docker_state_dir)
    sock="$state/docker.sock"
    timeout=${GANTRY_DOCKERD_TIMEOUT:-60}
    if ((${#sock} > 90)); then
        _gantry_log "state dir '$state' is too long for unix socket paths; set a shorter GANTRY_DOCKER_STATE"
        return 1
    fi
    if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
        _gantry_log "dockerd/docker not found; run gantry_dockerd_install (scripts/dockerd install)"
        return 1
    fi
    if [[ $(id -u) -ne 0 ]]; then
        _gantry_log "the private dockerd needs root (run as root, or point DOCKER_HOST at an engine and use cargo directly)"
        return 1
    fi
    mkdir -p "$state"
    # Serialise concurrent starts on the same state dir.
    exec {lockfd}>"$state/lock"
    if ! flock -w "$((timeout + 30))" "$lockfd"; then
        exec {lockfd}>&-
        _gantry_log "timed out waiting for the lock on $state/lock"
        return 1
    fi

    local rc=0
    if pid=$(_gantry_dockerd_pid); then
        # A live daemon of ours: reuse it once it answers (it may still be starting).
        _gantry_dockerd_wait_ready "$pid" "$timeout" || rc=$?
        ((rc)) || _gantry_log "reusing running daemon (pid $pid)"
    elif ! _gantry_dockerd_clean_stale; then
        rc=1
    else
        [[ -e $state/daemon.json ]] || printf '{}\n' >"$state/daemon.json"
        # Keep the log from growing without bound across runs.
        if [[ $(stat -c %s "$state/dockerd.log" 2>/dev/null || echo 0) -gt 10485760 ]]; then
            mv -f "$state/dockerd.log" "$state/dockerd.log.1"
        fi
        local flags extra=()
        mapfile -t flags < <(gantry_dockerd_flags)
        # shellcheck disable=SC2206 # word splitting of the extra flags is intended
        [[ -n ${GANTRY_DOCKERD_EXTRA_ARGS:-} ]] && extra=(${GANTRY_DOCKERD_EXTRA_ARGS})
        {
            printf '\n==== %s starting: dockerd' "$(date -u +%FT%TZ)"
            printf ' %q' "${flags[@]}" "${extra[@]}"
            printf '\n'
        } >>"$state/dockerd.log"
        # setsid: the daemon gets a session of its own, so a Ctrl-C meant for the caller does
        # not hit it before the caller's cleanup does; -w keeps the launcher alive as long as
        # dockerd when setsid has to fork. The lock's fd is closed so the daemon never holds it.
        setsid -w dockerd "${flags[@]}" "${extra[@]}" \
            </dev/null >>"$state/dockerd.log" 2>&1 {lockfd}>&- &
        local launcher=$!
        _gantry_dockerd_wait_ready "$launcher" "$timeout" || rc=$?
        if ((rc)); then
            # Do not leave a half-started daemon behind.
            gantry_dockerd_stop >/dev/null 2>&1 || true
            kill -KILL "$launcher" 2>/dev/null || true
        else
            pid=$(_gantry_dockerd_pid) || pid=$launcher
            # shellcheck disable=SC2034 # read by the scripts that source this file
            GANTRY_DOCKERD_FRESH=1
            # Users registered with an earlier daemon are gone with it.
            rm -rf "$state/users"
            _gantry_log "started dockerd (pid $pid, socket $sock, log $state/dockerd.log)"
        fi
    fi
    if ((rc == 0)) && [[ -n $user ]]; then
        mkdir -p "$state/users" && : >"$state/users/$user"
    fi
    exec {lockfd}>&-
    ((rc == 0)) || return "$rc"
    export DOCKER_HOST="unix://$sock"
}

# _gantry_dockerd_wait_ready PID TIMEOUT: waits until the socket answers; fails early, with the
# log's tail, when PID (the daemon, or the `setsid -w` that waits for it) exits first.
_gantry_dockerd_wait_ready() {
    local pid=$1 timeout=$2 deadline=$((SECONDS + $2))
    until _gantry_docker_answers; do
        if ! _gantry_alive "$pid"; then
            _gantry_log "dockerd exited before answering on $(_gantry_docker_sock)"
            _gantry_dockerd_log_tail
            return 1
        fi
        if ((SECONDS >= deadline)); then
            _gantry_log "dockerd did not answer on $(_gantry_docker_sock) within ${timeout}s"
            _gantry_dockerd_log_tail
            return 1
        fi
        sleep 0.2
    done
}

# gantry_dockerd_release PID: unregisters PID; when no live user is left and the daemon is not
# pinned, stops it. Users that died without releasing (killed runs) do not count.
gantry_dockerd_release() {
    local me=${1:?gantry_dockerd_release needs a PID} state lockfd entry others=() rc=0
    state=$(gantry_docker_state_dir)
    [[ -d $state ]] || return 0
    exec {lockfd}>"$state/lock"
    flock -w 120 "$lockfd" || _gantry_log "could not take $state/lock; releasing anyway"
    rm -f "$state/users/$me"
    for entry in "$state"/users/*; do
        [[ -e $entry ]] || continue
        if _gantry_alive "${entry##*/}"; then
            others+=("${entry##*/}")
        else
            rm -f "$entry"
        fi
    done
    if ((${#others[@]})); then
        _gantry_log "leaving dockerd running: still used by pid(s) ${others[*]}"
    elif [[ -e $state/pinned ]]; then
        _gantry_log "leaving dockerd running: pinned by \`scripts/dockerd start\` (\`scripts/dockerd stop\` stops it)"
    else
        gantry_dockerd_stop || rc=$?
    fi
    exec {lockfd}>&-
    return "$rc"
}

# Stops the daemon by its PID (from the pidfile, checked against /proc) and waits for it and
# its managed containerd to exit. Succeeds when nothing was running.
gantry_dockerd_stop() {
    local state pid rc=0
    state=$(gantry_docker_state_dir)
    if pid=$(_gantry_dockerd_pid); then
        _gantry_kill_and_wait "$pid" dockerd "${GANTRY_DOCKERD_STOP_TIMEOUT:-30}" || rc=1
        ((rc)) || _gantry_log "stopped dockerd (pid $pid)"
    fi
    rm -rf "$state/users"
    _gantry_dockerd_clean_stale || rc=1
    # dockerd bind-mounts its data-root onto itself (private propagation) and leaves that
    # mount behind on exit; drop it once nothing of ours runs.
    if ((rc == 0)) && mountpoint -q "$state/data" 2>/dev/null; then
        umount "$state/data" 2>/dev/null || _gantry_log "could not unmount $state/data (busy?)"
    fi
    return "$rc"
}

gantry_dockerd_status() {
    local pid state
    state=$(gantry_docker_state_dir)
    if pid=$(_gantry_dockerd_pid) && _gantry_docker_answers; then
        printf 'running: pid %s, DOCKER_HOST=unix://%s, API %s, log %s\n' "$pid" \
            "$(_gantry_docker_sock)" \
            "$(docker -H "unix://$(_gantry_docker_sock)" version --format '{{.Server.APIVersion}}')" \
            "$state/dockerd.log"
        return 0
    elif [[ -n ${pid:-} ]]; then
        printf 'starting or unresponsive: pid %s (log %s)\n' "$pid" "$state/dockerd.log"
        return 3
    fi
    printf 'not running (state dir %s)\n' "$state"
    return 3
}

gantry_dockerd_env() { printf 'export DOCKER_HOST=unix://%s\n' "$(_gantry_docker_sock)"; }

# Removes every container, network and volume of the private daemon (images stay): what a
# killed test run leaked must not leak into the next one. Needs the daemon running.
gantry_dockerd_prune() {
    local docker=(docker -H "unix://$(_gantry_docker_sock)") ids
    ids=$("${docker[@]}" ps -aq) || return 1
    if [[ -n $ids ]]; then
        # shellcheck disable=SC2086 # one id per word
        "${docker[@]}" rm -f -v $ids >/dev/null || return 1
        _gantry_log "removed $(wc -w <<<"$ids") leftover container(s)"
    fi
    "${docker[@]}" network prune -f >/dev/null || return 1
    "${docker[@]}" volume prune -f >/dev/null || return 1
}

# Stops the daemon and deletes its state dir (images, containers, logs).
gantry_dockerd_reset() {
    local state mnt
    state=$(gantry_docker_state_dir)
    gantry_dockerd_stop || return 1
    [[ -d $state ]] || return 0
    # A killed daemon can leave overlay/shm mounts behind; unmount deepest first.
    while read -r mnt; do
        umount -l "$mnt" 2>/dev/null || true
    done < <(awk -v p="$state/" 'index($2, p) == 1 { print $2 }' /proc/mounts | sort -r)
    rm -rf --one-file-system "$state"
    _gantry_log "removed $state"
}

# Builds gantry-test/busybox:latest unless an image with the current layout label exists.
# Needs a running daemon (DOCKER_HOST) and the busybox-static package; uses no network.
gantry_busybox_image() {
    local docker=(docker -H "${DOCKER_HOST:-unix://$(_gantry_docker_sock)}") have
    have=$("${docker[@]}" image inspect "$GANTRY_TEST_IMAGE" \
        --format '{{index .Config.Labels "org.gantry.testkit.layout"}}' 2>/dev/null) || have=""
    if [[ $have == "$GANTRY_TEST_IMAGE_LAYOUT" ]]; then
        return 0
    fi
    local busybox=/bin/busybox
    if [[ $(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null) != "install ok installed" ]]; then
        _gantry_log "busybox-static is not installed (gantry_dockerd_install installs it)"
        return 1
    fi
    local tmp rc=0
    tmp=$(mktemp -d)
    (
        set -e
        root="$tmp/rootfs"
        mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,proc,sys,dev,var/tmp}
        chmod 1777 "$root/tmp" "$root/var/tmp"
        chmod 700 "$root/root"
        cp "$busybox" "$root/bin/busybox"
        # One symlink per applet at its usual path (bin/sh, usr/bin/wget, ...).
        "$busybox" --list-full | while read -r applet; do
            [[ $applet == bin/busybox || -e $root/$applet ]] && continue
            mkdir -p "$root/$(dirname "$applet")"
            ln -s /bin/busybox "$root/$applet"
        done
        printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
            >"$root/etc/passwd"
        printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
        tar --sort=name --numeric-owner --owner=0 --group=0 --mtime=@0 -C "$root" -cf - . |
            "${docker[@]}" import \
                --change 'CMD ["/bin/sh"]' \
                --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
                --change "LABEL org.gantry.testkit.layout=$GANTRY_TEST_IMAGE_LAYOUT" \
                --message "gantry test image from the host's busybox-static" \
                - "$GANTRY_TEST_IMAGE" >/dev/null
    ) || rc=$?
    rm -rf "$tmp"
    if ((rc)); then
        _gantry_log "building $GANTRY_TEST_IMAGE failed"
        return "$rc"
    fi
    _gantry_log "built $GANTRY_TEST_IMAGE"
}
