# shellcheck shell=bash
# Installing Debian packages for the test command, shared by scripts/lib/dockerd.sh,
# scripts/lib/postgres.sh and scripts/test. Defines functions only.
#
#   gantry_as_root CMD...              CMD as root (sudo when not root)
#   gantry_apt_install_missing PKG...  apt-get install of the packages not installed yet
#                                      (apt-get update first; nothing when all are there)

gantry_as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        printf 'need root (or sudo) to run: %s\n' "$*" >&2
        return 1
    fi
}

gantry_apt_install_missing() {
    local pkg missing=()
    for pkg in "$@"; do
        if [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) != "install ok installed" ]]; then
            missing+=("$pkg")
        fi
    done
    ((${#missing[@]})) || return 0
    printf 'installing missing packages: %s\n' "${missing[*]}" >&2
    # The packages' maintainer scripts must not start system services (a system dockerd with
    # its iptables rules and bridge, PostgreSQL on 5432, sshd on 22): the tests start private
    # ones. A policy-rc.d that refuses every start keeps them stopped.
    local policy=/usr/sbin/policy-rc.d created_policy=0 rc=0
    if [[ ! -e $policy ]]; then
        gantry_as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy" ||
            return 1
        created_policy=1
    fi
    gantry_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || rc=$?
    if ((rc == 0)); then
        gantry_as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "${missing[@]}" || rc=$?
    fi
    if ((created_policy)); then
        gantry_as_root rm -f "$policy"
    fi
    return "$rc"
}
