//! Alert instances and their life: inactive -> pending -> firing -> resolved, per label set, with
//! `for` and `keep_firing_for` exactly as Prometheus' `AlertingRule.Eval` defines them. Pure: the
//! evaluation time is an argument, so tests drive it with any clock.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

/// How long a resolved alert is kept (and re-sent to Alertmanager as resolved), as Prometheus.
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

/// State of one alert instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// Resolved (kept a while so that the resolve is delivered).
    Inactive,
    /// Its condition holds, for less than the rule's `for`.
    Pending,
    /// Its condition has held for the rule's `for`.
    Firing,
}

impl AlertState {
    /// `inactive`, `pending` or `firing`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// One alert instance of a rule. Times are UTC milliseconds since the epoch (0 = never).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Its labels (rule labels, the row's label columns, `alertname`).
    pub labels: BTreeMap<String, String>,
    /// Its expanded annotations.
    pub annotations: BTreeMap<String, String>,
    /// The last value.
    pub value: f64,
    /// Where it is in its life.
    pub state: AlertState,
    /// When its condition started holding.
    pub active_at: i64,
    /// When it started firing.
    pub fired_at: i64,
    /// When it was resolved.
    pub resolved_at: i64,
    /// When it was last sent to Alertmanager.
    pub last_sent_at: i64,
    /// When its row disappeared while firing with `keep_firing_for`.
    pub keep_firing_since: i64,
    /// `endsAt` sent with a firing alert: Alertmanager resolves it by itself after this.
    pub valid_until: i64,
    /// Whether every Alertmanager accepted the resolve.
    pub resolve_delivered: bool,
}

/// A change of an instance's state, to record and (firing, resolved) to notify.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The instance's labels.
    pub labels: BTreeMap<String, String>,
    /// The state before.
    pub from: AlertState,
    /// The state after.
    pub to: AlertState,
    /// The value at the change.
    pub value: f64,
}

/// One row of an alerting rule's result: its labels (alertname and rule labels included) and
/// its annotations, already expanded.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// Key of an instance: its labels, as text.
pub fn label_key(labels: &BTreeMap<String, String>) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&format!("{k}={v:?}"));
    }
    s.push('}');
    s
}

/// Every instance of one alerting rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleAlerts {
    /// By [`label_key`].
    pub active: BTreeMap<String, Alert>,
}

impl RuleAlerts {
    /// Applies one evaluation's result at `ts` (ms), as Prometheus' `AlertingRule.Eval` does,
    /// and returns what changed.
    pub fn apply(
        &mut self,
        ts: i64,
        samples: Vec<Sample>,
        for_: Duration,
        keep_firing_for: Duration,
    ) -> Vec<Transition> {
        let hold = for_.as_millis() as i64;
        let keep = keep_firing_for.as_millis() as i64;
        let mut changes = Vec::new();
        let mut present = std::collections::HashSet::new();
        for s in samples {
            let key = label_key(&s.labels);
            present.insert(key.clone());
            if let Some(a) = self.active.get_mut(&key)
                && a.state != AlertState::Inactive
            {
                a.value = s.value;
                a.annotations = s.annotations;
                continue;
            }
            let from = self.active.get(&key).map(|a| a.state).unwrap_or(AlertState::Inactive);
            changes.push(Transition {
                labels: s.labels.clone(),
                from,
                to: AlertState::Pending,
                value: s.value,
            });
            self.active.insert(
                key,
                Alert {
                    labels: s.labels,
                    annotations: s.annotations,
                    value: s.value,
                    state: AlertState::Pending,
                    active_at: ts,
                    fired_at: 0,
                    resolved_at: 0,
                    last_sent_at: 0,
                    keep_firing_since: 0,
                    valid_until: 0,
                    resolve_delivered: false,
                },
            );
        }
        let mut remove = Vec::new();
        for (key, a) in self.active.iter_mut() {
            if !present.contains(key) {
                let mut keep_firing = false;
                if a.state == AlertState::Firing && keep > 0 {
                    if a.keep_firing_since == 0 {
                        a.keep_firing_since = ts;
                    }
                    keep_firing = ts - a.keep_firing_since < keep;
                }
                // Pending alerts go at once; resolved ones after the retention, once their
                // resolve reached Alertmanager (or a day passed).
                if a.state == AlertState::Pending
                    || (a.resolved_at != 0
                        && ts - a.resolved_at > RESOLVED_RETENTION_MS
                        && (a.resolve_delivered || ts - a.resolved_at > 24 * 3_600_000))
                {
                    remove.push(key.clone());
                }
                if a.state != AlertState::Inactive && !keep_firing {
                    changes.push(Transition {
                        labels: a.labels.clone(),
                        from: a.state,
                        to: AlertState::Inactive,
                        value: a.value,
                    });
                    a.state = AlertState::Inactive;
                    a.resolved_at = ts;
                }
                if !keep_firing {
                    continue;
                }
            } else {
                a.keep_firing_since = 0;
            }
            if a.state == AlertState::Pending && ts - a.active_at >= hold {
                a.state = AlertState::Firing;
                a.fired_at = ts;
                changes.push(Transition {
                    labels: a.labels.clone(),
                    from: AlertState::Pending,
                    to: AlertState::Firing,
                    value: a.value,
                });
            }
        }
        for k in remove {
            self.active.remove(&k);
        }
        changes
    }

