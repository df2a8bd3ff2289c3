"""Billing import golden totals: every cost column's total in the lake equals a decimal sum
computed here, independently, from the source file (Python `csv` and `decimal`)."""

import csv
import glob
import os
from decimal import Decimal, ROUND_HALF_EVEN

import pytest

from conftest import sql_json, tenantscope

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "testdata")
SCALE = Decimal("1e-10")
COST_COLUMNS = ["BilledCost", "EffectiveCost", "ListCost", "ContractedCost"]


def money(raw):
    """A source value as the lake stores it: Decimal128(38, 10), rounded half-even."""
    raw = raw.strip().replace("$", "").replace(",", "")
    if raw in ("", "NULL", "null"):
        return None
    return Decimal(raw).quantize(SCALE, rounding=ROUND_HALF_EVEN)


def exact(raw):
    raw = raw.strip().replace("$", "").replace(",", "")
    return None if raw in ("", "NULL", "null") else Decimal(raw)


def rows(path):
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def lake_sum(lake, column, where="TRUE"):
    out = sql_json(lake, f"SELECT CAST(sum({column}) AS VARCHAR) AS s, count(*) AS n FROM billing WHERE {where}")[0]
    return (Decimal(out["s"]) if out["s"] is not None else None), out["n"]


def snake(name):
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


def test_focus_sample_totals_are_exact(tmp_path):
    lake = str(tmp_path / "lake")
    path = os.path.join(ROOT, "focus", "focus_sample.csv")
    out = tenantscope("import", "billing", "--data", lake, path)
    data = rows(path)
    assert len(data) == 1000
    for col in COST_COLUMNS:
        expected = sum((money(r[col]) for r in data if money(r[col]) is not None), Decimal(0))
        got, n = lake_sum(lake, snake(col))
        assert n == 1000
        assert got == expected, col
        # And against the file's own, unrounded total: off by at most half a unit per rounded value.
        file_total = sum((exact(r[col]) for r in data if exact(r[col]) is not None), Decimal(0))
        off = sum(1 for r in data if exact(r[col]) is not None and exact(r[col]) != money(r[col]))
        assert abs(file_total - got) <= off * SCALE / 2, col
    # The import says how many values (of every decimal column) it rounded.
    decimal_columns = COST_COLUMNS + ["ConsumedQuantity", "PricingQuantity", "ListUnitPrice", "ContractedUnitPrice"]
    rounded = sum(1 for r in data for c in decimal_columns if exact(r[c]) is not None and exact(r[c]) != money(r[c]))
    assert rounded > 0
    assert f"{rounded} values had more than 10 decimals and were rounded half-even to 10." in out
    # The extra unprefixed `Id` column is kept in x_extra, not dropped.
    assert sql_json(lake, "SELECT count(*) AS n FROM billing WHERE x_extra['Id'] IS NOT NULL")[0]["n"] == 1000


SPEC = sorted(glob.glob(os.path.join(ROOT, "focus", "spec-v1.2-examples", "**", "*.csv"), recursive=True))


@pytest.mark.parametrize("path", SPEC, ids=[os.path.basename(p) for p in SPEC])
def test_spec_examples_import_with_golden_totals(tmp_path, path):
    lake = str(tmp_path / "lake")
    tenantscope("import", "billing", "--data", lake, path)
    data = rows(path)
    for col in ["BilledCost", "EffectiveCost"]:
        if col not in data[0]:
            continue
        expected = sum((money(r[col]) for r in data if money(r[col]) is not None), Decimal(0))
        got, n = lake_sum(lake, snake(col))
        assert n == len(data)
        assert got == expected, col


def test_spec_amortization_example_documented_costs(tmp_path):
    """commitment_discount_usage_scenario_1: a used commitment is billed 0 and costs 1.00 effective."""
    lake = str(tmp_path / "lake")
    path = os.path.join(ROOT, "focus", "spec-v1.2-examples", "commitment_discount_scenarios", "commitment_discount_usage_scenario_1.csv")
    tenantscope("import", "billing", "--data", lake, path)
    row = sql_json(lake, "SELECT CAST(billed_cost AS VARCHAR) AS b, CAST(effective_cost AS VARCHAR) AS e, commitment_discount_status AS s FROM billing")[0]
    assert (Decimal(row["b"]), Decimal(row["e"]), row["s"]) == (Decimal("0"), Decimal("1"), "Used")


@pytest.mark.parametrize("name", ["EA_ActualCost_Small.csv", "EA_AmortizedCost_Small.csv"])
def test_azure_ea_exports(tmp_path, name):
    lake = str(tmp_path / "lake")
    path = os.path.join(ROOT, "azure", name)
    tenantscope("import", "billing", "--data", lake, path)
    data = rows(path)
    covered = [r for r in data if r["ChargeType"] == "Usage" and r["PricingModel"] in ("Reservation", "SavingsPlan")]
    total = sum((money(r["Cost"]) for r in data), Decimal(0))
    billed = total - sum((money(r["Cost"]) for r in covered), Decimal(0))
    assert lake_sum(lake, "effective_cost") == (total, len(data))
    assert lake_sum(lake, "billed_cost") == (billed, len(data))
    # Tags without outer braces parse; dates are MM/DD/YYYY; end dates become exclusive.
    tagged = sql_json(lake, "SELECT count(*) AS n FROM billing WHERE tags['CostCenter'] = '1234'")[0]["n"]
    assert tagged == sum(1 for r in data if '"CostCenter": "1234"' in r["Tags"])
    period = sql_json(lake, "SELECT DISTINCT CAST(billing_period_start AS VARCHAR) AS s, CAST(billing_period_end AS VARCHAR) AS e FROM billing")
    assert period == [{"s": "2023-09-01T00:00:00Z", "e": "2023-10-01T00:00:00Z"}]
