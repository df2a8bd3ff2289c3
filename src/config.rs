//! The configuration file (`--config FILE`, YAML). Every section is optional; see
//! `examples/tenantscope.yaml`.

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;
use tenantscope_ingest::otlp::IngestConfig;
use tenantscope_query::{alerts::AlertsConfig, cost::CostConfig};

/// Everything the config file may set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Config {
    /// OTLP ingest: attribution, flush interval, memory and rate limits.
    pub(crate) ingest: IngestConfig,
    /// The cost model: meters and allocation rules.
    pub(crate) cost: CostConfig,
    /// Alert notifications: Alertmanagers, webhooks, resend and retry settings.
    pub(crate) alerts: AlertsConfig,
    /// Lake maintenance: compaction, retention, vacuum schedule.
    pub(crate) maintenance: crate::maintenance::MaintenanceConfig,
}

impl Config {
    /// Reads and checks the file; the defaults when there is none.
    pub(crate) fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else { return Ok(Self::default()) };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses config text; `name` says where it came from in messages.
    pub(crate) fn parse(text: &str, name: &str) -> anyhow::Result<Self> {
        let config: Config =
            serde_yaml_ng::from_str(text).with_context(|| format!("invalid config file {name}"))?;
        let i = &config.ingest;
        anyhow::ensure!(
            i.max_tenant_share > 0.0 && i.max_tenant_share <= 1.0,
            "invalid config file {name}: ingest.max_tenant_share must be in (0, 1], not {}",
            i.max_tenant_share
        );
        config.maintenance.parsed().with_context(|| format!("invalid config file {name}"))?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configs_parse() {
        let c = Config::parse(include_str!("../examples/tenantscope.yaml"), "tenantscope.yaml").unwrap();
        assert_eq!(c.ingest.flush_interval_ms, 5000);
        assert_eq!(c.cost.meters.len(), 4);
        assert_eq!(c.cost.allocation.len(), 4);
        assert_eq!(c.alerts.webhooks[0].name, "oncall");
        assert_eq!(c.alerts.resend_delay, "1m");
        assert_eq!(c.maintenance.retention_days.get("spans"), Some(&14));
        assert_eq!(
            c.ingest.attribution.mappings[1].values.get("shop-prod").map(String::as_str),
            Some("acme")
        );
        let demo = Config::parse(include_str!("../examples/demo.yaml"), "demo.yaml").unwrap();
        assert_eq!(demo.cost.allocation[0].meter.as_deref(), Some("requests"));
    }

    #[test]
    fn mistakes_are_named() {
        let e = Config::parse("ingest:\n  flush_interval: 5\n", "x.yaml").unwrap_err();
        assert!(format!("{e:#}").contains("unknown field `flush_interval`"), "{e:#}");
        let e =
            Config::parse("cost:\n  allocation:\n    - {name: a, method: split}\n", "x.yaml").unwrap_err();
        assert!(format!("{e:#}").contains("unknown variant `split`"), "{e:#}");
        let e = Config::parse("maintenance:\n  retention_days: {billing: 30}\n", "x.yaml").unwrap_err();
        assert!(format!("{e:#}").contains("billing is not partitioned by day"), "{e:#}");
    }
}
