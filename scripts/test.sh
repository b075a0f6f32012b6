#!/usr/bin/env bash
# The one test command: installs what the tests need, then runs format, lint and every
# test of the workspace (integration tests start their own memcached and redis-server
# processes).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v memcached >/dev/null 2>&1; then
    echo "memcached not found: installing it with apt-get" >&2
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine may have no package lists yet.
    $sudo apt-get install -y --no-install-recommends memcached >/dev/null 2>&1 || {
        $sudo apt-get update -q >/dev/null
        $sudo apt-get install -y -q --no-install-recommends memcached >/dev/null
    }
    command -v memcached >/dev/null 2>&1 || { echo "memcached installation failed" >&2; exit 1; }
fi

# redis-server (tandem-testkit's RedisProcess); its Debian package depends on
# redis-tools, which has redis-cli (the testkit's TLS tests use it).
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    echo "redis-server or redis-cli not found: installing them with apt-get" >&2
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine may have no package lists yet.
    $sudo apt-get install -y --no-install-recommends redis-server >/dev/null 2>&1 || {
        $sudo apt-get update -q >/dev/null
        $sudo apt-get install -y -q --no-install-recommends redis-server >/dev/null
    }
    command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 || {
        echo "redis-server installation failed" >&2
        exit 1
    }
fi

# openssl: the testkit checks the names in its TLS server certificate with s_client.
if ! command -v openssl >/dev/null 2>&1; then
    echo "openssl not found: installing it with apt-get" >&2
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y --no-install-recommends openssl >/dev/null 2>&1 || {
        $sudo apt-get update -q >/dev/null
        $sudo apt-get install -y -q --no-install-recommends openssl >/dev/null
    }
    command -v openssl >/dev/null 2>&1 || { echo "openssl installation failed" >&2; exit 1; }
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
