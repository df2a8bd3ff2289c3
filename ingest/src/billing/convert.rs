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
    source::{Chunk, Loaded, Row, for_each_row},
    value,
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

enum Parsed<'r> {
    Null,
    Text(Cow<'r, str>),
    Money(i128),
    Time(i64),
    Pairs(Vec<(String, String)>),
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
    for_each_row(file, chunk, |row| converter.row(row))?;
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
    tags: &'a mut Vec<(String, String)>,
) -> (i32, Option<&'a str>, i64) {
    let k = KeyColumns::get();
    let time = |i: usize| field(plan, i, row).ok().flatten().and_then(|t| value::parse_timestamp(&t).ok());
    let start = time(k.charge_start);
    let period = billing_period(time(k.billing_period_start), start).map_or(0, days_since_epoch);
    if attribution.is_empty() {
        return (period, None, start.unwrap_or(i64::MIN));
    }
    // Tags only where a tag can name the tenant.
    *tags = if attribution.tag_keys.is_empty() {
        Vec::new()
    } else {
        tags_of(plan, row, |raw| may_name(raw, &attribution.tag_keys), |_, _, _| {})
    };
    let tags: &'a [(String, String)] = tags;
    let sub = field(plan, k.sub_account, row).ok().flatten();
    (period, attribution.tenant(tags, sub.as_deref()), start.unwrap_or(i64::MIN))
}

/// Whether tag text `raw` may hold one of `keys` (compared as tags are, without case): it names
/// one, or holds a JSON escape. Pass 1 of an import asks for the tenant of every line, and most
/// lines' tags name no tenant: those are not parsed.
fn may_name(raw: &str, keys: &[String]) -> bool {
    raw.contains('\\')
        || keys.iter().any(|k| {
            let k = k.as_bytes();
            k.is_empty() || raw.as_bytes().windows(k.len()).any(|w| w.eq_ignore_ascii_case(k))
        })
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
    let text = match &plan.focus[i] {
        Extract::Null => None,
        Extract::Column(c) => row.get(*c).map(Cow::Borrowed),
        Extract::Const(v) => Some(Cow::Borrowed(*v)),
        Extract::Computed(_, f) => f(row)?.map(Cow::Owned),
    };
    Ok(text.filter(|t| !value::is_null(t)))
}

/// A line's tags: from every tag column (JSON objects, braceless objects, label arrays), then
/// flattened tag columns; the first source of a key wins. A tag column's text that `wanted`
/// turns down is not parsed. `bad(column, raw, reason)` hears of tag values that do not parse.
fn tags_of(
    plan: &Plan,
    row: &dyn Row,
    wanted: impl Fn(&str) -> bool,
    mut bad: impl FnMut(&str, &str, String),
) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for &t in &plan.tags {
        let raw = row.get(t).filter(|r| !value::is_null(r) && wanted(r)).unwrap_or("");
        match value::parse_tags(raw) {
            Ok(p) => merge(&mut pairs, p),
            Err(reason) => bad(&plan.headers[t], raw, reason),
        }
    }
    let flattened = plan.tag_columns.iter().filter_map(|(k, i)| {
        row.get(*i).filter(|v| !value::is_null(v)).map(|v| (k.clone(), v.trim().to_string()))
    });
    merge(&mut pairs, flattened.collect());
    pairs
}

