#!/usr/bin/env bash
# vhost-user-blk (issue 10, row 4): pollux against SPDK's vhost app, both
# on core 0 exporting a 4 GiB null bdev (4 KiB blocks) with 2 queues, and
# one client for both, SPDK's bdevperf on core 1 with a virtio-user bdev
# (bdev_virtio_attach_controller -t user --vq-count 2), 4 KiB randread at
# QD 128. Runs alternate pollux, vhost, pollux, ... (a fresh server per
# run); prints every run, then the medians, Pollux / SPDK and the server's
# CPU per I/O (its utime+stime over the client's run / the client's I/Os).
#
# Usage: [SPDK_DIR=/opt/spdk] [RUNS=3] [SECS=5] scripts/bench-vhost.sh
# Env: QD (default 128). Without SPDK_DIR there is no SPDK vhost and no
# bdevperf: Pollux alone, driven by the libblkio client
# (target/examples/blkio_perf.rs). scripts/bench-vhost-qsd.sh compares
# with qemu-storage-daemon instead.
source "$(dirname "$0")/bench-lib.sh"
qd=${QD:-128}
queues=2
pollux_build
have_spdk=1
spdk_setup || have_spdk=
if [ -z "$have_spdk" ] && [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release -p pollux-target --example blkio_perf >/dev/null
fi
bench_check_quiet

# start_server SIDE: sets server_pid and sock.
start_server() {
    if [ "$1" = pollux ]; then
        sock=$bench_dir/pollux.sock
        cat >"$bench_dir/pollux.toml" <<TOML
[reactors]
cores = [0]
idle = "poll"
[metrics]
listen = "127.0.0.1:0"
[[bdev]]
name = "null0"
kind = "null"
size = "4GiB"
block_size = 4096
# As SPDK's null bdev: reads do not touch the buffer.
read_zeroes = false
[[vhost.blk]]
socket = "$sock"
bdev = "null0"
num_queues = $queues
TOML
        bench_start pollux env POLLUX_LOG=warn taskset -c 0 "$POLLUX_BIN" \
            --config "$bench_dir/pollux.toml" --rpc-socket "$bench_dir/rpc.sock"
    else
        sock=$bench_dir/vhost.0
        cat >"$bench_dir/vhost.json" <<JSON
{"subsystems": [
 {"subsystem": "bdev", "config": [
  {"method": "bdev_null_create",
   "params": {"name": "Null0", "num_blocks": 1048576, "block_size": 4096}}]},
 {"subsystem": "vhost_blk", "config": [
  {"method": "vhost_create_blk_controller",
   "params": {"ctrlr": "vhost.0", "dev_name": "Null0", "cpumask": "0x1"}}]}]}
JSON
        bench_start vhost taskset -c 0 "$SPDK_BIN/vhost" -m 0x1 --disable-cpumask-locks \
            -S "$bench_dir" -r "$bench_dir/spdk.sock" --json "$bench_dir/vhost.json"
    fi
    server_pid=$bench_pid
    bench_wait_for "$1" "$server_pid" test -S "$sock"
}

# run_client SIDE: one measured run against the running server.
run_client() {
    local side=$1 t0 t1 c0 c1 iops log=$bench_dir/client.log
    c0=$(cpu_ticks "$server_pid") t0=$(now)
    if [ -n "$have_spdk" ]; then
        cat >"$bench_dir/bdevperf.json" <<JSON
{"subsystems": [{"subsystem": "bdev", "config": [
  {"method": "bdev_virtio_attach_controller",
   "params": {"name": "VirtioUser0", "trtype": "user", "traddr": "$sock",
              "dev_type": "blk", "vq_count": $queues}}]}]}
JSON
        # -g: one huge page file, so that the guest memory the client
        # shares fits vhost-user's few memory regions.
        timeout "$CLIENT_TIMEOUT" taskset -c 1 "$SPDK_EXAMPLES/bdevperf" -m 0x2 -g --disable-cpumask-locks \
            --no-rpc-server --json "$bench_dir/bdevperf.json" \
            -q "$qd" -o 4096 -w randread -t "$SECS" >"$log" 2>&1 \
            || { cat "$log" >&2; exit 1; }
        iops=$(spdk_total_iops "$log")
    else
        timeout "$CLIENT_TIMEOUT" taskset -c 1 build/release/examples/blkio_perf --socket "$sock" --queues "$queues" \
            --qd "$qd" --time "$SECS" --json >"$log" || { cat "$log" >&2; exit 1; }
        iops=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["iops"])' "$log")
    fi
    c1=$(cpu_ticks "$server_pid") t1=$(now)
    bench_record "vhost-blk ${queues}q QD$qd" "$side" "$iops" "$((c1 - c0))" \
        "$(python3 -c "print($t1 - $t0)")"
}

sides=pollux
[ -n "$have_spdk" ] && sides="pollux spdk"
for run in $(seq "$RUNS"); do
    for side in $sides; do
        start_server "$side"
        run_client "$side"
        bench_stop "$server_pid"
    done
done
bench_summary
