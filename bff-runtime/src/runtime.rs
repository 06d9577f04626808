//! Assembles a runtime: compiled spec, store, ingest thread and HTTP servers.
//! `facet-bff run` and `facet-bff dev` both come through here, so dev mode runs
//! the production code path.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tracing::info;

use crate::contract::group_id;
use crate::ingest::{Ingest, IngestConfig, Progress};
use crate::live::Router;
use crate::metrics::Metrics;
use crate::peer::copy::{copy_from_peers, Peers};
use crate::peer::serve::ImageSource;
use crate::projection::Engine;
use crate::serve::access::AuthMode;
use crate::serve::{internal_router, AppState, DevProducer};
use crate::spec::{compile, CompiledExperience, ExperienceSpec};
use crate::store::{Opened, Store};

pub struct RuntimeConfig {
    pub name: String,
    pub namespace: String,
    /// The pod's ordinal, which names its consumer group.
    pub ordinal: String,
    pub spec: ExperienceSpec,
    pub data_dir: PathBuf,
    pub http: SocketAddr,
    pub metrics: SocketAddr,
    /// Overrides `spec.kafka.bootstrapServers` (dev mode, tests).
    pub bootstrap_servers: Option<String>,
    /// Extra client properties, e.g. from the spec's Secret.
    pub extra_kafka_properties: Vec<(String, String)>,
    /// Overrides how clients are identified (dev mode).
    pub auth: Option<AuthMode>,
    pub dev_producer: Option<Arc<dyn DevProducer>>,
    pub sample_events: Vec<crate::dev::events::SampleEvent>,
    /// Serve the web console (`/` and `/console/info`, which shows the sources,
    /// projections and access rules) without a token: dev mode, or `run --console`.
    pub console: bool,
    /// A store image to start from when the data directory holds no store.
    pub restore_from: Option<PathBuf>,
    /// Replicas to copy the store from when the data directory holds none (after
    /// `restore_from`), and the token this pod serves its own image with.
    pub peers: Peers,
}

/// A started runtime.
pub struct Runtime {
    pub http_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub state: Arc<AppState>,
    ingest: crate::ingest::IngestHandle,
}

impl Runtime {
    pub async fn start(config: RuntimeConfig) -> anyhow::Result<Runtime> {
        // Ports first: a taken port should fail before any work starts.
        let http = TcpListener::bind(config.http)
            .await
            .with_context(|| format!("binding the HTTP port {}", config.http))?;
        let metrics_listener = TcpListener::bind(config.metrics)
            .await
            .with_context(|| format!("binding the metrics port {}", config.metrics))?;
        let compiled = compile(&config.spec).map_err(|e| anyhow::anyhow!("invalid spec:\n{e}"))?;
        let experience = Arc::new(compiled);
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating {}", config.data_dir.display()))?;
        let layout = experience.store_layout();
        let (store, peer_outcomes) = open_store(&config, &layout).await?;
        let progress = Arc::new(Progress::default());
        let image_source = config.peers.token_file.clone().map(|token_file| {
            Arc::new(ImageSource::new(
                store.clone(),
                progress.clone(),
                token_file,
                crate::store::image::definition_of(&layout),
            ))
        });
        let router = Router::new();
        let metrics = Arc::new(Metrics::new());
        for outcome in peer_outcomes {
            metrics.peer_image(outcome);
        }

        let ingest_config = ingest_config(&config, &experience);
        info!(group = %ingest_config.group_id, bootstrap = %ingest_config.bootstrap_servers, "starting ingest");
        let correlations = Arc::new(crate::command::correlate::Correlations::default());
        let commands = match experience.commands.is_empty() {
            true => None,
            false => Some(Arc::new(crate::command::Commands::new(
                experience.clone(),
                experience_name(&config),
                store.clone(),
                command_producer(&ingest_config)?,
                correlations.clone(),
                metrics.clone(),
            ))),
        };
        let ingest = Ingest {
            correlations,
            engine: Arc::new(Engine::new(experience.clone())),
            store: store.clone(),
            router: router.clone(),
            metrics: metrics.clone(),
            progress: progress.clone(),
        }
        .spawn(ingest_config);

        let live =
            crate::live::Hub::new(experience.clone(), store.clone(), router, metrics.clone());
        let state = app_state(config, live, progress, commands)?;
        let (http_addr, metrics_addr) = serve(http, metrics_listener, &state, image_source)?;
        info!(%http_addr, %metrics_addr, "serving");
        Ok(Runtime {
            http_addr,
            metrics_addr,
            state,
            ingest,
        })
    }

