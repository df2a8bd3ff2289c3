//! Rows of an export, through a [`Plan`], into batches of the `billing` table: every value
//! parsed by its column's type, every bad value reported with file, line, column and reason,
//! and each line attributed to a tenant where it belongs to one.

use std::{
    borrow::Cow,
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use arrow::array::{
    ArrayRef, Date32Builder, Decimal128Builder, MapBuilder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use chrono::{DateTime, Datelike, NaiveDate};
use tenantscope_schemas::{
    Table,
    focus::{FOCUS_COLUMNS, FocusKind},
    types::{MONEY_PRECISION, MONEY_SCALE, UTC},
};

use crate::error::{ImportError, RowError};

use super::{
    formats::{Extract, Plan},
    source::{Block, Chunk, Loaded, Row, for_each_row},
    value::{self, LastTimestamp},
};

/// Rows per batch handed to the lake writer.
const BATCH_ROWS: usize = 64 * 1024;

/// Which tenant a billing line belongs to: a tag (first configured key that is set), else the
/// tenant that owns the line's sub account (account-level tenancy). Otherwise the line is
/// shared cost, for allocation.
#[derive(Debug, Clone, Default)]
pub struct Attribution {
    /// Tag keys naming the tenant, compared without case (e.g. `tenant`, `tenant_id`).
    pub tag_keys: Vec<String>,
    /// Sub account id -> tenant id, from the `tenants` table's `accounts`.
    pub accounts: HashMap<String, String>,
}

impl Attribution {
    fn tenant<'s>(&'s self, tags: &'s [(String, String)], sub_account: Option<&str>) -> Option<&'s str> {
        for key in &self.tag_keys {
            if let Some((_, v)) =
                tags.iter().find(|(k, v)| k.eq_ignore_ascii_case(key) && !value::trim(v).is_empty())
            {
                return Some(value::trim(v));
            }
        }
        sub_account.and_then(|a| self.accounts.get(value::trim(a))).map(String::as_str)
    }

    /// Whether no line can be attributed (no tag keys, no accounts): every line is shared cost.
    fn is_empty(&self) -> bool {
        self.tag_keys.is_empty() && self.accounts.is_empty()
    }
}

/// What converting a file produced.
#[derive(Debug, Default)]
pub(crate) struct Converted {
    pub(crate) batches: Vec<RecordBatch>,
    pub(crate) rows: usize,
    pub(crate) errors: Vec<RowError>,
    /// Values with more than 10 decimals, rounded half-even.
    pub(crate) rounded: usize,
    /// First days of the billing periods the file covers.
    pub(crate) periods: BTreeSet<NaiveDate>,
    /// Billing accounts in the file (`None`: lines without one).
    pub(crate) accounts: BTreeSet<Option<String>>,
    /// Lines attributed to a tenant.
    pub(crate) attributed: usize,
}

enum Col {
    Text(StringBuilder),
    Money(Decimal128Builder),
    Time(TimestampMicrosecondBuilder),
    Map(MapBuilder<StringBuilder, StringBuilder>),
}

fn map_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    tenantscope_schemas::types::string_map_builder()
}

fn push_pairs(b: &mut MapBuilder<StringBuilder, StringBuilder>, pairs: &[(String, String)]) {
    for (k, v) in pairs {
        b.keys().append_value(k);
        b.values().append_value(v);
    }
    // Fails only when keys and values differ in number, which the loop rules out.
    let _ = b.append(true);
}

struct Builders {
    focus: Vec<Col>,
    extra: MapBuilder<StringBuilder, StringBuilder>,
    tenant: StringBuilder,
    source: StringBuilder,
    import_id: StringBuilder,
    period: Date32Builder,
    len: usize,
}

impl Builders {
    /// Builders sized for `rows` rows (text at 16 bytes a value; they grow past it).
    fn new(rows: usize) -> Self {
        let text = || StringBuilder::with_capacity(rows, rows * 16);
        let focus = FOCUS_COLUMNS
            .iter()
            .map(|c| match c.kind {
                FocusKind::String | FocusKind::Json => Col::Text(text()),
                FocusKind::Decimal => Col::Money(
                    Decimal128Builder::with_capacity(rows)
                        .with_data_type(arrow::datatypes::DataType::Decimal128(MONEY_PRECISION, MONEY_SCALE)),
                ),
                FocusKind::DateTime => {
                    Col::Time(TimestampMicrosecondBuilder::with_capacity(rows).with_timezone(UTC))
                }
                FocusKind::Tags => Col::Map(map_builder()),
            })
            .collect();
        Self {
            focus,
            extra: map_builder(),
            tenant: StringBuilder::new(),
            source: StringBuilder::new(),
            import_id: StringBuilder::new(),
            period: Date32Builder::new(),
            len: 0,
        }
    }

    fn finish(&mut self) -> Result<RecordBatch, ImportError> {
        let mut columns: Vec<ArrayRef> = self
            .focus
            .iter_mut()
            .map(|c| -> ArrayRef {
                match c {
                    Col::Text(b) => Arc::new(b.finish()),
                    Col::Money(b) => Arc::new(b.finish()),
                    Col::Time(b) => Arc::new(b.finish()),
                    Col::Map(b) => Arc::new(b.finish()),
                }
            })
            .collect();
        columns.push(Arc::new(self.extra.finish()));
        columns.push(Arc::new(self.tenant.finish()));
        columns.push(Arc::new(self.source.finish()));
        columns.push(Arc::new(self.import_id.finish()));
        columns.push(Arc::new(self.period.finish()));
        self.len = 0;
        let schema = Table::Billing.schema();
        // Map fields built here are nullable-valued like the table's; cast anything else.
        let columns =
            columns
                .into_iter()
                .zip(schema.fields())
                .map(|(c, f)| {
                    if c.data_type() == f.data_type() {
                        Ok(c)
                    } else {
                        arrow::compute::cast(&c, f.data_type())
                    }
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ImportError::Query(format!("internal: building billing rows: {e}")))?;
        RecordBatch::try_new(schema, columns)
            .map_err(|e| ImportError::Query(format!("internal: building billing rows: {e}")))
    }
}

const BILLED_COST: &str = "BilledCost";
const CHARGE_PERIOD_START: &str = "ChargePeriodStart";
const BILLING_PERIOD_START: &str = "BillingPeriodStart";
const BILLING_ACCOUNT_ID: &str = "BillingAccountId";
const SUB_ACCOUNT_ID: &str = "SubAccountId";

fn index_of(name: &str) -> usize {
    FOCUS_COLUMNS.iter().position(|c| c.focus_name == name).unwrap_or(0)
}

/// Converts one chunk of a file, in the file's order. Bad values are collected, not fatal: the
/// caller decides whether the file is rejected whole or its valid rows are imported.
pub(crate) fn convert(
    file: &Loaded,
    chunk: Chunk,
    plan: &Plan,
    source: &str,
    import_id: &str,
    attribution: &Attribution,
) -> Result<Converted, ImportError> {
    let mut converter = Converter::new(&file.name, plan, source, import_id, attribution, BATCH_ROWS);
    let mut block = Block::new(plan.headers.len());
    for_each_row(file, chunk, |row| {
        block.push_row(row);
        if block.is_full() {
            converter.block(&mut block)?;
        }
        Ok(())
    })?;
    converter.block(&mut block)?;
    converter.finish()
}

/// The FOCUS columns a line's place in the lake comes from (its sort key).
#[derive(Debug, Clone, Copy)]
struct KeyColumns {
    charge_start: usize,
    billing_period_start: usize,
    sub_account: usize,
}

impl KeyColumns {
    /// Their indexes in [`FOCUS_COLUMNS`] (looked up by name once).
    fn get() -> Self {
        static KEYS: std::sync::LazyLock<KeyColumns> = std::sync::LazyLock::new(|| KeyColumns {
            charge_start: index_of(CHARGE_PERIOD_START),
            billing_period_start: index_of(BILLING_PERIOD_START),
            sub_account: index_of(SUB_ACCOUNT_ID),
        });
        *KEYS
    }
}

/// Where a valid line sorts in the `billing` table, as [`Converter`] will write it: billing
/// period (days since the epoch), tenant, charge period start (microseconds). Computed from the
/// few columns it needs, so that rows can be put in the lake's order before the whole row is
/// converted. An invalid line gets some key; it is rejected when converted.
pub(crate) fn sort_key<'a>(
    plan: &Plan,
    attribution: &'a Attribution,
    row: &dyn Row,
    scratch: &'a mut KeyScratch,
) -> (i32, Option<&'a str>, i64) {
    let k = KeyColumns::get();
    let time = |i: usize, last: &mut LastTimestamp| {
        field(plan, i, row).ok().flatten().and_then(|t| last.parse(&t).ok())
    };
    let start = time(k.charge_start, &mut scratch.charge_start);
    let billing_start = time(k.billing_period_start, &mut scratch.billing_period_start);
    let period = billing_period(billing_start, start).map_or(0, days_since_epoch);
    if attribution.is_empty() {
        return (period, None, start.unwrap_or(i64::MIN));
    }
    // Tags only where a tag can name the tenant.
    let tags: &'a [(String, String)] = if attribution.tag_keys.is_empty() {
        &[]
    } else {
        let wanted = |raw: &str| may_name(raw, &attribution.tag_keys);
        match tags_of(plan, row, wanted, &mut scratch.tag_cache, |_, _, _| {}) {
            Cow::Borrowed(tags) => tags,
            Cow::Owned(tags) => {
                scratch.tags = tags;
                &scratch.tags
            }
        }
    };
    let sub = field(plan, k.sub_account, row).ok().flatten();
    (period, attribution.tenant(tags, sub.as_deref()), start.unwrap_or(i64::MIN))
}

