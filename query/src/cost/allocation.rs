//! `cost_allocation`: every billing line's cost, split between tenants.
//!
//! Lines an import attributed to a tenant (by tag or account) are that tenant's (`direct`,
//! rule `import`). Each other line goes through the first allocation rule that matches it:
//! `direct` (a tag names the tenant), `proportional` (each tenant's usage of a meter in the
//! line's charge period), `even` (the tenants with any usage in the period; all tenants if none
//! has any), `fixed` (configured weights). What no rule allocates stays with `tenant_id` NULL and
//! method `unallocated`.
//!
//! Money is exact: each share is `cost * weight / total` in 256-bit integers, truncated to the
//! tenth decimal, and the remainder goes to the tenant with the largest weight, so that per
//! line group, allocated + unallocated = billed, to the last digit.
//!
//! Lines are first summed per (period, charge period, currency, provider, service, category,
//! charge category, account, tenant, and the tags rules look at): the table has one row per
//! such group and tenant, not per line. It is computed when read, from the current `billing`,
//! `usage` and `tenants`, so it is never stale.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    sync::Arc,
};

use arrow::{
    array::{
        Array, ArrayRef, AsArray, Date32Builder, Decimal128Builder, RecordBatch, StringBuilder,
        TimestampMicrosecondBuilder,
    },
    compute::cast,
    datatypes::{DataType, Date32Type, Decimal128Type, Schema, SchemaRef, TimestampMicrosecondType, i256},
};
use async_trait::async_trait;
use datafusion::{
    catalog::{Session, TableProvider},
    datasource::{TableType, memory::MemorySourceConfig},
    error::{DataFusionError, Result},
    execution::runtime_env::RuntimeEnv,
    logical_expr::Expr,
    physical_plan::ExecutionPlan,
};
use tenantscope_schemas::types::{UTC, money, nullable, required, timestamp};

use super::{
    AllocationRule, Method,
    materialized::{KeptBatches, session},
};
use crate::provider::LakeTableProvider;

const HOUR_MICROS: i64 = 3_600_000_000;

/// The schema of `cost_allocation`.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        required("billing_period", DataType::Date32),
        nullable("charge_period_start", timestamp()),
        nullable("charge_period_end", timestamp()),
        nullable("billing_currency", DataType::Utf8),
        nullable("provider_name", DataType::Utf8),
        nullable("service_name", DataType::Utf8),
        nullable("service_category", DataType::Utf8),
        nullable("charge_category", DataType::Utf8),
        nullable("sub_account_id", DataType::Utf8),
        nullable("tenant_id", DataType::Utf8),
        nullable("allocation_rule", DataType::Utf8),
        required("allocation_method", DataType::Utf8),
        nullable("billed_cost", money()),
        nullable("effective_cost", money()),
    ]))
}

const DIMS: [&str; 10] = [
    "billing_period",
    "charge_period_start",
    "charge_period_end",
    "billing_currency",
    "provider_name",
    "service_name",
    "service_category",
    "charge_category",
    "sub_account_id",
    "tenant_id",
];

/// Splits `amount` by `weights` exactly: shares truncated, the remainder to the largest weight
/// (the first tenant in order among equals). Zero and negative weights get nothing; `None`
/// when no weight is positive.
pub fn split(amount: i128, weights: &BTreeMap<String, i128>) -> Option<Vec<(String, i128)>> {
    let positive: Vec<(&String, i128)> =
        weights.iter().filter(|(_, w)| **w > 0).map(|(t, w)| (t, *w)).collect();
    let total: i128 = positive.iter().map(|(_, w)| *w).sum();
    if total <= 0 {
        return None;
    }
    let (a, t) = (i256::from_i128(amount), i256::from_i128(total));
    let mut out: Vec<(String, i128)> = positive
        .iter()
        .map(|(tenant, w)| {
            let share = a.wrapping_mul(i256::from_i128(*w)).wrapping_div(t);
            ((*tenant).clone(), share.as_i128())
        })
        .collect();
    let allocated: i128 = out.iter().map(|(_, v)| *v).sum();
    let largest =
        positive.iter().enumerate().max_by(|x, y| x.1.1.cmp(&y.1.1).then(y.0.cmp(&x.0))).map(|(i, _)| i);
    if let Some(i) = largest {
        out[i].1 += amount - allocated;
    }
    Some(out)
}

