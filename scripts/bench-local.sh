#!/usr/bin/env bash
# Local I/O through the block layer, no front-end (issue 10, row 5):
# `pollux perf local` on a null bdev against SPDK's bdevperf on a null
# bdev, both on core 0 (one polling reactor), 4 KiB randread at QD 128.
# Runs alternate pollux, bdevperf, pollux, ...; prints every run, then the
# medians, Pollux / SPDK and CPU per I/O (the process's own utime+stime
# over its wall time, divided by its IOPS: here the server is the client).
#
# Usage: [SPDK_DIR=/opt/spdk] [RUNS=3] [SECS=5] scripts/bench-local.sh
# Env: QD (default 128), BDEVS (default "null0"; "null0 ram0" adds the ram
# bdev, Pollux only: SPDK's peer would be malloc).
source "$(dirname "$0")/bench-lib.sh"
qd=${QD:-128}
bdevs=${BDEVS:-null0}
pollux_build
have_spdk=1
spdk_setup || have_spdk=
bench_check_quiet

cfg=scripts/configs/bench-null.toml
# SPDK's peer of null0: a null bdev of the same 4 GiB and 4 KiB blocks.
cat >"$bench_dir/bdevperf.json" <<JSON
{"subsystems": [{"subsystem": "bdev", "config": [
  {"method": "bdev_null_create",
   "params": {"name": "Null0", "num_blocks": 1048576, "block_size": 4096}}]}]}
JSON

for run in $(seq "$RUNS"); do
    for bdev in $bdevs; do
        out=$(bench_run_rusage "$bench_dir/pollux.log" \
            timeout "$CLIENT_TIMEOUT" env POLLUX_LOG=warn taskset -c 0 "$POLLUX_BIN" perf local --config "$cfg" \
            --bdev "$bdev" --rw randread --bs 4096 --qd "$qd" --time "$SECS" --json)
        read -r ticks wall <<<"$out"
        iops=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["iops"])' \
            "$bench_dir/pollux.log")
        bench_record "local $bdev QD$qd" pollux "$iops" "$ticks" "$wall"
    done
    if [ -n "$have_spdk" ]; then
        out=$(bench_run_rusage "$bench_dir/bdevperf.log" \
            timeout "$CLIENT_TIMEOUT" taskset -c 0 "$SPDK_EXAMPLES/bdevperf" -m 0x1 --disable-cpumask-locks \
            --no-rpc-server --json "$bench_dir/bdevperf.json" \
            -q "$qd" -o 4096 -w randread -t "$SECS")
        read -r ticks wall <<<"$out"
        iops=$(spdk_total_iops "$bench_dir/bdevperf.log")
        bench_record "local null0 QD$qd" spdk "$iops" "$ticks" "$wall"
    fi
done
bench_summary
