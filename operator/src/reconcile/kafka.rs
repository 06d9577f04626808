//! The operator's own Kafka client for an experience, with the properties its pods
//! use (the spec's and those of `spec.kafka.secretRef`), and what it asks the
//! brokers: the source topics' retention.

use std::time::Duration;

use facet_bff::contract;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::retention::TopicRetention;
use crate::api::FrontendExperience;

/// Longest wait for one broker request.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The client properties the experience's pods use.
pub async fn client_config(
    client: &Client,
    fx: &FrontendExperience,
) -> Result<ClientConfig, kube::Error> {
    let kafka = &fx.spec.experience.kafka;
    let mut properties = kafka.properties.clone();
    if let Some(secret) = &kafka.secret_ref {
        let namespace = fx.namespace().unwrap_or_default();
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        let found = secrets.get(&secret.name).await?;
        for (key, value) in found.data.unwrap_or_default() {
            properties.extend(contract::secret_property(&key, &value.0));
        }
    }
    Ok(contract::kafka_client(
        &kafka.bootstrap_servers,
        &properties,
    ))
}

/// Each topic's cleanup settings and the first offset each partition still holds.
pub async fn topic_retention(
    config: &ClientConfig,
    topics: &[String],
) -> Result<Vec<TopicRetention>, String> {
    let admin: AdminClient<DefaultClientContext> = config
        .create()
        .map_err(|e| format!("kafka admin client: {e}"))?;
    let specifiers: Vec<ResourceSpecifier> =
        topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let options = AdminOptions::new().request_timeout(Some(TIMEOUT));
    let described = admin
        .describe_configs(&specifiers, &options)
        .await
        .map_err(|e| format!("describing the source topics: {e}"))?;
    let mut found = Vec::new();
    for (topic, result) in topics.iter().zip(described) {
        let resource = result.map_err(|e| format!("describing {topic}: {e}"))?;
        let value = |name: &str| resource.get(name).and_then(|e| e.value.clone());
        let number = |name: &str| value(name).and_then(|v| v.parse().ok()).unwrap_or(-1);
        found.push(TopicRetention {
            topic: topic.clone(),
            cleanup_policy: value("cleanup.policy").unwrap_or_else(|| "delete".into()),
            retention_ms: number("retention.ms"),
            retention_bytes: number("retention.bytes"),
            earliest: Vec::new(),
        });
    }
    let config = config.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config
            .create()
            .map_err(|e| format!("kafka consumer: {e}"))?;
        for topic in &mut found {
            let metadata = consumer
                .fetch_metadata(Some(&topic.topic), TIMEOUT)
                .map_err(|e| format!("metadata of {}: {e}", topic.topic))?;
            let partitions: Vec<i32> = metadata
                .topics()
                .iter()
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            for partition in partitions {
                let (low, _) = consumer
                    .fetch_watermarks(&topic.topic, partition, TIMEOUT)
                    .map_err(|e| format!("offsets of {}/{partition}: {e}", topic.topic))?;
                topic.earliest.push((partition, low));
            }
        }
        Ok(found)
    })
    .await
    .map_err(|e| e.to_string())?
}
