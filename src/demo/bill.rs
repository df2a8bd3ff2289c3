//! A FOCUS 1.2 billing export for the demo fleet: shared infrastructure (Kubernetes nodes, the
//! main database, the load balancer, object storage, logs, egress) sized by the fleet's traffic,
//! plus dedicated databases tagged `tenant=<id>` and one tenant with a cloud account of its own.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use tenantscope_schemas::{Table, columns, focus};

use super::{
    cols::*,
    fleet::{Fleet, first_of_month, micros, next_month},
};

const PAYER: &str = "111111111111";

struct Line {
    day: u32,
    sub_account: &'static str,
    tenant: Option<String>,
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

/// Billing lines for every day of the fleet. `requests[t][d]`, `logs_bytes[d]` drive the
/// usage-based lines.
pub(crate) fn billing_batch(fleet: &Fleet, requests: &[Vec<i64>], exports: &[i64]) -> anyhow::Result<RecordBatch> {
    let mut lines = Vec::new();
    for d in 0..fleet.days {
        let total: i64 = requests.iter().map(|r| r[d as usize]).sum();
        let qty = |x: i64| i128::from(x) * ONE;
        let shared_tags = || vec![("env", "production".to_string()), ("team", "platform".to_string())];
        let nodes = 3 + total / 30_000;
        for node in 0..nodes {
            lines.push(Line {
                day: d, sub_account: "222222222222", tenant: None,
                service: "Amazon Elastic Compute Cloud", category: "Compute", subcategory: "Virtual Machines",
                resource_id: format!("i-0eks{node:013}"), resource_name: format!("prod-use1-node-{node}"),
                resource_type: "Instance", sku: "m6i.2xlarge",
                description: "m6i.2xlarge Linux on-demand, savings plan rate".to_string(),
                quantity: qty(24), unit: "Hours", list_price: "0.384", contracted_price: "0.2688",
                tags: { let mut t = shared_tags(); t.push(("k8s-cluster", "prod-use1".to_string())); t },
            });
        }
        lines.push(Line {
            day: d, sub_account: "222222222222", tenant: None,
            service: "Amazon Relational Database Service", category: "Databases", subcategory: "Relational Databases",
            resource_id: "arn:aws:rds:us-east-1:222222222222:db:orders-db".to_string(), resource_name: "orders-db".to_string(),
            resource_type: "DB Instance", sku: "db.r6g.2xlarge", description: "db.r6g.2xlarge PostgreSQL Multi-AZ".to_string(),
            quantity: qty(24), unit: "Hours", list_price: "1.722", contracted_price: "1.722", tags: shared_tags(),
        });
        lines.push(Line {
            day: d, sub_account: "222222222222", tenant: None,
            service: "Elastic Load Balancing", category: "Networking", subcategory: "Load Balancing",
            resource_id: "arn:aws:elasticloadbalancing:us-east-1:222222222222:loadbalancer/app/prod-api/5f2c".to_string(),
            resource_name: "prod-api".to_string(), resource_type: "Load Balancer", sku: "LCUUsage",
            description: "Application load balancer capacity units".to_string(),
            // One LCU-hour per 2,500 requests, at least one per hour.
            quantity: qty(24).max(qty(total) / 2_500), unit: "LCU-Hours", list_price: "0.008", contracted_price: "0.008",
            tags: shared_tags(),
        });
        lines.push(Line {
            day: d, sub_account: "222222222222", tenant: None,
            service: "Amazon Simple Storage Service", category: "Storage", subcategory: "Object Storage",
            resource_id: "arn:aws:s3:::saas-report-exports".to_string(), resource_name: "saas-report-exports".to_string(),
            resource_type: "Bucket", sku: "TimedStorage-ByteHrs",
            description: "Standard storage of report exports".to_string(),
            // Each export keeps ~40 MB for 30 days: GB-months accrued today.
            quantity: qty(exports[d as usize] * 40) / 1000 / 30 + qty(1) / 1000,
            unit: "GB-Mo", list_price: "0.023", contracted_price: "0.023", tags: shared_tags(),
        });
        lines.push(Line {
            day: d, sub_account: "222222222222", tenant: None,
            service: "AWS Data Transfer", category: "Networking", subcategory: "Network Connectivity",
            resource_id: "arn:aws:ec2:us-east-1:222222222222:egress".to_string(), resource_name: "internet egress".to_string(),
            resource_type: "Data Transfer", sku: "DataTransfer-Out-Bytes",
            description: "Data transfer out to the internet".to_string(),
            // ~60 KB per request.
            quantity: qty(total * 60) / 1_000_000, unit: "GB", list_price: "0.09", contracted_price: "0.09",
            tags: shared_tags(),
        });
        for t in fleet.tenants.iter().filter(|t| t.dedicated_db) {
            lines.push(Line {
                day: d, sub_account: "222222222222", tenant: Some(t.id.clone()),
                service: "Amazon Relational Database Service", category: "Databases", subcategory: "Relational Databases",
                resource_id: format!("arn:aws:rds:us-east-1:222222222222:db:{}-db", t.id),
                resource_name: format!("{}-db", t.id), resource_type: "DB Instance", sku: "db.r6g.large",
                description: "db.r6g.large PostgreSQL, dedicated".to_string(),
                quantity: qty(24), unit: "Hours", list_price: "0.215", contracted_price: "0.215",
                tags: vec![("env", "production".to_string()), ("tenant", t.id.clone())],
            });
        }
        for t in fleet.tenants.iter().filter(|t| t.account.is_some()) {
            for node in 0..2 {
                lines.push(Line {
                    day: d, sub_account: "210987654321", tenant: Some(t.id.clone()),
                    service: "Amazon Elastic Compute Cloud", category: "Compute", subcategory: "Virtual Machines",
                    resource_id: format!("i-0{}{node:010}", t.id), resource_name: format!("{}-worker-{node}", t.id),
                    resource_type: "Instance", sku: "m6i.xlarge", description: "m6i.xlarge Linux on-demand".to_string(),
                    quantity: qty(24), unit: "Hours", list_price: "0.192", contracted_price: "0.192",
                    tags: vec![("env", "production".to_string())],
                });
            }
        }
    }
    to_batch(fleet, &lines)
}

fn to_batch(fleet: &Fleet, lines: &[Line]) -> anyhow::Result<RecordBatch> {
    let n = lines.len();
    let s = |f: &dyn Fn(&Line) -> String| -> ArrayRef {
        Arc::new(StringArray::from(lines.iter().map(f).collect::<Vec<_>>()))
    };
    let c = |v: &'static str| -> ArrayRef { Arc::new(StringArray::from(vec![v; n])) };
    let ts = |f: &dyn Fn(&Line) -> i64| -> ArrayRef {
        let mut b = ts_builder(n);
        for l in lines {
            b.append_value(f(l));
        }
        fin(b)
    };
    let money = |f: &dyn Fn(&Line) -> i128| -> ArrayRef {
        let mut b = money_builder(n);
        for l in lines {
            b.append_value(f(l));
        }
        fin(b)
    };
    let day_us = |l: &Line| micros(fleet.day(l.day));
    let month = |l: &Line| first_of_month(fleet.day(l.day));
    let cost = |l: &Line| mul(l.quantity, dec(l.contracted_price));
    let mut tags = map_builder();
    for l in lines {
        let kv: Vec<(&str, &str)> = l.tags.iter().map(|(k, v)| (*k, v.as_str())).collect();
        push_map(&mut tags, &kv);
    }
    let mut period = Date::with_capacity(n);
    for l in lines {
        period.append_value(i32::try_from(micros(month(l)) / 86_400_000_000)?);
    }
    batch(Table::Billing, vec![
        ("billing_account_id", c(PAYER)),
        ("billing_account_name", c("SaaS Inc. (payer)")),
        (focus::BILLING_CURRENCY, c("USD")),
        (focus::BILLING_PERIOD_START, ts(&|l| micros(month(l)))),
        (focus::BILLING_PERIOD_END, ts(&|l| micros(next_month(month(l))))),
        (focus::CHARGE_CATEGORY, c("Usage")),
        ("charge_description", s(&|l| l.description.clone())),
        ("charge_frequency", c("Usage-Based")),
        (focus::CHARGE_PERIOD_START, ts(&day_us)),
        (focus::CHARGE_PERIOD_END, ts(&|l| day_us(l) + 86_400_000_000)),
        ("consumed_quantity", money(&|l| l.quantity)),
        ("consumed_unit", s(&|l| l.unit.to_string())),
        ("pricing_quantity", money(&|l| l.quantity)),
        ("pricing_unit", s(&|l| l.unit.to_string())),
        ("pricing_category", s(&|l| if l.list_price == l.contracted_price { "Standard" } else { "Committed" }.to_string())),
        ("list_unit_price", money(&|l| dec(l.list_price))),
        ("contracted_unit_price", money(&|l| dec(l.contracted_price))),
        (focus::LIST_COST, money(&|l| mul(l.quantity, dec(l.list_price)))),
        (focus::CONTRACTED_COST, money(&cost)),
        (focus::BILLED_COST, money(&cost)),
        (focus::EFFECTIVE_COST, money(&cost)),
        ("invoice_issuer_name", c("Amazon Web Services, Inc.")),
        ("provider_name", c("AWS")),
        ("publisher_name", c("Amazon Web Services")),
        ("region_id", c("us-east-1")),
        ("region_name", c("US East (N. Virginia)")),
        (focus::RESOURCE_ID, s(&|l| l.resource_id.clone())),
        ("resource_name", s(&|l| l.resource_name.clone())),
        ("resource_type", s(&|l| l.resource_type.to_string())),
        (focus::SERVICE_CATEGORY, s(&|l| l.category.to_string())),
        (focus::SERVICE_NAME, s(&|l| l.service.to_string())),
        ("service_subcategory", s(&|l| l.subcategory.to_string())),
        ("sku_id", s(&|l| l.sku.to_string())),
        (focus::SUB_ACCOUNT_ID, s(&|l| l.sub_account.to_string())),
        ("sub_account_name", s(&|l| if l.sub_account == "222222222222" { "saas-production" } else { "dedicated-customer" }.to_string())),
        (focus::TAGS, fin(tags)),
        (columns::TENANT_ID, Arc::new(StringArray::from(lines.iter().map(|l| l.tenant.clone()).collect::<Vec<_>>()))),
        (columns::SOURCE, c("demo-focus")),
        (columns::IMPORT_ID, Arc::new(StringArray::from(vec![fleet.import_id(); n]))),
        (columns::BILLING_PERIOD, fin(period)),
    ])
}
