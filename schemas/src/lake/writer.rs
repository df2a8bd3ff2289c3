//! Turning Arrow batches into the files the lake wants: columns in the table's order and types,
//! rows sorted by tenant then time, zstd, page-level statistics and a bloom filter on tenant_id.

use std::{cmp::Ordering, sync::Arc};

use arrow::{
    array::{ArrayRef, RecordBatch, UInt32Array, make_comparator, new_null_array},
    compute::{cast, interleave_record_batch, take_record_batch},
    datatypes::{DataType, SchemaRef},
};
use deltalake::parquet::{
    arrow::ArrowSchemaConverter,
    basic::{Compression, ZstdLevel},
    file::properties::{EnabledStatistics, WriterProperties},
    schema::types::ColumnPath,
};

use super::{
    error::{LakeError, Result},
    order,
};
use crate::{columns::TENANT_ID, tables::Table};

/// Rows per row group: small enough that a tenant filter skips most of a file, large enough for
/// good compression.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;
/// Rows per data page (the granularity of the page index).
pub const PAGE_ROWS: usize = 16 * 1024;
/// Target size of a data file written by one append (bounded file sizes).
pub const TARGET_FILE_BYTES: u64 = 128 * 1024 * 1024;

/// Parquet settings of every file the lake writes.
pub fn writer_properties(table: Table) -> WriterProperties {
    let mut builder = WriterProperties::builder()
        // zstd level 1: as small as level 3 on this data at 40% less CPU (DEPENDENCIES.md).
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_created_by(format!("tenantscope {}", env!("CARGO_PKG_VERSION")));
    if table.schema().field_with_name(TENANT_ID).is_ok() {
        builder = builder
            .set_column_bloom_filter_enabled(ColumnPath::from(TENANT_ID), true)
            .set_column_bloom_filter_max_ndv(ColumnPath::from(TENANT_ID), 10_000);
    }
    for name in table.unique_columns() {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(*name), false);
    }
    for path in unindexed_text(table) {
        // A telemetry attribute map's values mix every key's values in one Parquet column (ids,
        // paths, addresses beside a few repeated words): the dictionary fills up and falls back
        // to plain mid-chunk after a hash lookup per value. Plain values under zstd: OTLP ingest
        // 6% more spans per CPU-second for 5% larger files (benches/RESULTS.md). Keys keep
        // theirs, and so do billing tags (a few values each: team, environment).
        if matches!(table, Table::Spans | Table::Logs | Table::Metrics) && is_map_value(&path) {
            builder = builder.set_column_dictionary_enabled(path.clone(), false);
        }
        builder = builder.set_column_statistics_enabled(path, EnabledStatistics::None);
    }
    builder.build()
}

/// Whether `leaf` is the value column of a `map<string, string>` (`key_value.value`, the entry
/// names [`crate::types::string_map`] gives), at the top level or inside a list of structs, as
/// events' and links' attributes.
fn is_map_value(leaf: &ColumnPath) -> bool {
    leaf.parts().ends_with(&["key_value".to_string(), "value".to_string()])
}

/// The Parquet leaf columns of `table` written without statistics: its
/// [`Table::unindexed_columns`], and every leaf of a map, list or struct column.
fn unindexed_text(table: Table) -> Vec<ColumnPath> {
    let schema = table.schema();
    let Ok(parquet) = ArrowSchemaConverter::new().convert(&schema) else { return Vec::new() };
    let unindexed = table.unindexed_columns();
    parquet
        .columns()
        .iter()
        .filter(|leaf| {
            let root = leaf.path().parts()[0].as_str();
            unindexed.contains(&root)
                || schema.field_with_name(root).is_ok_and(|f| {
                    matches!(
                        f.data_type(),
                        DataType::Map(..) | DataType::List(_) | DataType::LargeList(_) | DataType::Struct(_)
                    )
                })
        })
        .map(|leaf| leaf.path().clone())
        .collect()
}

