//! The same conformance checks against every store the lake runs on: a local folder and a real
//! S3-compatible server (started by the test command; see README.md). Like object_store's
//! `put_get_delete_list(&store)`, one function, many stores.

use std::{collections::BTreeSet, sync::Arc};

use arrow::{
    array::{Array, Date32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray},
    datatypes::{Field, Schema},
};
use deltalake::{
    datafusion::prelude::SessionContext,
    parquet::{
        arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder},
        basic::Compression,
        file::metadata::PageIndexPolicy,
    },
};
use object_store::ObjectStoreExt;
use tenantscope_schemas::{Lake, Table, columns::*};

const DAY_US: i64 = 86_400_000_000;
/// 2026-11-01 00:00 UTC.
const T0: i64 = 1_793_491_200_000_000;

/// `n` spans spread over three tenants (and unattributed rows), two days, in shuffled order.
pub(crate) fn spans(n: usize, salt: i64) -> RecordBatch {
    let tenants = [Some("acme"), Some("globex"), None, Some("initech")];
    let mut time = Vec::with_capacity(n);
    let mut tenant = Vec::with_capacity(n);
    let mut date = Vec::with_capacity(n);
    for i in 0..n as i64 {
        // A permutation of 0..n so rows arrive unsorted.
        let t = T0 + ((i * 7919 + salt) % (n as i64)) * (2 * DAY_US / n as i64);
        time.push(t);
        date.push(i32::try_from(t / DAY_US).unwrap());
        tenant.push(tenants[(i as usize * 31 + salt as usize) % tenants.len()]);
    }
    let full = Table::Spans.schema();
    let cols: Vec<(&str, Arc<dyn Array>)> = vec![
        (TIME, Arc::new(TimestampMicrosecondArray::from(time).with_timezone("UTC"))),
        (DURATION_NS, Arc::new(Int64Array::from((0..n as i64).map(|i| i * 1000 + salt).collect::<Vec<_>>()))),
        (TRACE_ID, Arc::new(StringArray::from((0..n).map(|i| format!("{i:032x}")).collect::<Vec<_>>()))),
        (
            SPAN_ID,
            Arc::new(StringArray::from(
                (0..n).map(|i| format!("{:016x}", i as i64 + salt)).collect::<Vec<_>>(),
            )),
        ),
        (TENANT_ID, Arc::new(StringArray::from(tenant))),
        (DATE, Arc::new(Date32Array::from(date))),
    ];
    let fields: Vec<Field> = cols
        .iter()
        .map(|(name, c)| {
            Field::new(*name, c.data_type().clone(), full.field_with_name(name).unwrap().is_nullable())
        })
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols.into_iter().map(|(_, c)| c).collect()).unwrap()
}

async fn count_and_sum(lake: &Lake) -> (i64, i64, i64) {
    let dt = lake.table(Table::Spans).await.unwrap();
    let ctx = SessionContext::new();
    dt.update_datafusion_session(&ctx.state()).unwrap();
    ctx.register_table("spans", dt.table_provider().await.unwrap()).unwrap();
    let batches = ctx
        .sql("SELECT count(*), sum(duration_ns), count(DISTINCT tenant_id) FROM spans")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let col = |i: usize| batches[0].column(i).as_any().downcast_ref::<Int64Array>().unwrap().value(0);
    (col(0), col(1), col(2))
}

/// Every data file of `spans`: zstd, a page index, statistics on tenant_id, rows sorted by tenant
/// (nulls first) then time. Returns the files' URIs.
async fn assert_files_sorted(lake: &Lake) -> Vec<String> {
    let dt = lake.table(Table::Spans).await.unwrap();
    let store = lake.object_store();
    let files: Vec<String> = dt.get_file_uris().unwrap().collect();
    for uri in &files {
        let path = object_store::path::Path::from_url_path(
            url::Url::parse(uri).map(|u| u.path().to_string()).unwrap_or_else(|_| uri.clone()),
        )
        .unwrap();
        let bytes = store.get(&path).await.unwrap().bytes().await.unwrap();
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required);
        let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(bytes, options).unwrap();
        let meta = builder.metadata().clone();
        let rg = meta.row_group(0);
        for col in rg.columns() {
            assert!(matches!(col.compression(), Compression::ZSTD(_)), "{uri}: {:?}", col.compression());
        }
        assert!(meta.column_index().is_some() && meta.offset_index().is_some(), "{uri}: no page index");
        let tenant_col = rg.columns().iter().find(|c| c.column_path().string() == TENANT_ID).unwrap();
        assert!(tenant_col.statistics().is_some(), "{uri}: no statistics on tenant_id");
        let mut prev: Option<(Option<String>, i64)> = None;
        for batch in builder.build().unwrap() {
            let batch = batch.unwrap();
            let tenants = batch
                .column_by_name(TENANT_ID)
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone();
            let times = batch
                .column_by_name(TIME)
                .unwrap()
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .unwrap()
                .clone();
            for i in 0..batch.num_rows() {
                let key = (tenants.is_valid(i).then(|| tenants.value(i).to_string()), times.value(i));
                if let Some(p) = &prev {
                    assert!(*p <= key, "{uri}: rows not sorted by tenant then time: {p:?} > {key:?}");
                }
                prev = Some(key);
            }
        }
    }
    files
}

