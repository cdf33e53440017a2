#!/usr/bin/env bash
# Installs what the test suite's real clients need on a fresh machine
# (idempotent: each step is skipped when already done). Called by
# scripts/test.sh.
set -euo pipefail

# SPDK's JSON-RPC client (rpc.py, packaged on PyPI as `spdk`), used by the
# JSON-RPC acceptance tests exactly as SPDK users run it.
if [ ! -x /opt/spdk-rpc/bin/spdk-rpc ]; then
    echo "test-deps: installing SPDK's rpc client into /opt/spdk-rpc"
    python3 -m venv /opt/spdk-rpc
    /opt/spdk-rpc/bin/pip install --quiet spdk==26.9
fi