/// Conforms batches to the table's schema and sorts their rows by the table's partition
/// columns, then its sort columns, returned as batches of at most [`ROW_GROUP_ROWS`] rows.
///
/// Columns are matched by name. A missing nullable column becomes NULLs; a missing required
/// column, an unknown column, a value that cannot be cast, or a NULL in a required column is an
/// error naming the column.
///
/// Only the key columns are concatenated to sort; the rows are then gathered from the input
/// batches once (`interleave`), a row group at a time on every core: a million-row billing import
/// spent longer concatenating and reordering 60 columns on one thread than parsing them.
pub fn prepare(table: Table, batches: &[RecordBatch]) -> Result<Option<Vec<RecordBatch>>> {
    let schema = table.schema();
    let mut conformed = Vec::with_capacity(batches.len());
    for batch in batches.iter().filter(|b| b.num_rows() > 0) {
        conformed.push(conform(table, &schema, batch)?);
    }
    if conformed.is_empty() {
        return Ok(None);
    }
    let arrow_err = |source| LakeError::Arrow { table, source };
    let keys = order_keys(table, &schema);
    let total: usize = conformed.iter().map(RecordBatch::num_rows).sum();
    if keys.is_empty() || in_order(&conformed, &keys).map_err(arrow_err)? {
        // Nothing to reorder (a billing import converts rows in the lake's order): only batches
        // larger than a row group are cut, zero-copy.
        return Ok(Some(
            conformed
                .iter()
                .flat_map(|b| {
                    (0..b.num_rows())
                        .step_by(ROW_GROUP_ROWS)
                        .map(move |o| b.slice(o, ROW_GROUP_ROWS.min(b.num_rows() - o)))
                })
                .collect(),
        ));
    }
    if total > ROW_GROUP_ROWS {
        conformed = sort_runs(table, conformed, &keys)?;
    }
    // (batch, row) of every row, in input order; then in sorted order.
    let mut order: Vec<(usize, usize)> = Vec::with_capacity(total);
    for (b, batch) in conformed.iter().enumerate() {
        order.extend((0..batch.num_rows()).map(|r| (b, r)));
    }
    let positions = order::sorted_positions(&conformed, &keys).map_err(arrow_err)?;
    order = positions.iter().map(|&i| order[i as usize]).collect();
    let sources: Vec<&RecordBatch> = conformed.iter().collect();
    let groups: Vec<&[(usize, usize)]> = order.chunks(ROW_GROUP_ROWS).collect();
    par_map(table, &groups, |g| interleave_record_batch(&sources, g)).map(Some)
}

/// The columns (indexes in `schema`, the table's) rows are ordered by in the lake: the
/// partition columns, then the sort columns.
pub(super) fn order_keys(table: Table, schema: &SchemaRef) -> Vec<usize> {
    let mut keys: Vec<&str> = table.partition_columns().to_vec();
    keys.extend(table.sort_columns().iter().filter(|c| !table.partition_columns().contains(c)));
    keys.iter().filter_map(|name| schema.index_of(name).ok()).collect()
}

/// Whether the rows of `batches`, one after the other, are already in the lake's order by
/// `keys` (one comparison per row: far cheaper than sorting).
pub(super) fn in_order(
    batches: &[RecordBatch],
    keys: &[usize],
) -> std::result::Result<bool, arrow::error::ArrowError> {
    let options = order::LAKE_ORDER;
    let mut previous: Option<&RecordBatch> = None;
    for batch in batches {
        let n = batch.num_rows();
        let comparators = keys
            .iter()
            .map(|&k| make_comparator(batch.column(k).as_ref(), batch.column(k).as_ref(), options))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let greater = |a: usize, b: usize| {
            for cmp in &comparators {
                match cmp(a, b) {
                    Ordering::Equal => continue,
                    other => return other == Ordering::Greater,
                }
            }
            false
        };
        if (1..n).any(|i| greater(i - 1, i)) {
            return Ok(false);
        }
        if let Some(prev) = previous.filter(|_| n > 0) {
            let last = prev.num_rows() - 1;
            for &k in keys {
                let cmp = make_comparator(prev.column(k).as_ref(), batch.column(k).as_ref(), options)?;
                match cmp(last, 0) {
                    Ordering::Equal => continue,
                    Ordering::Greater => return Ok(false),
                    Ordering::Less => break,
                }
            }
        }
        if n > 0 {
            previous = Some(batch);
        }
    }
    Ok(true)
}

