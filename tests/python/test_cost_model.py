"""The product's promise end to end: a tenant's usage goes in over OTLP (the real SDK exporter), a
bill and the price book go in through the importers, and that tenant's allocated cost, revenue
and margin come out over psql, exact to the last decimal digit."""

import datetime as dt
import os
import subprocess
import time

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from conftest import sql_json, tenantscope

CONFIG = """
ingest:
  flush_interval_ms: 300
cost:
  rollup_interval_ms: 300
  allocation:
    - name: shared-compute-by-requests
      match: {service_category: Compute}
      method: proportional
      meter: requests
    - name: support-evenly
      match: {service_name: Support}
      method: even
    - name: dns-fixed
      match: {service_name: DNS}
      method: fixed
      weights: {acme: 1, beta: 2}
"""

TENANTS = """
tenants:
  - {id: acme, name: Acme, plan: pro}
  - {id: beta, name: Beta, plan: basic}
"""

PLANS = """
currency: USD
plans:
  - name: pro
    base_fee: "100"
    meters:
      - {meter: requests, unit: request, included: 10, unit_price: "0.5"}
  - name: basic
    base_fee: "10"
    meters:
      - {meter: requests, unit: request, unit_price: "0.25"}
"""


def psql(port, sql):
    out = subprocess.run(["psql", "-X", "-h", "127.0.0.1", "-p", str(port), "-U", "tenantscope", "-d", "tenantscope",
                          "-A", "-t", "-F", ",", "-c", sql],
                         capture_output=True, text=True, env={"PGCONNECT_TIMEOUT": "10", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    return [line.split(",") for line in out.stdout.strip().splitlines()]


def wait_psql(port, sql, expected, timeout=20):
    deadline = time.time() + timeout
    while True:
        got = psql(port, sql)
        if got == expected or time.time() > deadline:
            return got
        time.sleep(0.2)


def test_usage_and_a_bill_in_cost_and_margin_out_over_psql(server_factory, tmp_path):
    s = server_factory(config=CONFIG, flush_ms=300)
    start = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0)
    # Usage: server spans (the `requests` meter) for two tenants, and internal spans that do not count.
    for tenant, n in [("acme", 30), ("beta", 10)]:
        provider = TracerProvider(resource=Resource.create({"service.name": "api", "tenant.id": tenant}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=s.grpc, insecure=True)))
        tracer = provider.get_tracer("tests")
        for _ in range(n):
            with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER):
                with tracer.start_as_current_span("db"):
                    pass
        provider.shutdown()

    # The bill: shared compute for the hours around now, a DNS line, a support line, and one
    # line tagged for acme (direct).
    # An hour before now, but never in the month before: revenue and cost meet per month, and the
    # usage is this month's (in a month's first hour the hour before is the last month's).
    begin = max(start - dt.timedelta(hours=1), start.replace(day=1, hour=0)).strftime("%Y-%m-%dT%H:%M:%SZ")
    end = (start + dt.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    month = start.replace(day=1).strftime("%Y-%m-%dT%H:%M:%SZ")
    bill = tmp_path / "bill.csv"
    bill.write_text(
        "BillingAccountId,BillingPeriodStart,ChargePeriodStart,ChargePeriodEnd,BilledCost,EffectiveCost,BillingCurrency,ServiceName,ServiceCategory,Tags\n"
        f"A,{month},{begin},{end},100.00,90.00,USD,EC2,Compute,\n"
        f"A,{month},{begin},{end},10.0000000001,10.0000000001,USD,Support,Other,\n"
        f"A,{month},{begin},{end},3.00,3.00,USD,DNS,Networking,\n"
        f'A,{month},{begin},{end},5.00,5.00,USD,RDS,Databases,"{{""tenant"": ""acme""}}"\n')
    (tmp_path / "tenants.yaml").write_text(TENANTS)
    (tmp_path / "plans.yaml").write_text(PLANS)
    tenantscope("import", "tenants", str(tmp_path / "tenants.yaml"), "--data", s.data)
    tenantscope("import", "plans", str(tmp_path / "plans.yaml"), "--data", s.data)
    tenantscope("import", "billing", str(bill), "--data", s.data)

    pg = s.ports["pg"]
    # Usage follows ingest by a flush and a rollup; other processes' commits (the imports) show
    # within the engine's staleness bound (1 s).
    q = "SELECT tenant_id, meter, sum(quantity) FROM usage WHERE meter = 'requests' GROUP BY 1, 2 ORDER BY 1"
    expected = [["acme", "requests", "30.0000000000"], ["beta", "requests", "10.0000000000"]]
    assert wait_psql(pg, q, expected) == expected, s.logs()
    assert wait_psql(pg, "SELECT count(*) FROM billing", [["4"]]) == [["4"]]

    # Allocation, exact: compute 100 billed / 90 effective split 30:10 by requests; support
    # 10.0000000001 evenly between the two active tenants (the indivisible 0.0000000001 to
    # the first); DNS 3 by fixed weights 1:2; the RDS line is acme's by its tag.
    rows = psql(pg, "SELECT tenant_id, allocation_rule, allocation_method, billed_cost, effective_cost "
                    "FROM cost_allocation ORDER BY allocation_rule, tenant_id")
    assert rows == [
        ["acme", "dns-fixed", "fixed", "1.0000000000", "1.0000000000"],
        ["beta", "dns-fixed", "fixed", "2.0000000000", "2.0000000000"],
        ["acme", "import", "direct", "5.0000000000", "5.0000000000"],
        ["acme", "shared-compute-by-requests", "proportional", "75.0000000000", "67.5000000000"],
        ["beta", "shared-compute-by-requests", "proportional", "25.0000000000", "22.5000000000"],
        ["acme", "support-evenly", "even", "5.0000000001", "5.0000000001"],
        ["beta", "support-evenly", "even", "5.0000000000", "5.0000000000"],
    ]
    # The invariant: allocated + unallocated = billed, per period and currency.
    assert psql(pg, "SELECT (SELECT sum(billed_cost) FROM cost_allocation) = (SELECT sum(billed_cost) FROM billing), "
                    "(SELECT sum(effective_cost) FROM cost_allocation) = (SELECT sum(effective_cost) FROM billing)") \
        == [["t", "t"]]

    # Revenue from the plans: acme 100 + (30 - 10 included) x 0.5 = 110; beta 10 + 10 x 0.25 = 12.5.
    # Margin on effective cost: acme 110 - (1 + 5 + 67.5 + 5.0000000001) = 31.4999999999;
    # beta 12.5 - (2 + 22.5 + 5) = -17.
    rows = psql(pg, "SELECT tenant_id, plan, currency, revenue, cost, margin, round(margin_pct, 2) "
                    "FROM tenant_margin ORDER BY tenant_id")
    assert rows == [
        ["acme", "pro", "USD", "110.0000000000", "78.5000000001", "31.4999999999", "28.64"],
        ["beta", "basic", "USD", "12.5000000000", "29.5000000000", "-17.0000000000", "-136.0"],
    ]
    rows = psql(pg, "SELECT tenant_id, sum(effective_cost) FROM tenant_costs WHERE tenant_id IS NOT NULL "
                    "GROUP BY 1 ORDER BY 1")
    assert rows == [["acme", "78.5000000001"], ["beta", "29.5000000000"]]
    # The finance lead's question: who eats the margin?
    assert psql(pg, "SELECT tenant_id FROM tenant_margin WHERE margin < 0") == [["beta"]]


FOCUS_SAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "testdata", "focus", "focus_sample.csv")


