#!/usr/bin/env bash
# By-hand interop check of Pollux's DH-HMAC-CHAP with SPDK's initiator
# (spdk_nvme_perf, lib/nvme/nvme_auth.c): bidirectional and unidirectional
# authentication with I/O, then a wrong key and no key, both refused.
# Needs an SPDK build (SPDK_DIR, default /opt/spdk, with hugepages set up)
# and rpc.py (SPDK_RPC, default /opt/spdk-rpc/bin/spdk-rpc); CI has
# neither, so this is not part of the test suite.
# Usage: scripts/interop-spdk-dhchap.sh [PORT]   (POLLUX overrides the binary)
set -euo pipefail
cd "$(dirname "$0")/.."
port=${1:-45123}
spdk=${SPDK_DIR:-/opt/spdk}
rpc_bin=${SPDK_RPC:-/opt/spdk-rpc/bin/spdk-rpc}
pollux=${POLLUX:-build/release/pollux}
[ -x "$pollux" ] || cargo build --release --bin pollux
d=$(mktemp -d)
nqn=nqn.2024-11.dev.pollux:dhchap
host=nqn.2014-08.org.nvmexpress:uuid:5bd00000-0000-4000-8000-000000000001
printf '[reactors]\ncores = [0]\nidle = "adaptive"\n[metrics]\nlisten = "127.0.0.1:0"\n' >"$d/p.toml"
POLLUX_LOG=info,pollux_target::nvmf::auth=debug "$pollux" --config "$d/p.toml" \
    --rpc-socket "$d/rpc.sock" 2>"$d/pollux.log" &
pid=$!
trap 'kill $pid; wait $pid 2>/dev/null; rm -rf "$d"' EXIT
for _ in $(seq 100); do [ -S "$d/rpc.sock" ] && break; sleep 0.1; done
rpc() { "$rpc_bin" -s "$d/rpc.sock" "$@" >/dev/null; }
python3 - "$d" <<'PY'
import base64, os, struct, sys, zlib
def secret(hh, n):
    k = os.urandom(n)
    return 'DHHC-1:%02x:%s:' % (hh, base64.b64encode(k + struct.pack('<I', zlib.crc32(k))).decode())
for name, hh, n in [('key', 1, 32), ('ckey', 3, 64), ('wrong', 1, 32)]:
    open(os.path.join(sys.argv[1], name), 'w').write(secret(hh, n))
PY
chmod 600 "$d/key" "$d/ckey" "$d/wrong"
rpc keyring_file_add_key key0 "$d/key"
rpc keyring_file_add_key ckey0 "$d/ckey"
rpc bdev_malloc_create -b m0 32 512
rpc nvmf_create_transport -t TCP
rpc nvmf_create_subsystem "$nqn"
rpc nvmf_subsystem_add_ns "$nqn" m0
rpc nvmf_subsystem_add_listener "$nqn" -t tcp -a 127.0.0.1 -s "$port" -f ipv4
rpc nvmf_subsystem_add_host "$nqn" "$host" --dhchap-key key0 --dhchap-ctrlr-key ckey0
export LD_LIBRARY_PATH=$spdk/build/lib
perf() {
    "$spdk/build/bin/spdk_nvme_perf" -q 8 -o 4096 -w randrw -M 50 -t 2 -c 0x2 \
        -r "trtype:tcp adrfam:IPv4 traddr:127.0.0.1 trsvcid:$port subnqn:$nqn hostnqn:$host" "$@" 2>&1
}
fail=0
perf --dhchap-key "$d/key" --dhchap-ctrlr-key "$d/ckey" | grep -q '^Total' && echo "bidirectional: ok" || { echo "bidirectional: FAILED"; fail=1; }
perf --dhchap-key "$d/key" | grep -q '^Total' && echo "unidirectional: ok" || { echo "unidirectional: FAILED"; fail=1; }
perf --dhchap-key "$d/wrong" | grep -q '^Total' && { echo "wrong key: ACCEPTED"; fail=1; } || echo "wrong key: refused"
perf | grep -q '^Total' && { echo "no key: ACCEPTED"; fail=1; } || echo "no key: refused"
grep -o 'nvmf auth: negotiated.*' "$d/pollux.log" | sed 's/\x1b\[[0-9;]*m//g' | sort | uniq -c
exit $fail
