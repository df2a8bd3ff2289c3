"""Shared fixtures: the tenantscope binary and a small demo lake."""

import json
import os
import subprocess
from decimal import Decimal

import pytest

BIN = os.environ.get("TENANTSCOPE_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "target", "debug", "tenantscope"))


def tenantscope(*args, env=None):
    """Runs the binary; returns stdout, fails the test with stderr on a non-zero exit."""
    proc = subprocess.run([BIN, *args], capture_output=True, text=True, env={**os.environ, "TENANTSCOPE_LOG": "warn", **(env or {})})
    assert proc.returncode == 0, f"tenantscope {' '.join(args)} failed: {proc.stderr}"
    return proc.stdout


def sql_json(data, query):
    """`tenantscope sql --format json`, decimals parsed as Decimal."""
    return json.loads(tenantscope("sql", "--data", data, "--format", "json", query), parse_float=Decimal)


@pytest.fixture(scope="session")
def demo_lake(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("lake"))
    tenantscope("demo", "--no-serve", "--data", path, "--tenants", "8", "--days", "3",
                "--peak-requests-per-day", "2000", "--end-date", "2026-11-27")
    return path
