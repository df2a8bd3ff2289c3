"""POST /v1/sql: positional parameters and every output format (JSON, CSV, Arrow IPC stream,
Parquet) read back by real readers (csv, pyarrow), and errors that say whose fault they are."""

import csv
import io
import json
import urllib.error
import urllib.request
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest


@pytest.fixture(scope="module")
def api(demo_lake, tmp_path_factory):
    from conftest import Server
    s = Server(str(tmp_path_factory.mktemp("httpserve")), data=demo_lake)
    yield s.http
    s.stop()


def post(url, body, accept=None):
    headers = {"Content-Type": "application/json", **({"Accept": accept} if accept else {})}
    req = urllib.request.Request(f"{url}/v1/sql", data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


QUERY = "SELECT tenant_id, count(*) AS n, sum(billed_cost) AS cost FROM billing WHERE tenant_id = $1 GROUP BY 1"


def test_params_and_formats(api):
    status, ctype, body = post(api, {"sql": QUERY, "params": ["acme"]})
    assert status == 200 and ctype.startswith("application/json")
    rows = json.loads(body)["rows"]
    assert rows == [["acme", 3, "15.4800000000"]]

    status, ctype, body = post(api, {"sql": QUERY, "params": ["acme"]}, "text/csv")
    assert status == 200 and ctype.startswith("text/csv")
    assert list(csv.reader(io.StringIO(body.decode()))) == [["tenant_id", "n", "cost"], ["acme", "3", "15.4800000000"]]

    status, ctype, body = post(api, {"sql": QUERY, "params": ["acme"]}, "application/vnd.apache.arrow.stream")
    assert status == 200 and ctype == "application/vnd.apache.arrow.stream"
    table = pa.ipc.open_stream(body).read_all()
    assert table.column("cost").type == pa.decimal128(38, 10)
    assert table.to_pylist() == [{"tenant_id": "acme", "n": 3, "cost": Decimal("15.4800000000")}]

    status, ctype, body = post(api, {"sql": QUERY, "params": ["acme"]}, "application/vnd.apache.parquet")
    assert status == 200 and ctype == "application/vnd.apache.parquet"
    assert pq.read_table(io.BytesIO(body)).to_pylist() == [{"tenant_id": "acme", "n": 3, "cost": Decimal("15.4800000000")}]

    status, _, body = post(api, {"sql": "SELECT $1 + 1 AS a, $2 AS b, $3 AS c", "params": [41, 0.5, True]})
    assert json.loads(body)["rows"] == [[42, 0.5, True]]


def test_errors_say_whose_fault(api):
    status, _, body = post(api, {"sql": "SELECT (1 FROM billing"})
    assert status == 400 and "found: FROM at Line: 1, Column: 11" in json.loads(body)["error"]
    status, _, body = post(api, {"sql": QUERY, "params": [{"a": 1}]})
    assert status == 400 and "params[0]" in json.loads(body)["error"]
    status, _, body = post(api, {"sql": "SELECT nope FROM billing"})
    assert status == 400 and "nope" in json.loads(body)["error"]


def test_a_repeated_question_sees_new_data_the_clock_and_redefined_views(server_factory):
    """The HTTP API keeps the optimized plan of each SQL text (query/src/plans.rs). Asked again,
    the same text must still see an import that landed meanwhile, the current time, and a view
    redefined through the PostgreSQL wire."""
    import os
    import time

    import psycopg

    s = server_factory()
    resources = "SELECT count(*) FROM tenant_resources"
    assert s.sql(resources) == [[0]]
    assert s.sql(resources) == [[0]]
    sample = os.path.join(os.path.dirname(__file__), "..", "..", "testdata", "focus", "focus_sample.csv")
    with open(sample, "rb") as f:
        req = urllib.request.Request(f"{s.http}/v1/import/billing?name=focus_sample.csv&source=sample", data=f.read())
    urllib.request.urlopen(req, timeout=120).read()
    # Counted another way (other SQL text, straight from the lines).
    [[expected]] = s.sql("SELECT count(*) FROM (SELECT DISTINCT billing_period, tenant_id, resource_id, "
                         "upper(billing_currency) FROM billing WHERE resource_id IS NOT NULL)")
    assert expected > 0
    assert s.sql(resources) == [[expected]]

    # Once computed, the small kept rollup is read on one partition (no repartitioning), while
    # the bill it comes from is spread over every core.
    per_tenant = "SELECT tenant_id, count(DISTINCT resource_id) FROM {} GROUP BY 1"
    def physical(sql):
        return " ".join(r[1] for r in s.sql("EXPLAIN " + sql) if r[0] == "physical_plan")
    assert "RepartitionExec" not in physical(per_tenant.format("tenant_resources"))
    if (os.cpu_count() or 1) > 1:
        assert "RepartitionExec" in physical(per_tenant.format("billing"))

    now = "SELECT CAST(now() AS VARCHAR)"
    [[first]] = s.sql(now)
    time.sleep(0.01)
    [[second]] = s.sql(now)
    assert second > first, "now() was answered from a kept plan"

    s.sql("CREATE VIEW answer AS SELECT 1 AS x")
    assert s.sql("SELECT x FROM answer") == [[1]]
    assert s.sql("SELECT x FROM answer") == [[1]]
    with psycopg.connect(host="127.0.0.1", port=s.ports["pg"], user="tenantscope", dbname="tenantscope",
                         connect_timeout=10, autocommit=True) as conn:
        conn.execute("CREATE OR REPLACE VIEW answer AS SELECT 2 AS x")
    assert s.sql("SELECT x FROM answer") == [[2]]


def test_nested_values_are_json_with_decimals_as_strings(api):
    """Maps, lists and structs are JSON objects and arrays; decimals inside them are strings, as
    at the top level, so that no digit of money is lost."""
    status, _, body = post(api, {"sql": "SELECT make_array(CAST(1.5 AS DECIMAL(38, 10)), CAST(2.25 AS DECIMAL(38, 10))) AS a, "
                                        "named_struct('x', CAST(3 AS DECIMAL(38, 10)), 'n', 7) AS s, "
                                        "map(['env'], ['prod']) AS m, CAST(0.1 AS DECIMAL(38, 10)) AS top"})
    assert status == 200, body
    assert json.loads(body)["rows"] == [[["1.5000000000", "2.2500000000"], {"x": "3.0000000000", "n": 7},
                                         {"env": "prod"}, "0.1000000000"]]
