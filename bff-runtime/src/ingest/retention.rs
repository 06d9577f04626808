//! The source topics' retention, asked of the brokers with the pod's own client
//! properties and put in the readiness report, where the operator reads it for the
//! `Replayable` condition. The pod already holds the credentials (the mounted
//! Secret), so the operator needs neither the Secret nor a Kafka client of its own.

use std::sync::{Arc, Weak};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tracing::{debug, warn};

use super::progress::{Progress, TopicRetention};

/// How often the answer is renewed (a topic's retention can be changed at any time).
const EVERY: Duration = Duration::from_secs(300);
/// The wait after a failed attempt.
const RETRY: Duration = Duration::from_secs(30);
/// Longest wait for one broker request.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Asks now and every [`EVERY`] on a thread of its own (the requests block), with
/// one pair of clients kept for the pod's life; ends when `progress` is dropped.
pub fn watch(config: ClientConfig, topics: Vec<String>, progress: &Arc<Progress>) {
    let progress = Arc::downgrade(progress);
    let spawned = std::thread::Builder::new()
        .name("retention".into())
        .spawn(move || run(&config, &topics, &progress));
    if let Err(e) = spawned {
        warn!(error = %e, "could not start the retention check");
    }
}

fn run(config: &ClientConfig, topics: &[String], progress: &Weak<Progress>) {
    let clients = config
        .create()
        .and_then(|admin| Ok((admin, config.create()?)));
    let (admin, consumer): (AdminClient<DefaultClientContext>, BaseConsumer) = match clients {
        Ok(clients) => clients,
        Err(e) => {
            warn!(error = %e, "no Kafka client for the retention check");
            return;
        }
    };
    loop {
        let wait = match ask(&admin, &consumer, topics) {
            Ok(found) => {
                let Some(progress) = progress.upgrade() else {
                    return;
                };
                debug!(?found, "source topics' retention");
                progress.retention(found);
                EVERY
            }
            Err(e) => {
                warn!(error = %e, "could not ask the brokers about the source topics' retention");
                RETRY
            }
        };
        // Sleep in steps, so the thread ends soon after the pod's ingest does.
        let mut slept = Duration::ZERO;
        while slept < wait {
            if progress.strong_count() == 0 {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
            slept += Duration::from_secs(1);
        }
    }
}

/// Each topic's cleanup settings and the first offset each partition still holds.
fn ask(
    admin: &AdminClient<DefaultClientContext>,
    consumer: &BaseConsumer,
    topics: &[String],
) -> Result<Vec<TopicRetention>, String> {
    let specifiers: Vec<ResourceSpecifier> =
        topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let options = AdminOptions::new().request_timeout(Some(TIMEOUT));
    let described = futures::executor::block_on(admin.describe_configs(&specifiers, &options))
        .map_err(|e| format!("describing the source topics: {e}"))?;
    let mut found = Vec::new();
    for (topic, result) in topics.iter().zip(described) {
        let resource = result.map_err(|e| format!("describing {topic}: {e}"))?;
        let value = |name: &str| resource.get(name).and_then(|e| e.value.clone());
        let number = |name: &str| value(name).and_then(|v| v.parse().ok()).unwrap_or(-1);
        let metadata = consumer
            .fetch_metadata(Some(topic), TIMEOUT)
            .map_err(|e| format!("metadata of {topic}: {e}"))?;
        let mut earliest = Vec::new();
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let (low, _) = consumer
                .fetch_watermarks(topic, partition.id(), TIMEOUT)
                .map_err(|e| format!("watermarks of {topic}/{}: {e}", partition.id()))?;
            earliest.push((partition.id(), low));
        }
        found.push(TopicRetention {
            topic: topic.clone(),
            cleanup_policy: value("cleanup.policy").unwrap_or_else(|| "delete".into()),
            retention_ms: number("retention.ms"),
            retention_bytes: number("retention.bytes"),
            earliest,
        });
    }
    Ok(found)
}
