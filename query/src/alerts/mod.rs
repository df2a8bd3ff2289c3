//! Scheduled alert rules: SQL rules with Prometheus' semantics, evaluated on the query engine,
//! notifying Alertmanager and webhooks, recording every evaluation, state change and
//! notification in the `alerts` table.
//!
//! - [`rules`]: the rule-file format; [`template`]: label and annotation templates;
//! - [`state`]: an instance's life (pending, firing, resolved) as Prometheus defines it;
//! - [`notify`]: Alertmanager v2 and webhook (payload version 4) delivery;
//! - [`RuleManager`]: evaluation on an injected clock ([`RuleManager::evaluate_group`]), the
//!   schedule and reload loop for `serve` ([`RuleManager::run`]), and the state file that makes
//!   alert state and undelivered notifications survive a restart.

mod history;
pub mod notify;
pub mod rules;
pub mod state;
pub mod template;

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, SystemTime},
};

use chrono::{DateTime, Utc};
use datafusion::arrow::{
    array::{Array, ArrayRef, Date32Array, Float64Array, StringArray, TimestampMicrosecondArray},
    compute::cast,
    datatypes::DataType,
    util::display::{ArrayFormatter, FormatOptions},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tenantscope_schemas::{Lake, Table, types::string_map_builder};

use crate::{QueryEngine, QueryResult};
use history::{HistoryRow, history_batch};
use notify::{Outcome, WebhookAlert, WebhookConfig};
use rules::{Group, Rule, RuleError, RuleKind, parse_duration};
use state::{AlertState, RuleAlerts, Sample, label_key};

/// The `alerts` section of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Alertmanager base URLs (also `serve --alertmanager-url`, repeatable).
    pub alertmanager_urls: Vec<String>,
    /// Generic webhook receivers.
    pub webhooks: Vec<WebhookConfig>,
    /// Firing alerts are sent to Alertmanager again after this long (Prometheus' default 1m).
    pub resend_delay: String,
    /// Time for one notification request.
    pub notify_timeout: String,
    /// Tries per Alertmanager notification within one evaluation.
    pub notify_attempts: u32,
    /// An undelivered webhook message is given up after this long.
    pub webhook_max_age: String,
    /// Base URL of this tenantscope in links (`generatorURL`); default `http://<http-addr>`.
    pub external_url: Option<String>,
    /// Where alert state and undelivered notifications are kept across restarts; default
    /// `alerts-state.json` in the write-ahead log's folder.
    pub state_file: Option<PathBuf>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            alertmanager_urls: Vec::new(),
            webhooks: Vec::new(),
            resend_delay: "1m".into(),
            notify_timeout: "10s".into(),
            notify_attempts: 3,
            webhook_max_age: "24h".into(),
            external_url: None,
            state_file: None,
        }
    }
}

/// [`AlertsConfig`] with its durations parsed.
#[derive(Debug, Clone)]
struct Settings {
    alertmanagers: Vec<String>,
    webhooks: Vec<(WebhookConfig, Duration, Duration)>,
    resend_delay: Duration,
    notify_timeout: Duration,
    notify_attempts: u32,
    webhook_max_age: Duration,
    external_url: String,
    state_file: Option<PathBuf>,
}

impl AlertsConfig {
    fn settings(&self, external_url: &str) -> Result<Settings, String> {
        let d = |what: &str, v: &str| parse_duration(v).map_err(|e| format!("alerts.{what}: {e}"));
        let mut webhooks = Vec::new();
        for w in &self.webhooks {
            let timeout = d("webhooks.timeout", w.timeout.as_deref().unwrap_or("10s"))?;
            let repeat = d("webhooks.repeat_interval", w.repeat_interval.as_deref().unwrap_or("4h"))?;
            reqwest::Url::parse(&w.url)
                .map_err(|e| format!("alerts.webhooks {:?}: invalid url {:?}: {e}", w.name, w.url))?;
            webhooks.push((
                w.clone(),
                if timeout.is_zero() { Duration::from_secs(10) } else { timeout },
                repeat,
            ));
        }
        for u in &self.alertmanager_urls {
            reqwest::Url::parse(u).map_err(|e| format!("invalid Alertmanager URL {u:?}: {e}"))?;
        }
        Ok(Settings {
            alertmanagers: self.alertmanager_urls.iter().map(|u| notify::alertmanager_endpoint(u)).collect(),
            webhooks,
            resend_delay: d("resend_delay", &self.resend_delay)?,
            notify_timeout: d("notify_timeout", &self.notify_timeout)?,
            notify_attempts: self.notify_attempts.max(1),
            webhook_max_age: d("webhook_max_age", &self.webhook_max_age)?,
            external_url: self
                .external_url
                .clone()
                .unwrap_or_else(|| external_url.to_string())
                .trim_end_matches('/')
                .to_string(),
            state_file: self.state_file.clone(),
        })
    }
}

/// A webhook message not yet delivered.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Outgoing {
    id: u64,
    receiver: String,
    url: String,
    rule: String,
    status: String,
    body: Value,
    attempts: u32,
    created_at: i64,
    next_at: i64,
}

/// What survives a restart.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Persisted {
    /// Alert instances per rule key.
    rules: BTreeMap<String, RuleAlerts>,
    /// Webhook messages to deliver, oldest first.
    outbox: Vec<Outgoing>,
    /// When each receiver was last told about each firing instance (for `repeat_interval`).
    webhook_sent: BTreeMap<String, i64>,
    next_id: u64,
}

