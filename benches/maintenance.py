#!/usr/bin/env python3
"""Lake maintenance benchmark: a lake built by streaming OTLP ingest with 1-second flushes (one
Delta commit a second), measured before and after `tenantscope compact`: data files, bytes, log
entries, and the time of standard questions over the telemetry.

    .venv/bin/python benches/maintenance.py [--seconds 3600] [--rate 2000] [--tenants 100] \\
        [--server BIN] [--cli BIN]

The stream: every second one OTLP/HTTP protobuf request of `--rate` spans spread over Zipf-skewed
tenants, to `tenantscope serve --flush-interval-ms 1000`. Questions run through `tenantscope sql`
(a fresh process each time, so opening the table's log is part of the time), best of 3.
"""

import argparse
import os
import platform
import random
import subprocess
import tempfile
import time
import urllib.request

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from otlp_ingest import TARGET, free_port  # the sibling bench script: one way to find ports and binaries

# Questions an ops engineer asks of the last hour of telemetry.
QUESTIONS = {
    "requests per tenant per minute": "SELECT tenant_id, date_trunc('minute', time) AS m, count(*) FROM spans GROUP BY 1, 2",
    "top 20 tenants by spans, last 15 min": "SELECT tenant_id, count(*) AS n FROM spans WHERE time > (SELECT max(time) FROM spans) - INTERVAL '15 minutes' GROUP BY 1 ORDER BY n DESC LIMIT 20",
    "p95 duration per tenant": "SELECT tenant_id, approx_percentile_cont(duration_ns, 0.95) FROM spans GROUP BY 1",
    "one tenant, 5 minutes": "SELECT count(*), avg(duration_ns) FROM spans WHERE tenant_id = 't007' AND time > (SELECT min(time) FROM spans) + INTERVAL '20 minutes' AND time <= (SELECT min(time) FROM spans) + INTERVAL '25 minutes'",
    "distinct traces per tenant": "SELECT tenant_id, count(DISTINCT trace_id) FROM spans GROUP BY 1",
}


def zipf_weights(n, s=1.1):
    w = [1 / (k ** s) for k in range(1, n + 1)]
    total = sum(w)
    return [x / total for x in w]


def request(rng, rate, tenants, weights, now_ns):
    counts = {}
    for t in rng.choices(range(tenants), weights=weights, k=rate):
        counts[t] = counts.get(t, 0) + 1
    req = trace_service_pb2.ExportTraceServiceRequest()
    for t, n in counts.items():
        rs = req.resource_spans.add()
        rs.resource.CopyFrom(resource_pb2.Resource(attributes=[
            common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value="checkout")),
            common_pb2.KeyValue(key="tenant.id", value=common_pb2.AnyValue(string_value=f"t{t:03d}")),
        ]))
        ss = rs.scope_spans.add()
        for _ in range(n):
            dur = int(rng.lognormvariate(16, 1))
            start = now_ns - dur
            ss.spans.add(trace_id=rng.randbytes(16), span_id=rng.randbytes(8), name="GET /cart",
                         kind=trace_pb2.Span.SPAN_KIND_SERVER, start_time_unix_nano=start, end_time_unix_nano=now_ns,
                         attributes=[common_pb2.KeyValue(key="http.route", value=common_pb2.AnyValue(string_value="/cart"))])
    return req.SerializeToString()


def lake_files(lake):
    data = log = 0
    size = 0
    for d, _, files in os.walk(os.path.join(lake, "spans")):
        for f in files:
            if f.endswith(".parquet") and "_delta_log" not in d:
                data += 1
                size += os.path.getsize(os.path.join(d, f))
            elif "_delta_log" in d and f.endswith(".json"):
                log += 1
    return data, size, log


def referenced(cli, lake):
    out = subprocess.run([cli, "sql", "--data", lake, "--format", "csv", "SELECT count(*) FROM spans"],
                         capture_output=True, text=True, check=True, env={**os.environ, "TENANTSCOPE_LOG": "warn"})
    return int(out.stdout.splitlines()[1])