/// What [`sort_key`] keeps from one line to the next.
#[derive(Debug, Default)]
pub(crate) struct KeyScratch {
    tags: Vec<(String, String)>,
    tag_cache: TagCache,
    charge_start: LastTimestamp,
    billing_period_start: LastTimestamp,
}

/// Whether tag text `raw` may hold one of `keys` (compared as tags are, without case): it names
/// one, or holds a JSON escape. Pass 1 of an import asks for the tenant of every line, and most
/// lines' tags name no tenant: those are not parsed.
fn may_name(raw: &str, keys: &[String]) -> bool {
    raw.contains('\\') || keys.iter().any(|k| contains_ignoring_case(raw.as_bytes(), k.as_bytes()))
}

/// Whether `hay` holds `needle`, ASCII case aside: compared where `needle`'s first letter is (in
/// either case), found by `memchr`, not at every offset.
fn contains_ignoring_case(hay: &[u8], needle: &[u8]) -> bool {
    let Some(&first) = needle.first() else { return true };
    memchr::memchr2_iter(first.to_ascii_lowercase(), first.to_ascii_uppercase(), hay)
        .any(|i| hay.get(i..i + needle.len()).is_some_and(|w| w.eq_ignore_ascii_case(needle)))
}

/// A line's billing period (its first day), from its billing period start, else its charge
/// period start (microseconds); `None` for a date out of range.
fn billing_period(billing_period_start: Option<i64>, charge_start: Option<i64>) -> Option<NaiveDate> {
    let day =
        DateTime::from_timestamp_micros(billing_period_start.or(charge_start).unwrap_or(0))?.date_naive();
    Some(day.with_day(1).unwrap_or(day))
}

