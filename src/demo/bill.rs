//! A FOCUS 1.2 billing export for the demo fleet: shared infrastructure (Kubernetes nodes, the
//! main database, the load balancer, object storage, logs, egress) sized by the fleet's traffic,
//! plus dedicated databases tagged `tenant=<id>` and one tenant with a cloud account of its own.

use super::{
    cols::{ONE, dec, fmt_units, mul},
    fleet::{Fleet, first_of_month, next_month},
};

const PAYER: &str = "111111111111";

struct Line {
    day: u32,
    /// The hour of an hourly line; `None`: the line covers the whole day.
    hour: Option<u32>,
    sub_account: &'static str,
    service: &'static str,
    category: &'static str,
    subcategory: &'static str,
    resource_id: String,
    resource_name: String,
    resource_type: &'static str,
    sku: &'static str,
    description: String,
    quantity: i128,
    unit: &'static str,
    list_price: &'static str,
    contracted_price: &'static str,
    tags: Vec<(&'static str, String)>,
}

/// A FOCUS CSV export of every day of the fleet, for `import billing`. `requests[t][d]` and
/// `exports[d]` drive the usage-based lines. Dedicated lines are tagged `tenant=<id>` or sit in
/// the tenant's own account: the importer attributes them.
pub(crate) fn billing_csv(fleet: &Fleet, requests: &[Vec<i64>], exports: &[i64]) -> String {
    let mut lines = Vec::new();
    for d in 0..fleet.days {
        let total: i64 = requests.iter().map(|r| r[d as usize]).sum();
        let qty = |x: i64| i128::from(x) * ONE;
        let shared_tags = || vec![("env", "production".to_string()), ("team", "platform".to_string())];
        let nodes = 3 + total / 30_000;
        for node in 0..nodes {
            lines.push(Line {
                day: d,
                hour: None,
                sub_account: "222222222222",
                service: "Amazon Elastic Compute Cloud",
                category: "Compute",
                subcategory: "Virtual Machines",
                resource_id: format!("i-0eks{node:013}"),
                resource_name: format!("prod-use1-node-{node}"),
                resource_type: "Instance",
                sku: "m6i.2xlarge",
                description: "m6i.2xlarge Linux on-demand, savings plan rate".to_string(),
                quantity: qty(24),
                unit: "Hours",
                list_price: "0.384",
                contracted_price: "0.2688",
                tags: {
                    let mut t = shared_tags();
                    t.push(("k8s-cluster", "prod-use1".to_string()));
                    t
                },
            });
        }
        lines.push(Line {
            day: d,
            hour: None,
            sub_account: "222222222222",
            service: "Amazon Relational Database Service",
            category: "Databases",
            subcategory: "Relational Databases",
            resource_id: "arn:aws:rds:us-east-1:222222222222:db:orders-db".to_string(),
            resource_name: "orders-db".to_string(),
            resource_type: "DB Instance",
            sku: "db.r6g.2xlarge",
            description: "db.r6g.2xlarge PostgreSQL Multi-AZ".to_string(),
            quantity: qty(24),
            unit: "Hours",
            list_price: "1.722",
            contracted_price: "1.722",
            tags: shared_tags(),
        });
        lines.push(Line {
            day: d,
            hour: None,
            sub_account: "222222222222",
            service: "Elastic Load Balancing",
            category: "Networking",
            subcategory: "Load Balancing",
            resource_id: "arn:aws:elasticloadbalancing:us-east-1:222222222222:loadbalancer/app/prod-api/5f2c"
                .to_string(),
            resource_name: "prod-api".to_string(),
            resource_type: "Load Balancer",
            sku: "LCUUsage",
            description: "Application load balancer capacity units".to_string(),
            // One LCU-hour per 2,500 requests, at least one per hour.
            quantity: qty(24).max(qty(total) / 2_500),
            unit: "LCU-Hours",
            list_price: "0.008",
            contracted_price: "0.008",
            tags: shared_tags(),
        });
        lines.push(Line {
            day: d,
            hour: None,
            sub_account: "222222222222",
            service: "Amazon Simple Storage Service",
            category: "Storage",
            subcategory: "Object Storage",
            resource_id: "arn:aws:s3:::saas-report-exports".to_string(),
            resource_name: "saas-report-exports".to_string(),
            resource_type: "Bucket",
            sku: "TimedStorage-ByteHrs",
            description: "Standard storage of report exports".to_string(),
            // Each export keeps ~40 MB for 30 days: GB-months accrued today.
            quantity: qty(exports[d as usize] * 40) / 1000 / 30 + qty(1) / 1000,
            unit: "GB-Mo",
            list_price: "0.023",
            contracted_price: "0.023",
            tags: shared_tags(),
        });
        lines.push(Line {
            day: d,
            hour: None,
            sub_account: "222222222222",
            service: "AWS Data Transfer",
            category: "Networking",
            subcategory: "Network Connectivity",
            resource_id: "arn:aws:ec2:us-east-1:222222222222:egress".to_string(),
            resource_name: "internet egress".to_string(),
            resource_type: "Data Transfer",
            sku: "DataTransfer-Out-Bytes",
            description: "Data transfer out to the internet".to_string(),
            // ~60 KB per request.
            quantity: qty(total * 60) / 1_000_000,
            unit: "GB",
            list_price: "0.09",
            contracted_price: "0.09",
            tags: shared_tags(),
        });
        for t in fleet.tenants.iter().filter(|t| t.dedicated_db) {
            lines.push(Line {
                day: d,
                hour: None,
                sub_account: "222222222222",
                service: "Amazon Relational Database Service",
                category: "Databases",
                subcategory: "Relational Databases",
                resource_id: format!("arn:aws:rds:us-east-1:222222222222:db:{}-db", t.id),
                resource_name: format!("{}-db", t.id),
                resource_type: "DB Instance",
                sku: "db.r6g.large",
                description: "db.r6g.large PostgreSQL, dedicated".to_string(),
                quantity: qty(24),
                unit: "Hours",
                list_price: "0.215",
                contracted_price: "0.215",
                tags: vec![("env", "production".to_string()), ("tenant", t.id.clone())],
            });
        }
        for t in fleet.tenants.iter().filter(|t| t.account.is_some()) {
            for node in 0..2 {
                lines.push(Line {
                    day: d,
                    hour: None,
                    sub_account: "210987654321",
                    service: "Amazon Elastic Compute Cloud",
                    category: "Compute",
                    subcategory: "Virtual Machines",
                    resource_id: format!("i-0{}{node:010}", t.id),
                    resource_name: format!("{}-worker-{node}", t.id),
                    resource_type: "Instance",
                    sku: "m6i.xlarge",
                    description: "m6i.xlarge Linux on-demand".to_string(),
                    quantity: qty(24),
                    unit: "Hours",
                    list_price: "0.192",
                    contracted_price: "0.192",
                    tags: vec![("env", "production".to_string())],
                });
            }
        }
        hourly_resources(fleet, d, &mut lines);
    }
    to_csv(fleet, &lines)
}

/// `demo --billing-resources N`: N more instances billed by the hour (benchmark-sized bills).
/// Seven in ten belong to one tenant (tagged, tenants picked by traffic rank, so the heavy ones
/// have more), three in ten are shared and go through allocation. Deterministic, and drawn from
/// no random source, so the rest of the demo is the same with or without them.
fn hourly_resources(fleet: &Fleet, d: u32, lines: &mut Vec<Line>) {
    let n = fleet.tenants.len();
    for r in 0..fleet.billing_resources {
        // Rank r*r mod n: low ranks (big tenants) come up more often.
        let owner = (r % 10 < 7).then(|| &fleet.tenants[(r as usize * r as usize) % n]);
        let (sku, price) =
            [("c6i.large", "0.085"), ("m6i.xlarge", "0.192"), ("r6i.2xlarge", "0.504")][r as usize % 3];
        let mut tags = vec![("env", "production".to_string())];
        if let Some(t) = owner {
            tags.push(("tenant", t.id.clone()));
        }
        for hour in 0..24 {
            lines.push(Line {
                day: d,
                hour: Some(hour),
                sub_account: "222222222222",
                service: "Amazon Elastic Compute Cloud",
                category: "Compute",
                subcategory: "Virtual Machines",
                resource_id: format!("i-0wrk{r:012}"),
                resource_name: format!("worker-{r}"),
                resource_type: "Instance",
                sku,
                description: format!("{sku} Linux on-demand"),
                quantity: ONE,
                unit: "Hours",
                list_price: price,
                contracted_price: price,
                tags: tags.clone(),
            });
        }
    }
}

/// The lines as a FOCUS 1.2 CSV export.
fn to_csv(fleet: &Fleet, lines: &[Line]) -> String {
    let mut csv = String::from(
        "BillingAccountId,BillingAccountName,BillingCurrency,BillingPeriodStart,BillingPeriodEnd,ChargeCategory,\
         ChargeDescription,ChargeFrequency,ChargePeriodStart,ChargePeriodEnd,ConsumedQuantity,ConsumedUnit,\
         PricingQuantity,PricingUnit,PricingCategory,ListUnitPrice,ContractedUnitPrice,ListCost,ContractedCost,\
         BilledCost,EffectiveCost,InvoiceIssuerName,ProviderName,PublisherName,RegionId,RegionName,ResourceId,\
         ResourceName,ResourceType,ServiceCategory,ServiceName,ServiceSubcategory,SkuId,SubAccountId,SubAccountName,Tags\n",
    );
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    for l in lines {
        let day = fleet.day(l.day);
        let month = first_of_month(day);
        let start = day.and_hms_opt(l.hour.unwrap_or(0), 0, 0).unwrap_or_default();
        let end = match l.hour {
            Some(_) => start + chrono::Duration::hours(1),
            None => start + chrono::Duration::days(1),
        };
        let cost = fmt_units(mul(l.quantity, dec(l.contracted_price)));
        let tags: Vec<String> = l.tags.iter().map(|(k, v)| format!("\"{k}\": \"{v}\"")).collect();
        let fields = [
            PAYER.to_string(),
            q("SaaS Inc. (payer)"),
            "USD".into(),
            format!("{month}T00:00:00Z"),
            format!("{}T00:00:00Z", next_month(month)),
            "Usage".into(),
            q(&l.description),
            "Usage-Based".into(),
            start.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            end.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            fmt_units(l.quantity),
            l.unit.into(),
            fmt_units(l.quantity),
            l.unit.into(),
            if l.list_price == l.contracted_price { "Standard" } else { "Committed" }.into(),
            l.list_price.into(),
            l.contracted_price.into(),
            fmt_units(mul(l.quantity, dec(l.list_price))),
            cost.clone(),
            cost.clone(),
            cost,
            q("Amazon Web Services, Inc."),
            "AWS".into(),
            q("Amazon Web Services"),
            "us-east-1".into(),
            q("US East (N. Virginia)"),
            q(&l.resource_id),
            q(&l.resource_name),
            q(l.resource_type),
            q(l.category),
            q(l.service),
            q(l.subcategory),
            l.sku.into(),
            l.sub_account.into(),
            q(if l.sub_account == "222222222222" { "saas-production" } else { "dedicated-customer" }),
            q(&format!("{{{}}}", tags.join(", "))),
        ];
        csv.push_str(&fields.join(","));
        csv.push('\n');
    }
    csv
}
