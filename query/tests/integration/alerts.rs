//! Alert rules on an injected clock, over a real lake: the OpenCost mixin's promtool unit tests
//! run against its alerts rewritten as SQL (examples/rules/opencost.yaml), then Prometheus'
//! `for` semantics across a restart.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_yaml_ng::Value;
use tenantscope_query::{
    EngineConfig, QueryEngine,
    alerts::{AlertsConfig, RuleManager, state::AlertState},
};
use tenantscope_schemas::{
    Lake, Table,
    arrow::array::{Array, ArrayRef, Date32Array, Float64Array, StringArray, TimestampMicrosecondArray},
    types::string_map_builder,
};

fn repo(path: &str) -> PathBuf {
    crate::manifest_dir().join("..").join(path)
}

/// A series as promtool writes it: `name{a="b", c="d"}`.
fn parse_series(text: &str) -> (String, BTreeMap<String, String>) {
    let text = text.trim();
    let Some((name, rest)) = text.split_once('{') else { return (text.to_string(), BTreeMap::new()) };
    let body = rest.trim_end_matches('}');
    let mut labels = BTreeMap::new();
    for part in body.split(',') {
        let Some((k, v)) = part.split_once('=') else { continue };
        labels.insert(k.trim().to_string(), v.trim().trim_matches('"').to_string());
    }
    (name.trim().to_string(), labels)
}

/// promtool's expanding notation: `1x12 2000x3` (a value n+1 times), `1+2x3` (1, 3, 5, 7), `_`
/// (no sample).
fn expand_values(text: &str) -> Vec<Option<f64>> {
    let mut out = Vec::new();
    for term in text.split_whitespace() {
        if term == "_" {
            out.push(None);
            continue;
        }
        let Some((start, n)) = term.split_once('x') else {
            out.push(Some(term.parse().unwrap()));
            continue;
        };
        let n: usize = n.parse().unwrap();
        if start == "_" {
            out.extend(std::iter::repeat_n(None, n));
            continue;
        }
        let (a, step) = match start[1..].find(['+', '-']) {
            Some(i) => {
                let (a, b) = start.split_at(i + 1);
                (a.parse::<f64>().unwrap(), b.parse::<f64>().unwrap())
            }
            None => (start.parse::<f64>().unwrap(), 0.0),
        };
        for i in 0..=n {
            out.push(Some(a + step * i as f64));
        }
    }
    out
}

fn duration(text: &str) -> Duration {
    Duration::from_std(tenantscope_query::alerts::rules::parse_duration(text).unwrap()).unwrap()
}

/// Writes points to the lake's `metrics` table as gauges.
async fn write_points(lake: &Lake, points: &[(String, BTreeMap<String, String>, DateTime<Utc>, f64)]) {
    let schema = Table::Metrics.schema();
    let n = points.len();
    let mut attrs = string_map_builder();
    for (_, labels, _, _) in points {
        for (k, v) in labels {
            attrs.keys().append_value(k);
            attrs.values().append_value(v);
        }
        attrs.append(true).unwrap();
    }
    let mut cols: std::collections::HashMap<&str, ArrayRef> = std::collections::HashMap::new();
    cols.insert(
        "time",
        Arc::new(
            TimestampMicrosecondArray::from(
                points.iter().map(|p| p.2.timestamp_micros()).collect::<Vec<_>>(),
            )
            .with_timezone("UTC"),
        ),
    );
    cols.insert(
        "metric_name",
        Arc::new(StringArray::from(points.iter().map(|p| p.0.as_str()).collect::<Vec<_>>())),
    );
    cols.insert("metric_type", Arc::new(StringArray::from(vec!["gauge"; n])));
    cols.insert("value", Arc::new(Float64Array::from(points.iter().map(|p| p.3).collect::<Vec<_>>())));
    cols.insert("attributes", Arc::new(attrs.finish()));
    cols.insert(
        "date",
        Arc::new(Date32Array::from(
            points.iter().map(|p| (p.2.timestamp().div_euclid(86_400)) as i32).collect::<Vec<_>>(),
        )),
    );
    let batch = tenantscope_schemas::types::batch_with_nulls(&schema, n, cols).unwrap();
    lake.append(Table::Metrics, &[batch]).await.unwrap();
}

