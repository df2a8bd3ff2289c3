//! The first (partial) phase of a grouping with few groups, by small ids instead of hashing
//! every row's strings.
//!
//! Most questions asked of the raw tables group by a few low-cardinality columns (tenant,
//! service, kind, status, route) and count or sum: `... GROUP BY tenant_id, service_name` over
//! 20M spans. DataFusion's partial aggregation hashes each row's key strings, probes its table
//! and compares the strings of the group found (`GroupValuesColumn::intern`): 29% of that
//! query's CPU. [`FewGroups`] replaces such a partial `AggregateExec` with a [`FewGroupsExec`],
//! which gives each key value a small dense id and each tuple of ids a group:
//!
//! - per key column, a row whose value has the identity of the row before (sorted columns:
//!   `tenant_id` in the lake's order) takes its id with one comparison; any other looks its
//!   identity up in a small direct-mapped cache (one multiply, one comparison), and only on a
//!   miss in a hash table of values. A string's identity is its 16-byte view: for strings of at
//!   most 12 bytes the view holds the whole value; a longer string's view names its buffer and
//!   offset in this batch, so the cache's entries count for their batch only. Other values are
//!   their bits.
//! - the tuple of ids indexes a dense table while the columns' ids fit in 16 bits together, and
//!   a hash table of packed ids after that.
//!
//! The aggregate functions are DataFusion's own [`GroupsAccumulator`]s fed with these group
//! indices, and the output (group columns, then each accumulator's state) is exactly the
//! partial `AggregateExec`'s, so the final phase above is unchanged. Long strings get their id
//! by their bytes and other values by their bits, so equal values share a group (short strings
//! too, their views being zero-padded; were a producer's not, the final phase would merge the
//! two groups, as it merges the groups of every partition).
//!
//! It takes only what it is made for: partial aggregations of raw rows with one to four keys
//! (columns, or expressions evaluated per batch) of string view, integer, date, timestamp or
//! boolean type, and aggregate functions
//! with a groups accumulator, no ordering and no limit. Past [`MAX_GROUPS`] groups, or when the
//! groups are not few compared with the rows ([`PROBE_ROWS`]), it emits what it has and hands
//! the rest of its input to DataFusion's partial aggregation (the final phase merges both).
//! It reserves what it holds (ids, tables, key values, the accumulators' states) in the
//! session's memory pool after each batch; when the pool refuses, it hands over as above.
//!
//! Written by hand: DataFusion (55) cannot be given another `GroupValues` from outside.

use std::{
    fmt,
    sync::{Arc, Mutex},
};

use arrow::{
    array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array},
    compute::{concat, take},
    datatypes::{DataType, SchemaRef},
};
use datafusion::{
    common::{Result, config::ConfigOptions, internal_err, tree_node::TreeNodeRecursion},
    execution::{TaskContext, memory_pool::MemoryConsumer},
    logical_expr::{EmitTo, GroupsAccumulator},
    physical_expr::PhysicalExpr,
    physical_optimizer::PhysicalOptimizerRule,
    physical_plan::{
        DisplayAs, DisplayFormatType, ExecutionPlan, InputOrderMode, PlanProperties,
        SendableRecordBatchStream,
        aggregates::{AggregateExec, AggregateMode},
        execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions},
        metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet},
        stream::RecordBatchStreamAdapter,
        streaming::{PartitionStream, StreamingTableExec},
    },
};
use futures::{StreamExt, TryStreamExt, stream};
use hashbrown::{HashMap, HashTable};

use crate::distinct::{
    Identities, bits, has_identity, hash_u128, identities, rewrite_aggregations, viewed_bytes,
};

/// Key columns handled at most (their ids pack into a `u128`).
const MAX_COLUMNS: usize = 4;

/// Groups held at most before the rest of the input goes to DataFusion's aggregation.
pub(crate) const MAX_GROUPS: usize = 1 << 17;

/// After this many rows, groups must be fewer than a tenth of the rows seen, or the rest of the
/// input goes to DataFusion's aggregation (which may then skip the partial phase altogether).
pub(crate) const PROBE_ROWS: usize = 100_000;

/// Entries of each column's identity cache at most (a power of two; its entries of earlier
/// batches do not count). It starts at the first batch's rows, rounded up to a power of two, so
/// that a panel's few rows do not set up the whole cache.
const VALUE_CACHE: usize = 4096;

/// Entries of the cache of packed ids in front of the hashed group table.
const GROUP_CACHE: usize = 4096;

/// Bits of packed ids a dense group table is indexed by at most.
const DENSE_BITS: u32 = 16;

/// Puts a [`FewGroupsExec`] in place of each partial aggregation it can take (module docs).
#[derive(Debug, Default)]
pub(crate) struct FewGroups;

