"""A lake written by tenantscope is a plain Delta Lake: Python `deltalake` and `polars` read it
and get the same row counts and sums as `tenantscope sql`."""

from decimal import Decimal

import polars as pl
import pyarrow.compute as pc
from deltalake import DeltaTable

from conftest import sql_json


def test_deltalake_reads_spans_like_tenantscope(demo_lake):
    ours = sql_json(demo_lake, "SELECT count(*) AS n, sum(duration_ns) AS d, count(DISTINCT tenant_id) AS t FROM spans")[0]
    table = DeltaTable(f"{demo_lake}/spans").to_pyarrow_table()
    assert table.num_rows == ours["n"] > 0
    assert pc.sum(table["duration_ns"]).as_py() == ours["d"]
    assert len(pc.unique(table["tenant_id"])) == ours["t"] == 8
    assert DeltaTable(f"{demo_lake}/spans").metadata().partition_columns == ["date"]


def test_polars_scan_delta_matches_per_tenant(demo_lake):
    ours = sql_json(demo_lake, "SELECT tenant_id, count(*) AS n, sum(duration_ns) AS d FROM spans GROUP BY 1 ORDER BY 1")
    theirs = (
        pl.scan_delta(f"{demo_lake}/spans")
        .group_by("tenant_id")
        .agg(pl.len().alias("n"), pl.col("duration_ns").sum().alias("d"))
        .sort("tenant_id")
        .collect()
    )
    assert [(r["tenant_id"], r["n"], r["d"]) for r in ours] == list(theirs.iter_rows())


def test_money_is_exact_decimal_everywhere(demo_lake):
    ours = sql_json(demo_lake, "SELECT CAST(sum(billed_cost) AS VARCHAR) AS c, count(*) AS n FROM billing")[0]
    dt = DeltaTable(f"{demo_lake}/billing")
    arrow = dt.to_pyarrow_table()
    assert str(arrow.schema.field("billed_cost").type) == "decimal128(38, 10)"
    assert arrow.num_rows == ours["n"]
    py_sum = sum((v for v in arrow["billed_cost"].to_pylist() if v is not None), Decimal(0))
    assert py_sum == Decimal(ours["c"])
    polars_sum = pl.scan_delta(f"{demo_lake}/billing").select(pl.col("billed_cost").sum()).collect().item()
    assert Decimal(str(polars_sum)) == Decimal(ours["c"])


def test_maps_and_timestamps_round_trip(demo_lake):
    dt = DeltaTable(f"{demo_lake}/spans")
    schema = dt.to_pyarrow_table().schema
    assert str(schema.field("time").type) == "timestamp[us, tz=UTC]"
    assert str(schema.field("attributes").type).startswith("map<string, string")
    row = pl.scan_delta(f"{demo_lake}/spans").filter(pl.col("kind") == "server").head(1).collect().row(0, named=True)
    attrs = row["attributes"]  # polars reads a Delta map as Map(String, String): a dict
    assert attrs["tenant.id"] == row["tenant_id"]
    assert attrs["http.route"].startswith("/api/v1/")
