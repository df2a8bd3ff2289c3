//! sqllogictest files (`query/tests/slt/*.slt`) for the cost model's views and functions, run
//! twice: in-process on the engine, and over the PostgreSQL wire with tokio-postgres. The
//! fixture is small and hand-made so that every expected value in the files is computed by hand
//! (see `cost_model.slt` for the arithmetic).

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use async_trait::async_trait;
use sqllogictest::{DBOutput, DefaultColumnType};
use tenantscope_query::{EngineConfig, QueryEngine, cost::CostConfig};
use tenantscope_schemas::{
    Lake, Table,
    arrow::{
        array::{ArrayRef, StringArray},
        compute::cast,
        util::display::{ArrayFormatter, FormatOptions},
    },
    types::{batch_with_nulls, string_map_builder},
};

/// Allocation rules of the fixture.
const CONFIG: &str = "
allocation:
  - {name: compute-by-requests, match: {service_category: Compute}, method: proportional, meter: requests}
  - {name: support-even, match: {service_name: Support}, method: even}
  - {name: team-tag, match: {service_name: RDS}, method: direct, tag: team}
  - {name: dns-fixed, match: {service_name: DNS}, method: fixed, weights: {acme: 1, globex: 2}}
";

/// Rows of `table` from text values (cast to each column's type; `None` is NULL; map columns
/// such as `tags` and `attributes` as `k=v` pairs separated by `;`).
fn rows(
    table: Table,
    columns: &[(&str, Vec<Option<&str>>)],
) -> tenantscope_schemas::arrow::array::RecordBatch {
    let schema = table.schema();
    let n = columns[0].1.len();
    let mut cols: HashMap<&str, ArrayRef> = HashMap::new();
    for (name, values) in columns {
        let field = schema.field_with_name(name).unwrap();
        let array: ArrayRef =
            if matches!(field.data_type(), tenantscope_schemas::arrow::datatypes::DataType::Map(..)) {
                let mut b = string_map_builder();
                for v in values {
                    for pair in v.unwrap_or_default().split(';').filter(|p| !p.is_empty()) {
                        let (k, val) = pair.split_once('=').unwrap();
                        b.keys().append_value(k);
                        b.values().append_value(val);
                    }
                    b.append(v.is_some()).unwrap();
                }
                Arc::new(b.finish())
            } else {
                cast(&StringArray::from(values.clone()), field.data_type()).unwrap()
            };
        cols.insert(name, array);
    }
    batch_with_nulls(&schema, n, cols).unwrap()
}

/// The fixture lake: three tenants, two plans, an hour of usage each at 10:00 and 11:00 on
/// 2026-11-02, and a bill whose lines each go through one allocation method.
async fn fixture(dir: &std::path::Path) -> QueryEngine {
    fixture_at(dir.to_str().unwrap()).await
}

