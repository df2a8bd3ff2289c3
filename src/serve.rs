//! `tenantscope serve`: OTLP receivers, the HTTP API (health, readiness, metrics, SQL, billing
//! import) and the PostgreSQL wire over one lake.

use std::{collections::BTreeSet, net::SocketAddr, sync::Arc, time::Duration};

use chrono::NaiveDate;

use anyhow::Context;
use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use prometheus_client::{
    metrics::{family::Family, histogram::Histogram},
    registry::Registry,
};
use tenantscope_ingest::otlp::Pipeline;
use tenantscope_query::{
    EngineConfig, QueryEngine,
    alerts::RuleManager,
    cost::{Meter, usage},
};
use tenantscope_schemas::{
    AuditEvent, Auditor, Lake,
    auth::{Auth, Principals},
};
use tokio::net::TcpListener;

use crate::{
    cli::ServeArgs,
    config::Config,
    gate::{Gate, Right},
    tls::{Incoming, Tls, TlsFiles},
};

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())?;
    let lake = Lake::open_url(&args.lake.data).await.context("cannot open the lake")?;
    serve(args, lake, config).await
}

/// Reads the principals file again on each SIGHUP (`kill -HUP`), so that a token can be added
/// or revoked without a restart; a file that does not check out leaves the principals as they
/// were, and says why in the log.
fn reload_on_hangup(principals: Principals, path: std::path::PathBuf) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match principals.reload(&path) {
                Ok(n) => tracing::info!(file = %path.display(), principals = n, "Principals file reloaded."),
                Err(e) => tracing::error!("Principals file not reloaded, the previous principals stay: {e}"),
            }
        }
    });
    Ok(())
}