impl PhysicalOptimizerRule for FewGroups {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        rewrite_aggregations(plan, |agg, _| {
            Ok(takes(agg)
                .then(|| Arc::new(FewGroupsExec::new(Arc::new(agg.clone()))) as Arc<dyn ExecutionPlan>))
        })
    }

    fn name(&self) -> &str {
        "few_groups"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether [`FewGroupsExec`] can stand in for `agg`: its keys are columns or expressions whose
/// values have an identity ([`has_identity`]).
fn takes(agg: &AggregateExec) -> bool {
    let group_by = agg.group_expr();
    let plain = *agg.mode() == AggregateMode::Partial
        && group_by.is_single()
        && (1..=MAX_COLUMNS).contains(&group_by.expr().len())
        && agg.limit_options().is_none()
        && agg.dynamic_expressions_produced().is_empty()
        && matches!(agg.input_order_mode(), InputOrderMode::Linear)
        && agg
            .aggr_expr()
            .iter()
            .all(|a| a.groups_accumulator_supported() && a.order_bys().is_empty() && !a.is_distinct());
    let schema = agg.input().schema();
    plain && group_by.expr().iter().all(|(expr, _)| expr.data_type(&schema).is_ok_and(|t| has_identity(&t)))
}

/// A partial `AggregateExec` computed by small ids (module docs). It keeps the aggregation it
/// replaces for its expressions, its output and the hand-over.
#[derive(Debug)]
pub(crate) struct FewGroupsExec {
    agg: Arc<AggregateExec>,
    metrics: ExecutionPlanMetricsSet,
}

impl FewGroupsExec {
    fn new(agg: Arc<AggregateExec>) -> Self {
        Self { agg, metrics: ExecutionPlanMetricsSet::new() }
    }
}

impl DisplayAs for FewGroupsExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "FewGroupsExec: ")?;
        self.agg.fmt_as(t, f)
    }
}

impl ExecutionPlan for FewGroupsExec {
    fn name(&self) -> &str {
        "FewGroupsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.agg.properties()
    }