/// Create, write, read back (values, partitions, sort order, zstd, statistics), two concurrent
/// writers, reopen.
pub(crate) async fn conformance(url: &str) {
    let lake = Lake::open_url(url).await.unwrap();
    lake.create_all().await.unwrap();
    for table in Table::ALL {
        assert!(lake.exists(table).await.unwrap(), "{table} was not created at {url}");
        let dt = lake.table(table).await.unwrap();
        let cols = dt.snapshot().unwrap().metadata().partition_columns().to_vec();
        assert_eq!(cols, table.partition_columns().to_vec(), "{table} partitioning");
    }

    // Write and read back.
    let n = 6_000;
    let commit = lake.append(Table::Spans, &[spans(n, 0)]).await.unwrap().unwrap();
    assert_eq!(commit.rows, n);
    let expected_sum: i64 = (0..n as i64).map(|i| i * 1000).sum();
    assert_eq!(count_and_sum(&lake).await, (n as i64, expected_sum, 3));

    let files = assert_files_sorted(&lake).await;
    let dates: BTreeSet<&str> =
        files.iter().filter_map(|f| f.split("date=").nth(1)).map(|s| &s[..10]).collect();
    assert_eq!(dates.len(), 2, "two day partitions: {files:?}");

    // Two writers with their own handles, appending at the same time.
    let version_before = lake.table(Table::Spans).await.unwrap().version().unwrap();
    let (a, b) = (Lake::open_url(url).await.unwrap(), Lake::open_url(url).await.unwrap());
    let rounds: u64 = 4;
    let writer = |lake: Lake, salt: i64| async move {
        for r in 0..rounds {
            lake.append(Table::Spans, &[spans(500, salt + r as i64)]).await.unwrap();
        }
    };
    tokio::join!(writer(a, 1_000), writer(b, 2_000));
    let dt = lake.table(Table::Spans).await.unwrap();
    assert_eq!(dt.version().unwrap(), version_before + 2 * rounds, "every commit kept");
    let extra_sum: i64 = [1_000_i64, 2_000]
        .iter()
        .flat_map(|salt| {
            (0..rounds).map(move |r| (0..500_i64).map(|i| i * 1000 + salt + r as i64).sum::<i64>())
        })
        .sum();
    let expected = (n as i64 + 2 * rounds as i64 * 500, expected_sum + extra_sum, 3);
    assert_eq!(count_and_sum(&lake).await, expected);

    // Reopen: a new handle sees the same table.
    let reopened = Lake::open_url(url).await.unwrap();
    assert_eq!(count_and_sum(&reopened).await, expected);

    // Replace a slice nothing holds yet (written on every core, committed as a replace), then
    // restate it (deltalake's rewrite); rows outside the predicate are refused, nothing written.
    let day = |batch: RecordBatch, days: i64| {
        let shift = |i: usize| -> Arc<dyn Array> {
            match batch.schema().field(i).name().as_str() {
                TIME => {
                    let t = batch.column(i).as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap();
                    Arc::new(
                        TimestampMicrosecondArray::from(
                            t.values().iter().map(|v| v + days * DAY_US).collect::<Vec<_>>(),
                        )
                        .with_timezone("UTC"),
                    )
                }
                DATE => {
                    let d = batch.column(i).as_any().downcast_ref::<Date32Array>().unwrap();
                    Arc::new(Date32Array::from(
                        d.values().iter().map(|v| v + days as i32).collect::<Vec<_>>(),
                    ))
                }
                _ => Arc::clone(batch.column(i)),
            }
        };
        let cols = (0..batch.num_columns()).map(shift).collect();
        RecordBatch::try_new(batch.schema(), cols).unwrap()
    };
    // spans(n, _) covers 2026-11-01 and 11-02; shifted 10 days: 11-11 and 11-12.
    let predicate = "date IN (DATE '2026-11-11', DATE '2026-11-12')";
    let first = day(spans(300, 5), 10);
    lake.replace(Table::Spans, &[first], predicate).await.unwrap().unwrap();
    let first_sum: i64 = (0..300_i64).map(|i| i * 1000 + 5).sum();
    let with_slice = (expected.0 + 300, expected.1 + first_sum, 3);
    assert_eq!(count_and_sum(&lake).await, with_slice);
    let restated = day(spans(200, 9), 10);
    lake.replace(Table::Spans, &[restated], predicate).await.unwrap().unwrap();
    let restated_sum: i64 = (0..200_i64).map(|i| i * 1000 + 9).sum();
    let after_restatement = (expected.0 + 200, expected.1 + restated_sum, 3);
    assert_eq!(count_and_sum(&lake).await, after_restatement);
    let stray = day(spans(50, 3), 20);
    let err = lake.replace(Table::Spans, &[stray], "date = DATE '2026-11-21'").await.unwrap_err().to_string();
    assert!(err.contains("do not match the replace predicate"), "{err}");
    assert_eq!(count_and_sum(&lake).await, after_restatement);

    // A slice nothing holds yet, its rows written as they come (the billing import's way): two
    // writers, each given a sorted run in pieces, and one commit. A slice with rows is refused
    // (it takes `replace`), and so is rows out of order; a commit whose predicate matches rows
    // already there fails and deletes the files written for it.
    assert!(lake.start_slice_write(Table::Spans, predicate).await.unwrap().is_none(), "the slice has rows");
    let covering = "date IN (DATE '2026-11-21', DATE '2026-11-22')";
    let sorted =
        tenantscope_schemas::lake::prepare(Table::Spans, &[day(spans(4_000, 11), 20)]).unwrap().unwrap();
    let sorted = arrow::compute::concat_batches(&sorted[0].schema(), &sorted).unwrap();
    let (low, high) = (sorted.slice(0, 2_500), sorted.slice(2_500, 1_500));
    let table_files = async || -> BTreeSet<String> {
        use futures::TryStreamExt;
        let root = lake.location().object_store().unwrap().1.clone().join("spans");
        lake.object_store()
            .list(Some(&root))
            .map_ok(|o| o.location.to_string())
            .try_collect::<BTreeSet<String>>()
            .await
            .unwrap()
            .into_iter()
            .filter(|p| !p.contains("_delta_log"))
            .collect()
    };
    let before = table_files().await;
    let write = lake.start_slice_write(Table::Spans, covering).await.unwrap().unwrap();
    let mut refused = write.writer();
    refused.write(&high.slice(0, 10)).await.unwrap();
    let err = refused.write(&low.slice(0, 10)).await.unwrap_err().to_string();
    assert!(err.contains("not in the lake's order"), "{err}");
    refused.abort().await;
    let write_all = async |parts: &[RecordBatch]| write_all_of(&write, parts).await;
    let wider = vec![write_all(&[low.slice(0, 1_000), low.slice(1_000, 1_500)]).await];
    assert!(table_files().await.len() > before.len(), "files were written");
    let err = lake.commit_slice(&write, wider, "date >= DATE '2026-11-01'").await.unwrap_err().to_string();
    assert!(err.contains("was not empty"), "{err}");
    assert_eq!(table_files().await, before, "the refused commit's files are deleted");
    assert_eq!(count_and_sum(&lake).await, after_restatement);
    let files =
        vec![write_all(&[low.slice(0, 1_000), low.slice(1_000, 1_500)]).await, write_all(&[high]).await];
    let commit = lake.commit_slice(&write, files, covering).await.unwrap().unwrap();
    assert_eq!(commit.rows, 4_000);
    let slice_sum: i64 = (0..4_000_i64).map(|i| i * 1000 + 11).sum();
    let after_slice = (after_restatement.0 + 4_000, after_restatement.1 + slice_sum, 3);
    assert_eq!(count_and_sum(&lake).await, after_slice);
    assert_files_sorted(&lake).await;

    // Another writer commits rows of a slice while it is being written: the slice's commit is a
    // conflict, and its files are deleted; the other writer's rows stay.
    let covering = "date IN (DATE '2026-11-25', DATE '2026-11-26')";
    let write = lake.start_slice_write(Table::Spans, covering).await.unwrap().unwrap();
    let rows =
        tenantscope_schemas::lake::prepare(Table::Spans, &[day(spans(1_000, 13), 24)]).unwrap().unwrap();
    let before = table_files().await;
    let files = vec![write_all_of(&write, &rows).await];
    let slice_files: BTreeSet<String> = table_files().await.difference(&before).cloned().collect();
    assert_eq!(slice_files.len(), 2, "one file a day: {slice_files:?}");
    let other = Lake::open_url(url).await.unwrap();
    other.append(Table::Spans, &[day(spans(100, 17), 24)]).await.unwrap();
    let with_other = table_files().await;
    let err = lake.commit_slice(&write, files, covering).await.unwrap_err().to_string();
    assert!(err.contains("concurrent transactions added new data"), "{err}");
    let kept: BTreeSet<String> = with_other.difference(&slice_files).cloned().collect();
    assert_eq!(table_files().await, kept, "the slice's files are deleted, the other writer's kept");
    let other_sum: i64 = (0..100_i64).map(|i| i * 1000 + 17).sum();
    let after_restatement = (after_slice.0 + 100, after_slice.1 + other_sum, 3);
    assert_eq!(count_and_sum(&lake).await, after_restatement);

    // Bad input is an error that names the column, and writes nothing.
    let bad = spans(10, 0).project(&[0, 1, 2, 4, 5]).unwrap(); // no span_id
    let err = lake.append(Table::Spans, &[bad]).await.unwrap_err().to_string();
    assert_eq!(err, "table spans: required column \"span_id\" is missing");
    assert_eq!(count_and_sum(&lake).await, after_restatement);
}

