# shellcheck shell=bash
# Shared set-up of the benchmarks. Source it from a bench's `run` script, after `set -euo
# pipefail`; it defines variables and functions only and runs nothing.
#
#   BENCH_ROOT, BENCH_CACHE        the repository, ${XDG_CACHE_HOME:-~/.cache}/gantry
#   GCL_VERSION, NODE_DIR, GCL     gitlab-ci-local, pinned, installed into $NODE_DIR by npm
#   CARGO_TARGET_DIR, GANTRY       exported target dir (default $BENCH_CACHE/target), binary
#
#   say MSG / die MSG              progress on stderr / error and exit 1
#   as_root CMD...                 CMD as root (sudo when not root)
#   bench_need CMD...              die unless every CMD is on PATH
#   bench_apt CMD=PKG...           install Debian package PKG when CMD is missing
#   bench_install_gcl              gitlab-ci-local $GCL_VERSION into $NODE_DIR, unless there
#   bench_install_hyperfine        hyperfine from Debian, unless on PATH
#   bench_build_gantry             cargo build --release -p gantry; with BENCH_GANTRY=path,
#                                  that binary instead, unbuilt (GANTRY is set to it)
#   bench_unset_gcl_env            unset every GCL_* variable (gitlab-ci-local reads them as options)
#   bench_machine                  one line: cores, CPU, memory, OS
#   bench_revision                 short HEAD, with +dirty when crates/ or Cargo.* have changes

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/gantry
GCL_VERSION=4.60.0
NODE_DIR=$BENCH_CACHE/bench-node
GCL=$NODE_DIR/node_modules/.bin/gitlab-ci-local
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$BENCH_CACHE/target}
GANTRY=$CARGO_TARGET_DIR/release/gantry

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

bench_need() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null || die "$c is needed"
    done
}

# bench_apt rsync=rsync strace=strace ...: installs the packages of the missing commands.
bench_apt() {
    local pair pkgs=()
    for pair in "$@"; do
        command -v "${pair%%=*}" >/dev/null || pkgs+=("${pair#*=}")
    done
    ((${#pkgs[@]})) || return 0
    say "installing from Debian: ${pkgs[*]}"
    as_root apt-get update -qq >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2
}

bench_install_gcl() {
    command -v node >/dev/null || die "node is needed (gitlab-ci-local $GCL_VERSION wants Node >= 18; the newest gitlab-ci-local wants Node 22)"
    command -v npm >/dev/null || die "npm is needed"
    if [ "$("$GCL" --version 2>/dev/null)" != "$GCL_VERSION" ]; then
        say "installing gitlab-ci-local@$GCL_VERSION into $NODE_DIR (builds re2 from source: a few minutes)"
        mkdir -p "$NODE_DIR"
        npm install --prefix "$NODE_DIR" --save-exact --no-audit --no-fund "gitlab-ci-local@$GCL_VERSION" >&2
        [ "$("$GCL" --version)" = "$GCL_VERSION" ] || die "gitlab-ci-local $GCL_VERSION did not install in $NODE_DIR"
    fi
}

bench_install_hyperfine() {
    bench_apt hyperfine=hyperfine
}

bench_build_gantry() {
    if [[ -n ${BENCH_GANTRY:-} ]]; then
        GANTRY=$BENCH_GANTRY
        [[ -x $GANTRY ]] || die "BENCH_GANTRY: no executable at $GANTRY"
        say "measuring $GANTRY (BENCH_GANTRY; not built)"
        return
    fi
    say "building gantry (release) into $CARGO_TARGET_DIR"
    cargo build --release --quiet -p gantry --manifest-path "$BENCH_ROOT/Cargo.toml" >&2 ||
        die "cargo build --release -p gantry failed (see above)"
    [ -x "$GANTRY" ] || die "no gantry binary at $GANTRY"
}

# gitlab-ci-local reads GCL_* variables as options and ~/.gitlab-ci-local for variables: the
# benches unset the former and pass --home EMPTY_DIR for the latter, so that the user's set-up
# cannot change what is measured.
bench_unset_gcl_env() {
    local v
    while IFS= read -r v; do unset "$v"; done < <(compgen -e | grep '^GCL_' || true)
}

bench_machine() {
    local cpu os
    cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
    # shellcheck disable=SC1091 # the OS's file, not ours
    os=$( (. /etc/os-release && echo "${PRETTY_NAME:-}") 2>/dev/null || true)
    echo "$(nproc) cores, ${cpu:-unknown CPU}, $(free -g | awk '/^Mem:/ {print $2}') GiB, ${os:-unknown OS}, kernel $(uname -r)"
}

bench_revision() {
    local rev
    rev=$(git -C "$BENCH_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    [ -z "$(git -C "$BENCH_ROOT" status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null)" ] || rev="$rev+dirty"
    echo "$rev"
}