    fn input_distribution_requirements(
        &self,
    ) -> datafusion::physical_plan::distribution_requirements::InputDistributionRequirements {
        self.agg.input_distribution_requirements()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.agg.input()]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.agg.apply_expressions(f)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let agg = Arc::clone(&self.agg).replace_children(children, options)?;
        let Some(agg) = agg.downcast_ref::<AggregateExec>() else {
            return internal_err!("FewGroupsExec: the aggregation's new children made another plan");
        };
        Ok(Arc::new(Self::new(Arc::new(agg.clone()))))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let mut input = self.agg.input().execute(partition, Arc::clone(&context))?;
        let schema = self.agg.schema();
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let handed_over = MetricBuilder::new(&self.metrics).counter("handed_over_rows", partition);
        let batch_size = context.session_config().batch_size();
        let mut groups = Groups::new(&self.agg)?;
        let reservation =
            MemoryConsumer::new(format!("FewGroupsExec[{partition}]")).register(context.memory_pool());
        let agg = Arc::clone(&self.agg);
        let out_schema = Arc::clone(&schema);
        let aggregate = async move {
            type Out = futures::stream::BoxStream<'static, Result<RecordBatch>>;
            let mut rows = 0;
            while let Some(batch) = input.next().await {
                let batch = batch?;
                let timer = baseline.elapsed_compute().timer();
                groups.update(&batch)?;
                timer.done();
                rows += batch.num_rows();
                let fits = reservation.try_resize(groups.size()).is_ok();
                if !fits || groups.len() > MAX_GROUPS || (rows >= PROBE_ROWS && groups.len() * 10 > rows) {
                    // Not few (or no memory for more): what is held goes out, DataFusion
                    // aggregates the rest (emitting early or spilling under its own reservation).
                    let held = groups.emit(&out_schema, batch_size)?;
                    reservation.free();
                    baseline.record_output(held.iter().map(RecordBatch::num_rows).sum());
                    let counted = handed_over.clone();
                    let rest = input.inspect_ok(move |b| counted.add(b.num_rows()));
                    let rest = Box::pin(RecordBatchStreamAdapter::new(agg.input().schema(), rest));
                    let theirs = Arc::clone(&agg)
                        .replace_children(
                            vec![Rest::plan(rest)?],
                            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
                        )?
                        .execute(0, context)?;
                    return Ok::<Out, datafusion::error::DataFusionError>(
                        stream::iter(held.into_iter().map(Ok)).chain(theirs).boxed(),
                    );
                }
            }
            let timer = baseline.elapsed_compute().timer();
            let out = groups.emit(&out_schema, batch_size)?;
            reservation.free();
            timer.done();
            baseline.record_output(out.iter().map(RecordBatch::num_rows).sum());
            Ok(stream::iter(out.into_iter().map(Ok)).boxed())
        };
        let stream = stream::once(aggregate).try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// One partition's groups: the ids of the key values, the groups of the id tuples, and one
/// accumulator per aggregate function.
struct Groups {
    /// The group expressions (columns of the input, or expressions of them).
    keys: Vec<Arc<dyn PhysicalExpr>>,
    columns: Vec<KeyColumn>,
    /// Per key column, the ids of the batch at hand.
    ids: Vec<Vec<u32>>,
    table: GroupTable,
    /// Per group, its ids (`keys.len()` of them, one after another).
    group_ids: Vec<u32>,
    accumulators: Vec<Accumulator>,
    indices: Vec<usize>,
}

struct Accumulator {
    arguments: Vec<Arc<dyn PhysicalExpr>>,
    filter: Option<Arc<dyn PhysicalExpr>>,
    state: Box<dyn GroupsAccumulator>,
}

impl Groups {
    fn new(agg: &AggregateExec) -> Result<Self> {
        let input = agg.input().schema();
        let keys: Vec<_> = agg.group_expr().expr().iter().map(|(e, _)| Arc::clone(e)).collect();
        let columns =
            keys.iter().map(|k| Ok(KeyColumn::new(&k.data_type(&input)?))).collect::<Result<_>>()?;
        let accumulators = agg
            .aggr_expr()
            .iter()
            .zip(agg.filter_expr())
            .map(|(a, filter)| {
                Ok(Accumulator {
                    arguments: a.expressions(),
                    filter: filter.clone(),
                    state: a.create_groups_accumulator()?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            ids: vec![Vec::new(); keys.len()],
            keys,
            columns,
            table: GroupTable::default(),
            group_ids: Vec::new(),
            accumulators,
            indices: Vec::new(),
        })
    }

    fn len(&self) -> usize {
        self.table.groups
    }

    /// Bytes held: ids, tables, the key values and the accumulators' states.
    fn size(&self) -> usize {
        let vec = |v: &Vec<u32>| v.capacity() * size_of::<u32>();
        self.columns.iter().map(KeyColumn::size).sum::<usize>()
            + self.ids.iter().map(vec).sum::<usize>()
            + self.table.size()
            + vec(&self.group_ids)
            + self.indices.capacity() * size_of::<usize>()
            + self.accumulators.iter().map(|a| a.state.size()).sum::<usize>()
    }

    fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = batch.num_rows();
        for ((column, ids), key) in self.columns.iter_mut().zip(&mut self.ids).zip(&self.keys) {
            column.ids(&key.evaluate(batch)?.into_array(rows)?, ids)?;
        }
        let width = self.keys.len();
        self.indices.clear();
        self.indices.resize(rows, 0);
        if width == 1 {
            self.table.groups_of_one(&self.ids[0], &mut self.indices, &mut self.group_ids);
        } else {
            let bits: Vec<u32> = self.columns.iter().map(KeyColumn::bits).collect();
            self.table.fit(&bits, &self.group_ids, width);
            self.table.groups_of(&self.ids, &mut self.indices, &mut self.group_ids);
        }
        let groups = self.table.groups;
        for acc in &mut self.accumulators {
            let arguments = acc
                .arguments
                .iter()
                .map(|e| e.evaluate(batch).and_then(|v| v.into_array(rows)))
                .collect::<Result<Vec<_>>>()?;
            let filter = acc
                .filter
                .as_ref()
                .map(|e| e.evaluate(batch).and_then(|v| v.into_array(rows)))
                .transpose()?;
            acc.state.update_batch(
                &arguments,
                &self.indices,
                filter.as_ref().map(|f| f.as_boolean()),
                groups,
            )?;
        }
        Ok(())
    }

    /// Every group (keys, then each accumulator's state) in batches of `batch_size` rows; what
    /// is held goes with it.
    fn emit(mut self, schema: &SchemaRef, batch_size: usize) -> Result<Vec<RecordBatch>> {
        let groups = self.table.groups;
        if groups == 0 {
            return Ok(Vec::new());
        }
        let width = self.keys.len();
        let mut columns = Vec::with_capacity(schema.fields().len());
        for (c, column) in self.columns.iter().enumerate() {
            let indices: UInt32Array = (0..groups)
                .map(|g| match self.group_ids[g * width + c] {
                    0 => None,
                    id => Some(id - 1),
                })
                .collect();
            columns.push(column.values(&indices)?);
        }
        for acc in &mut self.accumulators {
            columns.extend(acc.state.state(EmitTo::All)?);
        }
        let batch = RecordBatch::try_new(Arc::clone(schema), columns)?;
        let step = batch_size.max(1);
        Ok((0..groups).step_by(step).map(|at| batch.slice(at, step.min(groups - at))).collect())
    }
}

/// The groups of id tuples: dense while the ids fit in [`DENSE_BITS`] bits, hashed after.
#[derive(Default)]
struct GroupTable {
    groups: usize,
    /// Dense: per packed tuple (each column's id shifted by the bits of the columns after it),
    /// its group + 1 (0: none yet).
    dense: Vec<u32>,
    /// Bits of each column in `dense`'s index.
    shifts: Vec<u32>,
    /// Hashed: packed ids (32 bits per column) and group, with a direct-mapped cache in front.
    hashed: Option<Hashed>,
}

struct Hashed {
    table: HashTable<(u128, u32)>,
    cache: Vec<(u128, u32)>,
}

impl GroupTable {
    fn size(&self) -> usize {
        self.dense.capacity() * size_of::<u32>()
            + self
                .hashed
                .as_ref()
                .map_or(0, |h| h.table.allocation_size() + h.cache.capacity() * size_of::<(u128, u32)>())
    }

