//! `tenantscope`: per-tenant observability and cost analytics. See README.md.

mod cli;
mod config;
mod demo;
mod gate;
mod import;
mod maintenance;
mod serve;
mod sql;
mod tls;

fn main() -> std::process::ExitCode {
    cli::main()
}
