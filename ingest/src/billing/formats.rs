//! Export formats: detection from the header, and each format's mapping onto FOCUS columns.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Days};
use tenantscope_schemas::focus::{FOCUS_COLUMNS, FocusKind};

use super::{source::Row, value};

/// A billing export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// FOCUS 1.0, 1.1 or 1.2 (any provider's FOCUS export, the FOCUS samples).
    Focus,
    /// Azure Cost Management cost details (EA or MCA, actual or amortized).
    AzureCost,
}

impl Format {
    /// Every format, for messages.
    pub const ALL: [Format; 2] = [Format::Focus, Format::AzureCost];

    /// The format's name on the command line and in the `imports` table.
    pub fn name(self) -> &'static str {
        match self {
            Format::Focus => "focus",
            Format::AzureCost => "azure",
        }
    }

    /// The format a header belongs to, if any.
    pub fn detect(headers: &[String]) -> Option<Format> {
        let has = |name: &str| find(headers, &[name]).is_some();
        if has("BilledCost") && has("ChargePeriodStart") {
            Some(Format::Focus)
        } else if has("MeterCategory") && (has("Cost") || has("CostInBillingCurrency")) && has("Date") {
            Some(Format::AzureCost)
        } else {
            None
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| {
            let names: Vec<_> = Format::ALL.iter().map(|f| f.name()).collect();
            format!("unknown billing format {s:?}; the formats are: {}", names.join(", "))
        })
    }
}

/// Header names compare without case, `_`, spaces or `/` (`BilledCost`, `billed_cost`).
fn normalize(name: &str) -> String {
    name.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect()
}

fn find(headers: &[String], names: &[&str]) -> Option<usize> {
    names.iter().find_map(|n| {
        let n = normalize(n);
        headers.iter().position(|h| normalize(h) == n)
    })
}

/// A computed value: text parsed afterwards by the target column's type.
pub(crate) type Compute = Box<dyn Fn(&dyn Row) -> Result<Option<String>, String> + Send + Sync>;

/// Where a target column's value comes from.
pub(crate) enum Extract {
    /// No source: NULL.
    Null,
    /// A source column.
    Column(usize),
    /// A constant.
    Const(&'static str),
    /// Computed from the row; the label names the source columns in error messages.
    Computed(String, Compute),
}

/// How one file maps onto the billing table.
pub(crate) struct Plan {
    pub(crate) headers: Vec<String>,
    /// One per entry of [`FOCUS_COLUMNS`] (`Tags` is `tags` below).
    pub(crate) focus: Vec<Extract>,
    /// The source column of the tags, if any.
    pub(crate) tags: Option<usize>,
    /// Source columns kept in `x_extra`, with the key they are kept under.
    pub(crate) extras: Vec<(String, usize)>,
}

impl Plan {
    /// The source column(s) a target value comes from, for error messages.
    pub(crate) fn label(&self, focus_index: usize) -> String {
        match &self.focus[focus_index] {
            Extract::Column(i) => self.headers[*i].clone(),
            Extract::Computed(label, _) => label.clone(),
            Extract::Null | Extract::Const(_) => FOCUS_COLUMNS[focus_index].focus_name.to_string(),
        }
    }

