//! For the test suites of the workspace's crates (not part of the product's interface).

/// The bucket of the S3-compatible server the README's test command starts (moto on
/// 127.0.0.1), from `TENANTSCOPE_TEST_S3_BUCKET`; the endpoint and keys come from the
/// environment as for any user (`AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, ...). `None` (the test
/// skips, saying so) when it is not set, unless `TENANTSCOPE_REQUIRE_S3` is set, as the test
/// command sets it: then it panics, so that CI cannot skip an S3 test silently.
pub fn s3_bucket() -> Option<String> {
    match std::env::var("TENANTSCOPE_TEST_S3_BUCKET") {
        Ok(bucket) => Some(bucket),
        Err(_) => {
            assert!(
                std::env::var_os("TENANTSCOPE_REQUIRE_S3").is_none(),
                "TENANTSCOPE_REQUIRE_S3 is set but TENANTSCOPE_TEST_S3_BUCKET is not"
            );
            eprintln!("skipped: no S3 server (run the README's test command)");
            None
        }
    }
}
