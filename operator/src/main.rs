//! `facet-operator`: reconciles FrontendExperience resources in the cluster of the
//! current kubeconfig, or in-cluster.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use clap::Parser;
use facet_operator::metrics::OperatorMetrics;
use facet_operator::reconcile::builders::BuildConfig;
use facet_operator::reconcile::controller::{run, Context};

#[derive(Parser, Debug)]
#[command(
    name = "facet-operator",
    version,
    about = "Reconciles FrontendExperience resources"
)]
struct Args {
    /// Namespaces to watch, comma-separated; all namespaces when empty.
    #[arg(
        long,
        env = "FACET_WATCH_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    namespaces: Vec<String>,
    /// The facet-bff image for experiences that do not name one.
    #[arg(long, env = "FACET_RUNTIME_IMAGE", default_value = concat!("facet-bff:", env!("CARGO_PKG_VERSION")))]
    runtime_image: String,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "FACET_OPERATOR_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    // Pick the TLS backend explicitly: a build can link more than one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let namespaces: Vec<String> = args
        .namespaces
        .into_iter()
        .filter(|n| !n.is_empty())
        .collect();
    let client = kube::Client::try_default().await?;
    let metrics = Arc::new(OperatorMetrics::default());

    let listener = tokio::net::TcpListener::bind(args.http).await?;
    let served = metrics.clone();
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let metrics = served.clone();
                async move { metrics.encode() }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });

    tracing::info!(namespaces = ?namespaces, image = %args.runtime_image, "starting");
    let context = Arc::new(Context::new(
        client,
        BuildConfig {
            image: args.runtime_image,
        },
        metrics,
    ));
    run(context, namespaces).await;
    tracing::info!("stopped");
    Ok(())
}