/// The fixture in the lake at `url` (a folder or an object store).
async fn fixture_at(url: &str) -> QueryEngine {
    let lake = Lake::open_url(url).await.unwrap();
    let s = |v: &[&'static str]| v.iter().map(|x| Some(*x)).collect::<Vec<_>>();
    lake.append(
        Table::Tenants,
        &[rows(
            Table::Tenants,
            &[
                ("tenant_id", s(&["acme", "globex", "initech"])),
                ("name", s(&["Acme", "Globex", "Initech"])),
                ("plan", s(&["team", "team", "free"])),
                ("currency", s(&["USD", "USD", "USD"])),
            ],
        )],
    )
    .await
    .unwrap();
    lake.append(
        Table::Plans,
        &[rows(
            Table::Plans,
            &[
                ("plan", s(&["team", "free"])),
                ("currency", s(&["USD", "USD"])),
                ("base_fee", s(&["49", "0"])),
                ("meter", s(&["requests", "requests"])),
                ("unit", s(&["request", "request"])),
                ("unit_price", s(&["0.01", "0"])),
                ("included_quantity", s(&["500", "1000"])),
                ("valid_from", s(&["2026-11-01T00:00:00Z", "2026-11-01T00:00:00Z"])),
            ],
        )],
    )
    .await
    .unwrap();
    lake.append(
        Table::Usage,
        &[rows(
            Table::Usage,
            &[
                (
                    "hour",
                    s(&[
                        "2026-11-02T10:00:00Z",
                        "2026-11-02T10:00:00Z",
                        "2026-11-02T10:00:00Z",
                        "2026-11-02T11:00:00Z",
                        "2026-11-02T11:00:00Z",
                    ]),
                ),
                ("tenant_id", s(&["acme", "globex", "initech", "acme", "globex"])),
                ("meter", s(&["requests"; 5])),
                ("quantity", s(&["600", "300", "100", "2", "1"])),
                ("unit", s(&["request"; 5])),
                ("date", s(&["2026-11-02"; 5])),
            ],
        )],
    )
    .await
    .unwrap();
    lake.append(
        Table::Spans,
        &[rows(
            Table::Spans,
            &[
                (
                    "time",
                    s(&[
                        "2026-11-02T10:00:01Z",
                        "2026-11-02T10:00:02Z",
                        "2026-11-02T10:00:03Z",
                        "2026-11-02T10:00:04Z",
                        "2026-11-02T10:00:05Z",
                    ]),
                ),
                ("trace_id", s(&["t1", "t2", "t3", "t4", "t5"])),
                ("span_id", s(&["s1", "s2", "s3", "s4", "s5"])),
                ("name", s(&["GET /cart/1", "GET /cart/2", "GET /cart/3", "GET /x", "SELECT"])),
                ("kind", s(&["server", "server", "server", "server", "client"])),
                ("status_code", vec![Some("ok"), Some("error"), None, Some("ok"), Some("ok")]),
                ("duration_ns", s(&["10000000", "20000000", "30000000", "5000000", "1000000"])),
                ("service_name", s(&["api"; 5])),
                ("tenant_id", s(&["acme", "acme", "acme", "globex", "acme"])),
                (
                    "attributes",
                    vec![
                        Some("http.route=/cart/{id}"),
                        Some("http.route=/cart/{id}"),
                        Some("http.route=/cart/{id}"),
                        Some(""),
                        Some(""),
                    ],
                ),
                ("date", s(&["2026-11-02"; 5])),
            ],
        )],
    )
    .await
    .unwrap();
    let ten = "2026-11-02T10:00:00Z";
    let eleven = "2026-11-02T11:00:00Z";
    let noon = "2026-11-02T12:00:00Z";
    lake.append(
        Table::Billing,
        &[rows(
            Table::Billing,
            &[
                ("service_name", s(&["EC2", "Support", "RDS", "DNS", "Marketplace", "S3", "EC2"])),
                (
                    "service_category",
                    s(&["Compute", "Support", "Databases", "Networking", "Other", "Storage", "Compute"]),
                ),
                ("billed_cost", s(&["100", "9", "20", "3", "7", "5", "1"])),
                ("effective_cost", s(&["90", "9", "20", "3", "7", "5", "1"])),
                ("charge_period_start", s(&[ten, ten, ten, ten, ten, ten, eleven])),
                ("charge_period_end", s(&[eleven, eleven, eleven, eleven, eleven, eleven, noon])),
                ("tags", vec![None, None, Some("team=globex"), None, None, None, None]),
                ("tenant_id", vec![None, None, None, None, None, Some("initech"), None]),
                (
                    "resource_id",
                    vec![Some("i-1"), None, Some("db-1"), None, None, Some("bucket-1"), Some("i-1")],
                ),
                (
                    "resource_name",
                    vec![Some("web"), None, Some("globex-db"), None, None, Some("assets"), Some("web")],
                ),
                ("billing_currency", s(&["USD"; 7])),
                ("provider_name", s(&["AWS"; 7])),
                ("charge_category", s(&["Usage"; 7])),
                ("sub_account_id", s(&["111"; 7])),
                ("billing_period_start", s(&["2026-11-01T00:00:00Z"; 7])),
                ("source", s(&["focus"; 7])),
                ("import_id", s(&["fixture"; 7])),
                ("billing_period", s(&["2026-11-01"; 7])),
            ],
        )],
    )
    .await
    .unwrap();
    let cost: CostConfig = serde_yaml_ng::from_str(CONFIG).unwrap();
    QueryEngine::new(lake, EngineConfig { cost, ..Default::default() }).await.unwrap()
}

/// The history fixture (`query/tests/slt/history/`): one tenant, seven days 2026-10-27 ..
/// 2026-11-02 at 10:00, requests 100 110 90 100 120 80 then 300, and one compute line a day
/// costing a tenth of that (10 11 9 10 12 8 then 30), all the tenant's (the only one with usage).
async fn history_fixture(dir: &std::path::Path) -> QueryEngine {
    history_fixture_at(dir.to_str().unwrap()).await
}

async fn history_fixture_at(url: &str) -> QueryEngine {
    let lake = Lake::open_url(url).await.unwrap();
    let s = |v: &[&'static str]| v.iter().map(|x| Some(*x)).collect::<Vec<_>>();
    let days =
        ["2026-10-27", "2026-10-28", "2026-10-29", "2026-10-30", "2026-10-31", "2026-11-01", "2026-11-02"];
    let at = |h: &str| {
        days.iter().map(|d| Some(&*Box::leak(format!("{d}T{h}:00:00Z").into_boxed_str()))).collect::<Vec<_>>()
    };
    let requests = ["100", "110", "90", "100", "120", "80", "300"];
    let costs = ["10", "11", "9", "10", "12", "8", "30"];
    lake.append(
        Table::Tenants,
        &[rows(
            Table::Tenants,
            &[("tenant_id", s(&["acme"])), ("plan", s(&["team"])), ("currency", s(&["USD"]))],
        )],
    )
    .await
    .unwrap();
    lake.append(
        Table::Usage,
        &[rows(
            Table::Usage,
            &[
                ("hour", at("10")),
                ("tenant_id", s(&["acme"; 7])),
                ("meter", s(&["requests"; 7])),
                ("quantity", s(&requests)),
                ("date", s(&days)),
            ],
        )],
    )
    .await
    .unwrap();
    let periods: Vec<Option<&str>> =
        days.iter().map(|d| Some(&*Box::leak(format!("{}-01", &d[..7]).into_boxed_str()))).collect();
    lake.append(
        Table::Billing,
        &[rows(
            Table::Billing,
            &[
                ("service_name", s(&["EC2"; 7])),
                ("service_category", s(&["Compute"; 7])),
                ("billed_cost", s(&costs)),
                ("effective_cost", s(&costs)),
                ("charge_period_start", at("10")),
                ("charge_period_end", at("11")),
                ("billing_currency", s(&["USD"; 7])),
                ("source", s(&["focus"; 7])),
                ("import_id", s(&["fixture"; 7])),
                ("billing_period", periods),
            ],
        )],
    )
    .await
    .unwrap();
    let cost: CostConfig = serde_yaml_ng::from_str(CONFIG).unwrap();
    QueryEngine::new(lake, EngineConfig { cost, ..Default::default() }).await.unwrap()
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SqlError(String);

/// Rows of `r` as Arrow displays their values, NULL as `NULL`.
fn displayed(r: &tenantscope_query::QueryResult) -> Vec<Vec<String>> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in &r.batches {
        let formatters: Vec<_> =
            b.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap()).collect();
        for row in 0..b.num_rows() {
            out.push(formatters.iter().map(|f| f.value(row).to_string()).collect());
        }
    }
    out
}

/// The engine in-process: values as Arrow displays them, NULL as `NULL`.
struct InProcess(QueryEngine);

#[async_trait]
impl sqllogictest::AsyncDB for InProcess {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let r = self.0.sql(sql).await.map_err(|e| SqlError(e.to_string()))?;
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; r.schema.fields().len()],
            rows: displayed(&r),
        })
    }

    async fn shutdown(&mut self) {}

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