def time_questions(cli, lake):
    times = {}
    for name, sql in QUESTIONS.items():
        best = None
        for _ in range(3):
            t = time.perf_counter()
            subprocess.run([cli, "sql", "--data", lake, "--format", "csv", sql], capture_output=True, check=True,
                           env={**os.environ, "TENANTSCOPE_LOG": "warn"})
            e = time.perf_counter() - t
            best = e if best is None else min(best, e)
        times[name] = best
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=3600)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--tenants", type=int, default=100)
    ap.add_argument("--server", default=os.path.join(TARGET, "release", "tenantscope"))
    ap.add_argument("--cli", default=os.path.join(TARGET, "release", "tenantscope"))
    ap.add_argument("--maint-cli", default=None, help="binary for compact and vacuum (default: --cli)")
    ap.add_argument("--work", default=None, help="folder for the lake (default: a temporary one)")
    args = ap.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="ts-maint-")
    lake = os.path.join(work, "lake")
    ports = {k: free_port() for k in ("http", "grpc", "otlp", "pg")}
    log = open(os.path.join(work, "server.log"), "wb")
    server = subprocess.Popen([args.server, "serve", "--no-auth", "--data", lake, "--wal-dir", os.path.join(work, "wal"),
                               "--http-addr", f"127.0.0.1:{ports['http']}", "--otlp-grpc-addr", f"127.0.0.1:{ports['grpc']}",
                               "--otlp-http-addr", f"127.0.0.1:{ports['otlp']}", "--pg-addr", f"127.0.0.1:{ports['pg']}",
                               "--flush-interval-ms", "1000"], stdout=log, stderr=log,
                              env={**os.environ, "TENANTSCOPE_LOG": "warn"})
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}/readyz", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    rng = random.Random(42)
    weights = zipf_weights(args.tenants)
    url = f"http://127.0.0.1:{ports['otlp']}/v1/traces"
    sent = 0
    start = time.time()
    for second in range(args.seconds):
        body = request(rng, args.rate, args.tenants, weights, time.time_ns())
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/x-protobuf"})
        urllib.request.urlopen(req, timeout=30).read()
        sent += args.rate
        delay = start + second + 1 - time.time()
        if delay > 0:
            time.sleep(delay)
    time.sleep(2)
    server.terminate()
    server.wait(timeout=120)
    assert referenced(args.cli, lake) == sent, "every acknowledged span is in the lake"
    before = lake_files(lake)
    t_before = time_questions(args.cli, lake)
    t = time.perf_counter()
    maint = args.maint_cli or args.cli
    out = subprocess.run([maint, "compact", "--data", lake, "--table", "spans"], capture_output=True, text=True,
                         check=True, env={**os.environ, "TENANTSCOPE_LOG": "warn"})
    compact_s = time.perf_counter() - t
    after_refs = referenced(args.cli, lake)
    assert after_refs == sent, "compaction kept every row"
    t_after = time_questions(args.cli, lake)
    subprocess.run([maint, "vacuum", "--data", lake, "--table", "spans", "--vacuum-after", "0s"], capture_output=True,
                   check=True, env={**os.environ, "TENANTSCOPE_LOG": "warn"})
    after = lake_files(lake)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {args.seconds} s of streaming at {args.rate} spans/s, "
          f"{args.tenants} tenants, 1 s flushes: {sent:,} spans")
    print(f"compact: {out.stdout.strip()} in {compact_s:.1f} s")
    print("| | data files | bytes | log entries (JSON) |")
    print("|---|---|---|---|")
    print(f"| before compaction | {before[0]:,} | {before[1]:,} | {before[2]:,} |")
    print(f"| after compaction + vacuum | {after[0]:,} | {after[1]:,} | {after[2]:,} |")
    print()
    print("| question | before (s) | after (s) | before / after |")
    print("|---|---|---|---|")
    for name in QUESTIONS:
        print(f"| {name} | {t_before[name]:.3f} | {t_after[name]:.3f} | {t_before[name] / t_after[name]:.1f}x |")


if __name__ == "__main__":
    main()
