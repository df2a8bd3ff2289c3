//! Rows a grouping without aggregates (`SELECT DISTINCT`, `count(DISTINCT x) ... GROUP BY y`)
//! would throw away, dropped before it by the identity of their values.
//!
//! The Parquet reader turns a dictionary-encoded string column into string views that point into
//! the dictionary page, which it shares between every batch of the row group: equal strings come
//! out as views of the same address. DataFusion's grouping hashes and compares the strings
//! themselves: for `count(DISTINCT resource_id) GROUP BY tenant_id` over 1M billing lines, two
//! thirds of the query's CPU (hashing 18-byte ids, then `memcmp` against the group found).
//!
//! [`DistinctPrefilter`] puts a [`DistinctPrefilterExec`] under every aggregation that reads raw
//! rows (`Partial`, `Single`, `SinglePartitioned`) and has no aggregate functions, only one to
//! four group columns of string view, integer, date, timestamp or boolean type. It runs after
//! [`crate::few_groups::FewGroups`], which takes the partial ones it can whole (they are no
//! longer `AggregateExec`s then): what is left here is mostly one-phase aggregation (one
//! partition) and partial ones with a limit or a sorted input. It gives each
//! value a small id by its identity (`Interner`): a long string by where it starts in its buffer
//! (one array lookup, no hashing: a dictionary page's strings lie one after another), a short
//! string by its 16-byte view, any other value by its bits. It passes on the first row of each
//! tuple of ids and drops the rows whose tuple it has passed before. That is always safe: equal
//! ids are equal values, and a grouping without aggregates keeps one row per key, whichever.
//! Equal values with different ids (plain-encoded pages, another row group's dictionary) all
//! pass, and the grouping above merges them as before.
//!
//! An address is an identity only while its memory cannot be freed and reused for other bytes:
//! the operator holds every data buffer whose addresses it has given ids to, until it forgets
//! them all together. It forgets (and starts again) past [`MAX_HELD_BYTES`] of buffers and slot
//! tables or [`MAX_KEYS`] keys, and it stops filtering for good when it drops too few rows to
//! pay ([`PROBE_ROWS`]) or when the session's memory pool refuses what it holds: it reserves
//! its buffers, slot tables and keys there, as DataFusion's own operators do, so that a query
//! under a memory limit counts it, and gives way to the grouping above rather than fail.
//!
//! Written by hand: DataFusion (55) has no pre-aggregation by value identity, and its grouping
//! (`GroupValues`) cannot be replaced from outside.

use std::{collections::HashMap, fmt, sync::Arc};

use arrow::{
    array::{Array, ArrayRef, AsArray, BooleanArray, ByteView, RecordBatch},
    buffer::Buffer,
    compute::filter_record_batch,
    datatypes::DataType,
};
use datafusion::{
    common::{
        Result,
        config::ConfigOptions,
        tree_node::{Transformed, TreeNode, TreeNodeRecursion},
    },
    execution::{
        TaskContext,
        memory_pool::{MemoryConsumer, MemoryReservation},
    },
    physical_expr::PhysicalExpr,
    physical_optimizer::PhysicalOptimizerRule,
    physical_plan::{
        DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
        aggregates::{AggregateExec, AggregateMode},
        execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions, apply_expression_roots},
        expressions::Column,
        metrics::{BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, RecordOutput},
        stream::RecordBatchStreamAdapter,
    },
};
use futures::StreamExt;
use hashbrown::HashTable;

/// Bytes of input buffers held (so that their addresses stay identities) and of their slot
/// tables, past which the operator forgets what it has seen and starts again.
const MAX_HELD_BYTES: usize = 32 << 20;

/// Identities remembered at most before the operator forgets them all and starts again.
const MAX_KEYS: usize = 1 << 18;

/// After this many input rows, the operator keeps filtering only if it dropped at least half of
/// them; otherwise it passes every batch on untouched from then on.
const PROBE_ROWS: usize = 32_768;

/// Puts a [`DistinctPrefilterExec`] under each aggregation it can help (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct DistinctPrefilter;