/// How the last evaluation of a rule went.
#[derive(Debug, Clone, Default)]
struct RuleStatus {
    last_eval: i64,
    duration_ms: u64,
    error: Option<String>,
    rows: usize,
}

/// What one rule's evaluation came to (for tests and `/v1/rules`).
#[derive(Debug, Clone, PartialEq)]
pub struct EvalReport {
    /// The rule's name.
    pub rule: String,
    /// Rows the SQL returned.
    pub rows: usize,
    /// The error, if the evaluation failed.
    pub error: Option<String>,
}

struct Inner {
    engine: QueryEngine,
    lake: Lake,
    settings: Settings,
    paths: Vec<PathBuf>,
    groups: RwLock<Vec<Arc<Group>>>,
    files_seen: Mutex<Vec<(PathBuf, Option<SystemTime>, u64)>>,
    persisted: tokio::sync::Mutex<Persisted>,
    delivery: tokio::sync::Mutex<()>,
    history: Mutex<Vec<HistoryRow>>,
    status: Mutex<HashMap<String, RuleStatus>>,
    client: reqwest::Client,
}

/// Loads, evaluates and notifies alert rules. Cheap to clone.
#[derive(Clone)]
pub struct RuleManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RuleManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleManager").field("paths", &self.inner.paths).finish_non_exhaustive()
    }
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// Key of a rule's state: group, name and static labels, so that editing a rule's SQL (a new
/// threshold, say) keeps its alerts, as Prometheus does on reload.
fn rule_keys(group: &Group) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    group
        .rules
        .iter()
        .map(|r| {
            let base = format!("{}/{}/{}", group.name, r.name, label_key(&r.labels));
            let n = seen.entry(base.clone()).or_default();
            *n += 1;
            if *n == 1 { base } else { format!("{base}#{n}") }
        })
        .collect()
}

fn file_signature(paths: &[PathBuf]) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    let files = rules::rule_files(paths).unwrap_or_else(|_| paths.to_vec());
    files
        .into_iter()
        .map(|f| {
            let m = std::fs::metadata(&f).ok();
            let mtime = m.as_ref().and_then(|m| m.modified().ok());
            let len = m.map(|m| m.len()).unwrap_or(0);
            (f, mtime, len)
        })
        .collect()
}