/// Usage per meter and hour, for shares.
#[derive(Default)]
struct UsageIndex {
    tenants: Vec<String>,
    by_meter: HashMap<String, BTreeMap<i64, Vec<(u32, i128)>>>,
    active: BTreeMap<i64, BTreeSet<u32>>,
    cache: HashMap<(Option<String>, i64, i64), BTreeMap<String, i128>>,
}

impl UsageIndex {
    fn weights(&mut self, meter: Option<&str>, start: i64, end: i64) -> BTreeMap<String, i128> {
        let key = (meter.map(str::to_string), start, end);
        if let Some(w) = self.cache.get(&key) {
            return w.clone();
        }
        let mut w: BTreeMap<String, i128> = BTreeMap::new();
        match meter {
            Some(m) => {
                if let Some(hours) = self.by_meter.get(m) {
                    for (_, row) in hours.range(start..end.max(start + 1)) {
                        for (t, q) in row {
                            *w.entry(self.tenants[*t as usize].clone()).or_default() += q;
                        }
                    }
                }
            }
            None => {
                for (_, set) in self.active.range(start..end.max(start + 1)) {
                    for t in set {
                        w.insert(self.tenants[*t as usize].clone(), 1);
                    }
                }
            }
        }
        self.cache.insert(key, w.clone());
        w
    }
}

/// The provider behind `cost_allocation`: computed from the providers of `billing`, `usage`
/// and `tenants`, and kept until one of them has a new version (a query such as
/// `tenant_margin` reads the table more than once; dashboards read it over and over).
pub struct CostAllocationProvider {
    billing: Arc<LakeTableProvider>,
    usage: Arc<LakeTableProvider>,
    tenants: Arc<LakeTableProvider>,
    rules: Arc<Vec<AllocationRule>>,
    runtime: Arc<RuntimeEnv>,
    schema: SchemaRef,
    kept: KeptBatches,
}

impl fmt::Debug for CostAllocationProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CostAllocationProvider").field("rules", &self.rules.len()).finish_non_exhaustive()
    }
}

impl CostAllocationProvider {
    /// A provider over these tables with these rules.
    pub fn new(
        billing: Arc<LakeTableProvider>,
        usage: Arc<LakeTableProvider>,
        tenants: Arc<LakeTableProvider>,
        rules: Vec<AllocationRule>,
        runtime: Arc<RuntimeEnv>,
    ) -> Self {
        Self {
            billing,
            usage,
            tenants,
            rules: Arc::new(rules),
            runtime,
            schema: schema(),
            kept: KeptBatches::default(),
        }
    }

    /// The table for the current versions of its inputs, computed once per set of versions.
    pub async fn current(&self) -> Result<Vec<RecordBatch>> {
        self.kept.get(&[&self.billing, &self.usage, &self.tenants], self.compute()).await
    }

    fn tag_keys(&self) -> Vec<String> {
        let mut keys = BTreeSet::new();
        for r in self.rules.iter() {
            keys.extend(r.filter.tags.keys().cloned());
            if let Some(t) = &r.tag {
                keys.insert(t.clone());
            }
        }
        keys.into_iter().collect()
    }

