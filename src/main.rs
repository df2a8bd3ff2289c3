//! `tenantscope`: per-tenant observability and cost analytics. See README.md.

mod cli;
mod config;
mod demo;
mod import;
mod maintenance;
mod serve;
mod sql;

fn main() -> std::process::ExitCode {
    cli::main()
}
