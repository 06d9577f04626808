//! `facet-operator`: reconciles FrontendExperience resources in the cluster of the
//! current kubeconfig, or in-cluster.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use clap::Parser;
use std::time::Duration;

use facet_operator::leader::{self, Leadership, LeaseConfig};
use facet_operator::metrics::OperatorMetrics;
use facet_operator::reconcile::builders::{BuildConfig, NetworkPolicyConfig};
use facet_operator::reconcile::controller::{run, Context};
use facet_operator::reconcile::policy::TenancyPolicy;

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
    /// Delete an experience's Kafka consumer groups when it is deleted (adds a finalizer).
    #[arg(long, env = "FACET_DELETE_CONSUMER_GROUPS", default_value_t = false, action = clap::ArgAction::Set)]
    delete_consumer_groups: bool,
    /// Reconcile only while holding a Lease, so several replicas are safe.
    #[arg(long, env = "FACET_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "facet-system")]
    lease_namespace: String,
    /// Give every experience a NetworkPolicy (HTTP from `--http-from-namespaces`,
    /// metrics only from the monitoring namespace and the experience's own pods).
    #[arg(long, env = "FACET_NETWORK_POLICY", default_value_t = true, action = clap::ArgAction::Set)]
    network_policy: bool,
    /// Namespaces whose pods may use an experience's HTTP port; any when empty.
    #[arg(
        long,
        env = "FACET_HTTP_FROM_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    http_from_namespaces: Vec<String>,
    /// The namespace Prometheus scrapes from.
    #[arg(long, env = "FACET_MONITORING_NAMESPACE", default_value = "monitoring")]
    monitoring_namespace: String,
    /// Seconds a rollout may wait for ready pods before it is reported stuck
    /// (`Progressing=False, reason=ProgressDeadlineExceeded`, `Degraded=True`); 0: never.
    #[arg(long, env = "FACET_PROGRESS_DEADLINE_SECONDS", default_value_t = 600)]
    progress_deadline_seconds: u64,
    /// Runtime images `podTemplate.image` may name besides `--runtime-image`
    /// (`*` matches any text).
    #[arg(
        long,
        env = "FACET_ALLOWED_IMAGES",
        value_delimiter = ',',
        default_value = ""
    )]
    allowed_images: Vec<String>,
    /// Service accounts `podTemplate.serviceAccountName` may name; none when empty.
    #[arg(
        long,
        env = "FACET_ALLOWED_SERVICE_ACCOUNTS",
        value_delimiter = ',',
        default_value = ""
    )]
    allowed_service_accounts: Vec<String>,
    /// Patterns every `kafka.bootstrapServers` entry must match.
    #[arg(
        long,
        env = "FACET_ALLOWED_BOOTSTRAP_SERVERS",
        value_delimiter = ',',
        default_value = "*"
    )]
    allowed_bootstrap_servers: Vec<String>,
    /// Whether a spec may set `podTemplate` at all.
    #[arg(long, env = "FACET_ALLOW_POD_TEMPLATE", default_value_t = true, action = clap::ArgAction::Set)]
    allow_pod_template: bool,
    /// Seconds a leader's lease lasts without renewal.
    #[arg(long, env = "FACET_LEASE_DURATION_SECONDS", default_value_t = 15)]
    lease_duration_seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    facet_bff::logging::init("info");
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

    let lease = LeaseConfig {
        name: "facet-operator".into(),
        namespace: args.lease_namespace.clone(),
        identity: std::env::var("POD_NAME")
            .unwrap_or_else(|_| format!("facet-operator-{}", std::process::id())),
        duration: Duration::from_secs(args.lease_duration_seconds.max(3)),
    };
    let leadership = if args.leader_elect {
        let leadership = Leadership::elected(&lease);
        leader::acquire(&client, &lease, &leadership).await?;
        leadership
    } else {
        Leadership::unconditional()
    };
    tracing::info!(namespaces = ?namespaces, image = %args.runtime_image, "starting");
    let build = BuildConfig {
        image: args.runtime_image,
        json_logs: std::env::var(facet_bff::contract::ENV_LOG_FORMAT).is_ok_and(|f| f == "json"),
        network_policy: args.network_policy.then(|| NetworkPolicyConfig {
            http_from_namespaces: args
                .http_from_namespaces
                .iter()
                .filter(|n| !n.is_empty())
                .cloned()
                .collect(),
            operator_namespace: args.lease_namespace.clone(),
            monitoring_namespace: args.monitoring_namespace.clone(),
        }),
        progress_deadline: (args.progress_deadline_seconds > 0)
            .then(|| Duration::from_secs(args.progress_deadline_seconds)),
    };
    let listed = |values: &[String]| -> Vec<String> {
        values.iter().filter(|v| !v.is_empty()).cloned().collect()
    };
    let mut context = Context::new(client.clone(), build, args.delete_consumer_groups, metrics);
    context.tenancy = TenancyPolicy {
        allowed_images: listed(&args.allowed_images),
        allowed_service_accounts: listed(&args.allowed_service_accounts),
        allowed_bootstrap_servers: listed(&args.allowed_bootstrap_servers),
        pod_template: args.allow_pod_template,
    };
    context.leadership = leadership.clone();
    let context = Arc::new(context);
    if !args.leader_elect {
        run(context, namespaces).await;
        tracing::info!("stopped");
        return Ok(());
    }
    tokio::select! {
        _ = run(context, namespaces) => {
            leader::release(&client, &lease).await;
            tracing::info!("stopped");
            Ok(())
        }
        _ = leader::hold(&client, &lease, &leadership) => {
            anyhow::bail!("lost leadership; exiting so that a restart campaigns again")
        }
    }
}
