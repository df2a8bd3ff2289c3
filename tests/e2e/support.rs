//! Running the built binary.

use std::{
    net::TcpListener,
    path::Path,
    process::{Command, Output},
};

pub(crate) fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantscope"));
    cmd.env_remove("TENANTSCOPE_DATA").env("TENANTSCOPE_LOG", "warn");
    cmd
}

pub(crate) fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("the tenantscope binary runs")
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Builds a small demo lake in `dir` (5 tenants, 2 days) without serving it.
pub(crate) fn small_demo(dir: &Path) {
    let out = run(&[
        "demo",
        "--no-serve",
        "--data",
        dir.to_str().unwrap(),
        "--tenants",
        "5",
        "--days",
        "2",
        "--peak-requests-per-day",
        "600",
        "--end-date",
        "2026-11-27",
        "--seed",
        "7",
    ]);
    assert!(out.status.success(), "demo failed: {}", stderr(&out));
}

/// The package's folder: from the environment `cargo test` runs with, so that a test binary built
/// in another checkout sharing this target dir reads this checkout's files; else as compiled.
pub(crate) fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}
