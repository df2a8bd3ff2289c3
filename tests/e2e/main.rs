//! End-to-end tests of the `tenantscope` binary (one test binary: a `mod` per area).

mod cli;
pub(crate) mod demo_and_serve;
mod import_billing;
mod import_business;
mod pg_wire;
mod support;
