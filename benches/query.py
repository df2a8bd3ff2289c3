"""Query benchmark: tenantscope against DuckDB and Polars on the same lake, same threads.

Builds (once) a demo lake of benchmark size with the release binary: by default 100 tenants
with Zipf-skewed traffic over 30 days, about 20 million spans, and a bill of about a million
FOCUS lines (`demo --billing-resources`), all written through tenantscope's own writer and
importer. Then, with a release `tenantscope serve` over the lake:

- ad-hoc questions on the raw tables (requests per tenant per day, one tenant's requests per
  hour over a day, errors and time per tenant and service, billed cost per tenant per day,
  distinct resources per tenant), asked of
  tenantscope (`POST /v1/sql`), of DuckDB and of Polars reading the Parquet files of the same
  Delta snapshot;
- the cost model's standard questions (cost per tenant per day over the 30 days with shared
  cost allocated by requests; top 20 tenants by cost in the last 24 h; anomaly scores per
  tenant per day; distinct resources per tenant; margin per tenant this month), which
  tenantscope answers from its rollups and views (`usage`, `cost_allocation`, `tenant_costs`,
  `cost_anomalies`, `tenant_resources`, `tenant_margin`) and
  DuckDB computes from the raw spans, logs, billing lines, tenants, plans and invoices (the same
  allocation, scoring and pricing, written in SQL here), and Polars computes the same from the
  same raw tables with lazy expressions (`polars_cost.py`).

Every answer is checked equal to tenantscope's (money to 1e-6) before its time counts. Each
timing is the best of --repeat warm runs. Threads: DuckDB `SET threads`, POLARS_MAX_THREADS,
and tenantscope's DataFusion uses the machine's cores (run on a --threads-core machine).

    .venv/bin/python benches/query.py [--lake DIR] [--threads 2] [--record]
"""

import argparse
import datetime
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from decimal import Decimal

from otlp_ingest import TARGET, free_port  # the sibling bench script: one way to find ports and binaries

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def build_lake(bin_, lake, args):
    marker = os.path.join(lake, ".bench-complete")
    if os.path.exists(marker):
        return
    shutil.rmtree(lake, ignore_errors=True)
    started = time.time()
    subprocess.run([bin_, "demo", "--no-serve", "--data", lake, "--tenants", str(args.tenants), "--days", str(args.days),
                    "--peak-requests-per-day", str(args.peak), "--billing-resources", str(args.billing_resources),
                    "--end-date", args.end_date], check=True, env={**os.environ, "TENANTSCOPE_LOG": "warn"},
                   stdout=subprocess.DEVNULL)
    subprocess.run([bin_, "compact", "--data", lake], check=True, env={**os.environ, "TENANTSCOPE_LOG": "warn"},
                   stdout=subprocess.DEVNULL)
    open(marker, "w").write(f"built in {time.time() - started:.0f} s\n")


class Server:
    def __init__(self, bin_, lake, work):
        self.conn = None
        self.port = free_port()
        ports = [free_port() for _ in range(3)]
        self.log = open(os.path.join(work, "serve.log"), "ab")
        self.proc = subprocess.Popen(
            [bin_, "serve", "--no-auth", "--config", os.path.join(ROOT, "examples", "demo.yaml"), "--data", lake, "--wal-dir", os.path.join(work, "wal"),
             "--http-addr", f"127.0.0.1:{self.port}", "--otlp-grpc-addr", f"127.0.0.1:{ports[0]}",
             "--otlp-http-addr", f"127.0.0.1:{ports[1]}", "--pg-addr", f"127.0.0.1:{ports[2]}",
             "--max-staleness-secs", "3600"],
            stdout=self.log, stderr=self.log, env={**os.environ, "TENANTSCOPE_LOG": "warn"})
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1).read()
                return
            except OSError:
                assert self.proc.poll() is None and time.time() < deadline, "serve did not start"
                time.sleep(0.2)

    def sql(self, query):
        # One kept-alive connection, as a client with a connection pool (Grafana, requests.Session)
        # talks to the API: the answer's time, not a TCP handshake per question.
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=3600)
        self.conn.request("POST", "/v1/sql", body=json.dumps({"sql": query}).encode(),
                          headers={"Content-Type": "application/json"})
        r = self.conn.getresponse()
        body = r.read()
        assert r.status == 200, f"{r.status}: {body[:500]!r}"
        return json.loads(body, parse_float=Decimal)["rows"]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