/// The source columns [`sort_key`] reads (`None`: it may read any, through a computed value).
pub(crate) fn key_columns(plan: &Plan, attribution: &Attribution) -> Option<Vec<usize>> {
    let k = KeyColumns::get();
    let mut focus = vec![k.charge_start, k.billing_period_start];
    let mut sources = Vec::new();
    if !attribution.is_empty() {
        focus.push(k.sub_account);
        if !attribution.tag_keys.is_empty() {
            sources.extend(plan.tags.iter().copied());
            sources.extend(plan.tag_columns.iter().map(|(_, i)| *i));
        }
    }
    for i in focus {
        match &plan.focus[i] {
            Extract::Column(c) => sources.push(*c),
            Extract::Null | Extract::Const(_) => {}
            Extract::Computed(..) => return None,
        }
    }
    Some(sources)
}

/// The text of FOCUS column `i` in `row` (untrimmed), `None` when null or absent.
fn field<'r>(plan: &Plan, i: usize, row: &'r dyn Row) -> Result<Option<Cow<'r, str>>, String> {
    match &plan.focus[i] {
        Extract::Column(c) => Ok(not_null(row.get(*c)).map(Cow::Borrowed)),
        _ => derived(plan, i, row),
    }
}

/// [`field`] where the value does not come straight from a source column (then it is copied):
/// nothing, a constant, or computed from the row.
fn derived(plan: &Plan, i: usize, row: &dyn Row) -> Result<Option<Cow<'static, str>>, String> {
    let text = match &plan.focus[i] {
        Extract::Null => None,
        Extract::Column(c) => row.get(*c).map(|t| Cow::Owned(t.to_string())),
        Extract::Const(v) => Some(Cow::Borrowed(*v)),
        Extract::Computed(_, f) => f(row)?.map(Cow::Owned),
    };
    Ok(text.filter(|t| !value::is_null(t)))
}

