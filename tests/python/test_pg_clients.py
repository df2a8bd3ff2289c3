"""Real PostgreSQL clients against the PG wire: psycopg (extended protocol, server-side
parameters, typed results) and the SQL Grafana's PostgreSQL datasource sends after expanding
its macros (expanded here exactly as Grafana's macros.go does)."""

import datetime as dt
from decimal import Decimal

import psycopg
import pytest

from grafana import grafana_expand

@pytest.fixture(scope="module")
def pg(demo_lake, tmp_path_factory):
    from conftest import Server
    s = Server(str(tmp_path_factory.mktemp("pgserve")), data=demo_lake)
    yield s.ports["pg"]
    s.stop()


def connect(port):
    return psycopg.connect(host="127.0.0.1", port=port, user="tenantscope", dbname="tenantscope", connect_timeout=10,
                           autocommit=True)


def test_psycopg_parameters_and_types(pg):
    with connect(pg) as conn:
        rows = conn.execute("SELECT tenant_id, count(*) AS n, sum(billed_cost) AS cost, min(charge_period_start) AS first "
                            "FROM billing WHERE tenant_id = %s GROUP BY tenant_id", ("acme",)).fetchall()
        assert len(rows) == 1
        tenant, n, cost, first = rows[0]
        assert tenant == "acme" and isinstance(n, int) and n > 0
        assert isinstance(cost, Decimal) and cost == Decimal("15.4800000000")
        assert isinstance(first, dt.datetime) and first.utcoffset() == dt.timedelta(0)
        # The same statement again with another parameter (a prepared statement reused).
        assert conn.execute("SELECT count(*) FROM billing WHERE tenant_id = %s", ("nobody",)).fetchone() == (0,)
        floats = conn.execute("SELECT CAST(0.5 AS DOUBLE) AS f, true AS b, CAST(NULL AS VARCHAR) AS n").fetchone()
        assert floats == (0.5, True, None)


def test_grafana_connection_check_and_time_series_panels(pg):
    with connect(pg) as conn:
        # The datasource's health check.
        assert conn.execute("SELECT 1").fetchone() == (1,)
        # A time-series panel: requests per tenant per hour.
        sql = grafana_expand("SELECT $__timeGroupAlias(hour, '1h'), tenant_id AS metric, sum(quantity) AS value "
                             "FROM usage WHERE $__timeFilter(hour) AND meter = 'requests' GROUP BY 1, 2 ORDER BY 1")
        assert 'floor(extract(epoch from hour)/3600)*3600 AS "time"' in sql
        rows = conn.execute(sql).fetchall()
        assert rows and all(r[0] % 3600 == 0 for r in rows)
        assert {r[1] for r in rows} >= {"acme"}
        # $__time and $__timeFrom()/$__timeTo() with date_trunc, now(), interval and to_timestamp.
        sql = grafana_expand("SELECT $__time(day), sum(effective_cost) AS cost FROM tenant_costs "
                             "WHERE day >= $__timeFrom() AND day < $__timeTo() GROUP BY 1 ORDER BY 1")
        rows = conn.execute(sql).fetchall()
        assert len(rows) == 3 and all(isinstance(r[1], Decimal) for r in rows)
        row = conn.execute("SELECT date_trunc('day', to_timestamp(1795824000)) AS d, "
                           "now() - interval '1 day' < now() AS past, extract(epoch from to_timestamp(60)) AS e").fetchone()
        assert row[0] == dt.datetime(2026, 11, 28, tzinfo=dt.timezone.utc) and row[1] is True and float(row[2]) == 60.0
        # Unix-epoch columns: $__unixEpochFilter and $__unixEpochGroupAlias.
        sql = grafana_expand("SELECT $__unixEpochGroupAlias(ts, '1d'), sum(q) AS value FROM "
                             "(SELECT CAST(extract(epoch from hour) AS BIGINT) AS ts, quantity AS q FROM usage) u "
                             "WHERE $__unixEpochFilter(ts) GROUP BY 1 ORDER BY 1")
        rows = conn.execute(sql).fetchall()
        assert [int(r[0]) for r in rows] == [1795564800, 1795651200, 1795737600]