    /// One key column: the id is the dense index. `out` gets each row's group.
    fn groups_of_one(&mut self, ids: &[u32], out: &mut [usize], group_ids: &mut Vec<u32>) {
        let top = ids.iter().copied().max().unwrap_or(0) as usize;
        if top >= self.dense.len() {
            self.dense.resize((top + 1).next_power_of_two(), 0);
        }
        for (o, &id) in out.iter_mut().zip(ids) {
            let g = &mut self.dense[id as usize];
            if *g == 0 {
                group_ids.push(id);
                self.groups += 1;
                *g = self.groups as u32;
            }
            *o = *g as usize - 1;
        }
    }

    /// Makes the dense table wide enough for the columns' ids (`bits` per column), or switches to
    /// the hashed table for good.
    fn fit(&mut self, bits: &[u32], group_ids: &[u32], width: usize) {
        if self.hashed.is_some()
            || self.shifts.len() == bits.len()
                && bits_fit(&self.shifts, self.dense.len().trailing_zeros(), bits)
        {
            return;
        }
        let total: u32 = bits.iter().sum();
        if total > DENSE_BITS {
            let mut table = HashTable::with_capacity(self.groups);
            for (g, ids) in group_ids.chunks_exact(width).enumerate() {
                let key = pack(ids.iter().copied());
                table.insert_unique(hash_u128(key), (key, g as u32), |(k, _)| hash_u128(*k));
            }
            self.hashed = Some(Hashed { table, cache: vec![(u128::MAX, 0); GROUP_CACHE] });
            self.dense = Vec::new();
            return;
        }
        // Rebuild with room to spare: one more bit per column than needed now.
        let bits: Vec<u32> = if total + bits.len() as u32 <= DENSE_BITS {
            bits.iter().map(|b| b + 1).collect()
        } else {
            bits.to_vec()
        };
        let mut shifts = vec![0; bits.len()];
        let mut at = 0;
        for (s, b) in shifts.iter_mut().zip(&bits).rev() {
            *s = at;
            at += b;
        }
        self.shifts = shifts;
        self.dense = vec![0; 1 << at];
        for (g, ids) in group_ids.chunks_exact(width).enumerate() {
            let i = dense_index(&self.shifts, ids.iter().copied());
            self.dense[i] = g as u32 + 1;
        }
    }