/// The cores this process may use (at least 1).
pub(super) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `f` over `items` on every core (scoped threads, items dealt round-robin), results in the
/// items' order.
fn par_map<I: Sync>(
    table: Table,
    items: &[I],
    f: impl Fn(&I) -> std::result::Result<RecordBatch, arrow::error::ArrowError> + Sync,
) -> Result<Vec<RecordBatch>> {
    let threads = cores().min(items.len()).clamp(1, 8);
    let done: Vec<Vec<(usize, std::result::Result<RecordBatch, arrow::error::ArrowError>)>> =
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let f = &f;
                    scope.spawn(move || {
                        (t..items.len()).step_by(threads).map(|i| (i, f(&items[i]))).collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
        });
    let mut out: Vec<Option<RecordBatch>> = vec![None; items.len()];
    for (i, batch) in done.into_iter().flatten() {
        out[i] = Some(batch.map_err(|source| LakeError::Arrow { table, source })?);
    }
    let out: Vec<RecordBatch> = out.into_iter().flatten().collect();
    if out.len() != items.len() {
        return Err(LakeError::Schema { table, detail: "internal: a thread sorting rows panicked".into() });
    }
    Ok(out)
}

/// Rows per locally sorted run (a few MB: sorted within the CPU's caches).
const RUN_ROWS: usize = 8 * 1024;

/// Cuts the batches into runs of [`RUN_ROWS`] rows and sorts each full run, on every core. The
/// global order of the sorted runs is the same, but gathering it then reads every run front to
/// back (a few hundred sequential streams) instead of jumping across gigabytes: for a
/// million-row import, the gather went from the largest cost of the import to a small one.
/// Shorter runs (OTLP requests of a few hundred rows) are left as they are: the gather's jumps
/// within one stay in the caches, and sorting it first was a copy of every column for nothing
/// (a flush of 400 requests: 300k -> 480k spans per CPU-second, `otlp-load --micro` at 400).
fn sort_runs(table: Table, batches: Vec<RecordBatch>, keys: &[usize]) -> Result<Vec<RecordBatch>> {
    let runs: Vec<RecordBatch> = batches
        .iter()
        .flat_map(|b| {
            (0..b.num_rows()).step_by(RUN_ROWS).map(move |o| b.slice(o, RUN_ROWS.min(b.num_rows() - o)))
        })
        .collect();
    drop(batches);
    let sort_one = |run: &RecordBatch| -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
        if run.num_rows() < RUN_ROWS {
            return Ok(run.clone());
        }
        let indices = UInt32Array::from(order::sorted_positions(std::slice::from_ref(run), keys)?);
        take_record_batch(run, &indices)
    };
    par_map(table, &runs, sort_one)
}

