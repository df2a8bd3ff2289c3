"""OTLP ingest with real OpenTelemetry SDK exporters (gRPC and HTTP), the official OTLP/JSON
examples, bad input, backpressure, and a kill -9 crash test."""

import gzip
import json
import os
import time
import urllib.error
import urllib.request

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from google.rpc import status_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "testdata", "otlp")

# Spans per tenant (None: no tenant.id, unattributed), per transport.
SPANS = {"acme": 7, "globex": 3, None: 2}


def resource(tenant, service="checkout"):
    attrs = {"service.name": service}
    if tenant is not None:
        attrs["tenant.id"] = tenant
    return Resource.create(attrs)


def send_spans(exporter, tenant, n):
    provider = TracerProvider(resource=resource(tenant))
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=512))
    tracer = provider.get_tracer("tests")
    for i in range(n):
        with tracer.start_as_current_span(f"GET /item/{i % 3}", attributes={"http.route": "/item/{id}", "i": i, "ok": True}) as span:
            span.add_event("cache miss", {"key": f"k{i}"})
    assert provider.force_flush(10_000)
    provider.shutdown()


def send_metrics(exporter, tenant):
    """One export: a counter with two attribute sets, a histogram and an up-down counter: 4 points.
    The histogram's measurement is taken in a sampled span, so the SDK gives its point an
    exemplar with that span's ids, and its `user` attribute (left out of the point by a view)
    as the exemplar's filtered attribute. Returns the span's trace and span id in hex."""
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(resource=resource(tenant), metric_readers=[reader],
                             views=[View(instrument_name="app.latency", attribute_keys={"route"})])
    meter = provider.get_meter("tests")
    requests = meter.create_counter("app.requests", unit="1")
    requests.add(3, {"route": "/a"})
    requests.add(4, {"route": "/b"})
    latency = meter.create_histogram("app.latency", unit="s")
    with TracerProvider().get_tracer("tests").start_as_current_span("measure") as span:
        latency.record(0.25, {"route": "/a", "user": "u1"})
        ids = span.get_span_context()
    meter.create_up_down_counter("app.inflight").add(-2)
    provider.shutdown()  # collects and exports once
    return f"{ids.trace_id:032x}", f"{ids.span_id:016x}"


def send_logs(exporter, tenant, n):
    provider = LoggerProvider(resource=resource(tenant))
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    logger = provider.get_logger("tests")
    for i in range(n):
        logger.emit(LogRecord(body=f"order {i} failed", severity_text="WARN", severity_number=SeverityNumber.WARN,
                              attributes={"order.id": i, "tags": ["a", "b"]}))
    provider.shutdown()


