//! `tenantscope demo`: a realistic, deterministic demo fleet written to the lake, then served.
//!
//! The fleet: tenants on four plans with Zipf-like traffic (one heavy tenant on a cheap plan,
//! one with a high error rate, one usage spike on the last day), days of spans, logs and
//! metrics with OpenTelemetry resource attributes, a FOCUS billing export with shared and
//! dedicated resources, the price book, and invoices.
//!
//! Tenants, plans, invoices and the FOCUS bill go through the importers, as files a user would
//! import. Telemetry is built as OTLP export requests and goes through the OTLP receiver's
//! conversion and tenant attribution, then the lake writer; only the network, the write-ahead
//! log and the flush timer are skipped (the demo commits one day at a time). `usage` is rolled
//! up from it as `serve` would.

mod bill;
mod cols;
mod fleet;
mod traffic;

use std::{collections::BTreeSet, sync::Arc, time::Instant};

use anyhow::Context;
use arrow::array::{Int64Array, RecordBatch, StringArray};
use chrono::{NaiveDate, Utc};
use rand::{SeedableRng, rngs::StdRng};
use tenantscope_ingest::{
    billing::{BillingImportOptions, ExportFile, import_billing},
    business::{Kind, import_business},
};
use tenantscope_query::{EngineConfig, QueryEngine, cost::usage};
use tenantscope_schemas::{Lake, Table};

use crate::{cli::DemoArgs, config::Config};
use cols::{fin, string_list_builder, ts_builder};
use fleet::Fleet;

/// Totals of what the demo wrote.
#[derive(Debug, Default)]
pub(crate) struct Written {
    pub(crate) spans: usize,
    pub(crate) logs: usize,
    pub(crate) metrics: usize,
    pub(crate) billing: usize,
}

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let end = match &args.end_date {
        Some(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .with_context(|| format!("--end-date {s:?} is not a date of the form YYYY-MM-DD"))?,
        None => Utc::now().date_naive() - chrono::Days::new(1),
    };
    let first_day = end - chrono::Days::new(u64::from(args.days - 1));
    let config = match &args.serve.config {
        Some(path) => Config::load(Some(path))?,
        None => Config::parse(DEMO_CONFIG, "examples/demo.yaml (the demo's built-in config)")?,
    };
    let lake = Lake::open_url(&args.serve.lake.data).await.context("cannot open the lake")?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut fleet =
        Fleet::new(&mut rng, args.tenants, first_day, args.days, args.peak_requests_per_day, args.seed);
    fleet.billing_resources = args.billing_resources;

    if already_built(&lake, &fleet).await? {
        crate::cli::say(format!(
            "The demo fleet {} is already in the lake at {}.",
            fleet.import_id(),
            lake.location()
        ));
    } else {
        let started = Instant::now();
        let written = build(&lake, &fleet, &mut rng).await?;
        let days: BTreeSet<NaiveDate> = (0..fleet.days).map(|d| fleet.day(d)).collect();
        usage::rollup(&lake, &config.cost.meters, &days).await.context("cannot roll up the demo's usage")?;
        crate::cli::say(format!(
            "Built the demo fleet in {:.1} s: {} tenants, {} days ({} .. {}), {} spans, {} log records, {} metric points, {} billing lines.\nLake: {}",
            started.elapsed().as_secs_f64(),
            fleet.tenants.len(),
            fleet.days,
            fleet.first_day,
            end,
            written.spans,
            written.logs,
            written.metrics,
            written.billing,
            lake.location(),
        ));
    }
    print_hints(&args);
    if args.no_serve {
        return Ok(());
    }
    let mut serve = args.serve;
    // The demo is a local trial: without a principals file it serves without authentication
    // (and `serve` says so loudly at start).
    if serve.auth.is_none() {
        serve.no_auth = true;
    }
    if serve.rules.is_empty() {
        // The shipped alert rules, written next to the write-ahead log (once: edits stay, and
        // are reloaded on change).
        let path = serve.wal_dir.join("demo-rules.yaml");
        std::fs::create_dir_all(&serve.wal_dir)
            .and_then(|()| if path.exists() { Ok(()) } else { std::fs::write(&path, DEMO_RULES) })
            .with_context(|| format!("cannot write the demo's alert rules to {}", path.display()))?;
        crate::cli::say(format!(
            "Alert rules: {} (examples/rules/tenantscope.yaml); state: GET /v1/rules.",
            path.display()
        ));
        serve.rules.push(path);
    }
    crate::serve::serve(serve, lake, config).await
}

/// The shipped alert rules, which the demo evaluates when no --rules is given.
const DEMO_RULES: &str = include_str!("../../examples/rules/tenantscope.yaml");

/// The cost model of the demo when no --config is given.
const DEMO_CONFIG: &str = include_str!("../../examples/demo.yaml");

async fn already_built(lake: &Lake, fleet: &Fleet) -> anyhow::Result<bool> {
    if !lake.exists(Table::Imports).await? {
        return Ok(false);
    }
    let engine = QueryEngine::new(lake.clone(), EngineConfig::default()).await?;
    let sql =
        format!("SELECT count(*) FROM imports WHERE kind = 'demo' AND import_id = '{}'", fleet.import_id());
    let result = engine.sql(&sql).await?;
    let n = result
        .batches
        .first()
        .and_then(|b| b.column(0).as_any().downcast_ref::<Int64Array>().map(|a| a.value(0)))
        .unwrap_or(0);
    Ok(n > 0)
}

