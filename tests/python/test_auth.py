"""Access control (issue 8) with real clients: principals and roles on every listener, tenant
isolation over HTTP and the PostgreSQL wire (psycopg), ingest tokens bound to a tenant (the
OpenTelemetry SDK exporters), the audit log, and TLS with psql, curl and the OTel SDK, with the
certificate replaced while a client is connected."""

import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import grpc
import psycopg
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conftest import Server, sql_json

TOKENS = {"root": "root-token", "fin": "fin-token", "ops": "ops-token", "reader": "reader-token",
          "other": "other-token", "collector": "collector-token", "importer": "importer-token"}
FINANCE = {"billing", "plans", "invoices", "imports", "cost_allocation", "tenant_costs", "tenant_revenue",
           "tenant_margin", "top_tenants_by_cost", "tenant_cost_growth", "top_resources_by_cost",
           "negative_margin_tenants", "cost_anomalies", "unit_cost_anomalies", "tenant_resources"}


def sha(token):
    return hashlib.sha256(token.encode()).hexdigest()


def principals_file(path, tenant, other):
    roles = {"root": ("admin", None), "fin": ("finance", None), "ops": ("ops", None), "reader": ("tenant", tenant),
             "other": ("tenant", other), "collector": ("ingest", tenant), "importer": ("ingest", None)}
    lines = ["principals:"]
    for name, (role, t) in roles.items():
        lines.append(f"  - name: {name}\n    role: {role}\n    token_sha256: {sha(TOKENS[name])}")
        if t:
            lines.append(f"    tenant: {t}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def http_sql(server, token, query):
    """(status, body) of POST /v1/sql."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(f"{server.http}/v1/sql", data=json.dumps({"sql": query}).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60, context=server.ssl_context()) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def pg_connect(server, user, **kw):
    return psycopg.connect(host="127.0.0.1", port=server.ports["pg"], user=user, password=TOKENS.get(user, "x"),
                           dbname="tenantscope", connect_timeout=10, autocommit=True, **kw)


def pg_sql(conn, query):
    """(ok, rows or error text) over the PostgreSQL wire."""
    try:
        with conn.cursor() as cur:
            cur.execute(query)
            return True, cur.fetchall() if cur.description else []
    except psycopg.Error as e:
        return False, str(e)


@pytest.fixture(scope="module")
def secured(demo_lake, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("auth"))
    data = os.path.join(root, "lake")
    shutil.copytree(demo_lake, data)
    tenants = [r["tenant_id"] for r in sql_json(data, "SELECT tenant_id FROM tenants ORDER BY 1")]
    tenant, other = tenants[0], tenants[1]
    auth = principals_file(os.path.join(root, "auth.yaml"), tenant, other)
    server = Server(root, data=data, auth=auth, token=TOKENS["root"])
    relations = [r[0] for r in server.sql("SELECT table_name FROM information_schema.tables "
                                          "WHERE table_schema = 'public' ORDER BY 1")]
    yield server, tenant, other, relations
    server.stop()


def tenant_relations(server, relations):
    cols = server.sql("SELECT table_name FROM information_schema.columns WHERE table_schema = 'public' "
                      "AND column_name = 'tenant_id'")
    return sorted({r[0] for r in cols} & set(relations))


def test_every_role_sees_what_it_may_over_http_and_the_pg_wire(secured):
    server, tenant, _, relations = secured
    assert {"spans", "billing", "tenant_margin", "cost_allocation", "audit_log", "ingest_stats"} <= set(relations)
    with_tenant = tenant_relations(server, relations)
    conns = {name: pg_connect(server, name) for name in ("fin", "ops", "reader")}
    try:
        for rel in relations:
            for name in ("root", "fin", "ops", "reader"):
                # count(*): the PostgreSQL wire cannot send map columns (alerts.labels) yet.
                status, body = http_sql(server, TOKENS[name], f"SELECT count(*) FROM {rel}")
                ok_pg, pg_rows = (True, None) if name == "root" else pg_sql(conns[name], f"SELECT count(*) FROM {rel}")
                visible = {
                    "root": True,
                    "fin": rel != "audit_log",
                    "ops": rel != "audit_log" and rel not in FINANCE,
                    "reader": rel in with_tenant and rel != "audit_log",
                }[name]
                assert (status == 200) == visible, (name, rel, status, body)
                assert ok_pg == visible, (name, rel, pg_rows)
                if not visible:
                    assert "not found" in body["error"], body
            if rel in with_tenant and rel != "audit_log":
                # A tenant reader gets its own rows and no other tenant's, on both protocols.
                q = f"SELECT DISTINCT tenant_id FROM {rel}"
                status, body = http_sql(server, TOKENS["reader"], q)
                assert status == 200 and {r[0] for r in body["rows"]} <= {tenant}, (rel, body)
                ok, rows = pg_sql(conns["reader"], q)
                assert ok and {r[0] for r in rows} <= {tenant}, (rel, rows)
        # ... and its rows are all of its rows: the same as the admin's for that tenant.
        for rel in ("spans", "usage", "billing", "cost_allocation", "tenant_margin"):
            want = server.sql(f"SELECT count(*) FROM {rel} WHERE tenant_id = '{tenant}'")[0][0]
            assert want > 0, rel
            assert http_sql(server, TOKENS["reader"], f"SELECT count(*) FROM {rel}")[1]["rows"][0][0] == want, rel
            assert pg_sql(conns["reader"], f"SELECT count(*) FROM {rel}")[1][0][0] == want, rel
            # Grouped by tenant (the first phase by small ids, `FewGroupsExec`): one group, its own.
            grouped = f"SELECT tenant_id, count(*) FROM {rel} GROUP BY 1"
            assert http_sql(server, TOKENS["reader"], grouped)[1]["rows"] == [[tenant, want]], rel
            assert [list(r) for r in pg_sql(conns["reader"], grouped)[1]] == [[tenant, want]], rel
    finally:
        for c in conns.values():
            c.close()


TRICKS = [
    "SELECT s.tenant_id, t.tenant_id FROM spans s JOIN tenants t ON true",
    "SELECT tenant_id FROM tenants WHERE tenant_id NOT IN (SELECT tenant_id FROM spans WHERE tenant_id IS NOT NULL) OR true",
    "WITH everything AS (SELECT tenant_id FROM usage) SELECT tenant_id FROM everything",
    "SELECT tenant_id FROM spans UNION ALL SELECT tenant_id FROM logs UNION ALL SELECT tenant_id FROM billing",
    "SELECT tenant_id FROM spans WHERE tenant_id <> '{tenant}' OR tenant_id IS NULL OR 1 = 1",
    "SELECT tenant_id FROM (SELECT * FROM cost_allocation) x",
    "SELECT tenant_id FROM tenant_margin",
    "SELECT tenant_id FROM top_tenants_by_cost",
]

REFUSED = [
    "SELECT * FROM audit_log",
    "SELECT * FROM ingest_stats",
    "SELECT * FROM tenantscope.public.audit_log",
    "SELECT * FROM '{lake}/spans'",
    "SELECT * FROM read_parquet('{lake}/spans')",
    "CREATE EXTERNAL TABLE leak STORED AS PARQUET LOCATION '{lake}/spans'",
    "CREATE VIEW leak AS SELECT * FROM spans",
    "SET datafusion.execution.target_partitions = 1",
    "DROP TABLE spans",
    "COPY (SELECT 1) TO '/tmp/tenantscope-leak.csv'",
]


def test_a_curious_tenant_reader_gets_no_foreign_row_and_is_recorded(secured):
    server, tenant, _, _ = secured
    lake = server.data
    conn = pg_connect(server, "reader")
    try:
        for trick in TRICKS:
            q = trick.format(tenant=tenant)
            status, body = http_sql(server, TOKENS["reader"], q)
            assert status == 200, (q, body)
            ids = {v for row in body["rows"] for v in row}
            assert ids and ids <= {tenant}, (q, ids)
            ok, rows = pg_sql(conn, q)
            assert ok, (q, rows)
            assert {v for row in rows for v in row} <= {tenant}, (q, rows)
        # What the catalog tells: only what the reader can read.
        status, body = http_sql(server, TOKENS["reader"], "SELECT table_name FROM information_schema.tables")
        names = {r[0] for r in body["rows"]}
        assert "spans" in names and "audit_log" not in names and "ingest_stats" not in names
        ok, rows = pg_sql(conn, "SELECT relname FROM pg_catalog.pg_class")
        assert ok and "spans" in {r[0] for r in rows} and "audit_log" not in {r[0] for r in rows}
        for refused in REFUSED:
            q = refused.format(lake=lake)
            status, body = http_sql(server, TOKENS["reader"], q)
            assert status in (400, 403), (q, status, body)
            ok, err = pg_sql(conn, q)
            assert not ok, (q, err)
        assert not os.path.exists("/tmp/tenantscope-leak.csv")
        # The session's settings are unchanged for everyone.
        ok, rows = pg_sql(conn, "SELECT 1")
        assert ok
    finally:
        conn.close()
    # Ops cannot read money unless the principals file says so.
    status, body = http_sql(server, TOKENS["ops"], "SELECT * FROM billing b JOIN spans s ON b.tenant_id = s.tenant_id")
    assert status == 400 and "billing" in body["error"]

    def audited():
        rows = server.sql("SELECT actor, statement, outcome, tables, target FROM audit_log WHERE actor = 'reader'")
        return rows
    deadline = time.time() + 15
    while True:
        rows = audited()
        statements = {(r[1], r[4]) for r in rows}
        want = {(t.format(tenant=tenant), via) for t in TRICKS for via in ("http", "pg")}
        want |= {(t.format(lake=lake), "http") for t in REFUSED}
        if want <= statements or time.time() > deadline:
            break
        time.sleep(0.5)
    assert want <= statements, want - statements
    outcomes = {r[1]: r[2] for r in rows if r[4] == "http"}
    assert outcomes[REFUSED[5].format(lake=lake)] == "denied"
    assert outcomes[REFUSED[7]] == "denied"
    assert outcomes[REFUSED[0]] == "error"
    # Over the PostgreSQL wire too, a refusal (SQLSTATE 42501) is recorded as denied.
    pg_outcomes = {r[1]: r[2] for r in rows if r[4] == "pg"}
    assert pg_outcomes[REFUSED[7]] == "denied" and pg_outcomes[REFUSED[6]] == "denied", pg_outcomes
    tables = {r[1]: r[3] for r in rows if r[4] == "http"}
    assert tables[TRICKS[3]] == ["billing", "logs", "spans"]  # lists are JSON arrays


def test_a_logged_in_client_can_cancel_its_query(secured):
    """Logins get backend key data, so psycopg's cancel (a CancelRequest on a new connection)
    stops the running statement."""
    import threading
    server = secured[0]
    conn = pg_connect(server, "fin")
    try:
        # Uncancelled, this count takes minutes and returns a row: QueryCanceled says the
        # cancel stopped it (no timing bound needed).
        threading.Timer(1.0, conn.cancel).start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT count(*) FROM generate_series(1, 20000000000)").fetchall()
        assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        conn.close()


def span_batch(tenant):
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "auth-test", "tenant.id": tenant}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests")
    for i in range(3):
        with tracer.start_as_current_span(f"GET /auth/{i}"):
            pass
    provider.shutdown()
    return memory.get_finished_spans()


def count_service(server, service):
    return server.sql(f"SELECT tenant_id, count(*) FROM spans WHERE service_name = '{service}' GROUP BY 1 ORDER BY 1")


def test_wrong_tokens_are_refused_logged_and_write_nothing(secured):
    server, tenant, other, _ = secured
    spans = span_batch(other)
    # HTTP API: missing and wrong tokens: 401; an ingest token: 403.
    assert http_sql(server, None, "SELECT 1")[0] == 401
    assert http_sql(server, "nope", "SELECT 1")[0] == 401
    assert http_sql(server, TOKENS["collector"], "SELECT 1")[0] == 403
    req = urllib.request.Request(f"{server.http}/v1/sql", data=b'{"sql":"SELECT 1"}', headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.headers["WWW-Authenticate"].startswith("Bearer")
    # Billing import: a tenant reader may not; a wrong token may not.
    req = urllib.request.Request(f"{server.http}/v1/import/billing", data=b"x", headers={"Authorization": "Bearer reader-token"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 403
    # PostgreSQL wire: a wrong password is an authentication error.
    with pytest.raises(psycopg.OperationalError, match="authentication failed"):
        psycopg.connect(host="127.0.0.1", port=server.ports["pg"], user="reader", password="wrong", dbname="x", connect_timeout=10)
    with pytest.raises(psycopg.OperationalError, match="authentication failed"):
        psycopg.connect(host="127.0.0.1", port=server.ports["pg"], user="fin", password=TOKENS["reader"], dbname="x", connect_timeout=10)
    # OTLP with the SDK exporters: no token, a wrong token, a reader's token: refused, nothing written.
    grpc_bad = GrpcSpanExporter(endpoint=server.grpc, insecure=True, headers={"authorization": "Bearer nope"})
    assert grpc_bad.export(spans) == SpanExportResult.FAILURE
    grpc_none = GrpcSpanExporter(endpoint=server.grpc, insecure=True)
    assert grpc_none.export(spans) == SpanExportResult.FAILURE
    http_reader = HttpSpanExporter(endpoint=f"http://127.0.0.1:{server.ports['otlp_http']}/v1/traces",
                                   headers={"Authorization": f"Bearer {TOKENS['reader']}"})
    assert http_reader.export(spans) == SpanExportResult.FAILURE
    # The gRPC status itself: UNAUTHENTICATED.
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
    with grpc.insecure_channel(server.grpc) as ch:
        with pytest.raises(grpc.RpcError) as e:
            trace_service_pb2_grpc.TraceServiceStub(ch).Export(trace_service_pb2.ExportTraceServiceRequest(), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # A bound ingest token wins over the payload's tenant; an unbound one keeps it.
    grpc_ok = GrpcSpanExporter(endpoint=server.grpc, insecure=True, headers={"authorization": f"Bearer {TOKENS['collector']}"})
    assert grpc_ok.export(spans) == SpanExportResult.SUCCESS
    http_ok = HttpSpanExporter(endpoint=f"http://127.0.0.1:{server.ports['otlp_http']}/v1/traces",
                               headers={"Authorization": f"Bearer {TOKENS['importer']}"})
    assert http_ok.export(spans) == SpanExportResult.SUCCESS
    got = server.wait_for("SELECT tenant_id, count(*) FROM spans WHERE service_name = 'auth-test' GROUP BY 1 ORDER BY 1",
                          sorted([[tenant, 3], [other, 3]]))
    assert got == sorted([[tenant, 3], [other, 3]]), got
    # Every refusal is in the audit log, with where it came from.
    time.sleep(1.5)
    failures = server.sql("SELECT action, target, outcome, remote_addr FROM audit_log "
                          "WHERE action IN ('auth.failure', 'access.denied') ORDER BY time")
    targets = [r[1] for r in failures]
    assert any(t.startswith("HTTP API POST /v1/sql") for t in targets), targets
    assert any(t == "pg" for t in targets), targets
    assert targets.count("otlp-grpc") >= 3, targets
    assert any(t.startswith("OTLP/HTTP POST /v1/traces") for t in targets), targets
    assert all(r[2] == "denied" and r[3].startswith("127.0.0.1:") for r in failures), failures


def test_serve_refuses_to_start_without_an_auth_decision(tmp_path):
    from conftest import BIN
    proc = subprocess.run([BIN, "serve", "--data", str(tmp_path / "lake"), "--wal-dir", str(tmp_path / "wal")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "--auth FILE" in proc.stderr and "--no-auth" in proc.stderr
    bad = tmp_path / "auth.yaml"
    bad.write_text("principals:\n  - {name: a, role: tenant, token_sha256: " + sha("t") + "}\n")
    proc = subprocess.run([BIN, "serve", "--auth", str(bad), "--data", str(tmp_path / "lake"), "--wal-dir", str(tmp_path / "wal")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "principals[0] (a): role tenant needs" in proc.stderr, proc.stderr


# --- TLS -------------------------------------------------------------------------------------

def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=d)


def make_cert(d, ca, name, cn, server=True):
    """A certificate for `cn` (localhost and 127.0.0.1) signed by `ca`: name.pem, name.key."""
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={cn}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
    ext = os.path.join(d, f"{name}.ext")
    with open(ext, "w") as f:
        if server:
            f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        else:
            f.write("extendedKeyUsage=clientAuth\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-days", "2", "-extfile", ext, "-out", f"{name}.pem", cwd=d)


def served_fingerprint(port, ca):
    ctx = ssl.create_default_context(cafile=ca)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            return hashlib.sha256(t.getpeercert(binary_form=True)).hexdigest()


def pem_fingerprint(path):
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(open(path).read())).hexdigest()


def test_tls_on_every_listener_with_real_clients_and_rotation(demo_lake, tmp_path):
    d = str(tmp_path)
    make_ca(d, "ca")
    make_cert(d, "ca", "server", "localhost")
    make_cert(d, "ca", "client", "collector", server=False)
    cert, key, ca = (os.path.join(d, f) for f in ("tls.pem", "tls.key", "ca.pem"))
    shutil.copy(os.path.join(d, "server.pem"), cert)
    shutil.copy(os.path.join(d, "server.key"), key)
    data = os.path.join(d, "lake")
    shutil.copytree(demo_lake, data)
    tenants = [r["tenant_id"] for r in sql_json(data, "SELECT tenant_id FROM tenants ORDER BY 1")]
    auth = principals_file(os.path.join(d, "auth.yaml"), tenants[0], tenants[1])
    server = Server(d, data=data, auth=auth, token=TOKENS["root"], scheme="https", ca=ca,
                    extra=["--tls-cert", cert, "--tls-key", key, "--tls-client-ca", ca])
    try:
        # curl, verifying the certificate.
        out = subprocess.run(["curl", "-sS", "--fail", "--cacert", ca, "-H", f"Authorization: Bearer {TOKENS['fin']}",
                              "-H", "Content-Type: application/json", "-d", '{"sql": "SELECT count(*) AS n FROM tenants"}',
                              f"https://localhost:{server.ports['http']}/v1/sql"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["rows"] == [[len(tenants)]]
        # Plain HTTP on a TLS port gets nowhere.
        with pytest.raises(Exception):
            urllib.request.urlopen(f"http://127.0.0.1:{server.ports['http']}/healthz", timeout=5).read()
        # psql with sslmode=verify-full.
        env = {**os.environ, "PGPASSWORD": TOKENS["reader"], "PGSSLMODE": "verify-full", "PGSSLROOTCERT": ca}
        out = subprocess.run(["psql", "-h", "localhost", "-p", str(server.ports["pg"]), "-U", "reader", "-d", "tenantscope",
                              "-At", "-c", "SELECT DISTINCT tenant_id FROM spans"], capture_output=True, text=True, env=env, timeout=30)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == [tenants[0]]
        # Without TLS the PostgreSQL wire refuses the login.
        env_plain = {**os.environ, "PGPASSWORD": TOKENS["reader"], "PGSSLMODE": "disable"}
        out = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(server.ports["pg"]), "-U", "reader", "-d", "tenantscope",
                              "-c", "SELECT 1"], capture_output=True, text=True, env=env_plain, timeout=30)
        assert out.returncode != 0 and "requires TLS" in out.stderr, out.stderr
        # The OTel SDK exporter over TLS: the OTLP receivers want a client certificate.
        spans = span_batch("ignored")
        root = open(ca, "rb").read()
        creds = grpc.ssl_channel_credentials(root_certificates=root,
                                             private_key=open(os.path.join(d, "client.key"), "rb").read(),
                                             certificate_chain=open(os.path.join(d, "client.pem"), "rb").read())
        exporter = GrpcSpanExporter(endpoint=f"localhost:{server.ports['grpc']}", credentials=creds,
                                    headers={"authorization": f"Bearer {TOKENS['collector']}"})
        assert exporter.export(spans) == SpanExportResult.SUCCESS
        no_client_cert = GrpcSpanExporter(endpoint=f"localhost:{server.ports['grpc']}",
                                          credentials=grpc.ssl_channel_credentials(root_certificates=root),
                                          headers={"authorization": f"Bearer {TOKENS['collector']}"}, timeout=5)
        assert no_client_cert.export(spans) == SpanExportResult.FAILURE
        got = server.wait_for("SELECT tenant_id, count(*) FROM spans WHERE service_name = 'auth-test' GROUP BY 1",
                              [[tenants[0], 3]])
        assert got == [[tenants[0], 3]]

        # Rotation: a client connected before keeps working; new connections get the new certificate.
        old = pem_fingerprint(cert)
        assert served_fingerprint(server.ports["http"], ca) == old
        held = psycopg.connect(host="localhost", port=server.ports["pg"], user="fin", password=TOKENS["fin"],
                               dbname="tenantscope", sslmode="verify-full", sslrootcert=ca, autocommit=True)
        assert held.execute("SELECT count(*) FROM tenants").fetchone()[0] == len(tenants)
        make_cert(d, "ca", "server2", "localhost")
        os.replace(os.path.join(d, "server2.key"), key)
        os.replace(os.path.join(d, "server2.pem"), cert)
        new = pem_fingerprint(cert)
        assert new != old
        deadline = time.time() + 20
        while served_fingerprint(server.ports["http"], ca) != new:
            assert time.time() < deadline, "the new certificate was not served"
            time.sleep(0.3)
        assert held.execute("SELECT count(*) FROM tenants").fetchone()[0] == len(tenants)
        held.close()
        out = subprocess.run(["psql", "-h", "localhost", "-p", str(server.ports["pg"]), "-U", "reader", "-d", "tenantscope",
                              "-At", "-c", "SELECT 1"], capture_output=True, text=True, env=env, timeout=30)
        assert out.returncode == 0, out.stderr
        time.sleep(1.5)
        reloads = server.sql("SELECT outcome, detail FROM audit_log WHERE action = 'tls.reload'")
        assert any(r[0] == "ok" and new.upper()[:8] in r[1].replace(":", "") for r in reloads), reloads
    finally:
        server.stop()


def test_the_same_sql_text_from_two_tenants_answers_each_its_own(secured):
    """The HTTP API keeps optimized plans per SQL text *and role* (query/src/plans.rs): the same
    text asked again by another tenant, and by the admin, must not reuse a plan scoped to the
    first tenant's rows."""
    server, tenant, other, _ = secured
    query = "SELECT DISTINCT tenant_id FROM spans ORDER BY 1"
    seen = {}
    for token in ("reader", "other", "reader", "other", "root"):
        status, body = http_sql(server, TOKENS[token], query)
        assert status == 200, body
        seen.setdefault(token, []).append([r[0] for r in body["rows"]])
    assert seen["reader"] == [[tenant], [tenant]]
    assert seen["other"] == [[other], [other]]
    assert {tenant, other} <= set(seen["root"][0])


def test_the_principals_file_is_read_again_on_sighup(demo_lake, tmp_path_factory):
    """`kill -HUP` makes the server read its principals file again: a new token works and a
    removed one stops working, over HTTP and the PG wire, without a restart; a tenant reader
    bound to another tenant sees that tenant's rows only, even on a connection opened before;
    a broken file leaves the principals as they were and says why in the log."""
    import signal
    import time
    root = str(tmp_path_factory.mktemp("reload"))
    data = os.path.join(root, "lake")
    shutil.copytree(demo_lake, data)
    auth = os.path.join(root, "auth.yaml")

    def write(names):
        with open(auth, "w") as f:
            f.write("principals:\n" + "".join(
                f"  - name: {n}\n    role: {role}\n    token_sha256: {sha(token)}\n"
                + (f"    tenant: {tenant}\n" if tenant else "") for n, role, token, tenant in names))

    seen = "SELECT DISTINCT tenant_id FROM billing WHERE tenant_id IS NOT NULL ORDER BY 1"
    first, second = [r["tenant_id"] for r in sql_json(data, seen)][:2]
    root_p = ("root", "admin", TOKENS["root"], None)
    write([root_p, ("fin", "finance", TOKENS["fin"], None), ("reader", "tenant", TOKENS["reader"], first)])
    server = Server(root, data=data, auth=auth, token=TOKENS["root"])
    try:
        reader = pg_connect(server, "reader")
        assert reader.execute(seen).fetchall() == [(first,)]
        assert http_sql(server, TOKENS["fin"], "SELECT 1")[0] == 200
        assert http_sql(server, "new-token", "SELECT 1")[0] == 401
        logged_in = pg_connect(server, "fin")
        assert logged_in.execute("SELECT 1").fetchone() == (1,)
        write([root_p, ("newcomer", "finance", "new-token", None), ("reader", "tenant", TOKENS["reader"], second)])
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 60
        while http_sql(server, "new-token", "SELECT 1")[0] != 200:
            assert time.time() < deadline, server.logs()
            time.sleep(0.2)
        assert http_sql(server, TOKENS["fin"], "SELECT 1")[0] == 401
        # Rebound to another tenant: that tenant's rows only, over HTTP and on the connection
        # opened before the reload.
        assert reader.execute(seen).fetchall() == [(second,)]
        assert http_sql(server, TOKENS["reader"], seen)[1]["rows"] == [[second]]
        reader.close()
        conn = psycopg.connect(host="127.0.0.1", port=server.ports["pg"], user="newcomer", password="new-token",
                               dbname="tenantscope", connect_timeout=10, autocommit=True)
        assert conn.execute("SELECT 1").fetchone() == (1,)
        conn.close()
        with pytest.raises(psycopg.OperationalError):
            pg_connect(server, "fin")
        # A connection that logged in before is refused at its next statement: its principal
        # is looked up by name for every statement, and the name is gone.
        with pytest.raises(psycopg.Error, match="not logged in"):
            logged_in.execute("SELECT 1")
        logged_in.close()
        # A file with a mistake: nothing changes, and the log says why.
        with open(auth, "w") as f:
            f.write("principals:\n  - name: broken\n    role: tenant\n    token_sha256: " + sha("x") + "\n")
        server.proc.send_signal(signal.SIGHUP)
        while "not reloaded" not in server.logs():
            assert time.time() < deadline + 60, server.logs()
            time.sleep(0.2)
        assert "role tenant needs" in server.logs()
        assert http_sql(server, "new-token", "SELECT 1")[0] == 200
    finally:
        server.stop()
