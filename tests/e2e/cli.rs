//! Bad input to the CLI: one clear line on stderr, a non-zero exit, never a panic.

use crate::support::{run, stderr};

fn assert_one_line_error(args: &[&str], expected_code: i32, must_contain: &str) {
    let out = run(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(expected_code), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: not one line: {err:?}");
    assert!(err.contains(must_contain), "{args:?}: {err:?} lacks {must_contain:?}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"), "{err}");
}

#[test]
fn unknown_flag() {
    assert_one_line_error(&["sql", "--bogus", "SELECT 1"], 2, "unexpected argument '--bogus'");
}

#[test]
fn unknown_command() {
    assert_one_line_error(&["frobnicate"], 2, "unrecognized subcommand 'frobnicate'");
}

#[test]
fn bad_sql() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    assert_one_line_error(&["sql", "--data", data, "SELEC 1"], 1, "error: SQL error");
    assert_one_line_error(&["sql", "--data", data, "SELECT nope FROM spans"], 1, "nope");
    assert_one_line_error(&["sql", "--data", data, "SELECT * FROM no_such_table"], 1, "no_such_table");
}

#[test]
fn unsupported_lake_url() {
    assert_one_line_error(&["sql", "--data", "ftp://host/lake", "SELECT 1"], 1, "unsupported scheme \"ftp\"");
}

#[test]
fn unreachable_lake_url() {
    // Nothing listens on port 9: the error names the lake and comes within the retry budget.
    let out = crate::support::bin()
        .args(["sql", "--data", "s3://bucket/lake", "SELECT 1"])
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "k")
        .env("AWS_SECRET_ACCESS_KEY", "s")
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err:?}");
    assert!(
        err.starts_with("error: cannot open the lake: cannot reach the lake at s3://bucket/lake/"),
        "{err}"
    );
}

#[test]
fn sql_on_an_empty_lake_answers() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[
        "sql",
        "--data",
        dir.path().to_str().unwrap(),
        "--format",
        "csv",
        "SELECT count(*) AS n FROM spans",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(crate::support::stdout(&out), "n\n0\n");
}
