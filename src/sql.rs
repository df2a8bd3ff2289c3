//! `tenantscope sql`: one statement, printed.

use anyhow::Context;
use tenantscope_query::{EngineConfig, OutputFormat, QueryEngine, write_result};
use tenantscope_schemas::Lake;

use crate::cli::{Format, SqlArgs};

pub(crate) async fn run(args: SqlArgs) -> anyhow::Result<()> {
    let lake = Lake::open_url(&args.lake.data).await.context("cannot open the lake")?;
    let engine = QueryEngine::new(lake, EngineConfig::default()).await?;
    let result = engine.sql(&args.sql).await?;
    let format = match args.format {
        Format::Table => OutputFormat::Table,
        Format::Csv => OutputFormat::Csv,
        Format::Json => OutputFormat::Json,
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    write_result(&result, format, &mut out)?;
    Ok(())
}
