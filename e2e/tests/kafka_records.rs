//! Kafka records as real producers write them, against a real broker: a topic
//! written in transactions (its last offsets are commit markers that are never
//! delivered) still lets the runtime become ready; tombstones delete through a
//! rule written for them; rules read the record's key, headers and offset.

use std::time::Duration;

use facet_e2e::kafka::Broker;
use facet_e2e::log_dir;
use facet_e2e::process::Runtime;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

const SPEC: &str = r#"apiVersion: facet.dev/v1alpha1
kind: FrontendExperience
metadata: {name: users, namespace: e2e}
spec:
  kafka: {bootstrapServers: "unused:9092"}
  sources: [{name: users, topic: e2e.users}]
  projections:
    - name: user
      key: record.key
      rules:
        - source: users
          when: event != null
          upsert: {name: event.name, offset: record.offset, trace: 'has(record.headers.trace) ? record.headers.trace : ""'}
        - source: users
          when: event == null
          delete: true
      fields:
        name: {type: string}
        offset: {type: integer}
        trace: {type: string}
  auth: {anonymous: true}
"#;

#[test]
fn transactional_topics_tombstones_and_record_metadata() {
    let logs = log_dir("kafka_records");
    let broker = Broker::start(&logs);
    broker.create_topic("e2e.users", 2);
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("transactional.id", "e2e-users-writer")
        .create()
        .unwrap();
    let timeout = Duration::from_secs(30);
    producer.init_transactions(timeout).unwrap();
    // Two transactions: ten users, then a tombstone for u-3 and a traced update of u-5.
    producer.begin_transaction().unwrap();
    for i in 0..10 {
        let value = format!(r#"{{"name": "user {i}"}}"#);
        let key = format!("u-{i}");
        producer
            .send(
                BaseRecord::<str, str>::to("e2e.users")
                    .key(&key)
                    .payload(&value),
            )
            .unwrap();
    }
    producer.commit_transaction(timeout).unwrap();
    producer.begin_transaction().unwrap();
    producer
        .send(BaseRecord::<str, str>::to("e2e.users").key("u-3"))
        .unwrap();
    let traced = OwnedHeaders::new().insert(Header {
        key: "trace",
        value: Some("t-42"),
    });
    producer
        .send(
            BaseRecord::to("e2e.users")
                .key("u-5")
                .payload(r#"{"name": "renamed"}"#)
                .headers(traced),
        )
        .unwrap();
    producer.commit_transaction(timeout).unwrap();

    let work = tempfile::tempdir().unwrap();
    let spec = work.path().join("users.yaml");
    std::fs::write(&spec, SPEC).unwrap();
    let mut runtime = Runtime::start(
        &spec,
        &work.path().join("data"),
        &broker.bootstrap(),
        "users-0",
        &logs.join("runtime.log"),
    );
    // Each partition ends with a commit marker: ready means the runtime got past it.
    runtime.wait_ready(Duration::from_secs(60));
    let rows = runtime.all_rows("user");
    let keys: Vec<&str> = rows.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(
        keys,
        ["u-0", "u-1", "u-2", "u-4", "u-5", "u-6", "u-7", "u-8", "u-9"]
    );
    let u5 = rows.iter().find(|r| r["key"] == "u-5").unwrap();
    assert_eq!(u5["row"]["name"], "renamed");
    assert_eq!(u5["row"]["trace"], "t-42");
    assert!(u5["row"]["offset"].as_i64().unwrap() > 0, "{u5}");
    assert_eq!(runtime.metric("facet_events_rejected_total"), 0.0);
}
