//! `tenantscope serve`: the HTTP API over the lake (health, readiness, SQL).

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use axum::{Router, extract::State, http::StatusCode, routing::get};
use tenantscope_query::{EngineConfig, QueryEngine};
use tenantscope_schemas::Lake;
use tokio::net::TcpListener;

use crate::cli::ServeArgs;

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let lake = Lake::open_url(&args.lake.data).await.context("cannot open the lake")?;
    serve(args, lake).await
}

/// Serves an opened lake until Ctrl-C or SIGTERM.
pub(crate) async fn serve(args: ServeArgs, lake: Lake) -> anyhow::Result<()> {
    for (what, path) in [("config", &args.config), ("rules", &args.rules)] {
        if let Some(path) = path {
            std::fs::metadata(path)
                .with_context(|| format!("cannot read the {what} file {}", path.display()))?;
        }
    }
    lake.create_all().await.context("cannot create the lake's tables")?;
    let engine = QueryEngine::new(
        lake.clone(),
        EngineConfig { max_staleness: Duration::from_secs(args.max_staleness_secs), ..Default::default() },
    )
    .await?;
    let pg_engine = engine.clone();
    let pg_addr = args.pg_addr;
    std::net::TcpListener::bind(pg_addr)
        .map(drop)
        .with_context(|| format!("cannot listen on {pg_addr} for the PostgreSQL wire"))?;
    tokio::spawn(async move {
        if let Err(e) = tenantscope_query::pg::serve(&pg_engine, pg_addr).await {
            tracing::error!(addr = %pg_addr, error = %e, "The PostgreSQL wire stopped.");
        }
    });
    tracing::info!(addr = %pg_addr, "Serving the PostgreSQL wire (psql -h {} -p {}).", pg_addr.ip(), pg_addr.port());
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz).with_state(lake.clone()))
        .merge(tenantscope_query::http::router(engine))
        .merge(tenantscope_ingest::billing::http::router(lake.clone()));
    let listener = bind(args.http_addr, "HTTP API").await?;
    tracing::info!(addr = %args.http_addr, lake = %lake.location(), "Serving the HTTP API.");
    tracing::warn!(
        otlp_grpc = %args.otlp_grpc_addr, otlp_http = %args.otlp_http_addr,
        "The OTLP receivers are not part of this build yet; their addresses are reserved."
    );
    tracing::info!("Billing import: POST /v1/import/billing (the export file as the body).");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("HTTP server failed")?;
    tracing::info!("Stopped.");
    Ok(())
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
