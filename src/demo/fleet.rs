//! The demo fleet: tenants on plans with Zipf-like usage, and its business data (tenants, plans,
//! invoices).



use arrow::array::RecordBatch;
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use rand::{Rng, rngs::StdRng};
use tenantscope_schemas::Table;

use super::cols::*;

const NAMES: [&str; 24] = [
    "acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka", "tyrell",
    "cyberdyne", "soylent", "oscorp", "vandelay", "piedpiper", "dunder", "monarch", "aperture",
    "blackmesa", "nakatomi", "gringotts", "virtucon", "sirius", "prestige", "massive",
];

/// A plan of the price book: base fee per month, price per request above what is included.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) name: &'static str,
    pub(crate) base_fee: &'static str,
    pub(crate) price_per_request: &'static str,
    pub(crate) included_requests: i64,
}

pub(crate) const PLANS: [Plan; 4] = [
    Plan { name: "free", base_fee: "0", price_per_request: "0", included_requests: 100_000 },
    Plan { name: "team", base_fee: "49", price_per_request: "0.0002", included_requests: 100_000 },
    Plan { name: "business", base_fee: "499", price_per_request: "0.00015", included_requests: 1_000_000 },
    Plan { name: "enterprise", base_fee: "4999", price_per_request: "0.0001", included_requests: 10_000_000 },
];

/// One demo tenant.
#[derive(Debug, Clone)]
pub(crate) struct Tenant {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) plan: Plan,
    /// Share of the busiest tenant's traffic (1.0 for rank 0).
    pub(crate) weight: f64,
    /// Probability that a request fails.
    pub(crate) error_rate: f64,
    /// Share of requests that are heavy report exports.
    pub(crate) export_share: f64,
    /// A dedicated database, tagged with the tenant.
    pub(crate) dedicated_db: bool,
    /// A cloud account of its own (account-level tenancy).
    pub(crate) account: Option<String>,
}

/// The generated fleet and its time range.
#[derive(Debug, Clone)]
pub(crate) struct Fleet {
    pub(crate) tenants: Vec<Tenant>,
    pub(crate) first_day: NaiveDate,
    pub(crate) days: u32,
    pub(crate) peak_requests_per_day: u32,
    pub(crate) seed: u64,
}

impl Fleet {
    pub(crate) fn new(rng: &mut StdRng, n: u32, first_day: NaiveDate, days: u32, peak: u32, seed: u64) -> Self {
        let tenants = (0..n as usize)
            .map(|rank| {
                let id = NAMES.get(rank).map_or_else(|| format!("tenant-{rank:04}"), |s| (*s).to_string());
                let mut name = id.clone();
                if let Some(first) = name.get_mut(0..1) {
                    first.make_ascii_uppercase();
                }
                // Zipf-like: the k-th tenant has 1/k^1.1 of the busiest one's traffic.
                let weight = 1.0 / ((rank + 1) as f64).powf(1.1);
                // The biggest tenants pay for enterprise, the long tail is on free; rank 1 is a
                // heavy user on a cheap plan: the margin eater finance should find.
                let plan = match rank {
                    0 | 2 => PLANS[3],
                    1 => PLANS[1],
                    3..=6 => PLANS[2],
                    7..=14 => PLANS[1],
                    _ => PLANS[0],
                };
                let error_rate = if rank == 4 { 0.05 } else { 0.002 + rng.random::<f64>() * 0.01 };
                let export_share = if rank == 1 { 0.25 } else { 0.01 + rng.random::<f64>() * 0.04 };
                Tenant {
                    name: format!("{name} Corp"),
                    plan,
                    weight,
                    error_rate,
                    export_share,
                    dedicated_db: plan.name == "enterprise",
                    account: (rank == 2).then(|| "210987654321".to_string()),
                    id,
                }
            })
            .collect();
        Self { tenants, first_day, days, peak_requests_per_day: peak, seed }
    }

    pub(crate) fn day(&self, i: u32) -> NaiveDate {
        self.first_day + chrono::Days::new(u64::from(i))
    }

    /// Midnight UTC of day `i`.
    pub(crate) fn day_start(&self, i: u32) -> DateTime<Utc> {
        let d = self.day(i);
        Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default())
    }

    pub(crate) fn import_id(&self) -> String {
        format!("demo-seed{}-{}-{}d", self.seed, self.first_day, self.days)
    }

    /// The calendar months the demo touches, as their first days.
    pub(crate) fn months(&self) -> Vec<NaiveDate> {
        let mut months: Vec<NaiveDate> = (0..self.days).map(|i| first_of_month(self.day(i))).collect();
        months.dedup();
        months
    }
}

pub(crate) fn first_of_month(d: NaiveDate) -> NaiveDate {
    d.with_day(1).unwrap_or(d)
}

pub(crate) fn next_month(d: NaiveDate) -> NaiveDate {
    d.checked_add_months(chrono::Months::new(1)).unwrap_or(d)
}

pub(crate) fn micros(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc().timestamp_micros()
}

