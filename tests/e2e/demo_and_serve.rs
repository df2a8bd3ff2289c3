//! The demo builds a lake through the lake writer; `sql` and the HTTP API answer over it.

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use crate::support::{bin, free_port, run, small_demo, stderr, stdout};

#[test]
fn demo_then_sql() {
    let dir = tempfile::tempdir().unwrap();
    small_demo(dir.path());
    let data = dir.path().to_str().unwrap();
    let out = run(&[
        "sql",
        "--data",
        data,
        "--format",
        "csv",
        "SELECT tenant_id, count(*) AS spans FROM spans GROUP BY 1 ORDER BY 2 DESC",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "tenant_id,spans");
    assert_eq!(lines.len(), 6, "5 tenants: {text}");
    // Zipf-like: the first tenant (acme) is the busiest.
    assert!(lines[1].starts_with("acme,"), "{text}");

    // Every table holds what the demo says, and the billing lines add up to whole cents.
    let out = run(&[
        "sql",
        "--data",
        data,
        "--format",
        "json",
        "SELECT
        (SELECT count(*) FROM tenants) AS tenants,
        (SELECT count(*) FROM plans) AS plans,
        (SELECT count(*) FROM invoices WHERE amount > 0) AS paid_lines,
        (SELECT count(*) FROM billing WHERE tenant_id IS NULL) AS shared_lines,
        (SELECT count(*) FROM billing WHERE tenant_id IS NOT NULL) AS dedicated_lines,
        (SELECT count(*) FROM logs WHERE severity_text = 'ERROR') > 0 AS has_errors,
        (SELECT count(DISTINCT metric_name) FROM metrics) AS metric_names,
        (SELECT count(DISTINCT date) FROM spans) AS days",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let row = &v[0];
    assert_eq!(row["tenants"], 5);
    assert_eq!(row["plans"], 4);
    assert_eq!(row["days"], 2);
    assert_eq!(row["metric_names"], 2);
    assert_eq!(row["has_errors"], true);
    assert!(row["shared_lines"].as_i64().unwrap() >= 2 * 7, "{row}");
    // acme and initech are enterprise (dedicated databases), initech has its own account.
    assert_eq!(row["dedicated_lines"], 2 * (2 + 2), "{row}");
}

#[test]
fn demo_is_deterministic_and_idempotent() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    small_demo(a.path());
    small_demo(b.path());
    small_demo(b.path()); // a second run finds the fleet complete and writes nothing
    let q = "SELECT count(*) AS n, sum(duration_ns) AS d, sum(length(trace_id)) AS t FROM spans";
    let qa = stdout(&run(&["sql", "--data", a.path().to_str().unwrap(), "--format", "csv", q]));
    let qb = stdout(&run(&["sql", "--data", b.path().to_str().unwrap(), "--format", "csv", q]));
    assert_eq!(qa, qb);
    let q = "SELECT sum(billed_cost) AS c FROM billing";
    let ca = stdout(&run(&["sql", "--data", a.path().to_str().unwrap(), "--format", "csv", q]));
    let cb = stdout(&run(&["sql", "--data", b.path().to_str().unwrap(), "--format", "csv", q]));
    assert_eq!(ca, cb);
}

pub(crate) struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp[9..12].parse().unwrap();
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// `tenantscope serve` on free ports (HTTP, PostgreSQL), stopped when dropped.
pub(crate) fn start_server(data: &std::path::Path) -> (Server, u16) {
    let (server, port, _) = start_server_pg(data);
    (server, port)
}

/// As [`start_server`], also returning the PostgreSQL port.
pub(crate) fn start_server_pg(data: &std::path::Path) -> (Server, u16, u16) {
    let (port, pg, grpc, otlp) = (free_port(), free_port(), free_port(), free_port());
    let wal = data.join("_wal");
    let child = bin()
        .args([
            "serve",
            "--no-auth",
            "--data",
            data.to_str().unwrap(),
            "--wal-dir",
            wal.to_str().unwrap(),
            "--http-addr",
            &format!("127.0.0.1:{port}"),
            "--pg-addr",
            &format!("127.0.0.1:{pg}"),
            "--otlp-grpc-addr",
            &format!("127.0.0.1:{grpc}"),
            "--otlp-http-addr",
            &format!("127.0.0.1:{otlp}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() || TcpStream::connect(("127.0.0.1", pg)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(60), "server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    (server, port, pg)
}

#[test]
fn billing_import_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, port) = start_server(dir.path());
    let csv = "BillingAccountId,ChargePeriodStart,BilledCost,BillingCurrency\nA,2026-10-01,1.25,USD\nA,2026-10-02,2.50,USD\n";
    let (status, body) = http(port, "POST", "/v1/import/billing?name=oct.csv&source=api", csv);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["rows"].as_i64(), v["written"].as_bool(), v["formats"][0].as_str()),
        (Some(2), Some(true), Some("focus"))
    );
    let (status, body) = http(port, "POST", "/v1/import/billing?name=oct.csv&source=api", csv);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"written\":false"), "{body}");
    let bad = "BillingAccountId,ChargePeriodStart,BilledCost\nA,2026-10-01,one\n";
    let (status, body) = http(port, "POST", "/v1/import/billing?name=bad.csv", bad);
    assert_eq!(status, 422, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["errors"][0]["line"], 2);
    assert_eq!(v["errors"][0]["column"], "BilledCost");
    let (status, body) = http(port, "POST", "/v1/import/billing?format=nope", csv);
    assert_eq!(status, 400, "{body}");
    let (status, body) = http(
        port,
        "POST",
        "/v1/sql",
        r#"{"sql": "SELECT CAST(sum(billed_cost) AS VARCHAR) AS c FROM billing"}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("3.7500000000"), "{body}");
}

#[test]
fn serve_answers_health_readiness_and_sql() {
    let dir = tempfile::tempdir().unwrap();
    small_demo(dir.path());
    let (_server, port) = start_server(dir.path());
    assert_eq!(http(port, "GET", "/healthz", ""), (200, "ok\n".to_string()));
    assert_eq!(http(port, "GET", "/readyz", ""), (200, "ready\n".to_string()));
    let (status, body) = http(
        port,
        "POST",
        "/v1/sql",
        r#"{"sql": "SELECT tenant_id, count(*) AS n, sum(billed_cost) AS cost FROM billing WHERE tenant_id = 'acme' GROUP BY 1"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["columns"][0]["name"], "tenant_id");
    assert_eq!(v["columns"][2]["type"], "Decimal128(38, 10)");
    assert_eq!(v["rows"][0][0], "acme");
    assert_eq!(v["rows"][0][1], 2);
    // Money stays exact: 2 days of a db.r6g.large at 0.215/h.
    assert_eq!(v["rows"][0][2], "10.3200000000");
    let (status, body) = http(port, "POST", "/v1/sql", r#"{"sql": "SELEC nothing"}"#);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("SQL error"), "{body}");
}
