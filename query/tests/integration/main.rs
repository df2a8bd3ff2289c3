//! The query crate's one integration-test binary.

mod alerts;
mod slt;

/// The package's folder: from the environment `cargo test` runs with, so that a test binary built
/// in another checkout sharing this target dir reads this checkout's files; else as compiled.
pub(crate) fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}
