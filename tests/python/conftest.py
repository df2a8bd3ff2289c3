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


def sql_json(data, query, *args):
    """`tenantscope sql --format json`, decimals parsed as Decimal."""
    return json.loads(tenantscope("sql", "--data", data, "--format", "json", *args, query), parse_float=Decimal)


@pytest.fixture(scope="session")
def demo_lake(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("lake"))
    tenantscope("demo", "--no-serve", "--data", path, "--tenants", "8", "--days", "3",
                "--peak-requests-per-day", "2000", "--end-date", "2026-11-27")
    return path


@pytest.fixture(scope="session")
def demo_week(tmp_path_factory):
    """The demo week (8 tenants, 2026-11-21 .. 2026-11-27), built once for the session. Read it
    in place; copy it (shutil.copytree) before serving it or writing to it."""
    path = str(tmp_path_factory.mktemp("week"))
    tenantscope("demo", "--no-serve", "--data", path, "--tenants", "8", "--days", "7",
                "--peak-requests-per-day", "2000", "--end-date", "2026-11-27")
    return path


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    """`tenantscope serve` on free 127.0.0.1 ports over a lake and WAL in `root`."""

    def __init__(self, root, config=None, flush_ms=300, extra=(), data=None, auth=None, token=None, scheme="http", ca=None):
        """`auth`: a principals file (else `--no-auth`); `token`: what `sql()` sends; `scheme`
        "https" with `ca` (a CA file) when `extra` turns TLS on."""
        import time
        import urllib.request
        self.root = root
        self.data = data or os.path.join(root, "lake")
        self.wal = os.path.join(root, "wal")
        self.ports = {k: free_port() for k in ("http", "grpc", "otlp_http", "pg")}
        args = [BIN, "serve", "--data", self.data, "--wal-dir", self.wal,
                "--http-addr", f"127.0.0.1:{self.ports['http']}",
                "--otlp-grpc-addr", f"127.0.0.1:{self.ports['grpc']}",
                "--otlp-http-addr", f"127.0.0.1:{self.ports['otlp_http']}",
                "--pg-addr", f"127.0.0.1:{self.ports['pg']}",
                "--flush-interval-ms", str(flush_ms), *extra]
        args += ["--auth", auth] if auth else ["--no-auth"]
        self.token, self.scheme, self.ca = token, scheme, ca
        if config is not None:
            path = os.path.join(root, "tenantscope.yaml")
            with open(path, "w") as f:
                f.write(config)
            args += ["--config", path]
        self.log = open(os.path.join(root, "server.log"), "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log,
                                     env={**os.environ, "TENANTSCOPE_LOG": "info"})
        deadline = time.time() + 60
        while True:
            assert self.proc.poll() is None, f"tenantscope serve exited: {self.logs()}"
            try:
                urllib.request.urlopen(f"{self.http}/readyz", timeout=1, context=self.ssl_context()).read()
                break
            except OSError:
                assert time.time() < deadline, f"tenantscope serve did not get ready: {self.logs()}"
                time.sleep(0.1)
        # The PostgreSQL wire and the OTLP receivers start beside the HTTP API: wait for them too.
        import socket
        for name in ("pg", "grpc", "otlp_http"):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", self.ports[name]), timeout=1).close()
                    break
                except OSError:
                    assert time.time() < deadline, f"{name} port did not open: {self.logs()}"
                    time.sleep(0.05)

    @property
    def http(self):
        host = "localhost" if self.scheme == "https" else "127.0.0.1"
        return f"{self.scheme}://{host}:{self.ports['http']}"

    def ssl_context(self):
        if self.scheme != "https":
            return None
        import ssl
        return ssl.create_default_context(cafile=self.ca)

    @property
    def otlp_http(self):
        return f"http://127.0.0.1:{self.ports['otlp_http']}"

    @property
    def grpc(self):
        return f"127.0.0.1:{self.ports['grpc']}"

    def logs(self):
        self.log.flush()
        with open(os.path.join(self.root, "server.log"), "rb") as f:
            return f.read().decode(errors="replace")[-4000:]

    def sql(self, query):
        import urllib.request
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(f"{self.http}/v1/sql", data=json.dumps({"sql": query}).encode(), headers=headers)
        body = json.loads(urllib.request.urlopen(req, timeout=30, context=self.ssl_context()).read(), parse_float=Decimal)
        return body["rows"]

    def wait_for(self, query, expected, timeout=20):
        """Polls `query` until it returns `expected` (telemetry shows up after a flush)."""
        import time
        deadline = time.time() + timeout
        while True:
            got = self.sql(query)
            if got == expected or time.time() > deadline:
                return got
            time.sleep(0.2)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()


@pytest.fixture
def server_factory(tmp_path):
    started = []

    def start(**kwargs):
        s = Server(str(tmp_path), **kwargs)
        started.append(s)
        return s

    yield start
    for s in started:
        if s.proc.poll() is None:
            s.stop()
