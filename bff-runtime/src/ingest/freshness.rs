//! How fresh the store is: how old each committed change's event was when its
//! batch committed (`facet_commit_freshness_seconds{projection}`), and how many
//! records each source partition has past what the store committed
//! (`facet_consumer_lag{topic, partition}`). The lag comes from the high
//! watermarks the consumer last fetched, so it costs no request of its own.

use std::collections::HashMap;

use prometheus_client::metrics::histogram::Histogram;
use rdkafka::consumer::Consumer;

use crate::metrics::{Metrics, PartitionLabel, ProjectionLabel};
use crate::store::Sealed;

/// Observes, for every change of a batch read live, the age of its event now
/// that the batch is committed.
pub fn committed(metrics: &Metrics, batch: &Sealed) {
    let now = now_ms();
    // One histogram per projection the batch touched, looked up once.
    let mut histograms: HashMap<&str, Histogram> = HashMap::new();
    for change in batch.changes() {
        let Some(produced) = change.event_time_ms else {
            continue;
        };
        let histogram = histograms
            .entry(change.projection.as_str())
            .or_insert_with(|| {
                metrics
                    .commit_freshness
                    .get_or_create(&ProjectionLabel {
                        projection: change.projection.clone(),
                    })
                    .clone()
            });
        histogram.observe((now - produced).max(0) as f64 / 1000.0);
    }
}

/// Sets the lag of each partition from where the store is (`next` offsets).
pub fn lag<'p, C: rdkafka::consumer::ConsumerContext>(
    metrics: &Metrics,
    consumer: &impl Consumer<C>,
    positions: impl Iterator<Item = (&'p str, i32, i64)>,
) {
    for (topic, partition, next) in positions {
        let Some((low, high)) = fetched_watermarks(consumer.client(), topic, partition) else {
            continue;
        };
        // Records before the low watermark are gone: none is owed.
        let next = next.max(low);
        metrics
            .consumer_lag
            .get_or_create(&PartitionLabel {
                topic: topic.to_string(),
                partition,
            })
            .set((high - next).max(0));
    }
}

/// The low and high watermarks of a partition as the consumer's last fetch gave
/// them, if it has fetched from it. The Rust binding only offers a request to the broker
/// (`fetch_watermarks`), which would block ingest; librdkafka keeps the fetched
/// one, so it is read directly.
fn fetched_watermarks<C: rdkafka::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    partition: i32,
) -> Option<(i64, i64)> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client handle is valid while `client` is borrowed; librdkafka
    // only reads the NUL-terminated topic name and writes the two offsets, and
    // it locks its own state.
    let error = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            client.native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    let ok = error == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR;
    // Before the first fetch the watermark is unknown (-1).
    (ok && high >= 0).then_some((low.max(0), high))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