    /// Runs until SIGTERM/Ctrl-C (a clean stop) or until ingest fails (an error,
    /// so the pod restarts and resumes from its store). A clean stop serves for
    /// `drain` more while reporting not ready, then closes every live connection
    /// with a reconnect code.
    pub async fn run_until_shutdown(self, drain: Duration) -> anyhow::Result<()> {
        // One listener for the whole run: a signal that arrives while no listener
        // exists is lost, so it is not made anew on every turn of the loop.
        let mut signal = std::pin::pin!(shutdown_signal());
        loop {
            tokio::select! {
                _ = &mut signal => {
                    info!(drain_seconds = drain.as_secs(), "shutting down");
                    self.state.progress.drain();
                    tokio::time::sleep(drain).await;
                    self.state.live.close_all();
                    // Time for the close frames to leave.
                    tokio::time::sleep(CLOSE_FLUSH).await;
                    return self.ingest.stop().map_err(Into::into);
                }
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    if self.ingest.is_finished() {
                        return match self.ingest.wait() {
                            Ok(()) => Ok(()),
                            Err(e) => Err(anyhow::anyhow!("ingest failed: {e}")),
                        };
                    }
                }
            }
        }
    }

    pub fn stop(self) -> anyhow::Result<()> {
        self.ingest.stop().map_err(Into::into)
    }
}

/// How long live connections get to send their close frames before the exit.
const CLOSE_FLUSH: Duration = Duration::from_millis(300);