def test_maps_arrive_as_json_over_both_protocols_and_http(demo_lake, tmp_path_factory):
    """Tags and attributes are maps: over the PG wire they are PostgreSQL json (psycopg decodes
    a dict), in the extended protocol (psycopg, with a parameter) and the simple one (psql,
    including `SELECT *`); over HTTP, JSON objects. All equal to the CLI's JSON output."""
    import json
    import subprocess
    import urllib.request

    from conftest import Server, sql_json
    query = ("SELECT tenant_id, tags FROM billing WHERE tenant_id = '{t}' AND tags IS NOT NULL "
             "ORDER BY charge_period_start, resource_id LIMIT 3")
    expected = sql_json(demo_lake, query.format(t="acme"))
    assert expected and all(isinstance(r["tags"], dict) and r["tags"] for r in expected)
    s = Server(str(tmp_path_factory.mktemp("pgmaps")), data=demo_lake)
    try:
        with connect(s.ports["pg"]) as conn:
            cur = conn.execute(query.replace("'{t}'", "%s"), ("acme",))
            assert cur.description[1].type_code == 114  # json
            assert [{"tenant_id": t, "tags": tags} for t, tags in cur.fetchall()] == expected
            # Maps inside other values, and NULL maps.
            row = conn.execute("SELECT attributes, events FROM spans WHERE tenant_id = %s LIMIT 1", ("acme",)).fetchone()
            assert isinstance(row[0], dict) and isinstance(row[1], list)
        out = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(s.ports["pg"]), "-U", "tenantscope", "-d", "tenantscope",
                              "-X", "-A", "-t", "-F", "\t", "-c", query.format(t="acme")],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        got = [line.split("\t") for line in out.stdout.splitlines() if line]
        assert [{"tenant_id": t, "tags": json.loads(tags)} for t, tags in got] == expected
        for table in ("spans", "logs", "billing", "metrics"):
            out = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(s.ports["pg"]), "-U", "tenantscope", "-d", "tenantscope",
                                  "-X", "-c", f"SELECT * FROM {table} LIMIT 2"], capture_output=True, text=True, timeout=60)
            assert out.returncode == 0 and " rows)" in out.stdout, (table, out.stderr)
        assert "(2 rows)" in subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(s.ports["pg"]), "-U", "tenantscope", "-d", "tenantscope", "-X", "-c",
             "SELECT * FROM spans LIMIT 2"], capture_output=True, text=True, timeout=60).stdout
        req = urllib.request.Request(f"{s.http}/v1/sql", data=json.dumps({"sql": query.format(t="acme")}).encode(),
                                     headers={"Content-Type": "application/json"})
        body = json.loads(urllib.request.urlopen(req, timeout=60).read())
        assert [dict(zip(("tenant_id", "tags"), r)) for r in body["rows"]] == expected
    finally:
        s.stop()


def test_statement_timeout_stops_a_running_query_over_both_protocols(pg):
    """`SET statement_timeout` bounds a statement's whole run, not only its planning: the plan
    runs while its rows stream out. Uncancelled, this count takes minutes and returns a row, so
    the query-canceled error (57014) says the timeout stopped it (no timing bound needed)."""
    import subprocess
    endless = "SELECT count(*) FROM generate_series(1, 20000000000)"
    with connect(pg) as conn:  # psycopg: the extended protocol
        conn.execute("SET statement_timeout = '300ms'")
        with pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"):
            conn.execute(endless).fetchall()
        # The connection goes on; a quick statement is within the timeout, and 0 turns it off.
        assert conn.execute("SELECT count(*) FROM billing WHERE tenant_id = %s", ("acme",)).fetchone()[0] > 0
        conn.execute("SET statement_timeout = 0")
        assert conn.execute("SHOW statement_timeout").fetchone() is not None
    # psql: the simple protocol, the SET and the query as two statements of one session.
    out = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(pg), "-U", "tenantscope", "-d", "tenantscope", "-X",
                          "-c", "SET statement_timeout = '300ms'", "-c", endless],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode != 0 and "canceling statement due to statement timeout" in out.stderr, (out.stdout, out.stderr)


def test_a_connections_set_is_its_own_and_its_views_are_everyones(pg):
    """Admin connections (here: no authentication) each have their own configuration: one
    connection's `SET datafusion.…` does not change another's (nor the HTTP API's, which has
    the engine's own); the catalog is shared, so a view one creates, the other reads."""
    def batch_size(conn):
        return conn.execute("SELECT value FROM information_schema.df_settings "
                            "WHERE name = 'datafusion.execution.batch_size'").fetchone()[0]

    with connect(pg) as a, connect(pg) as b:
        default = batch_size(b)
        a.execute("SET datafusion.execution.batch_size = 123")
        assert batch_size(a) == "123"
        assert batch_size(b) == default != "123"
        # SHOW answers as PostgreSQL does, over both protocols (psycopg's extended, psql's simple).
        assert a.execute("SHOW datafusion.execution.batch_size").fetchone() == ("123",)
        assert b.execute("SHOW datafusion.execution.batch_size").fetchone() == (default,)
        import subprocess
        out = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(pg), "-U", "tenantscope", "-d", "tenantscope", "-X",
                              "-q", "-A", "-t", "-c", "SET datafusion.execution.batch_size = 77",
                              "-c", "SHOW datafusion.execution.batch_size"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stdout.split() == ["77"], (out.stdout, out.stderr)
        with connect(pg) as c:  # a connection opened after the SET
            assert batch_size(c) == default
        a.execute("CREATE VIEW set_test_acme_lines AS SELECT * FROM billing WHERE tenant_id = 'acme'")
        try:
            assert b.execute("SELECT count(*) FROM set_test_acme_lines").fetchone()[0] > 0
        finally:
            a.execute("DROP VIEW set_test_acme_lines")
