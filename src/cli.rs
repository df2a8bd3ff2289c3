//! Command line: every flag is also an environment variable `TENANTSCOPE_*`.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand, ValueEnum};
use tenantscope_ingest::business::Kind;

/// Per-tenant observability and cost analytics for SaaS: usage, cost, revenue and margin per
/// tenant, from OpenTelemetry and cloud bills, in SQL.
#[derive(Debug, Parser)]
#[command(name = "tenantscope", version, about)]
pub(crate) struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `tenantscope=debug`.
    #[arg(long, global = true, env = "TENANTSCOPE_LOG", default_value = "info")]
    pub(crate) log: String,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Serve every service over the lake.
    Serve(ServeArgs),
    /// Run one SQL statement on the lake and print the result.
    Sql(SqlArgs),
    /// Build a realistic, deterministic demo fleet in the lake, then serve it.
    Demo(DemoArgs),
    /// Import billing exports, tenants, plans and invoices into the lake.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Alert rules.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Merges small files into large ones (per partition, one commit per table) and
    /// checkpoints the tables' logs. Safe while serve ingests and answers queries.
    Compact(CompactArgs),
    /// Applies the config's retention (whole day partitions) and deletes data files that no
    /// table version newer than `maintenance.vacuum_after` references.
    Vacuum(VacuumArgs),
    /// Recompute the `usage` table (hourly quantity per tenant and meter) from the telemetry.
    /// `serve` keeps it up to date by itself; use this after changing the meters.
    Rollup(RollupArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CompactArgs {
    #[command(flatten)]
    pub(crate) lake: LakeArgs,
    /// Only these tables (repeatable; default all).
    #[arg(long)]
    pub(crate) table: Vec<String>,
    /// Z-order the rows by tenant and time instead of merging files in order.
    #[arg(long)]
    pub(crate) zorder: bool,
}

#[derive(Debug, Args)]
pub(crate) struct VacuumArgs {
    #[command(flatten)]
    pub(crate) lake: LakeArgs,
    /// Configuration file (its `maintenance` section: retention_days, vacuum_after).
    #[arg(long, env = "TENANTSCOPE_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Only these tables (repeatable; default all).
    #[arg(long)]
    pub(crate) table: Vec<String>,
    /// Overrides maintenance.vacuum_after (e.g. 1h; 0 deletes every unreferenced file now,
    /// which breaks queries that are reading an older version).
    #[arg(long)]
    pub(crate) vacuum_after: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RulesCommand {
    /// Checks rule files: their syntax, durations, templates, and that every rule's SQL plans
    /// against the lake's tables and views. Problems are printed as FILE:LINE: message; the exit
    /// code is 1 when there is any.
    Check(RulesCheckArgs),
    /// Evaluates every rule once, at a given time, over the lake, without notifying or writing
    /// anything, and prints the alert instances (pending: `for` has not passed in one
    /// evaluation) and recorded points as JSON lines.
    Eval(RulesEvalArgs),
}

#[derive(Debug, Args)]
pub(crate) struct RulesEvalArgs {
    /// Rule files or folders of them.
    #[arg(required = true)]
    pub(crate) files: Vec<PathBuf>,
    #[command(flatten)]
    pub(crate) lake: LakeArgs,
    /// Configuration file (its `cost` section).
    #[arg(long, env = "TENANTSCOPE_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Evaluation time (RFC 3339, e.g. 2026-11-28T06:00:00Z); default now.
    #[arg(long)]
    pub(crate) at: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct RulesCheckArgs {
    /// Rule files or folders of them.
    #[arg(required = true)]
    pub(crate) files: Vec<PathBuf>,
    /// Configuration file (its `cost` section defines the views the rules may use).
    #[arg(long, env = "TENANTSCOPE_CONFIG")]
    pub(crate) config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct RollupArgs {
    #[command(flatten)]
    pub(crate) lake: LakeArgs,
    /// Configuration file (its `cost.meters`).
    #[arg(long, env = "TENANTSCOPE_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// First UTC day (YYYY-MM-DD); default: the first day with telemetry.
    #[arg(long)]
    pub(crate) from: Option<String>,
    /// Last UTC day (YYYY-MM-DD); default: the last day with telemetry.
    #[arg(long)]
    pub(crate) to: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ImportCommand {
    /// Import cloud billing exports (FOCUS 1.0-1.2, AWS CUR 2.0 and legacy CUR, Azure cost
    /// details, Google Cloud billing export): CSV, CSV.gz, Parquet or JSON lines.
    /// The files of one call are one import: it replaces the lines of the same source, billing
    /// periods and billing accounts in one transaction; the same files again change nothing.
    Billing(BillingImportArgs),
    /// Import tenants (CSV or YAML: id, name, plan, accounts, labels). Replaces the tenants it names.
    Tenants(BusinessImportArgs),
    /// Import the price book (YAML: plans, base fees, priced meters, tiers). Replaces the plan
    /// versions it defines.
    Plans(BusinessImportArgs),
    /// Import invoice lines (CSV shaped like a Stripe invoice-line export). Replaces the
    /// invoices it contains.
    Invoices(BusinessImportArgs),
}

#[derive(Debug, Args)]
pub(crate) struct BusinessImportArgs {
    /// The file.
    pub(crate) file: PathBuf,
    #[command(flatten)]
    pub(crate) lake: LakeArgs,
}

#[derive(Debug, Args)]
pub(crate) struct BillingImportArgs {
    /// Export files (all the files of one export, e.g. every part of one month).
    #[arg(required = true)]
    pub(crate) files: Vec<PathBuf>,
    #[command(flatten)]
    pub(crate) lake: LakeArgs,
    /// Force the format instead of detecting it from the header: focus, aws-cur2, aws-cur,
    /// azure, gcp.
    #[arg(long, env = "TENANTSCOPE_IMPORT_FORMAT")]
    pub(crate) format: Option<String>,
    /// Source name; a restated export replaces the earlier import of the same source
    /// (default: the format's name).
    #[arg(long, env = "TENANTSCOPE_IMPORT_SOURCE")]
    pub(crate) source: Option<String>,
    /// Import the valid rows of a file that has invalid ones; the invalid ones go to --rejects.
    #[arg(long, env = "TENANTSCOPE_IMPORT_SKIP_INVALID")]
    pub(crate) skip_invalid: bool,
    /// Where --skip-invalid writes the rejected values (CSV: file,line,column,value,reason).
    #[arg(long, env = "TENANTSCOPE_IMPORT_REJECTS", default_value = "tenantscope-rejects.csv")]
    pub(crate) rejects: PathBuf,
    /// Tag keys that name a billing line's tenant (the first one set wins); lines without one
    /// go to the tenant owning their sub account (tenants.accounts), else they are shared cost.
    #[arg(
        long = "tenant-tag",
        env = "TENANTSCOPE_TENANT_TAGS",
        value_delimiter = ',',
        default_value = "tenant,tenant_id,tenant.id"
    )]
    pub(crate) tenant_tags: Vec<String>,
}

/// Where the lake is.
#[derive(Debug, Args, Clone)]
pub(crate) struct LakeArgs {
    /// The lake: a local folder, or file://, s3://bucket/prefix, gs://bucket/prefix,
    /// az://container/prefix. S3 reads the standard AWS_* variables (AWS_ENDPOINT_URL,
    /// AWS_ALLOW_HTTP, AWS_REGION, AWS_ACCESS_KEY_ID, ...).
    #[arg(long, env = "TENANTSCOPE_DATA", default_value = "./tenantscope-data")]
    pub(crate) data: String,
}

#[derive(Debug, Args, Clone)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub(crate) lake: LakeArgs,
    /// OTLP/gRPC listen address.
    #[arg(long, env = "TENANTSCOPE_OTLP_GRPC_ADDR", default_value = "127.0.0.1:4317")]
    pub(crate) otlp_grpc_addr: SocketAddr,
    /// OTLP/HTTP listen address (`/v1/traces`, `/v1/metrics`, `/v1/logs`).
    #[arg(long, env = "TENANTSCOPE_OTLP_HTTP_ADDR", default_value = "127.0.0.1:4318")]
    pub(crate) otlp_http_addr: SocketAddr,
    /// HTTP API listen address (`/v1/sql`, `/healthz`, `/readyz`).
    #[arg(long, env = "TENANTSCOPE_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub(crate) http_addr: SocketAddr,
    /// PostgreSQL wire protocol listen address.
    #[arg(long, env = "TENANTSCOPE_PG_ADDR", default_value = "127.0.0.1:5433")]
    pub(crate) pg_addr: SocketAddr,
    /// Configuration file (YAML; see examples/tenantscope.yaml): ingest limits, tenant attribution.
    #[arg(long, env = "TENANTSCOPE_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Alert rule files, or folders of `*.yaml` rule files (repeatable). They are reloaded
    /// when they change and on SIGHUP.
    #[arg(long, env = "TENANTSCOPE_RULES", value_delimiter = ',')]
    pub(crate) rules: Vec<PathBuf>,
    /// Alertmanager to send alerts to (its base URL, e.g. http://127.0.0.1:9093; repeatable).
    #[arg(long = "alertmanager-url", env = "TENANTSCOPE_ALERTMANAGER_URL", value_delimiter = ',')]
    pub(crate) alertmanager_urls: Vec<String>,
    /// This service's URL as users reach it, for links in alerts (default http://<http-addr>).
    #[arg(long, env = "TENANTSCOPE_EXTERNAL_URL")]
    pub(crate) external_url: Option<String>,
    /// Folder of the OTLP write-ahead log (requests are acknowledged once logged here).
    #[arg(long, env = "TENANTSCOPE_WAL_DIR", default_value = "./tenantscope-wal")]
    pub(crate) wal_dir: PathBuf,
    /// Overrides the config's `ingest.flush_interval_ms`: acknowledged telemetry reaches the
    /// lake (and SQL) within this many milliseconds.
    #[arg(long, env = "TENANTSCOPE_FLUSH_INTERVAL_MS")]
    pub(crate) flush_interval_ms: Option<u64>,
    /// How old (seconds) a table snapshot a query may see before the table is re-read.
    #[arg(long, env = "TENANTSCOPE_MAX_STALENESS_SECS", default_value_t = 1)]
    pub(crate) max_staleness_secs: u64,
    /// Principals file (YAML: name, role, tenant, token_sha256; see examples/auth.yaml): every
    /// listener then asks for a token (HTTP and OTLP: `Authorization: Bearer`; PostgreSQL:
    /// the principal's name as user, the token as password).
    #[arg(long, env = "TENANTSCOPE_AUTH", conflicts_with = "no_auth")]
    pub(crate) auth: Option<PathBuf>,
    /// Serve without authentication: every caller is an admin. For a trusted machine only (the
    /// demo sets it when --auth is not given).
    #[arg(long, env = "TENANTSCOPE_NO_AUTH")]
    pub(crate) no_auth: bool,
    /// TLS certificate chain (PEM) for every listener; read again when the file changes.
    #[arg(long, env = "TENANTSCOPE_TLS_CERT", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM); read again when the file changes.
    #[arg(long, env = "TENANTSCOPE_TLS_KEY", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// CA certificates (PEM): the OTLP receivers then require a client certificate signed by
    /// one of them.
    #[arg(long, env = "TENANTSCOPE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub(crate) tls_client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    /// Aligned text table.
    Table,
    /// CSV with a header line.
    Csv,
    /// JSON array of objects.
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct SqlArgs {
    /// The SQL statement, e.g. "SELECT tenant_id, count(*) FROM spans GROUP BY 1".
    pub(crate) sql: String,
    #[command(flatten)]
    pub(crate) lake: LakeArgs,
    /// Configuration file (its `cost` section: meters and allocation rules).
    #[arg(long, env = "TENANTSCOPE_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Output format.
    #[arg(long, env = "TENANTSCOPE_FORMAT", value_enum, default_value = "table")]
    pub(crate) format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    #[command(flatten)]
    pub(crate) serve: ServeArgs,
    /// Seed of the generator: the same seed, tenants, days and end date give the same fleet.
    #[arg(long, env = "TENANTSCOPE_DEMO_SEED", default_value_t = 42)]
    pub(crate) seed: u64,
    /// Number of tenants.
    #[arg(long, env = "TENANTSCOPE_DEMO_TENANTS", default_value_t = 24,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) tenants: u32,
    /// Days of history, ending with yesterday (UTC).
    #[arg(long, env = "TENANTSCOPE_DEMO_DAYS", default_value_t = 7,
          value_parser = clap::value_parser!(u32).range(1..=400))]
    pub(crate) days: u32,
    /// Last day of the demo history (UTC, YYYY-MM-DD); default yesterday.
    #[arg(long, env = "TENANTSCOPE_DEMO_END_DATE")]
    pub(crate) end_date: Option<String>,
    /// Requests per day of the busiest tenant (the rest follow a Zipf-like curve).
    #[arg(long, env = "TENANTSCOPE_DEMO_PEAK_REQUESTS", default_value_t = 20_000)]
    pub(crate) peak_requests_per_day: u32,
    /// Extra compute resources billed by the hour, for a benchmark-sized bill
    /// (resources x 24 x days lines; 1,389 resources over 30 days is a million lines).
    #[arg(long, env = "TENANTSCOPE_DEMO_BILLING_RESOURCES", default_value_t = 0)]
    pub(crate) billing_resources: u32,
    /// Build the demo lake and exit instead of serving it.
    #[arg(long, env = "TENANTSCOPE_DEMO_NO_SERVE")]
    pub(crate) no_serve: bool,
}

/// Parses the command line, runs the command, maps any error to one line and exit code 1.
pub(crate) fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // clap's message is several lines with a usage block; one clear line is enough.
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("{first} (see tenantscope --help)");
            return ExitCode::from(2);
        }
    };
    init_logging(&cli.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => crate::serve::run(args).await,
            Command::Sql(args) => crate::sql::run(args).await,
            Command::Demo(args) => crate::demo::run(args).await,
            Command::Import(ImportCommand::Billing(args)) => crate::import::billing(args).await,
            Command::Rollup(args) => crate::sql::rollup(args).await,
            Command::Rules(RulesCommand::Check(args)) => crate::sql::rules_check(args).await,
            Command::Rules(RulesCommand::Eval(args)) => crate::sql::rules_eval(args).await,
            Command::Compact(args) => crate::maintenance::compact(args).await,
            Command::Vacuum(args) => crate::maintenance::vacuum(args).await,
            Command::Import(ImportCommand::Tenants(args)) => {
                crate::import::business(Kind::Tenants, args).await
            }
            Command::Import(ImportCommand::Plans(args)) => crate::import::business(Kind::Plans, args).await,
            Command::Import(ImportCommand::Invoices(args)) => {
                crate::import::business(Kind::Invoices, args).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` joins the error chain: "cannot open the lake: ...: connection refused";
            // some messages (DataFusion's schema errors) span lines: keep it to one.
            let message = format!("{e:#}");
            eprintln!("error: {}", message.split_whitespace().collect::<Vec<_>>().join(" "));
            ExitCode::FAILURE
        }
    }
}

/// Prints a line to stdout. A closed pipe (`tenantscope ... | head`) ends the process quietly,
/// as it does for other command-line tools, instead of panicking like `println!`.
pub(crate) fn say(text: impl std::fmt::Display) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

fn init_logging(filter: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    // deltalake logs a failed snapshot load at ERROR even when the caller handles it; its
    // warnings and errors that matter reach us as `Err` values.
    let directives = format!("deltalake_core=off,buoyant_kernel=off,buoyant_kernel_engine=off,{filter}");
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
