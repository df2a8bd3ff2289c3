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
"""


@pytest.fixture(scope="module")
def pg(tmp_path_factory):
    lake = str(tmp_path_factory.mktemp("dashlake"))
    tenantscope("demo", "--no-serve", "--data", lake, "--tenants", "8", "--days", "7",
                "--peak-requests-per-day", "2000", "--end-date", "2026-11-27")
    root = tmp_path_factory.mktemp("dashserve")
    rules = root / "rules.yaml"
    rules.write_text(DASHBOARD_RULES)
    with open(os.path.join(ROOT, "examples", "demo.yaml")) as f:
        config = f.read() + "\nalerts:\n  webhooks:\n    - {name: nobody, url: 'http://127.0.0.1:9/hook', timeout: 1s}\n"
    s = Server(str(root), data=lake, config=config, extra=["--rules", str(rules)])
    events = "SELECT DISTINCT event FROM alerts WHERE event IN ('transition', 'notification', 'error') ORDER BY 1"
    assert s.wait_for(events, [["error"], ["notification"], ["transition"]], timeout=30) == \
        [["error"], ["notification"], ["transition"]], s.logs()
    yield s.ports["pg"]
    s.stop()


def time_range(d):
    """The demo week, or for the alerts dashboard (whose rows the fixture's rules write now) the
    last hour."""
    if d["uid"] == "tenantscope-alerts":
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