/// `text` unless it is a null token (or empty).
fn not_null(text: Option<&str>) -> Option<&str> {
    text.filter(|t| !value::is_null(t))
}

/// A line's tags: from every tag column (JSON objects, braceless objects, label arrays), then
/// flattened tag columns; the first source of a key wins. A tag column's text that `wanted`
/// turns down is not parsed. `bad(column, raw, reason)` hears of tag values that do not parse.
/// Texts are parsed through `cache`; with one tag column and no flattened ones (the common
/// case) the answer is the cache's own, uncopied.
fn tags_of<'c>(
    plan: &Plan,
    row: &dyn Row,
    wanted: impl Fn(&str) -> bool,
    cache: &'c mut TagCache,
    mut bad: impl FnMut(&str, &str, String),
) -> Cow<'c, [(String, String)]> {
    let raw = |t: usize| row.get(t).filter(|r| !value::is_null(r) && wanted(r)).unwrap_or("");
    if let ([t], true) = (plan.tags.as_slice(), plan.tag_columns.is_empty()) {
        return match cache.parse(raw(*t)) {
            Ok(pairs) => Cow::Borrowed(pairs),
            Err(reason) => {
                bad(&plan.headers[*t], raw(*t), reason.clone());
                Cow::Borrowed(&[])
            }
        };
    }
    let mut pairs: Vec<(String, String)> = Vec::new();
    for &t in &plan.tags {
        match cache.parse(raw(t)) {
            Ok(p) => merge(&mut pairs, p.clone()),
            Err(reason) => bad(&plan.headers[t], raw(t), reason.clone()),
        }
    }
    let flattened = plan.tag_columns.iter().filter_map(|(k, i)| {
        row.get(*i).filter(|v| !value::is_null(v)).map(|v| (k.clone(), v.trim().to_string()))
    });
    merge(&mut pairs, flattened.collect());
    Cow::Owned(pairs)
}

/// Converts blocks of rows, in any order, into batches of the `billing` table: a column at a
/// time, each value parsed by its column's type straight into the column's builder. A row with
/// a bad value is appended all the same (the value as null) and cut out of its batch when the
/// batch is finished; bad rows are rare, and a file with any is usually rejected whole.
pub(crate) struct Converter<'a> {
    file: &'a str,
    plan: &'a Plan,
    source: &'a str,
    import_id: &'a str,
    attribution: &'a Attribution,
    batch_rows: usize,
    keys: KeyColumns,
    billed: usize,
    account: usize,
    b: Builders,
    /// Per row of the current batch: it is kept (no bad value).
    keep: Vec<bool>,
    out: Converted,
    last_account: Option<Option<String>>,
    last_period: Option<NaiveDate>,
    tag_cache: TagCache,
}

/// What the column pass learns of each row of a block, for the checks across columns.
struct RowFacts {
    bad: Vec<bool>,
    rounded: Vec<u8>,
    attributed: Vec<bool>,
    billed_null: Vec<bool>,
    charge_start: Vec<Option<i64>>,
    billing_period_start: Vec<Option<i64>>,
}