impl RuleManager {
    /// Loads the rule files (a file or a folder of `*.yaml`) and the state file. Fails on any
    /// problem in the rule files or the settings: `serve` must not start with rules it ignores.
    pub async fn new(
        engine: QueryEngine,
        paths: Vec<PathBuf>,
        config: &AlertsConfig,
        default_external_url: &str,
    ) -> Result<Self, String> {
        let settings = config.settings(default_external_url)?;
        let groups = load_checked(&engine, &paths).await.map_err(|e| join_errors(&e))?;
        let persisted = match &settings.state_file {
            Some(f) => read_state(f)?,
            None => Persisted::default(),
        };
        let lake = engine.lake().clone();
        let inner = Inner {
            engine,
            lake,
            settings,
            files_seen: Mutex::new(file_signature(&paths)),
            paths,
            groups: RwLock::new(groups.into_iter().map(Arc::new).collect()),
            persisted: tokio::sync::Mutex::new(persisted),
            delivery: tokio::sync::Mutex::new(()),
            history: Mutex::new(Vec::new()),
            status: Mutex::new(HashMap::new()),
            client: notify::client(),
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// The loaded groups.
    pub fn groups(&self) -> Vec<Arc<Group>> {
        self.inner.groups.read().map(|g| g.clone()).unwrap_or_default()
    }

    /// Reads the rule files again. On any problem the rules in force stay, and the problem is
    /// returned (and recorded). State of rules that remain (same group, name and labels) is kept.
    pub async fn reload(&self) -> Result<usize, String> {
        *self.inner.files_seen.lock().unwrap_or_else(|e| e.into_inner()) = file_signature(&self.inner.paths);
        let now = ms(Utc::now());
        match load_checked(&self.inner.engine, &self.inner.paths).await {
            Ok(groups) => {
                let n: usize = groups.iter().map(|g| g.rules.len()).sum();
                let keys: std::collections::HashSet<String> =
                    groups.iter().flat_map(|g| rule_keys(g)).collect();
                self.inner.persisted.lock().await.rules.retain(|k, _| keys.contains(k));
                let names: Vec<String> = groups.iter().map(|g| format!("{} ({})", g.name, g.file)).collect();
                *self.inner.groups.write().unwrap_or_else(|e| e.into_inner()) =
                    groups.into_iter().map(Arc::new).collect();
                tracing::info!(rules = n, groups = ?names, "Reloaded the alert rules.");
                self.record(HistoryRow {
                    time: now,
                    rule: String::new(),
                    event: "reload",
                    state: None,
                    labels: BTreeMap::new(),
                    annotations: BTreeMap::new(),
                    value: Some(n as f64),
                    receiver: None,
                    detail: Some(format!("loaded {n} rules in groups {}", names.join(", "))),
                });
                self.audit("rules.reload", &names.join(", ")).await;
                Ok(n)
            }
            Err(errors) => {
                let msg = join_errors(&errors);
                tracing::error!(
                    "The alert rules were not reloaded; the previous rules stay in force:\n{msg}"
                );
                self.record(HistoryRow {
                    time: now,
                    rule: String::new(),
                    event: "error",
                    state: None,
                    labels: BTreeMap::new(),
                    annotations: BTreeMap::new(),
                    value: None,
                    receiver: None,
                    detail: Some(format!("reload refused: {msg}")),
                });
                Err(msg)
            }
        }
    }

    async fn audit(&self, action: &str, detail: &str) {
        let target = self.inner.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(",");
        if let Err(e) = self.inner.lake.audit("tenantscope", action, &target, detail).await {
            tracing::warn!(error = %e, "Cannot write the audit log.");
        }
    }

    /// Whether the rule files changed on disk since they were last read.
    pub fn files_changed(&self) -> bool {
        let now = file_signature(&self.inner.paths);
        *self.inner.files_seen.lock().unwrap_or_else(|e| e.into_inner()) != now
    }

    fn record(&self, row: HistoryRow) {
        self.inner.history.lock().unwrap_or_else(|e| e.into_inner()).push(row);
    }

    /// Runs one rule's SQL with `now()` = `t`. Read-only: DDL, DML and `SET` are refused.
    async fn query_at(&self, sql: &str, t: DateTime<Utc>) -> Result<QueryResult, String> {
        self.inner.engine.query_at(sql, t).await.map_err(|e| e.to_string())
    }

    /// Evaluates every rule of the group named `group` (of any file) at `t`, then notifies and
    /// saves the state. This is the whole of one scheduled evaluation, on an injected clock.
    pub async fn evaluate(&self, group: &str, t: DateTime<Utc>) -> Result<Vec<EvalReport>, String> {
        let g = self
            .groups()
            .into_iter()
            .find(|g| g.name == group)
            .ok_or_else(|| format!("no rule group named {group:?}"))?;
        Ok(self.evaluate_group(&g, t).await)
    }

    /// Evaluates one group at `t`: its rules in order, then Alertmanager and webhook
    /// notifications, then the state file.
    pub async fn evaluate_group(&self, group: &Group, t: DateTime<Utc>) -> Vec<EvalReport> {
        let now = ms(t);
        let keys = rule_keys(group);
        let mut reports = Vec::new();
        for (rule, key) in group.rules.iter().zip(&keys) {
            let started = std::time::Instant::now();
            let outcome = self.evaluate_rule(group, rule, key, t).await;
            let duration_ms = started.elapsed().as_millis() as u64;
            let (rows, error) = match outcome {
                Ok(rows) => (rows, None),
                Err(e) => (0, Some(e)),
            };
            self.record(HistoryRow {
                time: now,
                rule: rule.name.clone(),
                event: if error.is_some() { "error" } else { "evaluation" },
                state: None,
                labels: [("alertgroup".to_string(), group.name.clone())].into_iter().collect(),
                annotations: BTreeMap::new(),
                value: Some(rows as f64),
                receiver: None,
                detail: Some(match &error {
                    Some(e) => e.clone(),
                    None => format!("{rows} rows in {duration_ms} ms"),
                }),
            });
            if let Some(e) = &error {
                tracing::warn!(group = %group.name, rule = %rule.name, error = %e, "Rule evaluation failed.");
            }
            self.inner
                .status
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.clone(), RuleStatus { last_eval: now, duration_ms, error: error.clone(), rows });
            reports.push(EvalReport { rule: rule.name.clone(), rows, error });
        }
        self.send_to_alertmanagers(group, &keys, now).await;
        self.deliver_webhooks(now).await;
        if let Err(e) = self.save_state().await {
            tracing::warn!(error = %e, "Cannot save the alert state.");
        }
        // State changes and notifications reach the `alerts` table at once (evaluations wait
        // for the periodic write), so that a crash loses no transition from the history.
        let changed = self
            .inner
            .history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|r| r.event != "evaluation");
        if changed && let Err(e) = self.flush_history().await {
            tracing::warn!(error = %e, "Cannot write the alerts history; retrying.");
        }
        reports
    }

    async fn evaluate_rule(
        &self,
        group: &Group,
        rule: &Rule,
        key: &str,
        t: DateTime<Utc>,
    ) -> Result<usize, String> {
        let result = self.query_at(&rule.sql, t).await?;
        let rows = result.num_rows();
        let samples = self.instances(group, rule, &result)?;
        match &rule.kind {
            RuleKind::Record => {
                self.record_points(rule, &samples, t).await?;
            }
            RuleKind::Alert { for_, keep_firing_for, .. } => {
                let now = ms(t);
                let mut persisted = self.inner.persisted.lock().await;
                let alerts = persisted.rules.entry(key.to_string()).or_default();
                let changes = alerts.apply(now, samples, *for_, *keep_firing_for);
                for c in &changes {
                    let a = alerts.active.get(&label_key(&c.labels));
                    self.record(HistoryRow {
                        time: now,
                        rule: rule.name.clone(),
                        event: "transition",
                        state: Some(c.to.as_str().into()),
                        labels: c.labels.clone(),
                        annotations: a.map(|a| a.annotations.clone()).unwrap_or_default(),
                        value: Some(c.value),
                        receiver: None,
                        detail: Some(format!("{} -> {}", c.from.as_str(), c.to.as_str())),
                    });
                    tracing::info!(rule = %rule.name, labels = %label_key(&c.labels), from = c.from.as_str(), to = c.to.as_str(), "Alert state changed.");
                }
                let newly: Vec<&state::Transition> = changes
                    .iter()
                    .filter(|c| {
                        c.to == AlertState::Firing
                            || (c.from == AlertState::Firing && c.to == AlertState::Inactive)
                    })
                    .collect();
                let generator = self.generator_url(group, rule);
                let alerts_snapshot = alerts.clone();
                let newly_keys: Vec<(String, AlertState)> =
                    newly.iter().map(|c| (label_key(&c.labels), c.to)).collect();
                self.queue_webhooks(&mut persisted, rule, &alerts_snapshot, &newly_keys, &generator, now);
            }
        }
        Ok(rows)
    }

