//! Kafka records as real producers write them, against a real broker: a topic
//! written in transactions (its last offsets are commit markers that are never
//! delivered) still lets the runtime become ready; tombstones delete through a
//! rule written for them; rules read the record's key, headers and offset. Events
//! that cannot be applied (too large for the dead-letter producer, or panicking in a
//! test build) reach the dead-letter topic and the pod serves on.

use std::time::Duration;

use facet_e2e::kafka::Broker;
use facet_e2e::log_dir;
use facet_e2e::process::Runtime;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
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
    runtime.terminate();

    poison_events_reach_the_dead_letter_topic(&broker, work.path(), &logs);
}

/// Regressions (issue 24): a 2 MB event was refused as `too_large`, then its
/// dead-letter record was too large for the producer and it was gone; a panic
/// while applying one event took the pod down for good (it crash-looped on it).
fn poison_events_reach_the_dead_letter_topic(
    broker: &Broker,
    work: &std::path::Path,
    logs: &std::path::Path,
) {
    broker.create_topic_with("e2e.poison", 1, &[("max.message.bytes", "4000000")]);
    broker.create_topic("e2e.poison.dlq", 1);
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("message.max.bytes", "4000000")
        .create()
        .unwrap();
    let huge = format!(r#"{{"name": "{}"}}"#, "x".repeat(2_000_000));
    let boom = r#"{"name": "boom"}"#;
    for (key, value) in [
        ("p-1", r#"{"name": "before"}"#),
        ("p-2", huge.as_str()),
        ("p-3", boom),
        ("p-4", r#"{"name": "after"}"#),
    ] {
        producer
            .send(
                BaseRecord::<str, str>::to("e2e.poison")
                    .key(key)
                    .payload(value),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let spec = work.join("poison.yaml");
    let text = SPEC.replace("e2e.users}", "e2e.poison}").replace(
        r#"bootstrapServers: "unused:9092""#,
        r#"bootstrapServers: "unused:9092", deadLetterTopic: e2e.poison.dlq"#,
    );
    std::fs::write(&spec, text).unwrap();
    let mut runtime = Runtime::start_with_env(
        &spec,
        &work.join("poison-data"),
        &broker.bootstrap(),
        "poison-0",
        &logs.join("runtime-poison.log"),
        &[],
        &[("FACET_TEST_PANIC_ON", "boom")],
    );
    runtime.wait_ready(Duration::from_secs(60));
    let rows = runtime.all_rows("user");
    let keys: Vec<&str> = rows.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(
        keys,
        ["p-1", "p-4"],
        "the pod serves the events around the poison"
    );
    for reason in ["too_large", "panic"] {
        let counted = runtime.metric(&format!(
            "facet_events_rejected_total{{reason=\"{reason}\"}}"
        ));
        assert_eq!(counted, 1.0, "{reason}");
    }
    assert!(runtime
        .this_run_log()
        .contains("injected by FACET_TEST_PANIC_ON"));

    // Both refused events are in the dead-letter topic, each with its reason; the
    // one too large for a producer without its payload, saying where it is.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "e2e-poison-dlq")
        .create()
        .unwrap();
    let mut partitions = rdkafka::TopicPartitionList::new();
    partitions
        .add_partition_offset("e2e.poison.dlq", 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&partitions).unwrap();
    let mut dead = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while dead.len() < 2 && std::time::Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(500)) {
            let headers: std::collections::BTreeMap<String, String> = message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_string(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            dead.push((headers, message.payload().map(<[u8]>::to_vec)));
        }
    }
    assert_eq!(dead.len(), 2, "{dead:?}");
    let (too_large, panicked) = (&dead[0], &dead[1]);
    assert_eq!(too_large.0["facet-reason"], "too_large");
    assert_eq!(too_large.0["facet-offset"], "1");
    assert!(
        too_large.0["facet-payload"].contains("omitted"),
        "{:?}",
        too_large.0
    );
    assert_eq!(too_large.1, None);
    assert_eq!(panicked.0["facet-reason"], "panic");
    assert!(
        panicked.0["facet-error"].contains("injected"),
        "{:?}",
        panicked.0
    );
    assert_eq!(panicked.1.as_deref(), Some(boom.as_bytes()));
}