/// `parts` written in order by one writer of `write`.
async fn write_all_of(
    write: &tenantscope_schemas::lake::SliceWrite,
    parts: &[RecordBatch],
) -> tenantscope_schemas::lake::WrittenFiles {
    let mut writer = write.writer();
    for part in parts {
        writer.write(part).await.unwrap();
    }
    writer.close().await.unwrap()
}

/// An append larger than a row group is sorted in runs and written by one writer per core:
/// every row arrives once, every file is still sorted, and with more than one core the first day
/// (more rows than one writer's share) is written by two writers, as two files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_append_is_sorted_in_runs_and_written_on_every_core() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open_url(dir.path().join("lake").to_str().unwrap()).await.unwrap();
    // 300,000 rows over two days, half each, in three inputs (the gather reads several
    // batches' runs); then 30,000 more of the first day only.
    let mut inputs = vec![spans(100_000, 1), spans(100_000, 2), spans(100_000, 3)];
    let extra = spans(60_000, 4);
    let first_day = (T0 / DAY_US) as i32;
    let dates = extra.column_by_name(DATE).unwrap().as_any().downcast_ref::<Date32Array>().unwrap();
    let on_first_day: arrow::array::BooleanArray = dates.iter().map(|d| Some(d == Some(first_day))).collect();
    inputs.push(arrow::compute::filter_record_batch(&extra, &on_first_day).unwrap());
    let rows: usize = inputs.iter().map(RecordBatch::num_rows).sum();
    let sum: i64 = inputs
        .iter()
        .flat_map(|b| {
            b.column_by_name(DURATION_NS)
                .unwrap()
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .sum();
    assert_eq!(lake.append(Table::Spans, &inputs).await.unwrap().unwrap().rows, rows);
    assert_eq!(count_and_sum(&lake).await, (rows as i64, sum, 3));
    let files = assert_files_sorted(&lake).await;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let first_day_files = files.iter().filter(|f| f.contains("date=2026-11-01")).count();
    assert_eq!(first_day_files, if cores > 1 { 2 } else { 1 }, "{files:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_folder() {
    let dir = tempfile::tempdir().unwrap();
    conformance(dir.path().join("lake").to_str().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_url() {
    let dir = tempfile::tempdir().unwrap();
    conformance(&format!("file://{}/lake", dir.path().display())).await;
}

/// Against the S3-compatible server the test command starts (moto on 127.0.0.1; see
/// `tenantscope_schemas::testing::s3_bucket`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_compatible_server() {
    let Some(bucket) = tenantscope_schemas::testing::s3_bucket() else { return };
    let prefix = format!("conformance-{}", std::process::id());
    conformance(&format!("s3://{bucket}/{prefix}")).await;
}

#[tokio::test]
async fn missing_bucket_is_a_clear_error() {
    let Ok(_) = std::env::var("TENANTSCOPE_TEST_S3_BUCKET") else { return };
    let err = Lake::open_url("s3://no-such-bucket-tenantscope/x").await.unwrap_err().to_string();
    assert!(err.starts_with("cannot reach the lake at s3://no-such-bucket-tenantscope/x/"), "{err}");
}

/// A table written before this version added nullable columns (here `metrics` before
/// `exp_zero_threshold` and `exemplars`): opening it adds them (a metadata-only commit, in the
/// order this version writes), appends go on, and the old rows read them as NULL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_table_gets_the_columns_added_since() {
    use arrow::{
        array::{Float64Array, new_null_array},
        datatypes::SchemaRef,
    };
    use deltalake::kernel::{StructType, engine::arrow_conversion::TryIntoKernel};

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lake");
    let added = ["exp_zero_threshold", "exemplars"];
    let full = Table::Metrics.schema();
    let old: SchemaRef = Arc::new(Schema::new(
        full.fields().iter().filter(|f| !added.contains(&f.name().as_str())).cloned().collect::<Vec<_>>(),
    ));
    let row = |schema: &SchemaRef, name: &str, threshold: Option<f64>| {
        let columns: Vec<Arc<dyn Array>> = schema
            .fields()
            .iter()
            .map(|f| -> Arc<dyn Array> {
                match f.name().as_str() {
                    TIME => Arc::new(TimestampMicrosecondArray::from(vec![T0]).with_timezone("UTC")),
                    METRIC_NAME => Arc::new(StringArray::from(vec![name])),
                    METRIC_TYPE => Arc::new(StringArray::from(vec!["gauge"])),
                    DATE => Arc::new(Date32Array::from(vec![i32::try_from(T0 / DAY_US).unwrap()])),
                    "exp_zero_threshold" => Arc::new(Float64Array::from(vec![threshold])),
                    _ => new_null_array(f.data_type(), 1),
                }
            })
            .collect();
        RecordBatch::try_new(Arc::clone(schema), columns).unwrap()
    };
    // The table as the version before wrote it.
    std::fs::create_dir_all(root.join("metrics")).unwrap();
    let url = url::Url::from_directory_path(root.join("metrics")).unwrap();
    let kernel: StructType = old.as_ref().try_into_kernel().unwrap();
    let dt = deltalake::DeltaTableBuilder::from_url(url)
        .unwrap()
        .build()
        .unwrap()
        .create()
        .with_columns(kernel.fields().cloned())
        .with_partition_columns([DATE])
        .await
        .unwrap();
    dt.write(vec![row(&old, "before", None)]).await.unwrap();

    let lake = Lake::open_url(root.to_str().unwrap()).await.unwrap();
    lake.append(Table::Metrics, &[row(&full, "after", Some(0.5))]).await.unwrap();
    let batches = lake
        .query(
            &[Table::Metrics],
            "SELECT metric_name, exp_zero_threshold, exemplars IS NULL FROM metrics ORDER BY metric_name",
        )
        .await
        .unwrap();
    let all = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let name = arrow::compute::cast(all.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
    let name = name.as_any().downcast_ref::<StringArray>().unwrap();
    let threshold = all.column(1).as_any().downcast_ref::<Float64Array>().unwrap();
    let no_exemplars = all.column(2).as_any().downcast_ref::<arrow::array::BooleanArray>().unwrap();
    assert_eq!(all.num_rows(), 2);
    assert_eq!((name.value(0), threshold.value(0), no_exemplars.value(0)), ("after", 0.5, true));
    assert_eq!((name.value(1), threshold.is_null(1), no_exemplars.value(1)), ("before", true, true));
    // The table's columns are now this version's, in its order.
    let dt = lake.table(Table::Metrics).await.unwrap();
    let names: Vec<String> = dt.snapshot().unwrap().schema().fields().map(|f| f.name().to_string()).collect();
    assert_eq!(names, full.fields().iter().map(|f| f.name().to_string()).collect::<Vec<_>>());
}