    /// A rule's result as instances, as evaluation and preview both see them: the group's
    /// limit, each row's labels with the rule's label templates over them (an empty result
    /// removes the label, as in Prometheus) and, for alerts, `alertname` and the expanded
    /// annotations; two rows with the same labels are an error.
    fn instances(&self, group: &Group, rule: &Rule, result: &QueryResult) -> Result<Vec<Sample>, String> {
        let rows = result.num_rows();
        if group.limit > 0 && rows > group.limit {
            return Err(format!("{rows} rows exceed the group's limit of {}", group.limit));
        }
        let url = &self.inner.settings.external_url;
        let mut samples = Vec::with_capacity(rows);
        let mut seen = std::collections::HashSet::new();
        for (row_labels, value) in rows_to_labels(result)? {
            let mut labels = row_labels.clone();
            for (k, tmpl) in &rule.labels {
                let v = template::expand(tmpl, &row_labels, value, url)?;
                if v.is_empty() {
                    labels.remove(k);
                } else {
                    labels.insert(k.clone(), v);
                }
            }
            let mut annotations = BTreeMap::new();
            if let RuleKind::Alert { annotations: templates, .. } = &rule.kind {
                labels.insert("alertname".into(), rule.name.clone());
                for (k, tmpl) in templates {
                    annotations.insert(k.clone(), template::expand(tmpl, &labels, value, url)?);
                }
            }
            if !seen.insert(label_key(&labels)) {
                return Err(format!(
                    "two rows have the same labels {}: add a column that tells them apart",
                    label_key(&labels)
                ));
            }
            samples.push(Sample { labels, annotations, value });
        }
        Ok(samples)
    }

    fn generator_url(&self, group: &Group, rule: &Rule) -> String {
        format!(
            "{}/v1/rules?group={}&rule={}",
            self.inner.settings.external_url,
            url_escape(&group.name),
            url_escape(&rule.name)
        )
    }

    /// Queues one message per webhook when instances started firing or were resolved, or when
    /// a firing instance is due again (`repeat_interval`): the rule's firing instances and the
    /// ones just resolved, as Alertmanager groups them by `alertname`.
    fn queue_webhooks(
        &self,
        persisted: &mut Persisted,
        rule: &Rule,
        alerts: &RuleAlerts,
        newly: &[(String, AlertState)],
        generator: &str,
        now: i64,
    ) {
        for (hook, _, repeat) in &self.inner.settings.webhooks {
            if !hook.rules.is_empty() && !hook.rules.contains(&rule.name) {
                continue;
            }
            let sent_key = |k: &str| format!("{}|{}|{k}", hook.name, rule.name);
            let mut resolved: Vec<&state::Alert> = newly
                .iter()
                .filter(|(_, s)| *s == AlertState::Inactive)
                .filter_map(|(k, _)| alerts.active.get(k))
                .collect();
            if !hook.send_resolved {
                resolved.clear();
            }
            let firing: Vec<(&String, &state::Alert)> =
                alerts.active.iter().filter(|(_, a)| a.state == AlertState::Firing).collect();
            let new_firing = newly.iter().any(|(_, s)| *s == AlertState::Firing);
            let repeat_due = firing.iter().any(|(k, _)| {
                persisted
                    .webhook_sent
                    .get(&sent_key(k))
                    .is_some_and(|t| now - *t >= repeat.as_millis() as i64)
            });
            for (k, _) in newly.iter().filter(|(_, s)| *s == AlertState::Inactive) {
                persisted.webhook_sent.remove(&sent_key(k));
            }
            if !new_firing && resolved.is_empty() && !repeat_due {
                continue;
            }
            let reason = if new_firing || !resolved.is_empty() {
                "alert_group_state_changed"
            } else {
                "repeat_interval_elapsed"
            };
            let mut list: Vec<WebhookAlert> =
                firing.iter().map(|(_, a)| WebhookAlert::new(a, generator)).collect();
            list.extend(resolved.iter().map(|a| WebhookAlert::new(a, generator)));
            for (k, _) in &firing {
                persisted.webhook_sent.insert(sent_key(k), now);
            }
            let body = notify::webhook_payload(
                &hook.name,
                &rule.name,
                &list,
                hook.max_alerts,
                &self.inner.settings.external_url,
                reason,
            );
            persisted.next_id += 1;
            let status = body["status"].as_str().unwrap_or("firing").to_string();
            persisted.outbox.push(Outgoing {
                id: persisted.next_id,
                receiver: hook.name.clone(),
                url: hook.url.clone(),
                rule: rule.name.clone(),
                status,
                body,
                attempts: 0,
                created_at: now,
                next_at: now,
            });
        }
    }