/// The engine over the PostgreSQL wire: tokio-postgres' simple query protocol (text values).
struct PgWire(tokio_postgres::Client);

#[async_trait]
impl sqllogictest::AsyncDB for PgWire {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let messages = self.0.simple_query(sql).await.map_err(|e| SqlError(format!("{e:?}")))?;
        let mut rows = Vec::new();
        let mut width = 0;
        for m in messages {
            if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                width = r.len();
                rows.push((0..r.len()).map(|i| r.get(i).unwrap_or("NULL").to_string()).collect());
            }
        }
        Ok(DBOutput::Rows { types: vec![DefaultColumnType::Any; width], rows })
    }

    async fn shutdown(&mut self) {}

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

/// The .slt files of `tests/slt` (main fixture) or `tests/slt/history` (history fixture).
fn slt_files(sub: &str) -> Vec<PathBuf> {
    let dir = crate::manifest_dir().join("tests/slt").join(sub);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let main = fixture(&dir.path().join("main")).await;
    let history = history_fixture(&dir.path().join("history")).await;
    slt_in(main, history).await;
}

/// The same files, in process, over a lake in the S3-compatible server the test command starts
/// (moto on 127.0.0.1; see `tenantscope_schemas::testing::s3_bucket`): the scans build their
/// object store URLs and file paths from the table's root URL, and this is where a bucket and
/// prefix are in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_over_an_s3_lake() {
    let Some(bucket) = tenantscope_schemas::testing::s3_bucket() else { return };
    let prefix = format!("s3://{bucket}/slt-{}", std::process::id());
    let main = fixture_at(&format!("{prefix}/main")).await;
    let history = history_fixture_at(&format!("{prefix}/history")).await;
    slt_in(main, history).await;
}

