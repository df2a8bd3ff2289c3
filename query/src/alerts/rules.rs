//! Rule files: Prometheus' rule-file layout (groups with an `interval`, alerting and recording
//! rules) with SQL where Prometheus has PromQL.
//!
//! ```yaml
//! groups:
//!   - name: cost
//!     interval: 5m
//!     rules:
//!       - alert: TenantCostSpike
//!         sql: SELECT tenant_id, score AS value FROM cost_anomalies WHERE is_anomaly
//!         for: 10m
//!         keep_firing_for: 0s
//!         labels: {severity: warning}
//!         annotations:
//!           summary: "{{ $labels.tenant_id }} costs {{ $value }} times its usual"
//!       - record: tenant_daily_cost
//!         sql: SELECT tenant_id, sum(cost) AS value FROM tenant_costs GROUP BY tenant_id
//! ```
//!
//! Every row an alerting rule's SQL returns is one alert instance: its text, date, time and
//! boolean columns are its labels (NULL and empty values are left out, as Prometheus drops empty
//! labels), its numeric `value` column is its value (1 when there is none). A recording rule's
//! rows become points of the gauge `record` in the `metrics` table.

use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use super::template;

/// One problem in a rule file, located at a line (1-based) of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// The file.
    pub file: String,
    /// Line in the file, 1-based (0 when unknown).
    pub line: usize,
    /// Column in the line, 1-based (0 when unknown).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (0, _) => write!(f, "{}: {}", self.file, self.message),
            (l, 0) => write!(f, "{}:{l}: {}", self.file, self.message),
            (l, c) => write!(f, "{}:{l}:{c}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for RuleError {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    groups: Vec<GroupDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupDoc {
    name: String,
    #[serde(default)]
    interval: Option<String>,
    /// At most this many alert instances (or recorded series) per rule; 0 = no limit.
    #[serde(default)]
    limit: usize,
    #[serde(default)]
    rules: Vec<RuleDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDoc {
    #[serde(default)]
    alert: Option<String>,
    #[serde(default)]
    record: Option<String>,
    #[serde(default)]
    sql: Option<String>,
    #[serde(default, rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    keep_firing_for: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// What a rule does with its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleKind {
    /// Each row is an alert instance.
    Alert {
        /// How long an instance stays pending before it fires.
        for_: Duration,
        /// How long a firing instance keeps firing after its row is gone.
        keep_firing_for: Duration,
        /// Annotation templates.
        annotations: BTreeMap<String, String>,
    },
    /// Each row is a point of the gauge named by the rule, written to `metrics`.
    Record,
}

/// One rule of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The alert name (`alertname` label) or the recorded metric's name.
    pub name: String,
    /// Alerting or recording.
    pub kind: RuleKind,
    /// The query; `now()` in it is the evaluation time.
    pub sql: String,
    /// Label templates added to every instance (they win over the row's columns).
    pub labels: BTreeMap<String, String>,
    /// Line of the rule's `sql` key in its file (for messages).
    pub line: usize,
    /// Whether `sql` is a block scalar (`|` or `>`): the SQL's first line is the next line.
    pub sql_on_next_line: bool,
}

impl Rule {
    /// Whether this is an alerting rule.
    pub fn is_alert(&self) -> bool {
        matches!(self.kind, RuleKind::Alert { .. })
    }

    /// The file line where line `n` (1-based) of the SQL text is.
    pub fn sql_line(&self, n: usize) -> usize {
        if self.line == 0 {
            0
        } else if self.sql_on_next_line {
            self.line + n
        } else {
            self.line + n - 1
        }
    }
}

/// A group: rules evaluated in order, every `interval`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The file the group came from.
    pub file: String,
    /// Its name, unique in the file.
    pub name: String,
    /// How often it is evaluated.
    pub interval: Duration,
    /// At most this many instances per rule (0 = unlimited).
    pub limit: usize,
    /// Its rules.
    pub rules: Vec<Rule>,
}

