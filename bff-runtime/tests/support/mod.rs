// Each test crate that includes this module uses a part of it.
#![allow(dead_code)]

//! A sample running in-process on librdkafka's mock cluster, for serving tests.

use std::path::PathBuf;
use std::time::Duration;

use facet_bff::dev::events::{events_file_for, read_events};
use facet_bff::runtime::{Runtime, RuntimeConfig};
use facet_bff::spec::{parse_manifests, ExperienceSpec};
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

pub struct Running {
    pub runtime: Runtime,
    pub spec: ExperienceSpec,
    producer: ThreadedProducer<DefaultProducerContext>,
    _cluster: MockCluster<'static, DefaultProducerContext>,
    _data: tempfile::TempDir,
}

pub fn sample_path(sample: &str) -> PathBuf {
    PathBuf::from(format!(
        "{}/../config/samples/{sample}.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
}

/// Starts `sample` (changed by `adjust`) with its events already in Kafka, and
/// waits until it is ready.
pub async fn start(sample: &str, adjust: impl FnOnce(&mut ExperienceSpec)) -> Running {
    let path = sample_path(sample);
    let mut manifest = parse_manifests(&std::fs::read_to_string(&path).unwrap())
        .remove(0)
        .unwrap();
    adjust(&mut manifest.spec);
    let cluster = MockCluster::new(1).unwrap();
    for source in &manifest.spec.sources {
        cluster.create_topic(&source.topic, 2, 1).unwrap();
    }
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .create()
        .unwrap();
    // The events are in Kafka before the runtime starts, so "ready" means "the
    // sample is fully projected".
    for event in read_events(&events_file_for(&path)).unwrap() {
        send(
            &producer,
            &manifest.spec,
            &event.source,
            event.key.as_deref().unwrap_or(""),
            &event.value,
        );
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let running_spec = manifest.spec.clone();
    let data = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(RuntimeConfig {
        name: manifest.name.clone(),
        namespace: manifest.namespace.clone().unwrap_or_default(),
        ordinal: "0".into(),
        spec: manifest.spec.clone(),
        data_dir: data.path().to_path_buf(),
        http: "127.0.0.1:0".parse().unwrap(),
        metrics: "127.0.0.1:0".parse().unwrap(),
        bootstrap_servers: Some(cluster.bootstrap_servers()),
        extra_kafka_properties: vec![],
        auth: None,
        dev_producer: None,
        sample_events: vec![],
        console: false,
        restore_from: None,
        peers: Default::default(),
    })
    .await
    .unwrap();
    Running {
        runtime,
        spec: running_spec,
        producer,
        _cluster: cluster,
        _data: data,
    }
}

fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    spec: &ExperienceSpec,
    source: &str,
    key: &str,
    value: &serde_json::Value,
) {
    let topic = &spec
        .sources
        .iter()
        .find(|s| s.name == source)
        .unwrap()
        .topic;
    let payload = value.to_string();
    producer
        .send(BaseRecord::to(topic).key(key).payload(&payload))
        .unwrap();
}

impl Running {
    pub fn base(&self) -> String {
        format!("http://{}", self.runtime.http_addr)
    }

    pub fn send(&self, source: &str, key: &str, value: &serde_json::Value) {
        send(&self.producer, &self.spec, source, key, value);
    }

    /// Waits until `/readyz` says the sample is fully projected.
    pub async fn wait_ready(&self) {
        let url = format!("{}/readyz", self.base());
        tokio::task::spawn_blocking(move || {
            for _ in 0..100 {
                if get(&url, &[]).0 == 200 {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            panic!("the runtime did not become ready");
        })
        .await
        .unwrap();
    }

    pub fn flush(&self) {
        self.producer.flush(Duration::from_secs(10)).unwrap();
    }
}

pub fn get(url: &str, headers: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut request = agent.get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = request.call().unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_json().unwrap_or_default())
}

/// The upgrade request of a graphql-transport-ws connection to `address`.
pub fn graphql_ws_request(address: &str) -> tungstenite::handshake::client::Request {
    use tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{address}/graphql/ws")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    request
}