/// A text column of a query result.
fn strings(r: &tenantscope_query::QueryResult, col: usize) -> Vec<String> {
    r.batches
        .iter()
        .flat_map(|b| {
            let a = tenantscope_schemas::arrow::compute::cast(
                b.column(col),
                &tenantscope_schemas::arrow::datatypes::DataType::Utf8,
            )
            .unwrap();
            let a = a.as_any().downcast_ref::<StringArray>().unwrap().clone();
            (0..a.len()).map(move |i| a.value(i).to_string()).collect::<Vec<_>>()
        })
        .collect()
}

async fn lake_and_engine(dir: &std::path::Path) -> (Lake, QueryEngine) {
    let lake = Lake::open_url(dir.to_str().unwrap()).await.unwrap();
    lake.create_all().await.unwrap();
    let engine = QueryEngine::new(lake.clone(), EngineConfig::default()).await.unwrap();
    (lake, engine)
}

/// The OpenCost rules over `engine`, with no notifier.
async fn opencost_rules(engine: QueryEngine) -> RuleManager {
    RuleManager::new(
        engine,
        vec![repo("examples/rules/opencost.yaml")],
        &AlertsConfig::default(),
        "http://ts",
    )
    .await
    .unwrap()
}

/// Firing alerts of a rule: (labels without alertname, annotations).
async fn firing(m: &RuleManager, rule: &str) -> Vec<(BTreeMap<String, String>, BTreeMap<String, String>)> {
    m.active_alerts()
        .await
        .into_iter()
        .filter(|(r, a)| r == rule && a.state == AlertState::Firing)
        .map(|(_, mut a)| {
            a.labels.remove("alertname");
            (a.labels, a.annotations)
        })
        .collect()
}

/// Every `alert_rule_test` of the OpenCost mixin's promtool tests, against our SQL rules: the
/// input series become rows of `metrics`, the group is evaluated every minute (promtool's
/// evaluation interval) up to each `eval_time`, and the firing alerts must be the expected ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencost_promtool_tests_pass_against_the_sql_rules() {
    let tests: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(repo("testdata/alerting/opencost-mixin-tests.yaml")).unwrap(),
    )
    .unwrap();
    // The tests are independent (a lake each): run them side by side.
    let mut runs = tokio::task::JoinSet::new();
    for (i, test) in tests["tests"].as_sequence().unwrap().iter().enumerate() {
        runs.spawn(run_promtool_test(i, test.clone()));
    }
    let mut checked = 0;
    while let Some(n) = runs.join_next().await {
        checked += n.unwrap();
    }
    assert_eq!(checked, 4, "every alert_rule_test of the file ran");
}