def test_allocation_invariant_on_the_real_focus_sample(tmp_path):
    """Per billing period and currency, exactly: allocated + unallocated = billed (and effective),
    on 1,000 real AWS, Azure and Oracle lines with every kind of rule in play."""
    lake = str(tmp_path / "lake")
    (tmp_path / "tenants.yaml").write_text("tenants:\n  - {id: t1}\n  - {id: t2}\n  - {id: t3}\n")
    tenantscope("import", "tenants", str(tmp_path / "tenants.yaml"), "--data", lake)
    tenantscope("import", "billing", FOCUS_SAMPLE, "--data", lake)
    config = tmp_path / "cost.yaml"
    config.write_text("""
cost:
  allocation:
    - {name: compute-by-requests, match: {service_category: Compute}, method: proportional, meter: requests}
    - {name: storage-thirds, match: {service_category: Storage}, method: fixed, weights: {t1: 1, t2: 1, t3: 1}}
    - {name: aws-evenly, match: {provider_name: AWS}, method: even}
""")
    def q(sql):
        return sql_json(lake, sql, "--config", str(config))
    billed = q("SELECT billing_period, billing_currency, CAST(sum(billed_cost) AS VARCHAR) AS b, "
               "CAST(sum(effective_cost) AS VARCHAR) AS e FROM billing GROUP BY 1, 2 ORDER BY 1, 2")
    allocated = q("SELECT billing_period, billing_currency, CAST(sum(billed_cost) AS VARCHAR) AS b, "
                  "CAST(sum(effective_cost) AS VARCHAR) AS e FROM cost_allocation GROUP BY 1, 2 ORDER BY 1, 2")
    assert len(billed) > 1 and allocated == billed
    methods = {r["allocation_method"] for r in q("SELECT DISTINCT allocation_method FROM cost_allocation")}
    # No usage in this lake: compute stays unallocated under its rule; the rest is split.
    assert methods == {"unallocated", "fixed", "even"}
    # Each split line's shares sum to the line, with thirds truncated and the remainder placed.
    thirds = q("SELECT charge_period_start, service_name, count(*) AS n FROM cost_allocation "
               "WHERE allocation_rule = 'storage-thirds' GROUP BY 1, 2")
    assert thirds and all(r["n"] % 3 == 0 for r in thirds)