    /// Sends the group's alerts that need sending (firing every `resend_delay`, resolved until
    /// delivered) to every Alertmanager.
    async fn send_to_alertmanagers(&self, group: &Group, keys: &[String], now: i64) {
        let s = &self.inner.settings;
        if s.alertmanagers.is_empty() {
            return;
        }
        let valid_for = 4 * s.resend_delay.max(group.interval).as_millis() as i64;
        let mut batch: Vec<(String, String, state::Alert, String)> = Vec::new();
        {
            let mut persisted = self.inner.persisted.lock().await;
            for (rule, key) in group.rules.iter().zip(keys) {
                let Some(alerts) = persisted.rules.get_mut(key) else { continue };
                let generator = self.generator_url(group, rule);
                let due: Vec<String> = alerts
                    .needs_sending(now, s.resend_delay)
                    .into_iter()
                    .map(|a| label_key(&a.labels))
                    .collect();
                for k in due {
                    if let Some(a) = alerts.active.get_mut(&k) {
                        if a.state == AlertState::Firing {
                            a.valid_until = now + valid_for;
                        }
                        batch.push((key.clone(), k, a.clone(), generator.clone()));
                    }
                }
            }
        }
        if batch.is_empty() {
            return;
        }
        let body = Value::Array(batch.iter().map(|(_, _, a, g)| notify::alertmanager_alert(a, g)).collect());
        let mut delivered_all = true;
        let mut delivered_any = false;
        for url in &s.alertmanagers {
            let outcome =
                notify::post_json(&self.inner.client, url, &body, s.notify_timeout, s.notify_attempts).await;
            let (ok, detail) = match &outcome {
                Outcome::Delivered => (true, format!("{} alerts delivered", batch.len())),
                Outcome::Failed(e) => (false, format!("{} alerts not delivered: {e}", batch.len())),
            };
            delivered_all &= ok;
            delivered_any |= ok;
            if !ok {
                tracing::warn!(alertmanager = %url, error = %detail, "Cannot notify Alertmanager; it is tried again at the next evaluation.");
            }
            for (_, _, a, _) in &batch {
                self.record(HistoryRow {
                    time: now,
                    rule: a.labels.get("alertname").cloned().unwrap_or_default(),
                    event: "notification",
                    state: Some(if a.state == AlertState::Inactive { "resolved" } else { "firing" }.into()),
                    labels: a.labels.clone(),
                    annotations: a.annotations.clone(),
                    value: Some(a.value),
                    receiver: Some(url.clone()),
                    detail: Some(detail.clone()),
                });
            }
        }
        let mut persisted = self.inner.persisted.lock().await;
        for (key, k, _, _) in &batch {
            if let Some(a) = persisted.rules.get_mut(key).and_then(|r| r.active.get_mut(k)) {
                if delivered_any {
                    a.last_sent_at = now;
                }
                if a.state == AlertState::Inactive && delivered_all {
                    a.resolve_delivered = true;
                }
            }
        }
    }

    /// Delivers the webhook messages that are due, oldest first per receiver (a message waits
    /// while an older one to the same receiver is undelivered). A failed message is tried again
    /// with backoff (1 s doubling, at most 5 min) until `webhook_max_age`.
    pub async fn deliver_webhooks(&self, now: i64) {
        let _one_at_a_time = self.inner.delivery.lock().await;
        let due: Vec<Outgoing> = {
            let persisted = self.inner.persisted.lock().await;
            let mut blocked = std::collections::HashSet::new();
            let mut due = Vec::new();
            for o in &persisted.outbox {
                if blocked.contains(&o.receiver) {
                    continue;
                }
                if o.next_at <= now {
                    due.push(o.clone());
                }
                blocked.insert(o.receiver.clone());
            }
            due
        };
        if due.is_empty() {
            return;
        }
        let s = &self.inner.settings;
        let mut done = Vec::new();
        let mut failed = Vec::new();
        for o in due {
            let timeout = s
                .webhooks
                .iter()
                .find(|(w, _, _)| w.name == o.receiver)
                .map(|(_, t, _)| *t)
                .unwrap_or(s.notify_timeout);
            let outcome = notify::post_json(&self.inner.client, &o.url, &o.body, timeout, 1).await;
            let alerts = o.body["alerts"].as_array().cloned().unwrap_or_default();
            let detail = match &outcome {
                Outcome::Delivered => format!("message {} delivered at attempt {}", o.id, o.attempts + 1),
                Outcome::Failed(e) => format!("message {} attempt {} failed: {e}", o.id, o.attempts + 1),
            };
            for a in &alerts {
                let labels: BTreeMap<String, String> =
                    serde_json::from_value(a["labels"].clone()).unwrap_or_default();
                self.record(HistoryRow {
                    time: now,
                    rule: o.rule.clone(),
                    event: "notification",
                    state: a["status"].as_str().map(str::to_string),
                    labels,
                    annotations: serde_json::from_value(a["annotations"].clone()).unwrap_or_default(),
                    value: None,
                    receiver: Some(o.receiver.clone()),
                    detail: Some(detail.clone()),
                });
            }
            match outcome {
                Outcome::Delivered => done.push(o.id),
                Outcome::Failed(e) => {
                    tracing::warn!(receiver = %o.receiver, error = %e, "Webhook delivery failed; retrying with backoff.");
                    failed.push(o.id);
                }
            }
        }
        let mut persisted = self.inner.persisted.lock().await;
        persisted.outbox.retain(|o| !done.contains(&o.id));
        let max_age = s.webhook_max_age.as_millis() as i64;
        let mut gave_up = Vec::new();
        for o in persisted.outbox.iter_mut().filter(|o| failed.contains(&o.id)) {
            o.attempts += 1;
            let backoff = (1000i64 << o.attempts.min(9)).min(300_000);
            o.next_at = now + backoff;
            if now - o.created_at >= max_age {
                gave_up.push(o.clone());
            }
        }
        persisted.outbox.retain(|o| !gave_up.iter().any(|g| g.id == o.id));
        drop(persisted);
        for o in gave_up {
            tracing::error!(receiver = %o.receiver, id = o.id, "Gave up a webhook message after {} attempts.", o.attempts);
            self.record(HistoryRow {
                time: now,
                rule: o.rule.clone(),
                event: "notification",
                state: Some(o.status.clone()),
                labels: BTreeMap::new(),
                annotations: BTreeMap::new(),
                value: None,
                receiver: Some(o.receiver.clone()),
                detail: Some(format!("message {} given up after {} attempts", o.id, o.attempts)),
            });
        }
        if let Err(e) = self.save_state().await {
            tracing::warn!(error = %e, "Cannot save the alert state.");
        }
    }