/// Converts rows, one at a time in any order, into batches of the `billing` table.
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
    tags: usize,
    b: Builders,
    out: Converted,
    last_account: Option<Option<String>>,
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
            tags: FOCUS_COLUMNS.iter().position(|c| c.kind == FocusKind::Tags).unwrap_or(0),
            b: Builders::new(batch_rows.min(1 << 20)),
            out: Converted::default(),
            last_account: None,
        }
    }

    fn fail(&mut self, line: u64, column: String, raw: &str, reason: String) {
        self.out.errors.push(RowError {
            file: self.file.to_string(),
            line,
            column,
            value: raw.chars().take(200).collect(),
            reason,
        });
    }

    /// Records a line that cannot be read at all as a bad line.
    pub(crate) fn reject(&mut self, line: u64, column: &str, raw: &str, reason: &str) {
        self.fail(line, column.to_string(), raw, reason.to_string());
    }

    /// Converts one row: appended to the current batch, or its bad values recorded.
    pub(crate) fn row(&mut self, row: &dyn Row) -> Result<(), ImportError> {
        let plan = self.plan;
        let line = row.line();
        let mut parsed: Vec<Parsed<'_>> = Vec::with_capacity(FOCUS_COLUMNS.len());
        let mut bad = false;
        let mut rounded = 0;
        for (i, col) in FOCUS_COLUMNS.iter().enumerate() {
            if col.kind == FocusKind::Tags {
                let mut tag_errors = Vec::new();
                let pairs = tags_of(
                    plan,
                    row,
                    |_| true,
                    |column, raw, reason| {
                        tag_errors.push((column.to_string(), raw.to_string(), reason));
                    },
                );
                for (column, raw, reason) in tag_errors {
                    self.fail(line, column, &raw, reason);
                    bad = true;
                }
                parsed.push(Parsed::Pairs(pairs));
                continue;
            }
            let text = match field(plan, i, row) {
                Ok(t) => t,
                Err(reason) => {
                    self.fail(line, plan.label(i), "", reason);
                    bad = true;
                    None
                }
            };
            let Some(text) = text else {
                parsed.push(Parsed::Null);
                continue;
            };
            if matches!(col.kind, FocusKind::String | FocusKind::Json) {
                parsed.push(Parsed::Text(match text {
                    Cow::Borrowed(s) => Cow::Borrowed(value::trim(s)),
                    Cow::Owned(s) => Cow::Owned(value::trim(&s).to_string()),
                }));
                continue;
            }
            let result = match col.kind {
                FocusKind::String | FocusKind::Json => unreachable_kind(),
                FocusKind::Decimal => value::parse_decimal(&text).map(|m| {
                    rounded += usize::from(m.rounded);
                    Parsed::Money(m.units)
                }),
                FocusKind::DateTime => value::parse_timestamp(&text).map(Parsed::Time),
                FocusKind::Tags => unreachable_kind(),
            };
            match result {
                Ok(p) => parsed.push(p),
                Err(reason) => {
                    self.fail(line, plan.label(i), &text, reason);
                    bad = true;
                    parsed.push(Parsed::Null);
                }
            }
        }
        for (i, name) in [(self.billed, BILLED_COST), (self.keys.charge_start, CHARGE_PERIOD_START)] {
            if matches!(parsed[i], Parsed::Null) && !bad {
                self.fail(line, plan.label(i), "", format!("{name} is required by FOCUS and is empty"));
                bad = true;
            }
        }
        if bad {
            return Ok(());
        }
        let time = |i: usize| match parsed[i] {
            Parsed::Time(t) => Some(t),
            _ => None,
        };
        let Some(period) = billing_period(time(self.keys.billing_period_start), time(self.keys.charge_start))
        else {
            self.fail(line, plan.label(self.keys.charge_start), "", "date out of range".to_string());
            return Ok(());
        };
        let out = &mut self.out;
        out.periods.insert(period);
        let account = match &parsed[self.account] {
            Parsed::Text(t) => Some(t.as_ref()),
            _ => None,
        };
        // Lines come in runs of one account: a set lookup (and a copy) only when it changes.
        if self.last_account.as_ref().map(Option::as_deref) != Some(account) {
            out.accounts.insert(account.map(str::to_string));
            self.last_account = Some(account.map(str::to_string));
        }
        let tags: &[(String, String)] = match &parsed[self.tags] {
            Parsed::Pairs(p) => p,
            _ => &[],
        };
        let sub_account = match &parsed[self.keys.sub_account] {
            Parsed::Text(t) => Some(t.as_ref()),
            _ => None,
        };
        let tenant = self.attribution.tenant(tags, sub_account);
        out.attributed += usize::from(tenant.is_some());
        out.rounded += rounded;
        let b = &mut self.b;
        for (p, c) in parsed.iter().zip(b.focus.iter_mut()) {
            match (c, p) {
                (Col::Text(bl), Parsed::Text(t)) => bl.append_value(t),
                (Col::Text(bl), _) => bl.append_null(),
                (Col::Money(bl), Parsed::Money(v)) => bl.append_value(*v),
                (Col::Money(bl), _) => bl.append_null(),
                (Col::Time(bl), Parsed::Time(v)) => bl.append_value(*v),
                (Col::Time(bl), _) => bl.append_null(),
                (Col::Map(bl), Parsed::Pairs(pairs)) => push_pairs(bl, pairs),
                (Col::Map(bl), _) => push_pairs(bl, &[]),
            }
        }
        let mut extras: Vec<(String, String)> = plan
            .extras
            .iter()
            .filter_map(|(k, i)| {
                row.get(*i).filter(|v| !value::is_null(v)).map(|v| (k.clone(), v.to_string()))
            })
            .collect();
        for (prefix, i) in &plan.extra_maps {
            // A map the export carries (CUR 2.0 `product`, `cost_category`): its entries, not
            // its JSON text, so `x_extra['product.instance_type']` works.
            let raw = row.get(*i).filter(|v| !value::is_null(v)).unwrap_or("");
            match value::parse_tags(raw) {
                Ok(p) => extras.extend(p.into_iter().map(|(k, v)| (format!("{prefix}.{k}"), v))),
                Err(_) => extras.push((prefix.clone(), raw.to_string())),
            }
        }
        push_pairs(&mut b.extra, &extras);
        b.tenant.append_option(tenant);
        b.source.append_value(self.source);
        b.import_id.append_value(self.import_id);
        b.period.append_value(days_since_epoch(period));
        b.len += 1;
        out.rows += 1;
        if b.len >= self.batch_rows {
            out.batches.push(b.finish()?);
        }
        Ok(())
    }

    /// The batches and what was found.
    pub(crate) fn finish(mut self) -> Result<Converted, ImportError> {
        if self.b.len > 0 {
            self.out.batches.push(self.b.finish()?);
        }
        Ok(self.out)
    }
}

/// Text and tags are handled before the typed parsers.
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

fn unreachable_kind() -> Result<Parsed<'static>, String> {
    Err("internal: text and tags are parsed apart".to_string())
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
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()).num_days() as i32
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
            let full = tags_of(&plan, &row, |_| true, |_, _, _| {});
            let mut first = Vec::new();
            let (_, tenant, _) = sort_key(&plan, &attribution, &row, &mut first);
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