impl PhysicalOptimizerRule for DistinctPrefilter {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        rewrite_aggregations(plan, |agg, node| {
            let raw_rows = matches!(
                agg.mode(),
                AggregateMode::Partial | AggregateMode::Single | AggregateMode::SinglePartitioned
            );
            let input = Arc::clone(agg.input());
            if !raw_rows
                || !agg.aggr_expr().is_empty()
                || !agg.group_expr().is_single()
                || !(1..=MAX_COLUMNS).contains(&agg.group_expr().expr().len())
                || input.downcast_ref::<DistinctPrefilterExec>().is_some()
            {
                return Ok(None);
            }
            let schema = input.schema();
            let keys: Option<Vec<_>> = agg
                .group_expr()
                .expr()
                .iter()
                .map(|(expr, _)| {
                    let column = expr.downcast_ref::<Column>()?;
                    has_identity(schema.field(column.index()).data_type()).then(|| Arc::clone(expr))
                })
                .collect();
            let Some(keys) = keys else {
                return Ok(None);
            };
            let filtered = Arc::new(DistinctPrefilterExec::new(input, keys)) as Arc<dyn ExecutionPlan>;
            let node = Arc::clone(node).replace_children(
                vec![filtered],
                ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep),
            )?;
            Ok(Some(node))
        })
    }

    fn name(&self) -> &str {
        "distinct_prefilter"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `plan` rewritten bottom-up: each `AggregateExec` (given with its node) that `replace` gives
/// a new plan for is replaced by it (the physical optimizer rules of this crate).
pub(crate) fn rewrite_aggregations(
    plan: Arc<dyn ExecutionPlan>,
    mut replace: impl FnMut(&AggregateExec, &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let Some(agg) = node.downcast_ref::<AggregateExec>() else {
            return Ok(Transformed::no(node));
        };
        Ok(match replace(agg, &node)? {
            Some(new) => Transformed::new(new, true, TreeNodeRecursion::Continue),
            None => Transformed::no(node),
        })
    })
    .map(|t| t.data)
}

/// Whether values of this type have an identity the operator can compute.
pub(crate) fn has_identity(data_type: &DataType) -> bool {
    match data_type {
        DataType::Utf8View | DataType::BinaryView | DataType::Boolean => true,
        t => t.is_primitive() && t.primitive_width().is_some_and(|w| w <= 8),
    }
}

/// Drops the rows whose group key it has already passed on, by identity (module docs).
#[derive(Debug)]
pub(crate) struct DistinctPrefilterExec {
    input: Arc<dyn ExecutionPlan>,
    /// Columns of the input (`Column` expressions).
    keys: Vec<Arc<dyn PhysicalExpr>>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl DistinctPrefilterExec {
    fn new(input: Arc<dyn ExecutionPlan>, keys: Vec<Arc<dyn PhysicalExpr>>) -> Self {
        // Rows are only dropped: order, partitioning and equivalences stay the input's.
        let properties = Arc::new(PlanProperties::clone(input.properties()));
        Self { input, keys, properties, metrics: ExecutionPlanMetricsSet::new() }
    }

    fn key_indices(&self) -> Vec<usize> {
        self.keys.iter().filter_map(|k| k.downcast_ref::<Column>().map(Column::index)).collect()
    }
}

impl DisplayAs for DistinctPrefilterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<String> = self.keys.iter().map(|k| k.to_string()).collect();
        write!(f, "DistinctPrefilterExec: keys=[{}]", keys.join(", "))
    }
}