impl<'a> Converter<'a> {
    /// A converter for rows of the file named `file`, cutting batches at `batch_rows` rows.
    pub(crate) fn new(
        file: &'a str,
        plan: &'a Plan,
        source: &'a str,
        import_id: &'a str,
        attribution: &'a Attribution,
        batch_rows: usize,
    ) -> Self {
        Self {
            file,
            plan,
            source,
            import_id,
            attribution,
            batch_rows,
            keys: KeyColumns::get(),
            billed: index_of(BILLED_COST),
            account: index_of(BILLING_ACCOUNT_ID),
            b: Builders::new(batch_rows.min(1 << 20)),
            keep: Vec::with_capacity(batch_rows.min(1 << 20)),
            out: Converted::default(),
            last_account: None,
            last_period: None,
            tag_cache: TagCache::default(),
        }
    }

    /// Records a line that cannot be read at all as a bad line.
    fn reject(&mut self, line: u64, column: &str, raw: &str, reason: &str) {
        fail(&mut self.out.errors, self.file, line, column.to_string(), raw, reason.to_string());
    }

    /// Converts the rows of a block, which it then empties: appended to the current batch, their
    /// bad values recorded (a record that is not UTF-8 is a bad line like any other: the file is
    /// rejected with it named, or, skipping invalid rows, the rest is imported).
    pub(crate) fn block(&mut self, block: &mut Block) -> Result<(), ImportError> {
        for (line, text) in block.seal() {
            self.reject(line, "(line)", &text, "not UTF-8 text (exports must be UTF-8)");
        }
        let converted = self.sealed_block(block);
        block.clear();
        converted
    }

    fn sealed_block(&mut self, block: &Block) -> Result<(), ImportError> {
        let n = block.len();
        if n == 0 {
            return Ok(());
        }
        let errors_before = self.out.errors.len();
        let mut facts = RowFacts {
            bad: vec![false; n],
            rounded: vec![0; n],
            attributed: vec![false; n],
            billed_null: vec![false; n],
            charge_start: vec![None; n],
            billing_period_start: vec![None; n],
        };
        for i in 0..FOCUS_COLUMNS.len() {
            self.column(block, i, &mut facts);
        }
        self.extras(block);
        self.finish_rows(block, &facts);
        // Errors line by line, in column order within a line (the column pass found them a
        // column at a time).
        self.out.errors[errors_before..].sort_by_key(|e| e.line);
        if self.b.len >= self.batch_rows {
            self.cut()?;
        }
        Ok(())
    }

    /// FOCUS column `i` of every row of `block`, into its builder.
    fn column(&mut self, block: &Block, i: usize, facts: &mut RowFacts) {
        let (plan, file) = (self.plan, self.file);
        let errors = &mut self.out.errors;
        let label = || plan.label(i);
        match &mut self.b.focus[i] {
            Col::Map(b) => {
                let attribution = self.attribution;
                let tenant = &mut self.b.tenant;
                let cache = &mut self.tag_cache;
                for r in 0..block.len() {
                    let row = block.row(r);
                    let pairs = tags_of(
                        plan,
                        &row,
                        |_| true,
                        cache,
                        |column, raw, reason| {
                            fail(errors, file, row.line(), column.to_string(), raw, reason);
                            facts.bad[r] = true;
                        },
                    );
                    push_pairs(b, &pairs);
                    let who = if attribution.is_empty() {
                        None
                    } else {
                        let sub = field(plan, self.keys.sub_account, &row).ok().flatten();
                        attribution.tenant(&pairs, sub.as_deref())
                    };
                    facts.attributed[r] = who.is_some();
                    tenant.append_option(who);
                }
            }
            Col::Text(b) => values(plan, i, block, |r, got| match got {
                Ok(Some(text)) => b.append_value(value::trim(&text)),
                Ok(None) => b.append_null(),
                Err(reason) => {
                    fail(errors, file, block.line(r), label(), "", reason);
                    facts.bad[r] = true;
                    b.append_null();
                }
            }),
            Col::Money(b) => {
                let billed = i == self.billed;
                values(plan, i, block, |r, got| {
                    let parsed = match got {
                        Ok(Some(text)) => {
                            value::parse_decimal(&text).map(Some).map_err(|e| (text.into_owned(), e))
                        }
                        Ok(None) => Ok(None),
                        Err(reason) => Err((String::new(), reason)),
                    };
                    match parsed {
                        Ok(Some(m)) => {
                            facts.rounded[r] += u8::from(m.rounded);
                            b.append_value(m.units);
                        }
                        Ok(None) => {
                            facts.billed_null[r] |= billed;
                            b.append_null();
                        }
                        Err((raw, reason)) => {
                            fail(errors, file, block.line(r), label(), &raw, reason);
                            facts.bad[r] = true;
                            b.append_null();
                        }
                    }
                })
            }
            Col::Time(b) => {
                // The two key columns' values are kept for the checks across columns.
                let mut kept = if i == self.keys.charge_start {
                    Some(&mut facts.charge_start)
                } else if i == self.keys.billing_period_start {
                    Some(&mut facts.billing_period_start)
                } else {
                    None
                };
                let mut last = LastTimestamp::default();
                let bad = &mut facts.bad;
                values(plan, i, block, |r, got| {
                    let parsed = match got {
                        Ok(Some(text)) => last.parse(&text).map(Some).map_err(|e| (text.into_owned(), e)),
                        Ok(None) => Ok(None),
                        Err(reason) => Err((String::new(), reason)),
                    };
                    match parsed {
                        Ok(us) => {
                            b.append_option(us);
                            if let Some(k) = kept.as_deref_mut() {
                                k[r] = us;
                            }
                        }
                        Err((raw, reason)) => {
                            fail(errors, file, block.line(r), label(), &raw, reason);
                            bad[r] = true;
                            b.append_null();
                        }
                    }
                })
            }
        }
    }

