//! Projection apply throughput, as a ratio against a no-op rdkafka consumer that
//! reads the same topic in the same run.
//!
//! Reproduce: `cargo bench -p facet-bff --bench apply_throughput`
//! Options (environment): `FACET_BENCH_EVENTS` (default 200000),
//! `FACET_BENCH_KAFKA=host:port` to use a real broker instead of librdkafka's
//! in-process mock cluster.

use std::sync::Arc;
use std::time::{Duration, Instant};

use facet_bff::ingest::{Ingest, IngestConfig, Progress};
use facet_bff::live::Router;
use facet_bff::metrics::Metrics;
use facet_bff::projection::Engine;
use facet_bff::spec::{compile, parse_manifests};
use facet_bff::store::Store;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

const TOPIC: &str = "shop.orders.v1";
const PARTITIONS: i32 = 3;

fn main() {
    let events: usize = std::env::var("FACET_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let mock;
    let bootstrap = match std::env::var("FACET_BENCH_KAFKA") {
        Ok(bootstrap) => bootstrap,
        Err(_) => {
            mock = MockCluster::new(1).expect("mock cluster");
            mock.create_topic(TOPIC, PARTITIONS, 1).expect("topic");
            mock.create_topic("shop.payments.v1", PARTITIONS, 1)
                .expect("topic");
            mock.bootstrap_servers()
        }
    };
    produce(&bootstrap, events);

    let baseline = time(|| noop_consumer(&bootstrap, events));
    let facet = time(|| facet_ingest(&bootstrap, events));
    let rate = |d: Duration| events as f64 / d.as_secs_f64();
    println!("events: {events} on {TOPIC} ({PARTITIONS} partitions), broker: {bootstrap}");
    println!(
        "no-op consumer:       {:>10.0} events/s ({:.2?})",
        rate(baseline),
        baseline
    );
    println!(
        "facet ingest + apply: {:>10.0} events/s ({:.2?})",
        rate(facet),
        facet
    );
    println!(
        "ratio (facet / no-op): {:.3}   (1.0 = as fast as reading alone)",
        baseline.as_secs_f64() / facet.as_secs_f64()
    );
}

fn time(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

/// Orders like the storefront sample's: placed, then shipped, over 5,000 customers.
fn produce(bootstrap: &str, events: usize) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    for i in 0..events {
        let order = format!("o-{}", i / 2);
        let value = if i % 2 == 0 {
            serde_json::json!({"type": "OrderPlaced", "orderId": order, "customerId": format!("c-{}", i % 5000),
                "items": [{"sku": "mug-01", "name": "Mug", "quantity": 1, "price": 12.5}], "total": 12.5, "at": "2026-11-01T00:00:00Z"})
        } else {
            serde_json::json!({"type": "OrderShipped", "orderId": order, "carrier": "DHL", "at": "2026-11-02T00:00:00Z"})
        };
        let payload = value.to_string();
        let mut record = BaseRecord::<str, str>::to(TOPIC)
            .key(&order)
            .payload(&payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
}

/// Reads every message and does nothing with it: the cost of consuming alone.
fn noop_consumer(bootstrap: &str, events: usize) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-noop")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment
            .add_partition_offset(TOPIC, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut read = 0;
    while read < events {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            std::hint::black_box(rdkafka::Message::payload(&message));
            read += 1;
        }
    }
}

/// The real ingest loop with the storefront sample's projections and a real store.
fn facet_ingest(bootstrap: &str, events: usize) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/samples/storefront.yaml"
    ))
    .unwrap();
    let spec = parse_manifests(&text).remove(0).unwrap().spec;
    let experience = Arc::new(compile(&spec).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let (store, _) =
        Store::open(&dir.path().join("store.redb"), experience.store_layout()).unwrap();
    let metrics = Arc::new(Metrics::new());
    let progress = Arc::new(Progress::default());
    let handle = Ingest {
        engine: Arc::new(Engine::new(experience.clone())),
        store: Arc::new(store),
        router: Router::new(),
        metrics: metrics.clone(),
        progress,
        correlations: Default::default(),
    }
    .spawn(IngestConfig {
        bootstrap_servers: bootstrap.to_string(),
        group_id: "bench-facet".into(),
        properties: Default::default(),
        max_batch_events: spec.store.batch.max_events as usize,
        max_batch_delay: Duration::from_millis(u64::from(spec.store.batch.max_delay_ms)),
        dead_letter_topic: None,
    });
    while (metrics.events_applied.get() as usize) < events {
        std::thread::sleep(Duration::from_millis(10));
    }
    handle.stop().unwrap();
    let batches = metrics.batches_committed.get();
    println!(
        "store transactions: {batches} ({:.0} events each)",
        events as f64 / batches.max(1) as f64
    );
}
