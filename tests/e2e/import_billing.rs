//! `tenantscope import billing`: idempotent, restatements replace atomically, bad files change
//! nothing and say where, tenants attributed by tag or account.

use std::path::Path;

use crate::support::{run, small_demo, stderr, stdout};

fn focus_sample() -> String {
    crate::support::manifest_dir().join("testdata/focus/focus_sample.csv").display().to_string()
}

fn sql(lake: &Path, q: &str) -> String {
    let out = run(&["sql", "--data", lake.to_str().unwrap(), "--format", "csv", q]);
    assert!(out.status.success(), "{q}: {}", stderr(&out));
    stdout(&out)
}

fn import(lake: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["import", "billing", "--data", lake.to_str().unwrap()];
    all.extend_from_slice(args);
    run(&all)
}

/// A small FOCUS export: one line per (account, day, cost).
fn focus_csv(path: &Path, lines: &[(&str, &str, &str, &str)]) {
    let mut text = String::from(
        "BillingAccountId,BillingPeriodStart,ChargePeriodStart,BilledCost,EffectiveCost,BillingCurrency,SubAccountId,Tags\n",
    );
    for (account, day, cost, tags) in lines {
        text.push_str(&format!(
            "{account},2026-10-01T00:00:00Z,2026-10-{day}T00:00:00Z,{cost},{cost},USD,{account}-sub,\"{}\"\n",
            tags.replace('"', "\"\"")
        ));
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn the_same_file_twice_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let first = import(&lake, &[&focus_sample()]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(stdout(&first).starts_with("Imported 1000 billing lines"), "{}", stdout(&first));
    let before = sql(&lake, "SELECT count(*) AS n, CAST(sum(billed_cost) AS VARCHAR) AS c FROM billing");
    let second = import(&lake, &[&focus_sample()]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(stdout(&second).starts_with("Already imported"), "{}", stdout(&second));
    assert_eq!(
        sql(&lake, "SELECT count(*) AS n, CAST(sum(billed_cost) AS VARCHAR) AS c FROM billing"),
        before
    );
    assert_eq!(sql(&lake, "SELECT count(*) AS n FROM imports WHERE kind = 'billing'"), "n\n1\n");
}

#[test]
fn a_restatement_replaces_its_period_and_accounts_only() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let (v1, v2, other) =
        (dir.path().join("v1.csv"), dir.path().join("v2.csv"), dir.path().join("other.csv"));
    focus_csv(&v1, &[("A", "01", "10.00", ""), ("A", "02", "5.50", "")]);
    focus_csv(&v2, &[("A", "01", "10.00", ""), ("A", "02", "6.25", ""), ("A", "03", "1.00", "")]);
    focus_csv(&other, &[("B", "01", "100", "")]);
    for f in [&v1, &other, &v2] {
        let out = import(&lake, &["--source", "aws", f.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // v2 replaced v1 (account A, October) and left account B alone.
    assert_eq!(
        sql(
            &lake,
            "SELECT billing_account_id AS a, count(*) AS n, CAST(sum(billed_cost) AS VARCHAR) AS c FROM billing GROUP BY 1 ORDER BY 1"
        ),
        "a,n,c\nA,3,17.2500000000\nB,1,100.0000000000\n"
    );
    // Importing v1 again restates back: its lines were replaced, so it is not a no-op.
    let out = import(&lake, &["--source", "aws", v1.to_str().unwrap()]);
    assert!(stdout(&out).starts_with("Imported 2 billing lines"), "{}", stdout(&out));
    assert_eq!(
        sql(
            &lake,
            "SELECT CAST(sum(billed_cost) AS VARCHAR) AS c FROM billing WHERE billing_account_id = 'A'"
        ),
        "c\n15.5000000000\n"
    );
}

#[test]
fn a_bad_file_changes_nothing_and_names_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let good = dir.path().join("good.csv");
    focus_csv(&good, &[("A", "01", "10.00", "")]);
    assert!(import(&lake, &[good.to_str().unwrap()]).status.success());
    let bad = dir.path().join("bad.csv");
    focus_csv(
        &bad,
        &[
            ("A", "01", "1.00", ""),
            ("A", "02", "12.34.5x", ""),
            ("A", "33", "2.00", ""),
            ("A", "04", "3", "{broken"),
        ],
    );
    let out = import(&lake, &[bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let b = bad.to_str().unwrap();
    assert!(err.contains(&format!("{b}:3: column BilledCost: \"12.34.5x\": not a number")), "{err}");
    assert!(
        err.contains(&format!("{b}:4: column ChargePeriodStart: \"2026-10-33T00:00:00Z\": not a date/time")),
        "{err}"
    );
    assert!(err.contains(&format!("{b}:5: column Tags: \"{{broken\": tags are not a JSON object")), "{err}");
    // BilledCost and EffectiveCost on line 3, ChargePeriodStart on 4, Tags on 5.
    assert!(err.contains("4 invalid value(s); nothing was imported"), "{err}");
    assert_eq!(
        sql(&lake, "SELECT count(*) AS n, CAST(sum(billed_cost) AS VARCHAR) AS c FROM billing"),
        "n,c\n1,10.0000000000\n"
    );

    // --skip-invalid imports the valid line and writes the rejects with their locations.
    let rejects = dir.path().join("rejects.csv");
    let out =
        import(&lake, &["--skip-invalid", "--rejects", rejects.to_str().unwrap(), "--source", "other", b]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Imported 1 billing lines"), "{}", stdout(&out));
    let rejected = std::fs::read_to_string(&rejects).unwrap();
    assert!(rejected.starts_with("file,line,column,value,reason\n"), "{rejected}");
    assert_eq!(rejected.lines().count(), 1 + 4, "{rejected}");
    assert!(rejected.contains(",3,BilledCost,12.34.5x,"), "{rejected}");
    // The kept line is the valid one, whole (the bad lines' rows were cut out beside it).
    assert_eq!(
        sql(
            &lake,
            "SELECT CAST(billed_cost AS VARCHAR) AS c, CAST(charge_period_start AS VARCHAR) AS s, \
             cardinality(tags) AS t FROM billing WHERE source = 'other'"
        ),
        "c,s,t\n1.0000000000,2026-10-01T00:00:00Z,0\n"
    );
}

/// Data files under a table's folder (not its log).
fn data_files(table: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![table.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("_delta_log") {
                    dirs.push(path);
                }
            } else {
                out.push(path.display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// A large file into an empty slice is written as it is converted, on every core; a bad value
/// found after some of its rows were written still rejects it whole, and the files written for
/// it are deleted. With `--skip-invalid` the same file imports every other line, exactly.
#[test]
fn a_bad_value_late_in_a_large_file_leaves_no_file_behind() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    // 140,000 lines (more than four of pass 2's 32k-line units), days 1-28 of October; the bad
    // value is on the last line of the last day: last in the lake's order, so the rows before
    // it are converted (and written) first.
    let n = 140_000;
    let lines: Vec<(String, String, String)> = (0..n)
        .map(|i| {
            let day = if i == n - 1 { 28 } else { 1 + i % 27 };
            let cost = if i == n - 1 { "9.x9".to_string() } else { format!("{}.{:02}", i % 1000, i % 97) };
            (format!("acct-{}", i % 3), format!("{day:02}"), cost)
        })
        .collect();
    let refs: Vec<(&str, &str, &str, &str)> =
        lines.iter().map(|(a, d, c)| (a.as_str(), d.as_str(), c.as_str(), "")).collect();
    let export = dir.path().join("large.csv");
    focus_csv(&export, &refs);
    let e = export.to_str().unwrap();

    let out = import(&lake, &[e]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("{e}:{}: column BilledCost: \"9.x9\": not a number", n + 1)), "{err}");
    assert_eq!(data_files(&lake.join("billing")), Vec::<String>::new());

    let rejects = dir.path().join("rejects.csv");
    let out = import(&lake, &["--skip-invalid", "--rejects", rejects.to_str().unwrap(), e]);
    assert!(out.status.success(), "{}", stderr(&out));
    let cents: u64 = (0..n - 1).map(|i| (i % 1000) * 100 + i % 97).sum();
    assert_eq!(
        sql(&lake, "SELECT count(*) AS n, CAST(sum(billed_cost) AS VARCHAR) AS c FROM billing"),
        format!("n,c\n{},{}.{:02}00000000\n", n - 1, cents / 100, cents % 100)
    );
    assert!(!data_files(&lake.join("billing")).is_empty());
}

#[test]
fn lines_are_attributed_by_tag_then_by_account() {
    let dir = tempfile::tempdir().unwrap();
    small_demo(dir.path()); // tenants: initech owns account 210987654321
    let export = dir.path().join("export.csv");
    std::fs::write(
        &export,
        "BillingAccountId,BillingPeriodStart,ChargePeriodStart,BilledCost,BillingCurrency,SubAccountId,Tags\n\
         X,2026-10-01,2026-10-02,1,USD,111,\"{\"\"tenant\"\": \"\"globex\"\"}\"\n\
         X,2026-10-01,2026-10-02,2,USD,210987654321,\n\
         X,2026-10-01,2026-10-02,4,USD,111,\"{\"\"team\"\": \"\"platform\"\"}\"\n",
    )
    .unwrap();
    let out = import(dir.path(), &["--source", "t", export.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("2 lines attributed to a tenant"), "{}", stdout(&out));
    assert_eq!(
        sql(
            dir.path(),
            "SELECT tenant_id, CAST(billed_cost AS VARCHAR) AS c FROM billing WHERE source = 't' ORDER BY c"
        ),
        "tenant_id,c\nglobex,1.0000000000\ninitech,2.0000000000\n,4.0000000000\n"
    );
}

#[test]
fn real_world_quirks() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let quirky = dir.path().join("quirky.csv.gz");
    // BOM, NULL tokens and empty-string nulls, M/D/YY and `YYYY-MM-DD HH:MM:SS` dates, money
    // with a currency sign and thousands separator, variable scale, a tag key with a stray
    // space, an extra unprefixed column; gzip-compressed.
    let text = "\u{feff}BilledCost,ChargePeriodStart,BillingPeriodStart,BillingCurrency,ListUnitPrice,Tags,Id,RegionId\n\
                \"$1,000.50 \",5/1/25,4/1/25,USD,\"0.0000004\",\"{\"\" org\"\": \"\"trey\"\"}\",7,NULL\n\
                0.12345678901,2025-05-02 13:00:00,2025-05-01 00:00:00,USD,,NULL,8,\n";
    let mut gz = flate2_writer(&quirky);
    std::io::Write::write_all(&mut gz, text.as_bytes()).unwrap();
    gz.finish().unwrap();
    let out = import(&lake, &[quirky.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("1 values had more than 10 decimals"), "{}", stdout(&out));
    assert_eq!(
        sql(
            &lake,
            "SELECT CAST(billed_cost AS VARCHAR) AS c, CAST(charge_period_start AS VARCHAR) AS t, tags['org'] AS org, x_extra['Id'] AS id, region_id IS NULL AS no_region, CAST(list_unit_price AS VARCHAR) AS p, billing_period FROM billing ORDER BY c"
        ),
        "c,t,org,id,no_region,p,billing_period\n\
         0.1234567890,2025-05-02T13:00:00Z,,8,true,,2025-05-01\n\
         1000.5000000000,2025-05-01T00:00:00Z,trey,7,true,0.0000004000,2025-04-01\n"
    );
}

fn flate2_writer(path: &Path) -> flate2::write::GzEncoder<std::fs::File> {
    flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::default())
}

#[test]
fn unknown_format_and_unreadable_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let f = dir.path().join("x.csv");
    std::fs::write(&f, "a,b\n1,2\n").unwrap();
    let out = import(&lake, &[f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("unknown billing export format"), "{}", stderr(&out));
    let out = import(&lake, &["/nonexistent/export.csv"]);
    assert_eq!(
        stderr(&out).trim(),
        "error: cannot read /nonexistent/export.csv: No such file or directory (os error 2)"
    );
    let out = import(&lake, &["--format", "cur9", f.to_str().unwrap()]);
    assert!(stderr(&out).contains("unknown billing format \"cur9\""), "{}", stderr(&out));
}
