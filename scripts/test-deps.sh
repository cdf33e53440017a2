#!/usr/bin/env bash
# Installs what the test suite's real clients need on a fresh machine
# (idempotent: each step is skipped when already done). Called by
# scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

# SPDK's JSON-RPC client (rpc.py, packaged on PyPI as `spdk`), used by the
# JSON-RPC acceptance tests exactly as SPDK users run it.
# /opt/spdk-rpc (the newest release) is the client most tests use.
#
# Orchestrators pin whichever SPDK release they were built with, so the RPC
# acceptance test (target/tests/rpc_releases.rs) runs rpc.py from every
# release on PyPI, each from its own venv /opt/spdk-rpc-VERSION. The list
# is the test harness's SPDK_RELEASES (target/tests/support/mod.rs).
spdk_venv() { # DIR VERSION: a venv at DIR holding exactly spdk==VERSION
    local dir=$1 version=$2
    if [ -x "$dir/bin/spdk-rpc" ] && [ "$("$dir/bin/python3" -c \
        "import importlib.metadata as m; print(m.version('spdk'))" 2>/dev/null)" = "$version" ]; then
        return
    fi
    echo "test-deps: installing SPDK's rpc client $version into $dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install --quiet "spdk==$version"
}
spdk_venv /opt/spdk-rpc 26.9
for version in 25.5 25.5.1 25.9 26.1 26.5 26.9; do
    spdk_venv "/opt/spdk-rpc-$version" "$version"
done

# Prometheus' promtool and server, from Debian's `prometheus` package: the
# /metrics tests check the exposition with promtool and scrape Pollux with
# a real server (target/tests/metrics.rs; they fail if these are missing).
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
    echo "test-deps: installing Debian's prometheus package"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus
fi

# The Linux guest used as NVMe/TCP and virtio-blk client (shared/vm): it
# installs QEMU and builds its cached image on first use; doing it here
# keeps that minute out of the first test's timeout.
if [ -x ../shared/vm/vm-client ]; then
    ../shared/vm/vm-client --prepare >/dev/null
    # The DH-HMAC-CHAP test's guest (target/tests/nvmf_auth_linux.rs):
    # bookworm-backports' 6.12 kernel, as the 6.1 one lacks
    # CONFIG_NVME_AUTH, in a cache of its own.
    apt_lists=${VM_CLIENT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vm-client}/apt
    kpkg=$(apt-cache -o Dir::Etc::sourcelist="$apt_lists/sources.list" -o Dir::Etc::sourceparts=- \
        -o Dir::State::lists="$apt_lists/lists" -q depends linux-image-6.12-amd64 2>/dev/null \
        | awk '/Depends: linux-image-6\.12\.[^ ]*-amd64$/ {print $2; exit}')
    if [ -n "$kpkg" ]; then
        VM_CLIENT_CACHE="$HOME/.cache/vm-client-nvme-auth" VM_CLIENT_KERNEL_PKG="$kpkg" \
            ../shared/vm/vm-client --prepare >/dev/null
    fi
fi