    /// The export's own extra columns and maps, into `x_extra`.
    fn extras(&mut self, block: &Block) {
        let plan = self.plan;
        let mut extras: Vec<(String, String)> = Vec::new();
        for r in 0..block.len() {
            extras.clear();
            extras.extend(plan.extras.iter().filter_map(|(k, i)| {
                block.get(r, *i).filter(|v| !value::is_null(v)).map(|v| (k.clone(), v.to_string()))
            }));
            for (prefix, i) in &plan.extra_maps {
                // A map the export carries (CUR 2.0 `product`, `cost_category`): its entries,
                // not its JSON text, so `x_extra['product.instance_type']` works.
                let raw = block.get(r, *i).filter(|v| !value::is_null(v)).unwrap_or("");
                match value::parse_tags(raw) {
                    Ok(p) => extras.extend(p.into_iter().map(|(k, v)| (format!("{prefix}.{k}"), v))),
                    Err(_) => extras.push((prefix.clone(), raw.to_string())),
                }
            }
            push_pairs(&mut self.b.extra, &extras);
        }
    }

    /// The checks across columns (required values, the billing period), the columns of our
    /// own, and what the import reports of its good rows.
    fn finish_rows(&mut self, block: &Block, facts: &RowFacts) {
        let plan = self.plan;
        let out = &mut self.out;
        let b = &mut self.b;
        for r in 0..block.len() {
            let line = block.line(r);
            let mut bad = facts.bad[r];
            for (i, name, missing) in [
                (self.billed, BILLED_COST, facts.billed_null[r]),
                (self.keys.charge_start, CHARGE_PERIOD_START, facts.charge_start[r].is_none()),
            ] {
                if missing && !bad {
                    let reason = format!("{name} is required by FOCUS and is empty");
                    fail(&mut out.errors, self.file, line, plan.label(i), "", reason);
                    bad = true;
                }
            }
            let period =
                if bad { None } else { billing_period(facts.billing_period_start[r], facts.charge_start[r]) };
            if period.is_none() && !bad {
                let label = plan.label(self.keys.charge_start);
                fail(&mut out.errors, self.file, line, label, "", "date out of range".to_string());
                bad = true;
            }
            b.period.append_value(period.map_or(0, days_since_epoch));
            b.source.append_value(self.source);
            b.import_id.append_value(self.import_id);
            b.len += 1;
            self.keep.push(!bad);
            let Some(period) = period else { continue };
            if self.last_period != Some(period) {
                out.periods.insert(period);
                self.last_period = Some(period);
            }
            let row = block.row(r);
            let account = field(plan, self.account, &row).ok().flatten();
            let account = account.as_deref().map(value::trim);
            // Lines come in runs of one account: a set lookup (and a copy) only when it changes.
            if self.last_account.as_ref().map(Option::as_deref) != Some(account) {
                out.accounts.insert(account.map(str::to_string));
                self.last_account = Some(account.map(str::to_string));
            }
            out.attributed += usize::from(facts.attributed[r]);
            out.rounded += usize::from(facts.rounded[r]);
            out.rows += 1;
        }
    }

