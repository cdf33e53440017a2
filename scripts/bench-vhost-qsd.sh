#!/usr/bin/env bash
# vhost-user-blk: Pollux against qemu-storage-daemon (issue 4, section 7).
#
# Both servers export a null device; the same libblkio client
# (target/examples/blkio_perf.rs, busy-polled poll queues) issues 4K random
# reads at QD 1, 32 and 128. Runs alternate between the servers
# (pollux, qsd, pollux, qsd, ...) so that load from other processes on this
# shared machine hits both alike. Prints every run, then per QD the median
# IOPS of each server, their ratio, and each server's CPU cost per I/O
# (utime+stime of the whole server process over the client's run, from
# /proc/PID/stat).
#
# Layouts:
#   1q: server on core 0 (Pollux: one reactor, idle = "poll"; qsd: one
#       iothread, whole process under taskset -c 0), client on core 1.
#   2q: two queues. Pollux: reactors on cores 0 and 1, one queue each;
#       qsd 10.0 cannot map an export's queues to several iothreads, so it
#       runs num-queues=2 on one iothread, process under taskset -c 0,1.
#       The client (both queues, one thread) stays on core 1, which it
#       then shares with a server thread: on this 2-core machine the 2q
#       numbers measure sharing as much as scaling.
#
# Usage: scripts/bench-vhost-qsd.sh [RUNS] [SECONDS]
# Env: QDS="1 32 128", LAYOUTS="1q 2q"; POLLUX_BASELINE=/path/to/pollux adds
# a third server to the alternation ("base", an older build run with the
# same config) for before/after comparisons. SKIP_BUILD=1 with POLLUX_BIN
# and CLIENT_BIN runs copies of the binaries (a shared build directory may
# be rebuilt by someone else during a long run).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
secs=${2:-5}
qds=${QDS:-"1 32 128"}
layouts=${LAYOUTS:-"1q 2q"}
baseline=${POLLUX_BASELINE:-}
kinds="pollux qsd"
[ -n "$baseline" ] && kinds="pollux qsd base"
# Unmeasured client seconds before each measurement (connection, page
# faults, the servers' adaptive polling settling).
warmup=1
# Bytes: qemu-storage-daemon's null-co wants a plain number.
size=1073741824

if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release -p pollux-target --bin pollux --example blkio_perf >/dev/null
fi
pollux=${POLLUX_BIN:-build/release/pollux}
client=${CLIENT_BIN:-build/release/examples/blkio_perf}
command -v qemu-storage-daemon >/dev/null || { echo "qemu-storage-daemon not installed" >&2; exit 1; }

dir=$(mktemp -d /tmp/bench-vhost.XXXXXX)
server_pid=
stop_server() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
}
trap 'stop_server; rm -rf "$dir"' EXIT

