//! The contract between the operator and the runtime, in one place both use: the
//! environment a runtime pod is given, where its files live, its ports, how its
//! consumer group is named, and how Kafka client properties are assembled.

use std::collections::BTreeMap;

use rdkafka::config::ClientConfig;
use serde::{Deserialize, Serialize};

/// The pod's name; its ordinal names the consumer group.
pub const ENV_POD_NAME: &str = "POD_NAME";
pub const ENV_NAMESPACE: &str = "FACET_NAMESPACE";
pub const ENV_EXPERIENCE: &str = "FACET_EXPERIENCE";
pub const ENV_SPEC: &str = "FACET_SPEC";
pub const ENV_DATA_DIR: &str = "FACET_DATA_DIR";
pub const ENV_HTTP_ADDR: &str = "FACET_HTTP_ADDR";
pub const ENV_METRICS_ADDR: &str = "FACET_METRICS_ADDR";
pub const ENV_KAFKA_BOOTSTRAP: &str = "FACET_KAFKA_BOOTSTRAP";
/// A directory of files named after librdkafka properties (the mounted Secret).
pub const ENV_KAFKA_SECRET_DIR: &str = "FACET_KAFKA_SECRET_DIR";
pub const ENV_CONSOLE: &str = "FACET_CONSOLE";
/// `json` for JSON lines.
pub const ENV_LOG_FORMAT: &str = "FACET_LOG_FORMAT";
/// Seconds a pod keeps serving after SIGTERM, reporting not ready meanwhile.
pub const ENV_DRAIN_SECONDS: &str = "FACET_DRAIN_SECONDS";
/// A store image to start from when the data directory holds no store.
pub const ENV_RESTORE_FROM: &str = "FACET_RESTORE_FROM";
/// Where a pod with an empty store may copy a ready replica's image from:
/// `host:port` entries, comma-separated; a name resolves to every address it has
/// (the headless Service's name gives every pod of the experience).
pub const ENV_PEERS: &str = "FACET_PEERS";
/// The file holding the experience's peer token: a pod serves its image only to a
/// request that carries it, and presents it when it copies one.
pub const ENV_PEER_TOKEN_FILE: &str = "FACET_PEER_TOKEN_FILE";
/// The pod's own IP, so that it never asks itself for an image.
pub const ENV_POD_IP: &str = "FACET_POD_IP";

/// Whether the operator sets `name` in every runtime pod (so a spec may not).
pub fn is_reserved_env(name: &str) -> bool {
    name == ENV_POD_NAME || name.starts_with("FACET_")
}

/// Where the pod finds its spec: `SPEC_DIR/SPEC_FILE`, from the operator's ConfigMap.
pub const SPEC_DIR: &str = "/etc/facet";
pub const SPEC_FILE: &str = "experience.yaml";
pub const DATA_DIR: &str = "/var/lib/facet";
pub const KAFKA_SECRET_DIR: &str = "/etc/facet/kafka";
/// The peer token Secret's mount, holding the file `token`.
pub const PEER_TOKEN_DIR: &str = "/etc/facet/peer";
pub const PEER_TOKEN_FILE: &str = "token";
/// Served on the metrics port (which only the headless Service exposes), so the
/// Service that clients use never routes to it.
pub const PEER_IMAGE_PATH: &str = "/internal/image";
pub const HTTP_PORT: u16 = 8080;
pub const METRICS_PORT: u16 = 9090;

/// What `/readyz` on the internal (metrics) port answers (200 when ready, 503
/// before): how far the pod's ingest has come. The operator reads it to report a
/// rebuild's progress; the public `/readyz` says only whether.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressReport {
    pub ready: bool,
    pub started: bool,
    /// Shutting down: still serving, while Services move clients elsewhere.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why ingest has not started yet (a topic missing, metadata out of reach).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// The last error of the Kafka client before ingest started (e.g. a refused login).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_error: Option<String>,
    #[serde(default)]
    pub partitions: Vec<PartitionReport>,
    /// The source topics' retention, once asked of the brokers (soon after start,
    /// then every few minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Vec<TopicRetention>>,
}

/// What the brokers say about one source topic's retention, as a pod sees it with
/// its own Kafka credentials; the operator judges from it whether a full replay can
/// rebuild what runs (the `Replayable` condition), so it needs neither the
/// experience's Secret nor a Kafka client of its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicRetention {
    pub topic: String,
    /// `cleanup.policy`: `delete`, `compact` or both.
    pub cleanup_policy: String,
    /// `retention.ms` (-1: forever).
    pub retention_ms: i64,
    /// `retention.bytes` (-1: no limit).
    pub retention_bytes: i64,
    /// The first offset each partition still holds (its low watermark).
    pub earliest: Vec<(i32, i64)>,
}

/// One source partition: read from `start` (the store's offset, or the low
/// watermark), now at `position`, ready at `target` (the high watermark at start).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionReport {
    pub topic: String,
    pub partition: i32,
    pub start: i64,
    pub position: i64,
    pub target: i64,
}

impl ProgressReport {
    /// How much of the replay is done, in percent (100 when there is nothing to read).
    pub fn percent(&self) -> u8 {
        let (done, total) = self
            .partitions
            .iter()
            .fold((0i64, 0i64), |(done, total), p| {
                let span = (p.target - p.start).max(0);
                (done + (p.position - p.start).clamp(0, span), total + span)
            });
        match (self.started, total) {
            (false, _) => 0,
            (true, 0) => 100,
            (true, _) => (done * 100 / total) as u8,
        }
    }