    /// Computes the whole table.
    pub async fn compute(&self) -> Result<Vec<RecordBatch>> {
        let ctx = session(
            &[
                ("billing", Arc::clone(&self.billing)),
                ("usage", Arc::clone(&self.usage)),
                ("tenants", Arc::clone(&self.tenants)),
            ],
            &self.runtime,
        )?;
        let tag_keys = self.tag_keys();
        let tags: Vec<String> =
            tag_keys.iter().map(|k| format!("CAST(tags['{}'] AS VARCHAR)", k.replace('\'', "''"))).collect();
        let dims: Vec<String> = DIMS.iter().map(|d| d.to_string()).chain(tags.iter().cloned()).collect();
        let select: Vec<String> = DIMS
            .iter()
            .map(|d| d.to_string())
            .chain(tags.iter().enumerate().map(|(i, t)| format!("{t} AS tag_{i}")))
            .collect();
        let sql = format!(
            "SELECT {}, sum(billed_cost) AS billed_cost, sum(effective_cost) AS effective_cost \
             FROM billing GROUP BY {}",
            select.join(", "),
            dims.join(", ")
        );
        let lines = ctx.sql(&sql).await?.collect().await?;
        let usage = ctx
            .sql("SELECT hour, tenant_id, meter, quantity FROM usage WHERE tenant_id IS NOT NULL")
            .await?
            .collect()
            .await?;
        let all_tenants = ctx.sql("SELECT DISTINCT tenant_id FROM tenants").await?.collect().await?;
        let mut index = UsageIndex::default();
        let mut ids: HashMap<String, u32> = HashMap::new();
        for b in &usage {
            let hour = ts(b.column(0))?;
            let tenant = text(b.column(1))?;
            let meter = text(b.column(2))?;
            let qty = dec(b.column(3))?;
            let (hour, tenant, meter, qty) = (
                hour.as_primitive::<TimestampMicrosecondType>(),
                tenant.as_string::<i32>(),
                meter.as_string::<i32>(),
                qty.as_primitive::<Decimal128Type>(),
            );
            for i in 0..b.num_rows() {
                if hour.is_null(i) || tenant.is_null(i) || meter.is_null(i) {
                    continue;
                }
                let next = ids.len() as u32;
                let t = *ids.entry(tenant.value(i).to_string()).or_insert_with(|| {
                    index.tenants.push(tenant.value(i).to_string());
                    next
                });
                let q = if qty.is_null(i) { 0 } else { qty.value(i) };
                let h = hour.value(i);
                index
                    .by_meter
                    .entry(meter.value(i).to_string())
                    .or_default()
                    .entry(h)
                    .or_default()
                    .push((t, q));
                index.active.entry(h).or_default().insert(t);
            }
        }
        let mut everyone = BTreeMap::new();
        for b in &all_tenants {
            let t = text(b.column(0))?;
            for v in t.as_string::<i32>().iter().flatten() {
                everyone.insert(v.to_string(), 1_i128);
            }
        }
        let mut out = Out::default();
        for b in &lines {
            self.allocate_batch(b, &tag_keys, &mut index, &everyone, &mut out)?;
        }
        Ok(vec![out.finish(&self.schema)?])
    }

