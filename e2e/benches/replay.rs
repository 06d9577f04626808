//! Replay to readiness on a real Apache Kafka broker: the cost of building a store
//! from the log, which every new store pays (a rebuild, a lost volume, a replica
//! that cannot copy a peer's image).
//!
//! In one run, on one broker (the one `e2e/tools/install-kafka.sh` provides) and the
//! same topics:
//! - **baseline**: an rdkafka consumer that decodes nothing reads every record;
//! - **facet**: the `facet-bff` release binary with the storefront sample (orders
//!   that embed their customer, payments held until their order, a customer summary),
//!   from start to its first `200` on `/readyz`; then a new replica of it that
//!   copies the first one's store image (the first still running, as a peer would
//!   be); then again without the embed.
//!
//! Reported per run: events/s to ready, CPU µs per event (user + system, every
//! thread of the process), peak RSS (VmHWM), and the ratio to the no-op consumer.
//!
//! Reproduce:
//! `cargo build --release -p facet-bff && cargo bench -p facet-e2e --bench replay`
//! Options (environment): `FACET_BENCH_EVENTS` (default 1,000,000 records in all).

use std::path::Path;
use std::time::{Duration, Instant};

use facet_e2e::kafka::Broker;
use facet_e2e::process::Runtime;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use facet_e2e::storefront::{produce, storefront, CUSTOMERS, ORDERS, PARTITIONS, PAYMENTS};

fn main() {
    let events: usize = std::env::var("FACET_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let logs = facet_e2e::log_dir("bench-replay");
    let broker = Broker::start(&logs);
    for topic in [ORDERS, PAYMENTS, CUSTOMERS] {
        broker.create_topic(topic, PARTITIONS);
    }
    let started = Instant::now();
    let produced = produce(&broker.bootstrap(), events);
    println!(
        "produced {produced} records to {} partitions in {:.1?}",
        3 * PARTITIONS,
        started.elapsed()
    );

    let started = Instant::now();
    noop_consumer(&broker.bootstrap(), produced);
    let baseline = produced as f64 / started.elapsed().as_secs_f64();
    println!(
        "no-op consumer: {baseline:.0} events/s ({produced} in {:.2?})",
        started.elapsed()
    );

    let work = tempfile::tempdir().unwrap();
    let token = work.path().join("peer-token");
    std::fs::write(&token, "bench-token").unwrap();
    let token_arg = format!("--peer-token-file={}", token.display());
    println!("| run | events | to ready | events/s | CPU µs/event | peak RSS | ratio to no-op |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let row = |run: &str, result: &Replayed| {
        let rate = produced as f64 / result.to_ready.as_secs_f64();
        println!(
            "| {run} | {produced} | {:.1?} | {rate:.0} | {:.1} | {} MB | {:.3} |",
            result.to_ready,
            result.cpu.as_secs_f64() * 1e6 / produced as f64,
            result.peak_rss / 1_000_000,
            rate / baseline
        );
    };
    let spec = |embeds: bool| {
        let spec = work.path().join(format!("storefront-{embeds}.yaml"));
        std::fs::write(&spec, storefront(embeds)).unwrap();
        spec
    };
    let with_embeds = spec(true);
    let bootstrap = broker.bootstrap();
    let start = |data: &str, ordinal: u32, extra: &[String]| {
        start_to_ready(
            &with_embeds,
            &work.path().join(data),
            &bootstrap,
            ordinal,
            &logs,
            extra,
        )
    };
    let (result, mut peer) = start("data-0", 0, std::slice::from_ref(&token_arg));
    row("storefront, orders embed customers", &result);
    // A new replica of the same experience, with the first one as its peer: it
    // copies the store's image instead of replaying (the peer keeps running).
    let peers = format!("--peers=127.0.0.1:{}", peer.metrics);
    let (result, mut copy) = start("data-2", 2, &[token_arg.clone(), peers]);
    row("a new replica, from the first one's image", &result);
    copy.terminate();
    peer.terminate();
    let without = spec(false);
    let (result, mut runtime) = start_to_ready(
        &without,
        &work.path().join("data-1"),
        &bootstrap,
        1,
        &logs,
        &[],
    );
    row("without embeds", &result);
    runtime.terminate();
}

struct Replayed {
    to_ready: Duration,
    cpu: Duration,
    peak_rss: u64,
}

/// Starts `facet-bff run` on an empty store and waits for `/readyz`; the runtime
/// is returned running.
fn start_to_ready(
    spec: &Path,
    data: &Path,
    bootstrap: &str,
    ordinal: u32,
    logs: &Path,
    extra: &[String],
) -> (Replayed, Runtime) {
    let log = logs.join(format!("facet-{ordinal}.log"));
    let started = Instant::now();
    let pod = format!("storefront-web-{ordinal}");
    let mut runtime = Runtime::start_with_args(spec, data, bootstrap, &pod, &log, extra);
    runtime.wait_ready(Duration::from_secs(1800));
    let to_ready = started.elapsed();
    let replayed = Replayed {
        to_ready,
        cpu: runtime.cpu_time(),
        peak_rss: runtime.peak_rss_bytes(),
    };
    (replayed, runtime)
}

/// Reads every record of the three topics and does nothing with it.
fn noop_consumer(bootstrap: &str, events: usize) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-noop")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for topic in [ORDERS, PAYMENTS, CUSTOMERS] {
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
