#!/usr/bin/env bash
# Runs every cargo-fuzz target of the workspace for SECONDS each (default 20,
# the short CI run; see BENCHMARKS.md for the long runs). The machine's one
# toolchain is stable, so RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z
# sanitizer flags. Usage: scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for dir in */fuzz; do
    [ -f "$dir/Cargo.toml" ] || continue
    crate=${dir%/fuzz}
    for target in $(cd "$crate" && cargo fuzz list); do
        echo "== fuzz $crate/$target for ${secs}s"
        log=$(mktemp)
        if (cd "$crate" && cargo fuzz run "$target" -- -max_total_time="$secs" -print_final_stats=1) >"$log" 2>&1; then
            grep -E "^Done|stat::number_of_executed_units" "$log" || tail -3 "$log"
        else
            tail -60 "$log"
            echo "fuzz target $crate/$target failed"
            exit 1
        fi
    done
done
