#!/usr/bin/env bash
# bdevperf-style local benchmark: `pollux perf local` on null and ram, one
# polling reactor on core 0, 4K randread at QD 128, RUNS runs each; prints
# every run and the median. Usage: scripts/bench-local.sh [RUNS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
secs=${2:-5}
cargo build --release -p pollux-target --bin pollux >/dev/null
bin=build/release/pollux
cfg=scripts/configs/bench-null.toml
for bdev in null0 ram0; do
    vals=()
    for _ in $(seq "$runs"); do
        out=$(POLLUX_LOG=warn "$bin" perf local --config "$cfg" --bdev "$bdev" \
            --rw randread --bs 4096 --qd 128 --time "$secs" --json)
        echo "$bdev $out"
        vals+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["iops"])' "$out")")
    done
    python3 - "$bdev" "${vals[@]}" <<'PY'
import statistics, sys
name, vals = sys.argv[1], [float(v) for v in sys.argv[2:]]
print(f"{name}: median {statistics.median(vals)/1e6:.2f} M IOPS over {len(vals)} runs "
      f"(min {min(vals)/1e6:.2f}, max {max(vals)/1e6:.2f})")
PY
done