    /// The instances Alertmanager should get now (Prometheus' `needsSending`): firing ones
    /// every `resend_delay`, resolved ones until their resolve is sent.
    pub fn needs_sending(&self, ts: i64, resend_delay: Duration) -> Vec<&Alert> {
        let delay = resend_delay.as_millis() as i64;
        self.active
            .values()
            .filter(|a| match a.state {
                AlertState::Pending => false,
                AlertState::Inactive => !a.resolve_delivered || a.resolved_at > a.last_sent_at,
                AlertState::Firing => {
                    a.resolved_at > a.last_sent_at || a.last_sent_at + delay < ts || a.last_sent_at == 0
                }
            })
            .collect()
    }

    /// Instances that are firing.
    pub fn firing(&self) -> impl Iterator<Item = &Alert> {
        self.active.values().filter(|a| a.state == AlertState::Firing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i64 = 60_000;

    fn sample(tenant: &str, v: f64) -> Sample {
        let labels: BTreeMap<String, String> = [("alertname", "A"), ("tenant_id", tenant)]
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Sample { labels, annotations: BTreeMap::new(), value: v }
    }

    fn states(r: &RuleAlerts) -> Vec<(String, AlertState)> {
        r.active.values().map(|a| (a.labels["tenant_id"].clone(), a.state)).collect()
    }

    #[test]
    fn pending_then_firing_after_for_then_resolved() {
        let mut r = RuleAlerts::default();
        let f = Duration::from_secs(300);
        let t = r.apply(0, vec![sample("a", 1.0)], f, Duration::ZERO);
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].from, t[0].to), (AlertState::Inactive, AlertState::Pending));
        assert!(r.apply(4 * M, vec![sample("a", 2.0)], f, Duration::ZERO).is_empty());
        assert_eq!(states(&r), vec![("a".into(), AlertState::Pending)]);
        let t = r.apply(5 * M, vec![sample("a", 3.0)], f, Duration::ZERO);
        assert_eq!((t[0].from, t[0].to), (AlertState::Pending, AlertState::Firing));
        assert_eq!(r.active.values().next().unwrap().fired_at, 5 * M);
        assert_eq!(r.active.values().next().unwrap().value, 3.0);
        let t = r.apply(6 * M, vec![], f, Duration::ZERO);
        assert_eq!((t[0].from, t[0].to), (AlertState::Firing, AlertState::Inactive));
        assert_eq!(states(&r), vec![("a".into(), AlertState::Inactive)]);
        // Kept (to send the resolve) until the retention passed and the resolve was delivered.
        r.active.values_mut().for_each(|a| a.resolve_delivered = true);
        r.apply(6 * M + RESOLVED_RETENTION_MS, vec![], f, Duration::ZERO);
        assert_eq!(r.active.len(), 1);
        r.apply(6 * M + RESOLVED_RETENTION_MS + 1, vec![], f, Duration::ZERO);
        assert!(r.active.is_empty());
    }

    #[test]
    fn a_pending_alert_that_goes_away_is_forgotten_and_restarts_its_for() {
        let mut r = RuleAlerts::default();
        let f = Duration::from_secs(300);
        r.apply(0, vec![sample("a", 1.0)], f, Duration::ZERO);
        let t = r.apply(M, vec![], f, Duration::ZERO);
        assert_eq!((t[0].from, t[0].to), (AlertState::Pending, AlertState::Inactive));
        assert!(r.active.is_empty());
        r.apply(2 * M, vec![sample("a", 1.0)], f, Duration::ZERO);
        assert!(r.apply(6 * M, vec![sample("a", 1.0)], f, Duration::ZERO).is_empty());
        assert_eq!(r.apply(7 * M, vec![sample("a", 1.0)], f, Duration::ZERO)[0].to, AlertState::Firing);
    }

    #[test]
    fn for_zero_fires_at_once_and_keep_firing_for_holds_it() {
        let mut r = RuleAlerts::default();
        let keep = Duration::from_secs(120);
        let t = r.apply(0, vec![sample("a", 1.0)], Duration::ZERO, keep);
        assert_eq!(t.iter().map(|t| t.to).collect::<Vec<_>>(), vec![AlertState::Pending, AlertState::Firing]);
        assert!(r.apply(M, vec![], Duration::ZERO, keep).is_empty());
        assert!(r.apply(2 * M + M / 2, vec![], Duration::ZERO, keep).is_empty(), "kept firing");
        assert!(r.apply(3 * M, vec![], Duration::ZERO, keep)[0].to == AlertState::Inactive);
        // Back while kept firing: the timer restarts.
        let mut r = RuleAlerts::default();
        r.apply(0, vec![sample("a", 1.0)], Duration::ZERO, keep);
        r.apply(M, vec![], Duration::ZERO, keep);
        r.apply(2 * M, vec![sample("a", 1.0)], Duration::ZERO, keep);
        assert!(r.apply(3 * M, vec![], Duration::ZERO, keep).is_empty());
        assert!(r.apply(4 * M, vec![], Duration::ZERO, keep).is_empty());
        assert_eq!(r.apply(5 * M, vec![], Duration::ZERO, keep)[0].to, AlertState::Inactive);
    }

    #[test]
    fn resend_as_prometheus() {
        let mut r = RuleAlerts::default();
        r.apply(0, vec![sample("a", 1.0), sample("b", 1.0)], Duration::from_secs(60), Duration::ZERO);
        assert!(r.needs_sending(0, Duration::from_secs(60)).is_empty(), "pending is not sent");
        r.apply(M, vec![sample("a", 1.0), sample("b", 1.0)], Duration::from_secs(60), Duration::ZERO);
        assert_eq!(r.needs_sending(M, Duration::from_secs(60)).len(), 2);
        r.active.values_mut().for_each(|a| a.last_sent_at = M);
        assert!(r.needs_sending(2 * M, Duration::from_secs(60)).is_empty());
        assert_eq!(r.needs_sending(2 * M + 1, Duration::from_secs(60)).len(), 2);
        r.apply(2 * M + 1, vec![sample("a", 1.0)], Duration::from_secs(60), Duration::ZERO);
        let resolved: Vec<_> = r.needs_sending(2 * M + 1, Duration::from_secs(3600)).into_iter().collect();
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].labels["tenant_id"], "b");
    }
}
