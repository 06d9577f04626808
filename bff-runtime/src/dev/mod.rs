//! The embedded development mode: an in-process Kafka (librdkafka's mock cluster)
//! or a real broker, a sample's events loaded into it, the runtime and its
//! console, from one command.

pub mod events;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::runtime::{Runtime, RuntimeConfig};
use crate::serve::access::AuthMode;
use crate::serve::DevProducer;
use crate::spec::parse_manifests;
use events::{events_file_for, read_events, SampleEvent};

/// Partitions of each source topic created in dev mode.
const DEV_PARTITIONS: i32 = 3;

pub struct DevOptions {
    pub spec: PathBuf,
    /// Events file; `<spec>.events.jsonl` when unset.
    pub events: Option<PathBuf>,
    /// A real broker instead of the in-process one.
    pub kafka: Option<String>,
    pub http: SocketAddr,
    pub metrics: SocketAddr,
    /// Where the store lives; a fresh temporary directory when unset.
    pub data_dir: Option<PathBuf>,
    /// Events per second; all at once when unset.
    pub rate: Option<f64>,
    /// Replay the events forever, with fresh keys each round.
    pub repeat: bool,
}

/// Sends test events from the console.
struct SampleProducer(ThreadedProducer<DefaultProducerContext>);

impl SampleProducer {
    fn new(bootstrap: &str) -> anyhow::Result<Self> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("linger.ms", "5")
            .create()
            .context("creating the dev producer")?;
        Ok(SampleProducer(producer))
    }
}

impl DevProducer for SampleProducer {
    fn send(&self, topic: &str, key: Option<&str>, value: &[u8]) -> Result<(), String> {
        let mut record = BaseRecord::<str, [u8]>::to(topic).payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        self.0.send(record).map_err(|(e, _)| e.to_string())?;
        self.0
            .flush(Duration::from_secs(5))
            .map_err(|e| e.to_string())
    }
}

pub async fn run(options: DevOptions) -> anyhow::Result<()> {
    let manifest = read_manifest(&options.spec)?;
    let events = sample_events(&options)?;
    let topics = topics_of(&manifest.spec);

    // The mock cluster lives as long as this function: the whole dev session.
    let mock;
    let bootstrap = match &options.kafka {
        Some(bootstrap) => {
            create_topics(bootstrap, &topics).await?;
            bootstrap.clone()
        }
        None => {
            mock = MockCluster::new(1).context("starting the in-process Kafka")?;
            for topic in &topics {
                mock.create_topic(topic, DEV_PARTITIONS, 1)
                    .with_context(|| format!("creating topic {topic}"))?;
            }
            mock.bootstrap_servers()
        }
    };
    let producer = Arc::new(SampleProducer::new(&bootstrap)?);
    // Without a rate, the sample is in Kafka before the runtime starts, so the
    // runtime's readiness means "the sample is fully projected".
    let mut next_round = 0;
    if options.rate.is_none() {
        for event in &events {
            produce(&producer, &manifest.spec.sources, event).map_err(anyhow::Error::msg)?;
        }
        next_round = 1;
    }

    let (data_dir, scratch) = data_dir(&options);
    let runtime = Runtime::start(RuntimeConfig {
        name: manifest.name.clone(),
        namespace: manifest
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        ordinal: "0".into(),
        spec: manifest.spec.clone(),
        data_dir,
        http: options.http,
        metrics: options.metrics,
        bootstrap_servers: Some(bootstrap.clone()),
        extra_kafka_properties: Vec::new(),
        auth: Some(AuthMode::Dev),
        dev_producer: Some(producer.clone()),
        sample_events: first_event_per_source(&events),
        console: true,
        restore_from: None,
        peers: Default::default(),
    })
    .await?;

    print_banner(&manifest, &options, &runtime, &bootstrap);

    let feeder = (next_round == 0 || options.repeat).then(|| {
        tokio::spawn(feed_events(
            producer,
            manifest.spec.sources.clone(),
            events,
            options.rate,
            options.repeat,
            next_round,
        ))
    });
    let result = runtime.run_until_shutdown(Duration::ZERO).await;
    if let Some(feeder) = feeder {
        feeder.abort();
    }
    drop(scratch);
    result
}

/// The first FrontendExperience of the spec file.
fn read_manifest(path: &std::path::Path) -> anyhow::Result<crate::spec::Manifest> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_manifests(&text)
        .into_iter()
        .next()
        .context("no FrontendExperience in the file")?
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.errors))
}

/// The sample events to produce: the spec's events file, or none.
fn sample_events(options: &DevOptions) -> anyhow::Result<Vec<SampleEvent>> {
    let events_path = options
        .events
        .clone()
        .unwrap_or_else(|| events_file_for(&options.spec));
    if events_path.exists() {
        Ok(read_events(&events_path)?)
    } else {
        tracing::warn!(path = %events_path.display(), "no events file: starting with empty topics");
        Ok(Vec::new())
    }
}

