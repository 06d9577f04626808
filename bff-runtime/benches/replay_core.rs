//! The replay path without a broker: the storefront's events, already in memory,
//! applied in replay batches (coalesced, sealed at 5,000 events as the runtime's
//! are) to a real store, each batch written on a thread of its own while the next
//! applies, and its changes handed to the live feed. What the replay bench measures
//! minus Kafka, so a change to applying, encoding or writing shows without the
//! broker's noise.
//!
//! The baseline, measured in the same run over the same bytes, is decoding each
//! event's JSON and nothing else: the least any JSON projection has to do.
//!
//! Reproduce: `cargo bench -p facet-bff --bench replay_core`
//! Options (environment): `FACET_BENCH_EVENTS` (default 1,000,000),
//! `FACET_BENCH_EMBEDS=0` for the sample without the order's embed of its customer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use facet_bff::ingest::pipeline::Pipeline;
use facet_bff::live::Router;
use facet_bff::projection::{Engine, Record};
use facet_bff::spec::{compile, parse_manifests};
use facet_bff::store::Store;

/// The runtime's allocator, as in `main.rs`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CUSTOMERS: usize = 5_000;
const BATCH_EVENTS: usize = 5_000;

fn main() {
    let events: usize = std::env::var("FACET_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let embeds = std::env::var("FACET_BENCH_EMBEDS").as_deref() != Ok("0");
    let records = storefront_events(events);
    let engine = Arc::new(Engine::new(Arc::new(storefront(embeds))));
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(
        &dir.path().join("store.redb"),
        engine.experience().store_layout(),
    )
    .unwrap();
    let store = Arc::new(store);
    let router = Router::new();

    let baseline = decode_only(&records);
    let cpu_before = process_cpu();
    let start = Instant::now();
    // The runtime's own replay pipeline: each batch written (and published) by
    // the store writer while the next applies.
    let mut pipeline = Pipeline::<()>::new(store.clone(), router, true);
    let chunks = records.chunks(BATCH_EVENTS).count();
    for (n, chunk) in records.chunks(BATCH_EVENTS).enumerate() {
        // As the runtime's replay into an empty store: the index is written at the
        // end, and only the last batch is kept in the change log.
        let mut batch = store
            .batch_after(pipeline.before())
            .unwrap()
            .coalescing()
            .deferring_index();
        for (source, topic, partition, offset, payload) in chunk {
            batch.read_record(topic, *partition, *offset);
            let applied = engine
                .apply_bytes(source, Some(payload), &Record::default(), &batch)
                .unwrap()
                .unwrap();
            batch.apply_event(applied, None).unwrap();
        }
        if n + 1 < chunks {
            batch.unlogged();
        }
        let sealed = batch.seal();
        pipeline.written().unwrap();
        pipeline.write(sealed, ());
    }
    pipeline.flush().unwrap();
    pipeline.sync().unwrap();
    store.complete_index().unwrap();
    let elapsed = start.elapsed();
    let cpu = process_cpu() - cpu_before;
    let rate = events as f64 / elapsed.as_secs_f64();
    println!(
        "baseline, decoding the JSON only: {:.0} events/s",
        events as f64 / baseline.as_secs_f64()
    );
    println!(
        "replay core, storefront {} embeds: {events} events in {elapsed:.2?}: {rate:.0} events/s, {:.1} µs CPU/event (all threads), peak RSS {} MB (the events in memory included), {:.3}x the baseline",
        if embeds { "with" } else { "without" },
        cpu.as_secs_f64() * 1e6 / events as f64,
        peak_rss_kb() / 1024,
        baseline.as_secs_f64() / elapsed.as_secs_f64(),
    );
}

/// How long decoding every payload takes, values dropped as they are made.
fn decode_only(records: &[Event]) -> Duration {
    let start = Instant::now();
    for (_, _, _, _, payload) in records {
        let value: serde_json::Value = serde_json::from_slice(payload).unwrap();
        std::hint::black_box(value);
    }
    start.elapsed()
}

fn storefront(embeds: bool) -> facet_bff::spec::CompiledExperience {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/samples/storefront.yaml"
    ))
    .unwrap();
    let mut spec = parse_manifests(&text).remove(0).unwrap().spec;
    if !embeds {
        spec.projections[0].embeds.clear();
    }
    compile(&spec).unwrap()
}

/// (source, topic, partition, offset, value): customers, then orders of three
/// events each (placed, payment captured, shipped), as the replay bench produces them.
type Event = (&'static str, &'static str, i32, i64, Vec<u8>);

fn storefront_events(events: usize) -> Vec<Event> {
    let mut offsets = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(events);
    let mut push = |out: &mut Vec<Event>,
                    source: &'static str,
                    topic: &'static str,
                    key: usize,
                    value: serde_json::Value| {
        let partition = (key % 3) as i32;
        let offset = offsets.entry((topic, partition)).or_insert(0i64);
        out.push((
            source,
            topic,
            partition,
            *offset,
            value.to_string().into_bytes(),
        ));
        *offset += 1;
    };
    for i in 0..CUSTOMERS.min(events) {
        let customer = format!("c-{i}");
        push(
            &mut out,
            "customers",
            "shop.customers.v1",
            i,
            serde_json::json!({"type": "CustomerRegistered", "customerId": customer, "name": format!("Customer {i}")}),
        );
    }
    let mut order = 0;
    while out.len() < events {
        let id = format!("o-{order}");
        let customer = format!("c-{}", order % CUSTOMERS);
        let at = format!("2026-11-{:02}T{:02}:00:00Z", 1 + order % 28, order % 24);
        let kinds = [
            (
                "orders",
                "shop.orders.v1",
                serde_json::json!({"type": "OrderPlaced", "orderId": id, "customerId": customer,
                "items": [{"sku": "mug-01", "name": "Mug", "quantity": 1, "price": 12.5}], "total": 12.5, "at": at}),
            ),
            (
                "payments",
                "shop.payments.v1",
                serde_json::json!({"type": "PaymentCaptured", "orderId": id, "amount": 12.5}),
            ),
            (
                "orders",
                "shop.orders.v1",
                serde_json::json!({"type": "OrderShipped", "orderId": id, "carrier": "DHL", "at": at}),
            ),
        ];
        let left = events - out.len();
        for (source, topic, value) in kinds.into_iter().take(left) {
            push(&mut out, source, topic, order, value);
        }
        order += 1;
    }
    out
}

/// The process's peak resident memory (VmHWM), in KiB.
fn peak_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// User + system time of the whole process so far.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}
