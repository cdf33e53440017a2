#!/usr/bin/env bash
# QoS accuracy (issue 12): how close a limited bdev stays to its limit under
# saturating load. `pollux perf local` drives a null bdev at QD 128 for
# SECONDS (default 10) per run, with the limit set in the config
# ([[qos]] / [[throttle_group]]), on one and on two polling reactors; prints
# each run's achieved rate, its deviation from the limit, and the median.
# The issue's bar: within ±5% of the limit over 10 s.
# Usage: scripts/bench-qos.sh [RUNS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
secs=${2:-10}
cargo build --release -p pollux-target --bin pollux >/dev/null
bin=$PWD/build/release/pollux
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

# case name | cores | rw | bs | qos lines | limit | unit (iops|mib)
cases=(
  "iops-20k|[0]|randread|4096|rw_ios_per_sec = 20000|20000|iops"
  "iops-200k|[0]|randread|4096|rw_ios_per_sec = 200000|200000|iops"
  "iops-100k-2r|[0, 1]|randread|4096|rw_ios_per_sec = 100000|100000|iops"
  "read-100MiB|[0]|randread|65536|r_mbytes_per_sec = 100|100|mib"
  "rw-200MiB-2r|[0, 1]|randrw|131072|rw_mbytes_per_sec = 200|200|mib"
  "group-50k|[0]|randread|4096|group = \"g\"|50000|iops"
)
for c in "${cases[@]}"; do
    IFS='|' read -r name cores rw bs qos limit unit <<<"$c"
    cat >"$dir/q.toml" <<TOML
[reactors]
cores = $cores
idle = "poll"
[metrics]
listen = "127.0.0.1:0"
[[bdev]]
name = "null0"
kind = "null"
size = "4GiB"
block_size = 4096
[[throttle_group]]
name = "g"
rw_ios_per_sec = 50000
[[qos]]
bdev = "null0"
$qos
TOML
    vals=()
    for _ in $(seq "$runs"); do
        out=$(POLLUX_LOG=warn "$bin" perf local --config "$dir/q.toml" --bdev null0 \
            --rw "$rw" --bs "$bs" --qd 128 --time "$secs" --json)
        v=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(r["iops"] if sys.argv[2]=="iops" else r["mib_s"])' "$out" "$unit")
        echo "$name: $v $unit ($out)"
        vals+=("$v")
    done
    python3 - "$name" "$limit" "$unit" "${vals[@]}" <<'PY'
import statistics, sys
name, limit, unit, vals = sys.argv[1], float(sys.argv[2]), sys.argv[3], [float(v) for v in sys.argv[4:]]
dev = [100.0 * (v - limit) / limit for v in vals]
print(f"{name}: limit {limit:g} {unit}, median {statistics.median(vals):.1f} "
      f"({statistics.median(dev):+.2f}%), runs {', '.join(f'{d:+.2f}%' for d in dev)}")
PY
done
