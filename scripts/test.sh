#!/usr/bin/env bash
# The project's test command (README): unit, integration and stress tests,
# then the loom models of the lock-free protocols.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/test-deps.sh

cargo test --workspace

# Loom re-runs the lock-free protocols under every interleaving (bounded):
# the poller's wakeup handshake, and the graph's real publication, grace
# period, pin and drain code. It needs its own cfg, hence its own build dir.
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=build/loom \
    cargo test -p pollux-poller --release --lib loom
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=build/loom \
    cargo test -p pollux-graph --release --lib loom
