#!/usr/bin/env bash
# NVMe/TCP (issue 10, rows 1-3): pollux against SPDK's nvmf_tgt, both on
# core 0 polling a 4 GiB null bdev with 4 KiB blocks and listening on
# 127.0.0.1, and one client for both, SPDK's spdk_nvme_perf on core 1
# (one connection, 4 KiB randread at QD 1, 32, 128). Runs alternate
# pollux, nvmf_tgt, pollux, ... (a fresh server per alternation); prints
# every run, then per QD the medians, Pollux / SPDK and the server's CPU
# per I/O (its utime+stime over the client's run / the client's I/Os).
#
# Usage: [SPDK_DIR=/opt/spdk] [RUNS=3] [SECS=5] scripts/bench-nvmf.sh
# Env: QDS (default "1 32 128"). Without SPDK_DIR there is no nvmf_tgt and
# no spdk_nvme_perf: Pollux alone, driven by `pollux perf nvmf`.
source "$(dirname "$0")/bench-lib.sh"
qds=${QDS:-"1 32 128"}
pollux_build
have_spdk=1
spdk_setup || have_spdk=
bench_check_quiet

pollux_nqn=nqn.2024-11.dev.pollux:bench
spdk_nqn=nqn.2016-06.io.spdk:cnode1

# start_server SIDE: sets server_pid, port and nqn.
start_server() {
    port=$(free_port)
    if [ "$1" = pollux ]; then
        nqn=$pollux_nqn
        cat >"$bench_dir/pollux.toml" <<TOML
[reactors]
cores = [0]
idle = "poll"
[[bdev]]
name = "null0"
kind = "null"
size = "4GiB"
block_size = 4096
# As SPDK's null bdev: reads do not touch the buffer.
read_zeroes = false
[[nvmf.subsystem]]
nqn = "$nqn"
namespaces = ["null0"]
allow_any_host = true
listen = ["127.0.0.1:$port"]
[metrics]
listen = "127.0.0.1:0"
TOML
        bench_start pollux env POLLUX_LOG=warn taskset -c 0 "$POLLUX_BIN" \
            --config "$bench_dir/pollux.toml" --rpc-socket "$bench_dir/rpc.sock"
    else
        nqn=$spdk_nqn
        # The same as rpc.py nvmf_create_transport -t TCP; bdev_null_create
        # Null0 4096 4096; nvmf_create_subsystem -a; add_ns; add_listener.
        cat >"$bench_dir/nvmf_tgt.json" <<JSON
{"subsystems": [
 {"subsystem": "bdev", "config": [
  {"method": "bdev_null_create",
   "params": {"name": "Null0", "num_blocks": 1048576, "block_size": 4096}}]},
 {"subsystem": "nvmf", "config": [
  {"method": "nvmf_create_transport", "params": {"trtype": "TCP"}},
  {"method": "nvmf_create_subsystem",
   "params": {"nqn": "$nqn", "allow_any_host": true, "serial_number": "SPDK00000000000001"}},
  {"method": "nvmf_subsystem_add_ns",
   "params": {"nqn": "$nqn", "namespace": {"bdev_name": "Null0"}}},
  {"method": "nvmf_subsystem_add_listener",
   "params": {"nqn": "$nqn", "listen_address":
     {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": "$port"}}}]}]}
JSON
        bench_start nvmf_tgt taskset -c 0 "$SPDK_BIN/nvmf_tgt" -m 0x1 --disable-cpumask-locks \
            -r "$bench_dir/spdk.sock" --json "$bench_dir/nvmf_tgt.json"
    fi
    server_pid=$bench_pid
    bench_wait_for "$1" "$server_pid" tcp_open "$port"
}

# run_client SIDE QD: one measured run against the running server.
run_client() {
    local side=$1 qd=$2 t0 t1 c0 c1 iops log=$bench_dir/client.log
    c0=$(cpu_ticks "$server_pid") t0=$(now)
    if [ -n "$have_spdk" ]; then
        # -c 0x2: DPDK's default core mask would pin perf to core 0,
        # whatever taskset says.
        timeout "$CLIENT_TIMEOUT" taskset -c 1 "$SPDK_BIN/spdk_nvme_perf" -c 0x2 \
            -r "trtype:tcp adrfam:IPv4 traddr:127.0.0.1 trsvcid:$port subnqn:$nqn" \
            -q "$qd" -o 4096 -w randread -t "$SECS" >"$log" 2>&1 \
            || { cat "$log" >&2; exit 1; }
        iops=$(spdk_total_iops "$log")
    else
        timeout "$CLIENT_TIMEOUT" taskset -c 1 "$POLLUX_BIN" perf nvmf --addr "127.0.0.1:$port" --nqn "$nqn" \
            --rw randread --bs 4096 --qd "$qd" --time "$SECS" --json >"$log" \
            || { cat "$log" >&2; exit 1; }
        iops=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["iops"])' "$log")
    fi
    c1=$(cpu_ticks "$server_pid") t1=$(now)
    bench_record "NVMe/TCP QD$qd" "$side" "$iops" "$((c1 - c0))" \
        "$(python3 -c "print($t1 - $t0)")"
}

sides=pollux
[ -n "$have_spdk" ] && sides="pollux spdk"
for run in $(seq "$RUNS"); do
    for side in $sides; do
        start_server "$side"
        for qd in $qds; do
            run_client "$side" "$qd"
        done
        bench_stop "$server_pid"
    done
done
bench_summary