    /// Writes recording rule rows as points of the gauge named by the rule.
    async fn record_points(&self, rule: &Rule, samples: &[Sample], t: DateTime<Utc>) -> Result<(), String> {
        if samples.is_empty() {
            return Ok(());
        }
        let n = samples.len();
        let schema = Table::Metrics.schema();
        let micros = t.timestamp_micros();
        let mut attrs = string_map_builder();
        let mut tenants = Vec::with_capacity(n);
        for s in samples {
            tenants.push(s.labels.get("tenant_id").cloned());
            for (k, v) in &s.labels {
                attrs.keys().append_value(k);
                attrs.values().append_value(v);
            }
            attrs.append(true).map_err(|e| e.to_string())?;
        }
        let mut cols: HashMap<&str, ArrayRef> = HashMap::new();
        cols.insert("time", Arc::new(TimestampMicrosecondArray::from(vec![micros; n]).with_timezone("UTC")));
        cols.insert("metric_name", Arc::new(StringArray::from(vec![rule.name.as_str(); n])));
        cols.insert("metric_type", Arc::new(StringArray::from(vec!["gauge"; n])));
        cols.insert(
            "value",
            Arc::new(Float64Array::from(samples.iter().map(|s| s.value).collect::<Vec<_>>())),
        );
        cols.insert("service_name", Arc::new(StringArray::from(vec!["tenantscope"; n])));
        cols.insert("scope_name", Arc::new(StringArray::from(vec!["tenantscope.rules"; n])));
        cols.insert("tenant_id", Arc::new(StringArray::from(tenants)));
        cols.insert("attributes", Arc::new(attrs.finish()));
        cols.insert("date", Arc::new(Date32Array::from(vec![(micros.div_euclid(86_400_000_000)) as i32; n])));
        let batch =
            tenantscope_schemas::types::batch_with_nulls(&schema, n, cols).map_err(|e| e.to_string())?;
        self.inner
            .lake
            .append(Table::Metrics, &[batch])
            .await
            .map_err(|e| format!("cannot write the recorded points: {e}"))?;
        Ok(())
    }

    /// Writes the buffered history rows to the `alerts` table (one commit).
    pub async fn flush_history(&self) -> Result<usize, String> {
        let rows = std::mem::take(&mut *self.inner.history.lock().unwrap_or_else(|e| e.into_inner()));
        if rows.is_empty() {
            return Ok(0);
        }
        let n = rows.len();
        let batch = history_batch(&rows)?;
        if let Err(e) = self.inner.lake.append(Table::Alerts, &[batch]).await {
            // Keep them for the next try.
            let mut h = self.inner.history.lock().unwrap_or_else(|e| e.into_inner());
            let mut rows = rows;
            rows.append(&mut h);
            *h = rows;
            return Err(format!("cannot write the alerts history: {e}"));
        }
        Ok(n)
    }

