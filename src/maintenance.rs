//! Lake maintenance: `tenantscope compact`, `tenantscope vacuum`, and the schedule `serve` runs
//! them on (the `maintenance` section of the config). Each step is one Delta commit, safe under
//! live ingest and queries; progress goes to `/metrics` and each run to `audit_log`.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use serde::Deserialize;
use tenantscope_query::alerts::rules::parse_duration;
use tenantscope_schemas::{CompactOrder, Lake, Table};

use crate::{
    cli::{CompactArgs, VacuumArgs},
    config::Config,
};

/// The `maintenance` section of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct MaintenanceConfig {
    /// How often `serve` compacts, applies retention, vacuums and checkpoints; `0` never.
    pub(crate) interval: String,
    /// Days each day-partitioned table keeps (e.g. spans: 14); unlisted tables keep everything.
    pub(crate) retention_days: BTreeMap<String, u32>,
    /// Files that compaction or retention replaced are deleted this long after (readers that
    /// opened an older version may still read them until then).
    pub(crate) vacuum_after: String,
    /// Z-order compacted files by tenant and time instead of merging them in order.
    pub(crate) zorder: bool,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self {
            interval: "1h".into(),
            retention_days: BTreeMap::new(),
            vacuum_after: "1h".into(),
            zorder: false,
        }
    }
}

impl MaintenanceConfig {
    /// Checks the section; returns (interval, vacuum_after, retention per table).
    pub(crate) fn parsed(&self) -> anyhow::Result<(Duration, Duration, Vec<(Table, u32)>)> {
        let d =
            |what: &str, v: &str| parse_duration(v).map_err(|e| anyhow::anyhow!("maintenance.{what}: {e}"));
        let mut retention = Vec::new();
        for (name, days) in &self.retention_days {
            let table: Table =
                name.parse().map_err(|e| anyhow::anyhow!("maintenance.retention_days: {e}"))?;
            anyhow::ensure!(
                table.partition_columns() == [tenantscope_schemas::columns::DATE],
                "maintenance.retention_days: {name} is not partitioned by day (billing and business data are kept)"
            );
            anyhow::ensure!(*days > 0, "maintenance.retention_days.{name}: keep at least 1 day");
            retention.push((table, *days));
        }
        Ok((d("interval", &self.interval)?, d("vacuum_after", &self.vacuum_after)?, retention))
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    table: &'static str,
    operation: &'static str,
}

/// Maintenance counters on `/metrics`.
#[derive(Clone, Default)]
pub(crate) struct MaintenanceMetrics {
    runs: Family<OpLabels, Counter>,
    errors: Family<OpLabels, Counter>,
    files_removed: Family<OpLabels, Counter>,
    files_added: Family<OpLabels, Counter>,
    partitions_expired: Family<OpLabels, Counter>,
    table_files: Family<OpLabels, Gauge>,
    table_bytes: Family<OpLabels, Gauge>,
}

impl MaintenanceMetrics {
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("tenantscope_maintenance");
        r.register("runs", "Maintenance steps run, by table and operation", m.runs.clone());
        r.register("errors", "Maintenance steps that failed", m.errors.clone());
        r.register(
            "files_removed",
            "Data files compaction replaced or vacuum deleted",
            m.files_removed.clone(),
        );
        r.register("files_added", "Data files compaction wrote", m.files_added.clone());
        r.register("partitions_expired", "Day partitions removed by retention", m.partitions_expired.clone());
        r.register("table_files", "Data files of each table's current version", m.table_files.clone());
        r.register("table_bytes", "Bytes of each table's current version", m.table_bytes.clone());
        m
    }
}