impl ExecutionPlan for DistinctPrefilterExec {
    fn name(&self) -> &str {
        "DistinctPrefilterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        apply_expression_roots(&self.keys, f)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return datafusion::common::internal_err!(
                "DistinctPrefilterExec has one input, given {}",
                children.len()
            );
        }
        Ok(Arc::new(Self::new(children.swap_remove(0), self.keys.clone())))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let reservation = MemoryConsumer::new(format!("DistinctPrefilterExec[{partition}]"))
            .register(context.memory_pool());
        let input = self.input.execute(partition, context)?;
        let schema = input.schema();
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let dropped = MetricBuilder::new(&self.metrics).counter("dropped_rows", partition);
        let mut filter = Prefilter::new(self.key_indices(), dropped, reservation);
        let stream = input.map(move |batch| {
            let batch = batch?;
            let _timer = baseline.elapsed_compute().timer();
            let out = filter.apply(batch)?;
            Ok(out.record_output(&baseline))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// One partition's state.
struct Prefilter {
    keys: Vec<usize>,
    /// `None` once filtering has not paid.
    seen: Option<Seen>,
    rows_in: usize,
    rows_out: usize,
    dropped: Count,
    /// Per key column, for the batch at hand: the ids of its values.
    ids: Vec<Vec<u32>>,
    /// What `seen` and `ids` hold, in the session's memory pool (freed when it goes).
    reservation: MemoryReservation,
}

/// Group columns the operator handles at most (their ids pack into a `u128`).
const MAX_COLUMNS: usize = 4;

/// The keys passed on: per key column an [`Interner`], and the packed ids of each key.
struct Seen {
    columns: Vec<Interner>,
    keys: HashTable<u128>,
}

impl Seen {
    fn new(width: usize) -> Self {
        Self { columns: (0..width).map(|_| Interner::default()).collect(), keys: HashTable::new() }
    }

    /// Bytes held: buffers kept for their addresses, slot tables, identities and keys.
    fn size(&self) -> usize {
        let keys = self.keys.capacity() * (size_of::<u128>() + 1);
        keys + self.columns.iter().map(Interner::size).sum::<usize>()
    }

    fn too_big(&self) -> bool {
        self.keys.len() > MAX_KEYS
            || self.columns.iter().map(|c| c.held_bytes).sum::<usize>() > MAX_HELD_BYTES
            || self.columns.iter().any(|c| c.values.len() > MAX_KEYS)
    }
}

/// Long strings are at least this long, so two that do not overlap start in different
/// `offset / SLOT_BYTES` steps of their buffer.
const SLOT_BYTES: u32 = 13;

/// The id of the long string whose view starts in one `SLOT_BYTES` step of a buffer.
#[derive(Clone, Copy, Default)]
struct Slot {
    offset: u32,
    length: u32,
    /// 0: free.
    id: u32,
}

/// Small ids for the values of one key column, by identity: equal ids are equal values. 0 is
/// NULL.
#[derive(Default)]
struct Interner {
    /// Long strings: per buffer (by address, held so that the address stays this buffer's), the
    /// slot of each `SLOT_BYTES` step. Dictionary pages keep their strings one after another, so
    /// each string has a slot of its own; a view that finds its slot taken by another goes to
    /// `values`.
    buffers: HashMap<usize, usize>,
    tables: Vec<(Buffer, Vec<Slot>)>,
    held_bytes: usize,
    /// Any other identity (short strings as their view, values, long strings as address and
    /// length) and its id.
    values: HashTable<(u128, u32)>,
    /// The last identity looked up in `values` (sorted columns repeat it row after row).
    last: Option<(u128, u32)>,
    next: u32,
}

impl Interner {
    /// Bytes held (see [`Seen::size`]).
    fn size(&self) -> usize {
        self.held_bytes
            + self.buffers.capacity() * (2 * size_of::<usize>() + 1)
            + self.tables.capacity() * size_of::<(Buffer, Vec<Slot>)>()
            + self.values.capacity() * (size_of::<(u128, u32)>() + 1)
    }

    fn id(&mut self) -> u32 {
        self.next += 1;
        self.next
    }

    fn value(&mut self, identity: u128) -> u32 {
        if let Some((v, id)) = self.last
            && v == identity
        {
            return id;
        }
        let hash = hash_u128(identity);
        let id = match self.values.find(hash, |(v, _)| *v == identity) {
            Some(&(_, id)) => id,
            None => {
                let id = self.id();
                self.values.insert_unique(hash, (identity, id), |(v, _)| hash_u128(*v));
                id
            }
        };
        self.last = Some((identity, id));
        id
    }

    /// The table of each of these buffers, made (and the buffer held) on first sight.
    fn tables_of(&mut self, buffers: &[Buffer]) -> Vec<usize> {
        buffers
            .iter()
            .map(|b| {
                *self.buffers.entry(b.as_ptr() as usize).or_insert_with(|| {
                    self.held_bytes +=
                        b.capacity().max(b.len()) + b.len() / SLOT_BYTES as usize * size_of::<Slot>();
                    self.tables.push((b.clone(), vec![Slot::default(); b.len() / SLOT_BYTES as usize + 1]));
                    self.tables.len() - 1
                })
            })
            .collect()
    }

    /// The id of each value of `array` (has_identity), into `out`.
    fn ids(&mut self, array: &ArrayRef, out: &mut Vec<u32>) {
        let nulls = array.logical_nulls();
        let valid = |i: usize| nulls.as_ref().is_none_or(|n| n.is_valid(i));
        out.clear();
        out.reserve(array.len());
        match identities(array) {
            Some(Identities::Views { views, buffers }) => {
                let tables = self.tables_of(buffers);
                for (i, &view) in views.iter().enumerate() {
                    let id = if !valid(i) {
                        0
                    } else if (view as u32) <= 12 {
                        self.value(view)
                    } else {
                        let v = ByteView::from(view);
                        let table = &mut self.tables[tables[v.buffer_index as usize]].1;
                        let slot = &mut table[(v.offset / SLOT_BYTES) as usize];
                        if slot.id != 0 && slot.offset == v.offset && slot.length == v.length {
                            slot.id
                        } else if slot.id == 0 {
                            self.next += 1;
                            *slot = Slot { offset: v.offset, length: v.length, id: self.next };
                            self.next
                        } else {
                            let address =
                                buffers[v.buffer_index as usize].as_ptr() as u64 + u64::from(v.offset);
                            self.value(u128::from(address) << 32 | u128::from(v.length))
                        }
                    };
                    out.push(id);
                }
            }
            Some(Identities::Booleans(a)) => {
                out.extend((0..a.len()).map(|i| if valid(i) { 1 + u32::from(a.value(i)) } else { 0 }));
            }
            Some(Identities::Bits { bytes, width }) => {
                for (i, value) in bytes.chunks_exact(width).take(array.len()).enumerate() {
                    out.push(if valid(i) { self.value(bits(value)) } else { 0 });
                }
            }
            None => out.resize(array.len(), 0),
        }
    }
}

/// What tells the values of a [`has_identity`] array apart without reading them whole.
pub(crate) enum Identities<'a> {
    /// String or binary views (a short value whole, a long one's length, prefix, buffer and
    /// offset) and the buffers they point into.
    Views {
        views: &'a [u128],
        buffers: &'a [Buffer],
    },
    Booleans(&'a BooleanArray),
    /// Primitive values of `width` bytes (at most 8): their little-endian bytes, from the
    /// array's first value on.
    Bits {
        bytes: Buffer,
        width: usize,
    },
}

/// The identities of `array`'s values; `None` for a type without ([`has_identity`]).
pub(crate) fn identities(array: &ArrayRef) -> Option<Identities<'_>> {
    match array.data_type() {
        DataType::Utf8View => {
            let a = array.as_string_view();
            Some(Identities::Views { views: a.views(), buffers: a.data_buffers() })
        }
        DataType::BinaryView => {
            let a = array.as_binary_view();
            Some(Identities::Views { views: a.views(), buffers: a.data_buffers() })
        }
        DataType::Boolean => Some(Identities::Booleans(array.as_boolean())),
        t => {
            let width = t.primitive_width().filter(|&w| w <= 8)?;
            let data = array.to_data();
            let bytes = data.buffers().first()?.slice(data.offset() * width);
            Some(Identities::Bits { bytes, width })
        }
    }
}

/// The identity of a primitive value: its little-endian bytes (at most 8) as a number.
pub(crate) fn bits(value: &[u8]) -> u128 {
    let mut v = [0u8; 8];
    v[..value.len()].copy_from_slice(value);
    u128::from(u64::from_le_bytes(v))
}

/// The bytes a long string's view (more than 12 bytes) points to in `buffers`.
pub(crate) fn viewed_bytes(view: u128, buffers: &[Buffer]) -> &[u8] {
    let v = ByteView::from(view);
    &buffers[v.buffer_index as usize].as_slice()[v.offset as usize..][..v.length as usize]
}

/// A 64-bit hash: both halves folded in by a multiply (as foldhash does), which spreads
/// addresses, packed ids and small integers alike over the bits hashbrown uses.
pub(crate) fn hash_u128(v: u128) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let r = u128::from(v as u64 ^ 0x243f_6a88_85a3_08d3) * u128::from((v >> 64) as u64 ^ K);
    (r as u64) ^ ((r >> 64) as u64)
}

