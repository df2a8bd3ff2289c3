#!/usr/bin/env python3
"""End-to-end OTLP ingest benchmark: realistic spans in batches of 512 over gRPC from concurrent
clients (benches/src/bin/otlp-load.rs) into a release `tenantscope serve`, durable (acknowledged
after the write-ahead log's fsync), then flushed to the lake; the lake's span count is checked
against what was acknowledged. A second run overloads a small buffer (flushes far apart) to show
refusals and bounded memory. Finally the one-thread loops of the micro bench (decode, decode + convert to
Arrow, WAL encoding).

    .venv/bin/python benches/otlp_ingest.py [--seconds 20] [--clients 8] [--record]

Per core = accepted spans / server CPU seconds (utime + stime from /proc), because the load
generator shares the machine's cores with the server.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.path.join(TARGET, "release", "tenantscope")
LOAD = os.path.join(TARGET, "release", "otlp-load")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def serve(root, config):
    ports = {k: free_port() for k in ("http", "grpc", "otlp", "pg")}
    cfg = os.path.join(root, "config.yaml")
    with open(cfg, "w") as f:
        f.write(config)
    log = open(os.path.join(root, "server.log"), "ab")
    proc = subprocess.Popen([BIN, "serve", "--no-auth", "--data", os.path.join(root, "lake"), "--wal-dir", os.path.join(root, "wal"),
                             "--config", cfg, "--http-addr", f"127.0.0.1:{ports['http']}",
                             "--otlp-grpc-addr", f"127.0.0.1:{ports['grpc']}",
                             "--otlp-http-addr", f"127.0.0.1:{ports['otlp']}", "--pg-addr", f"127.0.0.1:{ports['pg']}"],
                            stdout=log, stderr=log, env={**os.environ, "TENANTSCOPE_LOG": "warn"})
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}/readyz", timeout=1)
            return proc, ports
        except OSError:
            time.sleep(0.1)
    raise SystemExit("server did not start")


def sql(port, query):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/sql", data=json.dumps({"sql": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=120).read())["rows"]


def load(ports, pid, seconds, clients):
    out = subprocess.run([LOAD, "--endpoint", f"http://127.0.0.1:{ports['grpc']}", "--seconds", str(seconds),
                          "--clients", str(clients), "--server-pid", str(pid), "--json"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def micro():
    """Decode / convert / WAL-encode throughput on one thread (otlp-load --micro: the loops of
    the criterion bench, without building criterion in release)."""
    out = subprocess.run([LOAD, "--micro", "--seconds", "5", "--json"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "tenantscope", "--bin", "tenantscope",
                    "-p", "tenantscope-benches", "--bin", "otlp-load"], cwd=ROOT, check=True)

    root = tempfile.mkdtemp(prefix="tenantscope-otlp-bench-")
    try:
        proc, ports = serve(root, "ingest:\n  flush_interval_ms: 1000\n")
        w = load(ports, proc.pid, 3, args.clients)  # warm-up
        r = load(ports, proc.pid, args.seconds, args.clients)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        proc, ports = serve(root, "ingest:\n  flush_interval_ms: 1000\n")
        time.sleep(2)
        in_lake = sql(ports["http"], "SELECT count(*) FROM spans")[0][0]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)

        over_root = os.path.join(root, "overload")
        os.makedirs(over_root)
        proc, ports = serve(over_root, "ingest:\n  flush_interval_ms: 30000\n  max_buffer_bytes: 134217728\n")
        o = load(ports, proc.pid, args.seconds, args.clients)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=300)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    acknowledged = w["accepted_spans"] + r["accepted_spans"]
    assert in_lake == acknowledged, f"the lake holds {in_lake} spans, {acknowledged} were acknowledged"
    micro_results = micro()
    print(json.dumps({"steady": r, "lake_spans_after_both_runs": in_lake, "overload": o, "micro": micro_results}, indent=1))
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    rows = (
        f"| {time.strftime('%Y-%m-%d')} | steady, {args.clients} clients x 512 spans, flush 1 s | "
        f"{r['spans_per_s']:,.0f} spans/s | {r['spans_per_server_cpu_s']:,.0f} spans/s | "
        f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms | {r['refused_spans']:,} | {r['server_peak_rss_mib']} MiB | <!-- {machine} -->\n"
        f"| {time.strftime('%Y-%m-%d')} | overload: 128 MiB buffer, flush 30 s | "
        f"{o['spans_per_s']:,.0f} spans/s | {o['spans_per_server_cpu_s']:,.0f} spans/s | "
        f"p50 {o['p50_ms']} ms, p99 {o['p99_ms']} ms | {o['refused_spans']:,} | {o['server_peak_rss_mib']} MiB | <!-- {machine} -->\n"
    )
    print(rows)
    print(f"the lake holds exactly the {in_lake:,} spans acknowledged")
    m = micro_results
    rows += (f"| {time.strftime('%Y-%m-%d')} | one thread, no network: decode {m['decode_spans_per_s']:,} spans/s; "
             f"decode + convert to Arrow {m['decode_convert_spans_per_s']:,} spans/s; + WAL encoding "
             f"{m['decode_convert_wal_encode_spans_per_s']:,} spans/s ({m['bytes_per_span']} protobuf bytes/span) "
             f"| | | | | <!-- {machine} -->\n")
    print(rows.splitlines()[-1])
    if args.record:
        with open(os.path.join(ROOT, "benches", "RESULTS.md"), "a") as f:
            f.write(rows)


if __name__ == "__main__":
    main()
