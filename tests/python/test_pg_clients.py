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