def by_tenant(server, query):
    return {row[0]: row[1] for row in server.sql(query)}


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_sdk_exporters_every_signal_counts_and_tenants_exact(server_factory, transport):
    s = server_factory()
    if transport == "grpc":
        # Spans gzip'd, the rest plain.
        span_exp = lambda: GrpcSpanExporter(endpoint=s.grpc, insecure=True, compression=grpc.Compression.Gzip)
        metric_exp = lambda: GrpcMetricExporter(endpoint=s.grpc, insecure=True)
        log_exp = lambda: GrpcLogExporter(endpoint=s.grpc, insecure=True)
    else:
        span_exp = lambda: HttpSpanExporter(endpoint=f"{s.otlp_http}/v1/traces", compression=HttpCompression.Gzip)
        metric_exp = lambda: HttpMetricExporter(endpoint=f"{s.otlp_http}/v1/metrics")
        log_exp = lambda: HttpLogExporter(endpoint=f"{s.otlp_http}/v1/logs")
    exemplar_ids = {}
    for tenant, n in SPANS.items():
        send_spans(span_exp(), tenant, n)
        exemplar_ids[tenant] = send_metrics(metric_exp(), tenant)
        send_logs(log_exp(), tenant, n * 2)

    expected = sorted([[t, n] for t, n in SPANS.items()], key=lambda r: (r[0] is not None, r[0] or ""))
    q = "SELECT tenant_id, count(*) FROM spans GROUP BY 1 ORDER BY 1 NULLS FIRST"
    assert s.wait_for(q, expected) == expected, s.logs()
    q = "SELECT tenant_id, count(*) FROM logs GROUP BY 1 ORDER BY 1 NULLS FIRST"
    assert s.wait_for(q, [[t, n * 2] for t, n in expected]) == [[t, n * 2] for t, n in expected]
    q = "SELECT tenant_id, count(*) FROM metrics GROUP BY 1 ORDER BY 1 NULLS FIRST"
    assert s.wait_for(q, [[t, 4] for t, _ in expected]) == [[t, 4] for t, _ in expected]

    # What a span, a data point and a log record became.
    row = s.sql("SELECT name, service_name, kind, status_code, length(trace_id), length(span_id), "
                "attributes['http.route'], attributes['ok'], "
                "cardinality(events), events[1]['name'], scope_name, duration_ns >= 0 "
                "FROM spans WHERE tenant_id = 'acme' AND attributes['i'] = '4'")
    assert row == [["GET /item/1", "checkout", "internal", "unset", 32, 16, "/item/{id}", "true", 1, "cache miss", "tests", True]]
    rows = s.sql("SELECT metric_name, metric_type, temporality, is_monotonic, value, count, sum, "
                 "cardinality(bucket_counts) = cardinality(explicit_bounds) + 1 "
                 "FROM metrics WHERE tenant_id = 'globex' ORDER BY metric_name, value")
    assert [r[:4] for r in rows] == [
        ["app.inflight", "sum", "cumulative", False],
        ["app.latency", "histogram", "cumulative", None],
        ["app.requests", "sum", "cumulative", True],
        ["app.requests", "sum", "cumulative", True],
    ]
    assert [float(r[4]) for r in rows if r[0] == "app.requests"] == [3.0, 4.0]
    assert float(rows[0][4]) == -2.0
    assert rows[1][5] == 1 and float(rows[1][6]) == 0.25 and rows[1][7] is True
    # The histogram point's exemplar: the span it was measured in, and the attribute the view left out.
    row = s.sql("SELECT cardinality(exemplars), exemplars[1]['trace_id'], exemplars[1]['span_id'], "
                "exemplars[1]['value'], exemplars[1]['filtered_attributes']['user'], attributes['user'] "
                "FROM metrics WHERE tenant_id = 'globex' AND metric_name = 'app.latency'")
    assert len(row) == 1 and row[0][:3] == [1, *exemplar_ids["globex"]], (row, exemplar_ids)
    assert float(row[0][3]) == 0.25 and row[0][4:] == ["u1", None], row
    # From the metric to the traces behind it, as the README shows.
    q = ("SELECT e['trace_id'] FROM (SELECT unnest(exemplars) AS e FROM metrics "
         "WHERE metric_name = 'app.latency' AND tenant_id = 'globex')")
    assert s.sql(q) == [[exemplar_ids["globex"][0]]]
    assert s.sql("SELECT count(*) FROM metrics WHERE metric_name = 'app.requests' AND cardinality(exemplars) = 0") \
        == [[6]]
    row = s.sql("SELECT severity_text, severity_number, body, attributes['order.id'], attributes['tags'] FROM logs "
                "WHERE tenant_id = 'acme' AND body = 'order 3 failed'")
    assert row == [["WARN", 13, "order 3 failed", "3", '["a","b"]']]

    metrics = urllib.request.urlopen(f"{s.http}/metrics").read().decode()
    assert 'tenantscope_otlp_accepted_items_total{signal="traces"} 12' in metrics, metrics
    assert 'tenantscope_otlp_lake_commits_total{table="spans"}' in metrics