    /// Each row's group into `out` (zeroed, one per row), new groups made as found.
    fn groups_of(&mut self, ids: &[Vec<u32>], out: &mut [usize], group_ids: &mut Vec<u32>) {
        let groups = &mut self.groups;
        let mut new_group = |group_ids: &mut Vec<u32>, row: usize| {
            group_ids.extend(ids.iter().map(|c| c[row]));
            *groups += 1;
            *groups as u32 - 1
        };
        match &mut self.hashed {
            None => {
                // The dense index of every row first (a loop the compiler vectorizes), then
                // its group.
                for (column, &shift) in ids.iter().zip(&self.shifts) {
                    for (o, &id) in out.iter_mut().zip(column) {
                        *o |= (id as usize) << shift;
                    }
                }
                for (row, o) in out.iter_mut().enumerate() {
                    let g = &mut self.dense[*o];
                    if *g == 0 {
                        *g = new_group(group_ids, row) + 1;
                    }
                    *o = *g as usize - 1;
                }
            }
            Some(hashed) => {
                for (row, o) in out.iter_mut().enumerate() {
                    let key = pack(ids.iter().map(|c| c[row]));
                    let hash = hash_u128(key);
                    let slot = (hash >> 52) as usize % GROUP_CACHE;
                    let g = if hashed.cache[slot].0 == key {
                        hashed.cache[slot].1
                    } else {
                        let g = match hashed.table.find(hash, |(k, _)| *k == key) {
                            Some(&(_, g)) => g,
                            None => {
                                let g = new_group(group_ids, row);
                                hashed.table.insert_unique(hash, (key, g), |(k, _)| hash_u128(*k));
                                g
                            }
                        };
                        hashed.cache[slot] = (key, g);
                        g
                    };
                    *o = g as usize;
                }
            }
        }
    }
}

/// Whether ids of `bits` bits per column fit the dense table laid out by `shifts` (column `i`
/// has the bits from `shifts[i]` up to the previous column's shift; the first up to the
/// table's `table_bits`).
fn bits_fit(shifts: &[u32], table_bits: u32, bits: &[u32]) -> bool {
    bits.iter().enumerate().all(|(i, &b)| {
        let top = if i == 0 { table_bits } else { shifts[i - 1] };
        shifts[i] + b <= top
    })
}

fn dense_index(shifts: &[u32], ids: impl Iterator<Item = u32>) -> usize {
    ids.zip(shifts).fold(0usize, |i, (id, &s)| i | (id as usize) << s)
}

fn pack(ids: impl Iterator<Item = u32>) -> u128 {
    ids.fold(0u128, |key, id| key << 32 | u128::from(id))
}

/// Dense ids for one key column's values: 0 for NULL, then 1, 2, ... in order of first sight.
struct KeyColumn {
    data_type: DataType,
    /// Identity (view or bits) and id of the row before.
    last: Option<(u128, u32)>,
    /// Identity and id, direct-mapped by hash, of this batch (`batch`).
    cache: Vec<CacheEntry>,
    /// The number of the batch at hand (0: none; the cache's entries of 0 are empty).
    batch: u32,
    /// Identities that are the value itself (short strings, primitive bits) and their ids.
    short: HashTable<(u128, u32)>,
    /// Longer strings by their bytes.
    long: HashMap<Box<[u8]>, u32>,
    /// Bytes of the strings in `long`.
    long_bytes: usize,
    /// Rows of the batch at hand whose values got new ids, in id order.
    new_rows: Vec<u32>,
    /// The values of ids 1.. (one array per batch that brought new ones).
    values: Vec<ArrayRef>,
    next: u32,
}

#[derive(Clone, Copy, Default)]
struct CacheEntry {
    identity: u128,
    id: u32,
    batch: u32,
}

impl KeyColumn {
    fn size(&self) -> usize {
        self.cache.capacity() * size_of::<CacheEntry>()
            + self.short.allocation_size()
            + self.long.allocation_size()
            + self.long_bytes
            + self.new_rows.capacity() * size_of::<u32>()
            + self.values.iter().map(|a| a.get_array_memory_size()).sum::<usize>()
    }

    fn new(data_type: &DataType) -> Self {
        Self {
            data_type: data_type.clone(),
            last: None,
            cache: Vec::new(),
            batch: 0,
            short: HashTable::new(),
            long: HashMap::new(),
            long_bytes: 0,
            new_rows: Vec::new(),
            values: Vec::new(),
            next: 0,
        }
    }

    /// Bits the ids given so far take (ids 0..=next).
    fn bits(&self) -> u32 {
        u32::BITS - self.next.leading_zeros()
    }

    fn new_id(&mut self, row: usize) -> u32 {
        self.next += 1;
        self.new_rows.push(row as u32);
        self.next
    }

    fn ids(&mut self, array: &ArrayRef, out: &mut Vec<u32>) -> Result<()> {
        out.clear();
        out.resize(array.len(), 0);
        let wanted = array.len().next_power_of_two().min(VALUE_CACHE);
        if self.cache.len() < wanted {
            // Entries move slots when the cache grows: start it afresh.
            self.cache = vec![CacheEntry::default(); wanted];
            self.batch = 0;
        }
        // A new batch: the cache's entries of earlier ones no longer count (long strings' views
        // name this batch's buffers).
        self.batch = self.batch.wrapping_add(1);
        if self.batch == 0 {
            self.cache.fill(CacheEntry::default());
            self.batch = 1;
        }
        self.last = None;
        self.new_rows.clear();
        let nulls = array.logical_nulls();
        let valid = |i: usize| nulls.as_ref().is_none_or(|n| n.is_valid(i));
        match identities(array) {
            Some(Identities::Views { views, buffers }) => {
                for (i, (o, &view)) in out.iter_mut().zip(views.iter()).enumerate() {
                    if valid(i) {
                        *o = self.lookup(view, i, |this, i| {
                            if (view as u32) <= 12 {
                                return this.short_id(view, i);
                            }
                            let value = viewed_bytes(view, buffers);
                            match this.long.get(value) {
                                Some(&id) => id,
                                None => {
                                    let id = this.new_id(i);
                                    this.long_bytes += value.len();
                                    this.long.insert(value.into(), id);
                                    id
                                }
                            }
                        });
                    }
                }
            }
            Some(Identities::Booleans(a)) => {
                for (i, o) in out.iter_mut().enumerate() {
                    if valid(i) {
                        let bit = u128::from(a.value(i));
                        *o = self.lookup(bit, i, |this, i| this.short_id(bit, i));
                    }
                }
            }
            Some(Identities::Bits { bytes, width }) => {
                for (i, (o, value)) in out.iter_mut().zip(bytes.chunks_exact(width)).enumerate() {
                    if valid(i) {
                        let bits = bits(value);
                        *o = self.lookup(bits, i, |this, i| this.short_id(bits, i));
                    }
                }
            }
            None => {
                return internal_err!("FewGroupsExec: no ids for values of type {}", array.data_type());
            }
        }
        if !self.new_rows.is_empty() {
            let rows = UInt32Array::from(std::mem::take(&mut self.new_rows));
            let mut values = take(array.as_ref(), &rows, None)?;
            // Views point into the batch's buffers: keep only the new values' bytes.
            values = match values.data_type() {
                DataType::Utf8View => Arc::new(values.as_string_view().gc()),
                DataType::BinaryView => Arc::new(values.as_binary_view().gc()),
                _ => values,
            };
            self.values.push(values);
        }
        Ok(())
    }

