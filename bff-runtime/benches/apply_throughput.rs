//! Projection apply throughput, as a ratio against a no-op rdkafka consumer that
//! reads the same topics in the same run. Two runs: orders alone, then orders with
//! the customers they embed (registrations and renames, each rename rewriting that
//! customer's orders): the lookup-heavy case.
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
const CUSTOMERS_TOPIC: &str = "shop.customers.v1";
const PARTITIONS: i32 = 3;
const CUSTOMERS: usize = 5000;

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
            for topic in ["shop.payments.v1", CUSTOMERS_TOPIC] {
                mock.create_topic(topic, PARTITIONS, 1).expect("topic");
            }
            mock.bootstrap_servers()
        }
    };
    println!("broker: {bootstrap}, {PARTITIONS} partitions per topic");
    produce(&bootstrap, events);
    let baseline = time(|| noop_consumer(&bootstrap, &[TOPIC], events));
    let orders = Pipeline::new("orders");
    let facet = time(|| orders.run_until(&bootstrap, events));
    report(
        &format!("orders: {events} events"),
        events,
        baseline,
        events,
        facet,
    );
    orders.report();

    // Lookup-heavy: every order embeds its customer. Once the orders and the
    // registrations are in (not timed), customers are renamed, one per 20 orders;
    // each rename rewrites that customer's orders (10 on average) in its transaction.
    let renames = events / 20;
    produce_customers(&bootstrap, 0);
    let embeds = Pipeline::new("embeds");
    embeds.run_until(&bootstrap, events + CUSTOMERS);
    produce_customers_renames(&bootstrap, renames);
    let read_all = CUSTOMERS + renames;
    let baseline = time(|| noop_consumer(&bootstrap, &[CUSTOMERS_TOPIC], read_all));
    let facet = time(|| embeds.run_until(&bootstrap, events + read_all));
    report(
        &format!(
            "customer renames, each rewriting the orders that embed the customer: {renames} events"
        ),
        read_all,
        baseline,
        renames,
        facet,
    );
    embeds.report();
}

/// Rates of the no-op consumer (reading `read` events) and of facet (applying
/// `applied`), and their ratio.
fn report(name: &str, read: usize, baseline: Duration, applied: usize, facet: Duration) {
    let noop_rate = read as f64 / baseline.as_secs_f64();
    let facet_rate = applied as f64 / facet.as_secs_f64();
    println!("== {name}");
    println!("no-op consumer:       {noop_rate:>10.0} events/s ({read} in {baseline:.2?})");
    println!("facet ingest + apply: {facet_rate:>10.0} events/s ({applied} in {facet:.2?})");
    println!(
        "ratio (facet / no-op): {:.3}   (1.0 = as fast as reading alone)",
        facet_rate / noop_rate
    );
}

fn time(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

fn producer(bootstrap: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer")
}

/// Sends one record, waiting while the producer's queue is full.
fn send(producer: &ThreadedProducer<DefaultProducerContext>, topic: &str, key: &str, value: &str) {
    let mut record = BaseRecord::<str, str>::to(topic).key(key).payload(value);
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// Registrations of every customer and `renames` renames.
fn produce_customers(bootstrap: &str, renames: usize) {
    let producer = producer(bootstrap);
    for i in 0..CUSTOMERS {
        let customer = format!("c-{i}");
        let value = serde_json::json!({"type": "CustomerRegistered", "customerId": customer, "name": "Ann"});
        send(&producer, CUSTOMERS_TOPIC, &customer, &value.to_string());
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    produce_customers_renames(bootstrap, renames);
}

fn produce_customers_renames(bootstrap: &str, renames: usize) {
    let producer = producer(bootstrap);
    for i in 0..renames {
        let customer = format!("c-{}", i % CUSTOMERS);
        let value = serde_json::json!({"type": "CustomerRenamed", "customerId": customer, "name": format!("Ann {i}")});
        send(&producer, CUSTOMERS_TOPIC, &customer, &value.to_string());
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
}

/// Orders like the storefront sample's: placed, then shipped, over 5,000 customers.
fn produce(bootstrap: &str, events: usize) {
    let producer = producer(bootstrap);
    for i in 0..events {
        let order = format!("o-{}", i / 2);
        let value = if i % 2 == 0 {
            serde_json::json!({"type": "OrderPlaced", "orderId": order, "customerId": format!("c-{}", i % CUSTOMERS),
                "items": [{"sku": "mug-01", "name": "Mug", "quantity": 1, "price": 12.5}], "total": 12.5, "at": "2026-11-01T00:00:00Z"})
        } else {
            serde_json::json!({"type": "OrderShipped", "orderId": order, "carrier": "DHL", "at": "2026-11-02T00:00:00Z"})
        };
        send(&producer, TOPIC, &order, &value.to_string());
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
}

/// Reads every message and does nothing with it: the cost of consuming alone.
fn noop_consumer(bootstrap: &str, topics: &[&str], events: usize) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-noop")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        for p in 0..PARTITIONS {
            assignment
                .add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
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

/// The real ingest loop with the storefront sample's projections and a real store,
/// in a consumer group of its own; run again, it resumes where it stopped.
struct Pipeline {
    group: String,
    engine: Arc<Engine>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    batch: (usize, Duration),
    _dir: tempfile::TempDir,
}

impl Pipeline {
    fn new(group: &str) -> Pipeline {
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
        Pipeline {
            group: format!("bench-facet-{group}"),
            engine: Arc::new(Engine::new(experience)),
            store: Arc::new(store),
            metrics: Arc::new(Metrics::new()),
            batch: (
                spec.store.batch.max_events as usize,
                Duration::from_millis(u64::from(spec.store.batch.max_delay_ms)),
            ),
            _dir: dir,
        }
    }

    /// Ingests until `applied` events have been applied in all runs so far.
    fn run_until(&self, bootstrap: &str, applied: usize) {
        let handle = Ingest {
            engine: self.engine.clone(),
            store: self.store.clone(),
            router: Router::new(),
            metrics: self.metrics.clone(),
            progress: Arc::new(Progress::default()),
            correlations: Default::default(),
        }
        .spawn(IngestConfig {
            bootstrap_servers: bootstrap.to_string(),
            group_id: self.group.clone(),
            properties: Default::default(),
            max_batch_events: self.batch.0,
            max_batch_delay: self.batch.1,
            dead_letter_topic: None,
        });
        while (self.metrics.events_applied.get() as usize) < applied {
            std::thread::sleep(Duration::from_millis(10));
        }
        handle.stop().unwrap();
    }

    fn report(&self) {
        let events = self.metrics.events_applied.get();
        let batches = self.metrics.batches_committed.get();
        println!(
            "store transactions: {batches} ({:.0} events each), rows rewritten through embeds: {}",
            events as f64 / batches.max(1) as f64,
            self.metrics.embed_rows_rewritten.get()
        );
    }
}
