"""Every panel and variable query of every dashboard in dashboards/json, expanded as Grafana's
PostgreSQL datasource expands it (variables with All and with a multi-value selection,
$__interval, then the macros), run over the PostgreSQL wire against a week of demo data: it
must succeed, return rows, and have the shape its panel's format needs. And the dashboard check
(dashboards/check.py) passes on ours and fails on broken ones."""

import datetime as dt
import json
import os
import shutil
import subprocess
import sys

import psycopg
import pytest

from conftest import Server, tenantscope
from grafana import grafana_expand, interpolate

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
DASHBOARDS = os.path.join(ROOT, "dashboards", "json")
START = dt.datetime(2026, 11, 21, tzinfo=dt.timezone.utc)
END = dt.datetime(2026, 11, 28, tzinfo=dt.timezone.utc)


def dashboards():
    return sorted(f for f in os.listdir(DASHBOARDS) if f.endswith(".json"))


# Rules that give the alerts dashboard something to show: an alert that fires from the demo's
# usage spike, a rule that fails, and a webhook nobody listens to (failed notifications).
DASHBOARD_RULES = """groups:
  - name: dashboards
    interval: 1s
    rules:
      - alert: DemoSpike
        sql: |
          SELECT tenant_id, max(score) AS value FROM usage_anomalies
          WHERE is_anomaly AND meter = 'requests' AND hour >= TIMESTAMP '2026-11-27T00:00:00Z'
          GROUP BY tenant_id
      - alert: Broken
        sql: SELECT 'x' AS k, CAST(1 AS INT) / CAST(0 AS INT) AS value
      - alert: TenantActive
        sql: SELECT tenant_id, sum(quantity) AS value FROM usage WHERE meter = 'requests' GROUP BY tenant_id
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_week):
    # Served with rules and maintenance, which write: a copy.
    lake = str(tmp_path_factory.mktemp("dashlake") / "lake")
    shutil.copytree(demo_week, lake)
    root = tmp_path_factory.mktemp("dashserve")
    rules = root / "rules.yaml"
    rules.write_text(DASHBOARD_RULES)
    with open(os.path.join(ROOT, "examples", "demo.yaml")) as f:
        config = f.read() + "\nalerts:\n  webhooks:\n    - {name: nobody, url: 'http://127.0.0.1:9/hook', timeout: 1s}\n" \
            "maintenance:\n  interval: 2s\n"
    s = Server(str(root), data=lake, config=config, extra=["--rules", str(rules)])
    events = "SELECT DISTINCT event FROM alerts WHERE event IN ('transition', 'notification', 'error') ORDER BY 1"
    assert s.wait_for(events, [["error"], ["notification"], ["transition"]], timeout=30) == \
        [["error"], ["notification"], ["transition"]], s.logs()
    # Maintenance runs (every 2 s, while the panels are queried) and is audited.
    assert s.wait_for("SELECT count(*) > 0 FROM audit_log WHERE action LIKE 'maintenance.%'", [[True]], timeout=30) == \
        [[True]], s.logs()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def pg(server):
    return server.ports["pg"]


def time_range(d):
    """The demo week, or for the alerts and health dashboards (whose rows the fixture's rules,
    maintenance and ingest write now) the last hour."""
    if d["uid"] in ("tenantscope-alerts", "tenantscope-health"):
        now = dt.datetime.now(dt.timezone.utc)
        return now - dt.timedelta(hours=1), now + dt.timedelta(minutes=1)
    return START, END


def run(port, sql):
    with psycopg.connect(host="127.0.0.1", port=port, user="tenantscope", dbname="tenantscope",
                         connect_timeout=10, autocommit=True) as conn:
        cur = conn.execute(sql)
        return [c.name for c in cur.description], cur.fetchall()


@pytest.mark.parametrize("name", dashboards())
def test_every_panel_runs_with_all_and_with_a_selection(pg, name):
    with open(os.path.join(DASHBOARDS, name)) as f:
        d = json.load(f)
    variables = {"__interval": "1h", "__interval_ms": "3600000"}
    for v in d["templating"]["list"]:
        if v["type"] != "query":
            continue
        cols, rows = run(pg, grafana_expand(interpolate(v["query"], variables), *time_range(d)))
        assert rows, f"{name}: variable {v['name']} has no values"
        variables[v["name"]] = [str(r[0]) for r in rows]  # All
    selections = [dict(variables)]
    if "tenant" in variables:
        selections.append({**variables, "tenant": variables["tenant"][:2]})
    for vars_ in selections:
        for panel in d["panels"]:
            for target in panel["targets"]:
                if "rawSql" not in target:
                    continue  # PromQL: test_prometheus_panels_return_series
                sql = grafana_expand(interpolate(target["rawSql"], vars_), *time_range(d))
                assert "$" not in sql.replace("$$", ""), f"unexpanded: {sql}"
                cols, rows = run(pg, sql)
                where = f"{name}: panel {panel['title']!r}"
                assert rows, f"{where}: no rows for {sql}"
                if target["format"] == "time_series":
                    assert cols[0] == "time", f"{where}: the first column is {cols[0]!r}, not time"
                    assert all(isinstance(r[0], (int, float, dt.datetime)) or r[0].__class__.__name__ == "Decimal"
                               for r in rows), f"{where}: time values {rows[0][0]!r}"
                    assert len(cols) >= 2


def test_dashboard_check_passes_on_ours_and_fails_on_broken_ones(tmp_path):
    check = os.path.join(ROOT, "dashboards", "check.py")
    ok = subprocess.run([sys.executable, check], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout
    broken = tmp_path / "json"
    shutil.copytree(DASHBOARDS, broken)
    with open(broken / "tenant.json") as f:
        d = json.load(f)
    d["panels"][0]["description"] = ""
    d["panels"][1]["datasource"] = {"type": "grafana-postgresql-datasource", "uid": "P1809F7CD0C75ACF3"}
    (broken / "tenant.json").write_text(json.dumps(d))
    (broken / "bad.json").write_text("{ not json")
    out = subprocess.run([sys.executable, check, str(broken)], capture_output=True, text=True)
    assert out.returncode == 1
    assert "no description" in out.stdout
    assert "datasource is hard-coded" in out.stdout
    assert "bad.json: does not parse" in out.stdout


def prometheus_targets():
    out = []
    for name in dashboards():
        with open(os.path.join(DASHBOARDS, name)) as f:
            d = json.load(f)
        out += [(name, p["title"], t["expr"]) for p in d["panels"] for t in p["targets"] if "expr" in t]
    return out


def test_prometheus_panels_return_series(server, tmp_path):
    """The PromQL panels, against a real Prometheus (Debian prometheus) scraping the server's
    /metrics every second while telemetry (one span invalid), SQL and flushes happen."""
    import socket
    import time
    import urllib.parse
    import urllib.request

    from conftest import free_port

    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed (scripts/test.sh installs it)"
    targets = prometheus_targets()
    assert targets, "the health dashboard has PromQL panels"
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: tenantscope\n    static_configs: [{{targets: ['127.0.0.1:{server.ports['http']}']}}]\n")
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log)
    api = f"http://127.0.0.1:{port}/api/v1/query"

    def query(expr):
        with urllib.request.urlopen(f"{api}?{urllib.parse.urlencode({'query': expr})}", timeout=10) as r:
            return json.loads(r.read())

    try:
        deadline = time.time() + 60
        traces = f"http://127.0.0.1:{server.ports['otlp_http']}/v1/traces"
        good = {"resourceSpans": [{"resource": {"attributes": [{"key": "tenant.id", "value": {"stringValue": "acme"}}]},
                                   "scopeSpans": [{"spans": [
                                       {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
                                        "name": "GET /", "kind": 2, "startTimeUnixNano": str(time.time_ns() - 10**6),
                                        "endTimeUnixNano": str(time.time_ns())},
                                       {"traceId": "5b8e", "spanId": "eee19b7ec3c1b174", "name": "bad"}]}]}]}
        missing = targets
        while missing:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
            req = urllib.request.Request(traces, data=json.dumps(good).encode(), headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=10).read()
            server.sql("SELECT count(*) FROM spans")
            time.sleep(1)
            try:
                missing = [t for t in targets if not (r := query(t[2]))["data"]["result"] or r["status"] != "success"]
            except OSError:
                missing = targets
            assert time.time() < deadline, f"no series for {[(n, title) for n, title, _ in missing]}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