/// Default evaluation interval of a group that names none (Prometheus' default).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// Parses a Prometheus duration: `1y2w3d4h5m6s7ms` (any non-empty subset, in this order), or `0`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let bad = || format!("invalid duration {text:?}: want e.g. 30s, 5m, 1h30m, 7d or 0");
    if t.is_empty() {
        return Err(bad());
    }
    const UNITS: [(&str, u64); 7] = [
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ];
    let mut rest = t;
    let mut total: u64 = 0;
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let Some(pos) = UNITS.iter().position(|(u, _)| *u == unit) else { return Err(bad()) };
        if pos < next_unit {
            return Err(bad());
        }
        next_unit = pos + 1;
        total = n.checked_mul(UNITS[pos].1).and_then(|v| total.checked_add(v)).ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_millis(total))
}

/// Formats a duration the way it is written in rule files.
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400_000u128), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Lines (1-based) of every `sql:` key in the text, in document order, and whether each one's
/// value is a block scalar. Rules are matched to them in order.
fn sql_key_lines(text: &str) -> Vec<(usize, bool)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        let t = t.strip_prefix('-').map(str::trim_start).unwrap_or(t);
        let t = t.strip_prefix('"').or_else(|| t.strip_prefix('\'')).unwrap_or(t);
        let Some(after) = t.strip_prefix("sql") else { continue };
        let after = after.strip_prefix('"').or_else(|| after.strip_prefix('\'')).unwrap_or(after);
        let Some(value) = after.trim_start().strip_prefix(':') else { continue };
        let v = value.trim();
        out.push((i + 1, v.starts_with('|') || v.starts_with('>')));
    }
    out
}