async fn build(lake: &Lake, fleet: &Fleet, rng: &mut StdRng) -> anyhow::Result<Written> {
    let mut written = Written::default();
    let mut requests = vec![vec![0_i64; fleet.days as usize]; fleet.tenants.len()];
    let mut exports = vec![0_i64; fleet.days as usize];
    for d in 0..fleet.days {
        let day = traffic::day(fleet, rng, d)?;
        for (t, n) in day.requests.iter().enumerate() {
            requests[t][d as usize] = *n;
        }
        exports[d as usize] = day.exports;
        written.spans += append(lake, Table::Spans, day.spans).await?;
        written.logs += append(lake, Table::Logs, day.logs).await?;
        written.metrics += append(lake, Table::Metrics, day.metrics).await?;
        tracing::info!(day = %fleet.day(d), spans = written.spans, "Wrote a demo day.");
    }
    // Business data and the bill go through the importers, as a user's files would; tenants
    // first, so that the bill's dedicated account is attributed to its tenant.
    import(lake, Kind::Tenants, "demo-tenants.yaml", fleet::tenants_yaml(fleet)).await?;
    import(lake, Kind::Plans, "demo-plans.yaml", fleet::plans_yaml(fleet)).await?;
    import(lake, Kind::Invoices, "demo-invoices.csv", fleet::invoices_csv(fleet, &requests)).await?;
    let export = ExportFile {
        name: "demo-focus-export.csv".into(),
        bytes: bill::billing_csv(fleet, &requests, &exports).into(),
    };
    let options = BillingImportOptions {
        source: Some("demo-focus".into()),
        tenant_tag_keys: vec!["tenant".into()],
        ..Default::default()
    };
    written.billing =
        import_billing(lake, &[export], &options).await.context("cannot import the demo's bill")?.rows;
    // Written last: its presence says the demo fleet is complete.
    append(lake, Table::Imports, Some(import_row(fleet, &written)?)).await?;
    lake.create_all().await?;
    Ok(written)
}

async fn import(lake: &Lake, kind: Kind, name: &str, text: String) -> anyhow::Result<()> {
    let file = ExportFile { name: name.into(), bytes: text.into() };
    import_business(lake, kind, &file).await.with_context(|| format!("cannot import the demo's {kind}"))?;
    Ok(())
}

async fn append(lake: &Lake, table: Table, batch: Option<RecordBatch>) -> anyhow::Result<usize> {
    let Some(batch) = batch else { return Ok(0) };
    let commit =
        lake.append(table, &[batch]).await.with_context(|| format!("cannot write the demo's {table}"))?;
    Ok(commit.map_or(0, |c| c.rows))
}

fn import_row(fleet: &Fleet, w: &Written) -> anyhow::Result<RecordBatch> {
    let s = |v: &str| -> Arc<dyn arrow::array::Array> { Arc::new(StringArray::from(vec![v])) };
    let mut at = ts_builder(1);
    at.append_value(Utc::now().timestamp_micros());
    let mut periods = string_list_builder();
    for m in fleet.months() {
        periods.values().append_value(m.format("%Y-%m").to_string());
    }
    periods.append(true);
    let rows = i64::try_from(w.spans + w.logs + w.metrics + w.billing)?;
    Ok(RecordBatch::try_new(
        Table::Imports.schema(),
        vec![
            s(&fleet.import_id()),
            fin(at),
            s("demo"),
            s("demo"),
            s("generated"),
            arrow::array::new_null_array(&arrow::datatypes::DataType::Utf8, 1),
            s(&format!("seed={} tenants={} days={}", fleet.seed, fleet.tenants.len(), fleet.days)),
            Arc::new(Int64Array::from(vec![rows])),
            fin(periods),
            s("complete"),
        ],
    )?)
}

fn print_hints(args: &DemoArgs) {
    let data = &args.serve.lake.data;
    let http = args.serve.http_addr;
    let (pg_host, pg_port) = (args.serve.pg_addr.ip(), args.serve.pg_addr.port());
    crate::cli::say(format!(
        r#"
Try:
  tenantscope sql --data {data} "SELECT tenant_id, count(*) AS requests FROM spans WHERE kind = 'server' GROUP BY 1 ORDER BY 2 DESC LIMIT 10"
  tenantscope sql --data {data} "SELECT charge_period_start::date AS day, tenant_id, sum(billed_cost) AS cost FROM billing GROUP BY 1, 2 ORDER BY 1, 2"
  tenantscope sql --data {data} --config examples/demo.yaml "SELECT tenant_id, plan, revenue, cost, margin, round(margin_pct, 1) AS pct FROM tenant_margin ORDER BY margin LIMIT 10"
  psql -h {pg_host} -p {pg_port} -c "SELECT day, tenant_id, sum(effective_cost) FROM tenant_costs GROUP BY 1, 2 ORDER BY 1, 3 DESC"
  curl -s http://{http}/v1/sql -H 'content-type: application/json' -d '{{"sql": "SELECT service_name, count(*) FROM spans GROUP BY 1"}}'
"#
    ));
}
