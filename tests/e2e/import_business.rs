//! `tenantscope import tenants|plans|invoices`: the example files load, imports upsert what
//! they define, bad files say where and change nothing.

use std::path::Path;

use crate::support::{run, stderr, stdout};

fn examples() -> String {
    crate::support::manifest_dir().join("examples").display().to_string()
}

fn import(lake: &Path, kind: &str, file: &str) -> std::process::Output {
    run(&["import", kind, "--data", lake.to_str().unwrap(), file])
}

fn sql(lake: &Path, q: &str) -> String {
    let out = run(&["sql", "--data", lake.to_str().unwrap(), "--format", "csv", q]);
    assert!(out.status.success(), "{q}: {}", stderr(&out));
    stdout(&out)
}

fn load_examples(lake: &Path) {
    for (kind, file) in [("tenants", "tenants.yaml"), ("plans", "plans.yaml"), ("invoices", "invoices.csv")] {
        let out = import(lake, kind, &format!("{}/{file}", examples()));
        assert!(out.status.success(), "{kind}: {}", stderr(&out));
    }
}

#[test]
fn the_example_files_load() {
    let dir = tempfile::tempdir().unwrap();
    load_examples(dir.path());
    assert_eq!(
        sql(
            dir.path(),
            "SELECT tenant_id, plan, array_to_string(accounts, ';') AS accounts, labels['stripe_customer'] AS cus FROM tenants ORDER BY 1"
        ),
        "tenant_id,plan,accounts,cus\nacme,enterprise,,cus_acme01\nglobex,team,,cus_globex7\ninitech,enterprise,210987654321,\n"
    );
    assert_eq!(
        sql(
            dir.path(),
            "SELECT plan, meter, CAST(unit_price AS VARCHAR) AS p, CAST(tier_from AS VARCHAR) AS f, CAST(tier_to AS VARCHAR) AS t FROM plans WHERE plan = 'enterprise' AND meter = 'requests' ORDER BY tier_from"
        ),
        "plan,meter,p,f,t\nenterprise,requests,0.0001000000,0.0000000000,50000000.0000000000\nenterprise,requests,0.0000800000,50000000.0000000000,\n"
    );
    // Invoice lines map to tenants through labels.stripe_customer; Unix-second periods read as UTC.
    assert_eq!(
        sql(
            dir.path(),
            "SELECT invoice_id, tenant_id, CAST(sum(amount) AS VARCHAR) AS a, min(currency) AS c, min(period_start) AS s FROM invoices GROUP BY 1, 2 ORDER BY 1"
        ),
        "invoice_id,tenant_id,a,c,s\nin_1Q2w3E,acme,5249.0000000000,USD,2026-10-01T00:00:00Z\nin_4R5t6Y,globex,49.0000000000,USD,2026-10-01T00:00:00Z\nin_7U8i9O,,49.0000000000,USD,2026-10-01T00:00:00Z\n"
    );
}

#[test]
fn imports_upsert_and_repeat_as_no_ops() {
    let dir = tempfile::tempdir().unwrap();
    load_examples(dir.path());
    let again = import(dir.path(), "tenants", &format!("{}/tenants.yaml", examples()));
    assert!(stdout(&again).starts_with("Already imported"), "{}", stdout(&again));
    // A file naming one tenant replaces that tenant only.
    let f = dir.path().join("acme.csv");
    std::fs::write(
        &f,
        "tenant_id,name,plan,accounts,labels\nacme,Acme Corp,business,111;222,segment=strategic;region=eu\n",
    )
    .unwrap();
    let out = import(dir.path(), "tenants", f.to_str().unwrap());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        sql(
            dir.path(),
            "SELECT tenant_id, plan, array_to_string(accounts, ';') AS a, labels['region'] AS r FROM tenants ORDER BY 1"
        ),
        "tenant_id,plan,a,r\nacme,business,111;222,eu\nglobex,team,,\ninitech,enterprise,210987654321,\n"
    );
    // A corrected invoice replaces the old one, lines and all.
    let f = dir.path().join("fix.csv");
    std::fs::write(&f, "invoice_id,id,customer,amount,currency\nin_1Q2w3E,il_009,cus_acme01,5000.00,USD\n")
        .unwrap();
    assert!(import(dir.path(), "invoices", f.to_str().unwrap()).status.success());
    assert_eq!(
        sql(
            dir.path(),
            "SELECT count(*) AS n, CAST(sum(amount) AS VARCHAR) AS a FROM invoices WHERE invoice_id = 'in_1Q2w3E'"
        ),
        "n,a\n1,5000.0000000000\n"
    );
}

#[test]
fn bad_files_say_where_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    load_examples(dir.path());
    let before = sql(
        dir.path(),
        "SELECT (SELECT count(*) FROM plans) AS p, (SELECT count(*) FROM invoices) AS i, (SELECT count(*) FROM tenants) AS t",
    );
    let cases: [(&str, &str, &str, &str); 5] = [
        (
            "plans",
            "typo.yaml",
            "currency: USD\nplans:\n  - name: x\n    base_fees: \"1\"\n",
            "line 4, column 5: plans[0]: unknown field `base_fees`",
        ),
        (
            "plans",
            "tiers.yaml",
            "currency: USD\nplans:\n  - name: x\n    meters:\n      - meter: m\n        tiers:\n          - {up_to: 10, unit_price: \"1\"}\n          - {up_to: 5, unit_price: \"1\"}\n",
            ":3: column plans[0].meters[0].tiers[1].up_to: \"5\": tiers must grow",
        ),
        (
            "plans",
            "neg.yaml",
            "plans:\n  - name: y\n    currency: EUR\n    base_fee: \"-3\"\n",
            ":2: column plans[0].base_fee: \"-3\": must not be negative",
        ),
        (
            "invoices",
            "bad.csv",
            "invoice_id,amount,currency\nin_1,12.5,usd\nin_2,twelve,usd\nin_3,1,dollars\n",
            ":3: column amount: \"twelve\": not a number",
        ),
        (
            "tenants",
            "dup.csv",
            "tenant_id,name\nacme,A\nacme,B\n",
            ":3: column id: \"acme\": this tenant id appears twice in the file",
        ),
    ];
    for (kind, name, text, expected) in cases {
        let f = dir.path().join(name);
        std::fs::write(&f, text).unwrap();
        let out = import(dir.path(), kind, f.to_str().unwrap());
        assert_eq!(out.status.code(), Some(1), "{name}");
        assert!(stderr(&out).contains(expected), "{name}: {}", stderr(&out));
    }
    assert_eq!(
        sql(
            dir.path(),
            "SELECT (SELECT count(*) FROM plans) AS p, (SELECT count(*) FROM invoices) AS i, (SELECT count(*) FROM tenants) AS t"
        ),
        before
    );
}