    /// The id of the value with this identity in row `i`: the row before's, the cache's, or
    /// `slow`'s.
    #[inline]
    fn lookup(&mut self, identity: u128, i: usize, slow: impl FnOnce(&mut Self, usize) -> u32) -> u32 {
        if let Some((v, id)) = self.last
            && v == identity
        {
            return id;
        }
        // The cache's length is a power of two: the hash's top bits pick the slot.
        let slot = (hash_u128(identity) >> 52) as usize & (self.cache.len() - 1);
        let entry = self.cache[slot];
        let id = if entry.identity == identity && entry.batch == self.batch {
            entry.id
        } else {
            let id = slow(self, i);
            self.cache[slot] = CacheEntry { identity, id, batch: self.batch };
            id
        };
        self.last = Some((identity, id));
        id
    }

    fn short_id(&mut self, identity: u128, i: usize) -> u32 {
        let hash = hash_u128(identity);
        if let Some(&(_, id)) = self.short.find(hash, |(v, _)| *v == identity) {
            return id;
        }
        let id = self.new_id(i);
        self.short.insert_unique(hash, (identity, id), |(v, _)| hash_u128(*v));
        id
    }

    /// The values of these ids (`None`: NULL), as an array of the column's type.
    fn values(&self, ids: &UInt32Array) -> Result<ArrayRef> {
        let all = match self.values.len() {
            0 => arrow::array::new_empty_array(&self.data_type),
            1 => Arc::clone(&self.values[0]),
            _ => {
                let parts: Vec<&dyn Array> = self.values.iter().map(|a| a.as_ref()).collect();
                concat(&parts)?
            }
        };
        Ok(take(all.as_ref(), ids, None)?)
    }
}

/// The rest of [`FewGroupsExec`]'s input, a stream already running, as the one partition of a
/// DataFusion `StreamingTableExec` under the aggregation it hands over to. It can be read once.
struct Rest {
    schema: SchemaRef,
    stream: Mutex<Option<SendableRecordBatchStream>>,
}

impl Rest {
    /// An input plan reading `stream`.
    fn plan(stream: SendableRecordBatchStream) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = stream.schema();
        let rest = Arc::new(Self { schema: Arc::clone(&schema), stream: Mutex::new(Some(stream)) });
        Ok(Arc::new(StreamingTableExec::try_new(schema, vec![rest], None, [], false, None)?))
    }
}

impl fmt::Debug for Rest {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("FewGroupsExec's rest")
    }
}

impl PartitionStream for Rest {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        match self.stream.lock().map(|mut s| s.take()) {
            Ok(Some(stream)) => stream,
            _ => {
                let error = stream::once(async { internal_err!("FewGroupsExec's rest read twice") });
                Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&self.schema), error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::{
        array::{BooleanArray, Int32Array, Int64Array, StringViewBuilder},
        datatypes::{Field, Schema},
        util::pretty::pretty_format_batches,
    };
    use datafusion::{
        datasource::MemTable,
        execution::{
            SessionStateBuilder,
            memory_pool::{MemoryPool, MemoryReservation},
        },
        physical_plan::{collect, displayable},
        prelude::{SessionConfig, SessionContext},
    };

    /// A session over `t`, with or without [`FewGroups`], two partitions.
    fn session(partitions: Vec<Vec<RecordBatch>>, few: bool) -> SessionContext {
        session_with_memory(partitions, few, None)
    }

    /// The same with this memory pool.
    fn session_with_memory(
        partitions: Vec<Vec<RecordBatch>>,
        few: bool,
        pool: Option<Arc<dyn MemoryPool>>,
    ) -> SessionContext {
        let config = SessionConfig::new().with_target_partitions(2).with_batch_size(1000);
        let mut state = SessionStateBuilder::new().with_config(config).with_default_features();
        if let Some(pool) = pool {
            let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
                .with_memory_pool(pool)
                .build_arc()
                .unwrap();
            state = state.with_runtime_env(runtime);
        }
        if few {
            state = state.with_physical_optimizer_rule(Arc::new(FewGroups));
        }
        let ctx = SessionContext::new_with_state(state.build());
        let schema = partitions[0][0].schema();
        ctx.register_table("t", Arc::new(MemTable::try_new(schema, partitions).unwrap())).unwrap();
        ctx
    }

