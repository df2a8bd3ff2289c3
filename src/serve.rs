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
use prometheus_client::registry::Registry;
use tenantscope_ingest::otlp::Pipeline;
use tenantscope_query::{
    EngineConfig, QueryEngine,
    cost::{Meter, usage},
};
use tenantscope_schemas::Lake;
use tokio::net::TcpListener;

use crate::{cli::ServeArgs, config::Config};

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())?;
    let lake = Lake::open_url(&args.lake.data).await.context("cannot open the lake")?;
    serve(args, lake, config).await
}

/// Serves an opened lake until Ctrl-C or SIGTERM: the OTLP receivers (gRPC and HTTP), the HTTP
/// API and the PostgreSQL wire. On the way out, everything acknowledged is flushed to the lake.
pub(crate) async fn serve(args: ServeArgs, lake: Lake, mut config: Config) -> anyhow::Result<()> {
    if let Some(path) = &args.rules {
        std::fs::metadata(path).with_context(|| format!("cannot read the rules file {}", path.display()))?;
    }
    if let Some(ms) = args.flush_interval_ms {
        config.ingest.flush_interval_ms = ms;
    }
    lake.create_all().await.context("cannot create the lake's tables")?;
    // Bind every listener first, so that a taken port fails before anything starts.
    let http = bind(args.http_addr, "HTTP API").await?;
    let otlp_grpc = bind(args.otlp_grpc_addr, "OTLP/gRPC receiver").await?;
    let otlp_http = bind(args.otlp_http_addr, "OTLP/HTTP receiver").await?;
    let pg_addr = args.pg_addr;
    std::net::TcpListener::bind(pg_addr)
        .map(drop)
        .with_context(|| format!("cannot listen on {pg_addr} for the PostgreSQL wire"))?;

    let mut registry = Registry::default();
    let pipeline = Pipeline::start(lake.clone(), config.ingest.clone(), args.wal_dir.clone(), &mut registry)
        .await
        .context("cannot start OTLP ingest")?;
    let registry = Arc::new(registry);
    let engine = QueryEngine::new(
        lake.clone(),
        EngineConfig {
            max_staleness: Duration::from_secs(args.max_staleness_secs),
            cost: config.cost.clone(),
            ..Default::default()
        },
    )
    .await?;
    // Usage follows ingest every cost.rollup_interval_ms: a rollup rescans whole days of raw
    // telemetry, so it runs far less often than flushes (profiled: at 1 s it cost a visible
    // share of ingest CPU).
    let rollup_every = Duration::from_millis(config.cost.rollup_interval_ms.max(100));
    tokio::spawn(rollup_loop(lake.clone(), pipeline.clone(), config.cost.meters.clone(), rollup_every));

    let pg_engine = engine.clone();
    tokio::spawn(async move {
        if let Err(e) = tenantscope_query::pg::serve(&pg_engine, pg_addr).await {
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
    let grpc =
        tokio::spawn(tenantscope_ingest::otlp::grpc::serve(pipeline.clone(), otlp_grpc, until_stopped()));
    let otlp_app = tenantscope_ingest::otlp::http::router(pipeline.clone());
    let otlp =
        tokio::spawn(axum::serve(otlp_http, otlp_app).with_graceful_shutdown(until_stopped()).into_future());
    tracing::info!(
        grpc = %args.otlp_grpc_addr, http = %args.otlp_http_addr, wal = %args.wal_dir.display(),
        flush_interval_ms = config.ingest.flush_interval_ms, "Receiving OTLP."
    );

    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz).with_state(lake.clone()))
        .route("/metrics", get(metrics).with_state(registry))
        .merge(tenantscope_query::http::router(engine))
        .merge(tenantscope_ingest::billing::http::router(lake.clone()));
    tracing::info!(addr = %args.http_addr, lake = %lake.location(), "Serving the HTTP API.");
    tracing::info!("Billing import: POST /v1/import/billing (the export file as the body).");
    let api = axum::serve(http, app).with_graceful_shutdown(until_stopped()).into_future();
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
    match pipeline.flush().await {
        Ok(()) => tracing::info!("Flushed acknowledged telemetry to the lake."),
        Err(e) => {
            tracing::warn!(error = %e, "Cannot flush to the lake; the write-ahead log keeps the rows for the next start.")
        }
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