    async fn save_state(&self) -> Result<(), String> {
        let Some(path) = &self.inner.settings.state_file else { return Ok(()) };
        let text = {
            let p = self.inner.persisted.lock().await;
            serde_json::to_vec(&*p).map_err(|e| e.to_string())?
        };
        write_atomically(path, &text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// One evaluation of a group at `t` that changes nothing (no state, history, points or
    /// notifications): per rule, its instances (or the points it would record) as JSON.
    pub async fn evaluate_preview(&self, group: &Group, t: DateTime<Utc>) -> Vec<Value> {
        let mut out = Vec::new();
        for rule in &group.rules {
            let samples =
                match self.query_at(&rule.sql, t).await.and_then(|r| self.instances(group, rule, &r)) {
                    Ok(samples) => samples,
                    Err(e) => {
                        out.push(json!({"group": group.name, "rule": rule.name, "error": e}));
                        continue;
                    }
                };
            let state = match &rule.kind {
                RuleKind::Alert { for_, .. } if for_.is_zero() => "firing",
                RuleKind::Alert { .. } => "pending",
                RuleKind::Record => "recorded",
            };
            for s in samples {
                out.push(json!({
                    "group": group.name, "rule": rule.name, "state": state, "labels": s.labels,
                    "annotations": s.annotations, "value": s.value, "error": Value::Null,
                }));
            }
        }
        out
    }

    /// Every alert instance now: (rule name, instance).
    pub async fn active_alerts(&self) -> Vec<(String, state::Alert)> {
        let persisted = self.inner.persisted.lock().await;
        let mut out = Vec::new();
        for g in self.groups() {
            for (r, key) in g.rules.iter().zip(rule_keys(&g)) {
                if let Some(ra) = persisted.rules.get(&key) {
                    out.extend(ra.active.values().map(|a| (r.name.clone(), a.clone())));
                }
            }
        }
        out
    }

    /// Every rule with its state, for `GET /v1/rules` (optionally one group and one rule).
    pub async fn rules_json(&self, group: Option<&str>, rule: Option<&str>) -> Value {
        let persisted = self.inner.persisted.lock().await;
        let status = self.inner.status.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let fmt = |ms: i64| {
            if ms == 0 {
                Value::Null
            } else {
                json!(DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339())
            }
        };
        let mut groups = Vec::new();
        for g in self.groups() {
            if group.is_some_and(|n| n != g.name) {
                continue;
            }
            let mut rules_out = Vec::new();
            for (r, key) in g.rules.iter().zip(rule_keys(&g)) {
                if rule.is_some_and(|n| n != r.name) {
                    continue;
                }
                let st = status.get(&key).cloned().unwrap_or_default();
                let alerts: Vec<Value> = persisted
                    .rules
                    .get(&key)
                    .map(|ra| {
                        ra.active
                            .values()
                            .map(|a| json!({"labels": a.labels, "annotations": a.annotations, "state": a.state.as_str(), "activeAt": fmt(a.active_at), "firedAt": fmt(a.fired_at), "resolvedAt": fmt(a.resolved_at), "value": a.value}))
                            .collect()
                    })
                    .unwrap_or_default();
                let (kind, for_, keep) = match &r.kind {
                    RuleKind::Alert { for_, keep_firing_for, .. } => {
                        ("alerting", rules::format_duration(*for_), rules::format_duration(*keep_firing_for))
                    }
                    RuleKind::Record => ("recording", String::new(), String::new()),
                };
                rules_out.push(json!({
                    "name": r.name, "type": kind, "sql": r.sql, "for": for_, "keep_firing_for": keep,
                    "labels": r.labels,
                    "annotations": match &r.kind { RuleKind::Alert { annotations, .. } => json!(annotations), RuleKind::Record => json!({}) },
                    "health": if st.last_eval == 0 { "unknown" } else if st.error.is_some() { "err" } else { "ok" },
                    "lastError": st.error, "lastEvaluation": fmt(st.last_eval), "evaluationMs": st.duration_ms, "rows": st.rows,
                    "alerts": alerts,
                }));
            }
            groups.push(json!({"name": g.name, "file": g.file, "interval": rules::format_duration(g.interval), "limit": g.limit, "rules": rules_out}));
        }
        json!({"groups": groups, "undeliveredWebhookMessages": persisted.outbox.len()})
    }

    /// Runs until `stop` resolves: evaluates each group every `interval` (the first time at
    /// once), reloads the rule files when they change or on `reload` (SIGHUP), delivers webhook
    /// messages, and writes the history every few seconds.
    pub async fn run(
        self,
        mut reload: tokio::sync::mpsc::Receiver<()>,
        stop: impl std::future::Future<Output = ()> + Send,
    ) {
        let mut next: HashMap<(String, String), DateTime<Utc>> = HashMap::new();
        let mut running: HashMap<(String, String), tokio::task::JoinHandle<()>> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last_files_check = std::time::Instant::now();
        let mut last_flush = std::time::Instant::now();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                Some(()) = reload.recv() => { let _ = self.reload().await; continue; }
                _ = tick.tick() => {}
            }
            if last_files_check.elapsed() >= Duration::from_secs(2) {
                last_files_check = std::time::Instant::now();
                if self.files_changed() {
                    let _ = self.reload().await;
                }
            }
            let now = Utc::now();
            let groups = self.groups();
            next.retain(|k, _| groups.iter().any(|g| g.file == k.0 && g.name == k.1));
            for g in groups {
                let id = (g.file.clone(), g.name.clone());
                if running.get(&id).is_some_and(|h| !h.is_finished()) {
                    continue;
                }
                let due = *next.entry(id.clone()).or_insert(now);
                if due > now {
                    continue;
                }
                // Evaluate at the scheduled time; skip ticks missed by a slow evaluation.
                let interval =
                    chrono::Duration::from_std(g.interval).unwrap_or(chrono::Duration::seconds(60));
                let mut n = due + interval;
                while n <= now {
                    n += interval;
                }
                next.insert(id.clone(), n);
                let me = self.clone();
                running.insert(
                    id,
                    tokio::spawn(async move {
                        me.evaluate_group(&g, due).await;
                    }),
                );
            }
            self.deliver_webhooks(ms(now)).await;
            if last_flush.elapsed() >= Duration::from_secs(5) {
                last_flush = std::time::Instant::now();
                if let Err(e) = self.flush_history().await {
                    tracing::warn!(error = %e, "Cannot write the alerts history; retrying.");
                }
            }
        }
        for (_, h) in running {
            let _ = h.await;
        }
        if let Err(e) = self.flush_history().await {
            tracing::warn!(error = %e, "Cannot write the alerts history.");
        }
        if let Err(e) = self.save_state().await {
            tracing::warn!(error = %e, "Cannot save the alert state.");
        }
    }
}

