//! Compaction, retention and vacuum while ingest and a reader run: no row twice, none missing,
//! and the final table equals what was acknowledged.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicI64, Ordering},
};

use arrow::array::{Array, Int64Array, RecordBatch};
use deltalake::datafusion::prelude::SessionContext;
use tenantscope_schemas::{CompactOrder, Lake, Table};

use crate::lake_conformance::spans;

/// (rows, distinct rows) of `spans`, read through a fresh handle (a new snapshot).
async fn rows_and_distinct(url: &str) -> (i64, i64) {
    let lake = Lake::open_url(url).await.unwrap();
    let dt = lake.table(Table::Spans).await.unwrap();
    let ctx = SessionContext::new();
    dt.update_datafusion_session(&ctx.state()).unwrap();
    ctx.register_table("spans", dt.table_provider().await.unwrap()).unwrap();
    // duration_ns is i * 1000 + salt: unique per row of the test.
    let b: Vec<RecordBatch> = ctx
        .sql("SELECT count(*), count(DISTINCT duration_ns) FROM spans")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let col = |i: usize| b[0].column(i).as_any().downcast_ref::<Int64Array>().unwrap().value(0);
    (col(0), col(1))
}

/// The Parquet files of `spans` the current version references.
fn walk_parquet(url: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from(url).join("spans")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && !p.ends_with("_delta_log") {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_and_vacuum_under_live_ingest_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap().to_string();
    let lake = Lake::open_url(&url).await.unwrap();
    // Many small commits, as 1-second flushes leave them.
    let acked = Arc::new(AtomicI64::new(0));
    for salt in 0..30 {
        let c = lake.append(Table::Spans, &[spans(40, salt)]).await.unwrap().unwrap();
        acked.fetch_add(c.rows as i64, Ordering::SeqCst);
    }
    let before = lake.files(Table::Spans).await.unwrap();
    assert!(before.files >= 30, "{before:?}");

    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (lake, acked) = (lake.clone(), Arc::clone(&acked));
        tokio::spawn(async move {
            for salt in 30..60 {
                let c = lake.append(Table::Spans, &[spans(40, salt)]).await.unwrap().unwrap();
                acked.fetch_add(c.rows as i64, Ordering::SeqCst);
            }
        })
    };
    let reader = {
        let (url, acked, done) = (url.clone(), Arc::clone(&acked), Arc::clone(&done));
        tokio::spawn(async move {
            let mut reads = 0;
            while !done.load(Ordering::SeqCst) {
                let low = acked.load(Ordering::SeqCst);
                let (rows, distinct) = rows_and_distinct(&url).await;
                let high = acked.load(Ordering::SeqCst);
                assert_eq!(rows, distinct, "a row seen twice");
                assert!(rows >= low && rows <= high, "{rows} rows, acknowledged {low}..{high}");
                reads += 1;
            }
            reads
        })
    };
    let report = lake.compact(Table::Spans, CompactOrder::Sort).await.unwrap();
    assert!(report.files_removed > 0 && report.version.is_some(), "{report:?}");
    let merged = lake.compact(Table::Spans, CompactOrder::Merge).await.unwrap();
    writer.await.unwrap();
    // Vacuum after a 1-second safety window: the reader reloads its snapshot far more often.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let deleted = lake.vacuum(Table::Spans, std::time::Duration::from_secs(1)).await.unwrap();
    assert!(
        deleted as u64 >= report.files_removed + merged.files_removed,
        "deleted {deleted}, compactions replaced {} and {}",
        report.files_removed,
        merged.files_removed
    );
    lake.checkpoint(Table::Spans).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    done.store(true, Ordering::SeqCst);
    let reads = reader.await.unwrap();
    assert!(reads > 3, "the reader ran during maintenance ({reads} reads)");

    let (rows, distinct) = rows_and_distinct(&url).await;
    assert_eq!(
        (rows, distinct),
        (acked.load(Ordering::SeqCst), rows),
        "the lake equals what was acknowledged"
    );
    let after = lake.files(Table::Spans).await.unwrap();
    assert!(after.files < before.files, "{before:?} -> {after:?}");
    assert_eq!(rows, 60 * 40);

    // Sorted compaction once more (one more append first, so that each day has several files),
    // with the writer and reader done, and vacuum after 0 s: one file per day, its rows in
    // tenant and time order.
    lake.append(Table::Spans, &[spans(40, 60)]).await.unwrap();
    let rows = rows + 40;
    let sorted = lake.compact(Table::Spans, CompactOrder::Sort).await.unwrap();
    assert_eq!(sorted.after.files, 2, "{sorted:?}");
    lake.vacuum(Table::Spans, std::time::Duration::ZERO).await.unwrap();
    let files = walk_parquet(&url);
    assert_eq!(files.len(), 2, "{files:?}");
    for path in files {
        let reader = deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&path).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        let mut last: Option<(Option<String>, i64)> = None;
        for b in reader {
            let b = b.unwrap();
            let tenant = arrow::compute::cast(
                b.column_by_name("tenant_id").unwrap(),
                &arrow::datatypes::DataType::Utf8,
            )
            .unwrap();
            let tenant = tenant.as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
            let time = b.column_by_name("time").unwrap();
            let time = time.as_any().downcast_ref::<arrow::array::TimestampMicrosecondArray>().unwrap();
            for i in 0..b.num_rows() {
                let key = ((!tenant.is_null(i)).then(|| tenant.value(i).to_string()), time.value(i));
                if let Some(prev) = &last {
                    assert!(*prev <= key, "{path:?}: {prev:?} before {key:?}");
                }
                last = Some(key);
            }
        }
    }
    assert_eq!(rows_and_distinct(&url).await, (rows, rows));
    // Z-ordering rewrites the rows, keeps them all.
    let z = lake.compact(Table::Spans, CompactOrder::ZOrder).await.unwrap();
    assert!(z.after.files <= z.before.files, "{z:?}");
    assert_eq!(rows_and_distinct(&url).await, (rows, rows));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_exactly_the_expired_days() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open_url(dir.path().to_str().unwrap()).await.unwrap();
    // spans() covers 2026-11-01 and 2026-11-02.
    lake.append(Table::Spans, &[spans(100, 1)]).await.unwrap();
    let day = |d: u32| chrono::NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
    assert_eq!(lake.expire(Table::Spans, day(1)).await.unwrap(), vec![], "nothing before the 1st");
    let removed = lake.expire(Table::Spans, day(2)).await.unwrap();
    assert_eq!(removed, vec![day(1)]);
    let rows = lake
        .query(&[Table::Spans], "SELECT count(*), min(date) = DATE '2026-11-02' FROM spans")
        .await
        .unwrap();
    let n = rows[0].column(0).as_any().downcast_ref::<Int64Array>().unwrap().value(0);
    assert_eq!(n, 50, "the second day's rows are all there");
    let e = lake.expire(Table::Billing, day(2)).await.unwrap_err();
    assert!(e.to_string().contains("partitioned by day"), "{e}");
}