    fn allocate_batch(
        &self,
        b: &RecordBatch,
        tag_keys: &[String],
        index: &mut UsageIndex,
        everyone: &BTreeMap<String, i128>,
        out: &mut Out,
    ) -> Result<()> {
        let period = cast(b.column(0), &DataType::Date32)?;
        let period = period.as_primitive::<Date32Type>();
        let start = ts(b.column(1))?;
        let end = ts(b.column(2))?;
        let (start, end) = (
            start.as_primitive::<TimestampMicrosecondType>(),
            end.as_primitive::<TimestampMicrosecondType>(),
        );
        let strings: Vec<ArrayRef> = (3..10).map(|i| text(b.column(i))).collect::<Result<_>>()?;
        let s = |c: usize, i: usize| -> Option<&str> {
            let a = strings[c - 3].as_string::<i32>();
            (!a.is_null(i)).then(|| a.value(i))
        };
        let n_tags = tag_keys.len();
        let tags: Vec<ArrayRef> = (0..n_tags).map(|k| text(b.column(10 + k))).collect::<Result<_>>()?;
        let billed = dec(b.column(10 + n_tags))?;
        let effective = dec(b.column(11 + n_tags))?;
        let (billed, effective) =
            (billed.as_primitive::<Decimal128Type>(), effective.as_primitive::<Decimal128Type>());
        for i in 0..b.num_rows() {
            let line = Line {
                period: period.value(i),
                start: (!start.is_null(i)).then(|| start.value(i)),
                end: (!end.is_null(i)).then(|| end.value(i)),
                currency: s(3, i),
                provider: s(4, i),
                service: s(5, i),
                category: s(6, i),
                charge: s(7, i),
                account: s(8, i),
                billed: (!billed.is_null(i)).then(|| billed.value(i)),
                effective: (!effective.is_null(i)).then(|| effective.value(i)),
            };
            if let Some(tenant) = s(9, i) {
                out.push(&line, Some(tenant), Some("import"), "direct", line.billed, line.effective);
                continue;
            }
            let tag = |key: &str| -> Option<&str> {
                let k = tag_keys.iter().position(|t| t == key)?;
                let a = tags[k].as_string::<i32>();
                (!a.is_null(i) && !a.value(i).is_empty()).then(|| a.value(i))
            };
            let mut done = false;
            for rule in self.rules.iter() {
                let f = &rule.filter;
                let matched = f.service_name.as_ref().is_none_or(|m| m.matches(line.service))
                    && f.service_category.as_ref().is_none_or(|m| m.matches(line.category))
                    && f.charge_category.as_ref().is_none_or(|m| m.matches(line.charge))
                    && f.sub_account_id.as_ref().is_none_or(|m| m.matches(line.account))
                    && f.provider_name.as_ref().is_none_or(|m| m.matches(line.provider))
                    && f.tags.iter().all(|(k, m)| m.matches(tag(k)));
                if !matched {
                    continue;
                }
                let (s_us, e_us) = match (line.start, line.end) {
                    (Some(s), Some(e)) if e > s => (s, e),
                    (Some(s), _) => (s, s + HOUR_MICROS),
                    _ => (0, 0),
                };
                let weights: Option<BTreeMap<String, i128>> = match rule.method {
                    Method::Direct => match rule.tag.as_deref().and_then(tag) {
                        Some(t) => Some([(t.to_string(), 1)].into()),
                        // No tenant tag on this line: the next rule may take it.
                        None => continue,
                    },
                    Method::Proportional => Some(index.weights(rule.meter.as_deref(), s_us, e_us)),
                    Method::Even => {
                        let active = index.weights(None, s_us, e_us);
                        Some(if active.is_empty() { everyone.clone() } else { active })
                    }
                    Method::Fixed => Some(
                        rule.weights
                            .iter()
                            .map(|(t, w)| (t.clone(), (w * 1_000_000.0).round() as i128))
                            .collect(),
                    ),
                };
                let weights = weights.unwrap_or_default();
                let billed_split = line.billed.map(|a| split(a, &weights));
                let effective_split = line.effective.map(|a| split(a, &weights));
                match (billed_split, effective_split) {
                    (Some(None), _) | (_, Some(None)) | (None, None) => {
                        // Nothing to weigh by (no usage in the period): unallocated, under this rule.
                        out.push(&line, None, Some(&rule.name), "unallocated", line.billed, line.effective);
                    }
                    (b, e) => {
                        let b: HashMap<String, i128> = b.flatten().unwrap_or_default().into_iter().collect();
                        let e: HashMap<String, i128> = e.flatten().unwrap_or_default().into_iter().collect();
                        let tenants: BTreeSet<&String> = b.keys().chain(e.keys()).collect();
                        for t in tenants {
                            out.push(
                                &line,
                                Some(t),
                                Some(&rule.name),
                                rule.method.name(),
                                line.billed.map(|_| b.get(t).copied().unwrap_or(0)),
                                line.effective.map(|_| e.get(t).copied().unwrap_or(0)),
                            );
                        }
                    }
                }
                done = true;
                break;
            }
            if !done {
                out.push(&line, None, None, "unallocated", line.billed, line.effective);
            }
        }
        Ok(())
    }
}

struct Line<'a> {
    period: i32,
    start: Option<i64>,
    end: Option<i64>,
    currency: Option<&'a str>,
    provider: Option<&'a str>,
    service: Option<&'a str>,
    category: Option<&'a str>,
    charge: Option<&'a str>,
    account: Option<&'a str>,
    billed: Option<i128>,
    effective: Option<i128>,
}

fn text(a: &ArrayRef) -> Result<ArrayRef> {
    Ok(cast(a, &DataType::Utf8)?)
}

fn ts(a: &ArrayRef) -> Result<ArrayRef> {
    Ok(cast(a, &timestamp())?)
}

fn dec(a: &ArrayRef) -> Result<ArrayRef> {
    Ok(cast(a, &money())?)
}

