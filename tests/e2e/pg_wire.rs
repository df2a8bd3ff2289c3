//! The lake over the PostgreSQL wire, with the real psql client: a tenant's cost and revenue
//! come out as they went in.

use std::process::Command;

use crate::{
    demo_and_serve::start_server_pg,
    support::{run, small_demo},
};

fn psql(port: u16, sql: &str) -> (bool, String, String) {
    let out = Command::new("psql")
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "tenantscope",
            "-d",
            "tenantscope",
            "-A",
            "-t",
            "-F",
            ",",
        ])
        .args(["-c", sql])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql is installed (scripts/test.sh installs postgresql-client)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn psql_reads_cost_and_revenue_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    small_demo(dir.path());
    let (_server, _http, pg) = start_server_pg(dir.path());
    // acme's dedicated database: 2 days of db.r6g.large at 0.215/h, exact.
    let (ok, out, err) =
        psql(pg, "SELECT tenant_id, sum(billed_cost) FROM billing WHERE tenant_id = 'acme' GROUP BY 1");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "acme,10.3200000000");
    let (ok, out, err) = psql(pg, "SELECT count(DISTINCT tenant_id) FROM spans");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "5");
    // Revenue per tenant from the imported invoices, as the finance lead would ask for it.
    let (ok, out, err) = psql(
        pg,
        "SELECT i.tenant_id, t.plan, sum(i.amount) FROM invoices i JOIN tenants t USING (tenant_id) GROUP BY 1, 2 ORDER BY 1 LIMIT 1",
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "acme,enterprise,4999.0000000000");
    // Bad SQL is an error the client shows, and the connection survives it.
    let (ok, _, err) = psql(pg, "SELECT nope FROM spans");
    assert!(!ok && err.contains("nope"), "{err}");
}

#[test]
fn psql_meta_commands_list_the_tables() {
    let dir = tempfile::tempdir().unwrap();
    assert!(run(&["sql", "--data", dir.path().to_str().unwrap(), "SELECT 1"]).status.success());
    let (_server, _http, pg) = start_server_pg(dir.path());
    let (ok, out, err) = psql(pg, "\\dt");
    assert!(ok, "{err}");
    for table in ["spans", "logs", "metrics", "billing", "tenants", "plans", "invoices", "usage"] {
        assert!(out.lines().any(|l| l.split(',').nth(1) == Some(table)), "{table} missing from \\dt: {out}");
    }
    let (ok, out, err) = psql(pg, "SELECT current_database()");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "tenantscope");
}

#[test]
fn tokio_postgres_prepared_statements_and_types() {
    let dir = tempfile::tempdir().unwrap();
    small_demo(dir.path());
    let (_server, _http, pg) = start_server_pg(dir.path());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let (client, connection) = tokio_postgres::connect(
            &format!("host=127.0.0.1 port={pg} user=tenantscope dbname=tenantscope connect_timeout=10"),
            tokio_postgres::NoTls,
        )
        .await
        .expect("connects");
        tokio::spawn(connection);
        // Extended protocol: a prepared statement with a typed parameter, run twice.
        let stmt = client
            .prepare(
                "SELECT tenant_id, count(*) AS n, CAST(sum(billed_cost) AS VARCHAR) AS cost, \
                 min(charge_period_start) AS first FROM billing WHERE tenant_id = $1 GROUP BY tenant_id",
            )
            .await
            .expect("prepares");
        let rows = client.query(&stmt, &[&"acme"]).await.expect("runs");
        assert_eq!(rows.len(), 1);
        let (tenant, n, cost): (String, i64, String) = (rows[0].get(0), rows[0].get(1), rows[0].get(2));
        let first: std::time::SystemTime = rows[0].get(3);
        assert_eq!((tenant.as_str(), n, cost.as_str()), ("acme", 2, "10.3200000000"));
        assert!(first > std::time::UNIX_EPOCH);
        assert!(client.query(&stmt, &[&"nobody"]).await.expect("runs").is_empty());
        // Simple protocol, several statements in one message.
        let messages = client.simple_query("SELECT 1 AS one; SELECT 'x' AS x").await.expect("runs");
        let values: Vec<String> = messages
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .collect();
        assert_eq!(values, ["1", "x"]);
        // A bad statement is an error with a message, and the connection survives it.
        let err = client.query("SELECT nope FROM spans", &[]).await.unwrap_err();
        assert!(err.as_db_error().is_some_and(|e| e.message().contains("nope")), "{err}");
        let one: i64 = client.query_one("SELECT CAST(1 AS BIGINT)", &[]).await.unwrap().get(0);
        assert_eq!(one, 1);
    });
}
