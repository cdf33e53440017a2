# Shared by scripts/bench-{nvmf,vhost,local}.sh (sourced, not run).
#
# Every benchmark alternates Pollux and SPDK on one client, the server on
# core 0 and the client on core 1, and reports per row the median IOPS of
# each side, their ratio and the server's CPU per I/O: the server
# process's utime+stime over the client's run divided by the I/Os the
# client counted (for a polling server that is about 1/IOPS of one core).
#
# Env:
#   SPDK_DIR    SPDK source tree with a build (…/build/bin/nvmf_tgt) or the
#               build directory itself. Unset: Pollux alone, no comparison.
#   RUNS        alternations (default 3: the issue asks for >= 3 medians).
#   SECS        seconds per run (default 5).
#   SKIP_BUILD  set: use POLLUX_BIN as it is (a shared build directory may
#               be rebuilt by someone else during a long run).
#   POLLUX_BIN  pollux binary (default build/release/pollux).

set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
SECS=${SECS:-5}
# Client seconds not measured by the server's CPU figure are the client's
# own start-up; the ratio of server CPU to wall time absorbs them.
CLK_TCK=$(getconf CLK_TCK)
# A client that cannot connect or hangs must not stall an unattended run.
CLIENT_TIMEOUT=$((SECS + 60))

bench_dir=$(mktemp -d /tmp/pollux-bench.XXXXXX)
bench_pids=()

