//! The dead-letter topic: every event that cannot be applied goes there, with why
//! and where it came from in headers, before the batch's offsets move past it.
//!
//! Nothing is dropped on the way: a record always fits (a payload too large for a
//! producer is left out, and the headers say where to read it), a send that the
//! local queue refuses is retried, and a record the broker did not take is sent
//! again until it is, while ingest waits (its partitions do not move meanwhile).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use tracing::warn;

/// A payload larger than this is not copied into the dead-letter record: the
/// producer's default `message.max.bytes` is 1 MB, and the headers need room too.
pub const MAX_DEAD_LETTER_PAYLOAD: usize = 900 * 1024;
/// How long to wait before sending again what the broker did not take.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why an event was refused, as the dead-letter headers say it.
pub struct Refusal<'a> {
    pub reason: &'static str,
    pub error: &'a str,
}

pub struct DeadLetters {
    producer: ThreadedProducer<Deliveries>,
    topic: String,
}

impl DeadLetters {
    pub fn new(client: &ClientConfig, topic: &str) -> Result<Self, KafkaError> {
        Ok(DeadLetters {
            producer: client.create_with_context(Deliveries::default())?,
            topic: topic.to_string(),
        })
    }

    /// Queues the dead-letter record of `message`; waits while the local queue is
    /// full. Returns false only when asked to stop meanwhile.
    pub fn send(&self, message: &BorrowedMessage<'_>, why: Refusal<'_>, stop: &AtomicBool) -> bool {
        let payload = message.payload().unwrap_or_default();
        let mut headers = OwnedHeaders::new()
            .insert(header("facet-reason", why.reason))
            .insert(header("facet-error", why.error))
            .insert(header("facet-topic", message.topic()))
            .insert(header("facet-partition", &message.partition().to_string()))
            .insert(header("facet-offset", &message.offset().to_string()));
        let copied = payload.len() <= MAX_DEAD_LETTER_PAYLOAD;
        if !copied {
            let note = format!(
                "omitted: {} bytes, over the dead-letter limit of {MAX_DEAD_LETTER_PAYLOAD}; \
                 read it at facet-topic, facet-partition, facet-offset",
                payload.len()
            );
            headers = headers.insert(header("facet-payload", &note));
        }
        let record = DeadLetter {
            key: message.key().map(<[u8]>::to_vec),
            payload: copied.then(|| payload.to_vec()),
            headers,
        };
        self.queue(record, stop)
    }

    /// Waits until the broker has every record queued so far, sending again any it
    /// did not take. Returns false only when asked to stop meanwhile.
    pub fn settle(&self, stop: &AtomicBool) -> bool {
        loop {
            while let Err(e) = self.producer.flush(Duration::from_secs(10)) {
                warn!(error = %e, "waiting for the dead-letter topic; this batch is held back");
                if stop.load(Ordering::SeqCst) {
                    return false;
                }
            }
            let failed = std::mem::take(&mut *self.producer.context().failed.lock());
            if failed.is_empty() {
                return true;
            }
            std::thread::sleep(RETRY_AFTER);
            for record in failed {
                if !self.queue(record, stop) {
                    return false;
                }
            }
        }
    }

    fn queue(&self, record: DeadLetter, stop: &AtomicBool) -> bool {
        loop {
            let mut base = BaseRecord::<[u8], [u8], Box<DeadLetter>>::with_opaque_to(
                &self.topic,
                Box::new(record.clone()),
            )
            .headers(record.headers.clone());
            if let Some(key) = &record.key {
                base = base.key(key);
            }
            if let Some(payload) = &record.payload {
                base = base.payload(payload);
            }
            match self.producer.send(base) {
                Ok(()) => return true,
                Err((e, _)) => {
                    if !matches!(
                        e,
                        KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
                    ) {
                        warn!(error = %e, "could not queue a dead-letter record; trying again");
                    }
                    if stop.load(Ordering::SeqCst) {
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}

/// A dead-letter record, kept with its send so that it can be sent again.
#[derive(Clone)]
struct DeadLetter {
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: OwnedHeaders,
}

/// Collects the records the broker did not take.
#[derive(Default)]
struct Deliveries {
    failed: Arc<Mutex<Vec<DeadLetter>>>,
}

impl rdkafka::ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<DeadLetter>;

    fn delivery(&self, result: &DeliveryResult<'_>, record: Self::DeliveryOpaque) {
        if let Err((e, _)) = result {
            warn!(error = %e, "the dead-letter topic did not take a record; sending it again");
            self.failed.lock().push(*record);
        }
    }
}