pub(crate) fn tenants_batch(fleet: &Fleet) -> anyhow::Result<RecordBatch> {
    let n = fleet.tenants.len();
    let (mut id, mut name, mut plan, mut cur) = (Str::new(), Str::new(), Str::new(), Str::new());
    let mut accounts = string_list_builder();
    let mut labels = map_builder();
    let mut created = ts_builder(n);
    let mut import = Str::new();
    for (rank, t) in fleet.tenants.iter().enumerate() {
        id.append_value(&t.id);
        name.append_value(&t.name);
        plan.append_value(t.plan.name);
        match &t.account {
            Some(a) => {
                accounts.values().append_value(a);
                accounts.append(true);
            }
            None => accounts.append(true),
        }
        let segment = if rank < 3 { "strategic" } else if rank < 15 { "growth" } else { "self-serve" };
        let region = ["us", "eu", "apac"][rank % 3];
        push_map(&mut labels, &[("segment", segment), ("region", region)]);
        cur.append_value("USD");
        created.append_value(micros(fleet.first_day) - (rank as i64 + 30) * 86_400_000_000);
        import.append_value(fleet.import_id());
    }
    Ok(RecordBatch::try_new(
        Table::Tenants.schema(),
        vec![fin(id), fin(name), fin(plan), fin(accounts), fin(labels), fin(cur), fin(created), fin(import)],
    )?)
}

pub(crate) fn plans_batch(fleet: &Fleet) -> anyhow::Result<RecordBatch> {
    let n = PLANS.len();
    let (mut plan, mut cur, mut meter, mut unit) = (Str::new(), Str::new(), Str::new(), Str::new());
    let (mut base, mut price, mut incl, mut from, mut to) =
        (money_builder(n), money_builder(n), money_builder(n), money_builder(n), money_builder(n));
    let mut valid = ts_builder(n);
    let mut import = Str::new();
    for p in PLANS {
        plan.append_value(p.name);
        cur.append_value("USD");
        base.append_value(dec(p.base_fee));
        meter.append_value("requests");
        unit.append_value("request");
        price.append_value(dec(p.price_per_request));
        incl.append_value(i128::from(p.included_requests) * ONE);
        from.append_value(0);
        to.append_null();
        valid.append_value(micros(first_of_month(fleet.first_day)));
        import.append_value(fleet.import_id());
    }
    Ok(RecordBatch::try_new(
        Table::Plans.schema(),
        vec![
            fin(plan), fin(cur), fin(base), fin(meter), fin(unit), fin(price), fin(incl),
            fin(from), fin(to), fin(valid), fin(import),
        ],
    )?)
}

/// Invoice lines per tenant and month: the base fee, and requests above the plan's allowance.
pub(crate) fn invoices_batch(fleet: &Fleet, requests: &[Vec<i64>]) -> anyhow::Result<RecordBatch> {
    let schema = Table::Invoices.schema();
    let (mut inv, mut line, mut tenant, mut customer) = (Str::new(), Str::new(), Str::new(), Str::new());
    let (mut start, mut end) = (ts_builder(0), ts_builder(0));
    let (mut desc, mut meter, mut cur, mut import) = (Str::new(), Str::new(), Str::new(), Str::new());
    let (mut qty, mut amount) = (money_builder(0), money_builder(0));
    for (m_idx, month) in fleet.months().into_iter().enumerate() {
        for (t_idx, t) in fleet.tenants.iter().enumerate() {
            let used: i64 = (0..fleet.days)
                .filter(|d| first_of_month(fleet.day(*d)) == month)
                .map(|d| requests[t_idx][d as usize])
                .sum();
            let over = (used - t.plan.included_requests).max(0);
            let invoice_id = format!("in_{}_{}", month.format("%Y%m"), t.id);
            let mut lines = vec![(
                "base", format!("{} plan, {}", t.plan.name, month.format("%B %Y")), None, dec(t.plan.base_fee),
            )];
            if over > 0 && t.plan.price_per_request != "0" {
                let q = i128::from(over) * ONE;
                lines.push((
                    "requests",
                    format!("{over} requests above the {} included", t.plan.included_requests),
                    Some(q),
                    mul(q, dec(t.plan.price_per_request)),
                ));
            }
            for (i, (kind, text, q, amt)) in lines.into_iter().enumerate() {
                inv.append_value(&invoice_id);
                line.append_value(format!("il_{m_idx}{t_idx:04}{i}"));
                tenant.append_value(&t.id);
                customer.append_value(format!("cus_{}", t.id));
                start.append_value(micros(month));
                end.append_value(micros(next_month(month)));
                desc.append_value(text);
                meter.append_option((kind == "requests").then_some("requests"));
                qty.append_option(q);
                amount.append_value(amt);
                cur.append_value("USD");
                import.append_value(fleet.import_id());
            }
        }
    }
    Ok(RecordBatch::try_new(
        schema,
        vec![
            fin(inv), fin(line), fin(tenant), fin(customer), fin(start), fin(end), fin(desc),
            fin(meter), fin(qty), fin(amount), fin(cur), fin(import),
        ],
    )?)
}