    /// Ends the current batch, without its bad rows.
    fn cut(&mut self) -> Result<(), ImportError> {
        let batch = self.b.finish()?;
        let batch = if self.keep.iter().all(|k| *k) {
            batch
        } else {
            let keep = arrow::array::BooleanArray::from(std::mem::take(&mut self.keep));
            arrow::compute::filter_record_batch(&batch, &keep)
                .map_err(|e| ImportError::Query(format!("internal: dropping bad rows: {e}")))?
        };
        self.keep.clear();
        if batch.num_rows() > 0 {
            self.out.batches.push(batch);
        }
        Ok(())
    }

    /// The batches and what was found.
    pub(crate) fn finish(mut self) -> Result<Converted, ImportError> {
        if self.b.len > 0 {
            self.cut()?;
        }
        Ok(self.out)
    }
}

/// A tag text's pairs, or why it is not tags.
type ParsedTags = Result<Vec<(String, String)>, String>;

/// Parsed tag texts by their text: an export repeats a resource's tags on every line of it,
/// and parsing the JSON into owned pairs was a large part of converting a line. Bounded: it
/// starts again past [`TagCache::MAX`] texts.
#[derive(Debug, Default)]
struct TagCache {
    /// By a hash of the text: the text and what it parsed to. (foldhash, not the standard
    /// SipHash: hashing each line's tags twice with SipHash was 2% of converting.)
    parsed: HashMap<u64, (String, ParsedTags), foldhash::fast::RandomState>,
    hasher: foldhash::fast::RandomState,
}

impl TagCache {
    const MAX: usize = 4096;

    fn parse(&mut self, raw: &str) -> &ParsedTags {
        use std::hash::BuildHasher;
        // No tags (most lines of pass 1, which reads tags only where they may name a tenant).
        static NONE: ParsedTags = Ok(Vec::new());
        if raw.is_empty() {
            return &NONE;
        }
        let hash = self.hasher.hash_one(raw);
        let known = self.parsed.get(&hash).is_some_and(|(text, _)| text == raw);
        if !known {
            if self.parsed.len() >= Self::MAX {
                self.parsed.clear();
            }
            // A different text of the same hash is replaced.
            self.parsed.insert(hash, (raw.to_string(), value::parse_tags(raw)));
        }
        &self.parsed[&hash].1
    }
}

/// Calls `f` with each row's value of FOCUS column `i` (`None` for null), as [`field`] reads
/// it; a value straight from a source column (almost every one) without going through `Row`,
/// and an absent column without a call per row (both were the hot path of a FOCUS import).
fn values<'b>(
    plan: &Plan,
    i: usize,
    block: &'b Block,
    mut f: impl FnMut(usize, Result<Option<Cow<'b, str>>, String>),
) {
    match &plan.focus[i] {
        Extract::Column(c) => {
            (0..block.len()).for_each(|r| f(r, Ok(not_null(block.get(r, *c)).map(Cow::Borrowed))))
        }
        // A FOCUS column the export does not have (a 1.0 file has a score of 1.2's).
        Extract::Null => (0..block.len()).for_each(|r| f(r, Ok(None))),
        _ => (0..block.len()).for_each(|r| f(r, derived(plan, i, &block.row(r)))),
    }
}

fn fail(errors: &mut Vec<RowError>, file: &str, line: u64, column: String, raw: &str, reason: String) {
    errors.push(RowError {
        file: file.to_string(),
        line,
        column,
        value: raw.chars().take(200).collect(),
        reason,
    });
}

impl Converted {
    /// Appends the result of the next chunk.
    pub(crate) fn extend(&mut self, other: Converted) {
        self.batches.extend(other.batches);
        self.rows += other.rows;
        self.errors.extend(other.errors);
        self.rounded += other.rounded;
        self.periods.extend(other.periods);
        self.accounts.extend(other.accounts);
        self.attributed += other.attributed;
    }
}

