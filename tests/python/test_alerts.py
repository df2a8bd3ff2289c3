"""Alert rules end to end: a real Alertmanager gets a demo anomaly and its resolve, a webhook
receiver that fails and recovers still gets the version-4 payload, and a restart in the middle
of `for` fires on time, once."""

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from conftest import BIN, Server, free_port, tenantscope

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
with open(os.path.join(ROOT, "examples", "demo.yaml")) as f:
    DEMO_CONFIG = f.read()


def get_json(url):
    return json.loads(urllib.request.urlopen(url, timeout=10).read())


def wait_until(what, check, timeout=40, every=0.25):
    deadline = time.time() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


@pytest.fixture
def alertmanager(tmp_path):
    """A real Alertmanager (Debian prometheus-alertmanager) on a free 127.0.0.1 port."""
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    assert binary, "prometheus-alertmanager is not installed (scripts/test.sh installs it)"
    port = free_port()
    config = tmp_path / "am.yml"
    config.write_text('route:\n  receiver: "null"\nreceivers:\n  - name: "null"\n')
    log = open(tmp_path / "am.log", "wb")
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.path={tmp_path / 'am-data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                            stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"

    def ready():
        assert proc.poll() is None, (tmp_path / "am.log").read_text()
        try:
            return urllib.request.urlopen(f"{url}/-/ready", timeout=1).status == 200
        except OSError:
            return False

    wait_until("Alertmanager to be ready", ready, timeout=30)
    yield url
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


class Receiver:
    """A webhook receiver that answers 503 to its first `failures` requests, then 200."""

    def __init__(self, failures=0):
        self.failures = failures
        self.attempts = 0
        self.payloads = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.attempts += 1
                if receiver.attempts <= receiver.failures:
                    self.send_response(503)
                    self.end_headers()
                    self.wfile.write(b"not now")
                    return
                receiver.payloads.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


SPIKE_RULES = """groups:
  - name: demo
    interval: 1s
    rules:
      - alert: TenantUsageSpike
        sql: |
          SELECT tenant_id, meter, max(score) AS value FROM usage_anomalies
          WHERE is_anomaly AND meter = 'requests' AND score > THRESHOLD
            AND hour >= TIMESTAMP '2026-11-27T00:00:00Z'
          GROUP BY tenant_id, meter
        for: 2s
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.tenant_id }}: {{ $labels.meter }} spiked"
          description: "robust score {{ printf \\"%.1f\\" $value }}"
"""


def test_a_real_alertmanager_gets_a_demo_anomaly_then_its_resolve(tmp_path, alertmanager, demo_week):
    lake = str(tmp_path / "lake")
    shutil.copytree(demo_week, lake)
    rules = tmp_path / "rules.yaml"
    rules.write_text(SPIKE_RULES.replace("THRESHOLD", "3.5"))
    s = Server(str(tmp_path), data=lake, config=DEMO_CONFIG,
               extra=["--rules", str(rules), "--alertmanager-url", alertmanager])
    try:
        def stark_alerts():
            return [a for a in get_json(f"{alertmanager}/api/v2/alerts")
                    if a["labels"].get("alertname") == "TenantUsageSpike"]

        got = wait_until("Alertmanager to list the spike", stark_alerts)
        assert [a["labels"]["tenant_id"] for a in got] == ["stark"], got
        alert = got[0]
        assert alert["labels"] == {"alertname": "TenantUsageSpike", "tenant_id": "stark", "meter": "requests",
                                   "severity": "page"}
        assert alert["annotations"]["summary"] == "stark: requests spiked"
        assert alert["annotations"]["description"].startswith("robust score ")
        assert alert["status"]["state"] == "active"
        # generatorURL leads to the rule and its state.
        rule = get_json(alert["generatorURL"])["groups"][0]["rules"][0]
        assert rule["name"] == "TenantUsageSpike" and rule["health"] == "ok"
        assert [a["state"] for a in rule["alerts"]] == ["firing"]

        # The operator raises the threshold above the spike: the file is reloaded, the condition
        # clears, and the resolve reaches Alertmanager (which then no longer lists it active).
        rules.write_text(SPIKE_RULES.replace("THRESHOLD", "1000000"))
        wait_until("the resolve to reach Alertmanager", lambda: not stark_alerts())

        # The history reaches the lake with the next flush of the alert rows, which may come a
        # little after Alertmanager has the resolve.
        def history():
            return s.sql("SELECT event, state, receiver FROM alerts WHERE rule = 'TenantUsageSpike' "
                         "AND event IN ('transition', 'notification') ORDER BY time, event")
        wait_until("the resolve in the alerts table",
                   lambda: [r for r in history() if r[0] == "transition" and r[1] == "inactive"])
        history = history()
        transitions = [r[1] for r in history if r[0] == "transition"]
        assert transitions == ["pending", "firing", "inactive"], history
        sent = {(r[1], r[2]) for r in history if r[0] == "notification"}
        endpoint = f"{alertmanager}/api/v2/alerts"
        assert ("firing", endpoint) in sent and ("resolved", endpoint) in sent, history
        assert s.sql("SELECT count(*) FROM alerts WHERE event = 'reload'") == [[1]]
    finally:
        s.stop()


def send_spans(server, tenant, n):
    exporter = OTLPSpanExporter(endpoint=f"{server.otlp_http}/v1/traces")
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout", "tenant.id": tenant}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("tests")
    for i in range(n):
        with tracer.start_as_current_span(f"GET /item/{i}"):
            pass
    assert provider.force_flush(10_000)
    provider.shutdown()


BUSY_RULES = """groups:
  - name: traffic
    interval: 1s
    rules:
      - alert: TenantBusy
        sql: |
          SELECT tenant_id, count(*) AS value FROM spans
          WHERE time > now() - INTERVAL 'WINDOW seconds' AND tenant_id IS NOT NULL
          GROUP BY tenant_id HAVING count(*) >= 3
        for: FOR
        labels:
          severity: warning
        annotations:
          summary: "{{ $labels.tenant_id }} sent {{ $value }} spans"
"""


def webhook_config(url):
    return DEMO_CONFIG + f"""
alerts:
  webhooks:
    - name: oncall
      url: {url}
      timeout: 2s
"""


def test_a_webhook_that_fails_then_recovers_gets_the_version_4_payload(tmp_path):
    hook = Receiver(failures=2)
    rules = tmp_path / "rules.yaml"
    rules.write_text(BUSY_RULES.replace("WINDOW", "12").replace("FOR", "0s"))
    s = Server(str(tmp_path), config=webhook_config(hook.url), extra=["--rules", str(rules)])
    try:
        send_spans(s, "t-hook", 5)
        firing = wait_until("the firing message", lambda: [p for p in hook.payloads if p["status"] == "firing"])
        assert hook.attempts >= 3, "two refused attempts came first"
        p = firing[0]
        assert p["version"] == "4" and p["receiver"] == "oncall"
        assert p["groupLabels"] == {"alertname": "TenantBusy"}
        assert p["commonLabels"] == {"alertname": "TenantBusy", "severity": "warning", "tenant_id": "t-hook"}
        assert p["truncatedAlerts"] == 0 and p["externalURL"] == s.http
        a = p["alerts"][0]
        assert a["status"] == "firing" and a["endsAt"] == "0001-01-01T00:00:00Z"
        assert a["annotations"] == {"summary": "t-hook sent 5 spans"}
        assert len(a["fingerprint"]) == 16 and a["generatorURL"].startswith(f"{s.http}/v1/rules?group=traffic")
        # The spans age out of the 12-second window: resolved.
        resolved = wait_until("the resolved message", lambda: [p for p in hook.payloads if p["status"] == "resolved"])
        r = resolved[0]["alerts"][0]
        assert r["status"] == "resolved" and r["endsAt"] != "0001-01-01T00:00:00Z"
        assert r["fingerprint"] == a["fingerprint"]
        assert len([p for p in hook.payloads if p["status"] == "firing"]) == 1, "no duplicate"
        failed = s.wait_for("SELECT count(*) FROM alerts WHERE event = 'notification' AND receiver = 'oncall' "
                            "AND detail LIKE '%failed%'", [[2]])
        assert failed == [[2]], "each refused attempt is recorded"
    finally:
        s.stop()
        hook.close()


def test_a_restart_in_the_middle_of_for_fires_on_time_once(tmp_path):
    hook = Receiver()
    rules = tmp_path / "rules.yaml"
    rules.write_text(BUSY_RULES.replace("WINDOW", "120").replace("FOR", "12s"))
    config = webhook_config(hook.url)
    s = Server(str(tmp_path), config=config, extra=["--rules", str(rules)])
    rule_url = f"{s.http}/v1/rules?group=traffic&rule=TenantBusy"
    send_spans(s, "t-restart", 4)

    def pending():
        alerts = get_json(rule_url)["groups"][0]["rules"][0]["alerts"]
        return [a for a in alerts if a["state"] == "pending"]

    active_at = wait_until("the alert to be pending", pending)[0]["activeAt"]
    time.sleep(5)
    s.kill9()  # a crash, mid-`for`
    from datetime import datetime, timedelta, timezone
    restarted = datetime.now(timezone.utc)
    s = Server(str(tmp_path), config=config, extra=["--rules", str(rules)])
    rule_url = f"{s.http}/v1/rules?group=traffic&rule=TenantBusy"
    try:
        alerts = get_json(rule_url)["groups"][0]["rules"][0]["alerts"]
        assert [(a["state"], a["activeAt"]) for a in alerts] == [("pending", active_at)], "the pending alert came back"
        firing = wait_until("the firing message", lambda: [p for p in hook.payloads if p["status"] == "firing"])
        a = get_json(rule_url)["groups"][0]["rules"][0]["alerts"][0]
        assert a["activeAt"] == active_at
        fired = datetime.fromisoformat(a["firedAt"])
        # Not before `for` had passed since it became pending, and earlier than a `for` started
        # afresh at the restart could have fired (the restart came 5 s into the 12 s).
        assert fired >= datetime.fromisoformat(active_at) + timedelta(seconds=12), (a, active_at)
        assert fired < restarted + timedelta(seconds=12), (a, restarted)
        time.sleep(3)
        assert len([p for p in hook.payloads if p["status"] == "firing"]) == 1, "fired once"
        assert firing[0]["alerts"][0]["labels"]["tenant_id"] == "t-restart"
        got = s.sql("SELECT state FROM alerts WHERE rule = 'TenantBusy' AND event = 'transition' ORDER BY time")
        assert got == [["pending"], ["firing"]], got
    finally:
        s.stop()
        hook.close()


def test_rules_check_points_at_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        sql: |\n          SELECT tenant_id\n          FROM no_such_table\n        for: 5 minutes\n")
    proc = subprocess.run([BIN, "rules", "check", str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0
    assert f"{bad}:8: rule \"A\" in group \"g\": for: invalid duration" in proc.stderr, proc.stderr
    bad.write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        sql: |\n          SELECT tenant_id\n          FROM no_such_table\n")
    proc = subprocess.run([BIN, "rules", "check", str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0
    assert f"{bad}:5:" in proc.stderr and "no_such_table" in proc.stderr, proc.stderr
    shipped = subprocess.run([BIN, "rules", "check", os.path.join(ROOT, "examples", "rules")],
                             capture_output=True, text=True)
    assert shipped.returncode == 0, shipped.stderr
    assert shipped.stdout.startswith("SUCCESS: 8 rules in 4 groups"), shipped.stdout


def test_the_shipped_rules_find_the_demo_anomalies(demo_week):
    """The shipped rules over the demo week, evaluated the morning after its last day: the usage
    spike is a cost spike of that tenant, the margin eater a negative margin; nothing else."""
    out = tenantscope("rules", "eval", os.path.join(ROOT, "examples", "rules", "tenantscope.yaml"),
                      "--data", demo_week, "--config", os.path.join(ROOT, "examples", "demo.yaml"),
                      "--at", "2026-11-28T06:00:00Z")
    rows = [json.loads(line) for line in out.splitlines()]
    assert all(r["error"] is None for r in rows), rows
    got = sorted((r["rule"], r["labels"]["tenant_id"], r["state"]) for r in rows)
    assert got == [("NegativeMarginTenant", "globex", "pending"), ("TenantCostSpike", "stark", "pending")], rows
    spike = next(r for r in rows if r["rule"] == "TenantCostSpike")
    assert spike["labels"] == {"alertname": "TenantCostSpike", "tenant_id": "stark", "currency": "USD",
                               "severity": "warning", "team": "finance"}
    assert spike["annotations"]["summary"] == "stark: daily cost spike"
    margin = next(r for r in rows if r["rule"] == "NegativeMarginTenant")
    assert margin["value"] < 0
    assert margin["annotations"]["description"] == (
        f"globex's margin this month is {margin['value']:.2f} USD: it costs more than it pays.")


def test_a_resolve_that_could_not_be_delivered_is_delivered_after_a_restart(tmp_path):
    hook = Receiver()
    rules = tmp_path / "rules.yaml"
    rules.write_text(BUSY_RULES.replace("WINDOW", "6").replace("FOR", "0s"))
    config = webhook_config(hook.url)
    s = Server(str(tmp_path), config=config, extra=["--rules", str(rules)])
    try:
        send_spans(s, "t-resolve", 3)
        wait_until("the firing message", lambda: [p for p in hook.payloads if p["status"] == "firing"])
        # The receiver goes down; the spans age out and the resolve is refused.
        hook.failures = 10**9
        refused_before = hook.attempts
        wait_until("a refused resolve", lambda: hook.attempts > refused_before)
        s.kill9()
        hook.failures = 0
        s = Server(str(tmp_path), config=config, extra=["--rules", str(rules)])
        resolved = wait_until("the resolve after the restart",
                              lambda: [p for p in hook.payloads if p["status"] == "resolved"])
        assert resolved[0]["alerts"][0]["labels"]["tenant_id"] == "t-resolve"
        time.sleep(2)
        assert [p["status"] for p in hook.payloads] == ["firing", "resolved"], "each once"
    finally:
        s.stop()
        hook.close()


def test_sighup_reloads_the_rules(tmp_path):
    import signal
    rules = tmp_path / "rules.yaml"
    rules.write_text(BUSY_RULES.replace("WINDOW", "6").replace("FOR", "0s"))
    s = Server(str(tmp_path), extra=["--rules", str(rules)])
    try:
        reloads = "SELECT count(*) FROM alerts WHERE event = 'reload'"
        assert s.sql(reloads) == [[0]]
        s.proc.send_signal(signal.SIGHUP)
        assert s.wait_for(reloads, [[1]]) == [[1]], s.logs()
        # A broken file is refused (the rules in force stay) and the refusal is recorded.
        rules.write_text("groups:\n  - name: traffic\n    rules:\n      - alert: X\n        sql: SELEC 1\n")
        s.proc.send_signal(signal.SIGHUP)
        errors = "SELECT count(*) FROM alerts WHERE event = 'error' AND detail LIKE 'reload refused:%'"
        # (The file watch may see the change first: then the SIGHUP refuses it a second time.)
        wait_until("the refusal", lambda: s.sql(errors)[0][0] >= 1)
        rule = get_json(f"{s.http}/v1/rules")["groups"][0]["rules"][0]
        assert rule["name"] == "TenantBusy" and rule["health"] == "ok"
    finally:
        s.stop()
