//! The query crate's one integration-test binary.

mod alerts;
mod slt;