/// Adds `more` to `pairs` where the key is new (the first source of a key wins), keeping keys
/// sorted.
fn merge(pairs: &mut Vec<(String, String)>, more: Vec<(String, String)>) {
    for (k, v) in more {
        if let Err(at) = pairs.binary_search_by(|(x, _)| x.as_str().cmp(&k)) {
            pairs.insert(at, (k, v));
        }
    }
}

fn days_since_epoch(d: NaiveDate) -> i32 {
    (d - epoch()).num_days() as i32
}

fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()
}

/// The date [`days_since_epoch`] made `days` of (`None` out of range).
pub(crate) fn date_of_days(days: i32) -> Option<NaiveDate> {
    epoch().checked_add_signed(chrono::TimeDelta::days(days.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::Format;

    struct Fields(Vec<&'static str>);

    impl Row for Fields {
        fn get(&self, col: usize) -> Option<&str> {
            self.0.get(col).copied()
        }
        fn line(&self) -> u64 {
            2
        }
    }

    #[test]
    fn a_key_is_found_in_tag_text_in_any_case_and_anywhere() {
        for (hay, needle, found) in [
            ("", "tenant", false),
            ("tenant", "", true),
            (r#"{"Tenant":"a"}"#, "tenant", true),
            (r#"{"env":"x","TENANT.ID":"a"}"#, "tenant.id", true),
            ("tenan", "tenant", false),
            ("ttenant", "tenant", true),
            ("t", "t", true),
            (r#"{"team":"tenancy"}"#, "tenant", false),
        ] {
            assert_eq!(contains_ignoring_case(hay.as_bytes(), needle.as_bytes()), found, "{hay} {needle}");
        }
    }

    #[test]
    fn remembered_tags_are_the_tags_parsed_again() {
        let mut cache = TagCache::default();
        let texts: Vec<String> = (0..TagCache::MAX + 10)
            .map(|i| format!(r#"{{"team":"t{}","env":"prod"}}"#, i % (TagCache::MAX + 3)))
            .chain(["not tags at all".to_string(), String::new(), r#""a": "b""#.to_string()])
            .collect();
        // Twice over, past the bound (it starts again) and back.
        for text in texts.iter().chain(texts.iter().rev()) {
            assert_eq!(cache.parse(text), &value::parse_tags(text), "{text}");
        }
        assert!(cache.parsed.len() <= TagCache::MAX);
        assert!(cache.parse("not tags at all").is_err());
    }

    #[test]
    fn the_first_pass_finds_the_tenant_tag_wherever_the_full_parse_does() {
        let plan = Plan::new(Format::Focus, vec!["ChargePeriodStart".into(), "Tags".into()]);
        let attribution =
            Attribution { tag_keys: vec!["Tenant".into(), "team".into()], accounts: HashMap::new() };
        let mut found = Vec::new();
        for tags in [
            r#"{"env":"prod"}"#,
            r#"{"tenant":"acme"}"#,
            r#"{" TENANT ":"acme","team":"b"}"#,
            r#"{"team":"b"}"#,
            r#"{"ten\u0061nt":"escaped"}"#,
            r#""tenant": "braceless""#,
            "tenant=kv, env=prod",
            r#"[{"key":"tenant","value":"label"}]"#,
            "not tags at all",
        ] {
            let row = Fields(vec!["2026-11-01T00:00:00Z", tags]);
            let full = tags_of(&plan, &row, |_| true, &mut TagCache::default(), |_, _, _| {}).into_owned();
            let mut scratch = KeyScratch::default();
            let (_, tenant, _) = sort_key(&plan, &attribution, &row, &mut scratch);
            assert_eq!(tenant, attribution.tenant(&full, None), "{tags}");
            found.push(tenant.map(str::to_string));
        }
        let expected = [
            None,
            Some("acme"),
            Some("acme"),
            Some("b"),
            Some("escaped"),
            Some("braceless"),
            Some("kv"),
            Some("label"),
            None,
        ];
        assert_eq!(found, expected.map(|t| t.map(str::to_string)));
    }
}