impl Prefilter {
    fn new(keys: Vec<usize>, dropped: Count, reservation: MemoryReservation) -> Self {
        let width = keys.len();
        Self {
            keys,
            seen: Some(Seen::new(width)),
            rows_in: 0,
            rows_out: 0,
            dropped,
            ids: vec![Vec::new(); width],
            reservation,
        }
    }

    /// Stops filtering for good: every batch passes untouched, and what was held is let go.
    fn give_up(&mut self) {
        self.seen = None;
        self.ids = Vec::new();
        self.reservation.free();
    }

    fn apply(&mut self, batch: RecordBatch) -> Result<RecordBatch> {
        let Some(seen) = self.seen.as_mut() else {
            return Ok(batch);
        };
        let rows = batch.num_rows();
        if seen.too_big() {
            *seen = Seen::new(self.keys.len());
        }
        for ((ids, &k), interner) in self.ids.iter_mut().zip(&self.keys).zip(&mut seen.columns) {
            interner.ids(batch.column(k), ids);
        }
        let ids = &self.ids;
        let keys = &mut seen.keys;
        let keep: BooleanArray = (0..rows)
            .map(|row| {
                let key = ids.iter().fold(0u128, |key, column| key << 32 | u128::from(column[row]));
                let hash = hash_u128(key);
                let new = keys.find(hash, |k| *k == key).is_none();
                if new {
                    keys.insert_unique(hash, key, |k| hash_u128(*k));
                }
                Some(new)
            })
            .collect();
        let kept = keep.true_count();
        self.rows_in += rows;
        self.rows_out += kept;
        self.dropped.add(rows - kept);
        let held = seen.size() + self.ids.iter().map(|ids| ids.capacity() * size_of::<u32>()).sum::<usize>();
        // Too few rows dropped to pay, or no memory for what it holds: the grouping above does
        // the rest (this batch is filtered all the same: its keys were looked up whole).
        let refused = self.reservation.try_resize(held).is_err();
        if refused || (self.rows_in >= PROBE_ROWS && self.rows_out * 2 > self.rows_in) {
            self.give_up();
        }
        if kept == rows {
            return Ok(batch);
        }
        Ok(filter_record_batch(&batch, &keep)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringViewArray, StringViewBuilder};
    use arrow::datatypes::Schema;
    use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryPool};