fn url_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn join_errors(errors: &[RuleError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

/// Loads the rule files and checks every rule's SQL against the engine.
pub async fn load_checked(engine: &QueryEngine, paths: &[PathBuf]) -> Result<Vec<Group>, Vec<RuleError>> {
    let groups = rules::load(paths)?;
    let mut errors = Vec::new();
    for g in &groups {
        for r in &g.rules {
            if let Err(e) = check_sql(engine, g, r).await {
                errors.push(e);
            }
        }
    }
    if errors.is_empty() { Ok(groups) } else { Err(errors) }
}

/// Plans a rule's SQL (without running it) and checks its output: read-only, and a numeric
/// `value` column (required for recording rules). Errors point at the file line of the SQL.
pub async fn check_sql(engine: &QueryEngine, group: &Group, rule: &Rule) -> Result<(), RuleError> {
    let err = |line: usize, column: usize, message: String| RuleError {
        file: group.file.clone(),
        line,
        column,
        message: format!("rule {:?} in group {:?}: {message}", rule.name, group.name),
    };
    let schema = match engine.plan_read_only(&rule.sql).await {
        Ok(s) => s,
        Err(e) => {
            let msg = e.to_string();
            let (line, column) =
                sql_position(&msg).map(|(l, c)| (rule.sql_line(l), c)).unwrap_or((rule.line, 0));
            return Err(err(line, column, msg));
        }
    };
    let value = schema.fields().iter().find(|f| f.name() == "value");
    match value {
        Some(f) if !f.data_type().is_numeric() => {
            return Err(err(rule.line, 0, format!("the `value` column is {}, not a number", f.data_type())));
        }
        None if !rule.is_alert() => {
            return Err(err(rule.line, 0, "a recording rule's SQL needs a numeric `value` column".into()));
        }
        _ => {}
    }
    Ok(())
}

/// `(line, column)` out of a SQL parser message ("... at Line: 2, Column: 7").
fn sql_position(msg: &str) -> Option<(usize, usize)> {
    let at = msg.find("Line: ")?;
    let rest = &msg[at + 6..];
    let line: usize = rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()?;
    let col = rest
        .find("Column: ")
        .and_then(|i| rest[i + 8..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok());
    Some((line, col.unwrap_or(0)))
}

fn sanitize_label(name: &str) -> String {
    let mut s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if s.chars().next().is_none_or(|c| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// Each row's labels (text, date, time and boolean columns; NULL and empty left out) and value
/// (the numeric `value` column; 1 when there is none).
fn rows_to_labels(result: &QueryResult) -> Result<Vec<(BTreeMap<String, String>, f64)>, String> {
    let options = FormatOptions::default().with_timestamp_tz_format(Some("%Y-%m-%dT%H:%M:%S%.f%:z"));
    let mut out = Vec::with_capacity(result.num_rows());
    for batch in &result.batches {
        let mut label_cols = Vec::new();
        let mut value_col: Option<Float64Array> = None;
        for (i, field) in batch.schema().fields().iter().enumerate() {
            let col = batch.column(i);
            if field.name() == "value" && field.data_type().is_numeric() {
                let v = cast(col, &DataType::Float64).map_err(|e| format!("cannot read `value`: {e}"))?;
                value_col =
                    Some(v.as_any().downcast_ref::<Float64Array>().cloned().ok_or("value is not a number")?);
                continue;
            }
            let is_label = match field.data_type() {
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Boolean => true,
                DataType::Date32 | DataType::Date64 | DataType::Timestamp(..) => true,
                DataType::Dictionary(_, v) => {
                    matches!(**v, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
                }
                _ => false,
            };
            if is_label {
                let f = ArrayFormatter::try_new(col.as_ref(), &options).map_err(|e| e.to_string())?;
                label_cols.push((sanitize_label(field.name()), col.clone(), f));
            }
        }
        for row in 0..batch.num_rows() {
            let mut labels = BTreeMap::new();
            for (name, col, f) in &label_cols {
                if col.is_null(row) {
                    continue;
                }
                let v = f.value(row).to_string();
                if !v.is_empty() {
                    labels.insert(name.clone(), v);
                }
            }
            let value = match &value_col {
                Some(v) if v.is_null(row) => f64::NAN,
                Some(v) => v.value(row),
                None => 1.0,
            };
            out.push((labels, value));
        }
    }
    Ok(out)
}

fn read_state(path: &Path) -> Result<Persisted, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            format!("the alert state file {} is damaged ({e}); move it away to start afresh", path.display())
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Persisted::default()),
        Err(e) => Err(format!("cannot read the alert state file {}: {e}", path.display())),
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