/// Serves an opened lake until Ctrl-C or SIGTERM: the OTLP receivers (gRPC and HTTP), the HTTP
/// API and the PostgreSQL wire. On the way out, everything acknowledged is flushed to the lake.
pub(crate) async fn serve(args: ServeArgs, lake: Lake, mut config: Config) -> anyhow::Result<()> {
    for path in &args.rules {
        std::fs::metadata(path).with_context(|| format!("cannot read the rules file {}", path.display()))?;
    }
    if let Some(ms) = args.flush_interval_ms {
        config.ingest.flush_interval_ms = ms;
    }
    let auth = match (&args.auth, args.no_auth) {
        (Some(path), _) => {
            let principals = Principals::load(path)?;
            tracing::info!(file = %path.display(), "Authentication on: every listener asks for a token.");
            reload_on_hangup(principals.clone(), path.clone())?;
            Auth::On(principals)
        }
        (None, true) => {
            tracing::warn!(
                "Authentication is OFF (--no-auth): anyone who reaches a port is an admin. Use --auth FILE \
                 anywhere but on your own machine."
            );
            Auth::Off
        }
        (None, false) => anyhow::bail!(
            "serve needs --auth FILE (the principals and their token hashes) or, to run without \
             authentication on a trusted machine, --no-auth"
        ),
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            Tls::load(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: args.tls_client_ca.clone(),
            })
            .context("cannot use the TLS certificate")?,
        ),
        _ => None,
    };
    lake.create_all().await.context("cannot create the lake's tables")?;
    let auditor = Auditor::start(lake.clone(), Duration::from_secs(1));
    // Bind every listener first, so that a taken port fails before anything starts.
    let http = bind(args.http_addr, "HTTP API").await?;
    let otlp_grpc = bind(args.otlp_grpc_addr, "OTLP/gRPC receiver").await?;
    let otlp_http = bind(args.otlp_http_addr, "OTLP/HTTP receiver").await?;
    let pg = bind(args.pg_addr, "PostgreSQL wire").await?;
    let pg_addr = args.pg_addr;
    let acceptor = |alpn: &[&[u8]], client_auth: bool| -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
        tls.as_ref().map(|t| t.acceptor(alpn, client_auth)).transpose()
    };
    let http = Incoming::new(http, acceptor(&[b"h2", b"http/1.1"], false)?, "HTTP API")?;
    let otlp_http = Incoming::new(otlp_http, acceptor(&[b"h2", b"http/1.1"], true)?, "OTLP/HTTP receiver")?;
    let otlp_grpc = Incoming::new(otlp_grpc, acceptor(&[b"h2"], true)?, "OTLP/gRPC receiver")?;
    let pg_tls = acceptor(&[], false)?;
    if let Some(tls) = tls.clone() {
        let auditor = auditor.clone();
        tokio::spawn(tls.watch(Duration::from_secs(1), move |outcome| {
            let (outcome, detail) = match outcome {
                Ok(d) => ("ok", d),
                Err(e) => ("error", e),
            };
            auditor.record(AuditEvent {
                actor: Some("tenantscope".into()),
                detail: Some(detail),
                outcome: Some(outcome.into()),
                ..AuditEvent::new("tls.reload")
            });
        }));
        tracing::info!(
            cert = ?args.tls_cert, client_ca = ?args.tls_client_ca,
            "TLS on every listener; the certificate is reloaded when its files change."
        );
    }

    let mut registry = Registry::default();
    let pipeline = Pipeline::start(lake.clone(), config.ingest.clone(), args.wal_dir.clone(), &mut registry)
        .await
        .context("cannot start OTLP ingest")?;
    let maintenance_metrics = crate::maintenance::MaintenanceMetrics::new(&mut registry);
    let http_latency: Family<RouteLabels, Histogram> = Family::new_with_constructor(latency_histogram);
    registry.register(
        "tenantscope_http_request_duration_seconds",
        "Time to answer an HTTP API request, by method and route (POST /v1/sql: SQL queries)",
        http_latency.clone(),
    );
    let registry = Arc::new(registry);
    tokio::spawn(crate::maintenance::maintenance_loop(
        lake.clone(),
        config.maintenance.clone(),
        maintenance_metrics,
    ));
    let engine = QueryEngine::new(
        lake.clone(),
        EngineConfig {
            max_staleness: Duration::from_secs(args.max_staleness_secs),
            cost: config.cost.clone(),
            ops_can_read_finance: matches!(&auth, Auth::On(p) if p.ops_can_read_finance()),
            auditor: Some(auditor.clone()),
            ..Default::default()
        },
    )
    .await?;
    // Usage follows ingest every cost.rollup_interval_ms: a rollup rescans whole days of raw
    // telemetry, so it runs far less often than flushes (profiled: at 1 s it cost a visible
    // share of ingest CPU).
    let rollup_every = Duration::from_millis(config.cost.rollup_interval_ms.max(100));
    tokio::spawn(rollup_loop(lake.clone(), pipeline.clone(), config.cost.meters.clone(), rollup_every));

    register_system_tables(&engine, Some(pipeline.clone()))?;

    // Alert rules: evaluated on their schedule, reloaded when their files change or on SIGHUP.
    let mut alerts_config = config.alerts.clone();
    alerts_config.alertmanager_urls.extend(args.alertmanager_urls.iter().cloned());
    if alerts_config.state_file.is_none() {
        alerts_config.state_file = Some(args.wal_dir.join("alerts-state.json"));
    }
    let external_url = args.external_url.clone().unwrap_or_else(|| format!("http://{}", args.http_addr));
    let rules = if args.rules.is_empty() {
        None
    } else {
        let manager = RuleManager::new(engine.clone(), args.rules.clone(), &alerts_config, &external_url)
            .await
            .map_err(|e| anyhow::anyhow!("the alert rules cannot be loaded:\n{e}"))?;
        let n: usize = manager.groups().iter().map(|g| g.rules.len()).sum();
        tracing::info!(
            rules = n, files = ?args.rules, alertmanagers = ?alerts_config.alertmanager_urls,
            webhooks = alerts_config.webhooks.len(), "Evaluating alert rules."
        );
        Some(manager)
    };

    let pg_engine = engine.clone();
    let pg_auth = auth.clone();
    tokio::spawn(async move {
        if let Err(e) = tenantscope_query::pg::serve(&pg_engine, pg, pg_auth, pg_tls).await {
            tracing::error!(addr = %pg_addr, error = %e, "The PostgreSQL wire stopped.");
        }
    });
    tracing::info!(addr = %pg_addr, "Serving the PostgreSQL wire (psql -h {} -p {}).", pg_addr.ip(), pg_addr.port());

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = move || {
        let mut rx = stopped.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let gate = |right: Right, listener: &'static str| Gate {
        auth: auth.clone(),
        right,
        auditor: auditor.clone(),
        listener,
    };
    let grpc = tokio::spawn(tenantscope_ingest::otlp::grpc::serve(
        pipeline.clone(),
        otlp_grpc.into_stream(),
        tenantscope_ingest::otlp::grpc::Gatekeeper::new(auth.clone(), Some(auditor.clone())),
        until_stopped(),
    ));
    let otlp_app = tenantscope_ingest::otlp::http::router(pipeline.clone()).route_layer(
        axum::middleware::from_fn_with_state(gate(Right::Ingest, "OTLP/HTTP"), crate::gate::gate),
    );
    let otlp = tokio::spawn(
        axum::serve(otlp_http, otlp_app.into_make_service_with_connect_info::<crate::tls::Peer>())
            .with_graceful_shutdown(until_stopped())
            .into_future(),
    );
    tracing::info!(
        grpc = %args.otlp_grpc_addr, http = %args.otlp_http_addr, wal = %args.wal_dir.display(),
        flush_interval_ms = config.ingest.flush_interval_ms, "Receiving OTLP."
    );

    let rules_task = rules.clone().map(|manager| {
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(reload_on_sighup(reload_tx));
        tokio::spawn(manager.run(reload_rx, until_stopped()))
    });

    let layer =
        |right: Right| axum::middleware::from_fn_with_state(gate(right, "HTTP API"), crate::gate::gate);
    let operate = Router::new()
        .route("/metrics", get(metrics).with_state(registry))
        .route("/v1/rules", get(rules_status).with_state(rules))
        .route_layer(layer(Right::Operate));
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz).with_state(lake.clone()))
        .merge(operate)
        .merge(tenantscope_query::http::router(engine).route_layer(layer(Right::Query)))
        .merge(
            tenantscope_ingest::billing::http::router(lake.clone(), Some(auditor.clone()))
                .route_layer(layer(Right::Import)),
        )
        .route_layer(axum::middleware::from_fn_with_state(http_latency, time_request));
    tracing::info!(addr = %args.http_addr, lake = %lake.location(), "Serving the HTTP API.");
    tracing::info!("Billing import: POST /v1/import/billing (the export file as the body).");
    let api = axum::serve(http, app.into_make_service_with_connect_info::<crate::tls::Peer>())
        .with_graceful_shutdown(until_stopped())
        .into_future();
    tokio::select! {
        () = shutdown_signal() => {}
        r = api => r.context("HTTP server failed")?,
    }
    let _ = stop.send(true);
    if let Ok(Err(e)) = grpc.await {
        tracing::warn!(error = %e, "The OTLP/gRPC receiver failed.");
    }
    if let Ok(Err(e)) = otlp.await {
        tracing::warn!(error = %e, "The OTLP/HTTP receiver failed.");
    }
    if let Some(task) = rules_task {
        let _ = task.await;
    }
    match pipeline.flush().await {
        Ok(()) => tracing::info!("Flushed acknowledged telemetry to the lake."),
        Err(e) => {
            tracing::warn!(error = %e, "Cannot flush to the lake; the write-ahead log keeps the rows for the next start.")
        }
    }
    if let Err(e) = auditor.flush().await {
        tracing::warn!(error = %e, "Cannot write the last audit events.");
    }
    tracing::info!("Stopped.");
    Ok(())
}