wait_socket() {
    for _ in $(seq 100); do
        [ -S "$1" ] && return 0
        kill -0 "$server_pid" 2>/dev/null || { echo "server exited; log:" >&2; cat "$dir/server.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "no socket $1 after 10 s" >&2
    exit 1
}

# start_server KIND LAYOUT: starts it in the background, sets server_pid
# and sock.
start_server() {
    local kind=$1 layout=$2
    sock=$dir/$kind.sock
    rm -f "$sock"
    if [ "$kind" != qsd ]; then
        local bin=$pollux
        [ "$kind" = base ] && bin=$baseline
        local cores="[0]" nq=1 cpus=0
        if [ "$layout" = 2q ]; then cores="[0, 1]" nq=2 cpus=0,1; fi
        cat >"$dir/pollux.toml" <<EOF
[reactors]
cores = $cores
idle = "poll"

[metrics]
listen = "127.0.0.1:0"

[[bdev]]
name = "null0"
kind = "null"
size = $size

[[vhost.blk]]
socket = "$sock"
bdev = "null0"
num_queues = $nq
EOF
        POLLUX_LOG=warn taskset -c "$cpus" "$bin" --config "$dir/pollux.toml" \
            --rpc-socket "$dir/rpc.sock" >"$dir/server.log" 2>&1 &
    else
        local nq=1 cpus=0
        if [ "$layout" = 2q ]; then nq=2 cpus=0,1; fi
        taskset -c "$cpus" qemu-storage-daemon \
            --blockdev driver=null-co,node-name=null0,size=$size \
            --object iothread,id=io0 \
            --export type=vhost-user-blk,id=e0,node-name=null0,addr.type=unix,addr.path="$sock",writable=on,iothread=io0,num-queues=$nq \
            >"$dir/server.log" 2>&1 &
    fi
    server_pid=$!
    wait_socket "$sock"
}

# Clock ticks the process has run (all threads, user + system).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
now() { date +%s.%N; }

results=$dir/results.txt
: >"$results"
echo "# $(date -u +%FT%TZ) $(uname -r), $(nproc) CPUs, load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# runs=$runs secs=$secs warmup=$warmup qds=[$qds] layouts=[$layouts]"
for layout in $layouts; do
    nq=1
    [ "$layout" = 2q ] && nq=2
    for qd in $qds; do
        for run in $(seq "$runs"); do
            for kind in $kinds; do
                start_server "$kind" "$layout"
                c0=$(cpu_ticks "$server_pid") t0=$(now)
                out=$(taskset -c 1 "$client" --socket "$sock" --queues "$nq" --qd "$qd" \
                    --time "$secs" --warmup "$warmup" --json)
                c1=$(cpu_ticks "$server_pid") t1=$(now)
                stop_server
                # Server cores busy over the client's whole run (warm-up
                # included: the server cannot tell them apart).
                util=$(python3 -c "print(f'{($c1-$c0)/$hz/($t1-$t0):.3f}')")
                echo "$layout qd=$qd run=$run $kind cpu=$util $out"
                echo "$layout $qd $kind $util $out" >>"$results"
            done
        done
    done
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$results" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    layout, qd, kind, util, js = line.split(" ", 4)
    r = json.loads(js)
    rows.setdefault((layout, int(qd)), {}).setdefault(kind, []).append(
        (r["iops"], float(util), r["lat_us"]["p50"], r["lat_us"]["p99"]))
med = statistics.median
print()
print("| layout | QD | Pollux IOPS | qsd IOPS | ratio | Pollux p50/p99 us | qsd p50/p99 us "
      "| Pollux cores, ns/IO | qsd cores, ns/IO | ratio per core |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for (layout, qd), k in sorted(rows.items()):
    def agg(kind):
        v = k[kind]
        iops = med(x[0] for x in v)
        util = med(x[1] for x in v)
        # Core-seconds per I/O at the measured rate, in ns.
        ns = util / iops * 1e9 if iops else float("nan")
        return iops, util, med(x[2] for x in v), med(x[3] for x in v), ns
    p, q = agg("pollux"), agg("qsd")
    ratio = p[0] / q[0] if q[0] else float("nan")
    per_core = q[4] / p[4] if p[4] else float("nan")
    print(f"| {layout} | {qd} | {p[0]/1e3:.0f}k | {q[0]/1e3:.0f}k | {ratio:.2f}x "
          f"| {p[2]:.2f}/{p[3]:.2f} | {q[2]:.2f}/{q[3]:.2f} "
          f"| {p[1]:.2f}, {p[4]:.0f} | {q[1]:.2f}, {q[4]:.0f} | {per_core:.2f}x |")
if any("base" in k for k in rows.values()):
    print()
    print("| layout | QD | baseline IOPS | Pollux IOPS | Pollux/baseline | baseline/qsd |")
    print("|---|---:|---:|---:|---:|---:|")
    for (layout, qd), k in sorted(rows.items()):
        b, p, q = (med(x[0] for x in k[n]) for n in ("base", "pollux", "qsd"))
        print(f"| {layout} | {qd} | {b/1e3:.0f}k | {p/1e3:.0f}k | {p/b:.2f}x | {b/q:.2f}x |")
PY