/// The producer of command records: acknowledged by every in-sync replica and
/// idempotent, so a record is written once or the command is refused.
fn command_producer(config: &IngestConfig) -> anyhow::Result<rdkafka::producer::FutureProducer> {
    crate::contract::kafka_client(&config.bootstrap_servers, &config.properties)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set(
            "message.timeout.ms",
            crate::command::PRODUCE_TIMEOUT.as_millis().to_string(),
        )
        .create()
        .context("creating the command producer")
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// What every request handler shares.
fn app_state(
    config: RuntimeConfig,
    live: Arc<crate::live::Hub>,
    progress: Arc<Progress>,
    commands: Option<Arc<crate::command::Commands>>,
) -> anyhow::Result<Arc<AppState>> {
    let experience = live.experience.clone();
    let spec = &experience.spec;
    let auth = auth_mode(&config, spec);
    let graphql = match spec.api.graphql {
        true => Some(
            crate::serve::graphql::schema(&experience).context("building the GraphQL schema")?,
        ),
        false => None,
    };
    Ok(Arc::new(AppState {
        connection_slots: Arc::new(tokio::sync::Semaphore::new(
            spec.api.limits.max_connections as usize,
        )),
        unauthenticated_slots: Arc::new(tokio::sync::Semaphore::new(
            spec.api.limits.max_unauthenticated_connections as usize,
        )),
        graphql,
        experience_name: experience_name(&config),
        experience: experience.clone(),
        store: live.store.clone(),
        metrics: live.metrics.clone(),
        live,
        progress,
        auth,
        dev_producer: config.dev_producer,
        sample_events: config.sample_events,
        console: config.console,
        commands,
    }))
}

/// Spawns the HTTP server (the API) and the internal one (metrics, readiness and,
/// with a peer token, store images); returns their addresses.
fn serve(
    http: TcpListener,
    internal: TcpListener,
    state: &Arc<AppState>,
    image_source: Option<Arc<ImageSource>>,
) -> anyhow::Result<(SocketAddr, SocketAddr)> {
    let http_addr = http.local_addr()?;
    let internal_addr = internal.local_addr()?;
    let app = crate::serve::router(state.clone());
    let http = crate::serve::listener::StallGuardedListener(http);
    let limits = &state.experience.spec.api.limits;
    let header_timeout = Duration::from_secs(u64::from(limits.header_timeout_seconds));
    tokio::spawn(crate::serve::server::serve(http, app, header_timeout));
    let metrics_and_readiness = internal_router(state.metrics.clone(), state.progress.clone());
    let internal_app = match image_source {
        Some(source) => metrics_and_readiness.merge(crate::peer::serve::router(source)),
        None => metrics_and_readiness,
    };
    tokio::spawn(async move { axum::serve(internal, internal_app).await });
    Ok((http_addr, internal_addr))
}

/// `namespace/name`, as logs, metrics and command records name the experience.
fn experience_name(config: &RuntimeConfig) -> String {
    format!("{}/{}", config.namespace, config.name)
}

/// The store, restored from an image given at start or copied from a ready peer
/// when it is empty, then opened; with what came of asking the peers.
async fn open_store(
    config: &RuntimeConfig,
    layout: &crate::store::Layout,
) -> anyhow::Result<(Arc<Store>, Vec<crate::peer::Outcome>)> {
    let store_path = config.data_dir.join("store.redb");
    if let Some(image) = &config.restore_from {
        restore_if_empty(&store_path, layout, image);
    }
    let peer_outcomes = match store_path.exists() || config.peers.addresses.is_empty() {
        true => Vec::new(),
        false => {
            let (path, layout, peers) = (store_path.clone(), layout.clone(), config.peers.clone());
            tokio::task::spawn_blocking(move || copy_from_peers(&path, &layout, &peers))
                .await
                .context("copying the store from a peer")?
        }
    };
    let (store, opened) = Store::open(&store_path, layout.clone())
        .with_context(|| format!("opening the store at {}", store_path.display()))?;
    match opened {
        Opened::Empty => {
            info!(path = %store_path.display(), "new store: reading every source from the earliest offset")
        }
        Opened::Resumed => {
            info!(path = %store_path.display(), "resuming from the offsets in the store")
        }
        Opened::Rebuilt => {
            info!(path = %store_path.display(), "projection definition changed: store wiped, rebuilding from the earliest offset")
        }
    }
    Ok((Arc::new(store), peer_outcomes))
}

/// Where ingest reads from, as whom, and how it batches.
fn ingest_config(config: &RuntimeConfig, experience: &CompiledExperience) -> IngestConfig {
    let spec = &experience.spec;
    let mut properties = spec.kafka.properties.clone();
    properties.extend(config.extra_kafka_properties.iter().cloned());
    IngestConfig {
        bootstrap_servers: config
            .bootstrap_servers
            .clone()
            .unwrap_or_else(|| spec.kafka.bootstrap_servers.clone()),
        group_id: group_id(
            &config.namespace,
            &config.name,
            &experience.definition_hash,
            &config.ordinal,
        ),
        properties,
        max_batch_events: spec.store.batch.max_events as usize,
        max_batch_delay: Duration::from_millis(u64::from(spec.store.batch.max_delay_ms)),
        dead_letter_topic: spec.kafka.dead_letter_topic.clone(),
    }
}

/// How requests are authenticated: as configured (dev mode), else by the spec.
fn auth_mode(config: &RuntimeConfig, spec: &ExperienceSpec) -> AuthMode {
    config.auth.clone().unwrap_or_else(|| match &spec.auth.jwt {
        Some(jwt) => AuthMode::Jwt(Arc::new(crate::serve::jwt::JwtVerifier::new(jwt.clone()))),
        // The compiler guarantees `anonymous: true` when there is no jwt.
        None => AuthMode::Anonymous,
    })
}

/// Builds the store from `image` when there is none yet. An image that cannot be
/// read or fails its checks is logged and left aside: the topics are replayed.
fn restore_if_empty(
    store_path: &std::path::Path,
    layout: &crate::store::Layout,
    image: &std::path::Path,
) {
    if store_path.exists() {
        info!(image = %image.display(), "the data directory holds a store: the image is not needed");
        return;
    }
    match crate::store::image::restore_file(store_path, layout, image) {
        Ok(summary) => info!(
            image = %image.display(),
            entries = summary.entries,
            sha256 = %summary.sha256,
            "store restored from an image: consuming from its offsets"
        ),
        Err(error) => tracing::warn!(
            image = %image.display(),
            %error,
            "the image was refused: replaying the topics instead"
        ),
    }
}
