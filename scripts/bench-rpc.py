#!/usr/bin/env python3
"""RPC latency of a running target (Pollux or SPDK): the median of N calls.

  scripts/bench-rpc.py SOCK [--n 200] [--namespaces 1000] [--filter NODE]

* trivial: `spdk_get_version`, one connection per call as rpc.py makes it
  (connect, send, read the answer, close), and the same on one kept
  connection;
* filter: `pollux_graph_insert_filter` + `pollux_graph_remove_filter` on
  NODE (Pollux only), one connection per pair;
* namespaces: creates a null bdev and a namespace per call, K of them, in
  subsystem nqn.2016-06.io.spdk:bench-rpc, and reports the total.

Prints one JSON object. Uses only the standard library so that it runs
against SPDK's nvmf_tgt too.
"""
import argparse
import json
import socket
import statistics
import time


def recv_answer(s):
    buf = b""
    dec = json.JSONDecoder()
    while True:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed before an answer")
        buf += chunk
        try:
            obj, _ = dec.raw_decode(buf.decode().lstrip())
            return obj
        except ValueError:
            continue


class Conn:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.id = 0

    def call(self, method, params=None):
        self.id += 1
        req = {"jsonrpc": "2.0", "id": self.id, "method": method}
        if params is not None:
            req["params"] = params
        self.s.sendall(json.dumps(req).encode())
        ans = recv_answer(self.s)
        if "error" in ans:
            raise RuntimeError(f"{method}: {ans['error']}")
        return ans["result"]

    def close(self):
        self.s.close()


def once(path, method, params=None):
    c = Conn(path)
    try:
        return c.call(method, params)
    finally:
        c.close()


def timed(f, n):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        out.append((time.perf_counter() - t) * 1e3)
    return {"median_ms": round(statistics.median(out), 3),
            "p90_ms": round(sorted(out)[int(len(out) * 0.9) - 1], 3),
            "n": n}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sock")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--filter", metavar="NODE")
    ap.add_argument("--namespaces", type=int, default=0)
    ap.add_argument("--nqn", default="nqn.2016-06.io.spdk:bench-rpc",
                    help="subsystem for --namespaces (created unless it exists)")
    a = ap.parse_args()
    res = {}
    res["trivial_new_conn"] = timed(lambda: once(a.sock, "spdk_get_version"), a.n)
    kept = Conn(a.sock)
    res["trivial_kept_conn"] = timed(lambda: kept.call("spdk_get_version"), a.n)
    kept.close()
    if a.filter:
        def pair():
            c = Conn(a.sock)
            c.call("pollux_graph_insert_filter",
                   {"node": a.filter, "filter": {"name": "bench_rpc_f", "kind": "passthru"}})
            c.call("pollux_graph_remove_filter", {"name": "bench_rpc_f"})
            c.close()
        res["filter_insert_remove"] = timed(pair, max(a.n // 4, 1))
    if a.namespaces:
        nqn = a.nqn
        for method, params in [
                ("nvmf_create_transport", {"trtype": "TCP"}),
                ("nvmf_create_subsystem",
                 {"nqn": nqn, "allow_any_host": True, "max_namespaces": a.namespaces + 1})]:
            try:
                once(a.sock, method, params)
            except RuntimeError:
                pass  # already there (hosts may be connected to it)
        t = time.perf_counter()
        for i in range(a.namespaces):
            name = f"bench_rpc_null{i}"
            once(a.sock, "bdev_null_create",
                 {"name": name, "num_blocks": 2048, "block_size": 512})
            once(a.sock, "nvmf_subsystem_add_ns",
                 {"nqn": nqn, "namespace": {"bdev_name": name}})
        res["namespaces"] = {"count": a.namespaces,
                             "total_s": round(time.perf_counter() - t, 3)}
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
