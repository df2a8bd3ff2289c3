"""Lake maintenance through the binary: compaction keeps every row and shrinks the file count,
retention removes exactly the expired days, serve runs both on its schedule and reports them on
/metrics and in the audit log."""

import datetime as dt
import os
import shutil
import urllib.request


from conftest import Server, sql_json, tenantscope


def per_day(lake, table):
    return sql_json(lake, f"SELECT CAST(date AS VARCHAR) AS d, count(*) AS n FROM {table} GROUP BY 1 ORDER BY 1")


def test_compact_keeps_every_row_and_merges_files(tmp_path, demo_week):
    lake = str(tmp_path / "lake")
    shutil.copytree(demo_week, lake)
    before = {t: per_day(lake, t) for t in ("spans", "logs", "metrics")}
    out = tenantscope("compact", "--data", lake, "--table", "metrics", "--table", "spans", "--table", "logs")
    # One line per table: "metrics: 14 files, 399750 bytes -> 8 files, 330444 bytes (...)".
    counts = {}
    for line in out.splitlines():
        table, rest = line.split(": ", 1)
        counts[table] = (int(rest.split(" files")[0]), int(rest.split("-> ")[1].split(" files")[0]))
    assert set(counts) == {"metrics", "spans", "logs"}, out
    assert all(after <= before_ for before_, after in counts.values()), out
    assert any(after < before_ for before_, after in counts.values()), out
    assert {t: per_day(lake, t) for t in before} == before
    audit = sql_json(lake, "SELECT action, target FROM audit_log WHERE action = 'maintenance.compact'")
    assert audit, "compactions are audited"


def test_retention_removes_exactly_the_expired_days(tmp_path, demo_week):
    lake = str(tmp_path / "lake")
    shutil.copytree(demo_week, lake)
    before = per_day(lake, "spans")
    assert [r["d"] for r in before][0] == "2026-11-21"
    # Keep from 2026-11-24 on, whatever today is.
    days = (dt.datetime.now(dt.timezone.utc).date() - dt.date(2026, 11, 24)).days + 1
    config = tmp_path / "m.yaml"
    config.write_text(f"maintenance:\n  retention_days: {{spans: {days}}}\n  vacuum_after: 0s\n")
    out = tenantscope("vacuum", "--data", lake, "--config", str(config), "--table", "spans", "--table", "billing")
    assert "spans: removed 3 days before 2026-11-24" in out, out
    assert per_day(lake, "spans") == [r for r in before if r["d"] >= "2026-11-24"]
    # Vacuum (after 0 s) deleted the removed days' files from storage too.
    left = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(lake, "spans")) for f in fs if f.endswith(".parquet")]
    assert left and not [p for p in left if any(f"date=2026-11-{d}" in p for d in ("21", "22", "23"))], left


def test_serve_runs_maintenance_on_its_schedule(tmp_path, demo_week):
    lake = str(tmp_path / "lake")
    shutil.copytree(demo_week, lake)
    s = Server(str(tmp_path), data=lake, config="maintenance:\n  interval: 1s\n")
    try:
        def metrics():
            return urllib.request.urlopen(f"{s.http}/metrics").read().decode()
        import time
        deadline = time.time() + 60
        while 'tenantscope_maintenance_runs_total{table="spans",operation="compact"}' not in metrics():
            assert time.time() < deadline, metrics()
            time.sleep(0.5)
        assert 'tenantscope_maintenance_table_files{table="spans",operation="current"}' in metrics()
        assert s.wait_for("SELECT count(*) > 0 FROM audit_log WHERE action = 'maintenance.compact'", [[True]]) == [[True]]
        # Queries keep answering the same while it runs.
        assert s.sql("SELECT count(*) FROM spans WHERE date = DATE '2026-11-27'") == \
            [[sum(r["n"] for r in per_day(demo_week, "spans") if r["d"] == "2026-11-27")]]
    finally:
        s.stop()
