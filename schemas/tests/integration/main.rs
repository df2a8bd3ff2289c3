//! Integration tests of the schemas crate (one binary: `mod` per area).

mod lake_conformance;
mod maintenance;