/// Line (1-based) of the first line at or after `from` that mentions `needle`, or `from`.
fn line_of(text: &str, needle: &str, from: usize) -> usize {
    text.lines()
        .enumerate()
        .skip(from.saturating_sub(1))
        .find(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .unwrap_or(from)
}

/// Parses and checks one rule file's text (everything but the SQL, which needs the engine:
/// see [`super::check_sql`]). Every problem found is returned, each with its line.
pub fn parse(text: &str, file: &str) -> Result<Vec<Group>, Vec<RuleError>> {
    let err = |line: usize, message: String| RuleError { file: file.to_string(), line, column: 0, message };
    let doc: FileDoc = match serde_yaml_ng::from_str(text) {
        Ok(d) => d,
        Err(e) => {
            let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
            let message = e.to_string();
            // The location is in the fields; keep the message short.
            let message = match message.rsplit_once(" at line ") {
                Some((m, _)) => m.to_string(),
                None => message,
            };
            return Err(vec![RuleError { file: file.to_string(), line, column, message }]);
        }
    };
    let sql_lines = sql_key_lines(text);
    let mut sql_index = 0;
    let mut errors = Vec::new();
    let mut groups = Vec::new();
    let mut names = HashSet::new();
    for g in doc.groups {
        let gline = line_of(text, &g.name, 1);
        if g.name.trim().is_empty() {
            errors.push(err(gline, "a group needs a name".into()));
        }
        if !names.insert(g.name.clone()) {
            errors.push(err(gline, format!("group name {:?} repeated in the file", g.name)));
        }
        let interval = match g.interval.as_deref().map(parse_duration).transpose() {
            Ok(Some(d)) if d.is_zero() => {
                errors.push(err(gline, format!("group {:?}: interval must be above 0", g.name)));
                DEFAULT_INTERVAL
            }
            Ok(d) => d.unwrap_or(DEFAULT_INTERVAL),
            Err(e) => {
                errors.push(err(line_of(text, "interval", gline), format!("group {:?}: {e}", g.name)));
                DEFAULT_INTERVAL
            }
        };
        let mut rules = Vec::new();
        for r in g.rules {
            let (line, block) = if r.sql.is_some() {
                let l = sql_lines.get(sql_index).copied().unwrap_or((0, false));
                sql_index += 1;
                l
            } else {
                (0, false)
            };
            let name = r.alert.clone().or(r.record.clone()).unwrap_or_default();
            let rline = if line > 0 { line } else { line_of(text, &name, gline) };
            let mut rule_err =
                |m: String| errors.push(err(rline, format!("rule {name:?} in group {:?}: {m}", g.name)));
            if r.alert.is_some() == r.record.is_some() {
                rule_err(
                    "a rule has exactly one of `alert` (an alerting rule) or `record` (a recording rule)"
                        .into(),
                );
                continue;
            }
            let Some(sql) = r.sql.filter(|s| !s.trim().is_empty()) else {
                rule_err(
                    "`sql` is missing: the query whose rows are the alert instances or recorded points"
                        .into(),
                );
                continue;
            };
            for (k, v) in &r.labels {
                if !valid_label_name(k) {
                    rule_err(format!("invalid label name {k:?}: want [a-zA-Z_][a-zA-Z0-9_]*"));
                }
                if let Err(e) = template::check(v) {
                    rule_err(format!("label {k}: {e}"));
                }
            }
            let kind = if let Some(alert) = &r.alert {
                if alert.trim().is_empty() {
                    rule_err("the alert name is empty".into());
                }
                for (k, v) in &r.annotations {
                    if !valid_label_name(k) {
                        rule_err(format!("invalid annotation name {k:?}: want [a-zA-Z_][a-zA-Z0-9_]*"));
                    }
                    if let Err(e) = template::check(v) {
                        rule_err(format!("annotation {k}: {e}"));
                    }
                }
                let mut dur =
                    |what: &str, v: &Option<String>| match v.as_deref().map(parse_duration).transpose() {
                        Ok(d) => d.unwrap_or(Duration::ZERO),
                        Err(e) => {
                            // Point at the key's own line, below the rule's start.
                            let line = line_of(text, &format!("{what}:"), rline.saturating_sub(2).max(1));
                            errors
                                .push(err(line, format!("rule {name:?} in group {:?}: {what}: {e}", g.name)));
                            Duration::ZERO
                        }
                    };
                let for_ = dur("for", &r.for_);
                let keep_firing_for = dur("keep_firing_for", &r.keep_firing_for);
                RuleKind::Alert { for_, keep_firing_for, annotations: r.annotations }
            } else {
                let record = r.record.as_deref().unwrap_or_default();
                if !valid_metric_name(record) {
                    rule_err(format!("invalid metric name {record:?}: want [a-zA-Z_:][a-zA-Z0-9_:]*"));
                }
                if r.for_.is_some() || r.keep_firing_for.is_some() || !r.annotations.is_empty() {
                    rule_err("`for`, `keep_firing_for` and `annotations` belong to alerting rules".into());
                }
                RuleKind::Record
            };
            rules.push(Rule { name, kind, sql, labels: r.labels, line, sql_on_next_line: block });
        }
        groups.push(Group { file: file.to_string(), name: g.name, interval, limit: g.limit, rules });
    }
    if errors.is_empty() { Ok(groups) } else { Err(errors) }
}

/// The rule files named by `paths`: files as they are, directories by their `*.yaml` and `*.yml`
/// files (not recursively), sorted.
pub fn rule_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, RuleError> {
    let mut files = Vec::new();
    for p in paths {
        let io_err = |e: std::io::Error| RuleError {
            file: p.display().to_string(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
        };
        let meta = std::fs::metadata(p).map_err(io_err)?;
        if meta.is_dir() {
            let mut in_dir: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(io_err)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| matches!(f.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")))
                .collect();
            in_dir.sort();
            files.extend(in_dir);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

/// Reads and parses every rule file of `paths`.
pub fn load(paths: &[PathBuf]) -> Result<Vec<Group>, Vec<RuleError>> {
    let files = rule_files(paths).map_err(|e| vec![e])?;
    let mut groups = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        match read_and_parse(&f) {
            Ok(g) => groups.extend(g),
            Err(e) => errors.extend(e),
        }
    }
    if errors.is_empty() { Ok(groups) } else { Err(errors) }
}

fn read_and_parse(path: &Path) -> Result<Vec<Group>, Vec<RuleError>> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![RuleError { file: file.clone(), line: 0, column: 0, message: format!("cannot read: {e}") }]
    })?;
    parse(&text, &file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_prometheus_writes_them() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert_eq!(parse_duration("1w").unwrap(), Duration::from_secs(7 * 86400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m500ms").unwrap(), Duration::from_millis(60_500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "5", "m", "5x", "1m1h", "1.5h", "-1m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    }

    #[test]
    fn a_file_with_quoted_keys_and_both_kinds_of_rule() {
        let text = r#""groups":
- "name": "cost"
  "interval": "5m"
  "rules":
  - "alert": "Spike"
    "sql": |
      SELECT tenant_id, 2.0 AS value
    "for": "30m"
    "labels":
      "severity": "warning"
    "annotations":
      "summary": "{{ $labels.tenant_id }} at {{ $value }}"
  - record: "tenant:cost"
    sql: SELECT 'a' AS tenant_id, 1 AS value
"#;
        let groups = parse(text, "r.yaml").unwrap();
        assert_eq!(groups.len(), 1);
        let g = &groups[0];
        assert_eq!(g.interval, Duration::from_secs(300));
        assert_eq!(g.rules[0].name, "Spike");
        assert_eq!(g.rules[0].line, 6);
        assert!(g.rules[0].sql_on_next_line);
        assert_eq!(g.rules[0].sql_line(1), 7);
        assert!(matches!(g.rules[0].kind, RuleKind::Alert { for_, .. } if for_ == Duration::from_secs(1800)));
        assert_eq!(g.rules[1].kind, RuleKind::Record);
        assert_eq!(g.rules[1].line, 14);
        assert_eq!(g.rules[1].sql_line(1), 14);
    }

    #[test]
    fn mistakes_are_reported_with_their_line() {
        let text = "groups:\n  - name: g\n    interval: 5 minutes\n    rules:\n      - alert: A\n        sql: SELECT 1\n        for: soon\n      - alert: B\n        record: b\n        sql: SELECT 1\n      - record: 'bad name'\n        sql: SELECT 1\n        for: 5m\n";
        let errors = parse(text, "r.yaml").unwrap_err();
        let msgs: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(msgs.iter().any(|m| m.starts_with("r.yaml:3: group \"g\": invalid duration")), "{msgs:?}");
        assert!(
            msgs.iter().any(|m| m.starts_with("r.yaml:7: rule \"A\"") && m.contains("for: invalid duration")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter().any(|m| m.starts_with("r.yaml:10: rule \"B\"") && m.contains("exactly one")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter().any(|m| m.starts_with("r.yaml:12:") && m.contains("invalid metric name")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter().any(|m| m.starts_with("r.yaml:12:") && m.contains("belong to alerting rules")),
            "{msgs:?}"
        );

        let e =
            parse("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n", "p.yaml")
                .unwrap_err();
        assert_eq!(e[0].line, 5, "{e:?}");
        assert!(e[0].message.contains("unknown field `expr`"), "{e:?}");

        let e = parse("groups:\n  - name: g\n    rules:\n      - alert: A\n        sql: SELECT 1\n        annotations: {s: '{{ $value '}\n", "t.yaml").unwrap_err();
        assert!(e[0].to_string().starts_with("t.yaml:5: rule \"A\""), "{e:?}");
        assert!(e[0].message.contains("annotation s"), "{e:?}");
    }

    #[test]
    fn prometheus_own_rule_format_fixture_is_refused_for_its_promql_only() {
        // Prometheus' rulefmt fixture: same layout, but PromQL in `expr`.
        let text = include_str!("../../../testdata/alerting/prometheus-rulefmt-test.yaml");
        let e = parse(text, "test.yaml").unwrap_err();
        assert!(e[0].message.contains("unknown field `expr`"), "{e:?}");
    }
}
