//! Command-line interface of `facet-bff`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::contract;

#[derive(Parser, Debug)]
#[command(
    name = "facet-bff",
    version,
    about = "Facet's Backend-for-Frontend runtime"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check FrontendExperience manifests; prints every error and exits non-zero on any.
    Validate {
        /// Manifest files (multi-document YAML); `-` reads standard input.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run one experience against a real Kafka cluster.
    Run(RunArgs),
    /// Run a sample with an in-process Kafka, its events and the web console.
    Dev(DevArgs),
    /// Back up a store as a verified image, or restore one.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Print what a spec serves, from the runtime's own compiler: the GraphQL
    /// schema (SDL), the OpenAPI document, or TypeScript types for clients.
    Schema(SchemaArgs),
}

#[derive(clap::Args, Debug)]
pub struct SchemaArgs {
    /// The experience's manifest (or a bare spec, with `--name`).
    pub spec: PathBuf,
    #[command(flatten)]
    pub format: SchemaFormat,
    /// The experience's name, for a bare spec.
    #[arg(long)]
    pub name: Option<String>,
    /// Its namespace, when the manifest names none.
    #[arg(long, default_value = "default")]
    pub namespace: String,
}

/// Exactly one of the three.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct SchemaFormat {
    /// GraphQL SDL, as the runtime's `/graphql` serves it.
    #[arg(long)]
    pub graphql: bool,
    /// The OpenAPI 3.1 document (JSON), as `/openapi.json` serves it.
    #[arg(long)]
    pub openapi: bool,
    /// TypeScript declarations: row types, filters, command inputs and results.
    #[arg(long)]
    pub typescript: bool,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Write an image of the store in a data directory that no runtime has open,
    /// or of a running pod's store (`--from`, checked as it arrives).
    Export {
        /// The data directory (holding `store.redb`).
        #[arg(long, required_unless_present = "from", conflicts_with = "from")]
        data_dir: Option<PathBuf>,
        /// A running pod's metrics port (`host:9090`), which serves its image to
        /// requests with the experience's peer token.
        #[arg(long, requires_all = ["spec", "peer_token_file"])]
        from: Option<String>,
        /// With `--from`: the experience's spec, whose definition the image must have.
        #[arg(long)]
        spec: Option<PathBuf>,
        /// With `--from`: the file holding the peer token (the `token` key of the
        /// Secret `<experience>-peer-token`).
        #[arg(long)]
        peer_token_file: Option<PathBuf>,
        /// Where to write the image; standard output when absent.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Build the store of a data directory from an image, after checking that it
    /// is whole, intact and of this spec's projection definition.
    Restore {
        /// The FrontendExperience manifest (or a bare spec) the store is for.
        #[arg(long)]
        spec: PathBuf,
        /// The data directory to restore into; it must hold no store yet.
        #[arg(long)]
        data_dir: PathBuf,
        /// The image to restore.
        #[arg(long)]
        image: PathBuf,
    },
}

#[derive(Parser, Debug)]
pub struct RunArgs {
    /// The FrontendExperience manifest (or a bare spec) to run.
    #[arg(long, env = contract::ENV_SPEC)]
    pub spec: PathBuf,
    /// Experience name, when the file holds a bare spec.
    #[arg(long, env = contract::ENV_EXPERIENCE)]
    pub name: Option<String>,
    /// Namespace, when the file holds a bare spec or no namespace.
    #[arg(long, env = contract::ENV_NAMESPACE, default_value = "default")]
    pub namespace: String,
    /// Pod name; its ordinal (`web-2` → 2) names the consumer group.
    #[arg(long, env = contract::ENV_POD_NAME, default_value = "local-0")]
    pub pod_name: String,
    /// Where the store lives.
    #[arg(long, env = contract::ENV_DATA_DIR, default_value = contract::DATA_DIR)]
    pub data_dir: PathBuf,
    #[arg(long, env = contract::ENV_HTTP_ADDR, default_value = "0.0.0.0:8080")]
    pub http: SocketAddr,
    #[arg(long, env = contract::ENV_METRICS_ADDR, default_value = "0.0.0.0:9090")]
    pub metrics: SocketAddr,
    /// Overrides the spec's bootstrap servers.
    #[arg(long, env = contract::ENV_KAFKA_BOOTSTRAP)]
    pub kafka: Option<String>,
    /// A directory of files whose names are librdkafka properties (a mounted Secret).
    #[arg(long, env = contract::ENV_KAFKA_SECRET_DIR)]
    pub kafka_secret_dir: Option<PathBuf>,
    /// Serve the web console at `/`. It shows the spec (sources, projections,
    /// access rules) to anyone who can reach the port, so it is off by default.
    #[arg(long, env = contract::ENV_CONSOLE)]
    pub console: bool,
    /// On SIGTERM, keep serving this many seconds while `/readyz` says not ready,
    /// so that Services and load balancers move clients away first; then live
    /// connections are closed with 1001 (reconnect) and the process exits.
    #[arg(long, env = contract::ENV_DRAIN_SECONDS, default_value_t = 0)]
    pub drain_seconds: u64,
    /// An image (from `facet-bff image export`) to start from when the data
    /// directory holds no store yet; an image that fails its checks is refused
    /// with a log line, and the topics are replayed instead.
    #[arg(long, env = contract::ENV_RESTORE_FROM)]
    pub restore_from: Option<PathBuf>,
    /// Where to copy a ready replica's store from when the data directory holds
    /// none: `host:port` entries, comma-separated (a name stands for all its
    /// addresses). Each is asked in turn; with none to copy from, the topics are replayed.
    #[arg(long, env = contract::ENV_PEERS, value_delimiter = ',')]
    pub peers: Vec<String>,
    /// The experience's peer token: needed to copy a peer's image and to serve this
    /// pod's own (on the metrics port, at /internal/image).
    #[arg(long, env = contract::ENV_PEER_TOKEN_FILE)]
    pub peer_token_file: Option<PathBuf>,
    /// This pod's IP, never asked for an image.
    #[arg(long, env = contract::ENV_POD_IP)]
    pub pod_ip: Option<std::net::IpAddr>,
}

#[derive(Parser, Debug)]
pub struct DevArgs {
    /// A sample manifest, e.g. config/samples/storefront.yaml.
    pub spec: PathBuf,
    /// Events to load (JSON lines); defaults to `<sample>.events.jsonl`.
    #[arg(long)]
    pub events: Option<PathBuf>,
    /// Use a real broker instead of the in-process one.
    #[arg(long)]
    pub kafka: Option<String>,
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub metrics: SocketAddr,
    /// Keep the store here between runs (a fresh one each run by default).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Produce the sample events at this many per second instead of all at once.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Replay the events forever, with fresh keys each round, so the page keeps moving.
    #[arg(long = "loop")]
    pub repeat: bool,
}