def best(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def norm(rows):
    """Rows as sorted tuples of comparable values: money and floats to 6 decimals, dates as
    ISO text, so that the engines' types (Decimal, float, date, str) compare."""
    def v(x):
        if x is None:
            return None
        if isinstance(x, (Decimal, float)):
            return round(float(x), 6)
        if isinstance(x, (datetime.date, datetime.datetime)):
            return x.isoformat()[:10]
        if isinstance(x, str) and len(x) >= 10 and x[4] == "-" and x[7] == "-":
            return x[:10]
        if isinstance(x, str):
            try:
                return round(float(Decimal(x)), 6)  # decimals are text in our JSON
            except ArithmeticError:
                return x
        return x
    # None sorts first (tenant NULL is the unallocated cost).
    return sorted((tuple(v(x) for x in r) for r in rows), key=lambda t: tuple((x is not None, x) for x in t))


def same(x, y):
    """Equal rows, numbers to 1e-5, relative above 1 (tenantscope truncates each allocated share to
    10 decimals and gives the remainder to one tenant; summing the shares in another order
    differs in the 7th; anomaly scores divide by small spreads)."""
    return len(x) == len(y) and all(
        abs(p - q) <= 1e-5 * max(1.0, abs(p), abs(q)) if isinstance(p, float) and isinstance(q, float) else p == q
        for p, q in zip(x, y))


def check(name, ours, theirs, peer):
    a, b = norm(ours), norm(theirs)
    if len(a) != len(b) or not all(same(x, y) for x, y in zip(a, b)):
        diff = [(x, y) for x, y in zip(a, b) if not same(x, y)][:5]
        raise SystemExit(f"{name}: {peer} answers differently ({len(a)} vs {len(b)} rows); first differences: {diff}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lake", default=os.path.join(TARGET, "bench-lake"))
    p.add_argument("--tenants", type=int, default=100)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--peak", type=int, default=100_000, help="requests per day of the busiest tenant")
    p.add_argument("--billing-resources", type=int, default=1389, help="hourly-billed resources (x24 x days lines)")
    p.add_argument("--end-date", default="2026-11-27")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--record", action="store_true", help="append the results to benches/RESULTS.md")
    p.add_argument("--bin", default=os.path.join(TARGET, "release", "tenantscope"),
                   help="the tenantscope binary (a debug one only to try the script)")
    args = p.parse_args()
    os.environ["POLARS_MAX_THREADS"] = str(args.threads)
    import duckdb
    import polars as pl
    import polars_cost
    from deltalake import DeltaTable

    bin_ = args.bin
    assert os.path.exists(bin_), "build it first: cargo build --release --bin tenantscope"
    build_lake(bin_, args.lake, args)
    files = {t: DeltaTable(os.path.join(args.lake, t)).file_uris() for t in ("spans", "logs", "billing", "tenants", "plans", "invoices")}
    counts = {t: pl.scan_parquet(files[t]).select(pl.len()).collect().item() for t in ("spans", "logs", "billing", "tenants")}
    print(f"lake: {counts['spans']:,} spans, {counts['logs']:,} logs, {counts['billing']:,} billing lines, "
          f"{counts['tenants']} tenants", file=sys.stderr)

    con = duckdb.connect()
    con.execute(f"SET threads = {args.threads}")
    con.execute("SET TimeZone = 'UTC'")
    for t, fs in files.items():
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet({fs!r}, hive_partitioning = false)")
    lazy = {t: pl.scan_parquet(fs) for t, fs in files.items()}

    work = os.path.join(TARGET, "bench-query-work")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    server = Server(bin_, args.lake, work)
    last_day = args.end_date
    results = []
    try:
        def compare(name, kind, ours_sql, duck_sql=None, polars_fn=None):
            # The first run apart: it includes what tenantscope computes once per table version
            # and keeps (cost_allocation), which the best warm run does not show.
            t_first, _ = best(lambda: server.sql(ours_sql), 1)
            t_ours, ours = best(lambda: server.sql(ours_sql), args.repeat)
            row = {"name": name, "kind": kind, "rows": len(ours), "ours": t_ours, "ours_first": t_first}
            if duck_sql:
                t, theirs = best(lambda: con.execute(duck_sql).fetchall(), args.repeat)
                check(name, ours, theirs, "DuckDB")
                row["duckdb"] = t
            if polars_fn:
                t, theirs = best(lambda: polars_fn().rows(), args.repeat)
                check(name, ours, theirs, "Polars")
                row["polars"] = t
            print(json.dumps(row), file=sys.stderr)
            results.append(row)

        s, b = lazy["spans"], lazy["billing"]
        compare("requests per tenant per day", "ad-hoc, raw spans",
                "SELECT tenant_id, CAST(time AS DATE) AS day, count(*) FROM spans WHERE kind = 'server' GROUP BY 1, 2",
                "SELECT tenant_id, CAST(time AS DATE), count(*) FROM spans WHERE kind = 'server' GROUP BY 1, 2",
                lambda: s.filter(pl.col("kind") == "server")
                .group_by(pl.col("tenant_id"), pl.col("time").dt.date().alias("day")).agg(pl.len()).collect())
        # A dashboard panel: one tenant, one day, per hour (tenant and time prune files, row
        # groups and pages; `kind` is filtered above the scan).
        start = datetime.datetime.fromisoformat(last_day).replace(tzinfo=datetime.timezone.utc)
        end = start + datetime.timedelta(days=1)
        panel = (f"SELECT CAST(date_part('hour', time) AS BIGINT) AS h, count(*) FROM spans WHERE tenant_id = 'initech' "
                 f"AND kind = 'server' AND time >= TIMESTAMP '{start:%Y-%m-%d %H:%M:%S}' "
                 f"AND time < TIMESTAMP '{end:%Y-%m-%d %H:%M:%S}' GROUP BY 1")
        compare("one tenant's requests per hour, one day", "ad-hoc, raw spans", panel, panel,
                lambda: s.filter((pl.col("tenant_id") == "initech") & (pl.col("kind") == "server")
                                 & (pl.col("time") >= start) & (pl.col("time") < end))
                .group_by(pl.col("time").dt.hour().cast(pl.Int64).alias("h")).agg(pl.len()).collect())
        compare("errors and time per tenant and service", "ad-hoc, raw spans",
                "SELECT tenant_id, service_name, count(*), sum(CASE WHEN status_code = 'error' THEN 1 ELSE 0 END), "
                "sum(duration_ns) FROM spans GROUP BY 1, 2",
                "SELECT tenant_id, service_name, count(*), sum(CASE WHEN status_code = 'error' THEN 1 ELSE 0 END), "
                "sum(duration_ns) FROM spans GROUP BY 1, 2",
                lambda: s.group_by("tenant_id", "service_name").agg(
                    pl.len(), (pl.col("status_code") == "error").cast(pl.Int64).sum(), pl.col("duration_ns").sum()).collect())
        compare("billed cost per tenant per day", "ad-hoc, raw billing",
                "SELECT tenant_id, CAST(charge_period_start AS DATE), sum(billed_cost) FROM billing GROUP BY 1, 2",
                "SELECT tenant_id, CAST(charge_period_start AS DATE), sum(billed_cost) FROM billing GROUP BY 1, 2",
                lambda: b.group_by(pl.col("tenant_id"), pl.col("charge_period_start").dt.date())
                .agg(pl.col("billed_cost").sum()).collect())
        resources = "SELECT tenant_id, count(DISTINCT resource_id) FROM billing GROUP BY 1"
        resources_pl = lambda: b.group_by("tenant_id").agg(pl.col("resource_id").n_unique()).collect()
        compare("distinct resources per tenant (raw lines)", "ad-hoc, raw billing", resources, resources, resources_pl)
        compare("distinct resources per tenant", "standard, rollups vs raw",
                resources.replace("FROM billing", "FROM tenant_resources"), resources, resources_pl)
        compare("cost per tenant per day (30 days, shared cost allocated)", "standard, rollups vs raw",
                "SELECT day, tenant_id, sum(effective_cost) FROM tenant_costs GROUP BY 1, 2",
                ALLOCATED.format(select="SELECT day, tenant_id, sum(cost) FROM allocated GROUP BY 1, 2"),
                lambda: polars_cost.cost_per_tenant_per_day(lazy).collect())
        compare("top 20 tenants by cost in the last 24 h", "standard, rollups vs raw",
                f"SELECT tenant_id, sum(effective_cost) AS c FROM tenant_costs WHERE day = DATE '{last_day}' "
                "AND tenant_id IS NOT NULL GROUP BY 1 ORDER BY c DESC LIMIT 20",
                ALLOCATED.format(select=f"SELECT tenant_id, sum(cost) AS c FROM allocated WHERE day = DATE '{last_day}' "
                                 "AND tenant_id IS NOT NULL GROUP BY 1 ORDER BY c DESC LIMIT 20"),
                lambda: polars_cost.top_tenants(lazy, datetime.date.fromisoformat(last_day)).collect())
        compare("anomaly scores per tenant per day (cost, trailing 28 days)", "standard, rollups vs raw",
                "SELECT day, tenant_id, cost, baseline, score FROM cost_anomalies",
                ALLOCATED.format(select=ANOMALIES),
                lambda: polars_cost.cost_anomalies(lazy).collect())
        month = last_day[:7] + "-01"
        compare("margin per tenant this month", "standard, rollups vs raw",
                "SELECT tenant_id, plan, currency, revenue, cost, margin FROM tenant_margin "
                f"WHERE month = TIMESTAMP '{month} 00:00:00'",
                ALLOCATED.format(select=MARGIN.format(month=month)),
                lambda: polars_cost.tenant_margin(lazy, datetime.date.fromisoformat(month)).collect())
    finally:
        server.stop()
    report(results, args, counts)


# The demo's cost model (examples/demo.yaml) in DuckDB SQL, from the raw tables: lines the
# import attributed are their tenant's; Compute, Databases and Networking lines without a
# tenant are split by each tenant's server spans (the `requests` meter) in the line's charge
# period; Storage lines evenly among the tenants with any telemetry in the period (all tenants
# when none has); the rest stays unallocated (tenant NULL). tenantscope truncates each share to
# 10 decimals and gives the remainder to the largest weight: equal to 1e-6 per day and tenant.
ALLOCATED = """
WITH lines AS (
  SELECT charge_period_start AS s,
         CASE WHEN charge_period_end > charge_period_start THEN charge_period_end
              ELSE charge_period_start + INTERVAL 1 HOUR END AS e,
         service_category AS cat, tenant_id, effective_cost AS cost
  FROM billing
),
requests AS (
  SELECT tenant_id, date_trunc('hour', time) AS h, count(*) AS q
  FROM spans WHERE kind = 'server' AND tenant_id IS NOT NULL GROUP BY 1, 2
),
active AS (
  SELECT DISTINCT tenant_id, date_trunc('hour', time) AS h
  FROM (SELECT tenant_id, time FROM spans UNION ALL SELECT tenant_id, time FROM logs) WHERE tenant_id IS NOT NULL
),
shared AS (
  SELECT s, e, cat, sum(cost) AS amount FROM lines WHERE tenant_id IS NULL GROUP BY 1, 2, 3
),
prop_w AS (
  SELECT sh.s, sh.e, r.tenant_id, sum(r.q) AS w
  FROM (SELECT DISTINCT s, e FROM shared WHERE cat IN ('Compute', 'Databases', 'Networking')) sh
  JOIN requests r ON r.h >= sh.s AND r.h < sh.e GROUP BY 1, 2, 3
),
even_w AS (
  SELECT sh.s, sh.e, a.tenant_id, 1 AS w
  FROM (SELECT DISTINCT s, e FROM shared WHERE cat = 'Storage') sh
  JOIN (SELECT DISTINCT tenant_id, h FROM active) a ON a.h >= sh.s AND a.h < sh.e GROUP BY 1, 2, 3
),
weights AS (
  SELECT s, e, 'prop' AS m, tenant_id, w FROM prop_w
  UNION ALL SELECT s, e, 'even', tenant_id, w FROM even_w
  UNION ALL SELECT sh.s, sh.e, 'even', t.tenant_id, 1 FROM (SELECT DISTINCT s, e FROM shared WHERE cat = 'Storage') sh
    CROSS JOIN tenants t WHERE NOT EXISTS (SELECT 1 FROM even_w x WHERE x.s = sh.s AND x.e = sh.e)
),
shares AS (
  SELECT sh.s, w.tenant_id, sh.amount * w.w / sum(w.w) OVER (PARTITION BY sh.s, sh.e, sh.cat) AS cost
  FROM shared sh JOIN weights w ON w.s = sh.s AND w.e = sh.e
   AND w.m = CASE WHEN sh.cat = 'Storage' THEN 'even' ELSE 'prop' END
  WHERE sh.cat IN ('Compute', 'Databases', 'Networking', 'Storage')
),
unallocated AS (
  SELECT sh.s, NULL AS tenant_id, sh.amount AS cost FROM shared sh
  WHERE sh.cat NOT IN ('Compute', 'Databases', 'Networking', 'Storage')
     OR NOT EXISTS (SELECT 1 FROM weights w WHERE w.s = sh.s AND w.e = sh.e
                    AND w.m = CASE WHEN sh.cat = 'Storage' THEN 'even' ELSE 'prop' END)
),
allocated AS (
  SELECT CAST(s AS DATE) AS day, tenant_id, cost FROM lines WHERE tenant_id IS NOT NULL
  UNION ALL SELECT CAST(s AS DATE), tenant_id, cost FROM shares
  UNION ALL SELECT CAST(s AS DATE), tenant_id, cost FROM unallocated
)
{select}
"""


# cost_anomalies in DuckDB SQL: each tenant's daily allocated cost against its trailing 28 days,
# the modified z-score (value - median) / (1.4826 MAD), or 1.2533 x the mean absolute deviation
# when the MAD is 0; no score under 5 days of history (query/src/cost/anomaly.rs).
ANOMALIES = """,
daily AS (SELECT day, tenant_id, CAST(sum(cost) AS DOUBLE) AS cost FROM allocated WHERE tenant_id IS NOT NULL GROUP BY 1, 2),
w AS (SELECT day, tenant_id, cost, list(cost) OVER (PARTITION BY tenant_id ORDER BY day
                                                    ROWS BETWEEN 28 PRECEDING AND 1 PRECEDING) AS h FROM daily),
m AS (SELECT *, CASE WHEN len(h) > 0 THEN list_aggregate(h, 'median') END AS med FROM w),
d AS (SELECT *, list_transform(h, lambda x: abs(x - med)) AS dev FROM m),
s AS (SELECT *, CASE WHEN len(h) < 5 THEN NULL
                     WHEN list_aggregate(dev, 'median') > 0 THEN 1.4826 * list_aggregate(dev, 'median')
                     ELSE 1.2533 * list_avg(dev) END AS scale FROM d)
SELECT day, tenant_id, cost, med, CASE WHEN scale > 0 THEN (cost - med) / scale END FROM s
"""


# tenant_margin in DuckDB SQL for one month, from the raw tables: revenue from the tenant's plan
# (the version valid that month: base fee plus each metered tier's unit price times the usage
# above the included quantity, usage counted from the raw spans and logs as the default meters
# do) unless invoices cover the tenant and month; cost = the allocated cost above; a tenant is
# active in the month with any telemetry or allocated cost. The demo's bill is in one currency.
MARGIN = """,
usage_m AS (
  SELECT tenant_id, 'requests' AS meter, CAST(count(*) AS DECIMAL(38, 10)) AS quantity FROM spans
  WHERE kind = 'server' AND tenant_id IS NOT NULL AND date_trunc('month', time) = TIMESTAMPTZ '{month}' GROUP BY 1
),
active_m AS (
  SELECT DISTINCT tenant_id FROM spans WHERE tenant_id IS NOT NULL AND date_trunc('month', time) = TIMESTAMPTZ '{month}'
  UNION SELECT DISTINCT tenant_id FROM logs WHERE tenant_id IS NOT NULL AND date_trunc('month', time) = TIMESTAMPTZ '{month}'
  UNION SELECT DISTINCT tenant_id FROM allocated WHERE tenant_id IS NOT NULL AND date_trunc('month', day) = DATE '{month}'
),
versions AS (
  SELECT plan, valid_from, lead(valid_from) OVER (PARTITION BY plan ORDER BY valid_from) AS valid_to
  FROM (SELECT DISTINCT plan, valid_from FROM plans)
),
priced AS (
  SELECT a.tenant_id, t.plan, v.valid_from FROM active_m a JOIN tenants t ON t.tenant_id = a.tenant_id
  JOIN versions v ON v.plan = t.plan AND v.valid_from <= TIMESTAMPTZ '{month}'
   AND (v.valid_to IS NULL OR TIMESTAMPTZ '{month}' < v.valid_to)
),
fees AS (
  SELECT p.tenant_id, p.plan, max(upper(pl.currency)) AS currency, max(pl.base_fee) AS base_fee
  FROM priced p JOIN plans pl ON pl.plan = p.plan AND pl.valid_from = p.valid_from GROUP BY 1, 2
),
metered AS (
  SELECT p.tenant_id, sum(pl.unit_price * greatest(0, least(u.quantity, coalesce(pl.tier_to, u.quantity))
                                                   - greatest(coalesce(pl.tier_from, 0), coalesce(pl.included_quantity, 0)))) AS amount
  FROM priced p JOIN plans pl ON pl.plan = p.plan AND pl.valid_from = p.valid_from AND pl.meter IS NOT NULL
  JOIN usage_m u ON u.tenant_id = p.tenant_id AND u.meter = pl.meter GROUP BY 1
),
invoiced AS (
  SELECT tenant_id, upper(currency) AS currency, sum(amount) AS revenue FROM invoices
  WHERE tenant_id IS NOT NULL AND date_trunc('month', period_start) = TIMESTAMPTZ '{month}' GROUP BY 1, 2
),
revenue AS (
  SELECT tenant_id, currency, revenue FROM invoiced
  UNION ALL
  SELECT f.tenant_id, f.currency, coalesce(f.base_fee, 0) + coalesce(m.amount, 0) FROM fees f
  LEFT JOIN metered m ON m.tenant_id = f.tenant_id WHERE f.tenant_id NOT IN (SELECT tenant_id FROM invoiced)
),
cost AS (
  SELECT tenant_id, (SELECT upper(max(billing_currency)) FROM billing) AS currency, sum(cost) AS cost FROM allocated
  WHERE tenant_id IS NOT NULL AND date_trunc('month', day) = DATE '{month}' GROUP BY 1
),
joined AS (
  SELECT coalesce(r.tenant_id, c.tenant_id) AS tenant_id, coalesce(r.currency, c.currency) AS currency,
         coalesce(r.revenue, 0) AS revenue, coalesce(c.cost, 0) AS cost
  FROM (SELECT tenant_id, currency, sum(revenue) AS revenue FROM revenue GROUP BY 1, 2) r
  FULL OUTER JOIN cost c ON r.tenant_id = c.tenant_id AND r.currency = c.currency
)
SELECT j.tenant_id, t.plan, j.currency, j.revenue, j.cost, j.revenue - j.cost FROM joined j LEFT JOIN tenants t ON t.tenant_id = j.tenant_id
"""


def report(results, args, counts):
    lines = []
    for r in results:
        duck = r.get("duckdb")
        pol = r.get("polars")
        ratio = lambda peer: f"{peer / r['ours']:.2f}x" if peer else "-"
        lines.append(f"| {r['name']} | {r['kind']} | {r['rows']:,} | {r['ours']:.3f} s (first {r['ours_first']:.3f} s) | "
                     f"{f'{duck:.3f} s' if duck else '-'} | {ratio(duck)} | {f'{pol:.3f} s' if pol else '-'} | {ratio(pol)} |")
    table = "\n".join(["| question | kind | rows | tenantscope | DuckDB | DuckDB / ours | Polars | Polars / ours |",
                       "|---|---|---|---|---|---|---|---|", *lines])
    print(table)
    if args.record:
        import duckdb
        import polars
        head = (f"\n## Queries: tenantscope against DuckDB and Polars ({datetime.date.today()})\n\n"
                f"Command: `.venv/bin/python benches/query.py --threads {args.threads} --record` (release build of "
                f"`tenantscope` at commit {subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, cwd=ROOT).stdout.strip()}; "
                f"DuckDB {duckdb.__version__}, Polars {polars.__version__}; {os.cpu_count()} cores, {args.threads} threads each). "
                f"Lake: {counts['spans']:,} spans, {counts['logs']:,} logs, {counts['billing']:,} billing lines, "
                f"{counts['tenants']} tenants over {args.days} days (`demo --tenants {args.tenants} --days {args.days} "
                f"--peak-requests-per-day {args.peak} --billing-resources {args.billing_resources}`, then `compact`). "
                f"Best of {args.repeat} warm runs (tenantscope's first run after start in brackets); every answer "
                f"checked equal to tenantscope's first. A ratio above 1 means tenantscope is faster.\n\n")
        with open(os.path.join(HERE, "RESULTS.md"), "a") as f:
            f.write(head + table + "\n")


if __name__ == "__main__":
    main()