async fn slt_in(main: QueryEngine, history: QueryEngine) {
    let runs = slt_files("").into_iter().map(|f| (f, main.clone()));
    for (file, engine) in runs.chain(slt_files("history").into_iter().map(|f| (f, history.clone()))) {
        let engine = engine.clone();
        let mut runner = sqllogictest::Runner::new(move || {
            let engine = engine.clone();
            async move { Ok(InProcess(engine)) }
        });
        if let Err(e) = runner.run_file_async(&file).await {
            panic!("{}: {}", file.display(), e.display(true));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_over_the_postgresql_wire() {
    let dir = tempfile::tempdir().unwrap();
    let main = fixture(&dir.path().join("main")).await;
    let history = history_fixture(&dir.path().join("history")).await;
    slt_over_pg(main, slt_files("")).await;
    slt_over_pg(history, slt_files("history")).await;
}

/// Serves `engine` on the PostgreSQL wire on a free port and runs `files` through tokio-postgres.
async fn slt_over_pg(engine: QueryEngine, files: Vec<PathBuf>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = engine.clone();
    tokio::spawn(async move {
        tenantscope_query::pg::serve(&server, listener, tenantscope_schemas::auth::Auth::Off, None).await
    });
    let conn = format!("host=127.0.0.1 port={port} user=tenantscope dbname=tenantscope");
    let mut tries = 0;
    let client = loop {
        match tokio_postgres::connect(&conn, tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                break client;
            }
            Err(e) => {
                tries += 1;
                assert!(tries < 100, "cannot connect: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    let client = Arc::new(tokio::sync::Mutex::new(Some(client)));
    for file in files {
        let slot = Arc::clone(&client);
        let conn = conn.clone();
        let mut runner = sqllogictest::Runner::new(move || {
            let slot = Arc::clone(&slot);
            let conn = conn.clone();
            async move {
                if let Some(c) = slot.lock().await.take() {
                    return Ok(PgWire(c));
                }
                let (c, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                    .await
                    .map_err(|e| SqlError(e.to_string()))?;
                tokio::spawn(connection);
                Ok(PgWire(c))
            }
        });
        if let Err(e) = runner.run_file_async(&file).await {
            panic!("{} over the PostgreSQL wire: {}", file.display(), e.display(true));
        }
    }
}

/// `tenant_resources` follows new versions of `billing` (another import), and between two
/// versions answers from the rows it kept: with the bill's data files gone (and no new
/// version), it still answers while `billing` itself cannot be read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_resources_follow_new_versions_of_the_bill() {
    let dir = tempfile::tempdir().unwrap();
    let engine = fixture(dir.path()).await;
    let per_tenant = "SELECT coalesce(tenant_id, '-') AS t, CAST(count(DISTINCT resource_id) AS VARCHAR) AS n \
                      FROM tenant_resources GROUP BY 1 ORDER BY 1";
    let text = |r: tenantscope_query::QueryResult| {
        displayed(&r).into_iter().map(|row| row.join(" ")).collect::<Vec<_>>()
    };
    assert_eq!(text(engine.sql(per_tenant).await.unwrap()), ["- 2", "initech 1"]);
    let s = |v: &[&'static str]| v.iter().map(|x| Some(*x)).collect::<Vec<_>>();
    engine
        .lake()
        .append(
            Table::Billing,
            &[rows(
                Table::Billing,
                &[
                    ("service_name", s(&["EC2", "EC2"])),
                    ("service_category", s(&["Compute", "Compute"])),
                    ("billed_cost", s(&["4", "6"])),
                    ("effective_cost", s(&["4", "6"])),
                    ("charge_period_start", s(&["2026-12-01T10:00:00Z", "2026-12-01T10:00:00Z"])),
                    ("charge_period_end", s(&["2026-12-01T11:00:00Z", "2026-12-01T11:00:00Z"])),
                    ("tenant_id", s(&["globex", "initech"])),
                    ("resource_id", s(&["i-2", "i-3"])),
                    ("billing_currency", s(&["USD", "USD"])),
                    ("billing_period_start", s(&["2026-12-01T00:00:00Z", "2026-12-01T00:00:00Z"])),
                    ("source", s(&["focus", "focus"])),
                    ("import_id", s(&["december", "december"])),
                    ("billing_period", s(&["2026-12-01", "2026-12-01"])),
                ],
            )],
        )
        .await
        .unwrap();
    assert_eq!(text(engine.sql(per_tenant).await.unwrap()), ["- 2", "globex 1", "initech 2"]);
    let december = "SELECT resource_id, CAST(effective_cost AS VARCHAR) FROM tenant_resources \
                    WHERE billing_period = DATE '2026-12-01' ORDER BY 1";
    assert_eq!(text(engine.sql(december).await.unwrap()), ["i-2 4.0000000000", "i-3 6.0000000000"]);

    let parquet: Vec<PathBuf> = walk(&dir.path().join("billing"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    assert!(!parquet.is_empty());
    for f in &parquet {
        std::fs::remove_file(f).unwrap();
    }
    assert!(engine.sql("SELECT sum(billed_cost) FROM billing").await.is_err(), "the bill's files are gone");
    assert_eq!(text(engine.sql(per_tenant).await.unwrap()), ["- 2", "globex 1", "initech 2"]);
}

/// Every file under `dir`, recursively.
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { out.extend(walk(&path)) } else { out.push(path) }
    }
    out
}

/// A query with a tenant filter leaves each file's footer *and page index* in the metadata cache
/// (DataFusion's opener caches the footer alone and decodes the page index on every query
/// otherwise), and the next query answers the same from it.
#[tokio::test]
async fn page_indexes_of_the_files_read_are_cached() {
    use datafusion::datasource::physical_plan::parquet::metadata::CachedParquetMetaData;

    let dir = tempfile::tempdir().unwrap();
    let engine = fixture(dir.path()).await;
    let query = "SELECT coalesce(tenant_id, '-'), CAST(count(*) AS VARCHAR) FROM billing \
                 WHERE tenant_id = 'initech' GROUP BY 1";
    let first = displayed(&engine.sql(query).await.unwrap());
    assert!(!first.is_empty());
    let files = walk(&dir.path().join("billing"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .count();
    assert!(files > 0);
    let cache = engine.context().runtime_env().cache_manager.get_file_metadata_cache();
    let indexed = || {
        cache
            .list_entries()
            .values()
            .filter(|e| {
                e.value
                    .file_metadata
                    .as_any()
                    .downcast_ref::<CachedParquetMetaData>()
                    .is_some_and(|m| m.parquet_metadata().column_index().is_some())
            })
            .count()
    };
    // Cached in the background, after a query is planned. The scan itself may store the footer
    // alone after the warming stored it with the page index (the two race on a loaded machine);
    // the next query then warms it again, so ask again while waiting.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while indexed() < files && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        if indexed() < files {
            assert_eq!(displayed(&engine.sql(query).await.unwrap()), first);
        }
    }
    assert_eq!(indexed(), files, "every billing file's page index is cached");
    assert_eq!(displayed(&engine.sql(query).await.unwrap()), first);
}

/// Groupings by plain columns, with aggregates or without (`count(DISTINCT ..)`, `SELECT
/// DISTINCT`), do their first phase by small ids for the values (`FewGroupsExec` in EXPLAIN
/// ANALYZE) and answer as groupings by expressions of the same columns (which DataFusion does
/// alone), over dictionary-decoded strings long and short, NULLs and timestamps, in several
/// files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groupings_by_small_ids_answer_as_datafusion_does() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open_url(dir.path().to_str().unwrap()).await.unwrap();
    let tenants = [None, Some("acme"), Some("globex"), Some("a-tenant-with-a-long-name")];
    let ids: Vec<String> =
        (0..300).map(|i| if i % 10 == 0 { format!("r-{i}") } else { format!("i-0wrk{i:014}") }).collect();
    for file in 0..3 {
        let n = 40_000;
        let text = |f: &dyn Fn(usize) -> String| (0..n).map(f).collect::<Vec<String>>();
        let tenant: Vec<Option<&str>> = (0..n).map(|i| tenants[(i / 7 + file) % 4]).collect();
        let resource = text(&|i| ids[(i * 7 + file * 13) % 300].clone());
        let hour = text(&|i| format!("2026-11-{:02}T{:02}:00:00Z", 1 + (i / 1000) % 28, (i / 40) % 24));
        let end = text(&|i| format!("2026-11-{:02}T{:02}:59:00Z", 1 + (i / 1000) % 28, (i / 40) % 24));
        let all = |v: &'static str| vec![Some(v); n];
        let batch = rows(
            Table::Billing,
            &[
                ("service_name", all("EC2")),
                ("service_category", all("Compute")),
                ("billed_cost", all("1")),
                ("effective_cost", all("1")),
                ("charge_period_start", hour.iter().map(|x| Some(x.as_str())).collect()),
                ("charge_period_end", end.iter().map(|x| Some(x.as_str())).collect()),
                ("tenant_id", tenant),
                ("resource_id", resource.iter().map(|x| Some(x.as_str())).collect()),
                ("billing_currency", all("USD")),
                ("billing_period_start", all("2026-11-01T00:00:00Z")),
                ("source", all("focus")),
                ("import_id", all("distinct")),
                ("billing_period", all("2026-11-01")),
            ],
        );
        lake.append(Table::Billing, &[batch]).await.unwrap();
    }
    let engine = QueryEngine::new(lake, EngineConfig::default()).await.unwrap();
    let sorted = |r: tenantscope_query::QueryResult| {
        let mut rows = displayed(&r);
        rows.sort();
        rows
    };
    let explained = |sql: &str| {
        let engine = &engine;
        let sql = format!("EXPLAIN ANALYZE {sql}");
        async move { format!("{:?}", displayed(&engine.sql(&sql).await.unwrap())) }
    };
    // The references group by Utf8 strings (not views), which `FewGroupsExec` does not take.
    let pairs = [
        (
            "SELECT tenant_id, count(DISTINCT resource_id) FROM billing GROUP BY 1",
            "SELECT arrow_cast(tenant_id, 'Utf8'), count(DISTINCT arrow_cast(resource_id, 'Utf8')) FROM billing \
             GROUP BY 1",
        ),
        (
            "SELECT DISTINCT resource_id FROM billing",
            "SELECT DISTINCT arrow_cast(resource_id, 'Utf8') FROM billing",
        ),
        (
            "SELECT DISTINCT tenant_id, charge_period_start FROM billing",
            "SELECT DISTINCT arrow_cast(tenant_id, 'Utf8'), charge_period_start FROM billing",
        ),
        (
            "SELECT tenant_id, resource_id, charge_period_start, count(*), sum(billed_cost), \
             max(resource_id) FROM billing GROUP BY 1, 2, 3",
            "SELECT arrow_cast(tenant_id, 'Utf8'), arrow_cast(resource_id, 'Utf8'), charge_period_start, \
             count(*), sum(billed_cost), max(resource_id) FROM billing GROUP BY 1, 2, 3",
        ),
    ];
    for (ours, theirs) in pairs {
        let answer = sorted(engine.sql(ours).await.unwrap());
        assert!(answer.len() > 3, "{ours}");
        assert_eq!(answer, sorted(engine.sql(theirs).await.unwrap()), "{ours}");
        assert!(explained(ours).await.contains("FewGroupsExec"), "{ours}");
        assert!(!explained(theirs).await.contains("FewGroupsExec"), "{theirs}");
    }
}
