#!/usr/bin/env bash
# NVMe/TCP benchmark: pollux on core 0 (idle = "poll", a null bdev) and our
# initiator `pollux perf nvmf` on core 1, 4 KiB randread at QD 1, 32, 128.
# Prints every run, then per QD the median IOPS / p50 / p99 and the target's
# CPU cost per I/O (its utime+stime over the run divided by the I/Os).
# Usage: scripts/bench-nvmf.sh [RUNS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
secs=${2:-5}
cargo build --release -p pollux-target --bin pollux >/dev/null
bin=$PWD/build/release/pollux
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
nqn=nqn.2024-11.dev.pollux:bench
cat >"$dir/p.toml" <<TOML
[reactors]
cores = [0]
idle = "poll"
[[bdev]]
name = "null0"
kind = "null"
size = "4GiB"
block_size = 4096
[[nvmf.subsystem]]
nqn = "$nqn"
namespaces = ["null0"]
allow_any_host = true
listen = ["127.0.0.1:$port"]
[metrics]
listen = "127.0.0.1:0"
TOML
POLLUX_LOG=warn taskset -c 0 "$bin" --config "$dir/p.toml" --rpc-socket "$dir/rpc.sock" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
    (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
    sleep 0.1
done
clk=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for qd in 1 32 128; do
    results=()
    for _ in $(seq "$runs"); do
        t0=$(cpu_ticks)
        out=$(taskset -c 1 "$bin" perf nvmf --addr "127.0.0.1:$port" --nqn "$nqn" \
            --rw randread --bs 4096 --qd "$qd" --time "$secs" --json)
        t1=$(cpu_ticks)
        echo "qd=$qd $out target_cpu_ticks=$(( t1 - t0 ))"
        results+=("$out|$(( t1 - t0 ))")
    done
    python3 - "$qd" "$secs" "$clk" "${results[@]}" <<'PY'
import json, statistics, sys
qd, secs, clk = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
runs = [(json.loads(r.split("|")[0]), int(r.split("|")[1])) for r in sys.argv[4:]]
iops = statistics.median(r["iops"] for r, _ in runs)
p50 = statistics.median(r["lat_us"]["p50"] for r, _ in runs)
p99 = statistics.median(r["lat_us"]["p99"] for r, _ in runs)
ns_per_io = statistics.median(t / clk * 1e9 / (r["iops"] * secs) for r, t in runs)
print(f"QD {qd:>3}: median {iops/1e3:8.1f} k IOPS, p50 {p50:7.1f} us, p99 {p99:7.1f} us, "
      f"target CPU {ns_per_io:7.0f} ns/IO over {len(runs)} runs")
PY
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
