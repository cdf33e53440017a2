#!/usr/bin/env bash
# Installs what the test suite's real clients need on a fresh machine
# (idempotent: each step is skipped when already done). Called by
# scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

# SPDK's JSON-RPC client (rpc.py, packaged on PyPI as `spdk`), used by the
# JSON-RPC acceptance tests exactly as SPDK users run it.
if [ ! -x /opt/spdk-rpc/bin/spdk-rpc ]; then
    echo "test-deps: installing SPDK's rpc client into /opt/spdk-rpc"
    python3 -m venv /opt/spdk-rpc
    /opt/spdk-rpc/bin/pip install --quiet spdk==26.9
fi

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
fi