def post(url, body, content_type="application/json", headers=None):
    req = urllib.request.Request(url, data=body, headers={"Content-Type": content_type, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_official_otlp_json_examples_are_accepted(server_factory):
    s = server_factory()
    for name, path in [("trace", "traces"), ("metrics", "metrics"), ("logs", "logs"), ("events", "logs")]:
        with open(os.path.join(EXAMPLES, f"{name}.json"), "rb") as f:
            status, headers, body = post(f"{s.otlp_http}/v1/{path}", f.read())
        assert status == 200, (name, body)
        assert headers["Content-Type"] == "application/json"
        assert "partialSuccess" not in json.loads(body), (name, body)
    # trace.json: one server span with upper-case hex ids.
    q = "SELECT trace_id, span_id, parent_span_id, kind, service_name, attributes['my.span.attr'] FROM spans"
    assert s.wait_for(q, [["5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "eee19b7ec3c1b173",
                           "server", "my.service", "some value"]]) == \
        [["5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "eee19b7ec3c1b173",
          "server", "my.service", "some value"]]
    # metrics.json: a sum, a gauge, a histogram and an exponential histogram, one point each.
    q = "SELECT metric_type, count(*) FROM metrics GROUP BY 1 ORDER BY 1"
    expected = [["exponential_histogram", 1], ["gauge", 1], ["histogram", 1], ["sum", 1]]
    assert s.wait_for(q, expected) == expected
    row = s.sql("SELECT exp_scale, exp_zero_count, exp_positive_offset, exp_positive_bucket_counts, "
                "exp_negative_bucket_counts FROM metrics WHERE metric_type = 'exponential_histogram'")[0]
    assert row[0] is not None and row[3] is not None
    # logs.json: every AnyValue type, nested values kept as JSON; events.json: an event name.
    q = "SELECT count(*) FROM logs"
    assert s.wait_for(q, [[2]]) == [[2]]
    row = s.sql("SELECT body, attributes['string.attribute'], attributes['boolean.attribute'], "
                "attributes['int.attribute'], attributes['double.attribute'], attributes['array.attribute'], "
                "attributes['map.attribute'] FROM logs WHERE event_name IS NULL")[0]
    assert row[0] == "Example log record"
    assert row[1:5] == ["some string", "true", "10", "637.704"]
    assert json.loads(row[5]) == ["many", "values"]
    assert json.loads(row[6]) == {"some.map.key": "some value"}
    assert s.sql("SELECT event_name FROM logs WHERE event_name IS NOT NULL") != []


def span(trace_id, span_id, name="op"):
    return trace_pb2.Span(trace_id=trace_id, span_id=span_id, name=name,
                          start_time_unix_nano=1_764_000_000_000_000_000,
                          end_time_unix_nano=1_764_000_000_500_000_000, kind=2)


def trace_request(spans, tenant="acme"):
    rs = trace_pb2.ResourceSpans(
        resource={"attributes": [common_pb2.KeyValue(key="tenant.id", value=common_pb2.AnyValue(string_value=tenant))]},
        scope_spans=[trace_pb2.ScopeSpans(spans=spans)])
    return trace_service_pb2.ExportTraceServiceRequest(resource_spans=[rs])


def test_bad_input_clear_errors_and_partial_success(server_factory):
    s = server_factory(config="ingest:\n  max_request_bytes: 65536\n")
    url = f"{s.otlp_http}/v1/traces"
    good = trace_request([span(b"\x01" * 16, b"\x02" * 8)]).SerializeToString()

    status, _, body = post(url, good[:-7], "application/x-protobuf")
    assert status == 400
    assert "invalid OTLP protobuf traces request" in str(body)

    status, headers, body = post(url, b'{"resourceSpans": [', "application/json")
    assert status == 400 and headers["Content-Type"] == "application/json"
    assert "invalid OTLP/JSON traces request at line 1" in json.loads(body)["message"]

    status, _, body = post(url, good, "text/plain")
    assert status == 415 and "unsupported content type" in json.loads(body)["message"]

    status, headers, body = post(url, b"x" * 70_000, "application/x-protobuf")
    assert status == 413 and headers["Content-Type"] == "application/x-protobuf"
    assert "larger than the limit of 65536 bytes" in status_pb2.Status.FromString(body).message

    # A zip bomb is stopped at the limit too.
    status, _, body = post(url, gzip.compress(b"\0" * 1_000_000), "application/x-protobuf", {"Content-Encoding": "gzip"})
    assert status == 413

    # Partial success: the span with a 5-byte trace id is rejected, named; its neighbours are kept.
    request = trace_request([span(b"\x01" * 16, b"\x02" * 8, "kept-1"), span(b"\x01" * 5, b"\x03" * 8, "bad"),
                             span(b"\x01" * 16, b"\x04" * 8, "kept-2")])
    status, _, body = post(url, gzip.compress(request.SerializeToString()), "application/x-protobuf",
                           {"Content-Encoding": "gzip"})
    assert status == 200
    response = trace_service_pb2.ExportTraceServiceResponse.FromString(body)
    assert response.partial_success.rejected_spans == 1
    assert "resource_spans[0].scope_spans[0].spans[1]: trace_id has 5 bytes, want 16" in response.partial_success.error_message

    # The same over gRPC.
    with grpc.insecure_channel(s.grpc) as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        response = stub.Export(trace_request([span(b"\x05" * 16, b"\x06" * 8, "kept-3"), span(b"\x05" * 16, b"", "bad")]))
        assert response.partial_success.rejected_spans == 1
        assert "span_id has 0 bytes, want 8" in response.partial_success.error_message

    # A string that is not UTF-8 rejects its span, named by position; the span beside it is kept
    # (partial success), over HTTP and over gRPC (raw bytes: the Python protobuf library will
    # not encode such a string).
    def bad_utf8(kept):
        request = trace_request([span(b"\x07" * 16, b"\x08" * 8, "fine"), span(b"\x07" * 16, b"\x09" * 8, kept)])
        return request.SerializeToString().replace(b"fine", b"f\xffne")
    status, _, body = post(url, bad_utf8("kept-4"), "application/x-protobuf")
    assert status == 200, body
    response = trace_service_pb2.ExportTraceServiceResponse.FromString(body)
    assert response.partial_success.rejected_spans == 1
    assert "resource_spans[0].scope_spans[0].spans[0]: name is not UTF-8" in response.partial_success.error_message
    with grpc.insecure_channel(s.grpc) as channel:
        export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                                     request_serializer=lambda b: b, response_deserializer=lambda b: b)
        response = trace_service_pb2.ExportTraceServiceResponse.FromString(export(bad_utf8("kept-5")))
        assert response.partial_success.rejected_spans == 1
        assert "spans[0]: name is not UTF-8" in response.partial_success.error_message
        # A truncated protobuf over gRPC: INVALID_ARGUMENT (the client's fault, not to retry).
        with pytest.raises(grpc.RpcError) as err:
            export(good[:-7])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "invalid OTLP protobuf traces request" in err.value.details()

    # The same for a metric data point: its neighbour is kept.
    def point(value):
        return metrics_pb2.NumberDataPoint(time_unix_nano=1_764_000_000_000_000_000, as_int=1, attributes=[
            common_pb2.KeyValue(key="route", value=common_pb2.AnyValue(string_value=value))])
    gauge = metrics_pb2.Metric(name="utf8.check", gauge=metrics_pb2.Gauge(data_points=[point("fine"), point("kept")]))
    metrics_request = metrics_service_pb2.ExportMetricsServiceRequest(resource_metrics=[metrics_pb2.ResourceMetrics(
        scope_metrics=[metrics_pb2.ScopeMetrics(metrics=[gauge])])])
    status, _, body = post(f"{s.otlp_http}/v1/metrics",
                           metrics_request.SerializeToString().replace(b"fine", b"f\xffne"), "application/x-protobuf")
    assert status == 200, body
    response = metrics_service_pb2.ExportMetricsServiceResponse.FromString(body)
    assert response.partial_success.rejected_data_points == 1
    assert ("resource_metrics[0].scope_metrics[0].metrics[0].data_points[0]: attributes is not UTF-8"
            in response.partial_success.error_message)
    q = "SELECT attributes['route'] FROM metrics WHERE metric_name = 'utf8.check'"
    assert s.wait_for(q, [["kept"]]) == [["kept"]]

    q = "SELECT name FROM spans ORDER BY name"
    kept = [["kept-1"], ["kept-2"], ["kept-3"], ["kept-4"], ["kept-5"]]
    assert s.wait_for(q, kept) == kept
    metrics = urllib.request.urlopen(f"{s.http}/metrics").read().decode()
    assert 'tenantscope_otlp_rejected_items_total{signal="traces",reason="invalid"} 4' in metrics, metrics
    # The truncated protobufs (HTTP and gRPC) and the broken JSON.
    assert 'tenantscope_otlp_refused_requests_total{signal="traces",reason="invalid"} 3' in metrics
    assert 'tenantscope_otlp_refused_requests_total{signal="traces",reason="unsupported"} 1' in metrics
    assert 'tenantscope_otlp_refused_requests_total{signal="traces",reason="too_large"} 2' in metrics
    # The same counts in SQL, where alert rules read them: every window covers this young process.
    stats = s.sql("SELECT lookback, accepted, rejected, rejected_ratio FROM ingest_stats "
                  "WHERE signal = 'traces' ORDER BY window_seconds NULLS LAST")
    assert [r[0] for r in stats] == ["1m", "5m", "15m", "1h", "total"]
    assert all(r[1:3] == [5, 4] for r in stats), stats
    assert abs(float(stats[-1][3]) - 4 / 9) < 1e-9, stats


def test_one_tenants_flood_is_throttled_while_others_get_through(server_factory):
    s = server_factory(config="""
ingest:
  rate_limits:
    tenants:
      flood: {items_per_second: 5, burst: 20}
""")
    url = f"{s.otlp_http}/v1/traces"
    codes = []
    for i in range(10):
        body = trace_request([span(bytes([i + 1]) * 16, bytes([j + 1]) * 8, "f") for j in range(5)], tenant="flood")
        status, headers, _ = post(url, body.SerializeToString(), "application/x-protobuf")
        codes.append(status)
        if status == 429:
            assert int(headers["Retry-After"]) >= 1
        # The calm tenant is never refused while the flood goes on.
        calm = trace_request([span(bytes([i + 1]) * 16, b"\x09" * 8, "c")], tenant="calm")
        assert post(url, calm.SerializeToString(), "application/x-protobuf")[0] == 200
    assert codes[:4] == [200] * 4 and 429 in codes

    with grpc.insecure_channel(s.grpc) as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.Export(trace_request([span(b"\x07" * 16, bytes([j + 1]) * 8) for j in range(30)], tenant="flood"))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "flood is over its rate limit" in err.value.details()
        # The RetryInfo detail is in the trailers (google.rpc.Status, binary).
        trailers = dict(err.value.trailing_metadata())
        assert "grpc-status-details-bin" in trailers
        stub.Export(trace_request([span(b"\x08" * 16, b"\x01" * 8)], tenant="calm"))


def test_a_tenant_holding_its_share_of_the_buffer_is_refused_and_others_are_not(server_factory):
    """The memory bound itself (not a rate limit): with flushes far apart, a flooding tenant fills
    its share of the ingest buffer and gets 429 with Retry-After (gRPC RESOURCE_EXHAUSTED),
    while another tenant's requests are still acknowledged; nothing acknowledged is lost."""
    s = server_factory(config="ingest:\n  max_buffer_bytes: 4000000\n  max_tenant_share: 0.5\n", flush_ms=3_600_000)
    url = f"{s.otlp_http}/v1/traces"
    accepted, refused = 0, None
    for i in range(200):
        body = trace_request([span(bytes([i % 250 + 1]) * 16, bytes([j + 1]) * 8, "f") for j in range(100)], tenant="flood")
        status, headers, resp = post(url, body.SerializeToString(), "application/x-protobuf")
        if status == 429:
            refused = (headers["Retry-After"], status_pb2.Status.FromString(resp).message)
            break
        assert status == 200
        accepted += 100
    assert refused is not None, "the flood was never refused"
    assert int(refused[0]) >= 1 and "tenant flood holds" in refused[1] and "its share is 2000000" in refused[1]
    calm = trace_request([span(b"\x09" * 16, b"\x09" * 8, "c")], tenant="calm")
    assert post(url, calm.SerializeToString(), "application/x-protobuf")[0] == 200
    # A refusal also asks for a flush (the buffer wants draining), so the flood's share may be
    # free again by the time it comes back: over gRPC it is accepted until it holds its share
    # once more, then refused with RESOURCE_EXHAUSTED.
    with grpc.insecure_channel(s.grpc) as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        code = None
        for i in range(200):
            try:
                stub.Export(trace_request([span(bytes([i % 250 + 1]) * 15 + b"\x07", bytes([j + 1]) * 8)
                                           for j in range(100)], tenant="flood"))
                accepted += 100
            except grpc.RpcError as e:
                code = e.code()
                break
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    s.stop()  # SIGTERM flushes what was acknowledged
    s2 = server_factory(flush_ms=200)
    q = "SELECT tenant_id, count(*) FROM spans GROUP BY 1 ORDER BY 1"
    assert s2.wait_for(q, [["calm", 1], ["flood", accepted]]) == [["calm", 1], ["flood", accepted]]


def test_a_large_request_converted_off_the_receiving_threads_keeps_its_partial_success(server_factory):
    """Requests over 256 KiB are converted on tokio's blocking pool, smaller ones where they were
    received: both answer the same, with every good span kept and the bad one named."""
    s = server_factory()
    url = f"{s.otlp_http}/v1/traces"
    def big(tenant, bad_at):
        spans = [span(bytes([i % 250 + 1]) * 16, (i + 1).to_bytes(8, "big"), f"op-{i % 7}") for i in range(3_000)]
        for sp in spans:
            sp.attributes.append(common_pb2.KeyValue(key="url.path", value=common_pb2.AnyValue(string_value="/x" * 40)))
        spans[bad_at].trace_id = b"\x01" * 3
        return trace_request(spans, tenant=tenant).SerializeToString()
    large, small = big("large", 1_234), trace_request([span(b"\x01" * 16, b"\x02" * 8), span(b"\x01" * 5, b"\x03" * 8)],
                                                      tenant="small").SerializeToString()
    assert len(large) > 256 * 1024 > len(small)
    for body, rejected_at in ((large, 1_234), (small, 1)):
        status, _, resp = post(url, body, "application/x-protobuf")
        assert status == 200
        response = trace_service_pb2.ExportTraceServiceResponse.FromString(resp)
        assert response.partial_success.rejected_spans == 1
        assert (f"resource_spans[0].scope_spans[0].spans[{rejected_at}]: trace_id has"
                in response.partial_success.error_message)
    with grpc.insecure_channel(s.grpc, options=[("grpc.max_send_message_length", 8 << 20)]) as channel:
        response = trace_service_pb2_grpc.TraceServiceStub(channel).Export(
            trace_service_pb2.ExportTraceServiceRequest.FromString(big("large-grpc", 0)))
    assert response.partial_success.rejected_spans == 1
    assert "resource_spans[0].scope_spans[0].spans[0]: trace_id has" in response.partial_success.error_message
    q = "SELECT tenant_id, count(*) FROM spans GROUP BY 1 ORDER BY 1"
    expected = [["large", 2_999], ["large-grpc", 2_999], ["small", 1]]
    assert s.wait_for(q, expected) == expected


def test_kill_9_loses_nothing_acknowledged_and_replays_once(server_factory, tmp_path):
    # A flush interval far beyond the test: everything acknowledged is only in the WAL.
    s = server_factory(flush_ms=3_600_000)
    url = f"{s.otlp_http}/v1/logs"
    sent = 0
    for i in range(25):
        records = [{"timeUnixNano": str(1_764_000_000_000_000_000 + i * 1000 + j), "body": {"stringValue": f"r{i}-{j}"}}
                   for j in range(4)]
        body = {"resourceLogs": [{"resource": {"attributes": [{"key": "tenant.id", "value": {"stringValue": f"t{i % 3}"}}]},
                                  "scopeLogs": [{"logRecords": records}]}]}
        status, _, resp = post(url, json.dumps(body).encode())
        assert status == 200, resp
        sent += 4
    # Records with no timestamps take the time they were received: logged with the request,
    # so a replay gives them that time, not the time of the replay.
    untimed = {"resourceLogs": [{"resource": {"attributes": [{"key": "tenant.id", "value": {"stringValue": "t0"}}]},
                                 "scopeLogs": [{"logRecords": [{"body": {"stringValue": f"untimed-{j}"}} for j in range(3)]}]}]}
    status, _, resp = post(url, json.dumps(untimed).encode())
    assert status == 200, resp
    sent += 3
    # Spans and metric points over gRPC, logged as their protobuf requests like the logs above
    # (the histogram's point with an exemplar).
    send_spans(GrpcSpanExporter(endpoint=s.grpc, insecure=True), "acme", 5)
    exemplar_trace, _ = send_metrics(GrpcMetricExporter(endpoint=s.grpc, insecure=True), "acme")
    assert s.sql("SELECT count(*) FROM logs") == [[0]]
    assert s.sql("SELECT count(*) FROM spans") == [[0]]
    s.kill9()
    killed_at = time.time()
    time.sleep(1.5)

    s2 = server_factory(flush_ms=200)
    q = "SELECT count(*), count(DISTINCT body) FROM logs"
    assert s2.wait_for(q, [[sent, sent]]) == [[sent, sent]], s2.logs()
    s2.stop()
    # Restarting again replays nothing twice.
    s3 = server_factory(flush_ms=200)
    time.sleep(1)
    assert s3.sql(q) == [[sent, sent]]
    assert s3.sql("SELECT tenant_id, count(*) FROM logs GROUP BY 1 ORDER BY 1") == [["t0", 39], ["t1", 32], ["t2", 32]]
    [[received]] = s3.sql("SELECT max(extract(epoch FROM time)) FROM logs WHERE body LIKE 'untimed-%'")
    assert killed_at - 60 < float(received) < killed_at, (received, killed_at)
    assert s3.sql("SELECT tenant_id, count(*), count(DISTINCT span_id), sum(cardinality(events)) FROM spans GROUP BY 1") \
        == [["acme", 5, 5, 5]]
    assert s3.sql("SELECT tenant_id, count(*) FROM metrics GROUP BY 1") == [["acme", 4]]
    assert s3.sql("SELECT exemplars[1]['trace_id'] FROM metrics WHERE metric_name = 'app.latency'") \
        == [[exemplar_trace]]
    s3.stop()
    wal = os.path.join(str(tmp_path), "wal")
    assert sum(os.path.getsize(os.path.join(wal, f)) for f in os.listdir(wal) if f.endswith(".log")) == 0


def test_a_replayed_request_keeps_the_tenant_of_its_ingest_token(server_factory, tmp_path):
    """The log keeps the caller's bound tenant with the request: a replay after kill -9 gives
    the rows that tenant, not the one the payload names (tenant isolation survives a crash)."""
    import hashlib
    auth = tmp_path / "auth.yaml"
    sha = lambda t: hashlib.sha256(t.encode()).hexdigest()
    auth.write_text("principals:\n"
                    f"  - name: root\n    role: admin\n    token_sha256: {sha('root-token')}\n"
                    f"  - name: collector\n    role: ingest\n    token_sha256: {sha('collector-token')}\n"
                    "    tenant: acme\n")
    s = server_factory(flush_ms=3_600_000, auth=str(auth), token="root-token")
    body = {"resourceLogs": [{"resource": {"attributes": [{"key": "tenant.id", "value": {"stringValue": "globex"}}]},
                              "scopeLogs": [{"logRecords": [{"body": {"stringValue": f"bound-{j}"}} for j in range(5)]}]}]}
    status, _, resp = post(f"{s.otlp_http}/v1/logs", json.dumps(body).encode(),
                           headers={"Authorization": "Bearer collector-token"})
    assert status == 200, resp
    assert s.sql("SELECT count(*) FROM logs") == [[0]]
    s.kill9()

    s2 = server_factory(flush_ms=200, auth=str(auth), token="root-token")
    q = "SELECT tenant_id, count(*) FROM logs GROUP BY 1"
    assert s2.wait_for(q, [["acme", 5]]) == [["acme", 5]], s2.logs()
    s2.stop()