    /// The answer as sorted lines, and the metrics of the plan that gave it.
    async fn answer(ctx: &SessionContext, sql: &str) -> (Vec<String>, String) {
        let plan = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
        let batches = collect(Arc::clone(&plan), ctx.task_ctx()).await.unwrap();
        let text = pretty_format_batches(&batches).unwrap().to_string();
        let mut lines: Vec<String> = text.lines().filter(|l| l.starts_with("| ")).map(String::from).collect();
        let header = lines.remove(0);
        lines.sort();
        lines.insert(0, header);
        (lines, displayable(plan.as_ref()).indent(true).to_string())
    }

    /// Rows `from..to`: strings short and long (each batch its own buffers, so equal long
    /// strings have other addresses), integers, booleans, NULLs in every key column.
    fn batch(from: usize, to: usize, kinds: usize) -> RecordBatch {
        let mut short = StringViewBuilder::new();
        let mut long = StringViewBuilder::new();
        for i in from..to {
            match i % 11 {
                0 => short.append_null(),
                k => short.append_value(format!("s{}", (i * 7 + k) % kinds)),
            }
            match i % 13 {
                0 => long.append_null(),
                _ => long.append_value(format!("a-longer-service-name-{}", (i / 3) % kinds)),
            }
        }
        let n = (from..to).map(|i| if i % 17 == 0 { None } else { Some((i % 5) as i32) });
        let flag = (from..to).map(|i| if i % 19 == 0 { None } else { Some(i % 3 == 0) });
        let v = (from..to).map(|i| if i % 23 == 0 { None } else { Some(i as i64 * 1_000_003 % 9973) });
        let schema = Arc::new(Schema::new(vec![
            Field::new("short", DataType::Utf8View, true),
            Field::new("long", DataType::Utf8View, true),
            Field::new("n", DataType::Int32, true),
            Field::new("flag", DataType::Boolean, true),
            Field::new("v", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(short.finish()),
                Arc::new(long.finish()),
                Arc::new(n.collect::<Int32Array>()),
                Arc::new(flag.collect::<BooleanArray>()),
                Arc::new(v.collect::<Int64Array>()),
            ],
        )
        .unwrap()
    }

    fn partitions(rows: usize, kinds: usize) -> Vec<Vec<RecordBatch>> {
        let step = 700;
        let batches: Vec<RecordBatch> =
            (0..rows).step_by(step).map(|at| batch(at, (at + step).min(rows), kinds)).collect();
        let (a, b) = batches.split_at(batches.len() / 2);
        vec![a.to_vec(), b.to_vec()]
    }

    /// Rows the plan's [`FewGroupsExec`]s handed to DataFusion's aggregation.
    fn handed_over(plan: &Arc<dyn ExecutionPlan>) -> usize {
        let own = if plan.name() == "FewGroupsExec" {
            plan.metrics().and_then(|m| m.sum_by_name("handed_over_rows")).map_or(0, |v| v.as_usize())
        } else {
            0
        };
        own + plan.children().into_iter().map(handed_over).sum::<usize>()
    }

    const QUERIES: &[&str] = &[
        "SELECT short, count(*), sum(v), min(v), max(v), avg(v) FROM t GROUP BY short",
        "SELECT long, short, count(v), sum(CASE WHEN flag THEN 1 ELSE 0 END) FROM t GROUP BY long, short",
        "SELECT n, flag, count(*) FILTER (WHERE v > 5000), sum(v) FILTER (WHERE short = 's1') FROM t GROUP BY n, flag",
        "SELECT short, long, n, flag, count(*), max(long) FROM t GROUP BY short, long, n, flag",
        // Keys that are expressions, evaluated per batch.
        "SELECT v % 7, NOT flag, n + 1, count(*), sum(v) FROM t GROUP BY v % 7, NOT flag, n + 1",
    ];

    #[tokio::test]
    async fn answers_as_datafusion_does() {
        let data = partitions(20_000, 40);
        let (ours, theirs) = (session(data.clone(), true), session(data, false));
        for sql in QUERIES {
            let (a, plan) = answer(&ours, sql).await;
            let (b, their_plan) = answer(&theirs, sql).await;
            assert!(plan.contains("FewGroupsExec"), "{sql}: not taken:\n{plan}");
            assert!(!their_plan.contains("FewGroupsExec"));
            assert!(a.len() > 2, "{sql}: {a:?}");
            assert_eq!(a, b, "{sql}");
        }
    }

    #[tokio::test]
    async fn ids_past_the_dense_table_go_to_the_hashed_one() {
        // 600 values in each of two columns that vary together: 600 groups, 20 bits of ids.
        let data = partitions(30_000, 600);
        let (ours, theirs) = (session(data.clone(), true), session(data, false));
        let sql = "SELECT long, short, count(*), sum(v) FROM t GROUP BY long, short";
        let (a, plan) = answer(&ours, sql).await;
        assert!(plan.contains("FewGroupsExec"), "{plan}");
        assert_eq!(a, answer(&theirs, sql).await.0);
        let mut table = GroupTable::default();
        table.fit(&[10, 10], &[], 2);
        assert!(table.hashed.is_some());
        let mut table = GroupTable::default();
        table.fit(&[7, 3], &[], 2);
        assert!(table.hashed.is_none() && table.dense.len() == 1 << 12);
        // Ids that outgrow a column's bits make the table again, keeping the groups.
        let ids = vec![vec![5, 100], vec![1, 7]];
        let mut out = vec![0; 2];
        let mut group_ids = Vec::new();
        table.groups_of(&ids, &mut out, &mut group_ids);
        assert_eq!(out, vec![0, 1]);
        table.fit(&[7, 5], &group_ids, 2);
        let ids = vec![vec![100, 5, 9], vec![7, 1, 20]];
        let mut out = vec![0; 3];
        table.groups_of(&ids, &mut out, &mut group_ids);
        assert_eq!(out, vec![1, 0, 2]);
        assert_eq!(group_ids, vec![5, 1, 100, 7, 9, 20]);
    }

    #[tokio::test]
    async fn many_groups_go_to_datafusion() {
        // Every row its own group: past PROBE_ROWS the rest is handed over, the answer the same.
        let rows = 2 * PROBE_ROWS + 40_000;
        let data = partitions(rows, rows);
        let (ours, theirs) = (session(data.clone(), true), session(data, false));
        let sql = "SELECT v, short, count(*), sum(n) FROM t GROUP BY v, short";
        let plan = ours.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
        let batches = collect(Arc::clone(&plan), ours.task_ctx()).await.unwrap();
        assert!(!batches.is_empty());
        // Each partition sees PROBE_ROWS + 20_000 rows and hands over the rest after the batch
        // that took it past PROBE_ROWS.
        let handed = handed_over(&plan);
        assert!(handed > 0 && handed < rows, "handed over {handed} of {rows} rows");
        assert_eq!(answer(&ours, sql).await.0, answer(&theirs, sql).await.0);
    }

    /// A pool that refuses FewGroups more than `limit` bytes, and anyone else nothing: a pool
    /// too small for FewGroups' identity caches and groups, without racing DataFusion's own
    /// operators for the same few bytes (which made a plain 200 KB pool fail the query itself
    /// now and then, as a real pool that small would).
    #[derive(Debug)]
    struct RefusesFewGroups {
        limit: usize,
        inner: datafusion::execution::memory_pool::UnboundedMemoryPool,
    }

    impl std::fmt::Display for RefusesFewGroups {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "refuses FewGroupsExec over {} bytes", self.limit)
        }
    }

