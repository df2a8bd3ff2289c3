//! `tenantscope`: per-tenant observability and cost analytics. See README.md.

mod cli;
mod config;
mod demo;
mod gate;
mod import;
mod maintenance;
mod malloc;
mod serve;
mod sql;
mod tls;

fn main() -> std::process::ExitCode {
    malloc::tune();
    cli::main()
}