/// One maintenance pass over `tables`: retention, compaction, vacuum, checkpoint. Returns one
/// line per step for people; every step is also audited and counted.
pub(crate) async fn run_once(
    lake: &Lake,
    config: &MaintenanceConfig,
    tables: &[Table],
    metrics: Option<&MaintenanceMetrics>,
    actor: &str,
) -> anyhow::Result<Vec<String>> {
    let (_, vacuum_after, retention) = config.parsed()?;
    let order = if config.zorder { CompactOrder::ZOrder } else { CompactOrder::Sort };
    let mut lines = Vec::new();
    let mut failures = Vec::new();
    for &table in tables {
        let label = |operation: &'static str| OpLabels { table: table.name(), operation };
        let count = |op: &'static str, ok: bool| {
            if let Some(m) = metrics {
                m.runs.get_or_create(&label(op)).inc();
                if !ok {
                    m.errors.get_or_create(&label(op)).inc();
                }
            }
        };
        if let Some((_, days)) = retention.iter().find(|(t, _)| *t == table) {
            let keep_from = chrono::Utc::now().date_naive() - chrono::Days::new(u64::from(*days) - 1);
            match lake.expire(table, keep_from).await {
                Ok(removed) => {
                    count("expire", true);
                    if let Some(m) = metrics {
                        m.partitions_expired.get_or_create(&label("expire")).inc_by(removed.len() as u64);
                    }
                    if !removed.is_empty() {
                        let line = format!(
                            "{table}: removed {} days before {keep_from} ({} .. {})",
                            removed.len(),
                            removed[0],
                            removed[removed.len() - 1]
                        );
                        audit(lake, actor, "maintenance.expire", table, &line).await;
                        lines.push(line);
                    }
                }
                Err(e) => {
                    count("expire", false);
                    failures.push(format!("{table}: retention: {e}"));
                }
            }
        }
        match lake.compact(table, order).await {
            Ok(r) => {
                count("compact", true);
                if let Some(m) = metrics {
                    m.files_removed.get_or_create(&label("compact")).inc_by(r.files_removed);
                    m.files_added.get_or_create(&label("compact")).inc_by(r.files_added);
                }
                if r.files_removed > 0 {
                    let line = format!(
                        "{table}: compacted {} files into {} in {} partitions: {} files, {} bytes -> {} files, {} bytes",
                        r.files_removed,
                        r.files_added,
                        r.partitions,
                        r.before.files,
                        r.before.bytes,
                        r.after.files,
                        r.after.bytes
                    );
                    audit(lake, actor, "maintenance.compact", table, &line).await;
                    lines.push(line);
                }
            }
            Err(e) => {
                count("compact", false);
                failures.push(format!("{table}: compaction: {e}"));
            }
        }
        match lake.vacuum(table, vacuum_after).await {
            Ok(n) => {
                count("vacuum", true);
                if let Some(m) = metrics {
                    m.files_removed.get_or_create(&label("vacuum")).inc_by(n as u64);
                }
                if n > 0 {
                    let line = format!("{table}: vacuum deleted {n} unreferenced files");
                    audit(lake, actor, "maintenance.vacuum", table, &line).await;
                    lines.push(line);
                }
            }
            Err(e) => {
                count("vacuum", false);
                failures.push(format!("{table}: vacuum: {e}"));
            }
        }
        match lake.checkpoint(table).await {
            Ok(_) => count("checkpoint", true),
            Err(e) => {
                count("checkpoint", false);
                failures.push(format!("{table}: checkpoint: {e}"));
            }
        }
        if let (Some(m), Ok(f)) = (metrics, lake.files(table).await) {
            m.table_files.get_or_create(&label("current")).set(f.files as i64);
            m.table_bytes.get_or_create(&label("current")).set(f.bytes as i64);
        }
    }
    if !failures.is_empty() {
        anyhow::bail!("{}", failures.join("; "));
    }
    Ok(lines)
}

async fn audit(lake: &Lake, actor: &str, action: &str, table: Table, detail: &str) {
    if let Err(e) = lake.audit(actor, action, table.name(), detail).await {
        tracing::warn!(error = %e, "Cannot write the audit log.");
    }
}

/// `serve`'s schedule: a pass every `maintenance.interval`, the first one an interval after
/// the start.
pub(crate) async fn maintenance_loop(lake: Lake, config: MaintenanceConfig, metrics: MaintenanceMetrics) {
    let Ok((interval, _, _)) = config.parsed() else { return };
    if interval.is_zero() {
        return;
    }
    loop {
        tokio::time::sleep(interval).await;
        match run_once(&lake, &config, &Table::ALL, Some(&metrics), "tenantscope serve").await {
            Ok(lines) => {
                for l in lines {
                    tracing::info!("Maintenance: {l}");
                }
            }
            Err(e) => tracing::warn!(error = %e, "Lake maintenance failed; retrying at the next interval."),
        }
    }
}

fn tables_of(names: &[String]) -> anyhow::Result<Vec<Table>> {
    if names.is_empty() {
        return Ok(Table::ALL.to_vec());
    }
    names.iter().map(|n| n.parse::<Table>().map_err(|e| anyhow::anyhow!("--table: {e}"))).collect()
}

/// `tenantscope compact`: compaction and a checkpoint, no retention, no vacuum.
pub(crate) async fn compact(args: CompactArgs) -> anyhow::Result<()> {
    let lake = Lake::open_url(&args.lake.data).await.context("cannot open the lake")?;
    let order = if args.zorder { CompactOrder::ZOrder } else { CompactOrder::Sort };
    for table in tables_of(&args.table)? {
        let r = lake.compact(table, order).await?;
        lake.checkpoint(table).await?;
        let line = format!(
            "{table}: {} files, {} bytes -> {} files, {} bytes ({} partitions compacted)",
            r.before.files, r.before.bytes, r.after.files, r.after.bytes, r.partitions
        );
        if r.files_removed > 0 {
            audit(&lake, "tenantscope compact", "maintenance.compact", table, &line).await;
        }
        crate::cli::say(line);
    }
    Ok(())
}

/// `tenantscope vacuum`: retention from the config, then deletion of unreferenced files.
pub(crate) async fn vacuum(args: VacuumArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())?;
    let lake = Lake::open_url(&args.lake.data).await.context("cannot open the lake")?;
    let mut m = config.maintenance.clone();
    if let Some(after) = args.vacuum_after {
        m.vacuum_after = after;
    }
    let (_, vacuum_after, retention) = m.parsed()?;
    for table in tables_of(&args.table)? {
        if let Some((_, days)) = retention.iter().find(|(t, _)| *t == table) {
            let keep_from = chrono::Utc::now().date_naive() - chrono::Days::new(u64::from(*days) - 1);
            let removed = lake.expire(table, keep_from).await?;
            if !removed.is_empty() {
                let line = format!("{table}: removed {} days before {keep_from}", removed.len());
                audit(&lake, "tenantscope vacuum", "maintenance.expire", table, &line).await;
                crate::cli::say(line);
            }
        }
        let n = lake.vacuum(table, vacuum_after).await?;
        if n > 0 {
            audit(&lake, "tenantscope vacuum", "maintenance.vacuum", table, &format!("deleted {n} files"))
                .await;
        }
        crate::cli::say(format!("{table}: deleted {n} unreferenced files"));
    }
    Ok(())
}
