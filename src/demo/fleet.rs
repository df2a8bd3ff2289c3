//! The demo fleet: tenants on plans with Zipf-like usage, and its business data (tenants, plans,
//! invoices).

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use rand::{Rng, rngs::StdRng};

use super::cols::*;

const NAMES: [&str; 24] = [
    "acme",
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "stark",
    "wayne",
    "wonka",
    "tyrell",
    "cyberdyne",
    "soylent",
    "oscorp",
    "vandelay",
    "piedpiper",
    "dunder",
    "monarch",
    "aperture",
    "blackmesa",
    "nakatomi",
    "gringotts",
    "virtucon",
    "sirius",
    "prestige",
    "massive",
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
    /// Extra compute resources billed by the hour (`demo --billing-resources`), to make a bill
    /// of benchmark size: resources x 24 x days lines.
    pub(crate) billing_resources: u32,
}

impl Fleet {
    pub(crate) fn new(
        rng: &mut StdRng,
        n: u32,
        first_day: NaiveDate,
        days: u32,
        peak: u32,
        seed: u64,
    ) -> Self {
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
        Self { tenants, first_day, days, peak_requests_per_day: peak, seed, billing_resources: 0 }
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
        let mut id = format!("demo-seed{}-{}-{}d", self.seed, self.first_day, self.days);
        if self.billing_resources > 0 {
            id.push_str(&format!("-{}r", self.billing_resources));
        }
        id
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

/// The tenants as a YAML file for `import tenants`.
pub(crate) fn tenants_yaml(fleet: &Fleet) -> String {
    let mut y = String::from("tenants:\n");
    for (rank, t) in fleet.tenants.iter().enumerate() {
        let segment = if rank < 3 {
            "strategic"
        } else if rank < 15 {
            "growth"
        } else {
            "self-serve"
        };
        let region = ["us", "eu", "apac"][rank % 3];
        let created = fleet.first_day - chrono::Days::new(rank as u64 + 30);
        y.push_str(&format!(
            "  - id: {}\n    name: {:?}\n    plan: {}\n    currency: USD\n    created_at: {created}\n    labels: {{segment: {segment}, region: {region}, stripe_customer: cus_{}}}\n",
            t.id, t.name, t.plan.name, t.id
        ));
        if let Some(a) = &t.account {
            y.push_str(&format!("    accounts: [\"{a}\"]\n"));
        }
    }
    y
}

/// The price book as a YAML file for `import plans`.
pub(crate) fn plans_yaml(fleet: &Fleet) -> String {
    let mut y = format!("currency: USD\nplans:\n");
    for p in PLANS {
        y.push_str(&format!(
            "  - name: {}\n    base_fee: \"{}\"\n    valid_from: {}\n    meters:\n      - meter: requests\n        unit: request\n        included: {}\n        unit_price: \"{}\"\n",
            p.name, p.base_fee, first_of_month(fleet.first_day), p.included_requests, p.price_per_request
        ));
    }
    y
}

/// Invoice lines per tenant and month (the base fee, and requests above the plan's allowance)
/// as a Stripe-shaped CSV for `import invoices`.
pub(crate) fn invoices_csv(fleet: &Fleet, requests: &[Vec<i64>]) -> String {
    let mut csv = String::from(
        "invoice_id,id,customer,period_start,period_end,description,meter,quantity,amount,currency\n",
    );
    for (m_idx, month) in fleet.months().into_iter().enumerate() {
        for (t_idx, t) in fleet.tenants.iter().enumerate() {
            let used: i64 = (0..fleet.days)
                .filter(|d| first_of_month(fleet.day(*d)) == month)
                .map(|d| requests[t_idx][d as usize])
                .sum();
            let over = (used - t.plan.included_requests).max(0);
            let invoice_id = format!("in_{}_{}", month.format("%Y%m"), t.id);
            let period = format!("{}T00:00:00Z,{}T00:00:00Z", month, next_month(month));
            csv.push_str(&format!(
                "{invoice_id},il_{m_idx}{t_idx:04}0,cus_{},{period},\"{} plan, {}\",,1,{},usd\n",
                t.id,
                t.plan.name,
                month.format("%B %Y"),
                fmt_units(dec(t.plan.base_fee))
            ));
            if over > 0 && t.plan.price_per_request != "0" {
                let amount = mul(i128::from(over) * ONE, dec(t.plan.price_per_request));
                csv.push_str(&format!(
                    "{invoice_id},il_{m_idx}{t_idx:04}1,cus_{},{period},{over} requests above the {} included,requests,{over},{},usd\n",
                    t.id, t.plan.included_requests, fmt_units(amount)
                ));
            }
        }
    }
    csv
}