    /// A filter on these key columns whose memory pool has no limit.
    fn unbounded(keys: Vec<usize>) -> Prefilter {
        limited(keys, usize::MAX).0
    }

    /// A filter on these key columns, alone in a pool of `limit` bytes, and the pool.
    fn limited(keys: Vec<usize>, limit: usize) -> (Prefilter, Arc<dyn MemoryPool>) {
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(limit));
        let reservation = MemoryConsumer::new("test").register(&pool);
        (Prefilter::new(keys, Count::new(), reservation), pool)
    }

    fn run(filter: &mut Prefilter, batch: &RecordBatch) -> Vec<usize> {
        let out = filter.apply(batch.clone()).unwrap();
        let ids = out.column(0).as_primitive::<arrow::datatypes::Int64Type>();
        ids.values().iter().map(|v| *v as usize).collect()
    }

    /// A batch of (row number, string views sharing one buffer as a dictionary page would).
    fn dictionary_batch(keys: &[Option<usize>], dictionary: &[&str]) -> RecordBatch {
        let mut b = StringViewBuilder::new();
        for s in dictionary {
            b.append_value(s);
        }
        let dict = b.finish();
        let views: Vec<u128> = keys.iter().map(|k| k.map_or(0, |k| dict.views()[k])).collect();
        let nulls = arrow::buffer::NullBuffer::from(keys.iter().map(Option::is_some).collect::<Vec<_>>());
        let strings =
            StringViewArray::try_new(views.into(), dict.data_buffers().to_vec(), Some(nulls)).unwrap();
        let rows = Int64Array::from_iter_values(0..keys.len() as i64);
        let schema = Arc::new(Schema::new(vec![
            arrow::datatypes::Field::new("row", DataType::Int64, false),
            arrow::datatypes::Field::new("s", DataType::Utf8View, true),
        ]));
        RecordBatch::try_new(schema, vec![Arc::new(rows), Arc::new(strings)]).unwrap()
    }

    #[test]
    fn first_row_of_each_identity_passes() {
        let dictionary = ["a-resource-longer-than-twelve", "short", "another-resource-id-long"];
        let keys = [Some(0), Some(1), Some(0), None, Some(2), Some(1), None, Some(2), Some(0)];
        let batch = dictionary_batch(&keys, &dictionary);
        let mut filter = unbounded(vec![1]);
        assert_eq!(run(&mut filter, &batch), vec![0, 1, 3, 4]);
        // The next batch shares the buffer (as batches of one row group do): all seen.
        let again =
            RecordBatch::try_new(batch.schema(), vec![batch.column(0).clone(), batch.column(1).clone()])
                .unwrap();
        assert_eq!(run(&mut filter, &again), Vec::<usize>::new());
        assert_eq!(filter.dropped.value(), 5 + 9);
    }

    #[test]
    fn equal_strings_in_other_buffers_pass_and_keys_combine() {
        // Two columns: the row number's parity and the string; equal strings written twice
        // (plain encoding) are different identities, so both pass: the grouping above merges them.
        let mut b = StringViewBuilder::new();
        for s in ["same-long-string-value", "same-long-string-value", "x", "x"] {
            b.append_value(s);
        }
        let strings = b.finish();
        let parity = Int64Array::from(vec![0, 0, 1, 0]);
        let schema = Arc::new(Schema::new(vec![
            arrow::datatypes::Field::new("p", DataType::Int64, false),
            arrow::datatypes::Field::new("s", DataType::Utf8View, false),
        ]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(parity), Arc::new(strings)]).unwrap();
        let mut filter = unbounded(vec![0, 1]);
        let out = filter.apply(batch).unwrap();
        // Rows 0 and 1: distinct addresses; rows 2 and 3: "x" inline, different parity.
        assert_eq!(out.num_rows(), 4);
    }

    #[test]
    fn overlapping_views_keep_their_own_identity() {
        // Views into one buffer that share a start or a slot: [0, 20), [0, 15), [5, 20), [13, 26).
        let data = Buffer::from(b"abcdefghijklmnopqrstuvwxyz".as_slice());
        let view = |offset: u32, length: u32| {
            let bytes = &data.as_slice()[offset as usize..][..length as usize];
            arrow::array::builder::make_view(bytes, 0, offset)
        };
        let views =
            [view(0, 20), view(0, 15), view(5, 15), view(13, 13), view(5, 15), view(0, 15), view(0, 20)];
        let strings = StringViewArray::try_new(views.to_vec().into(), vec![data.clone()], None).unwrap();
        let rows = Int64Array::from_iter_values(0..views.len() as i64);
        let schema = Arc::new(Schema::new(vec![
            arrow::datatypes::Field::new("row", DataType::Int64, false),
            arrow::datatypes::Field::new("s", DataType::Utf8View, false),
        ]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(rows), Arc::new(strings)]).unwrap();
        let mut filter = unbounded(vec![1]);
        assert_eq!(run(&mut filter, &batch), vec![0, 1, 2, 3]);
    }

    #[test]
    fn past_its_limits_it_forgets_and_starts_again() {
        let dictionary = ["a-resource-longer-than-twelve", "short"];
        let batch = dictionary_batch(&[Some(0), Some(1), Some(0)], &dictionary);
        let mut filter = unbounded(vec![1]);
        assert_eq!(run(&mut filter, &batch), vec![0, 1]);
        assert_eq!(run(&mut filter, &batch), Vec::<usize>::new());
        // Over the held-bytes limit: the next batch finds nothing seen (and the buffers go).
        filter.seen.as_mut().unwrap().columns[0].held_bytes = MAX_HELD_BYTES + 1;
        assert_eq!(run(&mut filter, &batch), vec![0, 1]);
        let seen = filter.seen.as_ref().unwrap();
        assert!(seen.columns[0].held_bytes <= MAX_HELD_BYTES && seen.keys.len() == 2);
    }

    #[test]
    fn what_it_holds_is_reserved_and_a_refusal_makes_it_give_way() {
        let dictionary = ["a-resource-longer-than-twelve", "short", "another-resource-id-long"];
        let keys = [Some(0), Some(1), Some(0), None, Some(2), Some(1), None, Some(2), Some(0)];
        let batch = dictionary_batch(&keys, &dictionary);
        // Room enough: the dictionary buffer, its slot table and the keys are reserved.
        let (mut filter, roomy) = limited(vec![1], 1 << 20);
        assert_eq!(run(&mut filter, &batch), vec![0, 1, 3, 4]);
        let held = roomy.reserved();
        assert!(held >= batch.column(1).as_string_view().data_buffers()[0].len(), "reserved {held}");
        assert_eq!(held, filter.reservation.size());
        assert_eq!(run(&mut filter, &batch), Vec::<usize>::new());
        // A pool too small for it: the batch at hand is still filtered right, then it stops
        // filtering, lets go of what it held, and every row of later batches passes.
        let (mut small, tight) = limited(vec![1], 64);
        assert_eq!(run(&mut small, &batch), vec![0, 1, 3, 4]);
        assert!(small.seen.is_none());
        assert_eq!(tight.reserved(), 0);
        assert_eq!(run(&mut small, &batch), (0..keys.len()).collect::<Vec<_>>());
        // Dropped, the filter gives its reservation back.
        drop(filter);
        assert_eq!(roomy.reserved(), 0);
    }

    #[test]
    fn gives_up_when_it_drops_too_little() {
        let values: Vec<i64> = (0..PROBE_ROWS as i64).collect();
        let schema = Arc::new(Schema::new(vec![arrow::datatypes::Field::new("v", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values))]).unwrap();
        let mut filter = unbounded(vec![0]);
        assert_eq!(filter.apply(batch.clone()).unwrap().num_rows(), PROBE_ROWS);
        assert!(filter.seen.is_none());
        // From then on every row passes, repeated ones too.
        assert_eq!(filter.apply(batch).unwrap().num_rows(), PROBE_ROWS);
    }

    #[tokio::test]
    async fn the_rule_filters_one_phase_distinct_groupings() {
        use datafusion::{
            datasource::MemTable,
            execution::SessionStateBuilder,
            physical_plan::{collect, displayable},
            prelude::{SessionConfig, SessionContext},
        };
        // One partition: DataFusion groups in one phase (`Single`), which FewGroups leaves here.
        let keys: Vec<Option<usize>> = (0..3000).map(|i| (i % 7 != 0).then_some(i % 5)).collect();
        let batch = dictionary_batch(
            &keys,
            &["a-resource-longer-than-twelve", "short", "r3", "r-4", "and-another-long-one"],
        );
        let answer = |rule: bool| {
            let batch = batch.clone();
            async move {
                let config = SessionConfig::new().with_target_partitions(1);
                let mut state = SessionStateBuilder::new().with_config(config).with_default_features();
                if rule {
                    state = state.with_physical_optimizer_rule(Arc::new(DistinctPrefilter));
                }
                let ctx = SessionContext::new_with_state(state.build());
                let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap();
                ctx.register_table("t", Arc::new(table)).unwrap();
                let plan =
                    ctx.sql("SELECT DISTINCT s FROM t").await.unwrap().create_physical_plan().await.unwrap();
                let mut rows: Vec<Option<String>> = collect(Arc::clone(&plan), ctx.task_ctx())
                    .await
                    .unwrap()
                    .iter()
                    .flat_map(|b| {
                        b.column(0).as_string_view().iter().map(|s| s.map(String::from)).collect::<Vec<_>>()
                    })
                    .collect();
                rows.sort();
                (rows, displayable(plan.as_ref()).indent(true).to_string())
            }
        };
        let (ours, plan) = answer(true).await;
        let (theirs, _) = answer(false).await;
        assert!(plan.contains("DistinctPrefilterExec"), "{plan}");
        assert_eq!(ours.len(), 6, "{ours:?}");
        assert_eq!(ours, theirs);
    }
}