    impl MemoryPool for RefusesFewGroups {
        fn name(&self) -> &str {
            "refuses_few_groups"
        }

        fn grow(&self, reservation: &MemoryReservation, additional: usize) {
            self.inner.grow(reservation, additional)
        }

        fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
            self.inner.shrink(reservation, shrink)
        }

        fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
            if reservation.consumer().name().starts_with("FewGroupsExec")
                && reservation.size() + additional > self.limit
            {
                return datafusion::common::resources_err!("FewGroupsExec refused {additional} bytes");
            }
            self.inner.try_grow(reservation, additional)
        }

        fn reserved(&self) -> usize {
            self.inner.reserved()
        }
    }

    #[tokio::test]
    async fn a_memory_pool_too_small_hands_over_to_datafusion() {
        let refusing = |limit| -> Arc<dyn MemoryPool> {
            Arc::new(RefusesFewGroups { limit, inner: Default::default() })
        };
        // 64 KB is too little for FewGroups' reservation (identity caches of 1024 entries per key
        // column and partition, tables, values, states): each partition hands over after its
        // first batch, and DataFusion's aggregation does the rest, with the same answer.
        let data = partitions(20_000, 40);
        let small = session_with_memory(data.clone(), true, Some(refusing(64 << 10)));
        let sql = "SELECT short, long, count(*), sum(v) FROM t GROUP BY short, long";
        let plan = small.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
        let batches = collect(Arc::clone(&plan), small.task_ctx()).await.unwrap();
        assert!(!batches.is_empty());
        assert!(handed_over(&plan) > 0, "nothing handed over");
        assert_eq!(answer(&small, sql).await.0, answer(&session(data, false), sql).await.0);
        // With room, nothing is handed over.
        let roomy = session_with_memory(partitions(20_000, 40), true, Some(refusing(64 << 20)));
        let plan = roomy.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
        collect(Arc::clone(&plan), roomy.task_ctx()).await.unwrap();
        assert_eq!(handed_over(&plan), 0);
    }
}