/// Keeps `usage` up to date: at start, the days with telemetry but no usage and today; then,
/// every few seconds, the days the ingest pipeline committed rows to.
async fn rollup_loop(lake: Lake, pipeline: Pipeline, meters: Vec<Meter>, every: Duration) {
    let mut days: BTreeSet<NaiveDate> = match usage::missing_days(&lake).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "Cannot tell which days lack usage.");
            BTreeSet::new()
        }
    };
    days.insert(chrono::Utc::now().date_naive());
    loop {
        if !days.is_empty() {
            match usage::rollup(&lake, &meters, &days).await {
                Ok(rows) => tracing::debug!(days = days.len(), rows, "Rolled up usage."),
                Err(e) => tracing::warn!(error = %e, "Usage rollup failed; retrying."),
            }
        }
        tokio::time::sleep(every).await;
        days = pipeline.take_committed_days().into_iter().collect();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 16))
}

/// Records each request's time under its method and route.
async fn time_request(
    State(latency): State<Family<RouteLabels, Histogram>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    // A route layer runs for matched routes only, and none of ours has path parameters: the
    // path is the route (no unbounded label values).
    let route = format!("{} {}", request.method(), request.uri().path());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    latency.get_or_create(&RouteLabels { route }).observe(started.elapsed().as_secs_f64());
    response
}