    pub(crate) fn new(format: Format, headers: Vec<String>) -> Plan {
        match format {
            Format::Focus => focus_plan(headers),
            Format::AzureCost => azure_plan(headers),
        }
    }
}

fn focus_index(name: &str) -> usize {
    FOCUS_COLUMNS.iter().position(|c| c.focus_name == name).unwrap_or(usize::MAX)
}

fn focus_plan(headers: Vec<String>) -> Plan {
    let mut focus: Vec<Extract> = FOCUS_COLUMNS.iter().map(|_| Extract::Null).collect();
    let mut tags = None;
    let mut extras = Vec::new();
    for (i, h) in headers.iter().enumerate() {
        let n = normalize(h);
        match FOCUS_COLUMNS.iter().position(|c| normalize(c.focus_name) == n) {
            Some(c) if FOCUS_COLUMNS[c].kind == FocusKind::Tags => tags = Some(i),
            Some(c) => focus[c] = Extract::Column(i),
            // Provider columns (`x_*`, and the unprefixed ones real exports carry, like the
            // FOCUS sample's `Id`) are kept, not dropped.
            None => extras.push((h.clone(), i)),
        }
    }
    Plan { headers, focus, tags, extras }
}

/// Azure cost details onto FOCUS, after Microsoft's FOCUS conversion guidance: the file's
/// `Cost` is what was billed except for usage covered by a reservation or savings plan, whose
/// amortized cost is effective cost (billed with the purchase). Azure's end dates are inclusive,
/// FOCUS's exclusive: one day is added.
fn azure_plan(headers: Vec<String>) -> Plan {
    let h = |names: &[&str]| find(&headers, names);
    let mut focus: Vec<Extract> = FOCUS_COLUMNS.iter().map(|_| Extract::Null).collect();
    let mut used = Vec::new();
    let mut set = |name: &str, e: Extract| {
        let i = focus_index(name);
        if i < focus.len() {
            focus[i] = e;
        }
    };
    let col = |names: &[&str], used: &mut Vec<usize>| -> Extract {
        match find(&headers, names) {
            Some(i) => {
                used.push(i);
                Extract::Column(i)
            }
            None => Extract::Null,
        }
    };
    let cost = h(&["CostInBillingCurrency", "Cost"]);
    let charge_type = h(&["ChargeType"]);
    let pricing_model = h(&["PricingModel"]);
    let quantity = h(&["Quantity"]);
    let covered = move |row: &dyn Row| -> bool {
        let ct = charge_type.and_then(|i| row.get(i)).unwrap_or("");
        let pm = pricing_model.and_then(|i| row.get(i)).unwrap_or("");
        ct.eq_ignore_ascii_case("Usage") && (pm.eq_ignore_ascii_case("Reservation") || pm.eq_ignore_ascii_case("SavingsPlan"))
    };
    let get = move |row: &dyn Row, i: Option<usize>| i.and_then(|i| row.get(i)).map(str::to_string);
    let cost_label = cost.map_or("Cost".to_string(), |i| headers[i].clone());
    set("BilledCost", Extract::Computed(cost_label.clone(), Box::new(move |row| {
        Ok(if covered(row) { Some("0".to_string()) } else { get(row, cost) })
    })));
    set("EffectiveCost", Extract::Computed(cost_label, Box::new(move |row| Ok(get(row, cost)))));
    let product = |a: Option<usize>, b: Option<usize>, label: String| -> Extract {
        Extract::Computed(label, Box::new(move |row| {
            let (Some(x), Some(y)) = (get(row, a), get(row, b)) else { return Ok(None) };
            if value::is_null(&x) || value::is_null(&y) {
                return Ok(None);
            }
            let x = value::parse_decimal(&x)?;
            let y = value::parse_decimal(&y)?;
            Ok(Some(decimal_text(x.units * y.units)))
        }))
    };
    let payg = h(&["PayGPrice"]);
    let unit_price = h(&["UnitPrice"]);
    set("ListCost", product(payg, quantity, "PayGPrice*Quantity".into()));
    set("ListUnitPrice", col(&["PayGPrice"], &mut used));
    set("ContractedCost", product(unit_price, quantity, "UnitPrice*Quantity".into()));
    set("ContractedUnitPrice", col(&["UnitPrice"], &mut used));
    set("BillingAccountId", col(&["BillingAccountId"], &mut used));
    set("BillingAccountName", col(&["BillingAccountName"], &mut used));
    set("BillingCurrency", col(&["BillingCurrency", "BillingCurrencyCode"], &mut used));
    set("BillingPeriodStart", col(&["BillingPeriodStartDate"], &mut used));
    let bp_end = h(&["BillingPeriodEndDate"]);
    set("BillingPeriodEnd", next_day(bp_end, "BillingPeriodEndDate"));
    let date = h(&["Date", "UsageDate"]);
    set("ChargePeriodStart", col(&["Date", "UsageDate"], &mut used));
    set("ChargePeriodEnd", next_day(date, "Date"));
    set("ChargeCategory", Extract::Computed("ChargeType".into(), Box::new(move |row| {
        Ok(get(row, charge_type).map(|ct| match ct.trim() {
            "Purchase" => "Purchase",
            "Refund" => "Credit",
            "Tax" => "Tax",
            "RoundingAdjustment" | "Adjustment" => "Adjustment",
            _ => "Usage",
        }.to_string()))
    })));
    let frequency = h(&["Frequency", "ChargeFrequency"]);
    set("ChargeFrequency", Extract::Computed("Frequency".into(), Box::new(move |row| {
        Ok(get(row, frequency).map(|f| match f.trim() {
            "OneTime" => "One-Time",
            "Recurring" => "Recurring",
            _ => "Usage-Based",
        }.to_string()))
    })));
    set("ChargeDescription", col(&["ProductName", "Product"], &mut used));
    set("CommitmentDiscountId", col(&["benefitId", "ReservationId"], &mut used));
    set("CommitmentDiscountName", col(&["benefitName", "ReservationName"], &mut used));
    set("CommitmentDiscountType", Extract::Computed("PricingModel".into(), Box::new(move |row| {
        Ok(get(row, pricing_model).and_then(|p| match p.trim() {
            "Reservation" => Some("Reservation".to_string()),
            "SavingsPlan" => Some("Savings Plan".to_string()),
            _ => None,
        }))
    })));
    set("CommitmentDiscountStatus", Extract::Computed("ChargeType".into(), Box::new(move |row| {
        let ct = get(row, charge_type).unwrap_or_default();
        Ok(if ct.starts_with("Unused") { Some("Unused".to_string()) } else if covered(row) { Some("Used".to_string()) } else { None })
    })));
    set("PricingCategory", Extract::Computed("PricingModel".into(), Box::new(move |row| {
        Ok(get(row, pricing_model).map(|p| match p.trim() {
            "Reservation" | "SavingsPlan" => "Committed",
            "Spot" => "Dynamic",
            _ => "Standard",
        }.to_string()))
    })));
    set("ConsumedQuantity", col(&["Quantity"], &mut used));
    set("PricingQuantity", col(&["Quantity"], &mut used));
    set("ConsumedUnit", col(&["UnitOfMeasure"], &mut used));
    set("PricingUnit", col(&["UnitOfMeasure"], &mut used));
    set("ProviderName", Extract::Const("Microsoft"));
    set("InvoiceIssuerName", Extract::Const("Microsoft"));
    set("PublisherName", col(&["PublisherName"], &mut used));
    set("RegionId", col(&["ResourceLocation"], &mut used));
    set("RegionName", col(&["MeterRegion"], &mut used));
    set("AvailabilityZone", col(&["AvailabilityZone"], &mut used));
    set("ResourceId", col(&["ResourceId", "InstanceName"], &mut used));
    set("ResourceName", col(&["ResourceName"], &mut used));
    set("ResourceType", col(&["ConsumedService"], &mut used));
    let meter_category = h(&["MeterCategory"]);
    set("ServiceName", col(&["MeterCategory"], &mut used));
    set("ServiceCategory", Extract::Computed("MeterCategory".into(), Box::new(move |row| {
        Ok(get(row, meter_category).map(|m| azure_service_category(m.trim()).to_string()))
    })));
    set("ServiceSubcategory", col(&["MeterSubCategory"], &mut used));
    set("SkuId", col(&["PartNumber", "ProductId"], &mut used));
    set("SkuPriceId", col(&["MeterId"], &mut used));
    set("SkuMeter", col(&["MeterName"], &mut used));
    set("SubAccountId", col(&["SubscriptionId", "SubscriptionGuid"], &mut used));
    set("SubAccountName", col(&["SubscriptionName"], &mut used));
    set("SubAccountType", Extract::Const("Subscription"));
    let tags = h(&["Tags"]);
    used.extend(tags);
    used.extend(cost);
    used.extend(charge_type);
    used.extend(pricing_model);
    used.extend(frequency);
    used.extend(date);
    used.extend(bp_end);
    let extras = headers
        .iter()
        .enumerate()
        .filter(|(i, _)| !used.contains(i))
        .map(|(i, h)| (h.clone(), i))
        .collect();
    Plan { headers, focus, tags, extras }
}

fn next_day(col: Option<usize>, label: &str) -> Extract {
    Extract::Computed(label.to_string(), Box::new(move |row| {
        let Some(raw) = col.and_then(|i| row.get(i)) else { return Ok(None) };
        if value::is_null(raw) {
            return Ok(None);
        }
        let us = value::parse_timestamp(raw)?;
        let dt = DateTime::from_timestamp_micros(us).ok_or_else(|| format!("date out of range: {raw:?}"))?;
        let next = dt.checked_add_days(Days::new(1)).ok_or_else(|| format!("date out of range: {raw:?}"))?;
        Ok(Some(next.to_rfc3339()))
    }))
}

/// Units at scale 20 (a product of two scale-10 values) as decimal text.
fn decimal_text(units20: i128) -> String {
    let neg = units20 < 0;
    let v = units20.unsigned_abs();
    let scale = 10_u128.pow(20);
    format!("{}{}.{:020}", if neg { "-" } else { "" }, v / scale, v % scale)
}

/// FOCUS ServiceCategory for an Azure meter category.
fn azure_service_category(meter_category: &str) -> &'static str {
    match meter_category {
        "Virtual Machines" | "Virtual Machines Licenses" | "Container Instances" | "Azure App Service"
        | "Functions" | "Cloud Services" | "Azure Kubernetes Service" => "Compute",
        "Storage" | "Backup" | "Azure NetApp Files" => "Storage",
        "SQL Database" | "SQL Managed Instance" | "Azure Database for MySQL"
        | "Azure Database for PostgreSQL" | "Azure Cosmos DB" | "Redis Cache" => "Databases",
        "Bandwidth" | "Virtual Network" | "Load Balancer" | "VPN Gateway" | "Application Gateway"
        | "Azure DNS" | "Azure Front Door Service" | "Content Delivery Network" => "Networking",
        "Advanced Threat Protection" | "Advanced Data Security" | "Microsoft Defender for Cloud"
        | "Key Vault" | "Azure Firewall" => "Security",
        "Log Analytics" | "Azure Monitor" | "Application Insights" => "Management and Governance",
        "Azure Synapse Analytics" | "Azure Databricks" | "HDInsight" | "Data Factory" => "Analytics",
        "Cognitive Services" | "Azure OpenAI" | "Machine Learning" => "AI and Machine Learning",
        _ => "Other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_formats_from_headers() {
        let h = |s: &str| s.split(',').map(str::to_string).collect::<Vec<_>>();
        assert_eq!(Format::detect(&h("BilledCost,ChargePeriodStart,Tags")), Some(Format::Focus));
        assert_eq!(Format::detect(&h("billed_cost,charge_period_start")), Some(Format::Focus));
        assert_eq!(Format::detect(&h("Date,MeterCategory,Cost,Tags")), Some(Format::AzureCost));
        assert_eq!(Format::detect(&h("a,b,c")), None);
    }

    #[test]
    fn product_text_is_exact() {
        assert_eq!(decimal_text(-15 * 10_i128.pow(19)), "-1.50000000000000000000");
    }
}