/// One promtool test: returns how many `alert_rule_test` cases it checked.
async fn run_promtool_test(i: usize, test: Value) -> usize {
    let Some(alert_tests) = test["alert_rule_test"].as_sequence() else { return 0 };
    let base = Utc.with_ymd_and_hms(2026, 1, 5, 0, 0, 0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (lake, engine) = lake_and_engine(dir.path()).await;
    let interval = duration(test["interval"].as_str().unwrap_or("1m"));
    let mut points = Vec::new();
    for s in test["input_series"].as_sequence().unwrap() {
        let (name, labels) = parse_series(s["series"].as_str().unwrap());
        for (k, v) in expand_values(s["values"].as_str().unwrap()).into_iter().enumerate() {
            if let Some(v) = v {
                points.push((name.clone(), labels.clone(), base + interval * k as i32, v));
            }
        }
    }
    write_points(&lake, &points).await;
    let m = opencost_rules(engine).await;
    let mut evaluated_until: Option<DateTime<Utc>> = None;
    let mut cases: Vec<&Value> = alert_tests.iter().collect();
    cases.sort_by_key(|c| duration(c["eval_time"].as_str().unwrap()));
    let mut checked = 0;
    for case in cases {
        // promtool evaluates every evaluation_interval (1m by default) from 0 to eval_time.
        let eval_time = base + duration(case["eval_time"].as_str().unwrap());
        let mut t = evaluated_until.map(|t| t + Duration::minutes(1)).unwrap_or(base);
        while t <= eval_time {
            for r in m.evaluate("opencost", t).await.unwrap() {
                assert_eq!(r.error, None, "test {i} at {t}: {r:?}");
            }
            t += Duration::minutes(1);
        }
        evaluated_until = Some(eval_time);
        let alertname = case["alertname"].as_str().unwrap();
        let mut want: Vec<(BTreeMap<String, String>, BTreeMap<String, String>)> = case["exp_alerts"]
            .as_sequence()
            .map(|v| {
                v.iter()
                    .map(|e| {
                        (
                            serde_yaml_ng::from_value(e["exp_labels"].clone()).unwrap_or_default(),
                            serde_yaml_ng::from_value(e["exp_annotations"].clone()).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut got = firing(&m, alertname).await;
        want.sort();
        got.sort();
        assert_eq!(got, want, "promtool test {i}: {alertname} at {}", case["eval_time"].as_str().unwrap());
        checked += 1;
    }
    checked
}

/// The anomaly alert's timeline, which promtool's test only samples at 15h: the jump at 13h
/// makes it pending at 13:00 and firing at 13:10 (`for: 10m`), as Prometheus would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anomaly_fires_after_its_for_and_resolves_when_costs_settle() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, engine) = lake_and_engine(dir.path()).await;
    let base = Utc.with_ymd_and_hms(2026, 1, 5, 0, 0, 0).unwrap();
    let labels: BTreeMap<String, String> =
        [("job", "opencost"), ("node", "n1")].into_iter().map(|(k, v)| (k.into(), v.into())).collect();
    // 1 an hour for 13 hours, 2000 from 13h to 16h, then hourly points back at 1 for 8 days.
    let mut points = Vec::new();
    for (k, v) in expand_values("1x12 2000x3 1x200").into_iter().enumerate() {
        points.push((
            "node_total_hourly_cost".to_string(),
            labels.clone(),
            base + Duration::hours(k as i64),
            v.unwrap(),
        ));
    }
    write_points(&lake, &points).await;
    let m = opencost_rules(engine).await;
    let at = |h: i64, min: i64| base + Duration::hours(h) + Duration::minutes(min);
    let state = |m: &RuleManager| {
        let m = m.clone();
        async move {
            m.active_alerts()
                .await
                .into_iter()
                .filter(|(r, _)| r == "OpenCostAnomalyDetected")
                .map(|(_, a)| a.state)
                .collect::<Vec<_>>()
        }
    };
    m.evaluate("opencost", at(12, 59)).await.unwrap();
    assert_eq!(state(&m).await, vec![]);
    m.evaluate("opencost", at(13, 0)).await.unwrap();
    assert_eq!(state(&m).await, vec![AlertState::Pending]);
    m.evaluate("opencost", at(13, 9)).await.unwrap();
    assert_eq!(state(&m).await, vec![AlertState::Pending]);
    m.evaluate("opencost", at(13, 10)).await.unwrap();
    assert_eq!(state(&m).await, vec![AlertState::Firing]);
    // Three hours after the jump ends, the recent average is back near the week's.
    m.evaluate("opencost", at(19, 30)).await.unwrap();
    assert_eq!(state(&m).await, vec![AlertState::Inactive]);
    let rules = m.rules_json(Some("opencost"), Some("OpenCostAnomalyDetected")).await;
    assert_eq!(rules["groups"][0]["rules"][0]["health"], "ok", "{rules}");
    assert_eq!(rules["groups"][0]["rules"][0]["alerts"][0]["state"], "inactive", "{rules}");
    // Every evaluation and transition is in the `alerts` table.
    m.flush_history().await.unwrap();
    let engine = QueryEngine::new(lake.clone(), EngineConfig::default()).await.unwrap();
    let r = engine
        .sql(
            "SELECT state FROM alerts WHERE rule = 'OpenCostAnomalyDetected' AND event = 'transition' ORDER BY time",
        )
        .await
        .unwrap();
    assert_eq!(strings(&r, 0), vec!["pending", "firing", "inactive"]);
}

const RESTART_RULES: &str = "groups:
  - name: g
    interval: 1m
    rules:
      - alert: Hot
        sql: SELECT attributes['node'] AS node, last_value(value ORDER BY time) AS value FROM metrics WHERE metric_name = 'temp' AND time > now() - INTERVAL '5 minutes' AND time <= now() GROUP BY 1 HAVING last_value(value ORDER BY time) > 50
        for: 10m
        annotations:
          summary: '{{ $labels.node }} is at {{ $value }} degrees'
";

/// A restart in the middle of `for`: the state file brings back when the condition started, so
/// the alert fires at the same time as without the restart, and once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_in_the_middle_of_for_fires_on_time_once() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, engine) = lake_and_engine(&dir.path().join("lake")).await;
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, RESTART_RULES).unwrap();
    let base = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    let labels: BTreeMap<String, String> = [("node".to_string(), "n1".to_string())].into_iter().collect();
    let points: Vec<_> =
        (0..30).map(|m| ("temp".to_string(), labels.clone(), base + Duration::minutes(m), 80.0)).collect();
    write_points(&lake, &points).await;
    let config = AlertsConfig { state_file: Some(dir.path().join("state.json")), ..Default::default() };
    let first = RuleManager::new(engine.clone(), vec![rules.clone()], &config, "http://ts").await.unwrap();
    for m in 0..=4 {
        first.evaluate("g", base + Duration::minutes(m)).await.unwrap();
    }
    assert_eq!(firing(&first, "Hot").await, vec![]);
    first.flush_history().await.unwrap();
    drop(first);
    // Down for 3 minutes, then a new process with the same state file.
    let second = RuleManager::new(engine.clone(), vec![rules], &config, "http://ts").await.unwrap();
    for m in 8..=9 {
        second.evaluate("g", base + Duration::minutes(m)).await.unwrap();
    }
    assert_eq!(firing(&second, "Hot").await, vec![], "still pending at 9m");
    second.evaluate("g", base + Duration::minutes(10)).await.unwrap();
    let f = firing(&second, "Hot").await;
    assert_eq!(f.len(), 1, "fires at 10m, as without the restart");
    assert_eq!(f[0].1["summary"], "n1 is at 80 degrees");
    second.evaluate("g", base + Duration::minutes(11)).await.unwrap();
    second.flush_history().await.unwrap();
    let r = engine
        .sql("SELECT state, to_char(time, '%Y-%m-%dT%H:%M:%SZ') AS at FROM alerts WHERE rule = 'Hot' AND event = 'transition' ORDER BY time")
        .await
        .unwrap();
    assert_eq!(strings(&r, 0), vec!["pending", "firing"], "pending once, firing once");
    assert_eq!(strings(&r, 1), vec!["2026-03-01T12:00:00Z", "2026-03-01T12:10:00Z"], "at 0m and 10m");
}

/// Evaluation errors are recorded, not fatal; `rules check` errors point at the file line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_recorded_and_located() {
    let dir = tempfile::tempdir().unwrap();
    let (_lake, engine) = lake_and_engine(&dir.path().join("lake")).await;
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        sql: |\n          SELECT tenant_id\n          FORM spans\n      - record: r\n        sql: SELECT 'x' AS tenant_id\n      - alert: C\n        sql: SELECT 'x' AS value\n",
    )
    .unwrap();
    let errors = tenantscope_query::alerts::load_checked(&engine, &[bad.clone()]).await.unwrap_err();
    let msgs: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let file = bad.display().to_string();
    assert!(
        msgs.iter().any(|m| m.starts_with(&format!("{file}:7:")) && m.contains("rule \"A\"")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter().any(|m| m.starts_with(&format!("{file}:9:")) && m.contains("numeric `value`")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter().any(|m| m.starts_with(&format!("{file}:11:")) && m.contains("not a number")),
        "{msgs:?}"
    );
    assert_eq!(errors.len(), 3);

    // Plans, but fails when run: recorded, and the next rule still runs.
    let rules = dir.path().join("ok.yaml");
    std::fs::write(
        &rules,
        "groups:\n  - name: g\n    rules:\n      - alert: Div\n        sql: SELECT 'a' AS k, CAST(1 AS INT) / CAST(0 AS INT) AS value\n      - alert: Twice\n        sql: SELECT 'a' AS k UNION ALL SELECT 'a' AS k\n      - alert: Fine\n        sql: SELECT 'a' AS k\n",
    )
    .unwrap();
    let m = RuleManager::new(engine, vec![rules], &AlertsConfig::default(), "http://ts").await.unwrap();
    let reports = m.evaluate("g", Utc::now()).await.unwrap();
    assert!(reports[0].error.as_deref().unwrap_or_default().contains("Divide by zero"), "{reports:?}");
    assert!(reports[1].error.as_deref().unwrap_or_default().contains("same labels"), "{reports:?}");
    assert_eq!(reports[2].error, None);
    assert_eq!(firing(&m, "Fine").await.len(), 1);
}

/// A recording rule writes its rows as gauge points of `metrics`, stamped with the evaluation
/// time, its text columns and labels as attributes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_rule_writes_gauge_points() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, engine) = lake_and_engine(&dir.path().join("lake")).await;
    let t0 = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    let point = |node: &str, v: f64| {
        let labels: BTreeMap<String, String> = [("node".to_string(), node.to_string())].into_iter().collect();
        ("temp".to_string(), labels, t0, v)
    };
    write_points(&lake, &[point("n1", 70.0), point("n2", 40.0), point("n1", 75.0)]).await;
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "groups:\n  - name: rec\n    rules:\n      - record: node:temp:max\n        sql: SELECT attributes['node'] AS node, 'acme' AS tenant_id, max(value) AS value FROM metrics WHERE metric_name = 'temp' GROUP BY 1\n        labels:\n          source: '{{ $labels.node }}-rule'\n",
    )
    .unwrap();
    let m =
        RuleManager::new(engine.clone(), vec![rules], &AlertsConfig::default(), "http://ts").await.unwrap();
    let at = t0 + Duration::minutes(1);
    let reports = m.evaluate("rec", at).await.unwrap();
    assert_eq!(reports[0].rows, 2, "{reports:?}");
    assert_eq!(reports[0].error, None);
    let r = engine
        .sql(
            "SELECT attributes['node'], attributes['source'], tenant_id, metric_type, service_name, \
             CAST(value AS VARCHAR), to_char(time, '%H:%M') FROM metrics \
             WHERE metric_name = 'node:temp:max' ORDER BY 1",
        )
        .await
        .unwrap();
    let rows: Vec<Vec<String>> =
        (0..r.num_rows()).map(|i| (0..7).map(|c| strings(&r, c)[i].clone()).collect()).collect();
    assert_eq!(
        rows,
        vec![
            vec!["n1", "n1-rule", "acme", "gauge", "tenantscope", "75.0", "12:01"],
            vec!["n2", "n2-rule", "acme", "gauge", "tenantscope", "40.0", "12:01"],
        ]
    );
}
