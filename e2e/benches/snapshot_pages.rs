//! A subscription to a million rows: its snapshot comes in pages at one frozen
//! commit, the next page once the last is written, so the runtime's memory for the
//! client stays one page however large the snapshot.
//!
//! In one run, on one broker (the one `e2e/tools/install-kafka.sh` provides) and one
//! `facet-bff` release binary serving the storefront's orders (each embedding its
//! customer; no access rule, so an anonymous client sees every row):
//! - **baseline**: every row read over REST, page after page of 1,000 (`after`);
//! - **WebSocket** and **SSE**: one subscription to the whole projection, from the
//!   subscribe to the last page (the subscription is live from there: nothing
//!   changed meanwhile, so its catch-up is empty).
//!
//! Reported per kind of read (each by a runtime of its own, started on the same
//! store, reading twice): rows, time, rows/s, the time as a ratio to the REST read,
//! and the runtime's RSS above idle at its highest during each read (sampled every
//! 10 ms; idle is measured just before the read).
//!
//! Reproduce:
//! `cargo build --release -p facet-bff && cargo bench -p facet-e2e --bench snapshot_pages`
//! Options (environment): `FACET_BENCH_ROWS` (default 1,000,000 orders).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use facet_e2e::kafka::Broker;
use facet_e2e::process::Runtime;
use facet_e2e::storefront::{produce_orders, storefront, CUSTOMERS, ORDERS, PARTITIONS, PAYMENTS};
use serde_json::Value;

fn main() {
    let rows: usize = std::env::var("FACET_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let logs = facet_e2e::log_dir("bench-snapshot-pages");
    let broker = Broker::start(&logs);
    for topic in [ORDERS, PAYMENTS, CUSTOMERS] {
        broker.create_topic(topic, PARTITIONS);
    }
    let started = Instant::now();
    // 5,000 customers, then one OrderPlaced per order: a row per record.
    let produced = produce_orders(&broker.bootstrap(), rows + 5_000, 1);
    println!("produced {produced} records in {:.1?}", started.elapsed());

    let work = tempfile::tempdir().unwrap();
    let spec = work.path().join("orders.yaml");
    std::fs::write(&spec, every_order_for_anyone()).unwrap();
    // Each read has a runtime of its own on the store replayed first, so no read
    // inherits memory the replay or another read left in the allocator.
    let start = || {
        let mut runtime = Runtime::start(
            &spec,
            &work.path().join("data"),
            &broker.bootstrap(),
            "storefront-web-0",
            &logs.join("facet.log"),
        );
        runtime.wait_ready(Duration::from_secs(1800));
        runtime
    };

    let started = Instant::now();
    start().terminate();
    println!("replayed the store in {:.1?}", started.elapsed());
    println!(
        "| read | rows | time | rows/s | ratio to REST | RSS above idle, first read | RSS above idle, second read |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let mut baseline = None;
    let reads: [(&str, ReadAll); 3] = [
        ("REST pages of 1,000 (baseline)", rest),
        ("WebSocket subscription", websocket),
        ("SSE subscription", sse),
    ];
    for (name, read) in reads {
        let mut runtime = start();
        let address = format!("127.0.0.1:{}", runtime.http);
        // The first read of a fresh runtime also fills the store's cache (32 MiB,
        // shared by every reader); the second shows what one more read costs.
        let (count, took, first) = measured(runtime.pid(), || read(&address));
        let (_, _, second) = measured(runtime.pid(), || read(&address));
        runtime.terminate();
        assert!(count >= rows, "{name}: {count} rows of {rows}");
        let baseline = *baseline.get_or_insert(took);
        println!(
            "| {name} | {count} | {took:.1?} | {:.0} | {:.2} | {:.1} MB | {:.1} MB |",
            count as f64 / took.as_secs_f64(),
            took.as_secs_f64() / baseline.as_secs_f64(),
            first as f64 / 1e6,
            second as f64 / 1e6,
        );
    }
}

/// Reads every row from the runtime at an address; gives how many it read.
type ReadAll = fn(&str) -> usize;

/// The storefront, anonymous, with the order projection open to every client.
fn every_order_for_anyone() -> String {
    let mut manifest: serde_yaml::Value = serde_yaml::from_str(&storefront(true)).unwrap();
    if let serde_yaml::Value::Mapping(order) = &mut manifest["spec"]["projections"][0] {
        order.remove("access");
    }
    serde_yaml::to_string(&manifest).unwrap()
}

/// Runs `read` while sampling the runtime's RSS: (rows, time, highest RSS above
/// what it was just before).
fn measured(pid: u32, read: impl FnOnce() -> usize) -> (usize, Duration, u64) {
    std::thread::sleep(Duration::from_secs(2));
    let idle = facet_e2e::process::rss_bytes(pid);
    let done = Arc::new(AtomicBool::new(false));
    let sampler = std::thread::spawn({
        let done = done.clone();
        move || {
            let mut highest = 0;
            while !done.load(Ordering::Relaxed) {
                highest = highest.max(facet_e2e::process::rss_bytes(pid));
                std::thread::sleep(Duration::from_millis(10));
            }
            highest
        }
    });
    let started = Instant::now();
    let count = read();
    let took = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let highest = sampler.join().unwrap();
    (count, took, highest.saturating_sub(idle))
}

fn rest(address: &str) -> usize {
    let agent = ureq::Agent::new_with_defaults();
    let mut after: Option<String> = None;
    let mut count = 0;
    loop {
        let mut url = format!("http://{address}/v1/order?limit=1000");
        if let Some(after) = &after {
            url.push_str(&format!("&after={after}"));
        }
        let body: Value = agent
            .get(&url)
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap();
        count += body["items"].as_array().unwrap().len();
        match body["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => return count,
        }
    }
}

/// Rows in one snapshot message; true when it is the last page.
fn snapshot_page(message: &Value) -> (usize, bool) {
    assert_eq!(message["type"], "snapshot", "{message}");
    let rows = message["rows"].as_array().unwrap().len();
    (rows, message["more"] != true)
}

fn websocket(address: &str) -> usize {
    let (mut socket, _) = tungstenite::connect(format!("ws://{address}/ws")).unwrap();
    let subscribe = r#"{"type":"subscribe","id":"all","projection":"order"}"#;
    socket.send(tungstenite::Message::text(subscribe)).unwrap();
    let mut count = 0;
    loop {
        let tungstenite::Message::Text(text) = socket.read().unwrap() else {
            continue;
        };
        let (rows, last) = snapshot_page(&serde_json::from_str(text.as_str()).unwrap());
        count += rows;
        if last {
            return count;
        }
    }
}

fn sse(address: &str) -> usize {
    let mut stream = TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET /sse/order HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut count = 0;
    for line in BufReader::new(stream).lines() {
        let line = line.unwrap();
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let (rows, last) = snapshot_page(&serde_json::from_str(data).unwrap());
        count += rows;
        if last {
            return count;
        }
    }
    panic!("the stream ended before the last page")
}