pub(super) fn conform(table: Table, schema: &SchemaRef, batch: &RecordBatch) -> Result<RecordBatch> {
    let input = batch.schema();
    if let Some(extra) = input.fields().iter().find(|f| schema.field_with_name(f.name()).is_err()) {
        return Err(LakeError::Schema { table, detail: format!("unknown column {:?}", extra.name()) });
    }
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let column = match batch.column_by_name(field.name()) {
            Some(col) if col.data_type() == field.data_type() => Arc::clone(col),
            Some(col) => cast(col, field.data_type()).map_err(|e| LakeError::Schema {
                table,
                detail: format!(
                    "column {:?}: cannot store {} as {}: {e}",
                    field.name(),
                    col.data_type(),
                    field.data_type()
                ),
            })?,
            None if field.is_nullable() => new_null_array(field.data_type(), batch.num_rows()),
            None => {
                return Err(LakeError::Schema {
                    table,
                    detail: format!("required column {:?} is missing", field.name()),
                });
            }
        };
        if !field.is_nullable() && column.null_count() > 0 {
            return Err(LakeError::Schema {
                table,
                detail: format!("required column {:?} has {} NULLs", field.name(), column.null_count()),
            });
        }
        columns.push(column);
    }
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(|source| LakeError::Arrow { table, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Date32Array, StringArray, TimestampMicrosecondArray};

    fn usage_batch(tenants: &[Option<&str>], hours: &[i64]) -> RecordBatch {
        let schema = Table::Usage.schema();
        let n = tenants.len();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(TimestampMicrosecondArray::from(hours.to_vec()).with_timezone("UTC")),
                Arc::new(StringArray::from(tenants.to_vec())),
                Arc::new(StringArray::from(vec!["requests"; n])),
                Arc::new(
                    arrow::array::Decimal128Array::from(vec![1_i128; n])
                        .with_precision_and_scale(38, 10)
                        .unwrap(),
                ),
                Arc::new(StringArray::from(vec![None::<&str>; n])),
                Arc::new(Date32Array::from(vec![0; n])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn sorts_by_tenant_then_time_with_nulls_first() {
        let b = usage_batch(&[Some("b"), None, Some("a"), Some("a")], &[5, 9, 7, 3]);
        let out = prepare(Table::Usage, &[b]).unwrap().unwrap();
        assert_eq!(out.len(), 1);
        let out = &out[0];
        let tenants = out.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        let got: Vec<_> = tenants.iter().collect();
        assert_eq!(got, vec![None, Some("a"), Some("a"), Some("b")]);
        let hours = out.column(0).as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap();
        assert_eq!(hours.values().to_vec(), vec![9, 3, 7, 5]);
    }

    #[test]
    fn rows_already_in_order_are_not_copied_and_order_across_batches_counts() {
        let a = usage_batch(&[None, Some("a"), Some("a")], &[9, 1, 2]);
        let b = usage_batch(&[Some("a"), Some("b")], &[2, 0]);
        let out = prepare(Table::Usage, &[a.clone(), b.clone()]).unwrap().unwrap();
        assert_eq!(out, vec![a.clone(), b.clone()]);
        let buffer = |batch: &RecordBatch| batch.column(1).to_data().buffers()[1].as_ptr();
        assert_eq!(buffer(&out[0]), buffer(&a), "rows in order are passed on, not gathered");

        // Each batch in order, but not the two together: sorted.
        let c = usage_batch(&[Some("a")], &[1]);
        let out = prepare(Table::Usage, &[b, c]).unwrap().unwrap();
        let all = arrow::compute::concat_batches(&out[0].schema(), &out).unwrap();
        let tenants = all.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        let hours = all.column(0).as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap();
        let got: Vec<_> = (0..all.num_rows()).map(|i| (tenants.value(i), hours.value(i))).collect();
        assert_eq!(got, vec![("a", 1), ("a", 2), ("b", 0)]);
    }

    #[test]
    fn many_batches_come_out_sorted_in_row_groups_partition_first() {
        // Three inputs, 300k rows over two dates and 7 tenants, in a scrambled order.
        let mut inputs = Vec::new();
        for part in 0..3_i64 {
            let n = 100_000;
            let names = ["t0", "t1", "t2", "t3", "t4", "t5", "t6"];
            let tenants: Vec<Option<&str>> =
                (0..n).map(|i| Some(names[((i * 7919 + part) % 7) as usize])).collect();
            let hours: Vec<i64> = (0..n).map(|i| (i * 104_729 + part * 13) % 1_000_003).collect();
            let b = usage_batch(&tenants, &hours);
            let dates: Vec<i32> = (0..n).map(|i| ((i + part) % 2) as i32).collect();
            let mut cols = b.columns().to_vec();
            cols[5] = Arc::new(Date32Array::from(dates));
            inputs.push(RecordBatch::try_new(b.schema(), cols).unwrap());
        }
        let out = prepare(Table::Usage, &inputs).unwrap().unwrap();
        assert!(out.iter().all(|b| b.num_rows() <= ROW_GROUP_ROWS));
        assert_eq!(out.iter().map(RecordBatch::num_rows).sum::<usize>(), 300_000);
        let all = arrow::compute::concat_batches(&out[0].schema(), &out).unwrap();
        let date = all.column(5).as_any().downcast_ref::<Date32Array>().unwrap();
        let tenant = all.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        let hour = all.column(0).as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap();
        let key = |i: usize| (date.value(i), tenant.value(i).to_string(), hour.value(i));
        assert!((1..all.num_rows()).all(|i| key(i - 1) <= key(i)), "rows out of order");
        // Nothing lost or duplicated: the multiset of keys is the input's.
        let mut expect: Vec<_> = inputs
            .iter()
            .flat_map(|b| {
                let d = b.column(5).as_any().downcast_ref::<Date32Array>().unwrap().clone();
                let t = b.column(1).as_any().downcast_ref::<StringArray>().unwrap().clone();
                let h = b.column(0).as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap().clone();
                (0..b.num_rows())
                    .map(move |i| (d.value(i), t.value(i).to_string(), h.value(i)))
                    .collect::<Vec<_>>()
            })
            .collect();
        expect.sort();
        let got: Vec<_> = (0..all.num_rows()).map(key).collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn statistics_are_written_where_a_filter_can_use_them() {
        let path = |parts: &[&str]| ColumnPath::new(parts.iter().map(|p| p.to_string()).collect());
        for table in Table::ALL {
            let props = writer_properties(table);
            let schema = table.schema();
            for c in table.stats_columns() {
                assert!(!table.unindexed_columns().contains(&c), "{table}.{c} is both");
                assert_eq!(props.statistics_enabled(&path(&[c])), EnabledStatistics::Page, "{table}.{c}");
            }
            for c in table.unindexed_columns() {
                assert!(schema.field_with_name(c).is_ok(), "{table} has no column {c}");
                assert_eq!(props.statistics_enabled(&path(&[c])), EnabledStatistics::None, "{table}.{c}");
            }
        }
        let billing = writer_properties(Table::Billing);
        for leaf in [["tags", "key_value", "key"], ["x_extra", "key_value", "value"]] {
            assert_eq!(billing.statistics_enabled(&path(&leaf)), EnabledStatistics::None, "{leaf:?}");
        }
        for kept in ["billed_cost", "provider_name", "region_id", "service_category", "tenant_id"] {
            assert_eq!(billing.statistics_enabled(&path(&[kept])), EnabledStatistics::Page, "{kept}");
        }
        let spans = writer_properties(Table::Spans);
        assert_eq!(
            spans.statistics_enabled(&path(&["attributes", "key_value", "value"])),
            EnabledStatistics::None
        );
        assert_eq!(spans.statistics_enabled(&path(&["span_id"])), EnabledStatistics::None);
        assert_eq!(spans.statistics_enabled(&path(&["name"])), EnabledStatistics::Page);
    }

    #[test]
    fn map_values_and_ids_are_plain_and_words_keep_their_dictionary() {
        let path = |parts: &[&str]| ColumnPath::new(parts.iter().map(|p| p.to_string()).collect());
        let spans = writer_properties(Table::Spans);
        for plain in [
            &["attributes", "key_value", "value"][..],
            &["resource_attributes", "key_value", "value"],
            &["events", "list", "element", "attributes", "key_value", "value"],
            &["links", "list", "element", "attributes", "key_value", "value"],
            &["trace_id"],
            &["span_id"],
            &["time"],
            &["end_time"],
            &["duration_ns"],
        ] {
            assert!(!spans.dictionary_enabled(&path(plain)), "{plain:?}");
        }
        for dict in [
            &["attributes", "key_value", "key"][..],
            &["resource_attributes", "key_value", "key"],
            &["name"],
            &["service_name"],
            &["tenant_id"],
        ] {
            assert!(spans.dictionary_enabled(&path(dict)), "{dict:?}");
        }
        let billing = writer_properties(Table::Billing);
        assert!(billing.dictionary_enabled(&path(&["tags", "key_value", "value"])));
        assert!(billing.dictionary_enabled(&path(&["tags", "key_value", "key"])));
        // Billing times repeat (a few periods per file): their dictionary pays.
        assert!(billing.dictionary_enabled(&path(&["charge_period_start"])));
        assert!(!writer_properties(Table::Logs).dictionary_enabled(&path(&["observed_time"])));
    }

    #[test]
    fn missing_required_column_is_named() {
        let b = usage_batch(&[Some("a")], &[1]);
        let b = b.project(&[0, 1, 3, 4, 5]).unwrap(); // drop "meter"
        let err = prepare(Table::Usage, &[b]).unwrap_err().to_string();
        assert_eq!(err, "table usage: required column \"meter\" is missing");
    }
}