def test_heavy_hitters_and_anomalies_on_the_demo_week(demo_week):
    lake = demo_week
    demo = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "demo.yaml")

    def q(sql):
        return sql_json(lake, sql, "--config", demo)

    # The demo's usage spike (one tenant, 14:00-18:00 on the last day) and nothing else that day.
    spike = q("SELECT tenant_id, CAST(hour AS VARCHAR) AS h FROM usage_anomalies "
              "WHERE meter = 'requests' AND is_anomaly AND hour >= TIMESTAMP '2026-11-27T00:00:00Z' ORDER BY hour")
    assert [r["h"][11:16] for r in spike] == ["14:00", "15:00", "16:00", "17:00"]
    assert len({r["tenant_id"] for r in spike}) == 1
    spiking = spike[0]["tenant_id"]
    # Its cost that day is an anomaly too (its share of the shared infrastructure jumped).
    assert [r["tenant_id"] for r in q("SELECT tenant_id FROM cost_anomalies WHERE is_anomaly AND day = DATE '2026-11-27'")] == [spiking]
    # Heavy hitters agree with the allocation they rank.
    top = q("SELECT tenant_id, rank, share_pct FROM top_tenants_by_cost ORDER BY rank")
    direct = q("SELECT tenant_id FROM cost_allocation WHERE tenant_id IS NOT NULL GROUP BY 1 ORDER BY sum(effective_cost) DESC LIMIT 1")
    assert top[0]["tenant_id"] == direct[0]["tenant_id"] and top[0]["rank"] == 1
    assert abs(sum(float(r["share_pct"]) for r in top) - 100) < 1e-9
    # The margin eater: the heavy tenant on a cheap plan.
    eaters = q("SELECT tenant_id, plan FROM negative_margin_tenants")
    assert [r["plan"] for r in eaters] == ["team"]
    assert q("SELECT count(DISTINCT day) AS n FROM top_routes WHERE rank = 1")[0]["n"] == 7
    # approx_top_k agrees with an exact GROUP BY where the cardinality is low, and runs on a
    # high-cardinality column (trace ids) in bounded memory.
    approx = q("SELECT approx_top_k(attributes['http.route'], 3) AS top FROM spans WHERE kind = 'server' AND tenant_id = 'acme'")[0]["top"]
    exact = q("SELECT attributes['http.route'] AS value, count(*) AS count FROM spans WHERE kind = 'server' "
              "AND tenant_id = 'acme' GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 3")
    assert approx == [{"value": r["value"], "count": r["count"]} for r in exact]
    assert q("SELECT cardinality(approx_top_k(trace_id, 5)) AS n FROM spans")[0]["n"] == 5
    # The scoring function on any series.
    row = q("SELECT anomaly_score(400, [100, 102, 98, 101, 99, 100, 5000]) AS s, "
            "series_median([3, 1, 2]) AS m, anomaly_score(1, [1, 1]) AS none")[0]
    assert float(row["s"]) > 100 and float(row["m"]) == 2.0 and row["none"] is None


def test_a_benchmark_sized_bill_is_hourly_and_fully_allocated(tmp_path):
    """`demo --billing-resources N` adds N instances billed by the hour (24 lines a day each),
    seven in ten tagged with a tenant; every cent of the bill is in cost_allocation."""
    lake = str(tmp_path / "lake")
    tenantscope("demo", "--no-serve", "--data", lake, "--tenants", "12", "--days", "2", "--peak-requests-per-day", "500",
                "--billing-resources", "10", "--end-date", "2026-11-27")
    config = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "demo.yaml")
    hourly = sql_json(lake, "SELECT count(*) AS n, count(DISTINCT resource_id) AS r, "
                            "count(tenant_id) AS tagged FROM billing WHERE resource_name LIKE 'worker-%' "
                            "AND charge_period_end - charge_period_start = INTERVAL '1 hour'")
    assert hourly == [{"n": 10 * 24 * 2, "r": 10, "tagged": 7 * 24 * 2}]
    totals = sql_json(lake, "SELECT (SELECT sum(effective_cost) FROM billing) AS billed, "
                            "(SELECT sum(effective_cost) FROM cost_allocation) AS allocated, "
                            "(SELECT sum(effective_cost) FROM cost_allocation WHERE tenant_id IS NULL) AS unallocated",
                      "--config", config)
    assert totals[0]["billed"] == totals[0]["allocated"] > 0
    assert totals[0]["unallocated"] is None  # every line matched a rule and found usage to split by
    # Without the flag the demo's bill is what it always was (the tests above rely on its numbers).
    plain = str(tmp_path / "plain")
    tenantscope("demo", "--no-serve", "--data", plain, "--tenants", "12", "--days", "2", "--peak-requests-per-day", "500",
                "--end-date", "2026-11-27")
    assert sql_json(plain, "SELECT count(*) AS n FROM billing WHERE resource_name LIKE 'worker-%'") == [{"n": 0}]