    /// Partitions that have reached their target.
    pub fn caught_up(&self) -> usize {
        self.partitions
            .iter()
            .filter(|p| p.position >= p.target)
            .count()
    }
}

/// A Kafka client for `bootstrap` with `properties` (the spec's and the Secret's):
/// the one way the runtime's consumer and producer and the operator's cleanup
/// client are configured.
pub fn kafka_client(bootstrap: &str, properties: &BTreeMap<String, String>) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", bootstrap);
    for (key, value) in properties {
        client.set(key, value);
    }
    client
}

/// One librdkafka property from an entry of the Secret named by
/// `spec.kafka.secretRef` (key = property name). The runtime reads the Secret
/// mounted as files, the operator through the API; both take entries this way.
/// Kubernetes' own `..data` links and other dot-names are not properties.
pub fn secret_property(name: &str, value: &[u8]) -> Option<(String, String)> {
    if name.starts_with('.') {
        return None;
    }
    let value = std::str::from_utf8(value).ok()?;
    Some((name.to_string(), value.trim_end().to_string()))
}

/// Whether `group` is the consumer group of one of the experience's pods: of any
/// definition and ordinal (including ones beyond today's replicas), or of a release
/// from before groups were per definition (`facet.<namespace>.<name>.<ordinal>`).
pub fn is_group_of(namespace: &str, experience: &str, group: &str) -> bool {
    group_parts(namespace, experience, group).is_some()
}

/// Whether `group` is the consumer group of one of the pods of `definition`.
pub fn is_group_of_definition(
    namespace: &str,
    experience: &str,
    definition: &str,
    group: &str,
) -> bool {
    group_parts(namespace, experience, group)
        .is_some_and(|tag| tag == Some(definition_tag(definition)))
}

/// The definition tag of one of the experience's groups (`None` inside: a group
/// from before groups were per definition); `None` for any other group.
fn group_parts<'g>(namespace: &str, experience: &str, group: &'g str) -> Option<Option<&'g str>> {
    let rest = group.strip_prefix(&format!("facet.{namespace}.{experience}."))?;
    let is_number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match rest.split_once('.') {
        None => is_number(rest).then_some(None),
        Some((tag, ordinal)) => {
            let is_tag = !tag.is_empty() && tag.bytes().all(|b| b.is_ascii_hexdigit());
            (is_tag && is_number(ordinal)).then_some(Some(tag))
        }
    }
}

/// The consumer group of a runtime pod: one per definition and ordinal, so the
/// pods rebuilding a new definition never share a group (and lag) with the pods
/// serving the old one beside them.
pub fn group_id(namespace: &str, experience: &str, definition: &str, ordinal: &str) -> String {
    format!(
        "facet.{namespace}.{experience}.{}.{ordinal}",
        definition_tag(definition)
    )
}

/// The part of a definition's hash that names its StatefulSet and its groups.
pub fn definition_tag(definition: &str) -> &str {
    &definition[..definition.len().min(10)]
}

/// The ordinal of a StatefulSet pod from its name (`web-2` → `2`).
pub fn ordinal_of(pod_name: &str) -> &str {
    pod_name.rsplit('-').next().unwrap_or("0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_groups_of_an_experience_are_per_definition_and_ordinal() {
        let group = group_id("shop", "web", "0123456789abcdef", "17");
        assert_eq!(group, "facet.shop.web.0123456789.17");
        assert!(is_group_of("shop", "web", &group));
        assert!(is_group_of_definition(
            "shop",
            "web",
            "0123456789abcdef",
            &group
        ));
        assert!(!is_group_of_definition(
            "shop",
            "web",
            "fedcba9876543210",
            &group
        ));
        assert!(
            is_group_of("shop", "web", "facet.shop.web.0"),
            "before groups were per definition"
        );
        assert!(!is_group_of_definition(
            "shop",
            "web",
            "0123456789",
            "facet.shop.web.0"
        ));
        assert!(!is_group_of("shop", "web", "facet.shop.web."));
        assert!(!is_group_of("shop", "web", "facet.shop.web.0123456789."));
        assert!(
            !is_group_of("shop", "web", "facet.shop.web.x.0"),
            "experience `web.x`"
        );
        assert!(!is_group_of("shop", "web", "facet.shop.web-2.0"));
        assert!(!is_group_of("shop", "web", "facet.shop.web-2.0123456789.0"));
    }

    #[test]
    fn progress_counts_what_was_read_since_the_start_against_what_there_was() {
        let partition = |start, position, target| PartitionReport {
            topic: "t".into(),
            partition: 0,
            start,
            position,
            target,
        };
        let mut report = ProgressReport {
            started: true,
            partitions: vec![partition(100, 150, 200), partition(0, 300, 300)],
            ..ProgressReport::default()
        };
        assert_eq!(report.percent(), 87, "350 of 400 records");
        assert_eq!(report.caught_up(), 1);
        report.partitions = vec![partition(5, 5, 5)];
        assert_eq!(report.percent(), 100, "nothing to read");
        report.started = false;
        assert_eq!(report.percent(), 0, "not started");
    }

    #[test]
    fn secret_entries_become_properties() {
        assert_eq!(
            secret_property("sasl.username", b"facet\n"),
            Some(("sasl.username".into(), "facet".into()))
        );
        assert_eq!(secret_property("..data", b"x"), None);
    }
}