#[derive(Default)]
struct Out {
    period: Date32Builder,
    start: TimestampMicrosecondBuilder,
    end: TimestampMicrosecondBuilder,
    strings: [StringBuilder; 9],
    billed: Decimal128Builder,
    effective: Decimal128Builder,
}

impl Out {
    fn push(
        &mut self,
        line: &Line<'_>,
        tenant: Option<&str>,
        rule: Option<&str>,
        method: &str,
        billed: Option<i128>,
        effective: Option<i128>,
    ) {
        self.period.append_value(line.period);
        self.start.append_option(line.start);
        self.end.append_option(line.end);
        let values = [
            line.currency,
            line.provider,
            line.service,
            line.category,
            line.charge,
            line.account,
            tenant,
            rule,
            Some(method),
        ];
        for (b, v) in self.strings.iter_mut().zip(values) {
            b.append_option(v);
        }
        self.billed.append_option(billed);
        self.effective.append_option(effective);
    }

    fn finish(mut self, schema: &SchemaRef) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.period.finish()),
            Arc::new(self.start.finish().with_timezone(UTC)),
            Arc::new(self.end.finish().with_timezone(UTC)),
        ];
        for b in self.strings.iter_mut() {
            columns.push(Arc::new(b.finish()));
        }
        columns.push(Arc::new(self.billed.finish().with_precision_and_scale(38, 10)?));
        columns.push(Arc::new(self.effective.finish().with_precision_and_scale(38, 10)?));
        Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
    }
}

#[async_trait]
impl TableProvider for CostAllocationProvider {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batches = self.current().await?;
        let exec = MemorySourceConfig::try_new_exec(&[batches], self.schema(), projection.cloned())?;
        Ok(exec)
    }
}

/// Checks rules for mistakes a reader would otherwise only see as odd numbers.
pub fn check_rules(rules: &[AllocationRule], meters: &[String]) -> std::result::Result<(), DataFusionError> {
    for r in rules {
        let bad =
            |why: String| DataFusionError::Configuration(format!("allocation rule {:?}: {why}", r.name));
        match r.method {
            Method::Proportional => match &r.meter {
                None => return Err(bad("proportional needs a meter".into())),
                Some(m) if !meters.contains(m) => {
                    return Err(bad(format!(
                        "meter {m:?} is not configured (meters: {})",
                        meters.join(", ")
                    )));
                }
                _ => {}
            },
            Method::Direct if r.tag.is_none() => {
                return Err(bad("direct needs the tag that names the tenant".into()));
            }
            Method::Fixed if !r.weights.values().any(|w| *w > 0.0) => {
                return Err(bad("fixed needs weights, at least one positive".into()));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(pairs: &[(&str, i128)]) -> BTreeMap<String, i128> {
        pairs.iter().map(|(t, w)| (t.to_string(), *w)).collect()
    }

    #[test]
    fn split_is_exact_and_the_remainder_goes_to_the_largest_weight() {
        // 100.0000000000 in three equal shares: 33.3333333333 x3 + 0.0000000001 to the first.
        let got = split(100_0000000000, &w(&[("a", 1), ("b", 1), ("c", 1)])).unwrap();
        assert_eq!(
            got,
            vec![("a".into(), 33_3333333334), ("b".into(), 33_3333333333), ("c".into(), 33_3333333333)]
        );
        // Proportional 1:3 of 10.
        let got = split(10_0000000000, &w(&[("a", 1), ("b", 3)])).unwrap();
        assert_eq!(got, vec![("a".into(), 2_5000000000), ("b".into(), 7_5000000000)]);
        // Credits (negative) split the same way and still sum exactly.
        let got = split(-7, &w(&[("a", 2), ("b", 1)])).unwrap();
        assert_eq!(got.iter().map(|(_, v)| v).sum::<i128>(), -7);
        // Huge amounts and weights do not overflow (256-bit intermediate).
        let big = 10_i128.pow(30);
        let got = split(big, &w(&[("a", 10_i128.pow(25)), ("b", 3 * 10_i128.pow(25))])).unwrap();
        assert_eq!(got[0].1 + got[1].1, big);
        assert_eq!(got[0].1, big / 4);
        // Nothing to weigh by.
        assert_eq!(split(5, &w(&[("a", 0)])), None);
        assert_eq!(split(5, &w(&[])), None);
    }
}