/// Sends on `reload` at every SIGHUP.
async fn reload_on_sighup(reload: tokio::sync::mpsc::Sender<()>) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the alert rules.");
            if reload.send(()).await.is_err() {
                return;
            }
        }
    }
    #[cfg(not(unix))]
    drop(reload);
}

#[derive(Debug, serde::Deserialize)]
struct RulesQuery {
    group: Option<String>,
    rule: Option<String>,
}

/// `GET /v1/rules[?group=G&rule=R]`: every rule, its health, last evaluation and alerts (where
/// an alert's `generatorURL` points).
async fn rules_status(
    State(rules): State<Option<RuleManager>>,
    axum::extract::Query(q): axum::extract::Query<RulesQuery>,
) -> axum::Json<serde_json::Value> {
    match rules {
        Some(m) => axum::Json(m.rules_json(q.group.as_deref(), q.rule.as_deref()).await),
        None => axum::Json(serde_json::json!({"groups": [], "undeliveredWebhookMessages": 0})),
    }
}

/// Registers the system tables this process feeds: `ingest_stats` from the OTLP pipeline's
/// counters, sampled every 5 s for an hour so that windows of 1 to 60 minutes can be read.
/// Without a pipeline the tables stay empty.
pub(crate) fn register_system_tables(engine: &QueryEngine, pipeline: Option<Pipeline>) -> anyhow::Result<()> {
    use std::{collections::VecDeque, sync::Mutex, time::Instant};
    use tenantscope_ingest::otlp::ItemCounts;
    use tenantscope_query::system::{IngestStatsRow, SnapshotTable, ingest_stats_batch, ingest_stats_schema};
    let Some(pipeline) = pipeline else { return Ok(()) };
    type Samples = VecDeque<(Instant, Vec<ItemCounts>)>;
    let samples: Arc<Mutex<Samples>> = Arc::default();
    let sampler = Arc::clone(&samples);
    let source = pipeline.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            let mut s = sampler.lock().unwrap_or_else(|e| e.into_inner());
            s.push_back((Instant::now(), source.item_counts()));
            while s.front().is_some_and(|(t, _)| t.elapsed() > Duration::from_secs(3700)) {
                s.pop_front();
            }
        }
    });
    let table = SnapshotTable::new(ingest_stats_schema(), move || {
        let now = pipeline.item_counts();
        let samples = samples.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows = Vec::new();
        for (window, secs) in
            [("1m", Some(60)), ("5m", Some(300)), ("15m", Some(900)), ("1h", Some(3600)), ("total", None)]
        {
            // Counts at the window's start: the last sample at or before it; zero (the start of
            // the process) when the process is younger than the window.
            let before = secs.and_then(|secs| {
                samples.iter().rev().find(|(t, _)| t.elapsed() >= Duration::from_secs(secs)).map(|(_, c)| c)
            });
            for c in &now {
                let b = before.and_then(|b| b.iter().find(|x| x.signal == c.signal));
                let d = |f: fn(&ItemCounts) -> u64| (f(c) - b.map(f).unwrap_or(0)) as i64;
                rows.push(IngestStatsRow {
                    signal: c.signal.to_string(),
                    lookback: window.to_string(),
                    window_seconds: secs.map(|s: u64| s as i64),
                    received: d(|x| x.received),
                    accepted: d(|x| x.accepted),
                    rejected: d(|x| x.rejected),
                });
            }
        }
        ingest_stats_batch(&rows)
    });
    engine.replace_table(tenantscope_query::system::INGEST_STATS, Arc::new(table))?;
    Ok(())
}

/// The service's own health in Prometheus' text format.
async fn metrics(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &registry) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            text,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("cannot encode the metrics: {e}\n"),
        ),
    }
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} for the {what}"))
}

/// Ready when the lake answers.
async fn readyz(State(lake): State<Lake>) -> (StatusCode, String) {
    match lake.check().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}
