#!/usr/bin/env bash
# The one test command: installs what the tests need, then runs format, lint and every
# test of the workspace (integration tests start their own memcached, redis-server and
# valkey-server processes). That includes the short fault matrices of both backends
# (tests/faults.rs over memcached, tests/faults_redis.rs over a Sentinel group and a
# Cluster, which need redis-server's redis-cli); scripts/faults.sh runs the full ones.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

# install PACKAGE COMMAND... [-- APT-OPTIONS...]: installs PACKAGE with apt-get unless
# every COMMAND is on PATH already. A fresh machine may have no package lists yet.
install() {
    local package=$1 commands=() options=()
    shift
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do commands+=("$1"); shift; done
    [ $# -eq 0 ] || { shift; options=("$@"); }
    local missing=0 command
    for command in "${commands[@]}"; do
        command -v "$command" >/dev/null 2>&1 || missing=1
    done
    [ "$missing" = 1 ] || return 0
    echo "${commands[*]} not found: installing $package with apt-get" >&2
    $sudo apt-get install -y -q --no-install-recommends "${options[@]}" "$package" >/dev/null 2>&1 || {
        $sudo apt-get update -q >/dev/null
        $sudo apt-get install -y -q --no-install-recommends "${options[@]}" "$package" >/dev/null
    }
    for command in "${commands[@]}"; do
        command -v "$command" >/dev/null 2>&1 || { echo "$package installation failed" >&2; exit 1; }
    done
}

install memcached memcached
# redis-server depends on redis-tools, which has redis-cli (the testkit's TLS tests).
install redis-server redis-server redis-cli
# The testkit checks the names in its TLS server certificate with s_client.
install openssl openssl
# Valkey (the Redis store's suites run against it too) is in Debian's backports for
# bookworm: when it is missing, the backports suite of the Debian source apt already
# uses is added to apt's sources.
backports_source() { # codename: the Debian source's entry, for CODENAME-backports
    local suite="$1-backports"
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        awk -v codename="$1" -v suite="$suite" 'BEGIN { RS = ""; ORS = "\n" }
            !done && $0 ~ ("Suites:[^\n]*(^| )" codename "( |\n|$)") {
                sub(/Suites:[^\n]*/, "Suites: " suite); print; done = 1 }' \
            /etc/apt/sources.list.d/debian.sources
    elif [ -f /etc/apt/sources.list ]; then
        awk -v codename="$1" -v suite="$suite" '!done && $1 == "deb" && $3 == codename {
            $3 = suite; print; done = 1 }' /etc/apt/sources.list
    fi
}
if ! command -v valkey-server >/dev/null 2>&1; then
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    if [ "$codename" = bookworm ]; then
        if ! grep -rqs "$codename-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
            entry=$(backports_source "$codename")
            [ -n "$entry" ] || { echo "no Debian source to add $codename-backports to" >&2; exit 1; }
            echo "adding $codename-backports to apt's sources for valkey-server" >&2
            if [[ "$entry" == deb\ * ]]; then
                echo "$entry" | $sudo tee "/etc/apt/sources.list.d/$codename-backports.list" >/dev/null
            else
                echo "$entry" | $sudo tee "/etc/apt/sources.list.d/$codename-backports.sources" >/dev/null
            fi
            $sudo apt-get update -q >/dev/null
        fi
        install valkey-server valkey-server -- -t "$codename-backports"
    else
        install valkey-server valkey-server
    fi
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