# Kills every process this script started (and waits), then removes the
# scratch directory. A leftover spinning target halves every later figure.
bench_cleanup() {
    local p
    for p in "${bench_pids[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${bench_pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    bench_pids=()
    rm -rf "$bench_dir"
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

# bench_start NAME CMD...: runs CMD in the background, output to
# $bench_dir/NAME.log; sets bench_pid.
bench_start() {
    local name=$1
    shift
    "$@" >"$bench_dir/$name.log" 2>&1 &
    bench_pid=$!
    bench_pids+=("$bench_pid")
}

# bench_stop PID: stops one server and waits for it to exit, so that the
# next server gets an idle core.
bench_stop() {
    local p=$1 i
    kill "$p" 2>/dev/null || true
    for i in $(seq 100); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    local kept=()
    for i in "${bench_pids[@]}"; do
        [ "$i" = "$p" ] || kept+=("$i")
    done
    bench_pids=("${kept[@]+"${kept[@]}"}")
}

# bench_wait_for NAME PID TEST...: waits up to 20 s for TEST to succeed
# while PID lives.
bench_wait_for() {
    local name=$1 pid=$2 i
    shift 2
    for i in $(seq 200); do
        "$@" 2>/dev/null && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name exited before it was ready; its log:" >&2
            cat "$bench_dir/$name.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "$name not ready after 20 s; its log:" >&2
    cat "$bench_dir/$name.log" >&2
    exit 1
}

tcp_open() { (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Clock ticks a process has run (all threads, user + system).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
now() { date +%s.%N; }

pollux_build() {
    if [ -z "${SKIP_BUILD:-}" ]; then
        cargo build --release -p pollux-target --bin pollux >/dev/null
    fi
    POLLUX_BIN=$(realpath "${POLLUX_BIN:-build/release/pollux}")
}

# Sets SPDK_BIN, SPDK_EXAMPLES and LD_LIBRARY_PATH, and makes sure huge
# pages are there; returns 1 (and says so) when SPDK_DIR is unset.
spdk_setup() {
    if [ -z "${SPDK_DIR:-}" ]; then
        echo "# SPDK_DIR is not set: running Pollux alone, no SPDK comparison"
        return 1
    fi
    local build=$SPDK_DIR
    [ -d "$SPDK_DIR/build/bin" ] && build=$SPDK_DIR/build
    SPDK_BIN=$build/bin
    SPDK_EXAMPLES=$build/examples
    export LD_LIBRARY_PATH=$build/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    [ -x "$SPDK_BIN/nvmf_tgt" ] || { echo "no $SPDK_BIN/nvmf_tgt: is SPDK_DIR an SPDK build?" >&2; exit 1; }
    # SPDK's apps and clients take their buffers from huge pages. 1024 x
    # 2 MiB covers one server and one client.
    local free
    free=$(awk '/HugePages_Free/ { print $2 }' /proc/meminfo)
    if [ "$free" -lt 512 ]; then
        echo "# HugePages_Free is $free: asking for 1024" >&2
        echo 1024 >/proc/sys/vm/nr_hugepages || { echo "cannot set vm.nr_hugepages (root?)" >&2; exit 1; }
    fi
    if ! grep -q hugetlbfs /proc/mounts; then
        mkdir -p /dev/hugepages
        mount -t hugetlbfs nodev /dev/hugepages
    fi
    return 0
}

# The first number after the colon of SPDK's "Total" line (IOPS, in both
# spdk_nvme_perf's and bdevperf's tables).
spdk_total_iops() {
    # bdevperf starts the line with a carriage return (its progress line).
    tr -d '\r' <"$1" | awk -F: '/^ *Total +:/ { split($2, f, " "); v = f[1] }
        END { if (v == "") exit 1; print v }'
}

# Warns about other storage servers or clients that would share the cores.
bench_check_quiet() {
    local others
    others=$(ps -eo pid=,pcpu=,comm= | awk -v self=$$ \
        '$3 ~ /^(pollux|nvmf_tgt|vhost|bdevperf|spdk_nvme_perf|reactor_|qemu-storage)/ && $1 != self')
    if [ -n "$others" ]; then
        echo "# WARNING: other storage processes are running; figures will be low:" >&2
        echo "$others" | sed 's/^/#   /' >&2
    fi
    echo "# $(date -u +%FT%TZ) $(uname -r), $(nproc) CPUs, load: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# runs=$RUNS secs=$SECS pollux=$POLLUX_BIN${SPDK_DIR:+ spdk=$SPDK_DIR}"
}

results=$bench_dir/results.txt
: >"$results"

# bench_record ROW SIDE IOPS SERVER_TICKS WALL_SECS: one run, printed and
# kept for the summary.
bench_record() {
    local row=$1 side=$2 iops=$3 ticks=$4 wall=$5
    local ns
    ns=$(python3 -c "t,w,i,hz=$ticks,$wall,$iops,$CLK_TCK; print(f'{t/hz/w/i*1e9:.0f}' if i else 'nan')")
    local util
    util=$(python3 -c "print(f'{$ticks/$CLK_TCK/$wall:.2f}')")
    printf '%-22s %-7s %12.0f IOPS  server %s cores, %s ns/IO\n' "$row" "$side" "$iops" "$util" "$ns"
    echo "$row|$side|$iops|$ticks|$wall" >>"$results"
}

# Prints the medians per row, Pollux / SPDK, and the CPU per I/O.
bench_summary() {
    echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
    python3 - "$results" "$CLK_TCK" <<'PY'
import statistics, sys
rows = {}
hz = float(sys.argv[2])
for line in open(sys.argv[1]):
    row, side, iops, ticks, wall = line.strip().split("|")
    iops, ticks, wall = float(iops), float(ticks), float(wall)
    ns = ticks / hz / wall / iops * 1e9 if iops else float("nan")
    rows.setdefault(row, {}).setdefault(side, []).append((iops, ns))
med = statistics.median
def fmt(v):
    return f"{v/1e6:.2f} M" if v >= 1e6 else f"{v/1e3:.1f} k"
print()
print("| row | Pollux IOPS | SPDK IOPS | ratio | Pollux server ns/IO | SPDK server ns/IO | runs |")
print("|---|---:|---:|---:|---:|---:|---:|")
for row, sides in rows.items():
    p = sides.get("pollux", [])
    s = sides.get("spdk", [])
    pi = med(x[0] for x in p) if p else float("nan")
    pn = med(x[1] for x in p) if p else float("nan")
    si = med(x[0] for x in s) if s else float("nan")
    sn = med(x[1] for x in s) if s else float("nan")
    ratio = f"{pi/si:.2f}x" if s and si else "-"
    print(f"| {row} | {fmt(pi) if p else '-'} | {fmt(si) if s else '-'} | {ratio} "
          f"| {pn:.0f} | {sn:.0f} | {len(p)}+{len(s)} |".replace("| nan |", "| - |"))
PY
}

# bench_run_rusage LOG CMD...: runs CMD in the foreground (output to LOG)
# and prints "CPU_TICKS WALL_SECS" of it and its children, for the local
# benchmark, where the server is the measuring process itself.
bench_run_rusage() {
    local log=$1
    shift
    python3 - "$log" "$CLK_TCK" "$@" <<'PY'
import os, subprocess, sys, time
log, hz, cmd = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
t0 = time.monotonic()
with open(log, "w") as out:
    p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    _, status, ru = os.wait4(p.pid, 0)
wall = time.monotonic() - t0
if os.waitstatus_to_exitcode(status) != 0:
    sys.exit(f"{cmd[0]} failed ({status}); see {log}")
print(f"{(ru.ru_utime + ru.ru_stime) * hz:.1f} {wall:.3f}")
PY
}
