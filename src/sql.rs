//! `tenantscope sql`: one statement, printed.

use anyhow::Context;
use tenantscope_query::{EngineConfig, OutputFormat, QueryEngine, write_result};
use tenantscope_schemas::Lake;

use crate::{
    cli::{Format, RollupArgs, RulesCheckArgs, RulesEvalArgs, SqlArgs},
    config::Config,
};

pub(crate) async fn run(args: SqlArgs) -> anyhow::Result<()> {
    let lake = Lake::open_url(&args.lake.data).await.context("cannot open the lake")?;
    let config = Config::load(args.config.as_deref())?;
    let engine = QueryEngine::new(lake, EngineConfig { cost: config.cost, ..Default::default() }).await?;
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

/// `tenantscope rollup`: recomputes `usage` for a range of days.
pub(crate) async fn rollup(args: RollupArgs) -> anyhow::Result<()> {
    use tenantscope_query::cost::usage;
    let config = Config::load(args.config.as_deref())?;
    let lake = Lake::open_url(&args.lake.data).await.context("cannot open the lake")?;
    let day = |s: &str| {
        chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .with_context(|| format!("{s:?} is not a date of the form YYYY-MM-DD"))
    };
    let (from, to) = (args.from.as_deref().map(day).transpose()?, args.to.as_deref().map(day).transpose()?);
    let engine = QueryEngine::new(lake.clone(), EngineConfig::default()).await?;
    let result = engine
        .sql(
            "SELECT CAST(min(d) AS VARCHAR), CAST(max(d) AS VARCHAR) FROM (SELECT min(date) AS d FROM spans \
             UNION ALL SELECT max(date) FROM spans UNION ALL SELECT min(date) FROM logs UNION ALL SELECT max(date) \
             FROM logs UNION ALL SELECT min(date) FROM metrics UNION ALL SELECT max(date) FROM metrics) t",
        )
        .await?;
    let bounds = result.batches.first().and_then(|b| {
        let col = |i: usize| {
            arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8).ok().and_then(|a| {
                let a = arrow::array::AsArray::as_string::<i32>(&a);
                (!arrow::array::Array::is_null(a, 0)).then(|| a.value(0).to_string())
            })
        };
        Some((col(0)?, col(1)?))
    });
    let Some((first, last)) = bounds else {
        crate::cli::say("No telemetry in the lake: nothing to roll up.");
        return Ok(());
    };
    let (from, to) = (from.unwrap_or(day(&first)?), to.unwrap_or(day(&last)?));
    anyhow::ensure!(from <= to, "--from {from} is after --to {to}");
    let days: std::collections::BTreeSet<_> = from.iter_days().take_while(|d| *d <= to).collect();
    let rows = usage::rollup(&lake, &config.cost.meters, &days).await?;
    crate::cli::say(format!("Rolled up {} days ({from} .. {to}): {rows} usage rows.", days.len()));
    Ok(())
}

/// `tenantscope rules check`: every problem of the rule files as FILE:LINE: message.
pub(crate) async fn rules_check(args: RulesCheckArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())?;
    // Planning needs the tables' schemas and the views, not data: an empty lake in a scratch
    // folder, removed afterwards.
    let scratch = std::env::temp_dir().join(format!("tenantscope-rules-check-{}", std::process::id()));
    let lake = Lake::open_url(&scratch.display().to_string()).await.context("cannot open a scratch lake")?;
    let engine = QueryEngine::new(lake, EngineConfig { cost: config.cost, ..Default::default() }).await?;
    crate::serve::register_system_tables(&engine, None)?;
    let outcome = tenantscope_query::alerts::load_checked(&engine, &args.files).await;
    let _ = std::fs::remove_dir_all(&scratch);
    match outcome {
        Ok(groups) => {
            let rules: usize = groups.iter().map(|g| g.rules.len()).sum();
            crate::cli::say(format!("SUCCESS: {rules} rules in {} groups.", groups.len()));
            Ok(())
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            anyhow::bail!("{} problems in the rule files", errors.len())
        }
    }
}

/// `tenantscope rules eval`: one evaluation of every rule at `--at`, printed as JSON lines.
pub(crate) async fn rules_eval(args: RulesEvalArgs) -> anyhow::Result<()> {
    use tenantscope_query::alerts::{AlertsConfig, RuleManager};
    let at = match &args.at {
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .with_context(|| format!("--at {t:?} is not an RFC 3339 time such as 2026-11-28T06:00:00Z"))?
            .with_timezone(&chrono::Utc),
        None => chrono::Utc::now(),
    };
    let config = Config::load(args.config.as_deref())?;
    let lake = Lake::open_url(&args.lake.data).await.context("cannot open the lake")?;
    let engine = QueryEngine::new(lake, EngineConfig { cost: config.cost, ..Default::default() }).await?;
    // No notifier and no state file: nothing leaves the process.
    let alerts = AlertsConfig {
        alertmanager_urls: Vec::new(),
        webhooks: Vec::new(),
        state_file: None,
        ..config.alerts
    };
    let manager = RuleManager::new(engine, args.files.clone(), &alerts, "http://tenantscope")
        .await
        .map_err(|e| anyhow::anyhow!("the rules cannot be loaded:\n{e}"))?;
    let mut failed = 0;
    for group in manager.groups() {
        for report in manager.evaluate_preview(&group, at).await {
            if report.get("error").is_some_and(|e| !e.is_null()) {
                failed += 1;
            }
            crate::cli::say(report);
        }
    }
    anyhow::ensure!(failed == 0, "{failed} rules failed to evaluate");
    Ok(())
}