/// Source topics, and the topics commands are sent to.
fn topics_of(spec: &crate::spec::ExperienceSpec) -> Vec<String> {
    let mut topics: Vec<String> = spec.sources.iter().map(|s| s.topic.clone()).collect();
    for command in &spec.commands {
        if !topics.contains(&command.topic) {
            topics.push(command.topic.clone());
        }
    }

    topics
}

/// Where to look, printed once the runtime serves.
fn print_banner(
    manifest: &crate::spec::Manifest,
    options: &DevOptions,
    runtime: &Runtime,
    bootstrap: &str,
) {
    let base = format!("http://{}", display_addr(runtime.http_addr));
    println!();
    println!(
        "  Facet dev mode: {}/{}",
        manifest.namespace.as_deref().unwrap_or("default"),
        manifest.name
    );
    println!(
        "  Kafka:    {}",
        if options.kafka.is_some() {
            bootstrap
        } else {
            "in-process (librdkafka mock cluster)"
        }
    );
    println!("  Console:  {base}/");
    for p in &manifest.spec.projections {
        println!("  REST:     {base}/v1/{}", p.name);
    }
    println!(
        "  Stream:   ws://{}/ws   SSE: {base}/sse/<projection>",
        display_addr(runtime.http_addr)
    );
    println!(
        "  Metrics:  http://{}/metrics",
        display_addr(runtime.metrics_addr)
    );
    println!("  Act as a user with ?as=<sub> (dev mode only). Ctrl-C stops.");
    println!();
}

/// Where the store lives. Without --data-dir it is scratch: removed when dev mode
/// ends.
fn data_dir(options: &DevOptions) -> (PathBuf, Option<Scratch>) {
    match &options.data_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let dir = std::env::temp_dir().join(format!("facet-dev-{}", std::process::id()));
            (dir.clone(), Some(Scratch(dir)))
        }
    }
}

/// A directory removed when dropped, however dev mode ends (short of a kill -9).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("could not remove {}: {e}", self.0.display());
            }
        }
    }
}

fn display_addr(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    }
}

fn first_event_per_source(events: &[SampleEvent]) -> Vec<SampleEvent> {
    let mut seen = HashSet::new();
    events
        .iter()
        .filter(|e| seen.insert(e.source.clone()))
        .cloned()
        .collect()
}

/// Produces the sample events, at `rate` per second or all at once, starting at
/// `round` and, when `repeat` is set, again with fresh keys each round.
async fn feed_events(
    producer: Arc<SampleProducer>,
    sources: Vec<crate::spec::SourceSpec>,
    events: Vec<SampleEvent>,
    rate: Option<f64>,
    repeat: bool,
    mut round: u64,
) {
    let keys: HashSet<String> = events.iter().filter_map(|e| e.key.clone()).collect();
    let pause = rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(1.0 / r));
    loop {
        for event in &events {
            let event = if round == 0 {
                event.clone()
            } else {
                with_fresh_keys(event, &keys, round)
            };
            let producer = producer.clone();
            let sources = sources.clone();
            let sent =
                tokio::task::spawn_blocking(move || produce(&producer, &sources, &event)).await;
            if let Ok(Err(e)) = sent {
                tracing::warn!(error = %e, "could not produce a sample event");
            }
            if let Some(pause) = pause {
                tokio::time::sleep(pause).await;
            }
        }
        if !repeat || events.is_empty() {
            return;
        }
        round += 1;
        if pause.is_none() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

fn produce(
    producer: &SampleProducer,
    sources: &[crate::spec::SourceSpec],
    event: &SampleEvent,
) -> Result<(), String> {
    let source = sources
        .iter()
        .find(|s| s.name == event.source)
        .ok_or_else(|| format!("sample event for unknown source `{}`", event.source))?;
    producer.send(
        &source.topic,
        event.key.as_deref(),
        event.value.to_string().as_bytes(),
    )
}

/// The event with every string that is one of the sample's keys given a suffix,
/// so each round creates new rows instead of repeating the same ones.
fn with_fresh_keys(event: &SampleEvent, keys: &HashSet<String>, round: u64) -> SampleEvent {
    fn rewrite(value: &mut serde_json::Value, keys: &HashSet<String>, suffix: &str) {
        match value {
            serde_json::Value::String(s) if keys.contains(s.as_str()) => s.push_str(suffix),
            serde_json::Value::Array(items) => {
                items.iter_mut().for_each(|v| rewrite(v, keys, suffix))
            }
            serde_json::Value::Object(map) => {
                map.values_mut().for_each(|v| rewrite(v, keys, suffix))
            }
            _ => {}
        }
    }
    let suffix = format!("-r{round}");
    let mut event = event.clone();
    rewrite(&mut event.value, keys, &suffix);
    if let Some(key) = &mut event.key {
        key.push_str(&suffix);
    }
    event
}

/// Creates the source topics on a real broker; existing ones are left alone.
async fn create_topics(bootstrap: &str, topics: &[String]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .context("creating the Kafka admin client")?;
    let new_topics: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, DEV_PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    let results = admin
        .create_topics(
            &new_topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .context("creating topics")?;
    for result in results {
        match result {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("creating topic {topic}: {code}"),
        }
    }
    Ok(())
}
